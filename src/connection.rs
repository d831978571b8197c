//! One broker socket: ApiVersions negotiation, correlation ids, pipelined requests whose responses are
//! matched in order, and requests that expect no response (acks=0).
//!
//! The connection owns the socket. Writes happen under one lock so requests leave in the order their ids
//! were handed out; a reader task takes frames off the socket and hands each to the waiter at the front of
//! the queue. Any socket error or malformed frame closes the connection and fails every waiter.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiVersionsRequest;
use kafka_protocol::protocol::{Request, StrBytes, VersionRange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::wire::codec::{self, api_name};
use crate::wire::frame;

/// How a connection is made and how long it waits.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Sent in every request header.
    pub client_id: String,
    /// Limit for establishing TCP.
    pub connect_timeout: Duration,
    /// Limit for each response.
    pub request_timeout: Duration,
    /// Largest response frame accepted.
    pub max_frame_bytes: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            client_id: "shipper".to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_frame_bytes: frame::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

type Waiter = oneshot::Sender<Result<Bytes>>;

#[derive(Default)]
struct Pending {
    queue: VecDeque<(i32, Waiter)>,
    /// Why the connection is closed, once it is.
    closed: Option<(io::ErrorKind, String)>,
}

struct Writer {
    half: OwnedWriteHalf,
    buf: BytesMut,
    next_id: i32,
}

/// A response that has been asked for and not yet received.
pub struct PendingResponse {
    rx: oneshot::Receiver<Result<Bytes>>,
    api: &'static str,
}

/// One connection to one broker.
pub struct Connection {
    addr: String,
    client_id: StrBytes,
    request_timeout: Duration,
    writer: tokio::sync::Mutex<Writer>,
    pending: Arc<Mutex<Pending>>,
    versions: HashMap<i16, (i16, i16)>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish()
    }
}

fn closed_error(addr: &str, why: &Option<(io::ErrorKind, String)>) -> Error {
    match why {
        Some((kind, msg)) if *kind != io::ErrorKind::UnexpectedEof => Error::Io {
            addr: addr.to_string(),
            source: io::Error::new(*kind, msg.clone()),
        },
        _ => Error::Closed {
            addr: addr.to_string(),
        },
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`), then negotiates API versions.
    pub async fn connect(addr: &str, opts: &ConnectionOptions) -> Result<Connection> {
        let stream = tcp_connect(addr, opts.connect_timeout).await?;
        stream.set_nodelay(true).map_err(|source| Error::Io {
            addr: addr.to_string(),
            source,
        })?;
        let (rd, wr) = stream.into_split();
        let pending = Arc::new(Mutex::new(Pending::default()));
        tokio::spawn(read_loop(
            addr.to_string(),
            rd,
            pending.clone(),
            opts.max_frame_bytes,
        ));
        let mut conn = Connection {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(opts.client_id.clone()),
            request_timeout: opts.request_timeout,
            writer: tokio::sync::Mutex::new(Writer {
                half: wr,
                buf: BytesMut::with_capacity(64 * 1024),
                next_id: 1,
            }),
            pending,
            versions: HashMap::new(),
        };
        conn.versions = conn.negotiate_versions().await?;
        Ok(conn)
    }

    /// The broker address this connection goes to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the socket has been closed (by either side or by an error).
    pub fn is_closed(&self) -> bool {
        self.lock_pending().closed.is_some()
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A poisoned lock means a panic while holding it, which is a broken invariant anyway.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// ApiVersions v3, falling back to v0 when the broker answers UNSUPPORTED_VERSION (its body is then v0).
    async fn negotiate_versions(&self) -> Result<HashMap<i16, (i16, i16)>> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("shipper");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let mut version = 3;
        for _ in 0..2 {
            let rx = self.send(&req, version, true).await?;
            let frame = self.wait(rx.expect("asked for a response")).await?;
            // The ApiVersions response header is always v0: just the correlation id.
            let body = frame.slice(4.min(frame.len())..);
            let resp = match codec::decode_api_versions(body.clone(), version) {
                Ok(r) if r.error_code != 35 => r,
                _ => codec::decode_api_versions(body, 0).map_err(|source| Error::Codec {
                    addr: self.addr.clone(),
                    source,
                })?,
            };
            if resp.error_code == 35 {
                let max = resp
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiVersionsRequest::KEY)
                    .map_or(0, |k| k.max_version);
                version = max.min(version - 1).max(0);
                continue;
            }
            if resp.error_code != 0 {
                return Err(Error::Kafka {
                    context: format!("broker {}: ApiVersions", self.addr),
                    code: resp.error_code,
                });
            }
            return Ok(resp
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect());
        }
        Err(Error::UnsupportedVersion {
            addr: self.addr.clone(),
            api: "ApiVersions",
            broker_min: 0,
            broker_max: 0,
            ours_min: 0,
            ours_max: 3,
        })
    }

    /// The highest version of `R` that both sides support within `ours`.
    pub fn version<R: Request>(&self, ours: VersionRange) -> Result<i16> {
        let ours = ours.intersect(&R::VERSIONS);
        let (bmin, bmax) = self.versions.get(&R::KEY).copied().unwrap_or((0, -1));
        let v = ours.max.min(bmax);
        let checked = kafka_protocol::messages::ApiKey::try_from(R::KEY)
            .is_ok_and(|k| crate::wire::validate::is_checked(k, v));
        if v < ours.min || v < bmin || !checked {
            return Err(Error::UnsupportedVersion {
                addr: self.addr.clone(),
                api: api_name(R::KEY),
                broker_min: bmin,
                broker_max: bmax,
                ours_min: ours.min,
                ours_max: ours.max,
            });
        }
        Ok(v)
    }

    /// Writes one request. With `expect_response`, returns the handle to await its response.
    pub async fn send<R: Request>(
        &self,
        req: &R,
        version: i16,
        expect_response: bool,
    ) -> Result<Option<PendingResponse>> {
        let mut w = self.writer.lock().await;
        let id = w.next_id;
        w.next_id = w.next_id.wrapping_add(1).max(1);
        w.buf.clear();
        codec::encode_request(&mut w.buf, req, version, id, &self.client_id).map_err(|source| {
            Error::Codec {
                addr: self.addr.clone(),
                source,
            }
        })?;
        let handle = {
            let mut p = self.lock_pending();
            if p.closed.is_some() {
                return Err(closed_error(&self.addr, &p.closed));
            }
            if expect_response {
                let (tx, rx) = oneshot::channel();
                p.queue.push_back((id, tx));
                Some(PendingResponse {
                    rx,
                    api: api_name(R::KEY),
                })
            } else {
                None
            }
        };
        let Writer { half, buf, .. } = &mut *w;
        if let Err(source) = half.write_all(buf).await {
            self.close(source.kind(), source.to_string());
            let _ = half.shutdown().await;
            return Err(Error::Io {
                addr: self.addr.clone(),
                source,
            });
        }
        Ok(handle)
    }

    /// Waits for a response frame, up to the request timeout. A timeout closes the connection, because
    /// later responses could no longer be matched.
    pub async fn wait(&self, pending: PendingResponse) -> Result<Bytes> {
        match tokio::time::timeout(self.request_timeout, pending.rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(closed_error(&self.addr, &self.lock_pending().closed)),
            Err(_) => {
                self.close(io::ErrorKind::TimedOut, "request timed out".into());
                self.shutdown().await;
                Err(Error::Timeout {
                    addr: self.addr.clone(),
                    api: pending.api,
                    ms: self.request_timeout.as_millis() as u64,
                })
            }
        }
    }

    /// Sends `req` at `version` and decodes its response.
    pub async fn call_at<R: Request>(&self, req: &R, version: i16) -> Result<R::Response> {
        let rx = self.send(req, version, true).await?;
        let frame = self.wait(rx.expect("asked for a response")).await?;
        self.decode::<R>(frame, version)
    }

    /// Decodes a response frame for request type `R`.
    pub fn decode<R: Request>(&self, frame: Bytes, version: i16) -> Result<R::Response> {
        codec::decode_response::<R>(frame, version).map_err(|source| Error::Codec {
            addr: self.addr.clone(),
            source,
        })
    }

    fn close(&self, kind: io::ErrorKind, why: String) {
        let waiters: Vec<_> = {
            let mut p = self.lock_pending();
            p.closed.get_or_insert((kind, why));
            p.queue.drain(..).collect()
        };
        for (_, w) in waiters {
            let _ = w.send(Err(Error::Io {
                addr: self.addr.clone(),
                source: io::Error::new(kind, "connection closed"),
            }));
        }
    }

    /// Closes the socket; waiters get errors.
    pub async fn shutdown(&self) {
        let mut w = self.writer.lock().await;
        let _ = w.half.shutdown().await;
    }
}

async fn tcp_connect(addr: &str, limit: Duration) -> Result<TcpStream> {
    let addrs = tokio::time::timeout(limit, tokio::net::lookup_host(addr))
        .await
        .map_err(|_| Error::Resolve {
            addr: addr.to_string(),
            detail: "timed out".into(),
        })?
        .map_err(|e| Error::Resolve {
            addr: addr.to_string(),
            detail: e.to_string(),
        })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for sa in addrs {
        match tokio::time::timeout(limit, TcpStream::connect(sa)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(Error::Connect {
        addr: addr.to_string(),
        source: last,
    })
}

async fn read_loop(
    addr: String,
    mut rd: OwnedReadHalf,
    pending: Arc<Mutex<Pending>>,
    max_frame_bytes: usize,
) {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let (kind, why, first): (io::ErrorKind, String, Option<Error>) = 'outer: loop {
        loop {
            match frame::parse(&mut buf, max_frame_bytes) {
                Ok(Some(f)) => {
                    let got = codec::peek_correlation_id(&f).unwrap_or(-1);
                    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                    match p.queue.pop_front() {
                        Some((id, w)) if id == got => {
                            drop(p);
                            let _ = w.send(Ok(f));
                        }
                        Some((id, w)) => {
                            drop(p);
                            let e = Error::Correlation {
                                addr: addr.clone(),
                                expected: id,
                                got,
                            };
                            let msg = e.to_string();
                            let _ = w.send(Err(e));
                            break 'outer (io::ErrorKind::InvalidData, msg, None);
                        }
                        None => {
                            break 'outer (
                                io::ErrorKind::InvalidData,
                                format!("unsolicited response {got}"),
                                None,
                            )
                        }
                    }
                }
                Ok(None) => break,
                Err(source) => {
                    let msg = source.to_string();
                    let e = Error::Frame {
                        addr: addr.clone(),
                        source,
                    };
                    break 'outer (io::ErrorKind::InvalidData, msg, Some(e));
                }
            }
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => break (io::ErrorKind::UnexpectedEof, "closed".into(), None),
            Ok(_) => {}
            Err(e) => break (e.kind(), e.to_string(), None),
        }
    };
    let waiters: Vec<_> = {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        p.closed.get_or_insert((kind, why.clone()));
        p.queue.drain(..).collect()
    };
    let mut first = first;
    for (_, w) in waiters {
        let e = first
            .take()
            .unwrap_or_else(|| closed_error(&addr, &Some((kind, why.clone()))));
        let _ = w.send(Err(e));
    }
}

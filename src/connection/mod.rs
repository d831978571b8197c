//! One broker connection: ApiVersions negotiation, correlation ids, pipelined requests whose responses
//! are matched in order, and requests that expect no response (acks=0).
//!
//! The connection owns its stream, which a [`Transport`] made (plain TCP, TLS, or in tests an in-memory
//! pipe to a fake broker). Requests are written under one lock, so they leave in the order their ids were
//! handed out; a reader task takes frames off the stream and hands each to the waiter at the front of the
//! queue. Every wait and every write has a deadline. Any error — a socket error, a malformed or oversized
//! frame, a response that answers another request, a timeout — closes the connection for good: the
//! reader task is aborted, both halves are dropped (the socket closes) and every waiter gets the error.
//! The owner ([`crate::cluster::Cluster`]) then opens a new one.
//!
//! (Over 500 lines: the reader task, the writer lock and the waiter queue share one close-for-good rule;
//! kept together so that rule is visible in one place. Transport and error types are submodules.)

mod error;
mod sasl;
mod scram;
mod tls;
mod transport;
mod x509;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use kafka_protocol::protocol::{Request, StrBytes, VersionRange};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::Instant;

pub use error::ConnError;
pub use sasl::{Mechanism, SaslSettings};
pub use tls::{client_config, TlsSettings, TlsTransport};
pub use transport::{tcp_connect, BoxFuture, BoxIo, Io, TcpTransport, Transport};

use crate::wire::codec::{self, api_name};
use crate::wire::frame;
use crate::wire::produce as wire_produce;

/// How a connection behaves.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Sent in every request header.
    pub client_id: String,
    /// Limit for establishing the connection (TCP, TLS, versions, authentication).
    pub connect_timeout: Duration,
    /// Limit for each response.
    pub request_timeout: Duration,
    /// SASL authentication after the versions are negotiated, if any.
    pub sasl: Option<Arc<SaslSettings>>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            client_id: "shipper".to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            sasl: None,
        }
    }
}

type Reply = Result<Bytes, ConnError>;

/// Kafka's UNSUPPORTED_VERSION, which ApiVersions answers with a v0 body.
const UNSUPPORTED_VERSION: i16 = kafka_protocol::error::ResponseError::UnsupportedVersion.code();

struct Waiter {
    id: i32,
    api: &'static str,
    /// When the request was written (see [`Connection::stalled`]).
    sent: Instant,
    max_frame_bytes: usize,
    tx: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Waiter>,
    /// Why the connection is closed, once it is.
    closed: Option<ConnError>,
}

struct Writer {
    half: Option<WriteHalf<BoxIo>>,
    buf: BytesMut,
    next_id: i32,
}

struct Shared {
    /// Shared with the waits listed for it (one per request: a clone of the pointer, not the text).
    addr: Arc<str>,
    /// Responses handed to waiters so far: none yet, the first bytes are judged (TLS, HTTP, not
    /// Kafka); one, a close is a SASL listener's answer to our first request after ApiVersions.
    responses: std::sync::atomic::AtomicU32,
    state: Mutex<State>,
    writer: tokio::sync::Mutex<Writer>,
    reader: Mutex<Option<AbortHandle>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it, which is a broken invariant anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection for good: first error wins, every waiter gets it, the reader task stops
    /// and the write half is dropped (now, or by the writer holding it when it finishes).
    fn close(&self, err: ConnError) {
        let waiters: Vec<Waiter> = {
            let mut st = self.lock();
            st.closed.get_or_insert(err.clone());
            st.queue.drain(..).collect()
        };
        for w in waiters {
            let _ = w.tx.send(Err(err.for_waiter(w.api)));
        }
        if let Some(h) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
        if let Ok(mut w) = self.writer.try_lock() {
            w.half = None;
        }
    }

    fn closed(&self) -> Option<ConnError> {
        self.lock().closed.clone()
    }
}

/// A response that has been asked for and not yet received.
pub struct PendingResponse {
    rx: oneshot::Receiver<Reply>,
    api: &'static str,
}

/// One connection to one broker.
pub struct Connection {
    shared: Arc<Shared>,
    client_id: StrBytes,
    request_timeout: Duration,
    versions: HashMap<i16, (i16, i16)>,
    sasl: Option<Arc<SaslSettings>>,
    /// When to authenticate again, and when the session ends (the broker's session lifetime, KIP-368).
    reauth_at: Mutex<Option<(Instant, Instant)>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.shared.addr)
            .finish()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close(ConnError::Closed {
            addr: self.shared.addr.to_string(),
        });
    }
}

// Per thread: the one thread of shipper's runtime, which all connections live on (and each test
// its own, so that the fake brokers' shared addresses do not leak between tests).
thread_local! {
    /// Broker addresses that answered ApiVersions in this process (as many as the cluster has
    /// brokers, and the bootstrap addresses).
    static ANSWERED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };

    /// Broker addresses that answered a request after ApiVersions on a connection: not SASL
    /// listeners waiting for a handshake (t19 F6: a fetch connection cut at its first Fetch was
    /// blamed on SASL, by a broker that had answered Metadata and ListOffsets).
    static SERVED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };

    /// Broker addresses a cluster's Metadata listed: Kafka listeners, whatever they do now.
    static LISTED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Notes an address a Metadata response listed as a broker's: a failure to reach it is a broker's
/// trouble (down, hung), not a wrong address or another protocol's server (t24 F6: "is this a
/// Kafka listener? ... such as HTTP" for a paused broker of the cluster).
pub fn note_listed(addr: &str) {
    note(&LISTED, addr)
}

/// Whether `addr` answered before in this process or a cluster listed it: a Kafka broker.
fn known_broker(addr: &str) -> bool {
    answered_before(addr) || listed(&LISTED, addr)
}

thread_local! {
    /// What this thread's connections wait for the brokers to do, by id: a connection being made,
    /// requests unanswered (see [`longest_wait`]).
    static WAITS: RefCell<Vec<(u64, Wait)>> = const { RefCell::new(Vec::new()) };
    static NEXT_WAIT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

struct Wait {
    addr: Arc<str>,
    /// The request's API, or `None` while connecting.
    api: Option<&'static str>,
    since: Instant,
}

/// A wait listed in [`WAITS`] for as long as it lives.
struct Waiting(u64);

impl Waiting {
    fn new(addr: Arc<str>, api: Option<&'static str>) -> Waiting {
        let id = NEXT_WAIT.with(|n| {
            let id = n.get();
            n.set(id + 1);
            id
        });
        let wait = Wait {
            addr,
            api,
            since: Instant::now(),
        };
        let _ = WAITS.try_with(|w| w.borrow_mut().push((id, wait)));
        Waiting(id)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = WAITS.try_with(|w| w.borrow_mut().retain(|(id, _)| *id != self.0));
    }
}

/// The broker this thread has waited on longest, if for at least `min`: "broker 127.0.0.1:9093 has
/// not answered ApiVersions for 5 s", for a "no answer from Kafka" line that would otherwise not
/// say which broker of several is hung (t21 F6).
pub fn longest_wait(min: Duration) -> Option<String> {
    WAITS
        .try_with(|w| {
            let w = w.borrow();
            let (_, oldest) = w.iter().min_by_key(|(_, w)| w.since)?;
            let waited = oldest.since.elapsed();
            if waited < min {
                return None;
            }
            let addr = crate::escape::Esc::str(&oldest.addr);
            let s = waited.as_secs();
            Some(match oldest.api {
                Some(api) => format!("broker {addr} has not answered {api} for {s} s"),
                None => format!("broker {addr} has not completed a connection for {s} s"),
            })
        })
        .ok()
        .flatten()
}

/// The most addresses remembered in each list; past it, a hint may come back for a new one.
const ANSWERED_MAX: usize = 1024;

fn answered_before(addr: &str) -> bool {
    listed(&ANSWERED, addr)
}

fn note_answered(addr: &str) {
    note(&ANSWERED, addr)
}

type AddrList = std::thread::LocalKey<RefCell<Vec<String>>>;

fn listed(list: &'static AddrList, addr: &str) -> bool {
    list.with_borrow(|l| l.iter().any(|a| a == addr))
}

fn note(list: &'static AddrList, addr: &str) {
    list.with_borrow_mut(|a| {
        if a.len() < ANSWERED_MAX && !a.iter().any(|x| x == addr) {
            a.push(addr.to_string());
        }
    })
}

impl Connection {
    /// Connects to `addr` through `transport` and negotiates API versions, all before `until`.
    pub async fn connect(
        transport: &dyn Transport,
        addr: &str,
        opts: &ConnectionOptions,
        until: Instant,
    ) -> Result<Connection, ConnError> {
        let connecting = Waiting::new(Arc::from(addr), None);
        let io = transport.connect(addr, until).await?;
        drop(connecting);
        let mut conn = Connection::over(io, addr, opts);
        conn.versions = match conn.negotiate_versions(until).await {
            // Closed before the first answer: often a listener that wants TLS or SASL, unless this
            // address answered before (t17: a proxy cut off in an outage was blamed on TLS/SASL).
            Err(ConnError::Closed { addr }) if !answered_before(&addr) => {
                return Err(ConnError::ClosedEarly { addr })
            }
            r => r?,
        };
        note_answered(addr);
        if let Some(s) = conn.sasl.clone() {
            let mut w = conn.shared.writer.lock().await;
            let next = conn.authenticate_locked(&mut w, &s, until).await?;
            *conn.reauth_at.lock().unwrap_or_else(|e| e.into_inner()) = next;
        }
        Ok(conn)
    }

    /// A connection over an established stream (versions not negotiated yet).
    fn over(io: BoxIo, addr: &str, opts: &ConnectionOptions) -> Connection {
        let (rd, wr) = tokio::io::split(io);
        let shared = Arc::new(Shared {
            addr: Arc::from(addr),
            responses: std::sync::atomic::AtomicU32::new(0),
            state: Mutex::new(State::default()),
            writer: tokio::sync::Mutex::new(Writer {
                half: Some(wr),
                buf: BytesMut::with_capacity(64 * 1024),
                next_id: 1,
            }),
            reader: Mutex::new(None),
        });
        let task = tokio::spawn(read_loop(rd, shared.clone()));
        *shared.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        Connection {
            shared,
            client_id: StrBytes::from_string(opts.client_id.clone()),
            request_timeout: opts.request_timeout,
            versions: HashMap::new(),
            sasl: opts.sasl.clone(),
            reauth_at: Mutex::new(None),
        }
    }

    /// The broker address this connection goes to.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Whether the connection has been closed (by either side or by an error), or its SASL session
    /// ran out while it was idle (the broker would close it at the next request, even one that
    /// authenticates again): the cluster then opens a new one.
    pub fn is_closed(&self) -> bool {
        let expired = self
            .reauth_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|(_, end)| Instant::now() >= end);
        expired || self.shared.lock().closed.is_some()
    }

    /// Whether its oldest unanswered request has waited longer than `limit` (responses come in order:
    /// a paused or overloaded broker, which a request of our own would wait behind).
    pub fn stalled(&self, limit: Duration) -> bool {
        self.shared
            .lock()
            .queue
            .front()
            .is_some_and(|w| w.sent.elapsed() > limit)
    }

    /// Whether a request of it waits for its answer (a request sent now would wait behind it).
    pub fn busy(&self) -> bool {
        !self.shared.lock().queue.is_empty()
    }

    /// Closes the connection; waiters get `Closed`.
    pub fn close(&self) {
        self.shared.close(ConnError::Closed {
            addr: self.shared.addr.to_string(),
        });
    }

    /// The deadline of a request sent now: the request timeout, or `limit` if that comes first.
    pub fn request_deadline(&self, limit: Option<Instant>) -> Instant {
        let d = Instant::now() + self.request_timeout;
        limit.map_or(d, |l| l.min(d))
    }

    /// ApiVersions v3, falling back to the version the broker names when it answers UNSUPPORTED_VERSION
    /// (its body is then v0).
    async fn negotiate_versions(
        &self,
        until: Instant,
    ) -> Result<HashMap<i16, (i16, i16)>, ConnError> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str("shipper");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let mut version = 3;
        for _ in 0..2 {
            let pending = self.send(&req, version, true, until).await?;
            let frame = self.wait(pending, until).await?;
            // The ApiVersions response header is always v0: just the correlation id.
            let body = frame.slice(4.min(frame.len())..);
            let resp = match codec::decode_api_versions(body.clone(), version) {
                Ok(r) if r.error_code != UNSUPPORTED_VERSION => r,
                _ => codec::decode_api_versions(body, 0)
                    .map_err(|e| self.malformed("ApiVersions", e))?,
            };
            if resp.error_code == UNSUPPORTED_VERSION {
                let max = resp
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiVersionsRequest::KEY)
                    .map_or(0, |k| k.max_version);
                version = max.min(version - 1).max(0);
                continue;
            }
            if resp.error_code != 0 {
                return Err(ConnError::Malformed {
                    addr: self.addr().to_string(),
                    api: "ApiVersions",
                    detail: format!("error code {}", resp.error_code),
                });
            }
            return Ok(resp
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect());
        }
        Err(ConnError::UnsupportedVersion {
            addr: self.addr().to_string(),
            api: "ApiVersions",
            broker_min: 0,
            broker_max: 0,
            ours_min: 0,
            ours_max: 3,
        })
    }

    /// Whether the broker offers `R` at all.
    pub fn supports<R: Request>(&self) -> bool {
        self.versions.contains_key(&R::KEY)
    }

    /// The highest version of `R` that both sides support within `ours` (and shipper can check).
    pub fn version<R: Request>(&self, ours: VersionRange) -> Result<i16, ConnError> {
        let ours = ours.intersect(&R::VERSIONS);
        let Some(&(bmin, bmax)) = self.versions.get(&R::KEY) else {
            let addr = self.addr().to_string();
            let api = api_name(R::KEY);
            // Every broker serves Produce, Fetch, ListOffsets and Metadata; a KRaft controller's
            // listener answers ApiVersions with its own APIs and none of these.
            return Err(if (0..=3).contains(&R::KEY) {
                ConnError::NotKafka {
                    addr,
                    detail: format!(
                        "it does not offer the {api} API (a KRaft controller's listener? point -b at a broker's)"
                    ),
                }
            } else {
                ConnError::MissingApi { addr, api }
            });
        };
        let v = ours.max.min(bmax);
        let checked =
            ApiKey::try_from(R::KEY).is_ok_and(|k| crate::wire::validate::is_checked(k, v));
        if v < ours.min || v < bmin || !checked {
            return Err(ConnError::UnsupportedVersion {
                addr: self.addr().to_string(),
                api: api_name(R::KEY),
                broker_min: bmin,
                broker_max: bmax,
                ours_min: ours.min,
                ours_max: ours.max,
            });
        }
        Ok(v)
    }

    fn malformed(&self, api: &'static str, e: impl std::fmt::Display) -> ConnError {
        ConnError::Malformed {
            addr: self.addr().to_string(),
            api,
            detail: e.to_string(),
        }
    }

    /// Writes one request before `until`. With `expect_response`, returns the handle to await its
    /// response; without (acks=0), `None`.
    pub async fn send<R: Request>(
        &self,
        req: &R,
        version: i16,
        expect_response: bool,
        until: Instant,
    ) -> Result<Option<PendingResponse>, ConnError> {
        let mut w = self.writer_before(until, api_name(R::KEY)).await?;
        self.reauthenticate_if_due(&mut w, until).await?;
        self.write_locked(&mut w, req, version, expect_response, until)
            .await
    }

    /// Takes the writer lock before `until`.
    async fn writer_before(
        &self,
        until: Instant,
        api: &'static str,
    ) -> Result<tokio::sync::MutexGuard<'_, Writer>, ConnError> {
        // A deadline already past: not sent (its answer would be waited for 0 ms, and the
        // connection closed under the other requests on it, for a timeout that is not the broker's).
        if until <= Instant::now() {
            return Err(ConnError::Timeout {
                addr: self.addr().to_string(),
                api,
                ms: 0,
            });
        }
        tokio::time::timeout_at(until, self.shared.writer.lock())
            .await
            .map_err(|_| ConnError::Timeout {
                addr: self.addr().to_string(),
                api,
                ms: self.request_timeout.as_millis() as u64,
            })
    }

    /// Authenticates again, with the writer held, when the SASL session's lifetime is up.
    async fn reauthenticate_if_due(&self, w: &mut Writer, until: Instant) -> Result<(), ConnError> {
        let Some(s) = self.sasl.clone() else {
            return Ok(());
        };
        let due = self
            .reauth_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|(t, _)| Instant::now() >= t);
        if due {
            crate::log::debug(format_args!(
                "broker {}: authenticating again (session lifetime)",
                crate::escape::Esc::str(self.addr())
            ));
            // Failed, the connection is closed: the broker must not keep a session on a
            // connection the client judged unsafe (a bad server signature), and each later request
            // must not try again on it.
            let next = match self.authenticate_locked(w, &s, until).await {
                Ok(next) => next,
                Err(e) => {
                    w.half = None;
                    self.shared.close(e.clone());
                    return Err(e);
                }
            };
            *self.reauth_at.lock().unwrap_or_else(|e| e.into_inner()) = next;
        }
        Ok(())
    }

    /// Writes one Produce request, encoded around its batches (see [`crate::wire::produce`]): the
    /// batches go to the socket from where they are, in one vectored write, not copied into a buffer.
    /// `(acks, timeout_ms)` as in the request; acks=0 expects no response.
    pub async fn send_produce(
        &self,
        version: i16,
        (acks, timeout_ms): (i16, i32),
        topics: &[wire_produce::TopicBatches<'_>],
        until: Instant,
    ) -> Result<Option<PendingResponse>, ConnError> {
        let mut w = self.writer_before(until, api_name(0)).await?;
        self.reauthenticate_if_due(&mut w, until).await?;
        let client_id: &str = &self.client_id;
        self.write_frame_locked(&mut w, 0, acks != 0, until, |buf, correlation_id| {
            let head = wire_produce::ProduceHead {
                version,
                correlation_id,
                client_id,
                acks,
                timeout_ms,
            };
            wire_produce::encode(buf, &head, topics).map(Some)
        })
        .await
    }

    /// Writes one request with the writer held.
    async fn write_locked<R: Request>(
        &self,
        w: &mut Writer,
        req: &R,
        version: i16,
        expect_response: bool,
        until: Instant,
    ) -> Result<Option<PendingResponse>, ConnError> {
        let client_id = &self.client_id;
        self.write_frame_locked(w, R::KEY, expect_response, until, |buf, id| {
            codec::encode_request(buf, req, version, id, client_id).map(|()| None)
        })
        .await
    }

    /// Writes one request with the writer held: `encode` gets the buffer and the correlation id and
    /// either fills the buffer with the whole frame (`None`) or returns the frame as parts.
    async fn write_frame_locked(
        &self,
        w: &mut Writer,
        key: i16,
        expect_response: bool,
        until: Instant,
        encode: impl FnOnce(
            &mut BytesMut,
            i32,
        ) -> Result<Option<wire_produce::Parts>, codec::CodecError>,
    ) -> Result<Option<PendingResponse>, ConnError> {
        let api = api_name(key);
        let timeout_err = || ConnError::Timeout {
            addr: self.addr().to_string(),
            api,
            ms: self.request_timeout.as_millis() as u64,
        };
        if let Some(e) = self.shared.closed() {
            w.half = None;
            return Err(e);
        }
        let id = w.next_id;
        w.next_id = w.next_id.wrapping_add(1).max(1);
        w.buf.clear();
        let parts = encode(&mut w.buf, id).map_err(|e| self.malformed(api, e))?;
        let handle = if expect_response {
            let (tx, rx) = oneshot::channel();
            self.shared.lock().queue.push_back(Waiter {
                id,
                api,
                sent: Instant::now(),
                max_frame_bytes: codec::max_response_bytes(key),
                tx,
            });
            Some(PendingResponse { rx, api })
        } else {
            None
        };
        let Writer { half, buf, .. } = w;
        let Some(io) = half.as_mut() else {
            return Err(self.shared.closed().unwrap_or(ConnError::Closed {
                addr: self.addr().to_string(),
            }));
        };
        // A write cut short (timeout, or this future dropped) would leave half a request on the wire:
        // the guard closes the connection unless the write completes.
        let guard = CloseOnDrop(Some(&self.shared));
        let written = match &parts {
            None => tokio::time::timeout_at(until, io.write_all(buf)).await,
            Some(p) => tokio::time::timeout_at(until, write_all_parts(io, &p.parts)).await,
        };
        let err = match written {
            Ok(Ok(())) => {
                std::mem::forget(guard);
                return Ok(handle);
            }
            Ok(Err(e)) => ConnError::io(self.addr(), &e),
            Err(_) => timeout_err(),
        };
        drop(guard);
        *half = None;
        self.shared.close(err.clone());
        Err(err)
    }

    /// Waits for a response frame until `until`. A timeout closes the connection: later responses could
    /// no longer be matched, and a broker that stopped answering must not keep a socket and a task.
    pub async fn wait(
        &self,
        pending: Option<PendingResponse>,
        until: Instant,
    ) -> Result<Bytes, ConnError> {
        let Some(pending) = pending else {
            return Err(self.malformed("request", "waited for a response never asked for"));
        };
        let started = Instant::now();
        let _waiting = Waiting::new(self.shared.addr.clone(), Some(pending.api));
        match tokio::time::timeout_at(until, pending.rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.shared.closed().map_or_else(
                || ConnError::Closed {
                    addr: self.addr().to_string(),
                },
                |e| e.for_waiter(pending.api),
            )),
            Err(_) => {
                let e = ConnError::Timeout {
                    addr: self.addr().to_string(),
                    api: pending.api,
                    ms: started.elapsed().as_millis() as u64,
                };
                self.shared.close(e.clone());
                Err(e)
            }
        }
    }

    /// Sends `req` at `version` and decodes its response, all before `until`.
    pub async fn call<R: Request>(
        &self,
        req: &R,
        version: i16,
        until: Instant,
    ) -> Result<R::Response, ConnError> {
        let pending = self.send(req, version, true, until).await?;
        let frame = self.wait(pending, until).await?;
        self.decode::<R>(frame, version)
    }

    /// Decodes a response frame for request type `R`. A response that cannot be decoded closes the
    /// connection (what follows it cannot be trusted either).
    pub fn decode<R: Request>(&self, frame: Bytes, version: i16) -> Result<R::Response, ConnError> {
        codec::decode_response::<R>(frame, version).map_err(|e| {
            let err = if e.too_large {
                ConnError::TooLarge {
                    addr: self.addr().to_string(),
                    api: api_name(R::KEY),
                    detail: e.detail,
                }
            } else {
                self.malformed(api_name(R::KEY), e)
            };
            self.shared.close(err.clone());
            err
        })
    }
}

struct CloseOnDrop<'a>(Option<&'a Shared>);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.close(ConnError::Io {
                addr: s.addr.to_string(),
                detail: "a request write was interrupted".into(),
            });
        }
    }
}

/// Takes frames off the stream and hands each to the waiter it answers. Ends at the first error,
/// closing the connection.
/// Writes `parts` in order with vectored writes (the kernel takes up to IOV_MAX slices per call; a
/// short write goes on where it stopped).
async fn write_all_parts(io: &mut WriteHalf<BoxIo>, parts: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> =
        parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = io.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut rest, n);
    }
    io.flush().await
}

async fn read_loop(mut rd: ReadHalf<BoxIo>, shared: Arc<Shared>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut spent = SpentFrames::default();
    let err = loop {
        match next_frame(&mut buf, &shared) {
            Ok(Some((w, f))) => {
                spent.keep(&f);
                let _ = w.tx.send(Ok(f));
                let before = shared
                    .responses
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if before == 1 {
                    note(&SERVED, &shared.addr);
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => break e,
        }
        let first = shared.responses.load(std::sync::atomic::Ordering::Relaxed) == 0;
        if let Some(need) = room_needed(&buf, first) {
            spent.make_room(&mut buf, need);
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                let addr = shared.addr.to_string();
                // A SASL listener answers ApiVersions, then closes on any request but SASL's.
                // Not when part of a response came (t11: a cut in mid-response was blamed on SASL).
                let after_versions = shared.responses.load(std::sync::atomic::Ordering::Relaxed)
                    == 1
                    && buf.is_empty()
                    && !shared.lock().queue.is_empty()
                    && !listed(&SERVED, &addr);
                break if after_versions {
                    ConnError::ClosedAfterVersions { addr }
                } else {
                    ConnError::Closed { addr }
                };
            }
            Ok(_) => {}
            Err(e) => {
                break tls::read_error(&shared.addr, &e)
                    .unwrap_or_else(|| ConnError::io(&shared.addr, &e))
            }
        }
    };
    shared.close(err);
}

/// Large frames handed to waiters, whose memory the reader takes back for a later frame once every
/// user dropped them. Without this, every fetch response of megabytes is read into fresh memory:
/// with musl's allocator a fresh mapping each time, every page faulting on first write (glibc's
/// `malloc` keeps freed memory around itself). Two are kept — a consumer holds one response while
/// the next arrives — and their memory is sized in whole MiB so one fits the next frame.
#[derive(Default)]
struct SpentFrames(VecDeque<Bytes>);

/// Frames from this size on are read into memory that is taken back.
const SPENT_FRAME_BYTES: usize = 256 * 1024;

impl SpentFrames {
    fn keep(&mut self, f: &Bytes) {
        if f.len() >= SPENT_FRAME_BYTES {
            if self.0.len() == 2 {
                self.0.pop_front();
            }
            self.0.push_back(f.clone());
        }
    }

    /// Gives `buf` room for `need` more bytes: in a spent frame's memory when one is free and large
    /// enough (the bytes already read are moved over), else in new memory rounded up to whole MiB.
    fn make_room(&mut self, buf: &mut BytesMut, need: usize) {
        if buf.capacity() - buf.len() >= need {
            return;
        }
        if need < SPENT_FRAME_BYTES {
            buf.reserve(need);
            return;
        }
        let want = buf.len() + need;
        while let Some(i) = self.0.iter().position(|f| f.is_unique()) {
            let Some(f) = self.0.remove(i) else { break };
            if let Ok(mut m) = f.try_into_mut() {
                m.clear();
                // Room from the frame's start to its memory's end (its size prefix came before).
                if m.capacity() >= want {
                    m.extend_from_slice(buf);
                    *buf = m;
                    return;
                }
            }
        }
        let mut m = BytesMut::with_capacity((want + 64 * 1024).next_multiple_of(1 << 20));
        m.extend_from_slice(buf);
        *buf = m;
    }
}

/// Room the front frame of `buf` still needs, once next_frame has checked its size against the
/// limit: a first answer is judged from its [`FIRST_BYTES_JUDGED`]th byte on, and before that its
/// size is unchecked (a first read of `7f ff ff ff 00` had 2 GiB reserved).
fn room_needed(buf: &[u8], first: bool) -> Option<usize> {
    if first && buf.len() < FIRST_BYTES_JUDGED {
        return None;
    }
    frame::missing(buf)
}

/// Whether the first bytes a broker sent are a TLS record (handshake or alert), not a Kafka frame: a
/// frame that size (hundreds of MB) is never a first answer.
fn looks_like_tls(buf: &[u8]) -> bool {
    buf.len() >= 3 && (0x14..=0x17).contains(&buf[0]) && buf[1] == 0x03 && buf[2] <= 0x04
}

/// Bytes of a first answer looked at before it is taken for Kafka (a frame's size and correlation id).
const FIRST_BYTES_JUDGED: usize = 8;

/// Whether enough of a first answer arrived to judge it: [`FIRST_BYTES_JUDGED`] bytes, or a whole
/// size that is negative (no later byte can save it, and a server that sent only those four would
/// otherwise be waited for until the request's timeout).
fn judgeable(buf: &[u8]) -> bool {
    buf.len() >= FIRST_BYTES_JUDGED || (buf.len() >= 4 && buf[0] & 0x80 != 0)
}

/// Why the first bytes a server sent cannot begin a Kafka response, if they cannot: text where a
/// frame size would be (an HTTP server, an SSH daemon), or a size no first answer has. A first
/// answer (ApiVersions, or SaslHandshake) is a few hundred bytes; 64 MiB is far beyond any.
fn not_kafka(buf: &[u8]) -> Option<String> {
    let head = &buf[..buf.len().min(40)];
    let line = head
        .split(|b| *b == b'\r' || *b == b'\n')
        .next()
        .unwrap_or(head);
    if head.starts_with(b"HTTP/") {
        return Some(format!(
            "it answered in HTTP (\"{}\"): a web server or proxy on this port? check -b/--brokers (or the config file's brokers)",
            crate::escape::Esc(line)
        ));
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let printable = line.len() >= 4 && line.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    if printable {
        return Some(format!(
            "its first answer begins \"{}\", not a Kafka response: check -b/--brokers (or the config file's brokers)",
            crate::escape::Esc(line)
        ));
    }
    if !(0..64 << 20).contains(&size) {
        // Binary: a size and its first bytes in hex say more than escaped control characters.
        let hex: Vec<String> = buf[..buf.len().min(16)]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        return Some(format!(
            "its first answer announces a frame of {size} bytes (it begins {}), not a Kafka response: check -b/--brokers (or the config file's brokers)",
            hex.join(" ")
        ));
    }
    None
}

/// The next whole frame in `buf` with the waiter it answers, `None` when more bytes are needed.
fn next_frame(buf: &mut BytesMut, shared: &Shared) -> Result<Option<(Waiter, Bytes)>, ConnError> {
    // The first answer is judged on its first bytes (a size and a correlation id in Kafka): wait for
    // enough of them.
    // (A TLS alert is 7 bytes: it is recognised from its first 3.)
    let first = shared.responses.load(std::sync::atomic::Ordering::Relaxed) == 0;
    if buf.is_empty() {
        return Ok(None);
    }
    if first {
        if looks_like_tls(buf) {
            return Err(ConnError::Tls {
                addr: shared.addr.to_string(),
                detail: "the broker answered with TLS: this listener wants --security-protocol ssl or sasl_ssl".into(),
            });
        }
        if !judgeable(buf) {
            return Ok(None);
        }
        // (Judged again, to the same verdict, while the rest of the first frame arrives.)
        if let Some(detail) = not_kafka(buf) {
            return Err(ConnError::NotKafka {
                addr: shared.addr.to_string(),
                detail,
            });
        }
    }
    let (api, limit) = {
        let st = shared.lock();
        match st.queue.front() {
            Some(w) => (w.api, w.max_frame_bytes),
            None => {
                return Err(ConnError::Malformed {
                    addr: shared.addr.to_string(),
                    api: "request",
                    detail: "unsolicited bytes from the broker".into(),
                })
            }
        }
    };
    let malformed = |detail: String| ConnError::Malformed {
        addr: shared.addr.to_string(),
        api,
        detail,
    };
    // A length prefix over the limit is as likely noise as a real answer (t11: one corrupt prefix
    // stopped a tail at start): malformed, so retried on a new connection until --timeout; the
    // frame is never buffered.
    let parsed = frame::parse(buf, limit).map_err(|e| match e {
        frame::FrameError::TooLarge { .. } => malformed(format!(
            "{e} (a broken or hostile response, or a broker answering far more than asked)"
        )),
        e => malformed(e.to_string()),
    })?;
    let Some(f) = parsed else {
        return Ok(None);
    };
    let got = codec::peek_correlation_id(&f).unwrap_or(-1);
    let w = shared.lock().queue.pop_front();
    match w {
        Some(w) if w.id == got => Ok(Some((w, f))),
        Some(w) => {
            let e = malformed(format!(
                "response correlation id {got} does not match request {}",
                w.id
            ));
            let _ = w.tx.send(Err(e.clone()));
            Err(e)
        }
        None => Err(malformed("response to no request".into())),
    }
}

#[cfg(test)]
mod tests;

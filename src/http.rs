//! The little HTTP/1.1 that shipper serves (`/metrics`, the web view): one bounded request head read,
//! a query string decoded, one answer written. No keep-alive, no request bodies: every connection is
//! one request, so a slow or hostile client holds at most one small buffer for a bounded time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The connections a server serves at once. With every slot taken, a new connection takes the slot
/// of the oldest one that has not sent its request yet, so sockets opened and left silent cannot
/// keep real requests out (t17 F4: 32 of them left the metrics server's scrapes and probes without
/// an answer, a healthy agent looking dead); when every slot serves a request, it is turned away.
pub struct Slots {
    free: Arc<tokio::sync::Semaphore>,
    conns: VecDeque<Conn>,
}

/// A connection being served, as the accept loop knows it.
struct Conn {
    task: tokio::task::AbortHandle,
    reading: Arc<AtomicBool>,
}

/// Told by a connection's task once its request is read: from then on it keeps its slot.
#[derive(Clone)]
pub struct Reading(Arc<AtomicBool>);

impl Reading {
    /// The request is read.
    pub fn done(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Slots {
    /// `n` slots.
    pub fn new(n: usize) -> Slots {
        Slots {
            free: Arc::new(tokio::sync::Semaphore::new(n)),
            conns: VecDeque::new(),
        }
    }

    /// Serves the new connection `s` with `serve` in a task of its own, holding a slot until it
    /// ends; `s` is given back when every slot serves a request (answer it [`BUSY`]).
    pub async fn admit<S, F, Fut>(&mut self, s: S, serve: F) -> Result<(), S>
    where
        F: FnOnce(S, Reading) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.conns.retain(|c| !c.task.is_finished());
        let permit = match self.free.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let oldest = self
                    .conns
                    .iter()
                    .position(|c| c.reading.load(Ordering::Relaxed));
                if let Some(c) = oldest.and_then(|i| self.conns.remove(i)) {
                    c.task.abort();
                }
                let freed = tokio::time::timeout(
                    Duration::from_millis(100),
                    self.free.clone().acquire_owned(),
                )
                .await;
                match freed {
                    Ok(Ok(p)) => p,
                    _ => return Err(s),
                }
            }
        };
        let reading = Arc::new(AtomicBool::new(true));
        let fut = serve(s, Reading(Arc::clone(&reading)));
        let task = tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
        self.conns.push_back(Conn {
            task: task.abort_handle(),
            reading,
        });
        Ok(())
    }
}

/// The answer when every slot serves a request, written without waiting (`try_write`).
pub const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n";

/// The largest request head accepted.
pub const MAX_HEAD: usize = 8192;

/// A request head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// GET, HEAD, ...
    pub method: String,
    /// The path, percent-decoded.
    pub path: String,
    /// Query parameters in order, percent-decoded (`+` is a space).
    pub query: Vec<(String, String)>,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// Whether the request line says HTTP/1.0 (which may come without a Host header).
    pub http10: bool,
}

impl Request {
    /// The first query parameter named `k`.
    pub fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// The first header named `k` (lower case).
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head (at most [`MAX_HEAD`] bytes); `Ok(None)` when it is too large, cut short or
/// not HTTP.
pub async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Option<Request>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // The head ends at an empty line; a bare LF ends a line too (RFC 9112 2.2 lets a server take
    // it: `printf 'GET /metrics HTTP/1.0\n\n' | nc` was held for the 10 s limit, then refused).
    while !(head.windows(2).any(|w| w == b"\n\n") || head.windows(3).any(|w| w == b"\n\r\n")) {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(parse_head(&head))
}

/// Parses a request head (request line and headers).
pub fn parse_head(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    let version = first.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    // The absolute form (`GET http://host:8080/api/... HTTP/1.1`), which a server must take too
    // (RFC 9112 3.2.2; it was a 404): its authority stands for the Host header.
    let (target, authority) = match absolute(target) {
        Some((authority, rest)) => (rest, Some(authority)),
        None => (target, None),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = if path.is_empty() && authority.is_some() {
        "/"
    } else {
        path
    };
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let lines: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
    // A header folded over lines (obsolete): refused, as RFC 9112 allows, rather than read one way
    // here and another by a proxy in front.
    if lines.iter().any(|l| l.starts_with([' ', '\t'])) {
        return None;
    }
    let mut headers: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if let Some(a) = authority {
        // The received Host is replaced, not dropped: one that is missing (HTTP/1.1) or repeated is
        // still refused by the caller, as it is for any other request.
        let mut had = false;
        for (_, v) in headers.iter_mut().filter(|(k, _)| k == "host") {
            a.clone_into(v);
            had = true;
        }
        if !had && version == "HTTP/1.0" {
            headers.push(("host".into(), a.to_string()));
        }
    }
    Some(Request {
        method,
        path: decode(path),
        query,
        headers,
        http10: version == "HTTP/1.0",
    })
}

/// An absolute-form request target split into its authority and the rest (path and query, either
/// perhaps empty); `None` for the usual origin form.
fn absolute(target: &str) -> Option<(&str, &str)> {
    let scheme = target.find("://")?;
    if !target[..scheme].eq_ignore_ascii_case("http")
        && !target[..scheme].eq_ignore_ascii_case("https")
    {
        return None;
    }
    let rest = &target[scheme + 3..];
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(rest.split_at(cut))
}

/// Percent-decoding (and `+` as a space); invalid escapes are kept as they are.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// The reason phrase of a status code.
fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Writes a whole answer and closes the connection's write side.
pub async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: u16,
    kind: &str,
    body: &[u8],
) -> std::io::Result<()> {
    respond_with(s, code, kind, "", body).await
}

/// The header line a 405 answer carries: the methods the servers take.
pub const ALLOW: &str = "Allow: GET, HEAD\r\n";

/// [`respond`] with more header lines (`extra`: each ending in `\r\n`).
pub async fn respond_with<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: u16,
    kind: &str,
    extra: &str,
    body: &[u8],
) -> std::io::Result<()> {
    respond_to(s, true, code, kind, extra, body).await
}

/// The answer to a HEAD request: [`respond_with`]'s header lines (the length of `body`), without it.
pub async fn respond_head<S: AsyncWrite + Unpin>(
    s: &mut S,
    code: u16,
    kind: &str,
    extra: &str,
    body: &[u8],
) -> std::io::Result<()> {
    respond_to(s, false, code, kind, extra, body).await
}

async fn respond_to<S: AsyncWrite + Unpin>(
    s: &mut S,
    with_body: bool,
    code: u16,
    kind: &str,
    extra: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{extra}Connection: close\r\n\r\n",
        reason(code),
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    if with_body {
        s.write_all(body).await?;
    }
    s.shutdown().await
}

/// Why a request's Host header is unacceptable, if it is: missing (HTTP/1.1 requires one) or given
/// more than once (which one counts would differ between us and a proxy in front; RFC 9112 asks
/// for a 400 on both).
pub fn host_refusal(req: &Request) -> Option<&'static [u8]> {
    match req.headers.iter().filter(|(n, _)| n == "host").count() {
        0 if !req.http10 => Some(b"a Host header is required\n"),
        0 | 1 => None,
        _ => Some(b"the host header is given more than once\n"),
    }
}

/// Whether a connection came in on a loopback address (IPv4-mapped too): a server bound to
/// `0.0.0.0` or `[::]` is reached over loopback by this machine's browsers as well, and what a DNS
/// rebinding can do to a loopback-only server it can do there (probe C: `metrics_listen =
/// "0.0.0.0:PORT"` answered `Host: evil.example` on 127.0.0.1).
pub fn arrived_on_loopback(s: &tokio::net::TcpStream) -> bool {
    s.local_addr().is_ok_and(|a| match a.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    })
}

/// Whether a Host header names this machine as only a local client would: `localhost` or an IP
/// address (with or without a port). A domain name is what a DNS-rebinding page sends.
/// The port, if any, must be digits (RFC 9110's `port = *DIGIT`, at most 65535): `localhost:abc` is
/// no host a browser sends.
pub fn local_host(host: &str) -> bool {
    let port_ok = |p: &str| {
        p.is_empty() || (p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok())
    };
    if let Some(v6) = host.strip_prefix('[') {
        let Some((addr, rest)) = v6.split_once(']') else {
            return false;
        };
        let port = match rest {
            "" => "",
            r => match r.strip_prefix(':') {
                Some(p) => p,
                None => return false,
            },
        };
        return addr.parse::<std::net::Ipv6Addr>().is_ok() && port_ok(port);
    }
    let (name, port) = host.rsplit_once(':').unwrap_or((host, ""));
    (name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok())
        && port_ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server of `n` slots whose connections answer `ok` to a request, or hold it forever for
    /// the path `/hold`.
    async fn slots_server(n: usize) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let mut slots = Slots::new(n);
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let served = slots
                    .admit(s, |mut s, reading| async move {
                        let Ok(Some(req)) = read_request(&mut s).await else {
                            return;
                        };
                        reading.done();
                        if req.path == "/hold" {
                            std::future::pending::<()>().await;
                        }
                        let _ = respond(&mut s, 200, "text/plain", b"ok\n").await;
                    })
                    .await;
                if let Err(s) = served {
                    let _ = s.try_write(BUSY);
                }
            }
        });
        (addr, server)
    }

    async fn get(addr: &str, path: &str) -> (tokio::net::TcpStream, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_millis(500), s.read(&mut got))
            .await
            .map_or(0, |r| r.unwrap_or(0));
        (s, String::from_utf8_lossy(&got[..n]).into_owned())
    }

    #[tokio::test]
    async fn silent_connections_give_their_slots_to_requests_and_busy_ones_keep_them() {
        let (addr, server) = slots_server(4).await;
        let mut silent = Vec::new();
        for _ in 0..12 {
            silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
            tokio::task::yield_now().await;
        }
        for _ in 0..3 {
            let (_, answer) = get(&addr, "/").await;
            assert!(answer.ends_with("\r\n\r\nok\n"), "{answer:?}");
        }
        // Four requests being served hold every slot: the next connection is turned away.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(get(&addr, "/hold").await.0);
        }
        let (_, answer) = get(&addr, "/").await;
        assert!(
            answer.starts_with("HTTP/1.1 503") && answer.ends_with("busy\n"),
            "{answer:?}"
        );
        drop(held);
        server.abort();
    }

    #[test]
    fn heads_parse_with_decoded_query_and_headers() {
        let r = parse_head(
            b"GET /api/records?topic=app%2Dlogs&q=a+b&re=1&x HTTP/1.1\r\nAuthorization: Bearer t0k\r\nHost: h\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/records");
        assert_eq!(r.param("topic"), Some("app-logs"));
        assert_eq!(r.param("q"), Some("a b"));
        assert_eq!(r.param("x"), Some(""));
        assert_eq!(r.header("authorization"), Some("Bearer t0k"));
        assert!(!r.http10);
        assert!(parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().http10);
        // A folded header (t26: `Host: a` then ` evil.com` was taken).
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n evil.com\r\n\r\n").is_none());
        assert!(parse_head(b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\nHost: h\r\n\r\n").is_none());
        // Bare LF line ends (RFC 9112 2.2), alone or mixed with CRLF.
        let r = parse_head(b"GET /metrics HTTP/1.1\nHost: h\n\n").unwrap();
        assert_eq!((r.path.as_str(), r.header("host")), ("/metrics", Some("h")));
        let r = parse_head(b"GET /x HTTP/1.1\r\nHost: h\nX: 1\r\n\n").unwrap();
        assert_eq!((r.header("host"), r.header("x")), (Some("h"), Some("1")));
    }

    /// A head is complete at an empty line, whether lines end in CRLF or a bare LF (one that ended
    /// in LF was held for the read limit, then refused).
    #[tokio::test]
    async fn a_head_with_bare_lf_line_ends_is_read_at_its_empty_line() {
        for head in [
            &b"GET /a HTTP/1.0\n\n"[..],
            b"GET /a HTTP/1.1\nHost: h\n\n",
            b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: h\n\r\n",
        ] {
            // The reader stays open: only the empty line can end the head.
            let (mut client, mut server) = tokio::io::duplex(4096);
            client.write_all(head).await.unwrap();
            let r = tokio::time::timeout(Duration::from_secs(5), read_request(&mut server))
                .await
                .expect("the head ends at its empty line")
                .unwrap()
                .unwrap();
            assert_eq!(r.path, "/a", "{head:?}");
        }
    }

    #[test]
    fn a_local_host_is_localhost_or_an_address_with_at_most_a_numeric_port() {
        for ok in [
            "localhost",
            "LocalHost:8080",
            "127.0.0.1",
            "10.0.0.5:80",
            "[::1]",
            "[::1]:9",
            "localhost:",
        ] {
            assert!(local_host(ok), "{ok}");
        }
        for bad in [
            "localhost:abc",
            "127.0.0.1:99999",
            "[::1]x",
            "[::1]:a",
            "[::1",
            "evil.example",
            "evil.example:80",
            "localhost:80:80",
            "127.0.0.1:+80",
        ] {
            assert!(!local_host(bad), "{bad}");
        }
    }

    #[test]
    fn an_absolute_form_target_is_its_path_and_its_authority_the_host() {
        let r = parse_head(
            b"GET http://127.0.0.1:8080/api/records?topic=t HTTP/1.1\r\nHost: other\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.path, "/api/records");
        assert_eq!(r.param("topic"), Some("t"));
        assert_eq!(r.header("host"), Some("127.0.0.1:8080"));
        let r = parse_head(b"GET HTTP://h:1 HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((r.path.as_str(), r.header("host")), ("/", Some("h:1")));
        let r = parse_head(b"GET https://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert_eq!((r.path.as_str(), r.param("x")), ("/", Some("1")));
        // HTTP/1.1 still needs its Host (refused by the caller), and repeated ones stay repeated.
        let r = parse_head(b"GET http://h/ HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.header("host"), None);
        let r = parse_head(b"GET http://h/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap();
        assert_eq!(r.headers.iter().filter(|(k, _)| k == "host").count(), 2);
        // A path that merely contains "://" is an origin-form path.
        assert_eq!(
            parse_head(b"GET /a://b HTTP/1.1\r\nHost: h\r\n\r\n")
                .unwrap()
                .path,
            "/a://b"
        );
    }

    #[test]
    fn bad_heads_and_escapes_do_not_panic() {
        assert!(parse_head(b"\xff\xfe\r\n\r\n").is_none());
        assert!(parse_head(b"GET /\r\n\r\n").is_none());
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%zz1"), "%zz1");
        assert_eq!(decode("a%41%"), "aA%");
        assert_eq!(decode("%ff"), "\u{fffd}");
        assert_eq!(decode("%\u{e9}x"), "%\u{e9}x");
    }

    #[tokio::test]
    async fn each_status_goes_out_with_its_own_reason_phrase() {
        for (code, phrase) in [
            (413, "Payload Too Large"),
            (502, "Bad Gateway"),
            (503, "Service Unavailable"),
        ] {
            let mut out = Vec::new();
            respond(&mut out, code, "text/plain", b"x\n").await.unwrap();
            let head = String::from_utf8(out).unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {code} {phrase}\r\n")),
                "{head}"
            );
        }
    }
}

//! Prometheus text format (version 0.0.4) and a small, bounded HTTP server for `/metrics` and
//! `/healthz`. The server answers GET only, reads at most 8 KiB of request head within 5 s, serves at
//! most 32 connections at once, and closes each after one answer: a scraper, not the internet.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::http;

/// Value buckets and their counts, as Prometheus histograms have them.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending; `+Inf` is implied).
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one value.
    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Text in the exposition format, one family at a time.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// A label value escaped as the format wants (`\\`, `\"`, `\n`).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Exposition {
    /// Starts a family: its help text and type (`counter`, `gauge`, `histogram`).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.out, "{name}{} {v}", labels(l));
    }

    /// A whole histogram family.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        for (b, c) in h.bounds.iter().zip(&h.counts) {
            let le = b.to_string();
            self.sample(&format!("{name}_bucket"), &[("le", &le)], *c as f64);
        }
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], h.count as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], h.count as f64);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// What the server asks of whoever holds the state.
#[derive(Debug)]
pub enum Ask {
    /// The metrics text.
    Metrics(oneshot::Sender<String>),
    /// Whether things are healthy, and why not.
    Health(oneshot::Sender<Result<(), String>>),
}

/// Connections served at once.
const CONNECTIONS: usize = 32;

/// Binds `addr` and serves until the returned task is aborted; each request is turned into an [`Ask`].
/// Silent connections give way to new ones ([`http::Slots`]); with every slot serving a request, a
/// new one is answered `503 busy`. Also returns the address bound (port 0 is a port chosen now).
pub async fn serve(
    addr: &str,
    asks: mpsc::Sender<Ask>,
) -> std::io::Result<(tokio::task::JoinHandle<()>, std::net::SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut slots = http::Slots::new(CONNECTIONS);
        loop {
            let Ok((s, _)) = listener.accept().await else {
                // Out of descriptors, most likely: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let asks = asks.clone();
            let served = slots
                .admit(s, move |mut s, reading| async move {
                    // Over loopback only local names are answered: a web page elsewhere whose name a
                    // DNS rebinding points at 127.0.0.1 would otherwise read the followed paths,
                    // topics and errors through the browser of whoever opens it.
                    let local_only = http::arrived_on_loopback(&s);
                    let answered = answer(&mut s, asks, &reading, local_only);
                    let _ = tokio::time::timeout(Duration::from_secs(10), answered).await;
                })
                .await;
            if let Err(s) = served {
                let _ = s.try_write(http::BUSY);
            }
        }
    });
    Ok((task, bound))
}

async fn answer(
    s: &mut tokio::net::TcpStream,
    asks: mpsc::Sender<Ask>,
    reading: &http::Reading,
    local_only: bool,
) -> std::io::Result<()> {
    let text = "text/plain";
    let req = http::read_request(s).await?;
    reading.done();
    let Some(req) = req else {
        return http::respond(s, 400, text, b"bad request\n").await;
    };
    if let Some(why) = http::host_refusal(&req) {
        return http::respond(s, 400, text, why).await;
    }
    if local_only && !req.header("host").is_none_or(http::local_host) {
        let why = b"this server answers only to localhost or an IP address (the Host header names another)\n";
        return http::respond(s, 403, text, why).await;
    }
    if req.method != "GET" && req.method != "HEAD" {
        return http::respond_with(s, 405, text, http::ALLOW, b"only GET and HEAD\n").await;
    }
    let (code, kind, body): (u16, &str, Vec<u8>) = match req.path.as_str() {
        "/metrics" => {
            let (tx, rx) = oneshot::channel();
            if asks.send(Ask::Metrics(tx)).await.is_err() {
                (503, text, b"stopping\n".to_vec())
            } else {
                let body = rx.await.unwrap_or_default();
                (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body.into_bytes(),
                )
            }
        }
        "/healthz" => {
            let (tx, rx) = oneshot::channel();
            if asks.send(Ask::Health(tx)).await.is_err() {
                (503, text, b"stopping\n".to_vec())
            } else {
                match rx.await.unwrap_or(Err("stopping".into())) {
                    Ok(()) => (200, text, b"ok\n".to_vec()),
                    Err(why) => (503, text, format!("{why}\n").into_bytes()),
                }
            }
        }
        _ => (404, text, b"try /metrics or /healthz\n".to_vec()),
    };
    // HEAD: the same status and headers without the body (a probe asking HEAD got the body too).
    match req.method.as_str() {
        "HEAD" => http::respond_head(s, code, kind, "", &body).await,
        _ => http::respond(s, code, kind, &body).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn histograms_count_cumulatively() {
        let mut h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 5.0, 50.0] {
            h.observe(v);
        }
        let mut e = Exposition::default();
        e.histogram("x", "test", &h);
        let t = e.finish();
        assert!(t.contains("x_bucket{le=\"1\"} 1\n"), "{t}");
        assert!(t.contains("x_bucket{le=\"10\"} 2\n"), "{t}");
        assert!(t.contains("x_bucket{le=\"+Inf\"} 3\n"), "{t}");
        assert!(t.contains("x_count 3\n"), "{t}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("path", "a\"b\\c\nd")]),
            "{path=\"a\\\"b\\\\c\\nd\"}"
        );
    }

    #[tokio::test]
    async fn the_server_answers_metrics_health_and_refuses_the_rest() {
        let (tx, mut rx) = mpsc::channel(4);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        // Bound to every address and asked over loopback: the DNS-rebinding check holds there too.
        let (server, bound) = serve(&format!("0.0.0.0:{port}"), tx).await.unwrap();
        assert_eq!(bound.port(), port);
        tokio::spawn(async move {
            while let Some(a) = rx.recv().await {
                match a {
                    Ask::Metrics(r) => drop(r.send("m 1\n".into())),
                    Ask::Health(r) => drop(r.send(Err("kafka down".into()))),
                }
            }
        });
        let ask_as = |host: &'static str, method: &'static str, path: &'static str| {
            let addr = addr.clone();
            async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let ask = |method: &'static str, path: &'static str| ask_as("127.0.0.1", method, path);
        let get = |path: &'static str| ask("GET", path);
        // Over loopback, a name that is not local is what a DNS-rebinding page sends.
        let h = ask_as("rebound.example:9898", "GET", "/metrics").await;
        assert!(h.starts_with("HTTP/1.1 403"), "{h}");
        assert!(ask_as("localhost:9898", "GET", "/metrics")
            .await
            .ends_with("\r\n\r\nm 1\n"));
        // HEAD: the status and headers, with the length the body would have, and no body.
        let h = ask("HEAD", "/healthz").await;
        assert!(
            h.starts_with("HTTP/1.1 503") && h.contains("Content-Length: 11\r\n"),
            "{h}"
        );
        assert!(h.ends_with("\r\n\r\n"), "{h}");
        let h = ask("POST", "/metrics").await;
        assert!(
            h.starts_with("HTTP/1.1 405") && h.contains("Allow: GET, HEAD\r\n"),
            "{h}"
        );
        assert!(get("/metrics").await.ends_with("\r\n\r\nm 1\n"));
        let h = get("/healthz").await;
        assert!(
            h.starts_with("HTTP/1.1 503") && h.ends_with("kafka down\n"),
            "{h}"
        );
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        // A missing (HTTP/1.1) or repeated Host is refused, as the web server refuses it.
        let raw = |req: &'static [u8]| {
            let addr = addr.clone();
            async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(req).await.unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let h = raw(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            h.starts_with("HTTP/1.1 400") && h.ends_with("a Host header is required\n"),
            "{h}"
        );
        let h = raw(b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
        assert!(
            h.starts_with("HTTP/1.1 400") && h.contains("more than once"),
            "{h}"
        );
        assert!(raw(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .ends_with("\r\n\r\nm 1\n"));
        // Sockets that send nothing, more than there are slots, do not keep a scrape unanswered.
        let mut idle = Vec::new();
        for _ in 0..(CONNECTIONS + 8) {
            idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
            tokio::task::yield_now().await;
        }
        for _ in 0..3 {
            assert!(get("/metrics").await.ends_with("\r\n\r\nm 1\n"));
        }
        drop(idle);
        server.abort();
    }
}

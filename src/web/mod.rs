//! `shipper web`: the seed's web page, from the same binary. A page embedded in the binary shows the
//! records of the topics given on the command line as they arrive (server-sent events), with the
//! filtering done here; `/api/records` answers scripts with the envelope of `consume -J`.
//!
//! Safe by default: only the topics named on the command line can be read; a token, when set, is
//! required on every request (header `Authorization: Bearer T` or `?token=T`); values reach the page
//! as JSON strings that it only ever puts in text nodes. Bounded: at most 64 connections (a silent
//! one gives way to a new one) and 32 live views at once, one request per connection, a request
//! head of 8 KiB read within 10 s.

mod hub;
pub mod row;
mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::cluster::Cluster;
use crate::consumer::{list_offsets_as, Consumer, StartOffset, LATEST};
use crate::http::{self, Request};
use crate::secret::Secret;
use hub::Hubs;
use row::Filter;

/// The page, embedded.
const PAGE: &str = include_str!("page.html");
/// The most records `/api/records` returns.
pub const API_MAX: usize = 10_000;

/// The most JSON one `/api/records` answer holds: past it, no more records are added, so 10,000
/// records of 1 MB are not gathered in memory; a first record that alone is larger is refused (413),
/// naming where it is, for `consume` to read.
pub const API_MAX_BYTES: usize = 8 << 20;

/// `/api/records` answers built at once (each up to [`API_MAX_BYTES`]); more get 429.
const API_AT_ONCE: usize = 4;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The topics that may be read.
    pub topics: Vec<String>,
    /// Required on every request when set.
    pub token: Option<Secret>,
}

struct Server {
    cfg: WebConfig,
    /// No token: a request that came in over loopback is from this machine, so it must name it as
    /// such (see [`http::local_host`]), also when listening on every address.
    local_only: bool,
    cluster: Arc<Cluster>,
    hubs: Hubs,
    views: Arc<tokio::sync::Semaphore>,
    api: Arc<tokio::sync::Semaphore>,
}

/// Connections served at once; silent ones give way to new ones ([`http::Slots`]).
const CONNECTIONS: usize = 64;

/// Serves on `listener` until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, cluster: Arc<Cluster>, cfg: WebConfig) {
    let server = Arc::new(Server {
        local_only: cfg.token.is_none(),
        // The live reads' fetches on connections of their own: a view opening meanwhile resolves
        // its start (and "end") at once, not behind a held Fetch (t25 F1: from=end missed the records
        // written in the 0.3 s, seconds under load, that its requests waited).
        hubs: Hubs::new(Arc::new(cluster.sibling())),
        cluster,
        cfg,
        views: Arc::new(tokio::sync::Semaphore::new(32)),
        api: Arc::new(tokio::sync::Semaphore::new(API_AT_ONCE)),
    });
    let mut slots = http::Slots::new(CONNECTIONS);
    loop {
        let Ok((s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let server = server.clone();
        let served = slots
            .admit(s, move |mut s, reading| async move {
                let _ = s.set_nodelay(true);
                let _ = server.answer(&mut s, &reading).await;
            })
            .await;
        if let Err(s) = served {
            let _ = s.try_write(http::BUSY);
        }
    }
}

/// Where a view or an API call starts: `end`, `beginning`, `-N` (the last N of each partition),
/// `N`, `s@MS`, or a time `t@MS`.
pub fn parse_from(s: Option<&str>, default: StartOffset) -> Result<StartOffset, String> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => StartOffset::parse(&s.replace("t@", "s@"))
            .ok_or_else(|| format!("from={s}: use end, beginning, -N, N or s@TIMESTAMP_MS")),
    }
}

impl Server {
    fn authorized(&self, req: &Request) -> bool {
        let Some(token) = &self.cfg.token else {
            return true;
        };
        let given = req
            .header("authorization")
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .or(req.param("token"))
            .unwrap_or_default();
        constant_time_eq(given.as_bytes(), token.expose().as_bytes())
    }

    async fn answer(&self, s: &mut TcpStream, reading: &http::Reading) -> std::io::Result<()> {
        let req = match tokio::time::timeout(Duration::from_secs(10), http::read_request(s)).await {
            Ok(Ok(Some(r))) => r,
            _ => return http::respond(s, 400, "text/plain", b"bad request\n").await,
        };
        reading.done();
        // HEAD for the page and /healthz (a probe may ask HEAD); the data answers are GET only.
        let head = req.method == "HEAD";
        let headable = matches!(req.path.as_str(), "/" | "/index.html" | "/healthz");
        if req.method != "GET" && !(head && headable) {
            let allow = if headable {
                http::ALLOW
            } else {
                "Allow: GET\r\n"
            };
            return http::respond_with(s, 405, "text/plain", allow, b"only GET\n").await;
        }
        if let Some(why) = http::host_refusal(&req) {
            return http::respond(s, 400, "text/plain", why).await;
        }
        // A repeated token: which one counts would differ between us and a proxy in front.
        for h in ["authorization", "origin", "sec-fetch-site"] {
            if req.headers.iter().filter(|(n, _)| n == h).count() > 1 {
                let why = format!("the {h} header is given more than once\n");
                return http::respond(s, 400, "text/plain", why.as_bytes()).await;
            }
        }
        if req.query.iter().filter(|(n, _)| n == "token").count() > 1 {
            return http::respond(s, 400, "text/plain", b"token=... is given more than once\n")
                .await;
        }
        if self.local_only
            && http::arrived_on_loopback(s)
            && !req.header("host").is_none_or(http::local_host)
        {
            // DNS rebinding: a web page elsewhere whose name now resolves to 127.0.0.1 would
            // otherwise read these topics through the browser of whoever opens it.
            return http::respond(
                s,
                403,
                "text/plain",
                b"this server answers only to localhost or an IP address (the Host header names another)\n",
            )
            .await;
        }
        // The page itself holds no data and may be loaded without the token, so that a reload (the
        // page takes the token out of the address bar) works; everything it reads needs it. So
        // does `/healthz` (`ok` and nothing else): a liveness probe need not hold the secret
        // (t28 F5: it answered 401).
        let page_only = matches!(req.path.as_str(), "/" | "/index.html" | "/healthz");
        if !page_only && !self.authorized(&req) {
            return http::respond(
                s,
                401,
                "text/plain",
                b"a valid token is required (?token=...)\n",
            )
            .await;
        }
        let page = matches!(req.path.as_str(), "/" | "/index.html" | "/healthz");
        if !page && from_another_site(&req) {
            // A page elsewhere cannot read the answers (no CORS header is sent), but it could make a
            // visitor's browser take the views and API slots, and the work, of this server.
            return http::respond(
                s,
                403,
                "text/plain",
                b"requests from other web sites are refused (open the page of this server)\n",
            )
            .await;
        }
        match req.path.as_str() {
            "/" | "/index.html" => {
                let extra = page_headers();
                let kind = "text/html; charset=utf-8";
                match head {
                    true => http::respond_head(s, 200, kind, extra, PAGE.as_bytes()).await,
                    false => http::respond_with(s, 200, kind, extra, PAGE.as_bytes()).await,
                }
            }
            "/healthz" if head => http::respond_head(s, 200, "text/plain", "", b"ok\n").await,
            "/healthz" => http::respond(s, 200, "text/plain", b"ok\n").await,
            "/api/topics" => {
                let list: Vec<String> = self
                    .cfg
                    .topics
                    .iter()
                    .map(|t| crate::escape::json_quoted(t))
                    .collect();
                let body = format!("[{}]\n", list.join(","));
                http::respond(s, 200, "application/json", body.as_bytes()).await
            }
            "/api/records" => self.records(s, &req).await,
            "/stream" => self.stream(s, &req).await,
            _ => http::respond(s, 404, "text/plain", b"not found\n").await,
        }
    }

    /// The topic, start and filter of a request, or the reason it is refused.
    fn view(&self, req: &Request, default: StartOffset) -> Result<session::View, String> {
        // Only the first of a repeated name would count: `p=0&p=1` would show partition 0 alone.
        for k in ["topic", "from", "p", "q", "re", "limit"] {
            if req.query.iter().filter(|(n, _)| n == k).count() > 1 {
                let hint = if k == "p" { " (partitions: p=0,1)" } else { "" };
                return Err(format!("{k}=... is given more than once{hint}"));
            }
        }
        let topic = match req.param("topic") {
            Some(t) => t.to_string(),
            None if self.cfg.topics.len() == 1 => self.cfg.topics[0].clone(),
            None => return Err("topic=... is required".into()),
        };
        if !self.cfg.topics.contains(&topic) {
            return Err(format!(
                "topic '{}' is not served here (start shipper web with it)",
                crate::escape::Esc::str(&topic)
            ));
        }
        // Another value would be a text search without a word (helper-73 F3: `re=true` searched for
        // the pattern's text and answered an empty list, as if nothing matched).
        let regex = match req.param("re") {
            None | Some("0") => false,
            Some("1") => true,
            Some(_) => return Err("re= takes 1 (q is a regex) or 0 (q is text)".into()),
        };
        Ok(session::View {
            topic,
            start: parse_from(req.param("from"), default)?,
            filter: Filter::parse(req.param("p"), req.param("q"), regex)?,
        })
    }

    async fn stream(&self, s: &mut TcpStream, req: &Request) -> std::io::Result<()> {
        let view = match self.view(req, StartOffset::End) {
            Ok(v) => v,
            Err(why) => {
                return http::respond(s, 400, "text/plain", format!("{why}\n").as_bytes()).await
            }
        };
        let Ok(_permit) = self.views.clone().try_acquire_owned() else {
            return http::respond(s, 429, "text/plain", b"too many live views at once (32)\n")
                .await;
        };
        // A partition the topic lacks: said, as /api/records and consume -p say it, not an empty view.
        // Asked once here (not cached: partitions may have been added) and used by the whole view.
        let meta = match self.cluster.topic_current(&view.topic).await {
            Ok(meta) => meta,
            Err(e) => {
                return http::respond(s, 502, "text/plain", format!("{e}\n").as_bytes()).await
            }
        };
        if let Some(e) = unknown_partition(&meta, &view) {
            return http::respond(s, 400, "text/plain", format!("{e}\n").as_bytes()).await;
        }
        let (mut rd, mut wr) = s.split();
        session::stream(&mut wr, &mut rd, &self.cluster, &self.hubs, view, meta).await
    }

    /// `/api/records`: up to `limit` records (default 100, at most 10,000) from `from` (default
    /// beginning) up to the end as of the request, as a JSON array of `consume -J` objects.
    async fn records(&self, s: &mut TcpStream, req: &Request) -> std::io::Result<()> {
        let view = match self.view(req, StartOffset::Beginning) {
            Ok(v) => v,
            Err(why) => {
                return http::respond(s, 400, "text/plain", format!("{why}\n").as_bytes()).await
            }
        };
        let limit = match req.param("limit").map(str::parse::<usize>) {
            None => 100,
            Some(Ok(n)) if n <= API_MAX => n,
            Some(_) => {
                let why = format!("limit must be a number up to {API_MAX}\n");
                return http::respond(s, 400, "text/plain", why.as_bytes()).await;
            }
        };
        let Ok(permit) = self.api.clone().try_acquire_owned() else {
            let why = format!("too many /api/records requests at once ({API_AT_ONCE})\n");
            return http::respond(s, 429, "text/plain", why.as_bytes()).await;
        };
        let work = read_records(&self.cluster, &view, limit);
        let (status, kind, body) = match tokio::time::timeout(Duration::from_secs(30), work).await {
            Ok(Ok(Ok(body))) => (200, "application/json", body),
            Ok(Ok(Err(why))) => (413, "text/plain", format!("{why}\n").into_bytes()),
            Ok(Err(e @ crate::error::Error::UnknownPartition { .. })) => {
                (400, "text/plain", format!("{e}\n").into_bytes())
            }
            Ok(Err(e)) => (502, "text/plain", format!("{e}\n").into_bytes()),
            Err(_) => (503, "text/plain", b"timed out reading the topic\n".to_vec()),
        };
        // The slot is for reading Kafka; the answer (up to 8 MiB) is written within a bound: a
        // client that asks and never reads held a slot for ever (4 such made every later ask a 429).
        drop(permit);
        match tokio::time::timeout(
            session::WRITE_TIMEOUT,
            http::respond(s, status, kind, &body),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read the answer",
            )),
        }
    }
}

/// Reads up to `limit` records of the view (from its start to the end as of now) as a JSON array;
/// `Err` (inside) when the first record alone is larger than an answer holds.
async fn read_records(
    cluster: &Arc<Cluster>,
    view: &session::View,
    limit: usize,
) -> crate::error::Result<Result<Vec<u8>, String>> {
    let meta = cluster.topic_current(&view.topic).await?;
    let parts = view.partitions(&meta);
    if let Some(e) = unknown_partition(&meta, view) {
        return Err(e);
    }
    let ends = list_offsets_as(cluster, &view.topic, &parts, LATEST, true).await?;
    let mut consumer = Consumer::new(cluster.clone(), hub::live_fetch()).quiet();
    consumer.assign(meta, &parts, view.start).await?;
    let mut body = b"[".to_vec();
    let mut n = 0;
    let mut scratch = Vec::new();
    // Full at `limit` records, or at the first record that would take the answer past
    // API_MAX_BYTES (left out: the cap holds, also for a first record that alone is larger).
    let mut full = limit == 0;
    let mut too_large = None;
    while !full && !consumer.at_end_of_start() {
        for f in consumer.poll().await? {
            let end = ends.get(&f.partition).copied().unwrap_or(0);
            let res = f.for_each_record_while(&mut scratch, 64 * 1024 * 1024, |r| {
                if full || r.offset >= end {
                    return std::ops::ControlFlow::Break(());
                }
                if !view.filter.wants(r) {
                    return std::ops::ControlFlow::Continue(());
                }
                let before = body.len();
                if n > 0 {
                    body.push(b',');
                }
                let _ = crate::output::Format::Json.write(&mut body, &view.topic, f.partition, r);
                if body.len() + 2 > API_MAX_BYTES {
                    if n == 0 {
                        too_large = Some((f.partition, r.offset, body.len() - before));
                    }
                    body.truncate(before);
                    full = true;
                    return std::ops::ControlFlow::Break(());
                }
                n += 1;
                full = n >= limit;
                std::ops::ControlFlow::Continue(())
            });
            res.map_err(|error| crate::error::Error::Records {
                topic: view.topic.clone(),
                partition: f.partition,
                error,
            })?;
        }
    }
    if let Some((p, offset, bytes)) = too_large {
        return Ok(Err(format!(
            "the record at partition {p} offset {offset} takes {bytes} bytes of JSON, more than one answer holds ({} MiB); read it with: shipper consume {} -p {p} -o {offset} -c 1",
            API_MAX_BYTES >> 20,
            crate::escape::Esc::str(&view.topic)
        )));
    }
    body.extend_from_slice(b"]\n");
    Ok(Ok(body))
}

/// The first partition the view asks for by number that the topic lacks, as an error.
fn unknown_partition(
    meta: &crate::cluster::TopicMeta,
    view: &session::View,
) -> Option<crate::error::Error> {
    let p = *view
        .filter
        .partitions
        .iter()
        .find(|p| !meta.partitions.iter().any(|m| m.id == **p))?;
    Some(crate::error::Error::UnknownPartition {
        topic: view.topic.clone(),
        partition: p,
        count: meta.partitions.len(),
    })
}

/// Whether a browser says the request comes from a page of another site or origin: `Sec-Fetch-Site`
/// (sent by current browsers on every request) other than `same-origin` or `none` (typed, a
/// bookmark), or an `Origin` (sent on cross-origin reads) naming another host than the request's.
/// Scripts and curl send neither.
fn from_another_site(req: &Request) -> bool {
    if req
        .header("sec-fetch-site")
        .is_some_and(|v| !v.eq_ignore_ascii_case("same-origin") && !v.eq_ignore_ascii_case("none"))
    {
        return true;
    }
    match req.header("origin") {
        None => false,
        Some(o) => {
            let host = o.split_once("://").map_or(o, |(_, h)| h);
            req.header("host")
                .is_none_or(|h| !h.eq_ignore_ascii_case(host))
        }
    }
}

/// The page's own header lines: its one inline script and style are allowed by their hashes and
/// nothing else runs or loads (a `<script>` that ever got into the page would not run); no other
/// site may frame it (clickjacking) or learn its address (the token may be in it).
fn page_headers() -> &'static str {
    static HEADERS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HEADERS.get_or_init(|| {
        format!(
            "Content-Security-Policy: default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n",
            inline_hash(PAGE, "<script>", "</script>"),
            inline_hash(PAGE, "<style>", "</style>"),
        )
    })
}

/// The CSP source of the text between `open` and `close` in `page`: `sha256-BASE64`.
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    use base64::Engine;
    let body = page
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(body, _)| body);
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/stream".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Request::default()
        }
    }

    #[test]
    fn requests_from_other_sites_are_told_from_the_page_and_scripts() {
        // curl and scripts: neither header.
        assert!(!from_another_site(&req(&[("host", "127.0.0.1:8080")])));
        // The page itself, a typed address.
        for site in ["same-origin", "none", "Same-Origin"] {
            assert!(
                !from_another_site(&req(&[("sec-fetch-site", site)])),
                "{site}"
            );
        }
        // A page elsewhere (t25 F6: 40 no-cors fetches were all served).
        for site in ["cross-site", "same-site"] {
            assert!(
                from_another_site(&req(&[("sec-fetch-site", site)])),
                "{site}"
            );
        }
        let h = ("host", "127.0.0.1:8080");
        assert!(!from_another_site(&req(&[
            h,
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!from_another_site(&req(&[
            h,
            ("origin", "https://127.0.0.1:8080")
        ])));
        assert!(from_another_site(&req(&[
            h,
            ("origin", "http://localhost:18799")
        ])));
        assert!(from_another_site(&req(&[h, ("origin", "null")])));
        assert!(from_another_site(&req(&[(
            "origin",
            "http://127.0.0.1:8080"
        )])));
    }

    #[test]
    fn the_page_policy_allows_its_own_script_and_style_by_hash() {
        let h = page_headers();
        assert_eq!(PAGE.matches("<script").count(), 1, "one inline script");
        assert_eq!(PAGE.matches("<style").count(), 1, "one inline style");
        assert!(!PAGE.contains(" onclick=") && !PAGE.contains(" style="));
        let script = inline_hash(PAGE, "<script>", "</script>");
        assert_eq!(script.len(), "sha256-".len() + 44, "{script}");
        assert_ne!(script, inline_hash("", "<script>", "</script>"));
        assert!(h.contains(&format!("script-src '{script}';")), "{h}");
        assert!(h.contains("frame-ancestors 'none'") && h.contains("X-Frame-Options: DENY\r\n"));
        assert!(h.ends_with("\r\n") && !h.contains("unsafe"));
    }
}

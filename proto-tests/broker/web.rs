//! `shipper web` against the real broker: the page in a real headless Chromium driven by Selenium
//! (proto-tests/web/browser.py: lines appear, filters, pause, `<script>` as text, two tabs, 10,000
//! records/s with clicks timed, the API, 401s), and the command's refusals.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

fn browser_available() -> bool {
    let ok = std::path::Path::new("/usr/bin/chromium").exists()
        && std::path::Path::new("/usr/bin/chromedriver").exists();
    if !ok && std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but chromium/chromedriver are missing (scripts/install-deps installs them)"
        );
    }
    ok
}

#[test]
fn the_page_works_in_a_real_browser() {
    let Some(b) = broker() else { return };
    if !browser_available() {
        eprintln!("SKIPPED: no chromium");
        return;
    }
    let t = topic("web");
    create_topic(&b, &t, 3, 1, &[]);
    let shot = std::env::var("SHIPPER_WEB_SCREENSHOT").unwrap_or_else(|_| {
        root()
            .join("target/web-screenshot.png")
            .to_string_lossy()
            .into_owned()
    });
    let out = Command::new("/usr/bin/python3")
        .arg(root().join("proto-tests/web/browser.py"))
        .arg(shipper_bin())
        .arg(&b)
        .arg(&t)
        .arg(&shot)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_page_works_in_firefox() {
    let Some(b) = broker() else { return };
    let gecko = std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cargo/bin/geckodriver");
    let ok = gecko.exists() && std::path::Path::new("/usr/bin/firefox-esr").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but firefox-esr or geckodriver is missing (scripts/install-deps installs them)"
        );
        eprintln!("SKIPPED: no firefox");
        return;
    }
    let t = topic("web-ff");
    create_topic(&b, &t, 3, 1, &[]);
    let out = Command::new("/usr/bin/python3")
        .arg(root().join("proto-tests/web/browser.py"))
        .arg(shipper_bin())
        .arg(&b)
        .arg(&t)
        .arg("")
        .arg("firefox")
        .env("GECKODRIVER", &gecko)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn web_refuses_to_serve_the_network_without_a_token_and_unknown_topics() {
    let Some(b) = broker() else { return };
    let out = shipper(&b, &["web", "x", "--listen", "0.0.0.0:0"], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token-file") && err.contains("--no-auth"),
        "{err}"
    );
    let missing = topic("web-absent");
    let out = shipper(&b, &["web", &missing, "--listen", "127.0.0.1:0"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    // A token on the command line stays out of ps.
    let t = topic("web-ps");
    create_topic(&b, &t, 1, 1, &[]);
    let mut child = Command::new(shipper_bin())
        .args([
            "-b",
            &b,
            "web",
            &t,
            "--listen",
            "127.0.0.1:0",
            "--token",
            "sekrit-123",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("sekrit-123"),
        "the token shows in ps"
    );
    // `--token "$TOKEN"` with TOKEN unset is refused, not a server without a token.
    let out = shipper(
        &b,
        &["web", &t, "--listen", "127.0.0.1:0", "--token", ""],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token is empty"));
}

#[test]
fn api_records_stops_at_8_mib_of_json_instead_of_gathering_every_large_record() {
    let Some(b) = broker() else { return };
    let t = topic("web-large");
    create_topic(&b, &t, 1, 1, &["max.message.bytes=12000000"]);
    let line = format!("{}\n", "x".repeat(1_000_000));
    shipper_ok(&b, &["produce", &t], line.repeat(12).as_bytes());
    // One record larger than an answer holds.
    let huge = format!("{}\n", "y".repeat(9_000_000));
    shipper_ok(
        &b,
        &[
            "produce",
            &t,
            "--max-line-bytes",
            "10000000",
            "--max-message-bytes",
            "12000000",
        ],
        huge.as_bytes(),
    );
    let (mut child, port) = start_web(&["-b", &b], &[&t]);
    let get = |q: &str| {
        crate::agent::http_get_as(port, &format!("/api/records?topic={t}{q}"), "localhost", "")
    };
    let (code, body) = get("&limit=100");
    let (huge_code, huge_body) = get("&from=12");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 200);
    let n = body.matches("\"offset\":").count();
    assert!((7..=8).contains(&n), "{n} records in {} bytes", body.len());
    // The cap holds: the record that would pass it is left out (it went past by one record).
    assert!(body.len() <= 8 << 20, "{} bytes", body.len());
    // A first record that alone passes it is refused, saying where it is (it was sent whole).
    assert_eq!(huge_code, 413, "{} bytes", huge_body.len());
    assert!(
        huge_body.contains("partition 0 offset 12")
            && huge_body.contains(&format!("shipper consume {t} -p 0 -o 12 -c 1")),
        "{huge_body}"
    );
}

#[test]
fn partitions_added_to_a_served_topic_are_seen_by_new_views_and_the_api() {
    // The topic's metadata was taken from the cache: partitions added were refused ("it has 1")
    // until the server was restarted.
    let Some(b) = broker() else { return };
    let t = topic("web-grow");
    create_topic(&b, &t, 1, 1, &[]);
    shipper_ok(&b, &["produce", &t, "-p", "0"], b"p0\n");
    let (mut child, port) = start_web(&["-b", &b], &[&t]);
    let (code, _) = crate::agent::http_get(port, &format!("/api/records?topic={t}"));
    assert_eq!(code, 200);
    kafka_tool(
        "org.apache.kafka.tools.TopicCommand",
        &[
            "--bootstrap-server",
            &b,
            "--alter",
            "--topic",
            &t,
            "--partitions",
            "2",
        ],
        b"",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !shipper(&b, &["produce", &t, "-p", "1"], b"p1\n")
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "partition 1 never writable"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (code, body) = crate::agent::http_get(port, &format!("/api/records?topic={t}&p=1"));
    let (_, all) = crate::agent::http_get(port, &format!("/api/records?topic={t}"));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"p1\""), "{body}");
    assert!(all.contains("\"p0\"") && all.contains("\"p1\""), "{all}");
}

#[test]
fn a_closed_live_view_frees_its_slot_at_once() {
    // 32 views at most: views whose browsers left held their slots until a ping failed (~45 s).
    use std::io::Read;
    let Some(b) = broker() else { return };
    let t = topic("web-slots");
    create_topic(&b, &t, 1, 1, &[]);
    let (mut child, port) = start_web(&["-b", &b], &[&t]);
    let open = || {
        let mut s = open_stream(port, &format!("topic={t}"), Duration::from_secs(10));
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        (s, String::from_utf8_lossy(&head).into_owned())
    };
    for round in 0..3 {
        let views: Vec<_> = (0..32).map(|_| open()).collect();
        let heads: Vec<&str> = views.iter().map(|(_, h)| &h[9..]).collect();
        assert!(
            heads.iter().all(|h| *h == "200"),
            "round {round}: {heads:?}"
        );
        assert!(open().1.ends_with("429"), "a 33rd view is refused");
        drop(views);
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_view_from_the_end_joining_another_shows_what_is_written_right_after_its_request() {
    // t25 F1: with another view of the topic open, a new from=end view's requests queued behind the
    // shared live read's held Fetch on the one connection to the broker, so its "end" was resolved
    // 0.1-0.5 s late and the records written meanwhile never reached it (8 of 8; seconds under load).
    use std::io::{Read, Write};
    let Some(b) = broker() else { return };
    let t = topic("web-join");
    create_topic(&b, &t, 1, 1, &[]);
    let (mut child, port) = start_web(&["-b", &b], &[&t]);
    let open = || {
        open_stream(
            port,
            &format!("topic={t}&from=end"),
            Duration::from_millis(100),
        )
    };
    // Reads `s` for up to `secs`, until `want` is in what it sent.
    let read_until = |s: &mut std::net::TcpStream, want: &str, secs: u64| {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 65536];
        while std::time::Instant::now() < deadline {
            if String::from_utf8_lossy(&got).contains(want) {
                return true;
            }
            if let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        String::from_utf8_lossy(&got).contains(want)
    };
    let mut first = open();
    assert!(
        read_until(&mut first, "event: live", 10),
        "first view never live"
    );
    // A producer already connected, so that a line reaches Kafka milliseconds after it is given.
    let mut producer = Command::new(shipper_bin())
        .args(["-b", &b, "produce", &t, "--linger-ms", "0"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = producer.stdin.take().unwrap();
    writeln!(stdin, "warm-up").unwrap();
    assert!(
        read_until(&mut first, "warm-up", 10),
        "the producer never wrote"
    );
    let mut missed = Vec::new();
    for i in 0..5 {
        let mut view = open();
        // Written well after the request (each of the view's requests queued behind a Fetch held
        // for 100 ms, its end was resolved 0.3-0.4 s after it), not so soon that it may be
        // written before the view has asked where the end is (it is then before the view's start).
        std::thread::sleep(Duration::from_millis(150));
        let tag = format!("joined-{i}");
        writeln!(stdin, "{tag}").unwrap();
        if !read_until(&mut view, &tag, 5) {
            missed.push(tag);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stdin);
    let _ = producer.wait();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        missed.is_empty(),
        "views that missed the record written after their request: {missed:?}"
    );
}

#[test]
fn web_on_loopback_without_a_token_answers_only_to_local_names() {
    let Some(b) = broker() else { return };
    let t = topic("web-rebind");
    create_topic(&b, &t, 1, 1, &[]);
    // Named twice: served, and listed, once (helper-65).
    let (mut child, port) = start_web(&["-b", &b], &[&t, &t]);
    let listed = crate::agent::http_get_as(port, "/api/topics", "localhost", "").1;
    assert_eq!(listed.trim(), format!("[\"{t}\"]"));
    let get = |host: &str| crate::agent::http_get_as(port, "/api/topics", host, "").0;
    // A DNS-rebinding page sends its own domain name.
    assert_eq!(get(&format!("attacker.example:{port}")), 403);
    assert_eq!(get("attacker.example"), 403);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_string(),
    ] {
        assert_eq!(get(&host), 200, "{host}");
    }
    // A partition the topic does not have is said, not answered with an empty list.
    for p in ["9", "-1"] {
        let (code, body) = crate::agent::http_get(port, &format!("/api/records?topic={t}&p={p}"));
        assert_eq!(code, 400, "{body}");
        assert!(body.contains(&format!("has no partition {p}")), "{body}");
    }
    let (code, body) = crate::agent::http_get(port, &format!("/api/records?topic={t}&p=0&p=1"));
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("p=... is given more than once (partitions: p=0,1)"),
        "{body}"
    );
    // So is a second limit (the first counted), and a `re` that is neither 1 nor 0 (`re=true`
    // searched for the text and answered an empty list) (helper-73 F2, F3).
    let (code, body) =
        crate::agent::http_get(port, &format!("/api/records?topic={t}&limit=1&limit=2"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("limit=... is given more than once"), "{body}");
    for re in ["true", "2", ""] {
        let (code, body) =
            crate::agent::http_get(port, &format!("/api/records?topic={t}&q=a.b&re={re}"));
        assert_eq!(code, 400, "{re}: {body}");
        assert!(body.contains("re= takes 1 (q is a regex) or 0"), "{body}");
    }
    for re in ["0", "1"] {
        let (code, body) =
            crate::agent::http_get(port, &format!("/api/records?topic={t}&q=a.b&re={re}"));
        assert_eq!(code, 200, "{re}: {body}");
    }
    // t25 F6: a page elsewhere may link to the page, not use the server; two Hosts are refused.
    let from = |path: &str, site: &str| {
        crate::agent::http_get_as(
            port,
            path,
            "localhost",
            &format!("Sec-Fetch-Site: {site}\r\n"),
        )
    };
    assert_eq!(from("/api/topics", "cross-site").0, 403);
    assert_eq!(from(&format!("/stream?topic={t}"), "same-site").0, 403);
    assert_eq!(from("/api/topics", "same-origin").0, 200);
    let (code, page) = from("/", "cross-site");
    assert_eq!(code, 200, "a link from elsewhere opens the page");
    assert!(page.contains("<script>"));
    let other = "Origin: http://localhost:1\r\n";
    assert_eq!(
        crate::agent::http_get_as(port, "/api/topics", "localhost", other).0,
        403
    );
    let twice = "Host: attacker.example\r\n";
    assert_eq!(
        crate::agent::http_get_as(port, "/api/topics", "localhost", twice).0,
        400
    );
    let twice = "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Site: cross-site\r\n";
    assert_eq!(
        crate::agent::http_get_as(port, "/api/topics", "localhost", twice).0,
        400
    );
    // HTTP/1.1 without a Host header (t26: answered 200); HTTP/1.0 may come without one.
    let raw = |req: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split(' ').nth(1).unwrap_or_default().to_string()
    };
    assert_eq!(raw("GET /api/topics HTTP/1.1\r\n\r\n"), "400");
    assert_eq!(raw("GET /api/topics HTTP/1.0\r\n\r\n"), "200");
    // HEAD for a probe of /healthz (t29 F8: 405) and of the page; the data answers stay GET only.
    assert_eq!(raw("HEAD /healthz HTTP/1.0\r\n\r\n"), "200");
    assert_eq!(raw("HEAD / HTTP/1.0\r\n\r\n"), "200");
    assert_eq!(raw("HEAD /api/topics HTTP/1.0\r\n\r\n"), "405");
    let _ = child.kill();
    let _ = child.wait();
    // With a token, any name (a proxy's, the machine's) is fine; the scheme's case is not checked.
    let (mut child, port) = start_web(&["-b", &b], &[&t, "--token", "tok-1"]);
    let get = |auth: &str| crate::agent::http_get_as(port, "/api/topics", "logs.example", auth).0;
    assert_eq!(get(""), 401);
    assert_eq!(get("Authorization: Bearer tok-1\r\n"), 200);
    assert_eq!(get("Authorization: bearer tok-1\r\n"), 200);
    assert_eq!(get("Authorization: Bearer tok-2\r\n"), 401);
    let twice = |q: &str| crate::agent::http_get_as(port, q, "logs.example", "").0;
    // A liveness probe needs no token: /healthz holds nothing (t28 F5: 401).
    assert_eq!(twice("/healthz"), 200);
    assert_eq!(twice("/api/topics?token=tok-1"), 200);
    assert_eq!(twice("/api/topics?token=tok-1&token=x"), 400);
    assert_eq!(twice("/api/topics?token=x&token=tok-1"), 400);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn web_reads_a_topic_over_sasl_ssl() {
    let Some(dir) = crate::secure::secure() else {
        return;
    };
    let Some(b) = broker() else { return };
    let t = topic("web-tls");
    create_topic(&b, &t, 1, 1, &[]);
    shipper_ok(&b, &["produce", &t], b"over tls 1\nover tls 2\n");
    let (_, flags) = crate::secure::ways(&dir)
        .into_iter()
        .find(|(name, _)| *name == "sasl_ssl SCRAM-SHA-512")
        .unwrap();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (mut child, port) = start_web(&flags, &[&t]);
    let (code, body) = crate::agent::http_get(port, &format!("/api/records?topic={t}"));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"value\":\"over tls 1\"") && body.contains("over tls 2"),
        "{body}"
    );
}

/// Starts `shipper FLAGS... web ARGS... --listen 127.0.0.1:PORT` on a free port and waits until it
/// listens; the process and the port.
pub fn start_web(flags: &[&str], args: &[&str]) -> (std::process::Child, u16) {
    let port = crate::agent::free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(shipper_bin())
        .args(flags)
        .arg("web")
        .args(args)
        .args(["--listen", &listen])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(std::time::Instant::now() < deadline, "web never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// Opens `/stream?QUERY` on the local web server, the request sent; reads time out after `timeout`.
fn open_stream(port: u16, query: &str, timeout: Duration) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    write!(s, "GET /stream?{query} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    s
}

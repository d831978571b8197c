//! `shipper tail --config`: the agent run from a TOML file, against the real broker, checked with kcat
//! and Prometheus' own parser — routing templates, multiline events, SIGHUP reloads under load, the
//! metrics and health endpoints, and `check-config`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Writes a file atomically (the agent may read it at any moment).
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from the agent's metrics server: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_get_as(port, path, "localhost", "")
}

/// GET `path` with this Host header and more header lines (each ending in CRLF).
pub fn http_get_as(port: u16, path: &str, host: &str, headers: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (code, body)
}

/// Waits until the metrics server answers.
fn wait_listening(port: u16, tail: &Tail) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "metrics never served: {}",
            tail.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The metrics text parsed by Prometheus' Python client: one "name{labels} value" per sample, labels
/// sorted, so the test reads what a real scraper would.
fn parse_with_prometheus_client(text: &str) -> BTreeMap<String, f64> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}={v}' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut c = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (scripts/install-deps installs it)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn sum_of(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

fn kafka_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn two_inputs_route_by_file_name_with_key_and_headers_seen_by_kcat() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("agent-route");
    let prefix = topic("agent-route");
    for t in ["web-access", "web-error", "db"] {
        create_topic(&b, &format!("{prefix}-{t}"), 1, 1, &[]);
    }
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::create_dir_all(dir.join("db")).unwrap();
    append(&dir.join("web/access.log"), b"GET /\nGET /x\n");
    append(&dir.join("web/error.log"), b"oops\n");
    append(&dir.join("db/slow.log"), b"select 1\n");
    let cfg = dir.join("agent.toml");
    write_config(
        &cfg,
        &format!(
            r#"checkpoint = "{d}/ckpt"
[[input]]
name = "web"
paths = ["{d}/web/*.log"]
topic = "{prefix}-web-{{file_stem}}"
key = "{{hostname}}"
headers = {{ source = "{{path}}", env = "test" }}
[[input]]
name = "db"
paths = ["{d}/db/*.log"]
topic = "{prefix}-db"
"#,
            d = dir.display()
        ),
    );
    let mut tail = Tail::start(&b, &["--config", cfg.to_str().unwrap()], &dir.join("log"));
    let host = kafka_hostname();
    let fmt = ["-f", "%k|%h|%s\n"];
    let got = |t: &str, n: usize| {
        let topic = format!("{prefix}-{t}");
        wait_for_records(&b, &topic, n, Duration::from_secs(30));
        let mut args = vec!["-C", "-t", topic.as_str(), "-e"];
        args.extend(fmt);
        String::from_utf8(kcat(&b, &args, b"")).unwrap()
    };
    let access = dir.join("web/access.log");
    assert_eq!(
        got("web-access", 2),
        format!(
            "{host}|env=test,source={p}|GET /\n{host}|env=test,source={p}|GET /x\n",
            p = access.display()
        ),
        "{}",
        tail.stderr()
    );
    assert_eq!(
        got("web-error", 1),
        format!(
            "{host}|env=test,source={}|oops\n",
            dir.join("web/error.log").display()
        )
    );
    // No key and no headers: kcat prints empty fields.
    assert_eq!(got("db", 1), "||select 1\n");
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
}

/// A Java service's log: loghub's Hadoop lines (each starts with a date) with stack traces after some
/// ERROR lines; returns the text and its events.
fn java_log(n: usize) -> (Vec<u8>, Vec<String>) {
    let sample = std::fs::read_to_string(root().join("../shared/logs/loghub/Hadoop_2k.log"))
        .expect("../shared/logs/loghub/Hadoop_2k.log");
    let mut events = Vec::new();
    for (i, line) in sample.lines().cycle().take(n).enumerate() {
        let mut e = line.trim_end().to_string();
        if i % 7 == 3 {
            e.push_str(&format!(
                "\njava.io.IOException: Connection reset by peer (event {i})\n\tat sun.nio.ch.FileDispatcherImpl.read0(Native Method)\n\tat org.apache.hadoop.ipc.Client$Connection.run(Client.java:{i})\nCaused by: java.net.SocketException: reset\n\t... 12 more"
            ));
        }
        events.push(e);
    }
    let mut text = Vec::new();
    for e in &events {
        text.extend_from_slice(e.as_bytes());
        text.push(b'\n');
    }
    (text, events)
}

/// Run from a config file, tail's messages name the file's keys, not the flags it refuses (t33: a
/// cut line was said with `--max-line-bytes`, which next to `--config` is an error).
#[test]
fn messages_name_the_config_keys() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("agent-keys");
    let t = topic("agent-keys");
    let cfg = dir.join("agent.toml");
    write_config(
        &cfg,
        &format!(
            "checkpoint = \"{d}/ckpt\"\nmax_line_bytes = 10\n[[input]]\npaths = [\"{d}/app.log\"]\ntopic = \"{t}\"\n",
            d = dir.display()
        ),
    );
    append(&dir.join("app.log"), b"a line longer than ten bytes\n");
    let mut tail = Tail::start(&b, &["--config", cfg.to_str().unwrap()], &dir.join("log"));
    let got = wait_for_records(&b, &t, 1, Duration::from_secs(30));
    assert_eq!(tail.stop("INT"), Some(0));
    assert_eq!(got, vec![b"a line lon".to_vec()]);
    let err = tail.stderr();
    assert!(
        err.contains(
            "cut to fit (max_line_bytes 10, or the largest record max_message_bytes allows)"
        ) && !err.contains("--max-"),
        "{err}"
    );
}

/// Under either rule: `start` (the log line begins an event) or `continue` (the exception and frame
/// lines join the line before).
#[test]
fn each_java_stack_trace_is_one_record() {
    let Some(b) = broker() else { return };
    for rule in [
        r"start = '^\d{4}-\d{2}-\d{2} '",
        r"continue = '^(\t|Caused by: |java\.)'",
    ] {
        java_traces_are_one_record_each(&b, rule);
    }
}

fn java_traces_are_one_record_each(b: &str, rule: &str) {
    let b = b.to_string();
    let dir = scratch_dir("agent-multiline");
    let t = topic("agent-multiline");
    create_topic(&b, &t, 1, 1, &[]);
    let cfg = dir.join("agent.toml");
    write_config(
        &cfg,
        &format!(
            r#"checkpoint = "{d}/ckpt"
[[input]]
paths = ["{d}/app.log"]
topic = "{t}"
multiline = {{ {rule}, timeout_ms = 300 }}
"#,
            d = dir.display()
        ),
    );
    let (text, events) = java_log(3000);
    // Half written before the agent starts, half while it runs, in odd-sized pieces.
    let half = text.len() / 2;
    append(&dir.join("app.log"), &text[..half]);
    let mut tail = Tail::start(&b, &["--config", cfg.to_str().unwrap()], &dir.join("log"));
    for chunk in text[half..].chunks(7777) {
        append(&dir.join("app.log"), chunk);
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let out = kcat(&b, &["-C", "-t", &t, "-e", "-f", "%s\u{1e}"], b"");
        let got: Vec<String> = String::from_utf8(out)
            .unwrap()
            .split('\u{1e}')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if got.len() >= events.len() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(got.len(), events.len(), "{rule}: {}", tail.stderr());
    for (g, e) in got.iter().zip(&events) {
        assert_eq!(g, e, "{rule}");
    }
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
}

/// Writes `prefix-N` lines to each file at about `per_sec` lines a second in total until stopped;
/// returns how many lines each file got.
fn writer(
    files: Vec<std::path::PathBuf>,
    per_sec: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<usize>> {
    std::thread::spawn(move || {
        let mut n = vec![0usize; files.len()];
        let tick = Duration::from_millis(10);
        let per_tick = (per_sec / 100 / files.len()).max(1);
        while !stop.load(Ordering::Relaxed) {
            for (i, f) in files.iter().enumerate() {
                let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
                let mut buf = Vec::new();
                for _ in 0..per_tick {
                    buf.extend_from_slice(format!("{stem}-{}\n", n[i]).as_bytes());
                    n[i] += 1;
                }
                append(f, &buf);
            }
            std::thread::sleep(tick);
        }
        n
    })
}

fn expected(stem: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{stem}-{i}").into_bytes()).collect()
}

/// Asserts `got` is `stem-0` .. `stem-(n-1)` in order, saying where it is not (not dumping it all).
fn assert_lines(got: &[Vec<u8>], stem: &str, n: usize, what: &str) {
    let want = expected(stem, n);
    if got == want.as_slice() {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    let dups = got.iter().filter(|g| !seen.insert(*g)).count();
    let missing = want.iter().filter(|w| !seen.contains(w)).count();
    let first = got.iter().zip(&want).position(|(g, w)| g != w);
    panic!(
        "{what}: {} records for {n} lines, {dups} duplicated, {missing} missing, first difference at {first:?}: {:?}",
        got.len(),
        first.map(|i| String::from_utf8_lossy(&got[i]).into_owned())
    );
}

fn two_inputs(d: &Path, first: (&str, &str), second: (&str, &str)) -> String {
    format!(
        r#"checkpoint = "{d}/ckpt"
[[input]]
name = "{}"
paths = ["{d}/{}.log"]
topic = "{}"
[[input]]
name = "{}"
paths = ["{d}/{}.log"]
topic = "{}"
"#,
        first.0,
        first.0,
        first.1,
        second.0,
        second.0,
        second.1,
        d = d.display()
    )
}

#[test]
fn sighup_adds_and_removes_inputs_under_load_and_every_line_arrives_once() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("agent-reload");
    let [ta, tb, tc] = ["a", "b", "c"].map(|s| topic(&format!("agent-reload-{s}")));
    for t in [&ta, &tb, &tc] {
        create_topic(&b, t, 1, 1, &[]);
    }
    let cfg = dir.join("agent.toml");
    write_config(&cfg, &two_inputs(&dir, ("a", &ta), ("b", &tb)));
    let files: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|s| dir.join(format!("{s}.log")))
        .collect();
    for f in &files {
        append(f, b"");
    }
    let mut tail = Tail::start(&b, &["--config", cfg.to_str().unwrap()], &dir.join("log"));
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(files.clone(), 5000, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    // b goes, c comes; a stays.
    write_config(&cfg, &two_inputs(&dir, ("a", &ta), ("c", &tc)));
    tail.signal("HUP");
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let n = w.join().unwrap();
    let limit = Duration::from_secs(60);
    let a = wait_for_records(&b, &ta, n[0], limit);
    let c = wait_for_records(&b, &tc, n[2], limit);
    let log = tail.stderr();
    assert!(
        log.contains("config reloaded: 2 inputs (1 added: 'c'; 1 removed: 'b'; 0 changed)"),
        "{log}"
    );
    assert_lines(&a, "a", n[0], "input a, kept");
    assert_lines(&c, "c", n[2], "input c, added");
    // b, removed: a prefix of its lines (those read before the reload), each once.
    let bv = topic_values(&b, &tb);
    assert!(
        !bv.is_empty() && bv.len() < n[1],
        "{} of {}",
        bv.len(),
        n[1]
    );
    assert_lines(&bv, "b", bv.len(), "input b, removed");
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
}

#[test]
fn a_broken_config_on_sighup_is_refused_and_a_changed_topic_takes_the_next_lines() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("agent-broken");
    let [t1, t2, tx] = ["1", "2", "x"].map(|s| topic(&format!("agent-broken-{s}")));
    for t in [&t1, &t2, &tx] {
        create_topic(&b, t, 1, 1, &[]);
    }
    let cfg = dir.join("agent.toml");
    let good = two_inputs(&dir, ("a", &t1), ("x", &tx));
    write_config(&cfg, &good);
    let a = dir.join("a.log");
    append(&a, &numbered_lines("a", 0, 100));
    let mut tail = Tail::start(&b, &["--config", cfg.to_str().unwrap()], &dir.join("log"));
    assert_eq!(
        wait_for_records(&b, &t1, 100, Duration::from_secs(30)).len(),
        100
    );
    // Line 4 names an unknown key: refused, the running config stays.
    write_config(&cfg, &good.replace("topic = ", "topik = "));
    tail.signal("HUP");
    wait_for_log(&tail, "config not reloaded");
    let log = tail.stderr();
    assert!(
        log.contains("agent.toml:5:"),
        "the line of the mistake: {log}"
    );
    append(&a, &numbered_lines("a", 100, 200));
    assert_lines(
        &wait_for_records(&b, &t1, 200, Duration::from_secs(30)),
        "a",
        200,
        "t1",
    );
    // Now input a's topic changes: lines read from here on go to the new one.
    write_config(&cfg, &two_inputs(&dir, ("a", &t2), ("x", &tx)));
    tail.signal("HUP");
    wait_for_log(&tail, "config reloaded");
    append(&a, &numbered_lines("a", 200, 300));
    let moved = wait_for_records(&b, &t2, 100, Duration::from_secs(30));
    assert_eq!(moved, expected("a", 300)[200..].to_vec());
    assert_lines(&topic_values(&b, &t1), "a", 200, "t1 after the change");
    assert!(
        !tail.stderr().contains("next restart"),
        "a topic change is a reload's job: {}",
        tail.stderr()
    );
    // A setting read at start only (compression, the checkpoint) is said to wait for a restart.
    let fixed = two_inputs(&dir, ("a", &t2), ("x", &tx))
        .replace("checkpoint = ", "compression = \"zstd\"\ncheckpoint = ")
        .replace("/ckpt\"", "/ckpt2\"");
    write_config(&cfg, &fixed);
    tail.signal("HUP");
    wait_for_log(&tail, "next restart");
    let log = tail.stderr();
    assert!(
        log.contains("producer settings") && log.contains("checkpoint"),
        "{log}"
    );
    append(&a, &numbered_lines("a", 300, 310));
    assert_eq!(
        wait_for_records(&b, &t2, 110, Duration::from_secs(30)).len(),
        110
    );
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
}

fn numbered_lines(stem: &str, from: usize, to: usize) -> Vec<u8> {
    (from..to)
        .flat_map(|i| format!("{stem}-{i}\n").into_bytes())
        .collect()
}

fn wait_for_log(tail: &Tail, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tail.stderr().contains(what) {
        assert!(Instant::now() < deadline, "no '{what}': {}", tail.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_parse_with_prometheus_client_and_agree_with_the_summary_and_kafka() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("agent-metrics");
    let [t1, t2] = ["1", "2"].map(|s| topic(&format!("agent-metrics-{s}")));
    create_topic(&b, &t1, 3, 1, &[]);
    create_topic(&b, &t2, 1, 1, &[]);
    let port = free_port();
    let cfg = dir.join("agent.toml");
    write_config(
        &cfg,
        &format!(
            "metrics_listen = \"127.0.0.1:{port}\"\n{}",
            two_inputs(&dir, ("one", &t1), ("two", &t2))
        ),
    );
    append(&dir.join("one.log"), &numbered_lines("one", 0, 1500));
    append(&dir.join("two.log"), &numbered_lines("two", 0, 500));
    let mut tail = Tail::start(&b, &["--config", cfg.to_str().unwrap()], &dir.join("log"));
    wait_listening(port, &tail);
    let deadline = Instant::now() + Duration::from_secs(30);
    let m = loop {
        let (code, text) = http_get(port, "/metrics");
        assert_eq!(code, 200);
        let m = parse_with_prometheus_client(&text);
        if sum_of(&m, "shipper_lines_acked_total") >= 2000.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let bytes_one: usize = (0..1500).map(|i| format!("one-{i}").len()).sum();
    let want = [
        (
            format!("shipper_lines_read_total{{input=one,topic={t1}}}"),
            1500.0,
        ),
        (
            format!("shipper_lines_acked_total{{input=one,topic={t1}}}"),
            1500.0,
        ),
        (
            format!("shipper_lines_acked_total{{input=two,topic={t2}}}"),
            500.0,
        ),
        (
            format!("shipper_bytes_read_total{{input=one,topic={t1}}}"),
            bytes_one as f64,
        ),
        (
            format!("shipper_lines_failed_total{{input=one,topic={t1}}}"),
            0.0,
        ),
        ("shipper_files_followed{}".to_string(), 2.0),
        ("shipper_bytes_behind{input=one}".to_string(), 0.0),
        ("shipper_delivery_failing{}".to_string(), 0.0),
        ("shipper_checkpoint_failing{}".to_string(), 0.0),
    ];
    for (k, v) in want {
        assert_eq!(m.get(&k), Some(&v), "{k} in {m:#?}");
    }
    let requests = m["shipper_produce_requests_total{}"];
    // One request may carry both topics' batches (one broker).
    assert!(requests >= 1.0, "{requests}");
    assert_eq!(m["shipper_produce_request_seconds_count{}"], requests);
    assert!(
        m["shipper_produce_batch_bytes_count{}"] >= 2.0,
        "two topics"
    );
    assert!(m["process_resident_memory_bytes{}"] > 1e6);
    assert_eq!(http_get(port, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(port, "/nope").0, 404);
    assert_eq!(tail.stop("INT"), Some(0));
    let log = tail.stderr();
    assert!(
        log.contains("read 2000 lines") && log.contains("2000 acked"),
        "{log}"
    );
    let in_kafka = lines(&kcat(&b, &["-C", "-t", &t1, "-e"], b"")).len();
    assert_eq!(in_kafka, 1500);
}

/// Writes `text` to `cfg` and runs `check-config` on it: it must exit 2 with one line saying
/// `said`. Returns that line.
fn check_refuses(cfg: &std::path::Path, text: &str, said: &str) -> String {
    write_config(cfg, text);
    let out = Command::new(shipper_bin())
        .args(["check-config", cfg.to_str().unwrap()])
        .env_remove("SHIPPER_TEST_UNSET_VAR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{text}: {err}");
    assert!(err.contains(said), "{text}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn check_config_names_the_line_of_each_mistake_and_exits_2() {
    let dir = scratch_dir("agent-check");
    let cfg = dir.join("agent.toml");
    let check = |cfg: &std::path::Path| {
        Command::new(shipper_bin())
            .args(["check-config", cfg.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let cases: [(&str, &str); 7] = [
        ("[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\ncolour = 1\n", ":4:"),
        ("[[input]]\npaths = [\"/x\"]\ntopic = \"t-{filestem}\"\n", ":3:"),
        ("[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\nmultiline = { start = '(' }\n", ":4:"),
        (
            "brokers = [\"k:9092\"]\nsasl_password = \"${SHIPPER_TEST_UNSET_VAR}\"\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n",
            ":2:",
        ),
        ("[[input]]\npaths = [\"/x\"]\ntopic = \"bad topic!\"\n", ":3:"),
        // An empty path and a directory named alone (t14: both followed for ever, shipping nothing).
        ("[[input]]\npaths = [\"\"]\ntopic = \"t\"\n", ":2:"),
        ("[[input]]\npaths = [\"/tmp\"]\ntopic = \"t\"\n", ":2:"),
    ];
    for (text, line) in cases {
        check_refuses(&cfg, text, &format!("agent.toml{line}"));
    }
    write_config(
        &cfg,
        &format!(
            "brokers = [\"k:9092\"]\n{}",
            two_inputs(&dir, ("a", "t-a"), ("b", "t-b"))
        ),
    );
    let out = check(&cfg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -q: errors only; a good file says nothing (it printed the whole report).
    let quiet = |cfg: &std::path::Path| {
        Command::new(shipper_bin())
            .args(["-q", "check-config", cfg.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let q = quiet(&cfg);
    assert_eq!(q.status.code(), Some(0));
    assert!(q.stdout.is_empty() && q.stderr.is_empty(), "{q:?}");
    let bad = dir.join("bad.toml");
    write_config(
        &bad,
        "[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\ncolour = 1\n",
    );
    let q = quiet(&bad);
    assert_eq!(q.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&q.stderr).contains("bad.toml:4:"),
        "{q:?}"
    );
    // A checkpoint path the agent would refuse at its start is refused here too: a directory, or
    // a file that is no checkpoint (it would not be overwritten).
    let ck_dir = dir.join("ck-dir");
    std::fs::create_dir_all(&ck_dir).unwrap();
    let not_ck = dir.join("notes.txt");
    std::fs::write(&not_ck, b"my notes\n").unwrap();
    // (A FIFO is judged without being opened: opening it would wait for a writer.)
    let fifo = dir.join("ck.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for (ck, said) in [
        (&ck_dir, "it is a directory, not a checkpoint file"),
        (&not_ck, "is no shipper checkpoint"),
        (&fifo, "it is a FIFO"),
    ] {
        let text = format!(
            "brokers = [\"k:9092\"]\ncheckpoint = \"{}\"\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n",
            ck.display()
        );
        let err = check_refuses(&cfg, &text, said);
        assert!(err.contains("checkpoint"), "{err}");
    }
    // Two inputs of one name: the name is shown escaped, on the line of the second.
    let err = check_refuses(
        &cfg,
        "[[input]]\nname = \"a\\u001b[2J\"\npaths = [\"/x\"]\ntopic = \"t\"\n[[input]]\nname = \"a\\u001b[2J\"\npaths = [\"/y\"]\ntopic = \"t\"\n",
        "two inputs are named",
    );
    assert!(!err.contains('\u{1b}'), "{err}");
    write_config(
        &cfg,
        &format!(
            "brokers = [\"k:9092\"]\n{}",
            two_inputs(&dir, ("a", "t-a"), ("b", "t-b"))
        ),
    );
    let out = check(&cfg);
    // SHIPPER_BROKERS overrides the file's brokers, as -b does, and says so (t14).
    let env = Command::new(shipper_bin())
        .args(["check-config", cfg.to_str().unwrap()])
        .env("SHIPPER_BROKERS", "other:9092")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&env.stderr);
    assert!(
        err.contains(
            "brokers other:9092 from -b or SHIPPER_BROKERS override the config file's k:9092"
        ),
        "{err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("input 2 'b'")
            && text.contains("topic: t-b")
            && text.contains("brokers: k:9092 (PLAINTEXT)")
            && text.contains("producer: acks=all, idempotent, compression=none")
            && text.contains("dead_letter: none"),
        "{text}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("writable by every user"));
    // A metrics address in use now is what a start would fail on: said (exit 0: it may be the
    // running agent's own).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    write_config(
        &cfg,
        &format!(
            "brokers = [\"k:9092\"]\nmetrics_listen = \"127.0.0.1:{port}\"\n{}",
            two_inputs(&dir, ("a", "t-a"), ("b", "t-b"))
        ),
    );
    let busy = check(&cfg);
    let said = String::from_utf8_lossy(&busy.stdout);
    assert!(
        busy.status.success()
            && said.contains(&format!(
                "metrics: http://127.0.0.1:{port}/metrics (cannot listen there now:"
            )),
        "{said}"
    );
    drop(taken);
    let free = String::from_utf8_lossy(&check(&cfg).stdout).into_owned();
    assert!(
        free.contains(&format!("metrics: http://127.0.0.1:{port}/metrics\n")),
        "{free}"
    );
    write_config(
        &cfg,
        &format!(
            "brokers = [\"k:9092\"]\n{}",
            two_inputs(&dir, ("a", "t-a"), ("b", "t-b"))
        ),
    );
    // A config file every user may change is said (it decides what is read and where it goes).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = check(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("agent.toml: writable by every user (mode 666"),
        "{err}"
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A file two inputs match is shown under the first, which ships it.
    let overlap = dir.join("overlap");
    std::fs::create_dir_all(&overlap).unwrap();
    std::fs::write(overlap.join("x.log"), b"x\n").unwrap();
    write_config(
        &cfg,
        &format!(
            "[[input]]\nname = \"all\"\npaths = [\"{0}/*.log\"]\ntopic = \"t-all\"\n[[input]]\nname = \"x\"\npaths = [\"{0}/x.log\"]\ntopic = \"t-x\"\n",
            overlap.display()
        ),
    );
    let out = check(&cfg);
    let text = String::from_utf8_lossy(&out.stdout);
    let x = overlap.join("x.log").display().to_string();
    assert!(
        text.contains(&format!("{x} -> t-all"))
            && text.contains(&format!("{x} -> not here: input 'all' matches it first")),
        "{text}"
    );
    // shipper's own files under a pattern are not listed, as the agent never follows them; a
    // raised max_line_bytes is shown as the agent lowers it (t32 F4, F9).
    // (An empty checkpoint is one not written yet; one holding anything else is refused.)
    std::fs::write(overlap.join("ck"), b"").unwrap();
    for own in ["ck.lock", "dl.jsonl"] {
        std::fs::write(overlap.join(own), b"{}\n").unwrap();
    }
    write_config(
        &cfg,
        &format!(
            "checkpoint = \"{0}/ck\"\ndead_letter = \"{0}/dl.jsonl\"\nmax_line_bytes = 3000000\n[[input]]\npaths = [\"{0}/**\"]\ntopic = \"t\"\n",
            overlap.display()
        ),
    );
    let out = check(&cfg);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("matches 1 file(s) now")
            && text.contains(&format!("{x} -> t"))
            && text.contains(
                "lines: longer than 1048516 bytes are truncated (max_line_bytes 3000000 lowered"
            ),
        "{text}"
    );
    // What the agent passes over and says so is named here too, with why (it was left out of the
    // count silently): a FIFO, a link (not followed by default) and a link out of the directory.
    let odd = dir.join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(odd.join("a.log"), b"x\n").unwrap();
    let fifo = odd.join("pipe.log");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let _ = std::fs::remove_file(odd.join("link.log"));
    std::os::unix::fs::symlink("/etc/hostname", odd.join("link.log")).unwrap();
    write_config(
        &cfg,
        &format!(
            "checkpoint = \"{0}/ck\"\n[[input]]\npaths = [\"{1}/*.log\"]\ntopic = \"t\"\n",
            overlap.display(),
            odd.display()
        ),
    );
    let out = check(&cfg);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("matches 1 file(s) now")
            && text.contains(&format!(
                "not followed: {} is a FIFO; only regular files are followed",
                fifo.display()
            ))
            && text.contains(&format!(
                "not followed: {}/link.log is a symbolic link; not followed (use follow_symlinks to",
                odd.display()
            )),
        "{text}"
    );
    // Each file's line limit beside its key and headers, as the agent cuts its lines: a {path} key
    // and header take their bytes from a 2000-byte record; a key of 30 paths leaves no room in 1024.
    for (max, key, want) in [
        (2000, "{path}".to_string(), "(lines cut to "),
        (
            1024,
            "{path}".repeat(30),
            "(its key and headers leave no room for a line",
        ),
    ] {
        write_config(
            &cfg,
            &format!(
                "checkpoint = \"{0}/ck\"\nmax_message_bytes = {max}\n[[input]]\npaths = [\"{0}/**\"]\ntopic = \"t\"\nkey = \"{key}\"\nheaders = {{ src = \"{{path}}\" }}\n",
                overlap.display()
            ),
        );
        let out = check(&cfg);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains(&format!("{x} -> t ")))
            .unwrap_or_else(|| panic!("{max}: {text}"));
        assert!(line.contains(want), "{max}: {line}");
        if max == 2000 {
            // 2000 less the batch header (61), two copies of the path and the record's own bytes.
            let n: usize = line
                .split("cut to ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap();
            let room = 2000 - 61 - 2 * x.len() - "src".len();
            assert!(n < room && n + 16 > room, "{n} {room}: {line}");
        }
    }
    // A key that is not the certificate's fails here, as it would at the start.
    if let Some(sec) = crate::secure::secure() {
        write_config(
            &cfg,
            &format!(
                "brokers = [\"127.0.0.1:9096\"]\nsecurity_protocol = \"ssl\"\nca_file = \"{0}/ca.pem\"\ncert_file = \"{0}/client.pem\"\nkey_file = \"{0}/other-ca.key\"\n[[input]]\npaths = [\"/x\"]\ntopic = \"t\"\n",
                sec.display()
            ),
        );
        let out = check(&cfg);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("agent.toml: TLS:")
                && err.contains("it is not the key of the certificate"),
            "{err}"
        );
    }
    // A tail flag the file sets is refused next to --config, not silently ignored.
    for flag in [
        &["--from-end"][..],
        &["--acks", "1"],
        &["--checkpoint", "/tmp/x"],
    ] {
        let out = Command::new(shipper_bin())
            .args(["tail", "--config", cfg.to_str().unwrap()])
            .args(flag)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag:?}: {err}");
        assert!(
            err.contains(&format!("{} cannot be combined with --config", flag[0])),
            "{err}"
        );
    }
}

#[test]
fn healthz_turns_503_with_the_reason_while_kafka_is_down_and_200_when_it_is_back() {
    // The broker going away on cue: the fake one (a real broker is killed in the failover tests).
    let (fake, boot) = shipper::testkit::FakeBroker::start_tcp(1);
    fake.create_topic("t", 1);
    let dir = scratch_dir("agent-health");
    let port = free_port();
    let cfg = dir.join("agent.toml");
    write_config(
        &cfg,
        &format!(
            "metrics_listen = \"127.0.0.1:{port}\"\nunhealthy_after = \"1s\"\ncheckpoint = \"{d}/ckpt\"\n[[input]]\npaths = [\"{d}/a.log\"]\ntopic = \"t\"\n",
            d = dir.display()
        ),
    );
    append(&dir.join("a.log"), &numbered_lines("a", 0, 10));
    let mut tail = Tail::start(
        &boot,
        &["--config", cfg.to_str().unwrap()],
        &dir.join("log"),
    );
    wait_listening(port, &tail);
    tail.until(30, || fake.values("t").len() == 10, "first lines delivered");
    assert_eq!(http_get(port, "/healthz").0, 200);
    fake.stop(1);
    append(&dir.join("a.log"), &numbered_lines("a", 10, 20));
    tail.until(
        30,
        || http_get(port, "/healthz").0 == 503,
        "healthz never 503",
    );
    let (_, why) = http_get(port, "/healthz");
    assert!(why.starts_with("delivery to Kafka failing for"), "{why}");
    let m = parse_with_prometheus_client(&http_get(port, "/metrics").1);
    assert_eq!(m["shipper_delivery_failing{}"], 1.0);
    assert!(sum_of(&m, "shipper_bytes_behind") > 0.0, "{m:#?}");
    fake.start(1);
    tail.until(
        30,
        || http_get(port, "/healthz").0 == 200,
        "healthz never 200 again",
    );
    tail.until(
        30,
        || fake.values("t").len() == 20,
        "lines after the outage delivered",
    );
    assert_eq!(
        fake.values("t"),
        (0..20)
            .map(|i| format!("a-{i}").into_bytes())
            .collect::<Vec<_>>()
    );
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
}

#[test]
fn before_kafka_first_answers_metrics_are_served_and_sighup_or_sigterm_do_not_kill_the_agent() {
    // `systemctl reload` during an outage at boot used to end the agent (SIGHUP's default action),
    // and monitoring saw no server at all until Kafka answered.
    let (fake, boot, dir) = down_at_boot("agent-boot");
    let port = free_port();
    let cfg = dir.join("agent.toml");
    let config = |topic: &str| {
        format!(
            "metrics_listen = \"127.0.0.1:{port}\"\nunhealthy_after = \"1s\"\ncheckpoint = \"{d}/ckpt\"\n[[input]]\npaths = [\"{d}/a.log\"]\ntopic = \"{topic}\"\n",
            d = dir.display()
        )
    };
    write_config(&cfg, &config("t"));
    append(&dir.join("a.log"), &numbered_lines("a", 0, 10));
    let args = ["--config", cfg.to_str().unwrap()];
    // SIGTERM while waiting: a clean stop, at once.
    let mut tail = Tail::start(&boot, &args, &dir.join("log1"));
    wait_listening(port, &tail);
    let start = Instant::now();
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(tail.stderr().contains("stopping before Kafka answered"));
    // SIGHUP while waiting: remembered, applied once running.
    let mut tail = Tail::start(&boot, &args, &dir.join("log2"));
    wait_listening(port, &tail);
    tail.until(
        30,
        || http_get(port, "/healthz").0 == 503,
        "healthz never 503",
    );
    let (_, why) = http_get(port, "/healthz");
    assert!(why.starts_with("waiting for Kafka for"), "{why}");
    let m = parse_with_prometheus_client(&http_get(port, "/metrics").1);
    assert_eq!(m["shipper_delivery_failing{}"], 1.0);
    fake.create_topic("t2", 1);
    write_config(&cfg, &config("t2"));
    tail.signal("HUP");
    tail.until(
        30,
        || tail.stderr().contains("takes effect once Kafka answers"),
        "SIGHUP not taken",
    );
    // A setting that waits for a restart is said so at the SIGHUP, not once Kafka answers (a wrong
    // `brokers` fixed in the file would never answer), and not a second time when applied.
    write_config(&cfg, &format!("linger_ms = 7\n{}", config("t2")));
    tail.signal("HUP");
    tail.until(
        30,
        || {
            tail.stderr().contains(
                "config read (SIGHUP): producer settings changed; that takes effect only at a restart",
            )
        },
        "a fixed setting's change not said at the SIGHUP",
    );
    fake.start(1);
    tail.until(30, || fake.values("t2").len() == 10, "lines after the wait");
    assert!(
        !tail.stderr().contains("takes effect at the next restart"),
        "{}",
        tail.stderr()
    );
    write_config(&cfg, &config("t2"));
    tail.until(
        30,
        || http_get(port, "/healthz").0 == 200,
        "healthz never 200",
    );
    assert!(fake.values("t").is_empty());
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
    // SIGHUPs from the moment the agent's main runs (a `systemctl reload` racing the start): one
    // before the handler was installed, while the config was read, ended the agent (exit 129).
    // (Before main, while the loader runs, no program can act on a signal: waited out here.)
    let mut tail = Tail::start(&boot, &args, &dir.join("log3"));
    wait_sighup_in(&tail, &["SigIgn:", "SigCgt:"]);
    for _ in 0..20 {
        tail.signal("HUP");
    }
    wait_listening(port, &tail);
    append(&dir.join("a.log"), &numbered_lines("a", 10, 12));
    tail.until(30, || fake.values("t2").len() == 12, "still running");
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
}

#[test]
fn from_end_starts_where_files_ended_at_the_start_not_when_kafka_first_answers() {
    // An outage at boot (the fake broker is down on cue): lines appended to a file that was there
    // at the start are shipped once Kafka answers; a file that appeared meanwhile is shipped whole;
    // what was there before the start is not.
    let (fake, boot, dir) = down_at_boot("agent-from-end-outage");
    let cfg = dir.join("agent.toml");
    write_config(
        &cfg,
        &format!(
            "checkpoint = \"{d}/ckpt\"\n[[input]]\npaths = [\"{d}/*.log\"]\ntopic = \"t\"\nfrom_end = true\n",
            d = dir.display()
        ),
    );
    append(&dir.join("a.log"), &numbered_lines("old", 0, 10));
    append(&dir.join("empty.log"), b"");
    let mut tail = Tail::start(
        &boot,
        &["--config", cfg.to_str().unwrap()],
        &dir.join("log"),
    );
    tail.until(
        30,
        || std::fs::read_to_string(dir.join("ckpt")).is_ok_and(|c| c.contains("a.log")),
        "the ends recorded before Kafka answers",
    );
    append(&dir.join("a.log"), &numbered_lines("a", 0, 3));
    append(&dir.join("empty.log"), &numbered_lines("e", 0, 2));
    append(&dir.join("new.log"), &numbered_lines("n", 0, 2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        back_up_and_sorted(&fake, &tail, 7),
        ["a-0", "a-1", "a-2", "e-0", "e-1", "n-0", "n-1"],
        "{}",
        tail.stderr()
    );
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
}

/// Waits until SIGHUP shows in one of the `/proc/PID/status` masks `fields` (`SigIgn:`: ignored,
/// from the first line of shipper's main; `SigCgt:`: caught, once the handler is set).
fn wait_sighup_in(tail: &Tail, fields: &[&str]) {
    let status = format!("/proc/{}/status", tail.pid());
    let hup_bit = 1u64 << (libc::SIGHUP - 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&status).is_ok_and(|s| {
        s.lines()
            .filter(|l| fields.iter().any(|f| l.starts_with(f)))
            .any(|l| u64::from_str_radix(l[7..].trim(), 16).is_ok_and(|m| m & hup_bit != 0))
    }) {
        assert!(Instant::now() < deadline, "SIGHUP never in {fields:?}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Starts the fake broker again, waits for at least `n` values of `t` (and half a second for any
/// more), and returns them sorted, as text.
fn back_up_and_sorted(fake: &shipper::testkit::FakeBroker, tail: &Tail, n: usize) -> Vec<String> {
    fake.start(1);
    tail.until(
        30,
        || fake.values("t").len() >= n,
        "the lines after the outage",
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut got: Vec<String> = fake
        .values("t")
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    got.sort();
    got
}

/// A fake broker with topic `t` (one partition), down from the start, and a fresh directory.
fn down_at_boot(name: &str) -> (shipper::testkit::FakeBroker, String, PathBuf) {
    let (fake, boot) = shipper::testkit::FakeBroker::start_tcp(1);
    fake.create_topic("t", 1);
    fake.stop(1);
    (fake, boot, scratch_dir(name))
}

#[test]
fn a_sighup_during_an_outage_at_boot_takes_from_end_ends_when_it_comes() {
    // helper-64 F3: the config a SIGHUP asked for was read only once Kafka answered, so an input it
    // added with `from_end` skipped the lines its files got between the SIGHUP and then. Two SIGHUPs:
    // the end the first took stands.
    let (fake, boot, dir) = down_at_boot("agent-hup-from-end-outage");
    let cfg = dir.join("agent.toml");
    let a = format!(
        "checkpoint = \"{d}/ckpt\"\n[[input]]\npaths = [\"{d}/a.log\"]\ntopic = \"t\"\n",
        d = dir.display()
    );
    write_config(&cfg, &a);
    append(&dir.join("a.log"), &numbered_lines("a", 0, 2));
    append(&dir.join("b.log"), &numbered_lines("old", 0, 5));
    let mut tail = Tail::start(
        &boot,
        &["--config", cfg.to_str().unwrap()],
        &dir.join("log"),
    );
    // Its handler is set (before it, SIGHUP is ignored).
    wait_sighup_in(&tail, &["SigCgt:"]);
    write_config(
        &cfg,
        &format!(
            "{a}[[input]]\npaths = [\"{d}/b.log\"]\ntopic = \"t\"\nfrom_end = true\n",
            d = dir.display()
        ),
    );
    let reads = |n: usize| tail.stderr().matches("config read (SIGHUP)").count() == n;
    tail.signal("HUP");
    tail.until(30, || reads(1), "the first SIGHUP's read");
    append(&dir.join("b.log"), &numbered_lines("b", 0, 3));
    tail.signal("HUP");
    tail.until(30, || reads(2), "the second SIGHUP's read");
    append(&dir.join("b.log"), &numbered_lines("b", 3, 5));
    assert_eq!(
        back_up_and_sorted(&fake, &tail, 7),
        ["a-0", "a-1", "b-0", "b-1", "b-2", "b-3", "b-4"],
        "{}",
        tail.stderr()
    );
    assert!(
        tail.stderr().contains("config reloaded"),
        "{}",
        tail.stderr()
    );
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
}

#[test]
fn an_exactly_once_read_back_refused_turns_healthz_503_until_it_works() {
    // Its files wait while the topic cannot be read back (Read denied): /healthz said 200 and the
    // waiting gauge 0 for as long as that lasted.
    use shipper::testkit::Misbehave;
    let (fake, boot) = shipper::testkit::FakeBroker::start_tcp(1);
    fake.create_topic("t", 1);
    // A record of now: the read-back has to fetch it.
    shipper_ok(&boot, &["produce", "t"], b"from before\n");
    fake.misbehave(Misbehave::FetchError(29));
    let dir = scratch_dir("agent-eo-refused");
    let port = free_port();
    let cfg = dir.join("agent.toml");
    write_config(
        &cfg,
        &format!(
            "metrics_listen = \"127.0.0.1:{port}\"\nunhealthy_after = \"1s\"\nexactly_once = true\ncheckpoint = \"{d}/ckpt\"\n[[input]]\npaths = [\"{d}/a.log\"]\ntopic = \"t\"\n",
            d = dir.display()
        ),
    );
    append(&dir.join("a.log"), &numbered_lines("a", 0, 10));
    let mut tail = Tail::start(
        &boot,
        &["--config", cfg.to_str().unwrap()],
        &dir.join("log"),
    );
    wait_listening(port, &tail);
    tail.until(
        30,
        || http_get(port, "/healthz").0 == 503,
        "healthz never 503",
    );
    let (_, why) = http_get(port, "/healthz");
    assert!(
        why.contains("topic 't' not available")
            && why.contains("exactly-once: cannot read it back"),
        "{why}"
    );
    let m = parse_with_prometheus_client(&http_get(port, "/metrics").1);
    assert!(m["shipper_topic_waiting_seconds{}"] >= 1.0, "{m:?}");
    fake.behave();
    tail.until(
        30,
        || fake.values("t").len() == 11,
        "lines after the read-back",
    );
    tail.until(
        30,
        || http_get(port, "/healthz").0 == 200,
        "healthz never 200",
    );
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
}

#[test]
fn a_topic_that_does_not_exist_or_is_deleted_turns_healthz_503_until_it_is_created() {
    // The cluster does not create topics: lines for a templated topic wait in their file. They used
    // to wait with /healthz at 200 and nothing but the lag to show it. A topic named as it is (no
    // template) is waited for too, not an error at start: under systemd that was a restart loop.
    let Some(c) = cluster() else { return };
    let dir = scratch_dir("agent-missing");
    let t = topic("agent-missing");
    let port = free_port();
    let cfg = dir.join("agent.toml");
    write_config(
        &cfg,
        &format!(
            "metrics_listen = \"127.0.0.1:{port}\"\nunhealthy_after = \"1s\"\nauto_create_topics = false\ncheckpoint = \"{d}/ckpt\"\n[[input]]\npaths = [\"{d}/*.log\"]\ntopic = \"{t}-{{file_stem}}\"\n[[input]]\npaths = [\"{d}/fixed.txt\"]\ntopic = \"{t}-fixed\"\n",
            d = dir.display()
        ),
    );
    append(&dir.join("app.log"), &numbered_lines("app", 0, 10));
    append(&dir.join("fixed.txt"), &numbered_lines("fixed", 0, 5));
    let mut tail = Tail::start(&c, &["--config", cfg.to_str().unwrap()], &dir.join("log"));
    wait_listening(port, &tail);
    // (A cluster just started may first be "waiting for Kafka": its coordinators still load.)
    // It names the topic that has waited longest: either one, as the two lookups race.
    let says = [
        format!("topic '{t}-app' not available for"),
        format!("topic '{t}-fixed' not available for"),
    ];
    tail.until(
        60,
        || {
            let (code, why) = http_get(port, "/healthz");
            code == 503 && says.iter().any(|s| why.starts_with(s))
        },
        "healthz never 503 for the topic",
    );
    let m = parse_with_prometheus_client(&http_get(port, "/metrics").1);
    assert!(m["shipper_topic_waiting_seconds{}"] >= 1.0, "{m:#?}");
    create_topic(&c, &format!("{t}-app"), 1, 3, &[]);
    create_topic(&c, &format!("{t}-fixed"), 1, 3, &[]);
    tail.until(
        60,
        || topic_values(&c, &format!("{t}-app")).len() == 10,
        "lines once the topic exists",
    );
    tail.until(
        60,
        || topic_values(&c, &format!("{t}-fixed")).len() == 5,
        "lines once the fixed topic exists",
    );
    tail.until(
        60,
        || http_get(port, "/healthz").0 == 200,
        "healthz never 200",
    );
    // The end of the wait is said, as its start was.
    let err = tail.stderr();
    assert!(
        err.contains(&format!("topic '{t}-app' can be used now, after")),
        "{err}"
    );
    // Deleted under the running agent: said as the topic being gone, not as the Produce answer's bare
    // UNKNOWN_TOPIC_OR_PARTITION; the lines wait and go once it is created again.
    kafka_topic(&c, "delete", &format!("{t}-fixed"), &[]);
    std::thread::sleep(Duration::from_secs(2));
    append(&dir.join("fixed.txt"), &numbered_lines("fixed", 5, 10));
    let gone = format!(
        "cannot deliver to Kafka (topic '{t}-fixed' does not exist (create it; auto_create_topics = false"
    );
    tail.until(
        60,
        || tail.stderr().contains(&gone),
        "the deleted topic said",
    );
    tail.until(
        60,
        || http_get(port, "/healthz").0 == 503,
        "healthz never 503 for the deleted topic",
    );
    create_topic(&c, &format!("{t}-fixed"), 1, 3, &[]);
    tail.until(
        60,
        || topic_values(&c, &format!("{t}-fixed")).len() == 5,
        "lines once the deleted topic is created again",
    );
    tail.until(
        60,
        || http_get(port, "/healthz").0 == 200,
        "healthz never 200 again",
    );
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
}

/// A template that makes one of Kafka's internal topics of a file's name (any user who can write in
/// the log directory can name a file `__consumer_offsets.log`): that file's lines wait, said once,
/// and the other files ship; it is no delivery failure (t36 F2: every Produce was refused and
/// retried for ever, and the whole agent said delivery to Kafka was failing). Named as it is, such
/// a topic is refused at start.
#[test]
fn a_template_that_makes_an_internal_topic_holds_that_file_alone() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("agent-internal");
    let t = topic("agent-internal");
    create_topic(&b, &t, 1, 1, &[]);
    let port = free_port();
    let cfg = dir.join("agent.toml");
    write_config(
        &cfg,
        &format!(
            "metrics_listen = \"127.0.0.1:{port}\"\ncheckpoint = \"{d}/ckpt\"\n[[input]]\npaths = [\"{d}/*.log\"]\ntopic = \"{{file_stem}}\"\n",
            d = dir.display()
        ),
    );
    append(&dir.join("__consumer_offsets.log"), b"hostile\n");
    append(&dir.join(format!("{t}.log")), &numbered_lines("ok", 0, 10));
    let mut tail = Tail::start(&b, &["--config", cfg.to_str().unwrap()], &dir.join("log"));
    wait_listening(port, &tail);
    tail.until(
        60,
        || topic_values(&b, &t).len() == 10,
        "the other file's lines",
    );
    tail.until(
        30,
        || tail.stderr().contains("one of Kafka's internal topics"),
        "the internal topic said",
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let m = parse_with_prometheus_client(&http_get(port, "/metrics").1);
    assert_eq!(m["shipper_delivery_failing{}"], 0.0, "{m:#?}");
    let err = tail.stderr();
    assert_eq!(
        err.matches("one of Kafka's internal topics").count(),
        1,
        "{err}"
    );
    assert!(!err.contains("cannot deliver"), "{err}");
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());

    // Named as it is: refused at once, from the command line and from a config file.
    let log = dir.join(format!("{t}.log")).display().to_string();
    let out = shipper(&b, &["tail", &log, "__consumer_offsets"], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("one of Kafka's internal topics"), "{err}");
    let out = shipper(&b, &["produce", "__transaction_state"], b"x\n");
    assert_eq!(out.status.code(), Some(2));
}

/// A log directory where other programs create and rename files (and where the checkpoint itself is
/// written) costs no full scan per event: only a name a pattern may find, or a followed file renamed,
/// does. Counted by `shipper_scans_total`; the lines of a new matching file and of a rotated one
/// still all arrive (read back with kcat).
#[test]
fn unrelated_and_new_files_in_a_watched_directory_cost_no_full_scan() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("agent-names");
    let t = topic("agent-names");
    create_topic(&b, &t, 1, 1, &[]);
    let port = free_port();
    append(&dir.join("a.log"), &numbered_lines("a", 0, 10));
    let pattern = format!("{}/*.log", dir.display());
    let ckpt = dir.join("ckpt");
    let port_s = format!("127.0.0.1:{port}");
    let mut tail = Tail::start(
        &b,
        &[
            &pattern,
            &t,
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--checkpoint-ms",
            "20",
            "--metrics-listen",
            &port_s,
        ],
        &dir.join("log"),
    );
    wait_listening(port, &tail);
    let scans =
        || parse_with_prometheus_client(&http_get(port, "/metrics").1)["shipper_scans_total{}"];
    wait_for_records(&b, &t, 10, Duration::from_secs(30));
    let before = scans();
    // Unrelated names: written, renamed, rotated as .gz, in the watched directory — while the file
    // followed takes lines (so the checkpoint is rewritten next to them every 20 ms, too).
    for i in 0..30 {
        std::fs::write(dir.join(format!(".tmp-{i}")), "x").unwrap();
        std::fs::rename(
            dir.join(format!(".tmp-{i}")),
            dir.join(format!("other-{i}.txt")),
        )
        .unwrap();
        std::fs::write(dir.join(format!("a.log.{i}.gz")), "x").unwrap();
        append(&dir.join("a.log"), &numbered_lines("a", 10 + i, 11 + i));
        std::thread::sleep(Duration::from_millis(30));
    }
    wait_for_records(&b, &t, 40, Duration::from_secs(30));
    let after = scans();
    assert!(
        after - before <= 1.0,
        "unrelated names caused {} full scans (one safety rescan allowed): {}",
        after - before,
        tail.stderr()
    );
    // New files the pattern finds, created or renamed in, are followed at once without a full
    // scan (each looked at alone); a rotation of the followed file still scans.
    append(&dir.join("b.log"), &numbered_lines("b", 0, 5));
    std::thread::sleep(Duration::from_millis(200)); // two events, apart
    std::fs::write(dir.join(".c.tmp"), numbered_lines("c", 0, 5)).unwrap();
    std::fs::rename(dir.join(".c.tmp"), dir.join("c.log")).unwrap();
    let got = wait_for_records(&b, &t, 50, Duration::from_secs(30));
    assert_eq!(got.len(), 50, "{}", tail.stderr());
    let new_files = scans();
    assert!(
        new_files - after <= 1.0,
        "new files caused {} full scans (one safety rescan allowed)",
        new_files - after
    );
    std::fs::rename(dir.join("a.log"), dir.join("a.log.1")).unwrap();
    append(&dir.join("a.log"), &numbered_lines("a", 40, 45));
    let got = wait_for_records(&b, &t, 55, Duration::from_secs(30));
    assert!(scans() > new_files, "a rotation scans");
    let mut want: Vec<Vec<u8>> = lines(&numbered_lines("a", 0, 45));
    want.extend(lines(&numbered_lines("b", 0, 5)));
    want.extend(lines(&numbered_lines("c", 0, 5)));
    let mut got = got;
    got.sort();
    want.sort();
    assert_eq!(got, want, "{}", tail.stderr());
    assert_eq!(tail.stop("INT"), Some(0));
}

/// A reload reads the TLS files as a start would: a renewal that broke them (garbage, a key that is
/// not the certificate's) is refused while the agent goes on shipping, and a renewal that changed
/// them is said to take effect at the next restart (t17 F1: "config reloaded" for both).
#[test]
fn a_reload_refuses_broken_tls_files_and_says_when_renewed_ones_take_effect() {
    let Some(b) = broker() else { return };
    let Some(sec) = crate::secure::secure() else {
        return;
    };
    let dir = scratch_dir("agent-tls-reload");
    let t = topic("agent-tls-reload");
    create_topic(&b, &t, 1, 1, &[]);
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    let copy = |from: &str, to: &Path| std::fs::copy(sec.join(from), to).unwrap();
    copy("client.pem", &cert);
    copy("client.key", &key);
    let cfg = dir.join("agent.toml");
    write_config(
        &cfg,
        &format!(
            "brokers = [\"127.0.0.1:9096\"]\nsecurity_protocol = \"ssl\"\nca_file = \"{s}/ca.pem\"\ncert_file = \"{d}/client.pem\"\nkey_file = \"{d}/client.key\"\ncheckpoint = \"{d}/ckpt\"\n[[input]]\npaths = [\"{d}/a.log\"]\ntopic = \"{t}\"\n",
            s = sec.display(),
            d = dir.display()
        ),
    );
    let log = dir.join("a.log");
    append(&log, &numbered_lines("a", 0, 10));
    let tail = Tail::start(
        "127.0.0.1:9096",
        &["--config", cfg.to_str().unwrap()],
        &dir.join("err"),
    );
    tail.until(60, || topic_values(&b, &t).len() == 10, "first lines");
    // A broken renewal: refused, and the lines still go with the running certificate.
    std::fs::write(&cert, b"garbage\n").unwrap();
    tail.signal("HUP");
    wait_for_log(&tail, "config not reloaded, the running one stays: TLS:");
    copy("other-ca.key", &key);
    copy("client.pem", &cert);
    tail.signal("HUP");
    tail.until(
        30,
        || tail.stderr().matches("config not reloaded").count() == 2,
        "a key not the certificate's refused",
    );
    assert!(
        tail.stderr()
            .contains("it is not the key of the certificate"),
        "{}",
        tail.stderr()
    );
    append(&log, &numbered_lines("a", 10, 20));
    tail.until(60, || topic_values(&b, &t).len() == 20, "lines after");
    // The same files with other bytes (a renewal): taken at the next restart, and said.
    copy("client.key", &key);
    let mut renewed = std::fs::read(sec.join("client.pem")).unwrap();
    renewed.extend_from_slice(b"\n");
    std::fs::write(&cert, renewed).unwrap();
    tail.signal("HUP");
    wait_for_log(
        &tail,
        "the TLS certificate, key or CA files changed; that takes effect at the next restart",
    );
}

#[test]
fn a_reload_waiting_on_a_fifo_config_leaves_shipping_metrics_and_sigterm_alone() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("agent-fifo-reload");
    let [t1, t2] = ["1", "2"].map(|s| topic(&format!("agent-fifo-reload-{s}")));
    for t in [&t1, &t2] {
        create_topic(&b, t, 1, 1, &[]);
    }
    let port = free_port();
    let config = |t: &str| {
        format!(
            "metrics_listen = \"127.0.0.1:{port}\"\ncheckpoint = \"{d}/ckpt\"\n[[input]]\npaths = [\"{d}/a.log\"]\ntopic = \"{t}\"\n",
            d = dir.display()
        )
    };
    let cfg = dir.join("agent.toml");
    write_config(&cfg, &config(&t1));
    let a = dir.join("a.log");
    append(&a, &numbered_lines("a", 0, 10));
    let mut tail = Tail::start(&b, &["--config", cfg.to_str().unwrap()], &dir.join("log"));
    wait_listening(port, &tail);
    tail.until(30, || topic_values(&b, &t1).len() == 10, "first lines");
    // The config becomes a FIFO whose writer says nothing yet (`--config <(slow command)`).
    std::fs::remove_file(&cfg).unwrap();
    let c = std::ffi::CString::new(cfg.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Read and write: the open does not wait for a reader, and the FIFO has a writer from now on.
    let mut writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&cfg)
        .unwrap();
    tail.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    // While the reload waits, lines ship and /metrics answers.
    append(&a, &numbered_lines("a", 10, 20));
    tail.until(
        10,
        || topic_values(&b, &t1).len() == 20,
        "lines while reading",
    );
    assert_eq!(http_get(port, "/metrics").0, 200);
    assert!(
        !tail.stderr().contains("config reloaded"),
        "{}",
        tail.stderr()
    );
    // A second SIGHUP meanwhile: the config is read once more after this read.
    tail.signal("HUP");
    writer.write_all(config(&t2).as_bytes()).unwrap();
    drop(writer);
    wait_for_log(&tail, "config reloaded");
    append(&a, &numbered_lines("a", 20, 30));
    tail.until(
        30,
        || topic_values(&b, &t2).len() == 10,
        "lines to the new topic",
    );
    assert_eq!(topic_values(&b, &t1).len(), 20);
    // A reload stuck on the FIFO again, then SIGTERM: the agent stops at once, not after the read.
    let _writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&cfg)
        .unwrap();
    tail.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "SIGTERM waited for the reload: {:?}",
        asked.elapsed()
    );
}

#[test]
fn an_input_added_by_a_reload_with_from_end_starts_at_its_files_end() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("agent-reload-from-end");
    let t = topic("agent-reload-from-end");
    create_topic(&b, &t, 1, 1, &[]);
    let input = |name: &str, extra: &str| {
        format!(
            "[[input]]\npaths = [\"{d}/{name}.log\"]\ntopic = \"{t}\"\n{extra}",
            d = dir.display()
        )
    };
    let head = format!("checkpoint = \"{}/ckpt\"\n", dir.display());
    let cfg = dir.join("agent.toml");
    write_config(&cfg, &format!("{head}{}", input("a", "")));
    append(&dir.join("a.log"), &numbered_lines("a", 0, 2));
    append(&dir.join("b.log"), &numbered_lines("old", 0, 10));
    let mut tail = Tail::start(&b, &["--config", cfg.to_str().unwrap()], &dir.join("log"));
    tail.until(30, || topic_values(&b, &t).len() == 2, "first lines");
    write_config(
        &cfg,
        &format!(
            "{head}{}{}",
            input("a", ""),
            input("b", "from_end = true\n")
        ),
    );
    tail.signal("HUP");
    wait_for_log(&tail, "config reloaded");
    append(&dir.join("b.log"), &numbered_lines("b", 0, 3));
    tail.until(
        30,
        || topic_values(&b, &t).len() >= 5,
        "the new input's lines",
    );
    std::thread::sleep(Duration::from_millis(500));
    let got: Vec<String> = topic_values(&b, &t)
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(
        got,
        ["a-0", "a-1", "b-0", "b-1", "b-2"],
        "{}",
        tail.stderr()
    );
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
}

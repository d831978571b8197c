//! Shared helpers: finding the brokers (failing, not skipping, under CI), running shipper, kcat and
//! Kafka's own tools, unique topic names.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The single broker's bootstrap address, or `None` (test skipped) when unreachable outside CI.
pub fn broker() -> Option<String> {
    reachable("SHIPPER_TEST_BROKER", "127.0.0.1:9092")
}

/// The three-broker cluster's bootstrap list, likewise.
pub fn cluster() -> Option<String> {
    reachable(
        "SHIPPER_TEST_CLUSTER",
        "127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194",
    )
}

fn reachable(var: &str, default: &str) -> Option<String> {
    let addrs = std::env::var(var).unwrap_or_else(|_| default.to_string());
    let first = addrs.split(',').next().unwrap_or_default().to_string();
    let ok = first
        .parse()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some();
    if ok {
        return Some(addrs);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and no Kafka broker answers at {first} ({var}); scripts/test starts one");
    }
    eprintln!("SKIPPED: no broker at {first} ({var}); run scripts/test or scripts/kafka-up");
    None
}

/// A topic name no other test (or earlier run) uses.
pub fn topic(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{t}-{n}", std::process::id())
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipper binary under test (`SHIPPER_BIN` overrides, e.g. for the static build).
pub fn shipper_bin() -> PathBuf {
    std::env::var_os("SHIPPER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_shipper")))
}

/// Runs a command with `stdin` as input, with a time limit.
pub fn run_with_input(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = wait_with_timeout(child, Duration::from_secs(120), &desc);
    writer.join().unwrap();
    out
}

fn wait_with_timeout(child: std::process::Child, limit: Duration, desc: &str) -> Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("{desc} did not finish within {limit:?}");
        }
    }
}

/// `shipper ARGS` against `brokers`, with `stdin`.
pub fn shipper(brokers: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(shipper_bin());
    c.arg("-b").arg(brokers).args(args);
    run_with_input(c, stdin)
}

/// Like [`shipper`], asserting success; returns stdout.
pub fn shipper_ok(brokers: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = shipper(brokers, args, stdin);
    assert!(
        out.status.success(),
        "shipper {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `kcat ARGS` (librdkafka's CLI) with `stdin`, asserting success; returns stdout.
pub fn kcat(brokers: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut c = Command::new("kcat");
    c.arg("-b").arg(brokers).args(args);
    let out = run_with_input(c, stdin);
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs one of Kafka's own Java tools through scripts/kafka-tool; returns stdout.
pub fn kafka_tool(class: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut c = Command::new(root().join("scripts/kafka-tool"));
    c.arg(class).args(args);
    let out = run_with_input(c, stdin);
    assert!(
        out.status.success(),
        "kafka-tool {class} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Creates a topic with Kafka's admin tool.
pub fn create_topic(brokers: &str, name: &str, partitions: u32, rf: u32, configs: &[&str]) {
    let mut c = Command::new(root().join("scripts/kafka-topic"));
    c.args([
        "create",
        name,
        "--partitions",
        &partitions.to_string(),
        "--rf",
        &rf.to_string(),
    ])
    .args(["--brokers", brokers]);
    for cfg in configs {
        c.args(["--config", cfg]);
    }
    let out = run_with_input(c, b"");
    assert!(
        out.status.success(),
        "kafka-topic create {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Splits output into lines (without the newline).
pub fn lines(out: &[u8]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = out.split(|&b| b == b'\n').map(|l| l.to_vec()).collect();
    if v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

//! Shared helpers: finding the brokers (failing, not skipping, under CI), running shipper, kcat and
//! Kafka's own tools, unique topic names.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A `shipper tail` process running in the background.
pub struct Tail {
    child: Option<std::process::Child>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Tail {
    /// Starts `shipper -b BROKERS tail ARGS...`, logging to `log`.
    pub fn start(brokers: &str, args: &[&str], log: &std::path::Path) -> Tail {
        let mut c = Command::new(shipper_bin());
        c.arg("-b").arg(brokers).arg("tail").args(args);
        Tail::spawn(c, log)
    }

    /// Starts a prepared command (a `shipper tail`, perhaps under another user), logging to `log`.
    pub fn spawn(mut c: Command, log: &std::path::Path) -> Tail {
        let err = std::fs::File::create(log).unwrap();
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Tail {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// The process id (0 once stopped).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends a signal (e.g. "HUP") and returns at once.
    #[allow(dead_code)]
    pub fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(c.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{signal} failed");
        }
    }

    /// Sends a signal (e.g. "INT", "KILL") and waits for the exit; returns the exit code if any.
    pub fn stop(&mut self, signal: &str) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(c.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "shipper tail did not exit after SIG{signal}: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it printed to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `secs` seconds for `what` to hold (asked ~300 times at most); fails with `why`
    /// and what shipper said.
    pub fn until(&self, secs: u64, what: impl Fn() -> bool, why: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !what() {
            assert!(Instant::now() < deadline, "{why}: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(secs * 1000 / 300));
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child process killed and reaped when dropped, so that a failing test leaves none running.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every value in the topic, from the beginning to its current end.
pub fn topic_values(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    let out = shipper(brokers, &["consume", topic, "--from-beginning", "-e"], b"");
    if !out.status.success() {
        return Vec::new();
    }
    lines(&out.stdout)
}

/// Polls the topic until it holds at least `n` records (or the time runs out); returns its values.
pub fn wait_for_records(brokers: &str, topic: &str, n: usize, limit: Duration) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let v = topic_values(brokers, topic);
        if v.len() >= n || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `scripts/kafka-topic VERB TOPIC EXTRA... --brokers BROKERS`; it must succeed.
pub fn kafka_topic(brokers: &str, verb: &str, topic: &str, extra: &[&str]) {
    let mut k = Command::new(root().join("scripts/kafka-topic"));
    k.args([verb, topic])
        .args(extra)
        .args(["--brokers", brokers]);
    assert!(
        run_with_input(k, b"").status.success(),
        "kafka-topic {verb} {topic}"
    );
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shipper-test-{}", topic(name)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Truncates a file to nothing in place (as copytruncate does, or a user with `: > file`).
pub fn truncate_in_place(path: &std::path::Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// Appends bytes to a file (creating it).
pub fn append(path: &std::path::Path, data: &[u8]) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}

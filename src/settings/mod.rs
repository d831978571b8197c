//! Resolved settings: what the flags (and, for `tail`, a config file) mean, decided in one place. The
//! commands take these; nothing below them sees clap.
//!
//! - [`security`]: TLS and SASL from flags, `-X` and `-F`.
//! - [`tail`]: `tail`'s one settings model; [`config`]: the same from a TOML file.

pub mod config;
pub mod security;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use crate::cli::{AcksArg, Common, CompressionArg, PartitionerArg, ProducerFlags};
use crate::cluster::{ClientOptions, Cluster};
use crate::connection::{client_config, TcpTransport, TlsTransport, Transport};
use crate::partitioner::Partitioner;
use crate::producer::ProducerConfig;
use crate::wire::compression::Compression;
pub use security::{Protocol, Security};

/// A usage error found after parsing (exit code 2, like clap's own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Fails with a [`UsageError`].
pub fn usage<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(UsageError(msg.into()).into())
}

/// Checks a listen address (`--metrics-listen`, `metrics_listen`): `host:port`; the error leaves the
/// value out (the caller shows it).
/// `:9898` (node_exporter's form) is refused with the two hosts one means.
pub fn check_listen(a: &str) -> Result<(), String> {
    let ok = a.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
    });
    match ok {
        true => Ok(()),
        false if a.starts_with(':') => Err(format!(
            "give a host: 0.0.0.0{} for every address, 127.0.0.1{} for this host only",
            crate::escape::Esc::str(a),
            crate::escape::Esc::str(a)
        )),
        false => Err("expected host:port, such as 127.0.0.1:9898".to_string()),
    }
}

/// `--metrics-listen`, checked as the config's `metrics_listen` is (a usage error, exit 2).
pub fn parse_listen(a: &str) -> Result<String, String> {
    check_listen(a).map(|()| a.to_string())
}

/// The most a settings file (a config, `-F` properties, a password or token) may hold.
pub const MAX_SETTINGS_FILE: u64 = 1 << 20;

/// The most a PEM file (a CA bundle, a certificate chain, a key) may hold.
pub const MAX_PEM_FILE: u64 = 16 << 20;

/// Reads a small file whole, refusing one larger than `limit` bytes: a settings path pointing at
/// `/dev/zero`, a log or a disk image fails at once instead of filling memory. A pipe or device must
/// deliver its whole content within [`PIPE_WAIT`].
pub fn read_bounded(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    read_bounded_within(path, limit, PIPE_WAIT)
}

/// How long a pipe or device given as a settings file (`--config <(...)`, a FIFO) may take to
/// deliver its whole content: a writer that holds it open and writes nothing must not stop a start,
/// or a reload, for ever.
pub const PIPE_WAIT: Duration = Duration::from_secs(60);

fn read_bounded_within(
    path: &std::path::Path,
    limit: u64,
    wait: Duration,
) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    // Opened without blocking: a FIFO nobody writes to would block the open forever (and reads as
    // empty at once).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(std::io::Error::other("it is a directory"));
    }
    let mut bytes = Vec::new();
    if meta.is_file() {
        // A regular file's reads wait on no one: blocking again.
        // SAFETY: F_GETFL and F_SETFL on a descriptor this function owns; no memory is passed.
        unsafe {
            let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            if fl < 0 || libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        file.take(limit + 1).read_to_end(&mut bytes)?;
    } else {
        read_until_end_or(&file, limit, wait, &mut bytes)?;
    }
    if bytes.len() as u64 > limit {
        let size = match limit {
            l if l >= 1 << 20 && l % (1 << 20) == 0 => format!("{} MiB", l >> 20),
            l => format!("{l} bytes"),
        };
        return Err(std::io::Error::other(format!(
            "it is larger than {size} (the wrong file?)"
        )));
    }
    Ok(bytes)
}

/// Reads a non-blocking pipe or device until its end, more than `limit` bytes, or `wait` (an
/// error: a writer that neither writes nor closes).
fn read_until_end_or(
    mut file: &std::fs::File,
    limit: u64,
    wait: Duration,
    bytes: &mut Vec<u8>,
) -> std::io::Result<()> {
    use std::io::{ErrorKind, Read};
    use std::os::unix::io::AsRawFd;
    let deadline = std::time::Instant::now() + wait;
    let mut buf = [0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                if bytes.len() as u64 > limit {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "its end did not come within {} s (a pipe whose writer never finishes?)",
                            wait.as_secs_f64()
                        ),
                    ));
                }
                let mut pfd = libc::pollfd {
                    fd: file.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd, on the stack for the whole call; the descriptor is
                // this function's (borrowed from `file`, open for the call).
                if unsafe { libc::poll(&mut pfd, 1, ms) } < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_text_bounded(path: &std::path::Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not UTF-8 text (the wrong file?)",
        )
    })
}

/// A broker address as Kafka's clients take it: a listener's prefix dropped (`PLAINTEXT://k:9092`,
/// as `bootstrap.servers` and `advertised.listeners` are often written; t28 F3: it was looked up as
/// a host name until --timeout), a bare IPv6 address bracketed (`::1`, as kcat reads it), and
/// Kafka's default port (9092) when it names none: `kafka1`, `[::1]`. A bare IPv6 address whose last
/// group has five digits ends in a port (`::1:19092`: no group has five); one whose last group is
/// four decimal digits is read as an address, and a warning says how to write a port. An unclosed
/// `[` is left for [`check_broker`] to refuse as written.
fn with_default_port(b: String) -> String {
    // Its prefix was checked by `security::resolve` (a protocol, or refused).
    let b = security::split_listener(&b).1.to_string();
    let v6 = b.matches(':').count() >= 2
        && b.bytes()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.' | b'%'));
    if v6 {
        let (addr, last) = b.rsplit_once(':').unwrap_or((&b, ""));
        let decimal = !last.is_empty() && last.bytes().all(|c| c.is_ascii_digit());
        if decimal && last.len() >= 5 && addr.matches(':').count() >= 2 {
            return format!("[{addr}]:{last}");
        }
        if decimal && last.len() == 4 {
            crate::log::warn(format_args!(
                "broker address '{}' is read as the IPv6 address {} on port 9092; for port {last} of {}, write [{}]:{last}",
                crate::escape::Esc::str(&b),
                crate::escape::Esc::str(&b),
                crate::escape::Esc::str(addr),
                crate::escape::Esc::str(addr)
            ));
        }
        return format!("[{b}]:9092");
    }
    let has_port = match b.strip_prefix('[') {
        // `[::1]` only: anything else after '[' is checked as written.
        Some(v6) => !v6.ends_with(']'),
        None => b.contains(':'),
    };
    match has_port {
        true => b,
        false => format!("{b}:9092"),
    }
}

/// How long one request may wait within an operation of `total`: a third of it (at least a second,
/// never more than the whole), so that an answer lost on the way is asked for again.
fn per_attempt(total: Duration) -> Duration {
    (total / 3).max(Duration::from_secs(1)).min(total)
}

/// Whether `host:port` (with the port added) could name a broker: a host, and a port from 1 to 65535.
fn check_broker(b: &str) -> Result<(), String> {
    let shown = crate::escape::Esc::str(b);
    let (host, port) = match b.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, rest)) => match rest.strip_prefix(':') {
                Some(port) => (host, port),
                None => {
                    return Err(format!(
                        "broker address '{shown}': after an IPv6 address in brackets comes ':' and the port ([::1]:9092)"
                    ))
                }
            },
            None => {
                return Err(format!(
                    "broker address '{shown}' has no closing ']' (an IPv6 address is written [::1]:9092)"
                ))
            }
        },
        None => b.rsplit_once(':').unwrap_or((b, "")),
    };
    if host.is_empty() {
        return Err(format!(
            "broker address '{shown}' has no host (-b host:port)"
        ));
    }
    // Before the port: in `fe80::1%eth0` the last ':' is the address's (t29 F8: "the port '1%eth0'").
    if b.contains('%') {
        return Err(format!(
            "broker address '{shown}': IPv6 zone ids ('%eth0') are not taken; name the broker by a host name or an address without one"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "broker address '{shown}': the port '{}' is not a number from 1 to 65535",
            crate::escape::Esc::str(port)
        )),
    }
}

/// A topic named on the command line (`produce`, `consume`) is one Kafka could hold: a pattern
/// (`'^logs-.*'`, what kcat -G and Java's `--include` take) is said to be one, rather than sent for
/// the broker to refuse with a bare protocol error.
pub fn check_topic_arg(raw: &str) -> anyhow::Result<()> {
    match topic_name_problem(raw) {
        Some(problem) => usage(problem),
        None => Ok(()),
    }
}

/// Whether `name` is one of Kafka's internal topics, which brokers never let a client write to (as
/// Kafka's own `Topic.isInternal`: the group offsets, the transaction log, and 4.x's share-group
/// state). Reading them is allowed.
pub(crate) fn internal_topic(name: &str) -> bool {
    matches!(
        name,
        "__consumer_offsets" | "__transaction_state" | "__share_group_state"
    )
}

/// A topic named to be written to (`produce`, `tail`): a name Kafka would take, and not one of its
/// internal topics (t36 F2: `tail` retried the broker's refusal for ever).
pub fn check_topic_to_write(raw: &str) -> anyhow::Result<()> {
    check_topic_arg(raw)?;
    match internal_topic(raw) {
        true => usage(internal_topic_problem(raw)),
        false => Ok(()),
    }
}

/// The words for a topic that cannot be written to because it is internal.
pub(crate) fn internal_topic_problem(raw: &str) -> String {
    crate::error::Error::InternalTopic { topic: raw.into() }.to_string()
}

/// What is wrong with `raw` as a topic name, in words; `None` when Kafka would take it.
pub(crate) fn topic_name_problem(raw: &str) -> Option<String> {
    crate::tail::route::topic_name(raw.as_bytes()).1.then(|| {
        let template = match raw.contains('{') {
            true => "; a topic template such as 'logs-{file_stem}' is for an input of a --config file",
            false => "",
        };
        // Said only of what looks like one (helper-66: said of a name with a blank).
        let patterns = match raw.contains(['*', '?', '^', '$', '[', '(', '|', '\\', '+']) {
            true => ": shipper reads and writes named topics, not patterns",
            false => "",
        };
        format!(
            "'{}' is not a topic name (letters, digits, '.', '_' and '-', at most 249){patterns}{template}",
            crate::escape::Esc::str(raw)
        )
    })
}

/// Where the cluster is and how to talk to it.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap `host:port` list.
    pub brokers: Vec<String>,
    /// Client id.
    pub client_id: String,
    /// How long to retry an unreachable cluster or a partition without leader; `None` = forever.
    pub timeout: Option<Duration>,
    /// TLS and SASL.
    pub security: Security,
}

impl KafkaSettings {
    /// From the common flags; `default_timeout` when `--timeout` is not given.
    pub fn from_flags(c: &Common, default_timeout: Option<Duration>) -> anyhow::Result<Self> {
        let flags = security::SecurityFlags::from_common(c);
        KafkaSettings::resolve(
            c.brokers.clone(),
            &flags,
            c.client_id.clone(),
            c.timeout.map_or(default_timeout, |t| t.0),
        )
    }

    /// From brokers (`host:port,...`), security settings, a client id and a timeout.
    pub fn resolve(
        brokers: Option<String>,
        flags: &security::SecurityFlags,
        client_id: String,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let security = security::resolve(flags, brokers.as_deref())?;
        let raw = brokers
            .or_else(|| security.brokers.clone())
            .unwrap_or_else(|| "127.0.0.1:9092".to_string());
        let brokers: Vec<String> = raw
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if brokers.is_empty() {
            return usage("no brokers given (-b host:port)");
        }
        // Without a port, Kafka's 9092 (as kcat assumes).
        let brokers: Vec<String> = brokers.into_iter().map(with_default_port).collect();
        // A port that does not parse never starts working: said at once, not retried for --timeout
        // (t18 F4). A host that does not resolve may (DNS), and is retried.
        for b in &brokers {
            if let Err(why) = check_broker(b) {
                return usage(why);
            }
        }
        Ok(KafkaSettings {
            brokers,
            client_id,
            timeout,
            security,
        })
    }

    /// The cluster these settings describe (nothing is connected yet); an error if the TLS files
    /// cannot be used.
    pub fn cluster(&self) -> anyhow::Result<Arc<Cluster>> {
        let mut opts = ClientOptions::new(&self.brokers.join(","));
        opts.connection.client_id = self.client_id.clone();
        opts.connection.sasl = self.security.sasl.clone().map(Arc::new);
        opts.retry_limit = self.timeout;
        if let Some(t) = self.timeout {
            // A request or a connection attempt never waits longer than the whole operation may,
            // and leaves room to ask again (t19 F1: one lost Metadata or InitProducerId answer took
            // all of the default 30 s as one attempt, and the run failed).
            opts.connection.request_timeout = opts.connection.request_timeout.min(per_attempt(t));
            opts.connection.connect_timeout = opts.connection.connect_timeout.min(t);
        }
        let transport: Arc<dyn Transport> = match &self.security.tls {
            Some(tls) => Arc::new(TlsTransport::new(
                client_config(tls).map_err(anyhow::Error::msg)?,
            )),
            None => Arc::new(TcpTransport),
        };
        Ok(Arc::new(Cluster::with_transport(opts, transport)))
    }
}

/// The producer settings from the shared producer flags.
pub fn producer_config(f: &ProducerFlags) -> anyhow::Result<ProducerConfig> {
    let cfg = ProducerConfig {
        acks: match f.acks {
            AcksArg::All => -1,
            AcksArg::Leader => 1,
            AcksArg::None => 0,
        },
        compression: match f.compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        },
        compression_level: f.compression_level,
        linger: Duration::from_millis(f.linger_ms),
        batch_bytes: f.batch_bytes as usize,
        max_message_bytes: f.max_message_bytes as usize,
        // Room for two of the largest batches at least.
        buffer_bytes: (4usize << 20).max(2 * f.max_message_bytes as usize),
        max_in_flight: f.max_in_flight as usize,
        partitioner: match f.partitioner {
            PartitionerArg::Default => Partitioner::Default,
            PartitionerArg::Sticky => Partitioner::Sticky,
            PartitionerArg::Random => Partitioner::Random,
            PartitionerArg::Murmur2 => Partitioner::Murmur2,
        },
        idempotence: !f.no_idempotence,
        ..ProducerConfig::default()
    };
    if let Some(level) = cfg.compression_level {
        if let Err(e) = cfg.compression.check_level(level) {
            return usage(format!("--compression-level: {e}"));
        }
    }
    Ok(cfg)
}

/// A header as given on the command line: its key, and its value (`None`: null).
pub type HeaderArg = (Vec<u8>, Option<Vec<u8>>);

/// Parses repeated `-H key=value` (or `-H key`, a null value) flags. A value is bytes, as the
/// command line gave them (kcat's too); a key must be UTF-8 (Kafka's header keys are strings).
pub fn parse_headers(hs: &[std::ffi::OsString]) -> anyhow::Result<Vec<HeaderArg>> {
    use std::os::unix::ffi::OsStrExt;
    hs.iter()
        .map(|h| {
            let h = h.as_bytes();
            let (k, v) = match h.iter().position(|&b| b == b'=') {
                Some(at) => (&h[..at], Some(h[at + 1..].to_vec())),
                // As kcat: a key alone is a header whose value is null (`key=` is an empty one).
                None => (h, None),
            };
            if k.is_empty() {
                return usage(format!(
                    "invalid header '{}' (use -H key=value, or -H key for a null value)",
                    crate::escape::Esc(h)
                ));
            }
            if std::str::from_utf8(k).is_err() {
                return usage(format!(
                    "invalid header key '{}': not UTF-8 (a header's value may be any bytes, its key may not)",
                    crate::escape::Esc(k)
                ));
            }
            Ok((k.to_vec(), v))
        })
        .collect()
}

/// Raises the soft limit on open files to the hard limit (a log shipper may follow thousands of
/// files); returns the limit in force.
pub fn raise_open_files_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
    }
    rl.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_bytes_and_keys_are_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let arg = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_os_string();
        let got = parse_headers(&[arg(b"a=\xff\x00=x"), arg(b"n"), arg(b"e=")]).unwrap();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), Some(b"\xff\x00=x".to_vec())),
                (b"n".to_vec(), None),
                (b"e".to_vec(), Some(Vec::new())),
            ]
        );
        for (bad, said) in [
            (&b"=v"[..], "invalid header '=v'"),
            (b"", "invalid header ''"),
            (b"k\xff=v", "invalid header key 'k\\xff': not UTF-8"),
        ] {
            let e = parse_headers(&[arg(bad)]).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some());
            assert!(e.to_string().contains(said), "{e}");
        }
    }

    #[test]
    fn a_settings_file_that_is_a_fifo_or_a_device_is_a_bounded_outcome() {
        let dir = crate::testkit::scratch_dir("settings-fifo");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Nobody writes to it: read as empty at once, where the open used to wait forever.
        assert_eq!(read_text_bounded(&fifo, 100).unwrap(), "");
        // A writer (as with `--config <(...)`), already there but slow: read to its end.
        let mut w = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            std::io::Write::write_all(&mut w, b"brokers = [\"k:9092\"]\n").unwrap();
        });
        let got = read_text_bounded(&fifo, 100).unwrap();
        writer.join().unwrap();
        assert_eq!(got, "brokers = [\"k:9092\"]\n");
        // A writer that holds it open and writes nothing: a bounded wait, then an error.
        let idle = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let t = std::time::Instant::now();
        let e = read_bounded_within(&fifo, 100, Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("never finishes"), "{e}");
        drop(idle);
        let e = read_bounded(std::path::Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "it is larger than 1 MiB (the wrong file?)");
        let e = read_bounded(&dir, 100).unwrap_err();
        assert_eq!(e.to_string(), "it is a directory");
    }

    #[test]
    fn a_request_waits_a_third_of_the_timeout_so_a_lost_answer_is_asked_again() {
        let s = Duration::from_secs;
        assert_eq!(per_attempt(s(30)), s(10));
        assert_eq!(per_attempt(s(2)), s(1));
        assert_eq!(
            per_attempt(Duration::from_millis(500)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_broker_port_that_cannot_be_one_is_refused_at_once() {
        for ok in ["kafka1:9092", "[::1]:9093", "10.0.0.5:65535"] {
            assert_eq!(check_broker(ok), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1:abc",
            "kafka1:0",
            "kafka1:70000",
            "kafka1:",
            ":9092",
            "[::1]:x",
        ] {
            let e = check_broker(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    /// `shipper tail FILE1 FILE2`, the topic forgotten: refused when the last argument names a file
    /// here (t28 F1: FILE1 was shipped to a topic auto-created as FILE2, and FILE2 not followed).
    #[test]
    fn a_tail_whose_topic_names_a_file_here_is_refused() {
        use clap::Parser as _;
        let tail = |args: &[&str]| {
            let mut all = vec!["shipper", "-b", "127.0.0.1:1", "tail"];
            all.extend_from_slice(args);
            let cli = crate::cli::Cli::try_parse_from(all).unwrap();
            let crate::cli::Command::Tail(t) = &cli.command else {
                panic!("not tail")
            };
            tail::TailSettings::from_flags(&cli.common, t).map(|_| ())
        };
        // The tests run in the crate's directory, where Cargo.toml is a file.
        let e = tail(&["README.md", "Cargo.toml"]).unwrap_err().to_string();
        assert!(
            e.contains("'Cargo.toml' is a file here") && e.contains("forget the topic"),
            "{e}"
        );
        let e = tail(&["README.md", "src"]).unwrap_err().to_string();
        assert!(e.contains("'src' is a directory here"), "{e}");
        let e = tail(&["README.md", "/etc/hosts"]).unwrap_err().to_string();
        assert!(e.contains("(the last argument is the topic)"), "{e}");
        assert!(tail(&["README.md", "app-logs"]).is_ok());
    }

    #[test]
    fn a_broker_without_a_port_gets_kafka_s_and_a_pattern_is_not_a_topic() {
        assert_eq!(with_default_port("kafka1".into()), "kafka1:9092");
        assert_eq!(with_default_port("kafka1:9093".into()), "kafka1:9093");
        assert_eq!(with_default_port("[::1]".into()), "[::1]:9092");
        assert_eq!(with_default_port("[::1]:9093".into()), "[::1]:9093");
        // As Java's and kcat's configs write them (t28 F3).
        assert_eq!(with_default_port("::1".into()), "[::1]:9092");
        assert_eq!(with_default_port("fd00::5".into()), "[fd00::5]:9092");
        for (given, taken) in [
            ("PLAINTEXT://k:9093", "k:9093"),
            ("SASL_SSL://k", "k:9092"),
            ("ssl://[::1]:9094", "[::1]:9094"),
        ] {
            assert_eq!(with_default_port(given.into()), taken);
        }
        // Five digits are no IPv6 group: a port. Four are read as a group (warned).
        assert_eq!(with_default_port("::1:19092".into()), "[::1]:19092");
        assert_eq!(
            with_default_port("fd00::5:9092".into()),
            "[fd00::5:9092]:9092"
        );
        // An unclosed bracket is refused as written (t29 F8: shown as '[::1:9092').
        assert_eq!(with_default_port("[::1".into()), "[::1");
        let e = check_broker(&with_default_port("[::1".into())).unwrap_err();
        assert_eq!(
            e,
            "broker address '[::1' has no closing ']' (an IPv6 address is written [::1]:9092)"
        );
        let e = check_broker(&with_default_port("[::1]x".into())).unwrap_err();
        assert!(
            e.starts_with("broker address '[::1]x': after an IPv6"),
            "{e}"
        );
        assert!(check_broker("[::1]:9093").is_ok());
        for zoned in ["fe80::1%eth0", "[fe80::1%eth0]:9092", "fe80::1%2"] {
            let e = check_broker(&with_default_port(zoned.into())).unwrap_err();
            assert!(e.contains("zone ids"), "{zoned}: {e}");
        }
        assert!(check_broker("[::1]:").is_err());
        let e = check_topic_arg("^logs-.*").unwrap_err().to_string();
        assert!(e.contains("not patterns"), "{e}");
        let e = check_topic_arg("app logs").unwrap_err().to_string();
        assert!(
            e.contains("is not a topic name") && !e.contains("pattern"),
            "{e}"
        );
        let e = check_topic_arg("logs-{file_stem}").unwrap_err().to_string();
        assert!(e.contains("is for an input of a --config file"), "{e}");
        assert!(check_topic_arg("app-logs.v2_x").is_ok());
        // Internal topics may be read, never written.
        assert!(check_topic_arg("__consumer_offsets").is_ok());
        for t in ["__consumer_offsets", "__transaction_state"] {
            let e = check_topic_to_write(t).unwrap_err().to_string();
            assert!(e.contains("one of Kafka's internal topics"), "{e}");
        }
        assert!(check_topic_to_write("__consumer_offsets2").is_ok());
    }
}

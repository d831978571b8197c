//! Command-line flags (clap types only). [`crate::settings`] resolves them into the settings the
//! library takes; the core never sees clap. Choices are typed, so a bad value is a usage error (exit 2)
//! at parse time and `--help` lists the choices.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The largest `produce --max-line-bytes`: a line is one record, and no batch is larger than
/// --max-message-bytes' own limit (64 MiB). (`tail` lowers a larger one to what --max-message-bytes
/// lets a record carry, and says so.)
pub const MAX_LINE_BYTES: u64 = 64 << 20;

/// The largest --buffer-bytes / buffer_bytes: 1 GiB (lines read and not yet acknowledged are held in
/// memory; more buys nothing, and a typo's terabytes would grow until the machine ran out).
pub const MAX_BUFFER_BYTES: u64 = 1 << 30;

/// A number of at least `min`, without an upper bound to print (clap's ranges name u64's maximum).
fn at_least(min: u64) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s| match s.parse::<u64>() {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The longest --linger-ms / linger_ms: 15 minutes (longer is a typo, and a timer that far away
/// overflowed the clock).
pub const MAX_LINGER_MS: u64 = 900_000;

/// The longest interval of --scan-ms and --checkpoint-ms (and their keys): one hour (a rescan or a
/// checkpoint further apart is a typo, and years overflowed the clock).
pub const MAX_INTERVAL_MS: u64 = 3_600_000;

/// The longest --shutdown-timeout-ms / shutdown_timeout_ms: one day (a unit's `TimeoutStopSec=` of
/// hours fits; a second signal ends the wait at any time).
pub const MAX_SHUTDOWN_MS: u64 = 86_400_000;

/// The longest --stats interval, in seconds: one day.
pub const MAX_STATS_SECS: u64 = 86_400;

/// A Kafka-native log shipper and command-line Kafka client.
#[derive(Debug, Parser)]
#[command(
    name = "shipper",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SHIPPER_COMMIT"), ")"),
    about,
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub common: Common,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A `--timeout` value: a duration, or none (`0`: retry forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<Duration>);

/// Parses `30s`, `500ms`, `2m`, `1h` or a bare number of seconds up to 300; `0` means no limit.
pub fn parse_timeout(s: &str) -> Result<Timeout, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}' (try 30s, 500ms, 2m, or 0 for no limit)"))?;
    // A bare 5000 is more likely milliseconds, as the `-ms` options and Kafka's own settings
    // count, than 83 minutes (t28 F2: waited that long, unsaid): a unit is asked for.
    if unit == "s" && num.len() == s.len() && n > 300.0 {
        return Err(format!(
            "'{s}' has no unit, and {s} seconds is {:.0} minutes: give one (e.g. {s}ms or {s}s)",
            n / 60.0
        ));
    }
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in '{s}' (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("duration '{s}' is out of range"));
    }
    Ok(Timeout((secs > 0.0).then(|| Duration::from_secs_f64(secs))))
}

/// Options shared by all commands.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Bootstrap brokers, host:port[,host:port...] [default: 127.0.0.1:9092]
    #[arg(short = 'b', long, global = true, env = "SHIPPER_BROKERS")]
    pub brokers: Option<String>,
    /// Client id sent to the brokers
    #[arg(long, global = true, default_value = "shipper")]
    pub client_id: String,
    /// How long to keep retrying an unreachable cluster or leaderless partition (e.g. 30s, 2m, 0 = forever)
    /// [default: 30s; forever for tail]
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Timeout>,
    /// Only print errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail on stderr: retries, leader changes, rotations, files opened and closed
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How to reach the brokers [default: plaintext; sasl_* with SASL settings, *ssl with TLS files]
    #[arg(long, global = true, value_enum, help_heading = "Security")]
    pub security_protocol: Option<SecurityProtocolArg>,
    /// SASL mechanism [default: PLAIN]
    #[arg(long, global = true, value_enum, help_heading = "Security")]
    pub sasl_mechanism: Option<MechanismArg>,
    /// SASL user name
    #[arg(long, global = true, value_name = "USER", help_heading = "Security", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub sasl_username: Option<String>,
    /// File whose first line is the SASL password (or set SHIPPER_SASL_PASSWORD)
    #[arg(long, global = true, value_name = "FILE", help_heading = "Security")]
    pub sasl_password_file: Option<std::path::PathBuf>,
    /// PEM file of CA certificates to trust [default: the system's, else built-in roots]
    #[arg(long, global = true, value_name = "FILE", help_heading = "Security")]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate (mutual TLS)
    #[arg(long, global = true, value_name = "FILE", help_heading = "Security")]
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key of the client certificate
    #[arg(long, global = true, value_name = "FILE", help_heading = "Security")]
    pub key_file: Option<std::path::PathBuf>,
    /// Do not verify the broker's certificate (encrypted, not authenticated; warned at every start)
    #[arg(long, global = true, help_heading = "Security")]
    pub tls_insecure: bool,
    /// A client setting by its librdkafka/Java name, e.g. -X security.protocol=SASL_SSL (repeatable):
    /// security.protocol, sasl.mechanism(s), sasl.username, sasl.password, sasl.jaas.config,
    /// ssl.ca.location, ssl.certificate.location, ssl.key.location,
    /// enable.ssl.certificate.verification, ssl.endpoint.identification.algorithm,
    /// bootstrap.servers, metadata.broker.list; for consume isolation.level
    #[arg(
        short = 'X',
        global = true,
        value_name = "KEY=VALUE",
        help_heading = "Security"
    )]
    pub properties: Vec<String>,
    /// A properties file with those settings (as kcat -F or a Java client.properties)
    #[arg(
        short = 'F',
        global = true,
        value_name = "FILE",
        help_heading = "Security"
    )]
    pub config_file: Option<std::path::PathBuf>,
}

/// `--security-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecurityProtocolArg {
    /// No TLS, no SASL
    #[value(name = "plaintext", alias = "PLAINTEXT")]
    Plaintext,
    /// TLS
    #[value(name = "ssl", alias = "SSL")]
    Ssl,
    /// SASL without TLS
    #[value(
        name = "sasl_plaintext",
        alias = "SASL_PLAINTEXT",
        alias = "sasl-plaintext"
    )]
    SaslPlaintext,
    /// SASL over TLS
    #[value(name = "sasl_ssl", alias = "SASL_SSL", alias = "sasl-ssl")]
    SaslSsl,
}

/// `--sasl-mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MechanismArg {
    /// User and password (use with TLS)
    #[value(name = "PLAIN", alias = "plain")]
    Plain,
    /// SCRAM with SHA-256
    #[value(name = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    /// SCRAM with SHA-512
    #[value(name = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send lines from stdin (or a file) to a topic, one record per line
    #[command(after_help = "Examples:\n  \
        printf 'hello\\nworld\\n' | shipper produce app-logs\n  \
        shipper produce app-logs --key key --acks all --print-offsets < lines.txt\n  \
        shipper produce app-logs --key-separator : -H source=web --compression zstd --file data.txt")]
    Produce(ProduceArgs),
    /// Print a topic's records, like kcat -C / kafka-console-consumer
    #[command(after_help = "Examples:\n  \
        shipper consume app-logs --from-beginning -e\n  \
        shipper consume app-logs -o -10 -p 0 -f '%p:%o %k=%s\\n'\n  \
        shipper consume app-logs -o s@1700000000000 -J | jq .\n  \
        shipper consume app-logs nginx -G indexer --from-beginning")]
    Consume(ConsumeArgs),
    /// Follow log files and ship every new line to a topic
    #[command(after_help = "Examples:\n  \
        shipper tail /var/log/app/app.log app-logs\n  \
        shipper tail '/var/log/app/*.log' '/var/log/nginx/*.log' app-logs --stats 10\n  \
        shipper tail '/var/log/*.log' logs --path-header source --compression zstd --checkpoint /var/lib/shipper/logs.ckpt\n  \
        shipper tail --config /etc/shipper/agent.toml --metrics-listen 127.0.0.1:9898\n\n\
        A config file has Kafka settings at the top and any number of [[input]]s (paths, exclude, topic\n\
        and key templates with {file_name} {file_stem} {dir} {path} {hostname}, headers, multiline);\n\
        check one with `shipper check-config FILE`. The README's agent section has a full example.",
        // One topic, last; several topics take a --config file. (Clap's own rendering of PATH... TOPIC
        // with num_args 2.. repeated the group, as if several groups were accepted.)
        override_usage = "shipper tail [OPTIONS] PATH... TOPIC\n       shipper tail [OPTIONS] --config FILE")]
    Tail(TailArgs),
    /// Check a tail config file: every mistake with its line, then the inputs and the files they match now
    #[command(
        name = "check-config",
        after_help = "Examples:\n  shipper check-config /etc/shipper/agent.toml"
    )]
    CheckConfig(CheckConfigArgs),
    /// Show brokers, topics and partitions, like kcat -L
    #[command(after_help = "Examples:\n  shipper metadata\n  shipper metadata app-logs -J")]
    Metadata(MetadataArgs),
    /// Serve a web page that shows topics live (and /api/records for scripts)
    #[command(after_help = "Examples:\n  \
        shipper web app-logs nginx                       # then open http://127.0.0.1:8080/\n  \
        SHIPPER_WEB_TOKEN=s3cret shipper web app-logs --listen 0.0.0.0:8080\n  \
        curl 'http://127.0.0.1:8080/api/records?topic=app-logs&from=-10&limit=50'")]
    Web(WebArgs),
    /// Show consumer groups: members, assigned partitions, committed offsets and lag
    #[command(
        after_help = "Examples:\n  shipper groups\n  shipper groups indexer\n  shipper groups indexer -J"
    )]
    Groups(GroupsArgs),
}

/// `--acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// All in-sync replicas (-1)
    #[value(name = "all", alias = "-1")]
    All,
    /// The leader only
    #[value(name = "1")]
    Leader,
    /// No acknowledgement at all
    #[value(name = "0")]
    None,
}

/// `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// No compression
    None,
    /// gzip (deflate)
    Gzip,
    /// Snappy
    Snappy,
    /// LZ4
    Lz4,
    /// Zstandard
    Zstd,
}

/// `--partitioner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PartitionerArg {
    /// Keyed records by murmur2 of the key, keyless ones sticky
    Default,
    /// One random partition per batch for every record
    Sticky,
    /// A random partition per record (small batches)
    Random,
    /// murmur2 of the key; keyless records sticky
    Murmur2,
}

/// Producer options shared by `produce` and `tail`.
#[derive(Debug, Args, Clone)]
pub struct ProducerFlags {
    /// Acknowledgements
    #[arg(
        long,
        value_enum,
        default_value = "all",
        ignore_case = true,
        allow_negative_numbers = true
    )]
    pub acks: AcksArg,
    /// Batch compression
    #[arg(long, value_enum, default_value = "none")]
    pub compression: CompressionArg,
    /// Compression level (gzip 1-9, zstd 1-22)
    #[arg(long)]
    pub compression_level: Option<i32>,
    /// How long a batch waits for more records, in ms
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=MAX_LINGER_MS))]
    pub linger_ms: u64,
    /// Largest batch in bytes (before compression)
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub batch_bytes: u64,
    /// Largest record batch sent, in bytes: Kafka's default max.message.bytes; raise it (with
    /// --max-line-bytes) for a topic that takes larger records
    #[arg(long, default_value_t = 1_048_588, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_message_bytes: u64,
    /// Produce requests in flight per broker
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub max_in_flight: u64,
    /// How records find their partition (produce: unless --partition names one)
    #[arg(long, value_enum, default_value = "default")]
    pub partitioner: PartitionerArg,
    /// Turn off idempotent produce (on by default with --acks all: retries then never duplicate)
    #[arg(long)]
    pub no_idempotence: bool,
    /// Record header key=value (repeatable); a key alone gives a null value, as in kcat
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = clap::value_parser!(std::ffi::OsString))]
    pub headers: Vec<std::ffi::OsString>,
}

/// `shipper produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to
    pub topic: String,
    /// Read lines from this file instead of stdin (`-`: stdin)
    #[arg(long, value_name = "PATH")]
    pub file: Option<std::path::PathBuf>,
    /// Fixed key for every record (its bytes as given: not UTF-8 is taken too)
    #[arg(long, conflicts_with = "key_separator")]
    pub key: Option<std::ffi::OsString>,
    /// Split each line at the first SEP into key and value (escapes as in kcat's -K: \t, \xNN)
    #[arg(long, value_name = "SEP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub key_separator: Option<String>,
    /// Write every record to this partition
    #[arg(short = 'p', long, value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Send an empty value (and an empty key before --key-separator) as null, as kcat's -Z: `id42:`
    /// with --key-separator : is a tombstone, deleting key id42 from a compacted topic
    #[arg(short = 'Z', long)]
    pub null_empty: bool,
    /// One record per round trip, waiting for each acknowledgement (like a synchronous producer)
    #[arg(long)]
    pub sync: bool,
    /// Print "partition P offset O line N" for each record written (in acknowledgement order;
    /// N is its line of the input, from 1)
    #[arg(long)]
    pub print_offsets: bool,
    /// Lines longer than this are truncated to it (and counted)
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=MAX_LINE_BYTES))]
    pub max_line_bytes: u64,
    /// Batching, acks, compression.
    #[command(flatten)]
    pub producer: ProducerFlags,
}

/// `shipper consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topics to read
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Read as a member of this consumer group: only the partitions the group assigns, starting from
    /// its committed offsets (else from -o's rule, default end), committing what was printed
    #[arg(short = 'G', long, value_name = "GROUP", conflicts_with = "partitions", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub group: Option<String>,
    /// With -G: commit nothing (read from the committed offsets, leave them as they are)
    #[arg(long, requires = "group", conflicts_with = "commit")]
    pub no_commit: bool,
    /// With -G: when to commit: async (every --commit-interval, and when partitions are given back
    /// and on exit) or sync (after every batch of records written, waiting for the broker)
    #[arg(long, value_enum, default_value_t = CommitMode::Async, requires = "group")]
    pub commit: CommitMode,
    /// With -G: how often to commit in async mode, in ms (100 to 3600000)
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=MAX_INTERVAL_MS), requires = "group")]
    pub commit_interval_ms: u64,
    /// With -G: the group protocol (auto: the consumer protocol of KIP-848 when the broker offers it)
    #[arg(long, value_enum, default_value_t = crate::group::GroupProtocol::Auto, requires = "group")]
    pub group_protocol: crate::group::GroupProtocol,
    /// With -G and the classic protocol: the session timeout, in ms
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1000..=3_600_000), requires = "group")]
    pub session_timeout_ms: u64,
    /// Start at the beginning (same as -o beginning)
    #[arg(long)]
    pub from_beginning: bool,
    /// Start offset: beginning, end, N (absolute), -N (N before the end), s@TIMESTAMP_MS; given a
    /// second time, e@TIMESTAMP_MS: stop each partition at its first record of that time or later
    /// (as kcat: -o s@T1 -o e@T2 prints a time window)
    #[arg(short, long, allow_hyphen_values = true)]
    pub offset: Vec<String>,
    /// Only this partition (repeatable)
    #[arg(short, long = "partition", value_parser = clap::value_parser!(i32).range(0..))]
    pub partitions: Vec<i32>,
    /// Exit after this many records (0: no limit, as in kcat)
    #[arg(short = 'c', long, allow_negative_numbers = true)]
    pub max_messages: Option<u64>,
    /// Exit when every partition reached the end it had at start
    #[arg(short, long)]
    pub exit_at_end: bool,
    /// Exit after this long without a record, in ms (counted from the first answer)
    #[arg(long, value_parser = at_least(1))]
    pub timeout_ms: Option<u64>,
    /// read_committed (kcat's default) leaves out aborted transactions and reads only up to the last
    /// stable offset; read_uncommitted (the Java console consumer's) shows every record [default:
    /// read_committed, or -X isolation.level]
    #[arg(long, value_enum)]
    pub isolation_level: Option<Isolation>,
    /// Output format with kcat's tokens: %t topic %p partition %o offset %k key %s value %S value size
    /// %R value size as 4 bytes big-endian %K key size %T timestamp %h headers %% a percent sign;
    /// escapes \n \t \r \0 \\ \xNN
    #[arg(short, long, conflicts_with = "json")]
    pub format: Option<String>,
    /// One JSON object per record
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// `consume --isolation-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Isolation {
    /// Committed records only: no aborted transactions, nothing past an open one.
    #[value(name = "read_committed")]
    ReadCommitted,
    /// Every record, as written.
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
}

/// `consume -G --commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CommitMode {
    /// At an interval, when partitions are given back, and on exit.
    Async,
    /// After every batch of records written, waiting for the broker's answer.
    Sync,
}

/// `shipper groups`.
#[derive(Debug, Args)]
pub struct GroupsArgs {
    /// The group to describe (members, assignments, committed offsets and lag); all groups when absent
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub group: Option<String>,
    /// JSON output
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// `shipper web`.
#[derive(Debug, Args)]
pub struct WebArgs {
    /// Topics the page may show (only these)
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Address to serve on; anything but loopback also needs --token/--token-file or --no-auth
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// Require this token on every request (masked in `ps` once shipper runs, but visible until then
    /// and in shell history: prefer --token-file or SHIPPER_WEB_TOKEN)
    #[arg(long, value_name = "T", conflicts_with_all = ["token_file", "no_auth"], hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from this file (first line)
    #[arg(long, value_name = "FILE", conflicts_with = "no_auth")]
    pub token_file: Option<std::path::PathBuf>,
    /// Serve a non-loopback address without a token (anyone who can reach it reads the topics)
    #[arg(long)]
    pub no_auth: bool,
}

/// `shipper metadata`.
#[derive(Debug, Args)]
pub struct MetadataArgs {
    /// Only this topic
    pub topic: Option<String>,
    /// JSON output
    #[arg(short = 'J', long)]
    pub json: bool,
}

/// `shipper check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The config file
    pub file: std::path::PathBuf,
}

/// `shipper tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Files or quoted globs to follow, then the topic: PATH... TOPIC (or --config)
    #[arg(required_unless_present = "config", num_args = 1.., value_name = "PATH... TOPIC")]
    pub paths_and_topic: Vec<String>,
    /// Run from a TOML config file with any number of inputs (see the README's agent section);
    /// SIGHUP reloads it
    #[arg(long, value_name = "FILE", conflicts_with = "paths_and_topic")]
    pub config: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics and health on /healthz (e.g. 127.0.0.1:9898)
    #[arg(long, value_name = "ADDR", value_parser = crate::settings::parse_listen)]
    pub metrics_listen: Option<String>,
    /// Where to keep the acknowledged offsets [default: tail-TOPIC.checkpoint in $STATE_DIRECTORY,
    /// else $XDG_STATE_HOME/shipper, else ~/.local/state/shipper]
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<std::path::PathBuf>,
    /// Skip what files hold at the first start (files the checkpoint knows still resume)
    #[arg(long)]
    pub from_end: bool,
    /// Lines longer than this are truncated to it (and counted)
    #[arg(long, default_value_t = 1_000_000, value_parser = at_least(1))]
    pub max_line_bytes: u64,
    /// Print a stats line to stderr every N seconds
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=MAX_STATS_SECS))]
    pub stats: Option<u64>,
    /// Put the source file path in a record header with this name
    #[arg(long, value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub path_header: Option<String>,
    /// Record key for each line, a template: {path}, {file_name}, {file_stem}, {dir}, {hostname}
    /// (--key '{path}' keeps each file's lines in one partition, in order)
    #[arg(long, value_name = "TEMPLATE")]
    pub key: Option<String>,
    /// Rescan the paths this often, in ms, where file events cannot be trusted (a directory that
    /// cannot be watched, or on NFS/SMB/FUSE); with events, every 60 times this as a safety net
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=MAX_INTERVAL_MS))]
    pub scan_ms: u64,
    /// Bytes read and not yet acknowledged before reading pauses (the file is the buffer)
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(65536..=MAX_BUFFER_BYTES))]
    pub buffer_bytes: u64,
    /// Write the checkpoint this often (when it changed), in ms: after a crash at most this much of
    /// acknowledged lines is sent again
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=MAX_INTERVAL_MS))]
    pub checkpoint_ms: u64,
    /// At shutdown, how long to wait for in-flight lines to be acknowledged, in ms
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=MAX_SHUTDOWN_MS))]
    pub shutdown_timeout_ms: u64,
    /// Follow symbolic links (only to regular files under the pattern's directory or a --symlink-root)
    #[arg(long)]
    pub follow_symlinks: bool,
    /// With --follow-symlinks, another directory links may point into (repeatable)
    #[arg(long, value_name = "DIR", requires = "follow_symlinks")]
    pub symlink_root: Vec<std::path::PathBuf>,
    /// Only follow files owned by these users (names or uids; repeatable or comma-separated)
    #[arg(long, value_name = "USER")]
    pub owner: Vec<String>,
    /// Leave out files matching this glob (repeatable): a file name ('*.1'), or a path ('/var/log/app/debug*')
    #[arg(long, value_name = "GLOB", conflicts_with = "config")]
    pub exclude: Vec<String>,
    /// Append records Kafka refuses for good (too large, invalid) to this file, as JSON lines
    #[arg(long, value_name = "PATH")]
    pub dead_letter: Option<std::path::PathBuf>,
    /// Ship every line exactly once across crashes (kill -9, OOM, power loss), a lost or older
    /// checkpoint, broker failover: each file goes to one partition, records carry their file
    /// position (header shipper.pos where needed), and a restart reads back what Kafka holds before
    /// sending. Needs --acks all, idempotence, and read access to the topic. Not kept: a file rewritten
    /// or copytruncated while shipper is down; with the checkpoint lost, a file renamed meanwhile to a
    /// name no pattern matches; two hosts with the same host name writing one topic (see the README).
    #[arg(long)]
    pub exactly_once: bool,
    /// Batching, acks, compression.
    #[command(flatten)]
    pub producer: ProducerFlags,
}

impl Cli {
    /// Parses the command line, exiting with clap's message (code 2) on a mistake. `tail --config`
    /// refuses the tail flags the file sets (a flag silently ignored would surprise); `-b`, the
    /// security options and `--metrics-listen` still override the file.
    pub fn parse_checked() -> Cli {
        use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        if let Some(key) = secret_without_equals(&args) {
            // Before clap, which would print the password as an unexpected argument.
            crate::log::error(format_args!(
                "-X {key}: expected key=value (-X {key}=VALUE); the word after it was not shown"
            ));
            std::process::exit(2);
        }
        let mut cmd = Cli::command();
        let m = match cmd.try_get_matches_from_mut(&args) {
            Ok(m) => m,
            Err(e) => {
                // kcat's letters: clap's tip (`use -- -K`) would make the flag a topic name.
                if e.kind() == clap::error::ErrorKind::UnknownArgument {
                    if let Some(hint) = kcat_habit(&args) {
                        crate::log::error(format_args!("{hint}"));
                        std::process::exit(2);
                    }
                }
                exit_usage(e)
            }
        };
        if let Some(("tail", t)) = m.subcommand() {
            if t.value_source("config") == Some(ValueSource::CommandLine) {
                let tail = cmd.find_subcommand("tail");
                let given = tail.into_iter().flat_map(|c| c.get_arguments()).find(|a| {
                    let id = a.get_id().as_str();
                    !a.is_global_set()
                        && !matches!(id, "config" | "metrics_listen")
                        && t.value_source(id) == Some(ValueSource::CommandLine)
                });
                if let Some(a) = given {
                    let flag = a
                        .get_long()
                        .map_or_else(|| a.get_id().as_str().to_string(), |l| format!("--{l}"));
                    let e = cmd.error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "{flag} cannot be combined with --config: set it in the config file"
                        ),
                    );
                    exit_usage(e);
                }
            }
        }
        let mut cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| exit_usage(e));
        cli.common.properties = all_properties(&args, &m);
        cli
    }
}

/// Every `-X`, before and after the subcommand, in order. Clap keeps only the subcommand's values of
/// a global option given on both sides: `-X security.protocol=SASL_SSL -X ssl.ca.location=ca.pem
/// metadata -X sasl.username=u` dropped the first two, and the password went out without TLS
/// (probe D). The values before the subcommand are read again from the words before it: the first
/// word naming the subcommand where those words parse alone (a word that is an option's value, as
/// in `--client-id tail tail ...`, leaves that option without one, and does not parse).
fn all_properties(args: &[std::ffi::OsString], m: &clap::ArgMatches) -> Vec<String> {
    use clap::CommandFactory;
    let values = |m: &clap::ArgMatches| -> Vec<String> {
        m.get_many::<String>("properties")
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    };
    let last = values(m);
    let Some(name) = m.subcommand_name() else {
        return last;
    };
    let before = args.iter().enumerate().skip(1).find_map(|(i, a)| {
        if a.to_str() != Some(name) {
            return None;
        }
        let cmd = Cli::command()
            .subcommand_required(false)
            .arg_required_else_help(false);
        cmd.try_get_matches_from(&args[..i])
            .ok()
            .map(|p| values(&p))
    });
    match before {
        // Without -X after the subcommand clap gives the ones before it (and with the same ones
        // after it, once is enough).
        Some(before) if before != last => before.into_iter().chain(last).collect(),
        _ => last,
    }
}

/// Ends the run at a usage error of clap's, its first line prefixed `shipper: ` like every other
/// error (scripts that scan for it see one format); help and version are printed as clap prints them.
fn exit_usage(e: clap::Error) -> ! {
    if !e.use_stderr() {
        e.exit()
    }
    let text = one_line(&e.render().to_string());
    let _ = writeln!(std::io::stderr().lock(), "shipper: {text}");
    std::process::exit(e.exit_code())
}

/// clap's error as one line, as every other error is (a journal or `grep` sees all of it): the
/// lines that go on the first (the arguments missing) are joined to it, its usage line follows in
/// parentheses; its tip and its pointer to --help are left out (`--help` is where they point).
fn one_line(text: &str) -> String {
    let mut out = String::new();
    let mut usage = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(u) = l.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
        } else if l.is_empty() || l.starts_with("tip:") || l.starts_with("For more information") {
            continue;
        } else if out.is_empty() {
            out.push_str(l);
        } else if usage.is_none() {
            out.push(' ');
            out.push_str(l);
        }
    }
    if let Some(u) = usage {
        out.push_str(&format!(" (usage: {u})"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_settings_before_and_after_the_subcommand_are_all_kept() {
        use clap::CommandFactory;
        let all = |a: &[&str]| {
            let args: Vec<std::ffi::OsString> = a.iter().map(Into::into).collect();
            let m = Cli::command().try_get_matches_from(&args).unwrap();
            all_properties(&args, &m)
        };
        let both = all(&["shipper", "-X", "a=1", "-Xb=2", "metadata", "-X", "c=3"]);
        assert_eq!(both, ["a=1", "b=2", "c=3"]);
        assert_eq!(all(&["shipper", "-X", "a=1", "metadata"]), ["a=1"]);
        assert_eq!(all(&["shipper", "metadata", "-X", "c=3"]), ["c=3"]);
        assert_eq!(
            all(&["shipper", "-X", "a=1", "metadata", "-X", "a=1"]),
            ["a=1"]
        );
        // A value that names the subcommand is not taken for it.
        let named = all(&[
            "shipper",
            "-X",
            "a=1",
            "--client-id",
            "metadata",
            "metadata",
            "-X",
            "c=3",
        ]);
        assert_eq!(named, ["a=1", "c=3"]);
        let consume = all(&["shipper", "-X", "a=1", "consume", "t", "-X", "c=3", "-e"]);
        assert_eq!(consume, ["a=1", "c=3"]);
    }

    #[test]
    fn usage_errors_are_one_line_and_name_no_machine_limits() {
        let e = |args: &[&str]| {
            let err = Cli::try_parse_from(args).unwrap_err();
            one_line(&err.render().to_string())
        };
        let missing = e(&["shipper", "consume"]);
        assert_eq!(
            missing,
            "error: the following required arguments were not provided: <TOPIC>... (usage: shipper consume <TOPIC>...)"
        );
        let unknown = e(&["shipper", "produce", "--bogus", "t"]);
        assert!(
            unknown
                .starts_with("error: unexpected argument '--bogus' found (usage: shipper produce"),
            "{unknown}"
        );
        let zero = e(&["shipper", "tail", "--max-line-bytes", "0", "a", "t"]);
        assert!(
            zero.ends_with("'0' for '--max-line-bytes <MAX_LINE_BYTES>': must be at least 1"),
            "{zero}"
        );
        let huge = e(&[
            "shipper",
            "tail",
            "--buffer-bytes",
            "2000000000000",
            "a",
            "t",
        ]);
        assert!(huge.contains("not in 65536..=1073741824"), "{huge}");
        for (what, args) in [
            ("-G ''", &["shipper", "consume", "t", "-G", ""][..]),
            ("groups ''", &["shipper", "groups", ""]),
            (
                "--sasl-username ''",
                &["shipper", "--sasl-username", "", "metadata"],
            ),
        ] {
            let err = e(args);
            assert!(
                err.contains("a value is required") || err.contains("empty"),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn timeouts_parse_with_units_and_zero_means_forever() {
        assert_eq!(
            parse_timeout("30s"),
            Ok(Timeout(Some(Duration::from_secs(30))))
        );
        assert_eq!(
            parse_timeout("500ms"),
            Ok(Timeout(Some(Duration::from_millis(500))))
        );
        assert_eq!(
            parse_timeout("2m"),
            Ok(Timeout(Some(Duration::from_secs(120))))
        );
        assert_eq!(parse_timeout("0"), Ok(Timeout(None)));
        assert!(parse_timeout("soon").is_err());
        // A bare number is seconds, and one over 300 asks for a unit (t28 F2; t29: 999 passed as
        // 16 minutes).
        assert_eq!(
            parse_timeout("45"),
            Ok(Timeout(Some(Duration::from_secs(45))))
        );
        let e = parse_timeout("5000").unwrap_err();
        assert!(e.contains("5000ms or 5000s"), "{e}");
        assert!(parse_timeout("500").is_err());
        assert!(parse_timeout("300").is_ok());
        assert_eq!(
            parse_timeout("5000ms"),
            Ok(Timeout(Some(Duration::from_secs(5))))
        );
        assert_eq!(
            parse_timeout("3600s"),
            Ok(Timeout(Some(Duration::from_secs(3600))))
        );
        assert!(parse_timeout("3d").is_err());
    }

    #[test]
    fn an_empty_key_separator_is_a_usage_error() {
        let e =
            Cli::try_parse_from(["shipper", "produce", "t", "--key-separator", ""]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(Cli::try_parse_from(["shipper", "produce", "t", "--key-separator", "::"]).is_ok());
    }

    #[test]
    fn kcat_letters_and_negative_partitions_get_what_to_type_instead() {
        let args = |a: &[&str]| -> Vec<std::ffi::OsString> {
            std::iter::once("shipper")
                .chain(a.iter().copied())
                .map(Into::into)
                .collect()
        };
        let hint = kcat_habit(&args(&["produce", "t", "-K", ":"])).unwrap();
        assert!(hint.contains("--key-separator"), "{hint}");
        let hint = kcat_habit(&args(&["consume", "t", "-p", "-1"])).unwrap();
        assert!(hint.contains("numbered from 0"), "{hint}");
        // After `--`, or as a value of another word, nothing is judged.
        assert_eq!(kcat_habit(&args(&["produce", "--", "-K"])), None);
        assert_eq!(kcat_habit(&args(&["consume", "t", "-o", "-1"])), None);
        // Attached values, as kcat's own docs write them.
        let hint = kcat_habit(&args(&["produce", "t", "-K:"])).unwrap();
        assert!(hint.contains("--key-separator"), "{hint}");
        let hint = kcat_habit(&args(&["produce", "t", "-zsnappy"])).unwrap();
        assert!(hint.contains("--compression"), "{hint}");
        assert_eq!(kcat_habit(&args(&["consume", "t", "-c5"])), None);
        let hint = kcat_habit(&args(&["consume", "t", "-s", "avro"])).unwrap();
        assert!(hint.contains("does not decode Avro"), "{hint}");
    }

    /// `--acks -1` and `--acks ALL`, as Kafka's clients write them (the config takes both; t28 F4:
    /// `-1` was taken for a flag, and the tip clap gave for it failed too).
    #[test]
    fn acks_take_minus_one_and_any_case() {
        for v in ["-1", "ALL", "all", "All"] {
            let c = Cli::try_parse_from(["shipper", "produce", "t", "--acks", v]).unwrap();
            let Command::Produce(p) = c.command else {
                panic!("not produce")
            };
            assert_eq!(p.producer.acks, AcksArg::All, "{v}");
        }
    }

    /// `--version` names the commit, so that two builds can be told apart (t28 F5).
    #[test]
    fn the_version_names_the_commit() {
        let e = Cli::try_parse_from(["shipper", "--version"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        let text = e.to_string();
        assert!(text.starts_with("shipper 0.1.0 (commit "), "{text}");
        assert!(
            !text.contains("commit unknown"),
            "built from a git checkout: {text}"
        );
    }

    #[test]
    fn a_bad_choice_is_a_usage_error_listing_the_choices() {
        let e = Cli::try_parse_from(["shipper", "produce", "t", "--acks", "foo"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(
            text.contains("all") && text.contains("possible values"),
            "{text}"
        );
    }
}

/// What to type instead of a kcat flag shipper does not have, or of a negative partition (for a
/// command line clap refused: its own tip, `use -- -K`, would make the flag a topic name).
fn kcat_habit(args: &[std::ffi::OsString]) -> Option<String> {
    let words: Vec<&str> = args
        .iter()
        .skip(1)
        .map_while(|a| a.to_str())
        .take_while(|a| *a != "--")
        .collect();
    if let Some(w) = words.windows(2).find(|w| {
        matches!(w[0], "-p" | "--partition") && w[1].starts_with('-') && w[1].parse::<i64>().is_ok()
    }) {
        return Some(format!(
            "{} {}: partitions are numbered from 0 (all of them: leave out -p)",
            w[0], w[1]
        ));
    }
    words.iter().find_map(|w| {
        // kcat's letters take their value attached too (`-K:`, `-zsnappy`), as its docs write them.
        let attached = w.len() > 2 && w.starts_with('-') && !w.starts_with("--");
        let w = match attached && w.is_char_boundary(2) {
            true => &w[..2],
            false => *w,
        };
        let instead = match w {
            "-P" => "'shipper produce TOPIC' writes stdin to a topic",
            "-C" => "'shipper consume TOPIC' reads a topic",
            "-L" => "'shipper metadata' lists brokers and topics",
            "-t" => "the topic is an argument: shipper produce TOPIC, shipper consume TOPIC",
            "-K" => "use --key-separator SEP (produce); consume prints keys with -f '%k\\t%s\\n'",
            "-k" => "use --key KEY (produce)",
            "-z" => "use --compression CODEC",
            "-d" => "use -v (-vv for more)",
            "-D" => "input is split at newlines (a delimiter other than \\n is not offered)",
            "-Z" => "a null value prints as null with -J and as -1 with %S (produce -Z sends empty values as null)",
            "-l" => "use --file FILE (produce)",
            "-u" => "output is written as records arrive (nothing to unbuffer)",
            "-E" => "shipper goes on through what it can retry and stops at what it cannot (no -E)",
            "-s" | "-r" => "values are printed as their bytes: shipper does not decode Avro or ask a schema registry",
            _ => return None,
        };
        Some(format!("shipper has no kcat {w}: {instead}"))
    })
}

/// A secret setting given as `-X sasl.password SECRET` (a blank for the `=`): its key, so that the
/// usage error can name it without printing the word after it, which is the password.
fn secret_without_equals(args: &[std::ffi::OsString]) -> Option<&'static str> {
    const SECRET_KEYS: [&str; 2] = ["sasl.password", "sasl.jaas.config"];
    args.windows(2).find_map(|w| {
        let (flag, value) = (w[0].to_str()?, w[1].to_str()?);
        // `-X KEY`, `-XKEY`, `-X=KEY` (clap takes the `=`), and `-X` among other short flags
        // (`-vX KEY`).
        let shorts = flag.strip_prefix('-').filter(|r| !r.starts_with('-'))?;
        let after = &shorts[shorts.find('X')? + 1..];
        let key = if after.is_empty() { value } else { after };
        let key = key.strip_prefix('=').unwrap_or(key);
        SECRET_KEYS.into_iter().find(|k| key.trim() == *k)
    })
}

#[cfg(test)]
mod secret_argument_tests {
    use super::secret_without_equals;

    #[test]
    fn a_password_given_after_a_blank_instead_of_equals_is_caught_before_clap() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        for bad in [
            &["shipper", "-X", "sasl.password", "pw", "metadata"][..],
            &["shipper", "produce", "t", "-Xsasl.password", "pw"],
            &["shipper", "-X", "sasl.jaas.config", "x"],
            &["shipper", "-X=sasl.password", "pw", "metadata"],
            &["shipper", "-vX", "sasl.password", "pw", "metadata"],
            &["shipper", "-vXsasl.password", "pw", "metadata"],
        ] {
            assert!(secret_without_equals(&args(bad)).is_some(), "{bad:?}");
        }
        for fine in [
            &["shipper", "-X", "sasl.password=pw", "metadata"][..],
            &["shipper", "-X", "sasl.username", "u"],
            &["shipper", "consume", "sasl.password"],
            &["shipper", "-X=sasl.password=pw", "metadata"],
            &["shipper", "--verbose", "sasl.password"],
        ] {
            assert!(secret_without_equals(&args(fine)).is_none(), "{fine:?}");
        }
    }
}

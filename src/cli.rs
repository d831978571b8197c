//! Command-line flags (clap types only). `cmd/` resolves them into settings; the core never sees clap.

use clap::{Args, Parser, Subcommand};

/// A Kafka-native log shipper and command-line Kafka client.
#[derive(Debug, Parser)]
#[command(name = "shipper", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub common: Common,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by all commands.
#[derive(Debug, Args)]
pub struct Common {
    /// Bootstrap brokers, host:port[,host:port...]
    #[arg(
        short = 'b',
        long,
        global = true,
        env = "SHIPPER_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Client id sent to the brokers
    #[arg(long, global = true, default_value = "shipper")]
    pub client_id: String,
    /// How long to keep retrying an unreachable cluster or leaderless partition (e.g. 30s, 2m, 0 = forever)
    #[arg(long, global = true, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Only print errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail on stderr: retries, leader changes, rotations, files opened and closed
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
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
        shipper consume app-logs -o s@1700000000000 -J | jq .")]
    Consume(ConsumeArgs),
    /// Follow log files and ship every new line to a topic
    #[command(after_help = "Examples:\n  \
        shipper tail /var/log/app/app.log app-logs\n  \
        shipper tail '/var/log/app/*.log' '/var/log/nginx/*.log' app-logs --stats 10\n  \
        shipper tail '/var/log/*.log' logs --path-header source --compression zstd --checkpoint /var/lib/shipper/logs.ckpt")]
    Tail(TailArgs),
    /// Show brokers, topics and partitions, like kcat -L
    #[command(after_help = "Examples:\n  shipper metadata\n  shipper metadata app-logs -J")]
    Metadata(MetadataArgs),
}

/// Producer options shared by `produce` and `tail`.
#[derive(Debug, Args, Clone)]
pub struct ProducerFlags {
    /// Acknowledgements: all (-1), 1 (leader only) or 0 (none)
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Batch compression: none, gzip, snappy, lz4, zstd
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Compression level (gzip 1-9, zstd 1-22)
    #[arg(long)]
    pub compression_level: Option<i32>,
    /// How long a batch waits for more records, in ms
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Largest batch in bytes (before compression)
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_bytes: usize,
    /// Produce requests in flight per broker
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Partitioner for records without --partition: default (keys by murmur2, keyless sticky),
    /// sticky, random (per record), murmur2
    #[arg(long, default_value = "default")]
    pub partitioner: String,
    /// Turn off idempotent produce (on by default with --acks all: retries then never duplicate)
    #[arg(long)]
    pub no_idempotence: bool,
    /// Record header key=value (repeatable)
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
}

/// `shipper produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to
    pub topic: String,
    /// Read lines from this file instead of stdin
    #[arg(long, value_name = "PATH")]
    pub file: Option<std::path::PathBuf>,
    /// Fixed key for every record
    #[arg(long, conflicts_with = "key_separator")]
    pub key: Option<String>,
    /// Split each line at the first SEP into key and value
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Write every record to this partition
    #[arg(short = 'p', long)]
    pub partition: Option<i32>,
    /// One record per round trip, waiting for each acknowledgement (like a synchronous producer)
    #[arg(long)]
    pub sync: bool,
    /// Print partition and offset of each record written
    #[arg(long)]
    pub print_offsets: bool,
    /// Batching, acks, compression.
    #[command(flatten)]
    pub producer: ProducerFlags,
}

/// `shipper consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read
    pub topic: String,
    /// Start at the beginning (same as -o beginning)
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start offset: beginning, end, N (absolute), -N (N before the end), s@TIMESTAMP_MS
    #[arg(short, long, allow_hyphen_values = true)]
    pub offset: Option<String>,
    /// Only this partition (repeatable)
    #[arg(short, long = "partition")]
    pub partitions: Vec<i32>,
    /// Exit after this many records
    #[arg(short = 'c', long)]
    pub max_messages: Option<u64>,
    /// Exit when every partition reached the end it had at start
    #[arg(short, long)]
    pub exit_at_end: bool,
    /// Exit after this long without a record, in ms
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Output format with kcat's tokens: %t topic %p partition %o offset %k key %s value %S value size
    /// %K key size %T timestamp %h headers, \n \t escapes
    #[arg(short, long, conflicts_with = "json")]
    pub format: Option<String>,
    /// One JSON object per record
    #[arg(short = 'J', long)]
    pub json: bool,
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

/// `shipper tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Files or quoted globs to follow, then the topic: PATH... TOPIC
    #[arg(required = true, num_args = 2.., value_name = "PATH... TOPIC")]
    pub paths_and_topic: Vec<String>,
    /// Where to keep the acknowledged offsets [default: $XDG_STATE_HOME/shipper/tail-TOPIC.checkpoint]
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<std::path::PathBuf>,
    /// Skip what files hold at the first start (files the checkpoint knows still resume)
    #[arg(long)]
    pub from_end: bool,
    /// Lines longer than this are truncated to it (and counted)
    #[arg(long, default_value_t = 1_000_000)]
    pub max_line_bytes: usize,
    /// Print a stats line to stderr every N seconds
    #[arg(long, value_name = "SECONDS")]
    pub stats: Option<u64>,
    /// Put the source file path in a record header with this name
    #[arg(long, value_name = "NAME")]
    pub path_header: Option<String>,
    /// Rescan the paths this often even without file events, in ms
    #[arg(long, default_value_t = 1000)]
    pub scan_ms: u64,
    /// Bytes read and not yet acknowledged before reading pauses (the file is the buffer)
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub buffer_bytes: usize,
    /// Write the checkpoint this often (when it changed), in ms: after a crash at most this much of
    /// acknowledged lines is sent again
    #[arg(long, default_value_t = 250)]
    pub checkpoint_ms: u64,
    /// At shutdown, how long to wait for in-flight lines to be acknowledged, in ms
    #[arg(long, default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,
    /// Batching, acks, compression.
    #[command(flatten)]
    pub producer: ProducerFlags,
}

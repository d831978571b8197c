//! `shipper produce TOPIC`: stdin (or a file) lines to Kafka, one record per line.

use std::io::Read;
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::cli::{Common, ProduceArgs};
use crate::escape::Esc;
use crate::producer::{timestamp_now_ms, Delivery, OnPermanent, Producer};
use crate::settings::{parse_headers, producer_config, KafkaSettings};
use crate::tail::lines::{LineSplitter, Piece};
use crate::wire::records::Header;

const CHUNK_BYTES: usize = 256 * 1024;

/// Counters of one produce run.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    acked: u64,
    failed: u64,
    truncated: u64,
    errors_shown: u64,
}

/// Chunks read from the input, and a way to hand their buffers back.
struct Chunks {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    /// Read buffers given back for reuse: a fresh 256 KB buffer is a fresh mapping with musl's
    /// allocator, whose pages all fault on the first read into it.
    spent: std::sync::mpsc::SyncSender<Vec<u8>>,
}

/// Reads `input` in chunks on a thread of its own, so a slow or interactive stdin never stalls acks.
fn spawn_reader(mut input: Box<dyn Read + Send>) -> Chunks {
    let (tx, rx) = mpsc::channel(4);
    let (spent, reuse) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    std::thread::spawn(move || loop {
        let mut buf = reuse.try_recv().unwrap_or_default();
        buf.resize(CHUNK_BYTES, 0);
        match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(buf)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    Chunks { rx, spent }
}

/// What every line is sent with.
struct Shape<'a> {
    key: Option<&'a [u8]>,
    key_separator: Option<&'a [u8]>,
    headers: Vec<Header<'a>>,
}

/// The producer, the line splitter and the tallies of one run.
struct Run<'a> {
    producer: Producer,
    shape: Shape<'a>,
    splitter: LineSplitter,
    tally: Tally,
    line_no: u64,
    sync: bool,
    print_offsets: bool,
    deliveries: Vec<Delivery>,
}

impl Run<'_> {
    fn send_line(&mut self, line: &[u8], truncated: bool, ts: i64) {
        self.line_no += 1;
        let (key, value) = match (self.shape.key, self.shape.key_separator) {
            (Some(k), _) => (Some(k), line),
            (None, Some(sep)) => match memchr::memmem::find(line, sep) {
                Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
                None => (None, line),
            },
            (None, None) => (None, line),
        };
        self.tally.sent += 1;
        self.tally.truncated += truncated as u64;
        if let Err(e) =
            self.producer
                .append(0, key, Some(value), &self.shape.headers, ts, self.line_no)
        {
            self.tally.failed += 1;
            crate::log::error(format_args!("line {}: {e}; not sent", self.line_no));
        }
    }

    /// Splits `data` into lines and sends them; returns the offset of an incomplete last line.
    async fn feed(&mut self, data: &[u8], last: bool) -> anyhow::Result<usize> {
        let mut pos = 0;
        loop {
            let ts = timestamp_now_ms();
            let mut sent_one = false;
            let mut splitter = self.splitter.clone();
            let used = splitter.split(&data[pos..], last, |piece| {
                if let Piece::Line {
                    bytes, truncated, ..
                } = piece
                {
                    self.send_line(bytes, truncated, ts);
                    sent_one = true;
                    if self.sync || self.producer.is_full() {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
            self.splitter = splitter;
            pos += used;
            if self.sync && sent_one {
                self.producer.flush(&mut self.deliveries).await?;
                self.report();
            }
            while self.producer.is_full() {
                self.producer.drive(&mut self.deliveries).await?;
                self.report();
            }
            if !sent_one || pos >= data.len() {
                return Ok(pos);
            }
        }
    }

    fn report(&mut self) {
        report(&mut self.deliveries, &mut self.tally, self.print_offsets);
    }
}

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &ProduceArgs) -> anyhow::Result<i32> {
    let headers_owned = parse_headers(&args.producer.headers)?;
    let input: Box<dyn Read + Send> = match &args.file {
        Some(p) => Box::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", Esc::path(p)))?,
        ),
        None => Box::new(std::io::stdin()),
    };
    let producer = start_producer(common, args).await?;
    let mut run = Run {
        producer,
        shape: Shape {
            key: args.key.as_deref().map(str::as_bytes),
            key_separator: args.key_separator.as_deref().map(str::as_bytes),
            headers: headers_owned
                .iter()
                .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                .collect(),
        },
        splitter: LineSplitter::new(args.max_line_bytes as usize),
        tally: Tally::default(),
        line_no: 0,
        sync: args.sync,
        print_offsets: args.print_offsets,
        deliveries: Vec::new(),
    };
    run.ship(spawn_reader(input)).await?;
    run.producer.flush(&mut run.deliveries).await?;
    run.report();
    let t = &run.tally;
    let truncated = if t.truncated > 0 {
        format!(
            ", {} truncated to {} bytes",
            t.truncated, args.max_line_bytes
        )
    } else {
        String::new()
    };
    let summary = format!(
        "topic '{}': {} records sent, {} acked, {} failed{truncated}",
        Esc::str(&args.topic),
        t.sent,
        t.acked,
        t.failed
    );
    if t.failed > 0 || t.acked != t.sent {
        crate::log::error(format_args!("{summary}"));
        return Ok(1);
    }
    crate::log::info(format_args!("{summary}"));
    Ok(0)
}

/// The producer for this run: settings from the flags, the topic's metadata, a producer id.
async fn start_producer(common: &Common, args: &ProduceArgs) -> anyhow::Result<Producer> {
    let mut cfg = producer_config(&args.producer);
    let kafka = KafkaSettings::from_flags(common, Some(Duration::from_secs(30)))?;
    cfg.delivery_timeout = kafka.timeout;
    cfg.on_permanent = OnPermanent::Fail;
    if args.sync {
        cfg.linger = Duration::ZERO;
        cfg.max_in_flight = 1;
    }
    let cluster = kafka.cluster()?;
    let meta = cluster.topic(&args.topic, true).await?;
    if let Some(p) = args.partition {
        if p as usize >= meta.partitions.len() {
            return Err(crate::error::Error::UnknownPartition {
                topic: args.topic.clone(),
                partition: p,
                count: meta.partitions.len(),
            }
            .into());
        }
        cfg.partition = Some(p);
    }
    if args.print_offsets && cfg.acks == 0 {
        crate::log::warn(format_args!(
            "--print-offsets: with --acks 0 the broker reports no offsets"
        ));
    }
    let mut producer = Producer::for_topic(cluster, meta, cfg);
    producer.init().await?;
    Ok(producer)
}

impl Run<'_> {
    /// Ships every line of the input, collecting deliveries as they come.
    async fn ship(&mut self, mut chunks: Chunks) -> anyhow::Result<()> {
        // Only an incomplete line is carried between chunks (at most --max-line-bytes), never a chunk.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            tokio::select! {
                chunk = chunks.rx.recv() => match chunk {
                    Some(Ok(c)) => {
                        self.take_chunk(&c, &mut carry).await?;
                        // Full (the reader has spares) or gone: then the buffer is just freed.
                        let _ = chunks.spent.try_send(c);
                    }
                    Some(Err(e)) => anyhow::bail!("cannot read input: {e}"),
                    None => break,
                },
                r = self.producer.drive(&mut self.deliveries), if !self.producer.is_idle() => {
                    r?;
                    self.report();
                }
            }
        }
        if !carry.is_empty() {
            self.feed(&carry, true).await?;
        }
        Ok(())
    }

    /// Sends the lines of one chunk; the incomplete line at its end goes to `carry`.
    async fn take_chunk(&mut self, chunk: &[u8], carry: &mut Vec<u8>) -> anyhow::Result<()> {
        let mut rest = chunk;
        if !carry.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    carry.extend_from_slice(&rest[..=nl]);
                    let line = std::mem::take(carry);
                    self.feed(&line, false).await?;
                    rest = &rest[nl + 1..];
                }
                None => {
                    carry.extend_from_slice(rest);
                    let line = std::mem::take(carry);
                    let used = self.feed(&line, false).await?;
                    *carry = line[used..].to_vec();
                    return Ok(());
                }
            }
        }
        let used = self.feed(rest, false).await?;
        carry.extend_from_slice(&rest[used..]);
        Ok(())
    }
}

fn report(deliveries: &mut Vec<Delivery>, tally: &mut Tally, print_offsets: bool) {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for d in deliveries.drain(..) {
        let n = d.tokens.len() as u64;
        match d.error {
            Some(e) => {
                tally.failed += n;
                if tally.errors_shown < 5 {
                    crate::log::error(format_args!(
                        "{n} records (lines {}..{}) not written: {e}",
                        d.tokens.first().unwrap_or(&0),
                        d.tokens.last().unwrap_or(&0)
                    ));
                }
                tally.errors_shown += 1;
            }
            None => {
                tally.acked += n;
                if print_offsets && d.base_offset >= 0 {
                    for (i, _) in d.tokens.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "partition {} offset {}",
                            d.partition,
                            d.base_offset + i as i64
                        );
                    }
                }
            }
        }
    }
    let _ = out.flush();
}

//! `shipper produce TOPIC`: stdin (or a file) lines to Kafka, one record per line.

use std::io::Read;

use anyhow::{bail, Context};
use tokio::sync::mpsc;

use crate::cli::{Common, ProduceArgs};
use crate::producer::{timestamp_now_ms, Delivery, Producer};
use crate::wire::records::Header;

const CHUNK_BYTES: usize = 256 * 1024;

/// Counters of one produce run.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    acked: u64,
    failed: u64,
    errors_shown: u64,
}

/// Reads `input` in chunks on a thread of its own, so a slow or interactive stdin never stalls acks.
fn spawn_reader(mut input: Box<dyn Read + Send>) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; CHUNK_BYTES];
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
    rx
}

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &ProduceArgs) -> anyhow::Result<i32> {
    let mut cfg = super::producer_config(&args.producer)?;
    let headers_owned = super::parse_headers(&args.producer.headers)?;
    let cluster = super::cluster(common, Some(std::time::Duration::from_secs(30)))?;
    cfg.delivery_timeout = cluster.options().retry_limit;
    let input: Box<dyn Read + Send> = match &args.file {
        Some(p) => Box::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        ),
        None => Box::new(std::io::stdin()),
    };
    let meta = cluster.topic(&args.topic, true).await?;
    if let Some(p) = args.partition {
        if p < 0 || p as usize >= meta.partitions.len() {
            bail!(
                "topic '{}' has no partition {p} (it has {})",
                args.topic,
                meta.partitions.len()
            );
        }
        cfg.partition = Some(p);
    }
    if args.sync {
        cfg.linger = std::time::Duration::ZERO;
        cfg.max_in_flight = 1;
    }
    if args.print_offsets && cfg.acks == 0 {
        crate::log::warn(format_args!(
            "--print-offsets: with --acks 0 the broker reports no offsets"
        ));
    }
    let headers: Vec<Header<'_>> = headers_owned
        .iter()
        .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
        .collect();
    let mut producer = Producer::new(cluster.clone(), meta, cfg);
    producer.init().await?;
    let mut rx = spawn_reader(input);
    let mut tally = Tally::default();
    let mut deliveries = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut line_no: u64 = 0;
    let mut input_done = false;
    while !input_done {
        while producer.is_full() {
            producer.drive(&mut deliveries).await?;
            report(&mut deliveries, &mut tally, args.print_offsets);
        }
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(Ok(c)) => {
                    let ts = timestamp_now_ms();
                    // Only the partial line carried over from the last chunk is copied, never the chunk.
                    let mut start = 0;
                    if !carry.is_empty() {
                        match memchr::memchr(b'\n', &c) {
                            Some(i) => {
                                carry.extend_from_slice(&c[..i]);
                                line_no += 1;
                                send_line(&mut producer, args, &headers, &carry, ts, line_no, &mut tally);
                                carry.clear();
                                start = i + 1;
                                if args.sync {
                                    producer.flush(&mut deliveries).await?;
                                    report(&mut deliveries, &mut tally, args.print_offsets);
                                }
                            }
                            None => {
                                carry.extend_from_slice(&c);
                                continue;
                            }
                        }
                    }
                    let base = start;
                    for nl in memchr::memchr_iter(b'\n', &c[base..]) {
                        let end = base + nl;
                        line_no += 1;
                        send_line(&mut producer, args, &headers, &c[start..end], ts, line_no, &mut tally);
                        start = end + 1;
                        if args.sync {
                            producer.flush(&mut deliveries).await?;
                            report(&mut deliveries, &mut tally, args.print_offsets);
                        }
                    }
                    carry.extend_from_slice(&c[start..]);
                }
                Some(Err(e)) => bail!("cannot read input: {e}"),
                None => input_done = true,
            },
            r = producer.drive(&mut deliveries), if !producer.is_idle() => {
                r?;
                report(&mut deliveries, &mut tally, args.print_offsets);
            }
        }
    }
    if !carry.is_empty() {
        line_no += 1;
        let ts = timestamp_now_ms();
        send_line(
            &mut producer,
            args,
            &headers,
            &carry,
            ts,
            line_no,
            &mut tally,
        );
    }
    producer.flush(&mut deliveries).await?;
    report(&mut deliveries, &mut tally, args.print_offsets);
    let summary = format!(
        "topic '{}': {} records sent, {} acked, {} failed",
        args.topic, tally.sent, tally.acked, tally.failed
    );
    if tally.failed > 0 || tally.acked != tally.sent {
        crate::log::error(format_args!("{summary}"));
        return Ok(1);
    }
    crate::log::info(format_args!("{summary}"));
    Ok(0)
}

fn send_line(
    producer: &mut Producer,
    args: &ProduceArgs,
    headers: &[Header<'_>],
    line: &[u8],
    ts: i64,
    line_no: u64,
    tally: &mut Tally,
) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (key, value) = match (&args.key, &args.key_separator) {
        (Some(k), _) => (Some(k.as_bytes()), line),
        (None, Some(sep)) => match memchr::memmem::find(line, sep.as_bytes()) {
            Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
            None => (None, line),
        },
        (None, None) => (None, line),
    };
    tally.sent += 1;
    if let Err(e) = producer.append(key, Some(value), headers, ts, line_no) {
        tally.failed += 1;
        crate::log::error(format_args!("line {line_no}: {e}; not sent"));
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

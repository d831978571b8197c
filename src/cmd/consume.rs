//! `shipper consume TOPIC`: print a topic's records, like `kcat -C` or kafka-console-consumer.

use std::io::{BufWriter, Write};
use std::time::Duration;

use crate::cli::{Common, ConsumeArgs};
use crate::consumer::{Consumer, FetchConfig, StartOffset};
use crate::output::Format;
use crate::settings::{usage, KafkaSettings};

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &ConsumeArgs) -> anyhow::Result<i32> {
    let format = match (&args.format, args.json) {
        (Some(f), _) => match Format::parse(f) {
            Ok(f) => f,
            Err(e) => return usage(e),
        },
        (None, true) => Format::Json,
        (None, false) => Format::Value,
    };
    let start = match (&args.offset, args.from_beginning) {
        (_, true) => StartOffset::Beginning,
        (Some(o), false) => match StartOffset::parse(o) {
            Some(s) => s,
            None => {
                return usage(format!(
                    "invalid --offset '{o}' (use beginning, end, N, -N or s@TIMESTAMP_MS)"
                ))
            }
        },
        (None, false) => StartOffset::End,
    };
    let cluster = KafkaSettings::from_flags(common, Some(Duration::from_secs(30)))?.cluster()?;
    let meta = cluster.topic(&args.topic, false).await?;
    let cfg = FetchConfig::default();
    let max_decompressed = cfg.max_decompressed_bytes;
    let mut consumer = Consumer::new(cluster.clone(), cfg);
    consumer.assign(meta, &args.partitions, start).await?;
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut count: u64 = 0;
    let mut scratch = Vec::new();
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = tokio::time::Instant::now();
    let max = args.max_messages.unwrap_or(u64::MAX);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if count >= max || (args.exit_at_end && consumer.at_end_of_start()) {
            break;
        }
        let idle_deadline = idle_limit.map(|d| last_record + d);
        let fetched = tokio::select! {
            r = consumer.poll() => r?,
            _ = &mut ctrl_c => break,
            _ = async {
                match idle_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break,
        };
        let mut write_err = None;
        for f in &fetched {
            let topic = consumer.topic_name(f.topic);
            let res = f.for_each_record(&mut scratch, max_decompressed, |r| {
                if count >= max || write_err.is_some() {
                    return;
                }
                if let Err(e) = format.write(&mut out, topic, f.partition, r) {
                    write_err = Some(e);
                }
                count += 1;
            });
            res.map_err(|source| crate::error::Error::Records {
                topic: topic.to_string(),
                partition: f.partition,
                source,
            })?;
        }
        if let Some(e) = write_err {
            return Err(e.into());
        }
        if fetched.iter().any(|f| !f.records.is_empty()) {
            last_record = tokio::time::Instant::now();
        }
        out.flush()?;
    }
    out.flush()?;
    crate::log::info(format_args!(
        "consumed {count} records from '{}'",
        crate::escape::Esc::str(&args.topic)
    ));
    Ok(0)
}

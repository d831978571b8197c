//! One file per subcommand, wiring flags to the library. Errors here are `anyhow`, for the user.

pub mod consume;
pub mod metadata;
pub mod produce;
pub mod tail;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::{Common, ProducerFlags};
use crate::cluster::{ClientOptions, Cluster};
use crate::partitioner::Partitioner;
use crate::producer::ProducerConfig;
use crate::wire::compression::Compression;

/// Parses `30s`, `500ms`, `2m`, `1h` or a bare number of seconds; `0` means no limit.
pub fn parse_duration(s: &str) -> anyhow::Result<Option<Duration>> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid duration '{s}' (try 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid duration unit in '{s}' (use ms, s, m or h)"),
    };
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// The cluster the common flags describe; `default_timeout` applies when --timeout is not given.
pub fn cluster(common: &Common, default_timeout: Option<Duration>) -> anyhow::Result<Arc<Cluster>> {
    let mut opts = ClientOptions::new(&common.brokers);
    if opts.bootstrap.is_empty() {
        bail!("no brokers given (-b host:port)");
    }
    opts.connection.client_id = common.client_id.clone();
    opts.retry_limit = match &common.timeout {
        Some(t) => parse_duration(t)?,
        None => default_timeout,
    };
    Ok(Arc::new(Cluster::new(opts)))
}

/// Producer settings from the shared producer flags.
pub fn producer_config(f: &ProducerFlags) -> anyhow::Result<ProducerConfig> {
    let acks = match f.acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => bail!("invalid --acks '{other}' (use all, 1 or 0)"),
    };
    let compression = Compression::parse(&f.compression).with_context(|| {
        format!(
            "invalid --compression '{}' (use none, gzip, snappy, lz4, zstd)",
            f.compression
        )
    })?;
    let partitioner = Partitioner::parse(&f.partitioner).with_context(|| {
        format!(
            "invalid --partitioner '{}' (use default, sticky, random, murmur2)",
            f.partitioner
        )
    })?;
    if f.batch_bytes < 1024 {
        bail!("--batch-bytes must be at least 1024");
    }
    Ok(ProducerConfig {
        acks,
        compression,
        compression_level: f.compression_level,
        linger: Duration::from_millis(f.linger_ms),
        batch_bytes: f.batch_bytes,
        max_in_flight: f.max_in_flight.max(1),
        partitioner,
        idempotence: !f.no_idempotence,
        ..ProducerConfig::default()
    })
}

/// Parses repeated `-H key=value` flags.
pub fn parse_headers(hs: &[String]) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    hs.iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.as_bytes().to_vec(), v.as_bytes().to_vec())),
            _ => bail!("invalid header '{h}' (use -H key=value)"),
        })
        .collect()
}

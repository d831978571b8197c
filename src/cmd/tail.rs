//! `shipper tail PATH... TOPIC`: follow log files and ship every new line, losing nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::cli::{Common, TailArgs};
use crate::escape::Esc;
use crate::producer::{OnPermanent, Producer};
use crate::settings::{
    parse_headers, producer_config, raise_open_files_limit, usage, KafkaSettings,
};
use crate::tail::checkpoint;
use crate::tail::discover::{resolve_owners, FilePolicy, Pattern};
use crate::tail::follower::{ReadLimits, Route};
use crate::tail::{EngineConfig, TailOptions};

/// Descriptors kept free for sockets, the checkpoint and the dead-letter file.
const FD_RESERVE: u64 = 64;

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &TailArgs) -> anyhow::Result<i32> {
    let Some((topic, raw_patterns)) = args.paths_and_topic.split_last() else {
        return usage("give at least one PATH and a TOPIC");
    };
    if raw_patterns.is_empty() {
        return usage("give at least one PATH and a TOPIC");
    }
    let mut pcfg = producer_config(&args.producer);
    if !parse_headers(&args.producer.headers)?.is_empty() {
        return usage("tail does not take -H; use --path-header to tag records with their file");
    }
    pcfg.buffer_bytes = args.buffer_bytes as usize;
    // A log shipper never drops lines because a timer expired: the file is the buffer.
    pcfg.delivery_timeout = None;
    pcfg.on_permanent = OnPermanent::Retry;
    let patterns = raw_patterns
        .iter()
        .map(|p| Pattern::new(p, &[]))
        .collect::<Result<Vec<_>, _>>()
        .or_else(usage)?;
    let owners = if args.owner.is_empty() {
        None
    } else {
        Some(resolve_owners(&args.owner).or_else(usage)?)
    };
    let policy = FilePolicy {
        follow_symlinks: args.follow_symlinks,
        symlink_roots: args.symlink_root.clone(),
        owners,
    };
    // A log shipper keeps trying an unreachable cluster until told otherwise.
    let kafka = KafkaSettings::from_flags(common, None)?;
    let cluster = kafka.cluster()?;
    let ckpt = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| checkpoint::default_path(topic));
    let meta = cluster.topic(topic, true).await?;
    let mut producer = Producer::new(cluster.clone(), pcfg);
    let t = producer.add_topic(meta);
    let max_line = (args.max_line_bytes as usize).min(producer.max_value_bytes(0, 0));
    if max_line < args.max_line_bytes as usize {
        crate::log::info(format_args!(
            "lines longer than {max_line} bytes will be truncated (largest record the topic takes)"
        ));
    }
    producer.init().await?;
    let limit = raise_open_files_limit();
    let cfg = EngineConfig {
        routes: vec![
            Route {
                topic: t,
                key: None,
                headers: Vec::new()
            };
            patterns.len()
        ],
        patterns: Arc::new(patterns),
        policy: Arc::new(policy),
        path_header: args.path_header.clone(),
        from_end: args.from_end,
        limits: ReadLimits {
            max_line_bytes: max_line,
            chunk_bytes: (1 << 20).max(max_line + 2),
        },
        max_open_files: limit.saturating_sub(FD_RESERVE).max(16) as usize,
    };
    let opts = TailOptions {
        checkpoint: ckpt,
        scan_interval: Duration::from_millis(args.scan_ms),
        checkpoint_interval: Duration::from_millis(args.checkpoint_ms),
        stats_interval: args.stats.map(Duration::from_secs),
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        dead_letter: args.dead_letter.clone(),
    };
    crate::log::debug(format_args!("into topic '{}'", Esc::str(topic)));
    crate::tail::run(cfg, opts, producer).await
}

//! `shipper tail PATH... TOPIC`: follow log files and ship every new line, losing nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{Common, TailArgs};
use crate::producer::{timestamp_now_ms, Producer};
use crate::tail::checkpoint;
use crate::tail::follower::ReadLimits;
use crate::tail::{TailConfig, Tailer};

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &TailArgs) -> anyhow::Result<i32> {
    let (topic, patterns) = args
        .paths_and_topic
        .split_last()
        .context("give at least one PATH and a TOPIC")?;
    if patterns.is_empty() {
        bail!("give at least one PATH and a TOPIC");
    }
    let mut pcfg = super::producer_config(&args.producer)?;
    let headers = super::parse_headers(&args.producer.headers)?;
    if !headers.is_empty() {
        bail!("tail does not take -H yet; use --path-header to tag records with their file");
    }
    if args.max_line_bytes == 0 {
        bail!("--max-line-bytes must be at least 1");
    }
    pcfg.buffer_bytes = args.buffer_bytes.max(1024 * 1024);
    pcfg.delivery_timeout = None;
    // A log shipper keeps trying an unreachable cluster until told otherwise.
    let cluster = super::cluster(common, None)?;
    let ckpt_path = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| checkpoint::default_path(topic));
    let known = checkpoint::load(&ckpt_path)
        .with_context(|| format!("cannot read checkpoint {}", ckpt_path.display()))?;
    let meta = cluster.topic(topic, true).await?;
    let max_line = args
        .max_line_bytes
        .min(Producer::new(cluster.clone(), meta.clone(), pcfg.clone()).max_value_bytes(0, 0));
    if max_line < args.max_line_bytes {
        crate::log::info(format_args!(
            "lines longer than {max_line} bytes will be truncated (largest record the topic takes)"
        ));
    }
    let cfg = TailConfig {
        patterns: patterns.to_vec(),
        from_end: args.from_end,
        limits: ReadLimits {
            max_line_bytes: max_line,
            chunk_bytes: (1 << 20).max(max_line + 2),
        },
        path_header: args.path_header.clone(),
    };
    let mut tailer = Tailer::new(cfg, known);
    let mut producer = Producer::new(cluster.clone(), meta, pcfg);
    producer.init().await?;

    let wake = Arc::new(tokio::sync::Notify::new());
    let rescan = Arc::new(AtomicBool::new(true));
    let (w, r) = (wake.clone(), rescan.clone());
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if !matches!(
                ev.kind,
                EventKind::Modify(notify::event::ModifyKind::Data(_)) | EventKind::Access(_)
            ) {
                r.store(true, Ordering::Relaxed);
            }
        }
        w.notify_one();
    })
    .context("cannot start the file watcher")?;
    for d in tailer.watch_dirs() {
        if let Err(e) = watcher.watch(&d, RecursiveMode::NonRecursive) {
            crate::log::warn(format_args!(
                "cannot watch {} ({e}); relying on the {} ms rescan",
                d.display(),
                args.scan_ms
            ));
        }
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut scan_tick = tokio::time::interval(Duration::from_millis(args.scan_ms.max(10)));
    let mut ckpt_tick = tokio::time::interval(Duration::from_millis(args.checkpoint_ms.max(10)));
    let stats_every = args.stats.map(|s| Duration::from_secs(s.max(1)));
    let every = stats_every.unwrap_or(Duration::from_secs(3600));
    let mut stats_tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut deliveries = Vec::new();
    let mut last_stats = (Instant::now(), tailer.counters.clone());
    let mut ckpt = CheckpointWriter {
        path: ckpt_path.clone(),
        last: Vec::new(),
        pending: None,
    };
    let started = Instant::now();
    let mut trouble_since: Option<Instant> = None;
    crate::log::info(format_args!(
        "tailing {} into '{topic}'; checkpoint {}",
        patterns.join(" "),
        ckpt_path.display()
    ));
    loop {
        if rescan.swap(false, Ordering::Relaxed) || tailer.is_dirty() {
            tailer.scan();
        }
        let more = !producer.is_full() && tailer.read_pass(&mut producer, timestamp_now_ms());
        tokio::select! {
            biased;
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            r = producer.drive(&mut deliveries), if !producer.is_idle() => {
                r?;
                tailer.on_deliveries(&mut deliveries);
                report_trouble(&producer, &tailer, &mut trouble_since);
            }
            _ = wake.notified() => {}
            _ = scan_tick.tick() => {
                tailer.mark_dirty();
                tailer.close_finished();
            }
            _ = ckpt_tick.tick() => ckpt.save_soon(&mut tailer).await,
            _ = stats_tick.tick(), if stats_every.is_some() => {
                print_stats(&tailer, &mut last_stats);
            }
            _ = tokio::task::yield_now(), if more && !producer.is_full() => {}
        }
    }
    crate::log::info(format_args!("stopping: flushing lines in flight"));
    producer.seal_all();
    let limit = Duration::from_millis(args.shutdown_timeout_ms);
    let flushed = tokio::time::timeout(limit, producer.flush(&mut deliveries)).await;
    tailer.on_deliveries(&mut deliveries);
    ckpt.save_now(&mut tailer).await;
    let c = &tailer.counters;
    let unacked = tailer.lines_in_flight();
    crate::log::info(format_args!(
        "shipped {} lines ({} bytes) in {:.1}s: {} acked, {} long lines truncated, {} failed and skipped, {} truncations, {} rotations{}",
        c.lines_read,
        c.bytes_read,
        started.elapsed().as_secs_f64(),
        c.lines_acked,
        c.long_lines,
        c.lines_failed,
        c.truncations,
        c.rotations,
        if unacked > 0 {
            format!("; {unacked} lines not acknowledged yet will be sent again on restart")
        } else {
            String::new()
        }
    ));
    match flushed {
        Ok(r) => r?,
        Err(_) => crate::log::warn(format_args!(
            "gave up waiting for acknowledgements after {} ms",
            args.shutdown_timeout_ms
        )),
    }
    drop(watcher);
    Ok(if tailer.counters.lines_failed > 0 {
        1
    } else {
        0
    })
}

/// Writes the checkpoint off the event loop (fsync can stall on a busy disk), one write at a time, only
/// when something changed.
struct CheckpointWriter {
    path: std::path::PathBuf,
    last: Vec<checkpoint::Entry>,
    pending: Option<tokio::task::JoinHandle<(Vec<checkpoint::Entry>, std::io::Result<()>)>>,
}

impl CheckpointWriter {
    fn entries(tailer: &mut Tailer) -> Vec<checkpoint::Entry> {
        let mut entries = tailer.checkpoint_entries();
        entries.sort_by_key(|e| (e.id.dev, e.id.ino));
        entries
    }

    fn finish(&mut self, entries: Vec<checkpoint::Entry>, r: std::io::Result<()>) {
        match r {
            Ok(()) => self.last = entries,
            Err(e) => crate::log::error(format_args!(
                "cannot write checkpoint {}: {e}",
                self.path.display()
            )),
        }
    }

    /// Starts a background write if the last one is done and something changed.
    async fn save_soon(&mut self, tailer: &mut Tailer) {
        if let Some(h) = &self.pending {
            if !h.is_finished() {
                return;
            }
        }
        if let Some(h) = self.pending.take() {
            if let Ok((entries, r)) = h.await {
                self.finish(entries, r);
            }
        }
        let entries = Self::entries(tailer);
        if entries == self.last {
            return;
        }
        let path = self.path.clone();
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let r = checkpoint::store(&path, entries.iter());
            (entries, r)
        }));
    }

    /// Writes the current state now (at shutdown), after any write in progress.
    async fn save_now(&mut self, tailer: &mut Tailer) {
        if let Some(h) = self.pending.take() {
            if let Ok((entries, r)) = h.await {
                self.finish(entries, r);
            }
        }
        let entries = Self::entries(tailer);
        if entries != self.last {
            let r = checkpoint::store(&self.path, entries.iter());
            self.finish(entries, r);
        }
    }
}

/// Says once when deliveries start failing (lines then wait in their files) and once when they recover.
fn report_trouble(producer: &Producer, tailer: &Tailer, since: &mut Option<Instant>) {
    match (producer.trouble(), since.as_ref()) {
        (Some(e), None) => {
            crate::log::warn(format_args!(
                "cannot deliver to Kafka ({e}); lines wait in their files and are retried until it works"
            ));
            *since = Some(Instant::now());
        }
        (None, Some(t)) => {
            crate::log::info(format_args!(
                "delivering to Kafka again after {:.1}s; {} bytes behind",
                t.elapsed().as_secs_f64(),
                tailer.bytes_behind()
            ));
            *since = None;
        }
        _ => {}
    }
}

fn print_stats(tailer: &Tailer, last: &mut (Instant, crate::tail::follower::Counters)) {
    let now = Instant::now();
    let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
    let c = &tailer.counters;
    let worst = tailer
        .most_behind()
        .map_or(String::new(), |(p, b)| format!(" (most: {p} {b})"));
    eprintln!(
        "shipper: stats: {:.0} lines/s, {:.2} MB/s, {} files, {} bytes behind{worst}, {} acked, {} truncations, {} long lines, {} failed",
        (c.lines_read - last.1.lines_read) as f64 / secs,
        (c.bytes_read - last.1.bytes_read) as f64 / secs / 1e6,
        tailer.file_count(),
        tailer.bytes_behind(),
        c.lines_acked,
        c.truncations,
        c.long_lines,
        c.lines_failed
    );
    *last = (now, c.clone());
}

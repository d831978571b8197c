//! `shipper tail`'s engine: discover files from paths and globs, follow each through rotation and
//! truncation, read new lines through a memory map straight into the producer's batches, and keep per
//! file the offset Kafka has acknowledged (the checkpoint).
//!
//! - [`lines`]: the one line splitter (also used by `produce`).
//! - [`map`]: reading a region through a memory map, safe when the file is truncated under us.
//! - [`identity`]: (device, inode, birth time) plus a fingerprint of the first bytes.
//! - [`discover`]: which paths may be followed, and opening them safely.
//! - [`scan`]: one pass over the file system, on a blocking thread.
//! - [`watch`]: inotify events that make files hot or ask for a rescan.
//! - [`follower`]: one followed file: read position, lines in flight, acknowledged watermark.
//! - [`engine`]: the state of all followed files; [`run`] is its loop.
//! - [`checkpoint`] and [`saver`]: the checkpoint file, its lock, and the thread that writes it.
//! - [`sink`]: what lines are shipped into.
//! - [`dead_letter`]: where lines Kafka refuses for good are kept.

pub mod checkpoint;
pub mod dead_letter;
pub mod discover;
pub mod engine;
pub mod follower;
pub mod identity;
pub mod lines;
pub mod map;
pub mod saver;
pub mod scan;
pub mod sink;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use crate::escape::Esc;
use crate::producer::{timestamp_now_ms, Delivery, Producer};
pub use engine::{Engine, EngineConfig};

/// How `tail` runs, besides what the engine reads.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// Rescan the paths this often.
    pub scan_interval: Duration,
    /// Write the checkpoint this often when it changed.
    pub checkpoint_interval: Duration,
    /// Print a stats line this often.
    pub stats_interval: Option<Duration>,
    /// At a signal, how long to wait for lines in flight.
    pub shutdown_timeout: Duration,
    /// Where records refused for good are appended, if anywhere.
    pub dead_letter: Option<PathBuf>,
}

/// Follows the files until SIGINT or SIGTERM, shipping every line through `producer`; returns the exit
/// code (1 when lines were refused for good).
pub async fn run(
    cfg: EngineConfig,
    opts: TailOptions,
    mut producer: Producer,
) -> anyhow::Result<i32> {
    let lock = checkpoint::Lock::take(&opts.checkpoint)
        .with_context(|| format!("cannot lock checkpoint {}", Esc::path(&opts.checkpoint)))?;
    let loaded = checkpoint::load(&opts.checkpoint)
        .with_context(|| format!("cannot read checkpoint {}", Esc::path(&opts.checkpoint)))?;
    if loaded.dropped > 0 {
        crate::log::warn(format_args!(
            "checkpoint {}: {} damaged lines dropped ({} files kept); the damaged file is kept as {}; files it no longer knows are read from their start",
            Esc::path(&opts.checkpoint),
            loaded.dropped,
            loaded.entries.len(),
            loaded.moved_to.as_deref().map_or("(could not be moved)".to_string(), |p| Esc::path(p).to_string())
        ));
    }
    let mut engine = Engine::new(cfg, loaded.entries);
    // Refuse to start with a checkpoint that cannot be written: every restart would resend everything.
    let text = checkpoint::render(engine.checkpoint_entries().iter());
    checkpoint::store(&opts.checkpoint, &text).map_err(|e| {
        anyhow::anyhow!(
            "cannot write checkpoint {}: {e}",
            Esc::path(&opts.checkpoint)
        )
    })?;
    let saver = saver::Saver::start(&opts.checkpoint, text)?;
    let mut dead = match &opts.dead_letter {
        Some(p) => Some(dead_letter::DeadLetters::open(p)?),
        None => None,
    };
    let mut watch = watch::Watch::new();
    for p in engine.patterns().iter() {
        watch.watch_dir(&p.base, opts.scan_interval.as_millis() as u64);
    }
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut scan_tick = tokio::time::interval(opts.scan_interval);
    let mut ckpt_tick = tokio::time::interval(opts.checkpoint_interval);
    let every = opts.stats_interval.unwrap_or(Duration::from_secs(3600));
    let mut stats_tick = tokio::time::interval_at(Instant::now() + every, every);
    let mut deliveries = Vec::new();
    let mut stats = Stats::new(&engine);
    let started = Instant::now();
    let mut trouble_since: Option<Instant> = None;
    let mut scan_task: Option<tokio::task::JoinHandle<scan::ScanResult>> = None;
    let mut rescan = true;
    crate::log::info(format_args!(
        "tailing {} ; checkpoint {}",
        engine
            .patterns()
            .iter()
            .map(|p| Esc::str(&p.raw).to_string())
            .collect::<Vec<_>>()
            .join(" "),
        Esc::path(&opts.checkpoint)
    ));
    loop {
        let (changed, wants_rescan) = watch.take();
        rescan |= wants_rescan;
        for p in &changed {
            engine.touch(p);
            rescan |= engine.closed_at(p);
        }
        if rescan && scan_task.is_none() {
            rescan = false;
            let req = engine.scan_request();
            scan_task = Some(tokio::task::spawn_blocking(move || scan::run(req)));
        }
        let more = !producer.is_full()
            && engine.read_pass(&mut producer, timestamp_now_ms(), Instant::now());
        tokio::select! {
            biased;
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            r = producer.drive(&mut deliveries), if !producer.is_idle() => {
                r?;
                apply(&mut engine, &mut deliveries, &producer, dead.as_mut());
                report_trouble(&producer, &engine, &mut trouble_since);
            }
            r = crate::tasks::join_slot(&mut scan_task), if scan_task.is_some() => {
                if let Some(r) = r {
                    engine.apply_scan(r, Instant::now());
                    for f in engine.positions() {
                        if let Some(dir) = f.1.parent() {
                            watch.watch_dir(dir, opts.scan_interval.as_millis() as u64);
                        }
                    }
                }
            }
            _ = watch.changed() => {}
            _ = scan_tick.tick() => {
                rescan = true;
                engine.close_idle(Instant::now());
            }
            _ = ckpt_tick.tick() => saver.submit(checkpoint::render(engine.checkpoint_entries().iter())),
            _ = stats_tick.tick(), if opts.stats_interval.is_some() => {
                stats.print(&engine, &producer, &saver);
            }
            _ = tokio::task::yield_now(), if (more || engine.has_hot()) && !producer.is_full() => {}
        }
    }
    crate::log::info(format_args!("stopping: flushing lines in flight"));
    producer.seal_all();
    let flushed =
        tokio::time::timeout(opts.shutdown_timeout, producer.flush(&mut deliveries)).await;
    apply(&mut engine, &mut deliveries, &producer, dead.as_mut());
    let text = checkpoint::render(engine.checkpoint_entries().iter());
    if let Err(e) = saver.flush(text, Duration::from_secs(10)) {
        crate::log::error(format_args!(
            "cannot write checkpoint {}: {e}",
            Esc::path(&opts.checkpoint)
        ));
    }
    summary(&engine, started);
    match flushed {
        Ok(r) => r?,
        Err(_) => crate::log::warn(format_args!(
            "gave up waiting for acknowledgements after {} ms",
            opts.shutdown_timeout.as_millis()
        )),
    }
    drop(lock);
    Ok(if engine.counters.lines_failed > 0 {
        1
    } else {
        0
    })
}

/// Applies deliveries to the engine; records refused for good go to the dead-letter file.
fn apply(
    engine: &mut Engine,
    deliveries: &mut Vec<Delivery>,
    producer: &Producer,
    dead: Option<&mut dead_letter::DeadLetters>,
) {
    let mut dead = dead;
    for d in deliveries.drain(..) {
        let path = engine.on_delivery(&d.tokens, d.error.as_ref());
        if let Some(e) = &d.error {
            let n = d.tokens.len();
            let shown = path
                .as_deref()
                .map_or("?".to_string(), |p| Esc::path(p).to_string());
            crate::log::error(format_args!(
                "{n} lines of {shown} refused by Kafka, skipped: {e}"
            ));
            if let (Some(dl), Some(batch)) = (dead.as_deref_mut(), &d.batch) {
                if let Err(err) = dl.write(producer.topic_name(d.topic), path.as_deref(), e, batch)
                {
                    crate::log::error(format_args!("cannot write to the dead-letter file: {err}"));
                }
            }
        }
    }
}

/// Says once when deliveries start failing (lines then wait in their files) and once when they recover.
fn report_trouble(producer: &Producer, engine: &Engine, since: &mut Option<Instant>) {
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
                engine.bytes_behind()
            ));
            *since = None;
        }
        _ => {}
    }
}

fn summary(engine: &Engine, started: Instant) {
    let c = &engine.counters;
    let unacked = engine.lines_in_flight();
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
}

/// The periodic stats line.
struct Stats {
    at: Instant,
    last: follower::Counters,
}

impl Stats {
    fn new(engine: &Engine) -> Self {
        Stats {
            at: Instant::now(),
            last: engine.counters.clone(),
        }
    }

    fn print(&mut self, engine: &Engine, producer: &Producer, saver: &saver::Saver) {
        let now = Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let c = &engine.counters;
        let worst = engine
            .most_behind()
            .map_or(String::new(), |(p, b)| format!(" (most: {p} {b})"));
        let mut trouble = String::new();
        if let Some(t) = producer.trouble() {
            trouble.push_str(&format!("; delivery failing: {t}"));
        }
        if let Some(t) = saver.trouble() {
            trouble.push_str(&format!("; {t}"));
        }
        eprintln!(
            "shipper: stats: {:.0} lines/s, {:.2} MB/s, {} files ({} open), {} bytes behind{worst}, {} acked, {} truncations, {} long lines, {} failed{trouble}",
            (c.lines_read - self.last.lines_read) as f64 / secs,
            (c.bytes_read - self.last.bytes_read) as f64 / secs / 1e6,
            engine.file_count(),
            engine.open_count(),
            engine.bytes_behind(),
            c.lines_acked,
            c.truncations,
            c.long_lines,
            c.lines_failed
        );
        self.at = now;
        self.last = c.clone();
    }
}

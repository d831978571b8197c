//! `shipper tail`'s engine: discover files from paths and globs, follow each through rotation and
//! truncation, read new lines through a memory map straight into the producer's batches, and keep per
//! file the offset Kafka has acknowledged (the checkpoint).
//!
//! - [`lines`]: the one line splitter (also used by `produce`).
//! - [`map`]: reading a region through a memory map, safe when the file is truncated under us.
//! - [`identity`]: (device, inode, birth time) plus a fingerprint of the first bytes.
//! - [`discover`]: which paths may be followed, and opening them safely.
//! - [`copytruncate`]: after a copytruncate rotation, the copy holding what was not read yet.
//! - [`scan`]: one pass over the file system, on a blocking thread.
//! - [`watch`]: inotify events that make files hot or ask for a rescan.
//! - [`follower`]: one followed file: read position, lines in flight, acknowledged watermark.
//! - [`route`]: topic, key and headers from templates; [`multiline`]: lines joined into events.
//! - [`engine`]: the state of all followed files; [`run`] is its loop.
//! - [`checkpoint`] and [`saver`]: the checkpoint file, its lock, and the thread that writes it.
//! - [`sink`]: what lines are shipped into.
//! - [`dead_letter`]: where lines Kafka refuses for good are kept.
//! - [`exposition`]: what `--metrics-listen` serves (`/metrics`, `/healthz`).
//! - [`exactly`]: `--exactly-once` (position headers, read-back at start).
//! - [`from_end`]: where a `from_end` input's files begin, taken before Kafka answers.
//! - [`startup`]: signals and metrics while waiting for Kafka at start.
//! - [`reload`]: SIGHUP's config reads (also during that wait).

pub mod checkpoint;
pub mod copytruncate;
pub mod dead_letter;
pub mod discover;
pub mod engine;
pub mod exactly;
pub mod exposition;
pub mod follower;
pub mod from_end;
pub mod identity;
pub mod lines;
pub mod map;
pub mod multiline;
pub mod reload;
pub mod route;
pub mod saver;
pub mod scan;
pub mod sink;
pub mod startup;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::escape::Esc;
use crate::producer::{timestamp_now_ms, Delivery, Producer, TroubleNews, TroubleWatch};
use crate::tasks::sleep_until;
pub use engine::{Engine, EngineConfig, Input, Names};

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
    /// Where to serve metrics and health, if anywhere.
    pub metrics_listen: Option<String>,
    /// Delivery failing this long makes /healthz answer 503.
    pub unhealthy_after: Duration,
}

/// Tells the file policy which files are shipper's own (checkpoint, lock, temporary and dead-letter
/// files), so that no glob makes shipper follow them.
fn with_own_files(cfg: &mut EngineConfig, opts: &TailOptions) {
    let mut policy = (*cfg.policy).clone();
    policy.own = discover::OwnFiles::new(&opts.checkpoint, opts.dead_letter.as_deref());
    cfg.policy = std::sync::Arc::new(policy);
}

pub use reload::Reloader;
use reload::{Reloaded, Reloads};

/// Follows the files until SIGINT or SIGTERM, shipping every line through `producer`; returns the exit
/// code (1 when lines were refused for good). With a reloader, SIGHUP applies a changed config.
pub async fn run(
    s: crate::settings::tail::TailSettings,
    producer: Producer,
    startup: startup::Startup,
    prepared: Prepared,
) -> anyhow::Result<i32> {
    let fixed = fixed_settings(&s);
    let mut r = Running::start(s.engine, s.options, producer, prepared)?;
    r.started_unix = startup.started_unix;
    if let Some(eo) = &mut r.eo {
        // The last run's producer id: its batches not yet visible are waited for when reading back.
        r.previous_producer = eo.producer.map(|p| p.0);
        eo.producer = r.producer.producer_id();
        crate::log::info(format_args!(
            "exactly-once: producer id {}; each topic is read back before its files are sent",
            eo.producer.map_or(-1, |p| p.0),
        ));
        // Written now, not by the saver later: a run that dies before its first checkpoint must still
        // leave its producer id for the next run's read-back to wait on.
        let text = r.checkpoint_text();
        store_checkpoint(&r.opts.checkpoint, &text)?;
        r.saver.submit(text);
    }
    r.fixed = fixed;
    r.asks = startup.asks;
    r.server = startup.server;
    r.reloads = startup.reloads;
    let mut signals = startup.signals;
    // Applied before the first scan: no file is read under the config a SIGHUP replaced. What it
    // changed that waits for a restart was said when it was read.
    if let Some(pending) = startup.pending {
        r.fixed_said = startup.fixed_said;
        r.reloaded(Ok(pending));
    }
    while r.reloads.reading() {
        tokio::select! {
            biased;
            _ = signals.int.recv() => return r.stop().await,
            _ = signals.term.recv() => return r.stop().await,
            _ = signals.hup.recv() => r.reloads.hup(r.engine.input_names()),
            done = r.reloads.done() => r.reloaded(done),
        }
    }
    r.ship_until_signal(&mut signals).await?;
    r.stop().await
}

/// The settings a reload cannot change (read at start only), by name, each in a comparable form.
/// Secrets are redacted in their debug form, so the password is compared by a hash of it (kept in
/// memory only, never printed): a rotated password must be said to wait for a restart.
pub fn fixed_settings(s: &crate::settings::tail::TailSettings) -> Vec<(&'static str, String)> {
    use std::hash::{Hash, Hasher};
    let password = s.kafka.security.sasl.as_ref().map(|sasl| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        sasl.password.expose().hash(&mut h);
        h.finish()
    });
    // The TLS files' contents, not only their paths: a renewed certificate is taken at the next
    // restart, and a reload says so (t17 F1: "config reloaded", nothing more).
    let tls_files = s.kafka.security.tls.as_ref().map(|t| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for f in [&t.ca_file, &t.cert_file, &t.key_file]
            .into_iter()
            .flatten()
        {
            // Bounded as the TLS setup reads them (t49: a key path changed to a FIFO froze the
            // loop at a reload, one to /dev/zero filled memory).
            crate::settings::read_bounded(f, crate::settings::MAX_PEM_FILE)
                .ok()
                .hash(&mut h);
        }
        h.finish()
    });
    vec![
        ("Kafka connection settings", format!("{:?}", s.kafka)),
        ("the SASL password", format!("{password:?}")),
        (
            "the TLS certificate, key or CA files",
            format!("{tls_files:?}"),
        ),
        ("producer settings", format!("{:?}", s.producer)),
        (
            "checkpoint, interval, dead-letter or metrics settings",
            format!("{:?}", s.options),
        ),
        ("exactly_once", format!("{:?}", s.engine.exactly_once)),
    ]
}

/// The checkpoint taken before anything waits for Kafka: locked, loaded, and with the ends of the
/// `from_end` inputs' files recorded in it (see [`from_end`]).
pub struct Prepared {
    lock: checkpoint::Lock,
    loaded: checkpoint::Loaded,
    ends: Option<from_end::Ends>,
}

/// Takes the checkpoint (a second agent on it, or one that cannot be written, fails here, before
/// any wait for Kafka) and records where the `from_end` inputs' files end now.
pub fn prepare(cfg: &mut EngineConfig, opts: &TailOptions) -> anyhow::Result<Prepared> {
    with_own_files(cfg, opts);
    let (lock, mut loaded) = open_checkpoint(&opts.checkpoint)?;
    let mut ends = None;
    if cfg.inputs.iter().any(|i| i.from_end) {
        let e = from_end::ends(cfg, &loaded.entries, loaded.written);
        if !e.entries.is_empty() {
            let recorded: std::collections::HashSet<(u64, u64)> =
                e.entries.iter().map(|e| (e.id.dev, e.id.ino)).collect();
            // An entry of an inode since reused by another file gives way.
            loaded
                .entries
                .retain(|k| !recorded.contains(&(k.id.dev, k.id.ino)));
            loaded.entries.extend(e.entries.iter().cloned());
            let refs: Vec<_> = loaded.entries.iter().map(|e| e.borrowed()).collect();
            let eo = cfg.exactly_once.is_some().then_some(&loaded.eo);
            store_checkpoint(&opts.checkpoint, &checkpoint::render_all(&refs, eo))?;
        }
        ends = Some(e);
    }
    Ok(Prepared { lock, loaded, ends })
}

/// The first few of `items`, space-separated, and how many more (helper-65: a config of 1,000
/// inputs started with a line naming every path).
fn listed<T: std::fmt::Display>(items: impl ExactSizeIterator<Item = T>) -> String {
    const SHOWN: usize = 8;
    let n = items.len();
    let mut out = items
        .take(SHOWN)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    if n > SHOWN {
        out.push_str(&format!(" and {} more", n - SHOWN));
    }
    out
}

/// Writes the checkpoint now (at start: one that cannot be written fails the start, or every restart
/// would resend all).
fn store_checkpoint(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    checkpoint::store(path, text)
        .map_err(|e| anyhow::anyhow!("cannot write checkpoint {}: {e}", Esc::path(path)))
}

/// Takes the checkpoint's lock and loads it, saying what was damaged.
fn open_checkpoint(
    path: &std::path::Path,
) -> anyhow::Result<(checkpoint::Lock, checkpoint::Loaded)> {
    checkpoint::check_path(path)
        .map_err(|why| anyhow::anyhow!("checkpoint {}: {why}", Esc::path(path)))?;
    let lock = checkpoint::Lock::take(path)
        .with_context(|| format!("cannot lock checkpoint {}", Esc::path(path)))?;
    let loaded = checkpoint::load(path)
        .with_context(|| format!("cannot read checkpoint {}", Esc::path(path)))?;
    if loaded.dropped > 0 {
        crate::log::warn(format_args!(
            "checkpoint {}: {}{} damaged lines dropped ({} files kept); the damaged file is kept as {}; files it no longer knows are read from their start",
            Esc::path(path),
            if loaded.oversized {
                "larger than 64 MiB (10,000 files take ~1.5 MB), read as far as that; "
            } else {
                ""
            },
            loaded.dropped,
            loaded.entries.len(),
            loaded.moved_to.as_deref().map_or("(could not be moved)".to_string(), |p| Esc::path(p).to_string())
        ));
    }
    Ok((lock, loaded))
}

/// How often files take turns for descriptors while some wait for one.
const TURN_EVERY: Duration = Duration::from_millis(200);

/// While every directory is watched, a full rescan runs at least every this many `--scan-ms` (a safety
/// net for events the kernel did not deliver).
const SAFETY_RESCAN_FACTOR: u32 = 60;
/// New names waiting to be looked at alone; past this many, one full scan looks at them all.
const MAX_NEW_NAMES: usize = 64;

/// The checkpoint is rendered at least this often even when nothing seems to have changed.
const CHECKPOINT_REFRESH: Duration = Duration::from_secs(60);

/// The checkpoint is written at most this many bytes per second: at 10,000 files (860 KB) about once a
/// second instead of every `--checkpoint-ms`, so that one busy file among thousands does not rewrite
/// megabytes a second (more lines resent after a crash, never one lost).
const CHECKPOINT_BYTES_PER_SEC: f64 = 1_000_000.0;

/// How long after writing a checkpoint of `len` bytes the next may be written, given the interval.
fn checkpoint_gap(interval: Duration, len: usize) -> Duration {
    interval.max(Duration::from_secs_f64(
        len as f64 / CHECKPOINT_BYTES_PER_SEC,
    ))
}

/// A running `tail`: the engine, the producer, the checkpoint writer, the watcher, and the loop's state.
/// `/metrics` scrapes, paced so that scraping cannot slow shipping: a render looks at every followed
/// file (their sizes, for the lag gauges) on the loop that reads them, and scrapes in a loop took 1M
/// lines from 0.3 s to 6 s to ship (probe C). Renders are at least [`SCRAPE_GAP`] apart and at most
/// a tenth of the loop's time (the gap is ten renders' time when a render is slow); a scrape arriving
/// sooner waits for the next render, which answers every scrape waiting. Each answer is rendered
/// after its scrape arrived, so it is never older than the scrape.
#[derive(Default)]
struct Scrapes {
    waiting: Vec<tokio::sync::oneshot::Sender<String>>,
    /// The last render: when it began and how long it took.
    last: Option<(Instant, Duration)>,
}

/// The least time between two renders of `/metrics`.
const SCRAPE_GAP: Duration = Duration::from_millis(100);

impl Scrapes {
    fn waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// When the next render may run.
    fn due(&self) -> Instant {
        match self.last {
            None => Instant::now(),
            Some((at, took)) => at + SCRAPE_GAP.max(took * 10),
        }
    }

    fn rendered(&mut self, began: Instant) {
        self.last = Some((began, began.elapsed()));
    }
}

struct Running {
    engine: Engine,
    producer: Producer,
    saver: saver::Saver,
    dead: dead_letter::Refused,
    watch: watch::Watch,
    opts: TailOptions,
    deliveries: Vec<Delivery>,
    trouble: TroubleWatch,
    scan_task: Option<tokio::task::JoinHandle<scan::ScanResult>>,
    /// When the next full scan is due (events asked for one, or the periodic rescan).
    rescan_at: Option<Instant>,
    /// When the last full scan started.
    last_full: Instant,
    /// The last scan left files unopened for want of descriptors: rescan every `--scan-ms`.
    starved: bool,
    /// Closed followers whose paths had events: re-opened by the next (small) scan.
    reopen: std::collections::BTreeSet<u64>,
    /// New files named by events, to look at alone (see [`Engine::judge_names`]).
    new_names: std::collections::BTreeSet<PathBuf>,
    /// The engine's checkpoint version last rendered, when, and the text's length.
    rendered: (u64, Instant, usize),
    stats: Stats,
    started: Instant,
    /// SIGHUP's config reads.
    reloads: Reloads,
    /// What of the settings a reload cannot change (as [`fixed_settings`] gives).
    fixed: Vec<(&'static str, String)>,
    /// The next reload's changes to `fixed` were said already (read while waiting for Kafka).
    fixed_said: bool,
    /// Questions from the metrics server, when it runs.
    asks: Option<tokio::sync::mpsc::Receiver<crate::metrics::Ask>>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// Scrapes of `/metrics` paced: see [`Scrapes`].
    scrapes: Scrapes,
    started_unix: f64,
    /// Exactly-once: the producer id and marks the checkpoint keeps, and the topics being read back.
    eo: Option<exactly::EoState>,
    reading_back: tokio::task::JoinSet<(String, Result<exactly::ReadBack, crate::error::Error>)>,
    read_back_retry: std::collections::HashMap<String, crate::backoff::Backoff>,
    /// Exactly-once: why reading a topic back last failed, while it does (for health and metrics).
    read_back_failing: std::collections::HashMap<String, String>,
    reading: std::collections::BTreeSet<String>,
    previous_producer: Option<i64>,
    lock: checkpoint::Lock,
}

impl Running {
    fn start(
        mut cfg: EngineConfig,
        opts: TailOptions,
        producer: Producer,
        prepared: Prepared,
    ) -> anyhow::Result<Running> {
        with_own_files(&mut cfg, &opts);
        let Prepared { lock, loaded, ends } = prepared;
        let eo = cfg.exactly_once.is_some().then_some(loaded.eo);
        let mut engine = Engine::new(cfg, loaded.entries);
        engine.set_checkpoint_written(loaded.written);
        if let Some(ends) = &ends {
            engine.set_from_end_seen(ends);
        }
        // Refuse to start with a checkpoint that cannot be written: every restart would resend all.
        let text = checkpoint::render_all(&engine.checkpoint_refs(), eo.as_ref());
        store_checkpoint(&opts.checkpoint, &text)?;
        let saver = saver::Saver::start(&opts.checkpoint, text)?;
        let dead = dead_letter::Refused::new(match &opts.dead_letter {
            Some(p) => Some(dead_letter::DeadLetters::open(p)?),
            None => None,
        });
        let mut watch = watch::Watch::new();
        for p in engine.patterns().iter() {
            // The first scan lists them after this.
            let _ = watch.watch_dir(&p.base, opts.scan_interval.as_millis() as u64);
        }
        crate::log::info(format_args!(
            "tailing {}; checkpoint {}",
            listed(engine.patterns().iter().map(|p| Esc::str(&p.raw))),
            Esc::path(&opts.checkpoint)
        ));
        let reloads = Reloads::new(None, opts.clone());
        Ok(Running {
            stats: Stats::new(&engine),
            engine,
            producer,
            saver,
            dead,
            watch,
            opts,
            deliveries: Vec::new(),
            trouble: TroubleWatch::new(TROUBLE_SAID_AFTER, None),
            scan_task: None,
            rescan_at: Some(Instant::now()),
            last_full: Instant::now(),
            starved: false,
            reopen: std::collections::BTreeSet::new(),
            new_names: std::collections::BTreeSet::new(),
            rendered: (u64::MAX, Instant::now(), 0),
            started: Instant::now(),
            reloads,
            fixed: Vec::new(),
            fixed_said: false,
            asks: None,
            server: None,
            scrapes: Scrapes::default(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            eo,
            reading_back: tokio::task::JoinSet::new(),
            read_back_retry: std::collections::HashMap::new(),
            read_back_failing: std::collections::HashMap::new(),
            reading: std::collections::BTreeSet::new(),
            previous_producer: None,
            lock,
        })
    }

    /// Ships until SIGINT or SIGTERM.
    async fn ship_until_signal(&mut self, signals: &mut startup::Signals) -> anyhow::Result<()> {
        // Multiline events complete after some quiet: look at those files that often.
        let quiet = self
            .engine
            .inputs()
            .iter()
            .filter_map(|i| i.multiline.as_ref().map(|m| m.timeout))
            .min()
            .map_or(Duration::from_secs(3600), |t| {
                (t / 2).clamp(Duration::from_millis(20), Duration::from_secs(1))
            });
        let mut multiline_tick = tokio::time::interval(quiet);
        let mut scan_tick = tokio::time::interval(self.opts.scan_interval);
        // While files wait for a descriptor, turns come this often: files read to their end give
        // theirs back and a scan hands them out (once per --scan-ms, 500 busy files under a budget
        // of 32 had a turn every 16-35 s, slower than copytruncate rotated them: t16).
        let mut turn_tick = tokio::time::interval(TURN_EVERY.min(self.opts.scan_interval));
        turn_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ckpt_tick = tokio::time::interval(self.opts.checkpoint_interval);
        let every = self
            .opts
            .stats_interval
            .unwrap_or(Duration::from_secs(3600));
        // Half a turn after the turns: a stats line printed just as a turn closed every file read
        // to its end said "0 open" while shipper held 192 (t16 F3).
        let mut stats_tick =
            tokio::time::interval_at(Instant::now() + every + TURN_EVERY / 2, every);
        loop {
            self.take_events();
            let more = !self.producer.is_full()
                && self
                    .engine
                    .read_pass(&mut self.producer, timestamp_now_ms(), Instant::now());
            let busy = (more || self.engine.has_hot()) && !self.producer.is_full();
            // While a batch lingers, lines written meanwhile are read when it is due (the producer
            // wakes this loop then, before it seals): one wake per linger, not one per write.
            let gather = if busy {
                None
            } else {
                self.producer.gather_until(Instant::now())
            };
            self.start_read_backs();
            tokio::select! {
                biased;
                _ = signals.int.recv() => return Ok(()),
                _ = signals.term.recv() => return Ok(()),
                _ = signals.hup.recv() => self.reloads.hup(self.engine.input_names()),
                r = self.reloads.done(), if self.reloads.reading() => self.reloaded(r),
                Some(ask) = startup::recv(&mut self.asks) => self.answer(ask),
                _ = sleep_until(Some(self.scrapes.due())), if self.scrapes.waiting() => self.render_scrapes(),
                Some(r) = self.reading_back.join_next(), if !self.reading_back.is_empty() => {
                    if let Ok((topic, r)) = r {
                        self.read_back_done(topic, r);
                    }
                }
                r = self.producer.drive(&mut self.deliveries), if !self.producer.is_idle() => {
                    r?;
                    apply(&mut self.engine, &mut self.deliveries, &self.producer, &mut self.dead, self.eo.as_mut());
                    report_trouble(&self.producer, &self.engine, &mut self.trouble);
                    for t in self.producer.take_newly_ready() {
                        self.engine.topic_ready(&t);
                    }
                }
                _ = multiline_tick.tick() => self.engine.touch_multiline(),
                r = crate::tasks::join_slot(&mut self.scan_task), if self.scan_task.is_some() => {
                    if let Some(r) = r {
                        self.scanned(r);
                    }
                }
                _ = self.watch.changed(), if gather.is_none() => {}
                _ = sleep_until(gather), if gather.is_some() => {}
                _ = sleep_until(self.rescan_at), if self.rescan_at.is_some() && self.scan_task.is_none() => {}
                _ = turn_tick.tick(), if self.starved => {
                    let now = Instant::now();
                    if self.scan_task.is_none() {
                        self.engine.close_idle(now, true);
                        self.rescan_at.get_or_insert(now);
                    }
                }
                _ = scan_tick.tick() => {
                    let now = Instant::now();
                    let safety = self.opts.scan_interval * SAFETY_RESCAN_FACTOR;
                    if self.watch.degraded()
                        || self.starved
                        || self.engine.starved()
                        || now.duration_since(self.last_full) >= safety
                    {
                        self.rescan_at.get_or_insert(now);
                    }
                    self.engine.close_idle(now, self.starved);
                    self.engine.wake_copies();
                    self.dead.tick(now.into_std());
                    self.check_lock()?;
                }
                at = ckpt_tick.tick() => {
                    // Rendered only when something changed (10,000 idle files cost nothing here), and
                    // every CHECKPOINT_REFRESH anyway. Timed by the ticks' schedule, not by when they
                    // were handled: a tick handled a little less late than the one before would be
                    // short of the interval and skipped, and writes came every second tick (probe C).
                    let now = at;
                    let version = self.engine.checkpoint_version();
                    let since = now.duration_since(self.rendered.1);
                    let due = since >= checkpoint_gap(self.opts.checkpoint_interval, self.rendered.2);
                    if (version != self.rendered.0 && due) || since >= CHECKPOINT_REFRESH {
                        let text = self.checkpoint_text();
                        self.rendered = (version, now, text.len());
                        self.saver.submit(text);
                    }
                }
                _ = stats_tick.tick(), if self.opts.stats_interval.is_some() => {
                    self.engine.observe_sizes();
                    self.stats.print(&self.engine, &self.producer, &self.saver);
                }
                _ = tokio::task::yield_now(), if busy => {}
            }
        }
    }

    /// Keeps the checkpoint's lock: taken again when its file was deleted; when another tail took
    /// the checkpoint meanwhile, this one stops (both would ship every line), without writing it.
    fn check_lock(&mut self) -> anyhow::Result<()> {
        match self.lock.check() {
            Ok(checkpoint::LockCheck::Held) => Ok(()),
            Ok(checkpoint::LockCheck::Retaken) => {
                crate::log::warn(format_args!(
                    "the lock file {} was deleted or replaced while this tail ran: taken again (while it was missing, a second tail could have started on the same checkpoint)",
                    Esc::path(self.lock.path())
                ));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                anyhow::bail!(
                    "checkpoint {}: its lock file was deleted while this tail ran, and another shipper tail holds a new one: this one stops, so that lines are not shipped twice (run one tail per checkpoint)",
                    Esc::path(&self.opts.checkpoint)
                )
            }
            Err(e) => {
                crate::log::debug(format_args!(
                    "cannot check the lock file {}: {e}",
                    Esc::path(self.lock.path())
                ));
                Ok(())
            }
        }
    }

    /// The checkpoint as it stands (with exactly-once's producer id and marks).
    fn checkpoint_text(&mut self) -> String {
        if let Some(eo) = &mut self.eo {
            eo.producer = self.producer.producer_id();
        }
        checkpoint::render_all(&self.engine.checkpoint_refs(), self.eo.as_ref())
    }

    /// Exactly-once: starts reading back each topic whose files wait for it.
    fn start_read_backs(&mut self) {
        let Some(eo) = &self.eo else { return };
        let host = self.engine.exactly_once_host().unwrap_or_default();
        for (topic, born_ms) in self.engine.take_to_resume() {
            let from: std::collections::HashMap<i32, i64> = eo
                .marks
                .iter()
                .filter(|((t, _), _)| *t == topic)
                .map(|((_, p), o)| (*p, *o))
                .collect();
            // With no mark (the checkpoint was lost), from a minute before the oldest file's birth.
            let since = born_ms.map(|b| b.saturating_sub(60_000));
            if !self.reading.insert(topic.clone()) {
                continue; // already being read back
            }
            let cluster = self.producer.cluster();
            let not_before = self
                .read_back_retry
                .get_mut(&topic)
                .and_then(|b| b.next_delay());
            let host = host.clone();
            let previous = self.previous_producer;
            self.reading_back.spawn(async move {
                if let Some(d) = not_before {
                    tokio::time::sleep(d).await;
                }
                let started = Instant::now();
                let r = exactly::read_back(cluster, topic.clone(), from, since, host, previous).await;
                if let Ok(rb) = &r {
                    crate::log::info(format_args!(
                        "exactly-once: read back {} records of topic '{}' in {:.2}s; {} of this host's files found in it",
                        rb.records,
                        Esc::str(&rb.topic),
                        started.elapsed().as_secs_f64(),
                        rb.positions.len()
                    ));
                }
                (topic, r)
            });
        }
    }

    /// Exactly-once: a topic was read back; its files start where Kafka has them. A failure is said
    /// and the read-back tried again later (the files wait: they are the buffer).
    fn read_back_done(&mut self, topic: String, r: Result<exactly::ReadBack, crate::error::Error>) {
        self.reading.remove(&topic);
        match r {
            Ok(rb) => {
                self.read_back_retry.remove(&topic);
                self.read_back_failing.remove(&topic);
                if let Some(eo) = &mut self.eo {
                    for (p, end) in &rb.ends {
                        eo.marks.entry((topic.clone(), *p)).or_insert(*end);
                    }
                }
                self.engine.resumed(&topic, rb.positions.into_ends());
            }
            Err(e) => {
                crate::log::warn(format_args!(
                    "exactly-once: cannot read back topic '{}' ({e}); its files wait, trying again",
                    Esc::str(&topic)
                ));
                self.read_back_failing.insert(topic.clone(), e.to_string());
                self.read_back_retry
                    .entry(topic.clone())
                    .or_insert_with(|| {
                        crate::backoff::Backoff::with(
                            Duration::from_secs(1),
                            Duration::from_secs(30),
                            None,
                        )
                    });
                self.engine.resume_again(&topic);
            }
        }
    }

    /// Answers the metrics server.
    fn answer(&mut self, ask: crate::metrics::Ask) {
        match ask {
            crate::metrics::Ask::Metrics(r) => {
                self.scrapes.waiting.push(r);
                if Instant::now() >= self.scrapes.due() {
                    self.render_scrapes();
                }
            }
            crate::metrics::Ask::Health(r) => {
                drop(r.send(exposition::health(&self.view(), self.opts.unhealthy_after)))
            }
        }
    }

    /// Renders `/metrics` once for every scrape waiting (each waited at most [`Scrapes::due`]).
    fn render_scrapes(&mut self) {
        let began = Instant::now();
        // The lag gauges want each open file's size now; a health check needs none of it.
        self.engine.observe_sizes();
        let text = exposition::render(&self.view());
        for r in self.scrapes.waiting.drain(..) {
            drop(r.send(text.clone()));
        }
        self.scrapes.rendered(began);
    }

    fn view(&self) -> exposition::View<'_> {
        exposition::View {
            engine: &self.engine,
            producer: &self.producer,
            saver: &self.saver,
            delivery_failing: self.trouble.since().map(|t| t.elapsed()),
            started_unix: self.started_unix,
            read_back_failing: self
                .read_back_failing
                .iter()
                .filter_map(|(t, why)| {
                    let waited = self.read_back_retry.get(t)?.elapsed();
                    Some((t.as_str(), waited, why.as_str()))
                })
                .max_by_key(|x| x.1),
        }
    }

    /// Takes watch events (files to read, rescans asked for) and starts a scan when one is due: a full
    /// one (a directory changed, or the periodic rescan), else a small one re-opening closed files
    /// that changed.
    fn take_events(&mut self) {
        let ev = self.watch.take();
        let changed = ev.changed;
        let judged = if ev.rescan || ev.named.iter().any(|n| self.watch.is_watched(n)) {
            Names::Rescan
        } else if ev.named.is_empty() {
            Names::Nothing
        } else {
            self.engine.judge_names(&ev.named)
        };
        let now = Instant::now();
        match judged {
            // At once: a file created and deleted again soon after must still be read.
            Names::Rescan => {
                self.rescan_at = Some(now);
            }
            Names::New(names) if self.new_names.len() + names.len() <= MAX_NEW_NAMES => {
                self.new_names.extend(names);
            }
            Names::New(_) => {
                self.rescan_at = Some(now);
            }
            Names::Nothing => {}
        }
        for p in &changed {
            self.engine.touch(p);
            let closed = self.engine.closed_at(p);
            self.reopen.extend(closed);
        }
        if self.scan_task.is_some() {
            return;
        }
        let req = if self.rescan_at.is_some_and(|t| t <= now) {
            self.rescan_at = None;
            self.last_full = now;
            self.reopen.clear();
            self.new_names.clear();
            self.engine.scan_request(None)
        } else if !self.reopen.is_empty() || !self.new_names.is_empty() {
            let mut keys: Vec<u64> = std::mem::take(&mut self.reopen).into_iter().collect();
            if self.starved {
                // Descriptors are handed out by the full scans (files never opened first, then
                // the closed ones read longest ago): events do not jump the queue.
                keys.clear();
                if self.new_names.is_empty() {
                    return;
                }
            }
            let names = std::mem::take(&mut self.new_names).into_iter().collect();
            self.engine.partial_scan_request(keys, names)
        } else {
            return;
        };
        self.scan_task = Some(tokio::task::spawn_blocking(move || scan::run(req)));
    }

    /// A config read for a reload: one that does not load is refused with its reason and the
    /// running one stays. Inputs added start, inputs removed finish what they read, inputs changed
    /// take their new routes for lines read from now on; nothing is lost or sent twice. A SIGHUP
    /// that came during the read reads the config once more.
    fn reloaded(&mut self, r: anyhow::Result<Reloaded>) {
        let fixed = &self.fixed;
        match r {
            Err(e) => crate::log::error(format_args!(
                "config not reloaded, the running one stays: {e:#}"
            )),
            Ok(Reloaded {
                settings: new,
                ends,
            }) => {
                let changed: Vec<&str> = fixed_settings(&new)
                    .iter()
                    .zip(fixed)
                    .filter(|(a, b)| a.1 != b.1)
                    .map(|(a, _)| a.0)
                    .collect();
                if !changed.is_empty() && !std::mem::take(&mut self.fixed_said) {
                    crate::log::warn(format_args!(
                        "config reload: {} changed; that takes effect at the next restart, the running settings stay",
                        changed.join(", ")
                    ));
                }
                let mut engine = new.engine;
                with_own_files(&mut engine, &self.opts);
                // Exactly-once is on or off for the whole run (the producer and checkpoint follow it).
                engine.exactly_once = self.engine.exactly_once_host();
                let summary = self.engine.reconfigure(engine);
                self.engine.add_ends(ends);
                crate::log::info(format_args!("config reloaded: {summary}"));
                let waited = self.engine.waited_topics();
                self.producer.forget_topics(|t| waited.contains(t));
                for p in self.engine.patterns().clone().iter() {
                    // Rescanned below.
                    let _ = self
                        .watch
                        .watch_dir(&p.base, self.opts.scan_interval.as_millis() as u64);
                }
                self.rescan_at = Some(Instant::now());
            }
        }
        if self.reloads.again() {
            self.reloads.hup(self.engine.input_names());
        }
    }

    /// A scan is done: the engine takes it; after a full scan, the directories where files are or
    /// may appear are watched.
    fn scanned(&mut self, mut r: scan::ScanResult) {
        let (full, dirs) = (r.full, std::mem::take(&mut r.dirs));
        self.starved |= r.starved;
        if full {
            self.starved = r.starved;
        }
        if !self
            .engine
            .apply_scan(r, Instant::now(), self.watch.degraded())
        {
            self.rescan_at = Some(Instant::now()); // asked for before a reload
            return;
        }
        if !full {
            return;
        }
        let mut wanted: std::collections::HashSet<PathBuf> = dirs.into_iter().collect();
        wanted.extend(self.engine.patterns().iter().map(|p| p.base.clone()));
        for f in self.engine.followed_paths() {
            if let Some(dir) = f.parent() {
                wanted.insert(dir.to_path_buf());
            }
        }
        let ms = self.opts.scan_interval.as_millis() as u64;
        let mut began = false;
        for dir in &wanted {
            began |= self.watch.watch_dir(dir, ms);
        }
        self.watch.want_only(&wanted);
        // A directory listed before its watch began may have had files or directories made in it
        // between the two, which raised no event: it is listed again now that it is watched. (t32
        // F3: `mkdir -p a/b/c; echo x > a/b/c/f` under load was found by the minute's safety scan.)
        // Ends when a scan begins no watch.
        if began {
            self.rescan_at = Some(Instant::now());
        }
    }

    /// Flushes what is in flight (up to the shutdown timeout), writes the checkpoint, says what was
    /// done; returns the exit code.
    async fn stop(mut self) -> anyhow::Result<i32> {
        crate::log::info(format_args!("stopping: flushing lines in flight"));
        if let Some(s) = self.server.take() {
            s.abort();
        }
        self.producer.seal_all();
        self.producer.forget_pending_topics();
        // A second Ctrl-C or SIGTERM stops the wait, as the timeout does (t17: ignored, the stop
        // took the whole shutdown timeout). The cause is said before the summary it explains (t10).
        let again = crate::tasks::stop_signal();
        let flushed = tokio::select! {
            r = tokio::time::timeout(
                self.opts.shutdown_timeout,
                self.producer.flush(&mut self.deliveries),
            ) => match r {
                Ok(r) => Some(r),
                Err(_) => {
                    crate::log::warn(format_args!(
                        "gave up waiting for acknowledgements after {} ms (--shutdown-timeout-ms)",
                        self.opts.shutdown_timeout.as_millis()
                    ));
                    None
                }
            },
            _ = again => {
                crate::log::warn(format_args!(
                    "a second signal: not waiting for the acknowledgements in flight"
                ));
                None
            }
        };
        apply(
            &mut self.engine,
            &mut self.deliveries,
            &self.producer,
            &mut self.dead,
            self.eo.as_mut(),
        );
        self.dead.finish();
        // Deleted files whose every line Kafka has are not named in the last checkpoint.
        self.engine.forget_deleted();
        let text = self.checkpoint_text();
        // Exit 1 when it cannot be written: the next start would send again what this run shipped
        // since the last checkpoint written, and a supervisor should see that.
        let saved = self.saver.flush(text, Duration::from_secs(10));
        if let Err(e) = &saved {
            crate::log::error(format_args!(
                "cannot write checkpoint {}: {e}; the next start sends again what was shipped since it was last written",
                Esc::path(&self.opts.checkpoint)
            ));
        }
        summary(&self.engine, self.started);
        if let Some(r) = flushed {
            r?;
        }
        Ok(if self.engine.counters.lines_failed > 0 || saved.is_err() {
            1
        } else {
            0
        })
    }
}

/// Applies deliveries to the engine; records refused for good go to the dead-letter file.
fn apply(
    engine: &mut Engine,
    deliveries: &mut Vec<Delivery>,
    producer: &Producer,
    dead: &mut dead_letter::Refused,
    mut eo: Option<&mut exactly::EoState>,
) {
    for d in deliveries.drain(..) {
        let source = engine.on_delivery(&d.tokens, d.error.as_ref(), producer.topic_name(d.topic));
        if d.resent {
            crate::log::warn(format_args!(
                "{} lines of '{}' were sent again after an answer was lost: idempotence is off, so Kafka may hold them twice",
                d.tokens.len(),
                Esc::str(producer.topic_name(d.topic))
            ));
        }
        if let (Some(eo), None) = (eo.as_deref_mut(), &d.error) {
            eo.acked(producer.topic_name(d.topic), d.partition, d.base_offset);
        }
        if let Some(e) = &d.error {
            dead.refused(
                producer.topic_name(d.topic),
                source.as_ref().map(|(p, end)| (p.as_path(), *end)),
                e,
                d.batch.as_deref(),
                d.tokens.len(),
            );
        }
    }
}

/// Says once when deliveries start failing (lines then wait in their files) and once when they recover.
/// Failing for less than this is not said (a leader move is retried on the new leader within it),
/// and what is said is the error at that moment, the lasting one.
const TROUBLE_SAID_AFTER: Duration = Duration::from_secs(2);

fn report_trouble(producer: &Producer, engine: &Engine, t: &mut TroubleWatch) {
    match t.look_at(producer.trouble_since(), Instant::now()) {
        Some(TroubleNews::Failing(e, _)) => crate::log::warn(format_args!(
            "cannot deliver to Kafka ({e}); lines wait in their files and are retried until it works"
        )),
        Some(TroubleNews::Recovered(after)) => crate::log::info(format_args!(
            "delivering to Kafka again after {:.1}s; {} bytes behind",
            after.as_secs_f64(),
            engine.bytes_behind()
        )),
        None => {}
    }
}

fn summary(engine: &Engine, started: Instant) {
    use crate::escape::count;
    let c = &engine.counters;
    let unacked = engine.lines_in_flight();
    let (lines, events) = engine.unfinished_lines();
    let mut unfinished = String::new();
    for ((files, bytes), what, when) in [
        (lines, "a line without its newline yet", "when it comes"),
        (events, "an event not complete yet", "once it is"),
    ] {
        if files > 0 {
            unfinished += &format!(
                "; {} {} in {what} ({bytes} bytes), shipped {when}",
                count(files as u64, "file", "files"),
                if files == 1 { "ends" } else { "end" }
            );
        }
    }
    crate::log::info(format_args!(
        "read {} ({} bytes) in {:.1}s: {} acked, {} truncated, {} failed and skipped, {} ({} read on from their copy), {}{}{}{unfinished}",
        count(c.lines_read, "line", "lines"),
        c.bytes_read,
        started.elapsed().as_secs_f64(),
        c.lines_acked,
        count(c.long_lines, "long line", "long lines"),
        c.lines_failed,
        count(c.truncations, "truncation", "truncations"),
        c.copies_read,
        count(c.rotations, "rotation", "rotations"),
        if c.gone_unread > 0 {
            format!(
                "; {} deleted before they could be opened, unread",
                count(c.gone_unread, "file", "files")
            )
        } else {
            String::new()
        },
        if unacked > 0 {
            format!(
                "; {} not acknowledged yet will be sent again on restart",
                count(unacked as u64, "line", "lines")
            )
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
        let waiting = match engine.waiting_bytes().0 {
            0 => String::new(),
            n => format!(", {n} waiting for a descriptor"),
        };
        let mut trouble = String::new();
        if let Some(t) = producer.trouble() {
            trouble.push_str(&format!("; delivery failing: {t}"));
        }
        if let Some(t) = saver.trouble() {
            trouble.push_str(&format!("; {t}"));
        }
        crate::log::line(
            "stats: ",
            format_args!(
            "{:.0} lines/s, {:.2} MB/s, {} files ({} open{waiting}), {} bytes behind{worst}, {} acked, {} truncations, {} long lines, {} failed{trouble}",
            (c.lines_read - self.last.lines_read) as f64 / secs,
            (c.bytes_read - self.last.bytes_read) as f64 / secs / 1e6,
            engine.file_count(),
            engine.open_count(),
            engine.bytes_behind(),
            c.lines_acked,
            c.truncations,
            c.long_lines,
            c.lines_failed
        ),
        );
        self.at = now;
        self.last = c.clone();
    }
}

#[cfg(test)]
mod checkpoint_rate_tests {
    use super::*;

    #[test]
    fn a_large_checkpoint_is_written_at_most_a_megabyte_a_second() {
        let every = Duration::from_millis(250);
        assert_eq!(
            checkpoint_gap(every, 86_000),
            every,
            "1,000 files: as asked"
        );
        assert_eq!(checkpoint_gap(every, 860_000), Duration::from_millis(860));
        assert_eq!(
            checkpoint_gap(Duration::from_secs(5), 860_000),
            Duration::from_secs(5)
        );
        assert_eq!(checkpoint_gap(every, 0), every);
    }
}

#[cfg(test)]
mod fixed_settings_tests {
    use clap::Parser;

    use super::*;

    /// A password changed in the config file is a change a reload must tell (it waits for a
    /// restart), though its debug form is redacted; the comparable form never holds the password.
    #[test]
    fn a_changed_password_is_a_fixed_setting_that_changed_and_is_never_shown() {
        let common = crate::cli::Cli::parse_from(["shipper", "metadata"]).common;
        let settings = |pw: &str| {
            let p = std::env::temp_dir().join(format!("shipper-fixed-{}.toml", std::process::id()));
            std::fs::write(
                &p,
                format!("brokers = [\"a:1\"]\nsecurity_protocol = \"sasl_plaintext\"\nsasl_username = \"u\"\nsasl_password = \"{pw}\"\n[[input]]\npaths = [\"/x/*.log\"]\ntopic = \"t\"\n"),
            )
            .unwrap();
            let s = crate::settings::config::load(&p, &common, None).unwrap();
            std::fs::remove_file(&p).unwrap();
            fixed_settings(&s)
        };
        let (old, new) = (settings("first-secret"), settings("second-secret"));
        let changed: Vec<&str> = old
            .iter()
            .zip(&new)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        assert_eq!(changed, ["the SASL password"]);
        for (_, shown) in old.iter().chain(&new) {
            assert!(!shown.contains("secret"), "{shown}");
        }
        assert_eq!(
            settings("first-secret"),
            old,
            "the same password: no change"
        );
    }
}

#[cfg(test)]
mod listed_tests {
    #[test]
    fn a_long_list_names_its_first_few_and_counts_the_rest() {
        assert_eq!(super::listed(["a", "b"].iter()), "a b");
        let many: Vec<String> = (0..1000).map(|i| format!("/var/log/{i}.log")).collect();
        let line = super::listed(many.iter());
        assert!(line.starts_with("/var/log/0.log /var/log/1.log "), "{line}");
        assert!(line.ends_with("/var/log/7.log and 992 more"), "{line}");
    }
}

//! The tail engine's state, without I/O of its own beyond reading followed files: which files are
//! followed and where each stands, what the checkpoint knows of files not followed now, and the
//! counters. The loop in [`super::run`] feeds it scan results, watch events and deliveries; tests feed
//! it directly (see the model test), with no broker and no sleeps.
//!
//! (Over 500 lines: one state machine whose methods all keep the same invariant on the same map of
//! followers — each checkpoint offset is the end of an acknowledged prefix; split up, that invariant
//! would be spread over files.)

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::checkpoint::{Entry, EntryRef, LongLine};
use super::discover::{FilePolicy, Pattern};
use super::follower::{
    CopyOf, Counters, Follower, ReadLimits, ReadResult, Route, MAX_KEY, SEQ_BITS,
};
use super::identity::{FileId, Fingerprint};
use super::multiline::MultilineConfig;
use super::route::RouteSpec;
use super::scan::{self, Followed, ScanRequest, ScanResult};
use super::sink::Sink;
use crate::escape::Esc;
use crate::producer::TopicState;

/// How long a rotated-away or deleted file, read to its end, stays open in case its writer adds more;
/// after this long quiet its last line is sent even without a newline.
pub const ROTATED_GRACE: Duration = Duration::from_secs(5);

/// How long a copy of a followed file (see [`CopyOf`]) may stay unchanged while the original is not
/// truncated: past it, it is no copytruncate copy (a backup made with `cp`, or a file that only
/// starts like another) and is read from its start.
pub const COPY_PATIENCE: Duration = Duration::from_secs(30);

/// Open files kept at most, however high the descriptor limit, once files are quiet for
/// [`OPEN_SOFT_QUIET`]: a closed file is re-opened by its next event.
pub const OPEN_SOFT_TARGET: usize = 1024;

/// How long a file is quiet before it may be closed to keep [`OPEN_SOFT_TARGET`].
pub const OPEN_SOFT_QUIET: Duration = Duration::from_secs(60);

/// One input: its paths, and where and how their lines go.
#[derive(Debug, Clone)]
pub struct Input {
    /// Its name, for messages, metrics and reloads (the config's `name`, else its first path).
    pub name: String,
    /// Paths and globs, with their exclusions.
    pub patterns: Vec<Pattern>,
    /// Topic, key and headers of its records.
    pub route: RouteSpec,
    /// Lines joined into events, if set.
    pub multiline: Option<Arc<MultilineConfig>>,
    /// Start files found at the first scan at their end (unless the checkpoint knows them).
    pub from_end: bool,
}

/// How the engine reads.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The inputs; a file matched by several goes to the first.
    pub inputs: Vec<Input>,
    /// Which files may be followed.
    pub policy: Arc<FilePolicy>,
    /// Reading limits.
    pub limits: ReadLimits,
    /// Most files open at once.
    pub max_open_files: usize,
    /// This host's name, for `{hostname}`.
    pub hostname: String,
    /// With exactly-once, the name records' positions are given under (this host's, unless set): no
    /// line of a topic is read before the topic has been read back ([`super::exactly`]).
    pub exactly_once: Option<String>,
}

impl EngineConfig {
    /// Caps each input's multiline event size at the line limit (the largest record the topic takes).
    fn cap_events(&mut self) {
        let cap = self.limits.max_line_bytes;
        for i in &mut self.inputs {
            if let Some(m) = &mut i.multiline {
                if m.max_bytes > cap {
                    Arc::make_mut(m).max_bytes = cap;
                }
            }
        }
    }

    /// Every input's patterns in one list, and for each the input it belongs to.
    pub(super) fn flat_patterns(&self) -> (Arc<Vec<Pattern>>, Vec<usize>) {
        let mut patterns = Vec::new();
        let mut owner = Vec::new();
        for (i, input) in self.inputs.iter().enumerate() {
            for p in &input.patterns {
                patterns.push(p.clone());
                owner.push(i);
            }
        }
        (Arc::new(patterns), owner)
    }
}

/// Files by (dev, ino).
type Inodes = HashSet<(u64, u64)>;

/// Created or renamed names judged one by one at most per look; beyond, a full scan.
const MAX_NAMES_JUDGED: usize = 64;

/// How long after a followed file was renamed a new file under its old name makes the rename a
/// rotation (a program that reopens its log on SIGHUP creates it a moment later).
const ROTATION_WINDOW: Duration = Duration::from_secs(60);

/// Renames remembered for [`ROTATION_WINDOW`] at most (older ones are dropped first).
const MAX_RENAMES_KEPT: usize = 1024;

/// The state of `tail`.
pub struct Engine {
    cfg: EngineConfig,
    /// Every input's patterns, flattened, and the input of each.
    patterns: Arc<Vec<Pattern>>,
    pattern_input: Vec<usize>,
    /// Per input: matched files waiting for a descriptor and their bytes (as of the last full scan).
    fd_waiting: BTreeMap<usize, (usize, u64)>,
    /// Truncations and copies said at info level in the current window (copytruncate over a tree).
    routine: RoutineLines,
    /// [`Engine::warn_once`]'s lines, limited alike.
    warnings: RoutineLines,
    /// Long lines cut, per file and read, limited alike.
    cut: RoutineLines,
    /// The keys of the last full scan's notices (those warned): a notice whose file is gone is
    /// forgotten at the next full scan, so names made and removed do not pile up (t23 F1).
    scan_warned: HashSet<String>,
    /// Whether a compressed file was warned about (the others are said at debug level).
    compressed_said: bool,
    /// The copy a truncated file's follower went on in, during a scan's new files (see
    /// [`Engine::apply_scan`]).
    copy_started: Option<(u64, u64)>,
    /// Line counters per (input name, topic), for metrics; files fold theirs in here.
    routes: BTreeMap<(String, String), Counters>,
    followers: HashMap<u64, Follower>,
    /// Acknowledged positions of files not followed now, by (dev, ino): loaded from the checkpoint,
    /// and kept for files closed after rotation.
    known: HashMap<(u64, u64), Entry>,
    /// Matched files that are compressed, as the last scans saw them: not opened again while
    /// unchanged. Replaced by each full scan, so it holds only what the patterns still match.
    compressed: Arc<HashSet<scan::Unchanged>>,
    next_key: u64,
    first_scan: bool,
    /// When the checkpoint read at start was last written.
    checkpoint_written: Option<SystemTime>,
    /// The files of `from_end` inputs there at the start, when their ends were recorded then, and
    /// those recorded (see [`super::from_end`]).
    from_end_seen: Option<(Inodes, Inodes)>,
    warned: BTreeSet<String>,
    /// Followers to read at the next pass (events, more data, a rescan).
    hot: BTreeSet<u64>,
    /// Followers waiting for their topic to be known.
    waiting: BTreeSet<u64>,
    /// Matched files the last full scan could not open.
    unreadable: usize,
    /// Copies waiting while their original is followed (looked at again at each scan tick).
    copies: BTreeSet<u64>,
    /// Bumped by each reload: a scan asked for before it is dropped (its pattern numbers are stale).
    generation: u64,
    /// Exactly-once: topics read back (their files may be read), topics to read back, and where
    /// each source stands in Kafka.
    resumed: BTreeSet<String>,
    to_resume: BTreeSet<String>,
    in_kafka: HashMap<(String, String), (u64, bool)>,
    /// Followers by path, for events; rebuilt when `None` (a follower came, went or moved).
    by_path: Option<PathIndex>,
    /// Bumped by whatever may change the checkpoint (acks, files coming, going, moving): an idle
    /// engine's checkpoint is not rendered again.
    version: u64,
    /// [`Engine::on_delivery`]'s (file, earlier input, lines) runs, kept to spare an allocation per
    /// batch.
    runs: Vec<(u64, Option<usize>, u64)>,
    /// Descriptors the scan under way may open (its budget), until its result is applied: a copy
    /// taken up meanwhile must leave them free.
    lent: usize,
    /// Names followed files were renamed away from, to names a pattern still matches (`app.log*`):
    /// a new file found under one within [`ROTATION_WINDOW`] makes that rename a rotation.
    renamed_from: HashMap<PathBuf, (u64, Instant)>,
    /// Truncations for which no copy was found, newest last (at most [`LATE_COPIES`], for
    /// [`COPY_PATIENCE`]): a copy that appears after its original's truncation was handled (moved
    /// in later, or seen after it in a race with logrotate) is read on from where that was read to.
    truncated_without_copy: VecDeque<Truncated>,
    /// Line and event counters.
    pub counters: Counters,
}

/// Truncations remembered at most, waiting for a copy seen late.
const LATE_COPIES: usize = 256;

/// A truncated file no copy was found for (yet): what a copy of it would hold.
#[derive(Debug)]
struct Truncated {
    path: PathBuf,
    input: usize,
    /// Its first bytes and the bytes just before `pos`, as read.
    fingerprint: Fingerprint,
    before: Fingerprint,
    /// Where it was read to.
    pos: u64,
    at: Instant,
    /// When its truncation was handled, by the wall clock file times are told in: a copy shorter
    /// than `pos` modified later is not its copy.
    noticed: SystemTime,
}

/// What created or renamed names call for ([`Engine::judge_names`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Names {
    /// Nothing: no pattern finds them and no followed file is concerned.
    Nothing,
    /// New files a pattern finds: to be looked at alone.
    New(Vec<PathBuf>),
    /// A full scan.
    Rescan,
}

/// Where the followed files are: by path, and every directory above one (a name renamed away that was
/// such a directory takes followed files with it).
struct PathIndex {
    files: HashMap<PathBuf, Vec<u64>>,
    dirs: HashSet<PathBuf>,
}

impl PathIndex {
    fn new<'a>(followers: impl Iterator<Item = &'a Follower>) -> PathIndex {
        let mut index = PathIndex {
            files: HashMap::new(),
            dirs: HashSet::new(),
        };
        for f in followers {
            index.add(f);
        }
        index
    }

    /// The index kept in `slot`, built from `followers` if it was dropped.
    fn of<'a>(
        slot: &'a mut Option<PathIndex>,
        followers: &HashMap<u64, Follower>,
    ) -> &'a PathIndex {
        slot.get_or_insert_with(|| PathIndex::new(followers.values()))
    }

    /// Adds a follower (removing one rebuilds the index: a directory may hold others).
    fn add(&mut self, f: &Follower) {
        self.files.entry(f.path.clone()).or_default().push(f.key);
        // Followed through a link: writes, renames and deletes are seen under the real path.
        if let Some(t) = &f.target {
            self.files.entry(t.clone()).or_default().push(f.key);
        }
        let mut up = f.path.parent();
        while let Some(d) = up.filter(|d| !d.as_os_str().is_empty()) {
            if !self.dirs.insert(d.to_path_buf()) {
                break; // and every directory above it
            }
            up = d.parent();
        }
    }
}

/// The most keys [`Engine::warn_once`] remembers (about 300 bytes each).
const WARNED_MAX: usize = 4096;
/// Free descriptors not lent to a scan, for copies taken up while it runs (none when few are free).
const COPY_RESERVE: usize = 16;

/// Routine per-file lines (a truncation, a copy found): the first [`RoutineLines::PER_WINDOW`] of
/// each 10-s window at info level, then at debug level with a count said when the window ends
/// (t13: copytruncate over 500 files wrote 1,000 lines each night). File warnings (a link not
/// followed, a FIFO, a file that cannot be opened) alike, at warning level (t23 F1: 100,000 link
/// names made and removed wrote 100,000 warnings, 35 MB of stderr).
#[derive(Debug)]
struct RoutineLines {
    window: Option<std::time::Instant>,
    said: u32,
    held: u32,
    /// Said as warnings (else info lines).
    warn: bool,
    /// What the count line counts: "files truncated or found to be copies".
    what: &'static str,
}

impl RoutineLines {
    const PER_WINDOW: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(10);

    fn new(warn: bool, what: &'static str) -> Self {
        RoutineLines {
            window: None,
            said: 0,
            held: 0,
            warn,
            what,
        }
    }

    fn say(&mut self, msg: std::fmt::Arguments<'_>) {
        self.tick();
        self.window.get_or_insert_with(std::time::Instant::now);
        if self.said < Self::PER_WINDOW {
            self.said += 1;
            if self.warn {
                crate::log::warn(msg);
            } else {
                crate::log::info(msg);
            }
        } else {
            self.held += 1;
            crate::log::debug(msg);
        }
    }

    /// Ends the window if its time is up, saying how many lines it held back.
    fn tick(&mut self) {
        let Some(w) = self.window else { return };
        if w.elapsed() < Self::WINDOW {
            return;
        }
        if self.held > 0 {
            let line = format_args!(
                "{} more {} in the last {} s (each is listed with -v)",
                self.held,
                self.what,
                Self::WINDOW.as_secs()
            );
            if self.warn {
                crate::log::warn(line);
            } else {
                crate::log::info(line);
            }
        }
        *self = RoutineLines::new(self.warn, self.what);
    }
}

impl Engine {
    /// An engine resuming from `known` (the loaded checkpoint).
    pub fn new(mut cfg: EngineConfig, known: Vec<Entry>) -> Self {
        cfg.cap_events();
        let (patterns, pattern_input) = cfg.flat_patterns();
        Engine {
            cfg,
            patterns,
            pattern_input,
            fd_waiting: BTreeMap::new(),
            routine: RoutineLines::new(false, "files truncated or found to be copies"),
            cut: RoutineLines::new(false, "reads with long lines cut"),
            warnings: RoutineLines::new(
                true,
                "warnings about files (links not followed, FIFOs, files that cannot be opened...)",
            ),
            scan_warned: HashSet::new(),
            compressed_said: false,
            copy_started: None,
            routes: BTreeMap::new(),
            runs: Vec::new(),
            lent: 0,
            renamed_from: HashMap::new(),
            followers: HashMap::new(),
            known: known
                .into_iter()
                .map(|e| ((e.id.dev, e.id.ino), e))
                .collect(),
            compressed: Arc::default(),
            next_key: 1,
            first_scan: true,
            checkpoint_written: None,
            from_end_seen: None,
            warned: BTreeSet::new(),
            hot: BTreeSet::new(),
            waiting: BTreeSet::new(),
            unreadable: 0,
            copies: BTreeSet::new(),
            truncated_without_copy: VecDeque::new(),
            generation: 0,
            resumed: BTreeSet::new(),
            to_resume: BTreeSet::new(),
            in_kafka: HashMap::new(),
            by_path: None,
            version: 0,
            counters: Counters::default(),
        }
    }

    /// When the checkpoint the engine started from was written: a copy made after it, of a file that
    /// was empty then, holds lines never read (see [`Engine::start`]).
    pub fn set_checkpoint_written(&mut self, at: Option<SystemTime>) {
        self.checkpoint_written = at;
    }

    /// The `from_end` inputs' files there at the start, whose ends were recorded as checkpoint
    /// entries then: one not among them at the first scan appeared after the start and is read from
    /// its beginning.
    pub fn set_from_end_seen(&mut self, ends: &super::from_end::Ends) {
        let recorded = ends.entries.iter().map(|e| (e.id.dev, e.id.ino)).collect();
        self.from_end_seen = Some((ends.seen.clone(), recorded));
    }

    /// Exactly-once: topics to read back before their files are read, each with the birth (ms) of the
    /// oldest file waiting for it (`None` when one has no birth time): where reading back starts in a
    /// partition the checkpoint has no mark for.
    pub fn take_to_resume(&mut self) -> Vec<(String, Option<i64>)> {
        let topics = std::mem::take(&mut self.to_resume);
        topics
            .into_iter()
            .map(|t| {
                let born = self
                    .followers
                    .values()
                    .filter(|f| f.route.topic_name == t)
                    .map(|f| f.id.born.map(|ns| (ns / 1_000_000) as i64))
                    .try_fold(i64::MAX, |m, b| b.map(|b| m.min(b)));
                (t, born.filter(|&b| b != i64::MAX))
            })
            .collect()
    }

    /// Exactly-once: the host name sources are named under.
    pub fn exactly_once_host(&self) -> Option<String> {
        self.cfg.exactly_once.clone()
    }

    /// Exactly-once: reading topic `name` back failed; it is asked for again.
    pub fn resume_again(&mut self, name: &str) {
        self.to_resume.insert(name.to_string());
    }

    /// Exactly-once: topic `name` was read back; `ends` says where this host's sources stand in it.
    /// Its files start there, then are read.
    pub fn resumed(&mut self, name: &str, ends: HashMap<String, (u64, bool)>) {
        self.version += 1;
        self.in_kafka
            .extend(ends.into_iter().map(|(s, e)| ((name.to_string(), s), e)));
        let (mut moved, mut behind, mut truncated) = (Vec::new(), Vec::new(), Vec::new());
        // The followers Kafka held lines of.
        let mut placed = BTreeSet::new();
        for (&k, f) in self.followers.iter_mut() {
            if f.route.topic_name != name {
                continue;
            }
            // Taken once: later the follower's own position is newer than what was read back.
            let Some((end, skipping)) = f
                .source
                .as_ref()
                .and_then(|s| self.in_kafka.remove(&(name.to_string(), s.to_string())))
            else {
                continue;
            };
            placed.insert(k);
            // Behind the checkpoint's acknowledged position: what lies between was acknowledged
            // to another topic (the input's topic changed and changed back) or lost by Kafka.
            // Never read again: it would be sent twice.
            if end < f.acked_pos {
                behind.push((Esc::path(&f.path).to_string(), end, f.acked_pos));
            } else if end > f.size && f.advance_to(end, None) {
                // Kafka holds more of it than it has: truncated while shipper was away (read from
                // its start; the rest of the old bytes is in its copy, read on from `end`).
                truncated.push((k, end, skipping, f.fingerprint));
            } else if end != f.read_pos && f.advance_to(end, skipping.then_some(end)) {
                moved.push((Esc::path(&f.path).to_string(), end));
            }
        }
        for (p, end) in moved {
            crate::log::info(format_args!(
                "{p}: Kafka holds it up to byte {end}; continuing there (exactly-once)"
            ));
        }
        for (k, end, skipping, fp) in truncated {
            self.resume_truncated(k, end, skipping, fp, &placed);
        }
        for (p, end, at) in behind {
            crate::log::warn(format_args!(
                "{p}: topic '{}' holds it only up to byte {end}, and bytes up to {at} were acknowledged (to another topic before a change of the input's topic, or lost by Kafka): not sent again; continuing at {at} (exactly-once)",
                Esc::str(name)
            ));
        }
        self.resumed.insert(name.to_string());
        self.topic_ready(name);
    }

    /// Exactly-once: the file of follower `k` is shorter than the `end` Kafka holds it to, so it was
    /// truncated (copytruncate) while shipper was away. Its copy is read from `end`: a copy already
    /// followed from the checkpoint's older position is moved on to `end` (what lies between is in
    /// Kafka; read again it was sent twice), and one not found yet (the file starts as it did, so
    /// the truncation was not seen at the start) is looked for (its lines past `end` were lost).
    fn resume_truncated(
        &mut self,
        k: u64,
        end: u64,
        skipping: bool,
        fp: Fingerprint,
        placed: &BTreeSet<u64>,
    ) {
        if let Some(f) = self.followers.get(&k) {
            crate::log::info(format_args!(
                "{}: Kafka holds it up to byte {end}, past its end: it was truncated; reading it from its start (exactly-once)",
                Esc::path(&f.path)
            ));
        }
        let copy = self
            .followers
            .iter_mut()
            .find(|(_, c)| c.copy_of == Some(k));
        match copy {
            Some((ck, c)) => {
                // Its own lines in Kafka (an earlier run read it) already placed it.
                if c.read_pos < end && !placed.contains(ck) {
                    let to = end.min(c.size);
                    let skip = (skipping && end <= c.size).then_some(to);
                    if c.advance_to(to, skip) {
                        crate::log::info(format_args!(
                            "{}: Kafka holds its original up to byte {end}; continuing there (exactly-once)",
                            Esc::path(&c.path)
                        ));
                    }
                }
            }
            None => self.finish_copy(k, fp, end, skipping, None),
        }
    }

    /// The patterns followed.
    pub fn patterns(&self) -> &Arc<Vec<Pattern>> {
        &self.patterns
    }

    /// The inputs.
    pub fn inputs(&self) -> &[Input] {
        &self.cfg.inputs
    }

    /// Says something once per key.
    pub fn warn_once(&mut self, key: String, msg: std::fmt::Arguments<'_>) {
        // Bounded: past this many, all are forgotten (a warning may then be said again).
        if self.warned.len() >= WARNED_MAX {
            self.warned.clear();
        }
        if self.warned.insert(key) {
            self.warnings.say(msg);
        }
    }

    /// Says that a compressed file is not followed: once per file, whether a scan or a read told it
    /// (each had its own memory, and logrotate's `.1.gz` was said twice), and as a warning for the
    /// first one only: with `compress`, each rotation makes one (t27: 75 warnings in 10 s).
    fn say_compressed(&mut self, n: super::discover::Notice) {
        if self.warned.len() >= WARNED_MAX {
            self.warned.clear();
        }
        if !self.warned.insert(n.key) {
            return;
        }
        if std::mem::replace(&mut self.compressed_said, true) {
            crate::log::debug(format_args!("{}", n.text));
        } else {
            self.warnings.say(format_args!(
                "{} (said for the first such file; -v says the others)",
                n.text
            ));
        }
    }

    fn open_files(&self) -> usize {
        self.followers.values().filter(|f| f.file.is_some()).count()
    }

    /// A snapshot for the next scan: a full one, or `only` re-opening these closed followers.
    pub fn scan_request(&mut self, only: Option<Vec<u64>>) -> ScanRequest {
        self.scan_request_with(only, Vec::new())
    }

    /// A request re-opening the closed followers `keys` and looking at the new `names` alone, without
    /// expanding the patterns.
    pub fn partial_scan_request(&mut self, keys: Vec<u64>, names: Vec<PathBuf>) -> ScanRequest {
        self.scan_request_with(Some(keys), names)
    }

    fn scan_request_with(&mut self, only: Option<Vec<u64>>, names: Vec<PathBuf>) -> ScanRequest {
        // A re-open asks for a few files: looked up, not filtered out of 10,000.
        let chosen: Vec<&Follower> = match &only {
            Some(keys) => keys.iter().filter_map(|k| self.followers.get(k)).collect(),
            None => {
                // Closed files that grew are re-opened in this order while descriptors are short:
                // the one read longest ago first, so that each has its turn; copies waiting for
                // their original last (they cannot be read before it is).
                let mut all: Vec<&Follower> = self.followers.values().collect();
                all.sort_by_key(|f| (self.copies.contains(&f.key), f.last_active, f.key));
                all
            }
        };
        let followed = chosen
            .into_iter()
            .map(|f| Followed {
                key: f.key,
                path: f.path.clone(),
                id: f.id,
                file: f.file.as_ref().map(Arc::downgrade),
                fingerprint: f.fingerprint,
                read_pos: f.read_pos,
                rotated: f.rotated,
                seen: f.seen,
            })
            .collect();
        let known = match only {
            Some(_) => Vec::new(),
            None => self
                .known
                .values()
                .map(|e| (e.id, e.path.clone(), e.origin.clone(), e.offset))
                .collect(),
        };
        // All but a few of the free descriptors when there are plenty: a copy taken up at a
        // truncation while the scan is under way takes one of those few (lent them all, it was
        // closed again with thousands to spare, and its lines waited for the next scan; see
        // `close_if_over_budget`). When few are free, the scan has them all, as before.
        let free = self.cfg.max_open_files.saturating_sub(self.open_files());
        self.lent = match free > 4 * COPY_RESERVE {
            true => free - COPY_RESERVE,
            false => free,
        };
        ScanRequest {
            patterns: self.patterns.clone(),
            policy: self.cfg.policy.clone(),
            first: self.first_scan,
            followed,
            known,
            budget: self.lent,
            generation: self.generation,
            only,
            names,
            compressed: self.compressed.clone(),
        }
    }

    /// Changes when what [`Engine::checkpoint_refs`] would give may have changed.
    pub fn checkpoint_version(&self) -> u64 {
        self.version
    }

    fn insert_follower(&mut self, key: u64, f: Follower) {
        self.version += 1;
        // Kept, not rebuilt: with 10,000 files a rebuild is milliseconds, for each new file.
        if let Some(index) = &mut self.by_path {
            if let Some(old) = self.followers.get(&key) {
                if old.path != f.path {
                    self.by_path = None;
                }
            } else {
                index.add(&f);
            }
        }
        self.followers.insert(key, f);
    }

    fn remove_follower(&mut self, key: u64) -> Option<Follower> {
        self.version += 1;
        self.by_path = None;
        let gone = self.followers.remove(&key)?;
        self.copies.remove(&key);
        self.release_copies(&gone);
        Some(gone)
    }

    /// Judges a file nothing was read of yet that starts like another followed file: a copy of it (a
    /// copytruncate copy that a pattern matches too, holding the same bytes as far as the original was
    /// read) waits, instead of being read from its start, which would ship those lines again. It is
    /// read on from the original's position once the original is gone (truncated or closed: see
    /// [`Engine::release_copies`]), and from its start if it turns out different or stays unchanged for
    /// [`COPY_PATIENCE`] while the original is not truncated. Returns whether to read it now.
    fn judge_copy(&mut self, key: u64, now: Instant) -> bool {
        let Some(f) = self.followers.get(&key) else {
            return false;
        };
        let (was, path) = (f.copy, f.path.clone());
        let Some(file) = f.file.clone() else {
            return true;
        };
        let size = file.metadata().map_or(0, |m| m.len());
        if size == 0 || was == CopyOf::No {
            return true; // nothing to judge yet
        }
        let verdict = match was {
            CopyOf::Of {
                key: g,
                size: before,
                grew,
                ..
            } => match self.followers.get(&g) {
                Some(o) if size == before && now.duration_since(grew) >= COPY_PATIENCE => {
                    crate::log::info(format_args!(
                        "{}: unchanged for {}s while {} was not truncated: no copytruncate copy after all, read from its start",
                        Esc::path(&path),
                        COPY_PATIENCE.as_secs(),
                        Esc::path(&o.path)
                    ));
                    CopyOf::No
                }
                Some(o) => match file_of(o)
                    .as_deref()
                    .map(|of| against(&file, of, o, size.min(o.read_pos)))
                {
                    Some(Against::Same) => CopyOf::Of {
                        key: g,
                        size,
                        grew: if size == before { grew } else { now },
                    },
                    // The original truncated (shorter than it was read to, or other first
                    // bytes), and the read that tells it not come yet: the copy waits for it, to
                    // be read on from where the original was read to. Judged against the
                    // truncated file, it was taken for another file and read from its start:
                    // every line of it twice (seen in CI's copytruncate test under load: 2,100
                    // duplicates, "3 truncations (2 read on)").
                    Some(Against::Truncated) => {
                        self.hot.insert(g);
                        self.copies.insert(key);
                        return false;
                    }
                    _ => {
                        crate::log::info(format_args!(
                            "{}: no longer the same bytes as {}: read from its start",
                            Esc::path(&path),
                            Esc::path(&o.path)
                        ));
                        CopyOf::No
                    }
                },
                None => CopyOf::No,
            },
            _ => match self.original_of(key, &file, size) {
                // Judged again once that file's truncation is told.
                Err(()) => {
                    self.copies.insert(key);
                    return false;
                }
                Ok(Some(g)) => {
                    if let Some(o) = self.followers.get(&g) {
                        self.routine.say(format_args!(
                            "{}: a copy of {} (the same bytes as far as that was read): not read from its start",
                            Esc::path(&path),
                            Esc::path(&o.path)
                        ));
                    }
                    CopyOf::Of {
                        key: g,
                        size,
                        grew: now,
                    }
                }
                Ok(None) => {
                    self.read_late_copy_on(key, &file, size, now);
                    CopyOf::No
                }
            },
        };
        if let Some(f) = self.followers.get_mut(&key) {
            f.copy = verdict;
        }
        if verdict == CopyOf::No {
            self.copies.remove(&key);
            true
        } else {
            self.copies.insert(key);
            false
        }
    }

    /// Which followed file `file` (of `size` bytes, follower `key`) is a copy of: one read past its
    /// start whose first bytes `file` starts with, and whose bytes before where it was read to (or
    /// before `size`) are the same in both. `Err` when such a one is shorter now than where it was
    /// read to: truncated by the copytruncate that made this copy, which its next read tells (it is
    /// made hot), and which then finds this copy ([`Engine::restart_truncated`]).
    fn original_of(
        &mut self,
        key: u64,
        file: &std::fs::File,
        size: u64,
    ) -> Result<Option<u64>, ()> {
        // Only a follower the copy is named after can be its original (see `could_be_copy`): looked
        // up by path, not compared with each of 10,000 followers for each new file (t13's scale
        // under a low descriptor limit: 6,000 files opened after the first scan took 17 s of CPU).
        let Some(path) = self.followers.get(&key).map(|f| f.path.clone()) else {
            return Ok(None);
        };
        let mut keys = Vec::new();
        for n in super::copytruncate::possible_originals(&path) {
            keys.extend_from_slice(self.at_path(&n));
        }
        let Some(f) = self.followers.get(&key) else {
            return Ok(None);
        };
        let Ok(head) = super::identity::head(file, super::identity::FINGERPRINT_BYTES) else {
            return Ok(None);
        };
        // Most fingerprints are full: compared with ours at once, no hashing per follower.
        let full = Fingerprint::of(&head);
        let mut truncated = None;
        for o in keys.iter().filter_map(|k| self.followers.get(k)) {
            let fp = o.fingerprint;
            let candidate = o.key != key
                && o.input == f.input
                && super::copytruncate::could_be_copy(&o.path, &f.path)
                && o.read_pos > 0
                && fp.len > 0
                && head.len() >= fp.len as usize
                && !o.id.same(&f.id)
                && if fp.len as usize == head.len() {
                    full == fp
                } else {
                    Fingerprint::of(&head[..fp.len as usize]) == fp
                };
            if !candidate {
                continue;
            }
            let Some(of) = file_of(o) else {
                continue;
            };
            match against(file, &of, o, size.min(o.read_pos)) {
                Against::Same => return Ok(Some(o.key)),
                Against::Truncated => truncated = Some(o.key),
                Against::Other => {}
            }
        }
        match truncated {
            Some(o) => {
                self.hot.insert(o);
                Err(())
            }
            None => Ok(None),
        }
    }

    /// A new file (follower `key`, `size` bytes) that is the copy of a file whose truncation was
    /// handled before it appeared ([`Engine::truncated_without_copy`]): named after it, of the same
    /// input, at least as long as it was read, starting with its first bytes and holding its bytes
    /// just before that position, with a line end there. It is read on from there (it was read from
    /// its start: t27, every line of such a copy twice).
    ///
    /// One shorter than where the file was read to is a copy made before the writer added the lines
    /// read last: all of it was read. It is taken for that when it starts with the file's first bytes,
    /// ends with a line end, and was last modified before the truncation was handled (a copy is
    /// written before its original is truncated; a file of the next generation with the same first
    /// bytes is written after). It is read from its end; it was read from its start (t29 F5: gzip
    /// unlinks the copy before the truncation is handled, while a scan holds it open and brings it in
    /// after: the whole copy twice).
    fn read_late_copy_on(&mut self, key: u64, file: &std::fs::File, size: u64, now: Instant) {
        self.truncated_without_copy
            .retain(|t| now.duration_since(t.at) < COPY_PATIENCE);
        let Some(f) = self.followers.get(&key) else {
            return;
        };
        let modified = file.metadata().and_then(|m| m.modified()).ok();
        let Some(i) = self.truncated_without_copy.iter().rposition(|t| {
            t.input == f.input
                && super::copytruncate::could_be_copy(&t.path, &f.path)
                && if size >= t.pos {
                    super::copytruncate::holds_up_to(file, t.fingerprint, t.before, t.pos)
                } else {
                    modified.is_some_and(|m| m <= t.noticed)
                        && super::copytruncate::holds_start_to_end(file, t.fingerprint, size)
                }
        }) else {
            return;
        };
        let Some(t) = self.truncated_without_copy.remove(i) else {
            return;
        };
        let Some(f) = self.followers.get_mut(&key) else {
            return;
        };
        f.size = size;
        if size < t.pos {
            if f.advance_to(size, None) {
                self.routine.say(format_args!(
                    "{}: a copy of {} made before its truncation (seen after it), shorter than that was read to: all of it was read",
                    Esc::path(&f.path),
                    Esc::path(&t.path)
                ));
            }
            return;
        }
        if f.advance_to(t.pos, None) {
            self.routine.say(format_args!(
                "{}: a copy of {} made before its truncation (seen after it): read on from byte {}",
                Esc::path(&f.path),
                Esc::path(&t.path),
                t.pos
            ));
            self.counters.copies_read += 1;
        }
    }

    /// The copies waiting on `gone` (truncated, closed, retired: see [`Engine::judge_copy`]) are read on
    /// from where it was read to: up to there they hold its bytes, which were shipped from it. Compared
    /// again where it still holds them; where it was truncated, the copy holds what it had.
    fn release_copies(&mut self, gone: &Follower) {
        let waiting: Vec<u64> = self
            .followers
            .values()
            .filter(|f| matches!(f.copy, CopyOf::Of { key, .. } if key == gone.key))
            .map(|f| f.key)
            .collect();
        for k in waiting {
            self.copies.remove(&k);
            self.hot.insert(k);
            let Some(f) = self.followers.get_mut(&k) else {
                continue;
            };
            f.copy = CopyOf::No;
            let Some(file) = file_of(f) else { continue };
            let size = file.metadata().map_or(0, |m| m.len());
            let n = size.min(gone.read_pos);
            let start = match gone.file.as_ref() {
                // Truncated and written again past `n`: the copy holds what it had up to there.
                Some(of) => match against(&file, of, gone, n) {
                    Against::Same | Against::Truncated => n,
                    Against::Other => 0,
                },
                None => n,
            };
            f.size = size;
            if f.advance_to(start, None) && start > 0 {
                self.routine.say(format_args!(
                    "{}: reading its copy {} from byte {start} (what is before was read from it)",
                    Esc::path(&gone.path),
                    Esc::path(&f.path)
                ));
                self.counters.copies_read += 1;
            }
        }
    }

    /// Copies waiting while their original is followed are looked at again (they may have stayed
    /// unchanged long enough to be read from their start).
    pub fn wake_copies(&mut self) {
        self.hot.extend(self.copies.iter().copied());
    }

    /// The followers at `path`.
    fn at_path(&mut self, path: &std::path::Path) -> &[u64] {
        PathIndex::of(&mut self.by_path, &self.followers)
            .files
            .get(path)
            .map_or(&[], Vec::as_slice)
    }

    /// Applies what a scan found: renames, rotations, truncations, new files. Returns false when the
    /// scan was asked for before a reload and is dropped (scan again). With `read_all` (file events
    /// cannot be trusted: no inotify, or a directory not watched), every file is read once after a
    /// full scan; otherwise only those the scan found changed (rotated ones too, by their
    /// descriptors; [`Engine::close_idle`] finishes those that went quiet).
    pub fn apply_scan(&mut self, r: ScanResult, now: Instant, read_all: bool) -> bool {
        self.lent = 0;
        if r.generation != self.generation {
            return false;
        }
        self.version += 1;
        if r.full {
            self.fd_waiting.clear();
            for (pattern, bytes) in &r.waiting {
                let w = self.fd_waiting.entry(self.input_of(*pattern)).or_default();
                w.0 += 1;
                w.1 += bytes;
            }
        }
        if r.full {
            self.counters.full_scans += 1;
            self.unreadable = r.unreadable;
            self.compressed = Arc::new(r.compressed.into_iter().collect());
        } else if !r.compressed.is_empty() {
            Arc::make_mut(&mut self.compressed).extend(r.compressed);
        }
        for (path, size) in r.gone_unread {
            self.counters.gone_unread += 1;
            self.warnings.say(format_args!(
                "{}: deleted before shipper could open it; the {size} bytes it held when listed were not read",
                Esc::path(&path)
            ));
        }
        for (key, size, mtime) in r.changed {
            if let Some(f) = self.followers.get_mut(&key) {
                f.seen = (size, mtime);
                self.hot.insert(key);
            }
        }
        let mut now_warned = HashSet::new();
        for n in r.notices {
            if n.key.starts_with(scan::COMPRESSED_KEY) {
                self.say_compressed(n);
                continue;
            }
            // Once per scan too: a directory `**` walks and a glob then lists is one notice.
            if !self.scan_warned.contains(&n.key) && !now_warned.contains(&n.key) {
                self.warnings.say(format_args!("{}", n.text));
            }
            now_warned.insert(n.key);
        }
        if r.full {
            self.scan_warned = now_warned;
        } else if self.scan_warned.len() < WARNED_MAX {
            self.scan_warned.extend(now_warned);
        }
        for (key, path) in r.renamed {
            if let Some(fl) = self.followers.get_mut(&key) {
                crate::log::debug(format_args!(
                    "{} is now {}",
                    Esc::path(&fl.path),
                    Esc::path(&path)
                ));
                fl.origin = path.clone();
                let old = std::mem::replace(&mut fl.path, path);
                self.by_path = None;
                if self.renamed_from.len() >= MAX_RENAMES_KEPT {
                    self.renamed_from
                        .retain(|_, (_, at)| now.duration_since(*at) < ROTATION_WINDOW);
                }
                if self.renamed_from.len() < MAX_RENAMES_KEPT {
                    self.renamed_from.insert(old, (key, now));
                }
            }
        }
        for (key, new_path) in r.gone {
            self.gone(key, new_path, now);
        }
        for (key, id) in r.truncated {
            // Still the file the scan looked at (not, meanwhile, gone on in its copy).
            if self.followers.get(&key).is_some_and(|f| f.id.same(&id)) {
                self.restart_truncated(key);
            }
        }
        let mut rewritten = Vec::new();
        for (key, file, moved) in r.reopened {
            if let Some(f) = self.followers.get_mut(&key) {
                f.file = Some(file);
                self.hot.insert(key);
                // Written while closed to the very size it was read to (t16: copytruncate, then
                // lines of one width up to that size; never re-opened, its new lines were lost):
                // its first bytes tell.
                if moved.is_none()
                    && !f.rotated
                    && f.read_pos > 0
                    && !f.recheck_fingerprint().unwrap_or(true)
                {
                    rewritten.push(key);
                }
            }
            if moved.is_some() {
                self.gone(key, moved, now);
            }
        }
        for key in rewritten {
            self.restart_truncated(key);
        }
        for n in r.known_rotated {
            // Rotated while we were not looking: finish it from the checkpoint, then close it.
            if let Some(key) = self.start(n, now) {
                self.gone(key, None, now);
            }
        }
        for (k, path) in r.known_moved {
            if let Some(e) = self.known.get_mut(&k) {
                e.path = path;
                self.version += 1;
            }
        }
        for k in r.known_gone {
            if !self.followers.values().any(|f| (f.id.dev, f.id.ino) == k) {
                self.known.remove(&k);
            }
        }
        // The scan ran while the engine went on: a file it found new may be followed meanwhile (a
        // copy a truncated file's follower went on in), and a partial scan does not know every
        // follower (a new name may be a hard link to a followed file).
        let followed: HashSet<(u64, u64)> = match r.opened.is_empty() {
            true => HashSet::new(),
            false => self
                .followers
                .values()
                .map(|f| (f.id.dev, f.id.ino))
                .collect(),
        };
        // Files the checkpoint knows go first: one truncated while we were away goes on in its
        // copy (copytruncate), which must then not start again as a new file from byte 0 when a
        // pattern matches it too (t15: `*.log*` shipped the copy twice after a restart).
        let mut followed = followed;
        let mut opened = r.opened;
        opened.sort_by_key(|n| !self.known.contains_key(&(n.found.id.dev, n.found.id.ino)));
        for n in opened {
            let id = n.found.id;
            if followed.contains(&(id.dev, id.ino))
                && self.followers.values().any(|f| f.id.same(&id))
            {
                continue;
            }
            if self.start(n, now).is_some() {
                followed.insert((id.dev, id.ino));
            }
            if let Some(copy) = self.copy_started.take() {
                followed.insert(copy);
            }
        }
        if !r.full {
            return true;
        }
        self.first_scan = false;
        if read_all {
            self.hot.extend(self.followers.keys().copied());
        }
        true
    }

    /// A followed file's path no longer names it (rotated or deleted): finish it, under `new_path` if
    /// it was found next to its old name. A closed, finished file that is gone is forgotten.
    fn gone(&mut self, key: u64, new_path: Option<PathBuf>, now: Instant) {
        let Some(f) = self.followers.get_mut(&key) else {
            return;
        };
        if f.file.is_none() && new_path.is_none() {
            // Closed, idle, read and acknowledged, and now gone: nothing more can come.
            if let Some(f) = self.remove_follower(key) {
                self.remember(&f);
            }
            return;
        }
        if !f.rotated {
            f.rotated = true;
            f.last_active = now;
            // A file deleted (no name left anywhere) was not rotated: not counted as one.
            if !f.rotation_counted && (new_path.is_some() || deleted(f).is_none()) {
                self.counters.rotations += 1;
            }
            crate::log::debug(format_args!(
                "{}: rotated or deleted; finishing it",
                Esc::path(&f.path)
            ));
        }
        if let Some(p) = new_path {
            f.path = p;
            self.by_path = None;
        }
        self.version += 1;
        self.hot.insert(key);
    }

    fn alloc_key(&mut self) -> u64 {
        loop {
            let k = self.next_key;
            self.next_key = if k >= MAX_KEY { 1 } else { k + 1 };
            if !self.followers.contains_key(&k) {
                return k;
            }
        }
    }

    /// The input of pattern `pattern`.
    fn input_of(&self, pattern: usize) -> usize {
        self.pattern_input.get(pattern).copied().unwrap_or(0)
    }

    /// The route of a file of input `input`.
    fn route(&mut self, input: usize, path: &std::path::Path) -> Route {
        let Some(i) = self.cfg.inputs.get(input) else {
            return Route::default();
        };
        let r = i.route.resolve(path, &self.cfg.hostname);
        let (topic_name, key, headers) = (r.topic, r.key, r.headers);
        if r.renamed {
            let shown = Esc::path(path).to_string();
            self.warn_once(
                format!("topic-name:{topic_name}"),
                format_args!("the topic for {shown} is '{topic_name}' (a topic name holds only [a-zA-Z0-9._-], at most 249 of them: other bytes became '_', and a longer name was cut)"),
            );
        }
        Route {
            topic_name,
            topic: None,
            key,
            headers,
        }
    }

    /// Starts following a newly opened file; returns its key.
    fn start(&mut self, n: super::scan::NewFile, now: Instant) -> Option<u64> {
        let size = n.file.metadata().map_or(n.found.size, |m| m.len());
        let input = self.input_of(n.found.pattern);
        let from_end = self.cfg.inputs.get(input).is_some_and(|i| i.from_end);
        let entry = self.known.get(&(n.found.id.dev, n.found.id.ino));
        // Found only through its checkpoint entry, as an older generation of the file a pattern
        // named (not under a name a pattern matches now).
        let generation = n.origin.as_ref().is_some_and(|o| *o != n.found.path);
        let mut not_ours = false;
        // Empty at the last stop: a copytruncate while shipper was down leaves no trace in it (no
        // first bytes to compare, nothing it could be shorter than), only a copy next to it newer
        // than the checkpoint, holding lines never read (t20 F1: lost).
        let mut empty_then = false;
        // A known file truncated while we were away: where we were in it, and its first bytes then.
        let mut was = None;
        // Started inside a line longer than the line limit (at its end, or where the last run
        // stopped skipping it): the rest of it is skipped.
        let mut skip_first = None;
        let start = match entry {
            // Same file (inode, birth time, first bytes): resume where Kafka acknowledged.
            Some(e) if e.id.same(&n.found.id) => {
                // The scan may have looked while it was being written (a copy being made): its
                // first bytes now.
                let now_head;
                let head = if n.head.len() < e.fingerprint.len as usize {
                    now_head = super::identity::head(&n.file, super::identity::FINGERPRINT_BYTES)
                        .unwrap_or_default();
                    &now_head
                } else {
                    &n.head
                };
                // A position not at a line start (unless it is the end, a last line without its
                // newline) means the file was rewritten while we were away, with the same first
                // bytes: read from its start, rather than lose lines and ship a fragment.
                let after_newline =
                    e.offset == 0 || byte_at(&n.file, e.offset - 1).is_some_and(|b| b == b'\n');
                let at_line_start = after_newline || e.offset >= size;
                // Stopped while skipping the rest of a line longer than the limit: resumed there,
                // still skipping (t32 F1: it was taken for a rewrite and the whole file shipped
                // again), also when the file still ends there (t33 F1: the rest of the line, written
                // after the restart, was shipped as a record of its own). The checkpoint says so;
                // one written before it did is judged by the bytes: no line end within the limit
                // before the position (which misjudged a limit raised between the runs, t33 F2,
                // and a rewrite with a line that long across the position, t33 F3).
                // The mark is checked against the bytes: a file rewritten in place with other lines
                // there is read again (t34 F1: 466 lines lost past a trusted mark).
                let in_long_line = match e.long_line {
                    _ if after_newline || e.offset > size => None,
                    LongLine::From(from, hash) => {
                        still_in_line(&n.file, from, e.offset, hash).then_some(from)
                    }
                    LongLine::No => None,
                    LongLine::Unknown => super::lines::line_start_before(
                        &n.file,
                        e.offset,
                        self.cfg.limits.max_line_bytes,
                    )
                    .is_none()
                    .then_some(e.offset),
                };
                let same_head = head_matches(head, e.fingerprint);
                if same_head && e.offset <= size && (at_line_start || in_long_line.is_some()) {
                    // (Not an entry recorded by this start's `from_end` look: empty then, any copy
                    // next to it is older history.)
                    empty_then = self.first_scan
                        && !generation
                        && e.offset == 0
                        && e.fingerprint.len == 0
                        && !self
                            .from_end_seen
                            .as_ref()
                            .is_some_and(|(_, r)| r.contains(&(e.id.dev, e.id.ino)));
                    skip_first = in_long_line;
                    e.offset
                } else if !same_head && e.path != n.found.path {
                    // Other bytes under another name: a new file that reuses the inode of one read
                    // before and since deleted (gzip's `.gz` of a rotated log, written while the
                    // entry of the file it replaces was still kept). Nothing was truncated.
                    0
                } else if !same_head && generation {
                    // An older generation now holding other bytes: a new file that got its inode
                    // (logrotate's next copy, once `delaycompress` freed it), not ours rewritten.
                    // Not followed: if it is a copy of a followed file, that file's copy rule reads
                    // it on from where that file was read to (t20 F2: read from its start, a whole
                    // generation went to Kafka twice).
                    not_ours = true;
                    0
                } else {
                    // Said as seen: other first bytes may be a file replaced, not truncated (t20 F6).
                    let what = match same_head {
                        // From an older shipper's checkpoint, a position inside a long line is
                        // judged by today's limit (t34 F4: the message blamed a rewrite).
                        true if e.long_line == LongLine::Unknown && e.offset <= size => "not at a line start (rewritten in place; or, as an older shipper's checkpoint does not say, inside a long line skipped under a lower --max-line-bytes)",
                        true => "shorter, or rewritten in place,",
                        false => "first bytes changed (truncated and written again, or replaced)",
                    };
                    crate::log::info(format_args!(
                        "{}: {what} since it was read to byte {} before the last stop; reading it from the start",
                        Esc::path(&n.found.path),
                        e.offset
                    ));
                    self.counters.truncations += 1;
                    was = Some((e.offset, e.fingerprint));
                    0
                }
            }
            // Not there when the start recorded the ends: written since, read whole.
            _ if self.first_scan
                && from_end
                && self
                    .from_end_seen
                    .as_ref()
                    .is_some_and(|(s, _)| !s.contains(&(n.found.id.dev, n.found.id.ino))) =>
            {
                0
            }
            _ if self.first_scan && from_end => {
                match super::lines::line_start_before(&n.file, size, self.cfg.limits.max_line_bytes)
                {
                    Some(at) => at,
                    None => {
                        // Not shipped (its head is history), but said (t32 F7).
                        self.cut.say(format_args!(
                            "{}: --from-end starts inside a line longer than --max-line-bytes {}: the rest of it is skipped",
                            Esc::path(&n.found.path),
                            self.cfg.limits.max_line_bytes
                        ));
                        skip_first = Some(size);
                        size
                    }
                }
            }
            _ => 0,
        };
        if not_ours {
            crate::log::debug(format_args!(
                "{}: another file than the generation read before under this name (its inode was reused); forgotten",
                Esc::path(&n.found.path)
            ));
            self.known.remove(&(n.found.id.dev, n.found.id.ino));
            self.version += 1;
            return None;
        }
        // A new file under the name a followed file was just renamed away from: a rotation.
        if let Some((k, at)) = self.renamed_from.remove(&n.found.path) {
            if let Some(f) = self.followers.get_mut(&k) {
                if now.duration_since(at) < ROTATION_WINDOW && !f.rotation_counted && !f.rotated {
                    f.rotation_counted = true;
                    self.counters.rotations += 1;
                }
            }
        }
        let key = self.alloc_key();
        let route = self.route(input, &n.found.path);
        match Follower::new(
            key,
            n.found.path.clone(),
            Arc::new(n.file),
            n.found.id,
            start,
            input,
            route,
        ) {
            Ok(mut f) => {
                // Found at the start, no file is known to have been read: none is judged a copy.
                if self.first_scan {
                    f.copy = CopyOf::No;
                }
                if let Some(from) = skip_first {
                    f.advance_to(start, Some(from));
                }
                f.multiline = self.cfg.inputs.get(input).and_then(|i| i.multiline.clone());
                if let Some(o) = n.origin {
                    f.origin = o;
                }
                // A generation closed after its rotation (counted then) and opened again for lines
                // written late: no rotation of its own when it is finished again.
                f.rotation_counted |= generation && !self.first_scan;
                f.target = n.target;
                if let Some(host) = &self.cfg.exactly_once {
                    let source = super::exactly::source_id(host, &f.id);
                    let key = (f.route.topic_name.clone(), source.to_string());
                    if let Some((end, skipping)) = self.in_kafka.remove(&key) {
                        f.advance_to(end, skipping.then_some(end));
                        // Kafka is the record: past the file's end, it was truncated after `end`.
                        if end > f.size {
                            let fp = was.map_or(f.fingerprint, |(_, fp)| fp);
                            was = Some((end, fp)).filter(|_| !skipping);
                        }
                    }
                    f.source = Some(source);
                }
                crate::log::debug(format_args!(
                    "following {} from byte {start}",
                    Esc::path(&f.path)
                ));
                f.last_active = now;
                self.known.remove(&(f.id.dev, f.id.ino));
                self.hot.insert(key);
                self.insert_follower(key, f);
                if let Some((pos, fp)) = was {
                    self.finish_copy(key, fp, pos, false, None);
                }
                if empty_then {
                    self.finish_copy(key, Fingerprint::EMPTY, 0, false, self.checkpoint_written);
                }
                Some(key)
            }
            Err(e) => {
                self.warn_once(
                    format!("follow:{}", n.found.path.display()),
                    format_args!("cannot follow {}: {e}", Esc::path(&n.found.path)),
                );
                None
            }
        }
    }

    /// Applies a new configuration (a reload): followers of inputs that are gone are retired (nothing
    /// more is read; they close once acknowledged), followers of inputs that stay take the input's new
    /// route and multiline settings for what they read from now on, new patterns are found by the next
    /// scan. Limits and the descriptor budget stay as they were. Returns a summary for the log.
    pub fn reconfigure(&mut self, mut new: EngineConfig) -> String {
        self.version += 1;
        new.limits = self.cfg.limits.clone();
        new.max_open_files = self.cfg.max_open_files;
        new.cap_events();
        let old_names: Vec<String> = self.cfg.inputs.iter().map(|i| i.name.clone()).collect();
        let new_names: Vec<String> = new.inputs.iter().map(|i| i.name.clone()).collect();
        let added: Vec<&str> = new_names
            .iter()
            .filter(|n| !old_names.contains(n))
            .map(String::as_str)
            .collect();
        let removed: Vec<&str> = old_names
            .iter()
            .filter(|n| !new_names.contains(n))
            .map(String::as_str)
            .collect();
        let changed: Vec<&str> = self
            .cfg
            .inputs
            .iter()
            .filter(|old| {
                new.inputs.iter().any(|n| {
                    n.name == old.name
                        && (n.route != old.route
                            || n.multiline.is_some() != old.multiline.is_some()
                            || n.patterns.len() != old.patterns.len()
                            || n.patterns
                                .iter()
                                .zip(&old.patterns)
                                .any(|(a, b)| !a.same_as(b)))
                })
            })
            .map(|i| i.name.as_str())
            .collect();
        // Named, not only counted: which inputs a reload touched is what an operator checks.
        let summary = format!(
            "({}; {}; {})",
            named_inputs(&added, "added"),
            named_inputs(&removed, "removed"),
            named_inputs(&changed, "changed")
        );
        self.generation += 1;
        let hostname = new.hostname.clone();
        let mut warnings = Vec::new();
        for f in self.followers.values_mut() {
            // The file belongs to the first input whose patterns match the path it was found at, as
            // a scan would decide: an input renamed, or removed while another's glob covers its
            // files, hands them over at once (they waited for the minute's rescan); a file its
            // input's narrowed paths or new exclude no longer match is let go.
            let owner = new
                .inputs
                .iter()
                .position(|i| i.patterns.iter().any(|p| p.matches(&f.origin)));
            match owner {
                None => {
                    if !f.retired {
                        f.retired_from = self.cfg.inputs.get(f.input).map(|i| i.name.clone());
                    }
                    f.retired = true;
                }
                Some(ni) => {
                    let input = &new.inputs[ni];
                    let from = match &f.retired_from {
                        Some(name) if f.retired => Some(name.clone()),
                        _ => self.cfg.inputs.get(f.input).map(|i| i.name.clone()),
                    };
                    if let Some(from) = from.filter(|n| *n != input.name) {
                        f.handed_over_from(&from);
                    }
                    f.input = ni;
                    f.retired = false;
                    f.retired_from = None;
                    f.multiline = input.multiline.clone();
                    let r = input.route.resolve(&f.path, &hostname);
                    let (topic_name, key, headers) = (r.topic, r.key, r.headers);
                    if r.renamed {
                        warnings.push(topic_name.clone());
                    }
                    if topic_name != f.route.topic_name
                        || key != f.route.key
                        || headers != f.route.headers
                    {
                        f.route = Route {
                            topic_name,
                            topic: None,
                            key,
                            headers,
                        };
                    }
                }
            }
        }
        for t in warnings {
            self.warn_once(
                format!("topic-name:{t}"),
                format_args!(
                    "topic name '{t}' had characters Kafka does not allow; they became '_'"
                ),
            );
        }
        let (patterns, owner) = new.flat_patterns();
        self.patterns = patterns;
        self.pattern_input = owner;
        self.cfg = new;
        self.hot.extend(self.followers.keys().copied());
        let n = self.cfg.inputs.len();
        format!("{n} input{} {summary}", if n == 1 { "" } else { "s" })
    }

    /// Marks the followers of multiline inputs for reading (their last event may be complete now).
    pub fn touch_multiline(&mut self) {
        for f in self.followers.values() {
            if f.multiline.is_some() && !f.retired {
                self.hot.insert(f.key);
            }
        }
    }

    /// Marks the followers of `path` for reading (a watch event said it changed).
    pub fn touch(&mut self, path: &std::path::Path) {
        let keys = self.at_path(path).to_vec();
        self.hot.extend(keys);
    }

    /// Whether some follower waits to be read.
    pub fn has_hot(&self) -> bool {
        !self.hot.is_empty()
    }

    /// What files created or renamed under these names call for. The path of a followed file or of a
    /// directory above one (renamed away) needs a full scan (a rotation, a move); so does any name
    /// before the first full scan, or more names than are worth judging one by one. A name a pattern
    /// finds, and nothing else, is only looked at ([`Engine::partial_scan_request`]): a new log file
    /// in a tree of 10,000 costs one `lstat`, not 10,000. Other names need nothing.
    pub fn judge_names(&mut self, names: &[PathBuf]) -> Names {
        if names.len() > MAX_NAMES_JUDGED || (self.first_scan && !names.is_empty()) {
            return Names::Rescan;
        }
        // One lookup per name: with 10,000 followed files, comparing each name with every path took
        // milliseconds per checkpoint write in the watched tree.
        let index = PathIndex::of(&mut self.by_path, &self.followers);
        let patterns = &self.patterns;
        let mut new = Vec::new();
        for n in names {
            if index.files.contains_key(n.as_path()) || index.dirs.contains(n.as_path()) {
                return Names::Rescan;
            }
            if patterns.iter().any(|p| p.may_name(n) && p.finds(n)) {
                new.push(n.clone());
            }
        }
        if new.is_empty() {
            Names::Nothing
        } else {
            Names::New(new)
        }
    }

    /// The closed followers at `path` (a change there may need them re-opened).
    pub fn closed_at(&mut self, path: &std::path::Path) -> Vec<u64> {
        let keys = self.at_path(path).to_vec();
        keys.into_iter()
            .filter(|k| self.followers.get(k).is_some_and(|f| f.file.is_none()))
            .collect()
    }

    /// Reads new lines of the hot files into `sink` until it is full or they are read to their end.
    /// Returns whether some file still has bytes waiting.
    pub fn read_pass(&mut self, sink: &mut dyn Sink, timestamp_ms: i64, now: Instant) -> bool {
        let keys: Vec<u64> = self.hot.iter().copied().collect();
        for key in keys {
            if sink.is_full() {
                return true;
            }
            self.hot.remove(&key);
            let Some(f) = self.followers.get_mut(&key) else {
                continue;
            };
            if f.retired {
                continue;
            }
            if f.route.topic.is_none()
                && self.cfg.exactly_once.is_some()
                && !self.resumed.contains(&f.route.topic_name)
            {
                self.to_resume.insert(f.route.topic_name.clone());
                self.waiting.insert(key);
                continue;
            }
            if f.route.topic.is_none() {
                match sink.topic(&f.route.topic_name) {
                    TopicState::Ready(i) => f.route.topic = Some(i),
                    TopicState::Pending(_) => {
                        // Read when the topic is known (see `topic_ready`): the file is the buffer.
                        self.waiting.insert(key);
                        continue;
                    }
                }
            }
            // Its topic holds its most of the buffer (its deliveries may fail for good: an ACL):
            // read when it holds less (see `topic_ready`), while the files of other topics go on.
            if f.route.topic.is_some_and(|i| sink.holds_back(i)) {
                self.waiting.insert(key);
                continue;
            }
            let headers: Vec<crate::wire::records::Header<'_>> = f
                .route
                .headers
                .iter()
                .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                .collect();
            if !sink.fits_alone(f.route.key.as_deref(), &headers) {
                // No line of it can be sent, whatever is cut: it waits in the file, said once,
                // rather than every line skipped (t32 F2: in no topic and no dead letter).
                let p = Esc::path(&f.path).to_string();
                self.warn_once(
                    format!("nofit:{p}"),
                    format_args!("cannot ship the lines of {p}: its record key and headers alone take more than --max-message-bytes allows; its lines wait in the file (raise --max-message-bytes, or shorten the key and headers, and restart)"),
                );
                continue;
            }
            if f.read_pos == 0 && f.copy != CopyOf::No && !self.judge_copy(key, now) {
                continue;
            }
            let Some(f) = self.followers.get_mut(&key) else {
                continue;
            };
            let finish = f.rotated && now.duration_since(f.last_active) >= ROTATED_GRACE;
            let mut c = Counters::default();
            let r = f.read(sink, &self.cfg.limits, (timestamp_ms, now), finish, &mut c);
            let route = self.route_key(key);
            self.count(route, &c);
            let Some(f) = self.followers.get(&key) else {
                continue;
            };
            if c.long_lines > 0 {
                // Named, not only counted (t31 F6), as produce names its lines.
                self.cut.say(format_args!(
                    "{}: {} cut to fit (--max-line-bytes {}, or the largest record --max-message-bytes allows)",
                    Esc::path(&f.path),
                    crate::escape::count(c.long_lines, "long line", "long lines"),
                    self.cfg.limits.max_line_bytes
                ));
            }
            match r {
                Ok(ReadResult::Lines { more: true, .. })
                    if f.route.topic.is_some_and(|i| sink.holds_back(i)) =>
                {
                    self.waiting.insert(key);
                }
                Ok(ReadResult::Lines { more: true, .. }) => {
                    self.hot.insert(key);
                }
                Ok(ReadResult::Lines { .. }) => {}
                Ok(ReadResult::Hole { bytes, more }) => {
                    self.routine.say(format_args!(
                        "{}: passed over {} NUL bytes at its start after the truncation: a writer without O_APPEND wrote on at its old offset, and the bytes before that read as zeros (a hole, not lines)",
                        Esc::path(&f.path),
                        bytes
                    ));
                    if more {
                        self.hot.insert(key);
                    }
                }
                Ok(ReadResult::Truncated) => self.restart_truncated(key),
                Ok(ReadResult::Compressed(kind)) => {
                    let n = super::scan::compressed_notice(&f.path, f.id, kind);
                    self.say_compressed(n);
                    // Nothing of it was read: it is dropped, and scans pass over it (judged again).
                    self.remove_follower(key);
                    self.hot.remove(&key);
                }
                Ok(ReadResult::BadPage { offset }) => {
                    let p = Esc::path(&f.path).to_string();
                    self.warn_once(
                        format!("eio:{p}:{offset}"),
                        format_args!("cannot read {p} at byte {offset}: the disk returned an error (bad page); will retry"),
                    );
                }
                Err(e) => {
                    let p = Esc::path(&f.path).to_string();
                    self.warn_once(format!("read:{p}"), format_args!("cannot read {p}: {e}"));
                }
            }
        }
        !self.hot.is_empty()
    }

    /// The names of the inputs.
    pub fn input_names(&self) -> HashSet<String> {
        self.cfg.inputs.iter().map(|i| i.name.clone()).collect()
    }

    /// The ends of the files of `from_end` inputs a reload added, taken when it read the config:
    /// each resumes there when a scan finds it, unless the file is followed or known already.
    pub fn add_ends(&mut self, entries: Vec<Entry>) {
        for e in entries {
            let key = (e.id.dev, e.id.ino);
            let followed = self.followers.values().any(|f| (f.id.dev, f.id.ino) == key);
            if !followed && !self.known.contains_key(&key) {
                self.known.insert(key, e);
                self.version += 1;
            }
        }
    }

    /// The topics files wait for (their names; not those of retired inputs): after a reload, a
    /// topic no file waits for any more is no longer looked up, nor reported as waited for.
    pub fn waited_topics(&self) -> std::collections::HashSet<String> {
        self.waiting
            .iter()
            .filter_map(|k| self.followers.get(k))
            .filter(|f| !f.retired && f.route.topic.is_none())
            .map(|f| f.route.topic_name.clone())
            .collect()
    }

    /// A topic became known: the files waiting for it are read.
    pub fn topic_ready(&mut self, name: &str) {
        let ready: Vec<u64> = self
            .waiting
            .iter()
            .copied()
            .filter(|k| {
                self.followers
                    .get(k)
                    .is_some_and(|f| f.route.topic_name == name)
            })
            .collect();
        for k in ready {
            self.waiting.remove(&k);
            self.hot.insert(k);
        }
    }

    /// The name of the input `f` belongs to: the one it was retired from when a reload removed it
    /// (its index then names another input, or none).
    fn input_name<'a>(&'a self, f: &'a Follower) -> &'a str {
        match &f.retired_from {
            Some(name) => name,
            None => self.cfg.inputs.get(f.input).map_or("", |i| i.name.as_str()),
        }
    }

    /// The (input name, topic) a follower's lines are counted under.
    fn route_key(&self, key: u64) -> Option<(String, String)> {
        let f = self.followers.get(&key)?;
        Some((self.input_name(f).to_string(), f.route.topic_name.clone()))
    }

    /// Adds line counts to the totals and to their route's.
    fn count(&mut self, route: Option<(String, String)>, c: &Counters) {
        self.counters.add(c);
        if let Some(r) = route {
            self.routes.entry(r).or_default().add(c);
        }
    }

    /// A file shrank or was rewritten in place: follow it again from byte 0 under a new key, so acks
    /// of lines from its old content no longer move its checkpoint.
    ///
    /// The old follower goes on in the copy a copytruncate rotation made, when there is one: what it
    /// had not read is read there, and its lines in flight keep its position (and the checkpoint's)
    /// until Kafka has them — a crash meanwhile resends them from the copy instead of losing them.
    fn restart_truncated(&mut self, key: u64) {
        let Some(old) = self.followers.get(&key) else {
            return;
        };
        let copy = match old.retired || old.rotated {
            true => None,
            false => super::copytruncate::find(
                &old.path,
                old.fingerprint,
                old.read_pos,
                old.id,
                &self.cfg.policy,
                None,
            ),
        };
        if copy.is_none() && !old.retired && !old.rotated && old.read_pos > 0 {
            if self.truncated_without_copy.len() >= LATE_COPIES {
                self.truncated_without_copy.pop_front();
            }
            self.truncated_without_copy.push_back(Truncated {
                path: old.path.clone(),
                input: old.input,
                fingerprint: old.fingerprint,
                before: old.before(),
                pos: old.read_pos,
                at: Instant::now(),
                noticed: SystemTime::now(),
            });
        }
        // A copy that a pattern follows too is read by its own follower: if nothing of it was read
        // yet, from where this file was read to (as this follower is removed, below).
        let copy =
            copy.and_then(
                |c| match self.followers.values_mut().find(|f| f.id.same(&c.id)) {
                    Some(f) => {
                        if f.read_pos == 0 && f.copy != CopyOf::No {
                            f.copy = CopyOf::Of {
                                key,
                                size: 0,
                                grew: Instant::now(),
                            };
                        }
                        None
                    }
                    None => Some(c),
                },
            );
        let k = self.alloc_key();
        if let Some(old) = self.followers.get(&key) {
            self.routine.say(format_args!(
                "{}: truncated (copytruncate?); reading again from the start",
                Esc::path(&old.path)
            ));
        }
        let Some(old) = self.remove_follower(key) else {
            return;
        };
        self.counters.truncations += 1;
        self.known.remove(&(old.id.dev, old.id.ino));
        let Some(file) = old.file.clone() else { return };
        match Follower::new(
            k,
            old.path.clone(),
            file,
            old.id,
            0,
            old.input,
            old.route.clone(),
        ) {
            Ok(mut f) => {
                // Everything the file's follower was given besides its position: its events were
                // joined (multiline), its writes seen under its link's target, its input retired
                // (then nothing of it is read again) — t49: lost at a copytruncate.
                f.last_active = old.last_active;
                f.origin = old.origin.clone();
                f.source = old.source.clone();
                f.target = old.target.clone();
                f.multiline = old.multiline.clone();
                f.retired = old.retired;
                f.retired_from = old.retired_from.clone();
                f.hole_check = true;
                self.hot.insert(k);
                self.insert_follower(k, f);
            }
            Err(e) => crate::log::warn(format_args!(
                "cannot follow {} again: {e}",
                Esc::path(&old.path)
            )),
        }
        if let Some(c) = copy {
            self.continue_in_copy(old, c);
        }
    }

    /// A truncated file's follower goes on in its copy: same key, positions and lines in flight (the
    /// copy holds the same bytes), now at the copy's path and identity, finished and closed like a
    /// file renamed away. Nothing to read and nothing in flight: it is dropped.
    fn continue_in_copy(&mut self, mut f: Follower, copy: super::copytruncate::Copy) {
        let unread = copy.len > f.read_pos;
        if (!unread && f.all_acked()) || copy.len < f.read_pos {
            // Nothing to read in it (or it is shorter than what we read: made before lines that we
            // read too): not kept open, but known as read to its end, so that a pattern that matches
            // it (`app.log*`) finds it read, not new.
            self.know(Entry {
                id: copy.id,
                fingerprint: f.fingerprint,
                offset: copy.len,
                long_line: LongLine::No,
                path: copy.path,
                origin: f.origin,
            });
            return;
        }
        let shown = Esc::path(&f.path).to_string();
        if unread {
            self.routine.say(format_args!(
                "{shown}: reading the rest of it from its copy {} (from byte {})",
                Esc::path(&copy.path),
                f.read_pos
            ));
            self.counters.copies_read += 1;
        }
        f.path = copy.path;
        f.file = Some(Arc::new(copy.file));
        f.id = copy.id;
        f.rotated = true;
        f.last_active = Instant::now();
        if let Some(host) = &self.cfg.exactly_once {
            f.source = Some(super::exactly::source_id(host, &f.id));
        }
        let key = f.key;
        self.hot.insert(key);
        self.insert_follower(key, f);
        self.close_if_over_budget(key);
    }

    /// A copy taken up at a truncation is closed again if it would take a descriptor the budget does
    /// not have (copytruncate over more files than the limit leaves: t15, 500 files under `ulimit -n
    /// 256`, ran shipper out of descriptors for scans and the checkpoint). Closed, it waits its turn
    /// like any closed file with bytes to read: scans re-open it as descriptors free up.
    fn close_if_over_budget(&mut self, key: u64) {
        if self.open_files() + self.lent > self.cfg.max_open_files {
            if let Some(f) = self.followers.get_mut(&key) {
                // Its size, for the lag and to know it is not read to its end while closed.
                if let Some((size, _)) = f.close() {
                    f.size = size;
                }
                crate::log::debug(format_args!(
                    "{}: closed until a descriptor is free",
                    Esc::path(&f.path)
                ));
            }
        }
    }

    /// Whether a file with bytes to read is closed for want of a descriptor (a copy taken up beyond
    /// the budget): scans must come until it is re-opened.
    pub fn starved(&self) -> bool {
        self.followers
            .values()
            .any(|f| f.file.is_none() && f.rotated && f.size > f.read_pos)
    }

    /// A copytruncate rotation copied the file before truncating it: what we had not read of it is in
    /// the copy. `like` is the follower of the truncated file (read again from 0), `fp` its first
    /// bytes before and `pos` where we were (`skipping` inside an over-long line). Found next to it
    /// (see [`super::copytruncate`]), the copy is read from there to its end and then closed, like a
    /// file renamed away.
    fn finish_copy(
        &mut self,
        like: u64,
        fp: Fingerprint,
        pos: u64,
        skipping: bool,
        since: Option<SystemTime>,
    ) {
        let Some(t) = self.followers.get(&like) else {
            return;
        };
        let Some(copy) = super::copytruncate::find(&t.path, fp, pos, t.id, &self.cfg.policy, since)
            .filter(|c| c.len > pos)
            .filter(|c| since.is_none() || !self.known.contains_key(&(c.id.dev, c.id.ino)))
        else {
            return;
        };
        if self.followers.values().any(|f| f.id.same(&copy.id)) {
            return; // A pattern matches the copy too: it is followed already.
        }
        let (input, route, multiline, origin) = (
            t.input,
            t.route.clone(),
            t.multiline.clone(),
            t.origin.clone(),
        );
        let shown = Esc::path(&t.path).to_string();
        let k = self.alloc_key();
        let path = copy.path.clone();
        match Follower::new(k, path, Arc::new(copy.file), copy.id, pos, input, route) {
            Ok(mut f) => {
                self.routine.say(format_args!(
                    "{shown}: reading the rest of it from its copy {} (from byte {pos})",
                    Esc::path(&copy.path)
                ));
                f.advance_to(pos, skipping.then_some(pos));
                f.multiline = multiline;
                f.origin = origin;
                f.rotated = true;
                f.copy_of = Some(like);
                f.last_active = Instant::now();
                if let Some(host) = &self.cfg.exactly_once {
                    f.source = Some(super::exactly::source_id(host, &f.id));
                }
                self.counters.copies_read += 1;
                self.hot.insert(k);
                self.copy_started = Some((f.id.dev, f.id.ino));
                self.insert_follower(k, f);
                self.close_if_over_budget(k);
            }
            Err(e) => crate::log::warn(format_args!(
                "cannot read the copy {} of {shown}: {e}",
                Esc::path(&copy.path)
            )),
        }
    }

    /// Applies deliveries: acknowledged lines (and lines failed for good, counted) move watermarks.
    /// `failed` is called for each failed batch with its error and the path of its file.
    /// `topic` is the topic the batch went to: the lines are counted there, and under the input of
    /// their own file (a batch holds lines of every file routed to its partition).
    pub fn on_delivery(
        &mut self,
        tokens: &[u64],
        error: Option<&crate::error::Error>,
        topic: &str,
    ) -> Option<(PathBuf, Option<u64>)> {
        self.version += 1;
        // The first file's path, and the end of its last line here.
        let mut path: Option<(u64, PathBuf, Option<u64>)> = None;
        // Lines per file, in a batch's order (a file's lines are together or few runs).
        let mut per_file = std::mem::take(&mut self.runs);
        for &t in tokens {
            let key = t >> SEQ_BITS;
            let mut earlier = None;
            if let Some(f) = self.followers.get_mut(&key) {
                earlier = f.earlier_input(t);
                let end = f.done(t);
                match &mut path {
                    None => path = Some((key, f.path.clone(), end)),
                    Some((k, _, last)) if *k == key => *last = end.max(*last),
                    Some(_) => {}
                }
            }
            match per_file.last_mut() {
                Some((k, e, n)) if *k == key && *e == earlier => *n += 1,
                _ => per_file.push((key, earlier, 1)),
            }
        }
        for &(key, earlier, n) in &per_file {
            let c = match error {
                None => Counters {
                    lines_acked: n,
                    ..Counters::default()
                },
                Some(_) => Counters {
                    lines_failed: n,
                    ..Counters::default()
                },
            };
            // Under the input that read them, which a reload may have changed since (t36 F1).
            let read_by = earlier.and_then(|i| {
                let f = self.followers.get(&key)?;
                f.earlier_input_name(i).map(str::to_string)
            });
            let route = match read_by {
                Some(input) => Some((input, topic.to_string())),
                None => self
                    .route_key(key)
                    .map(|(input, _)| (input, topic.to_string())),
            };
            self.count(route, &c);
        }
        for &(key, _, _) in &per_file {
            if let Some(f) = self.followers.get_mut(&key) {
                f.forget_earlier_inputs();
            }
        }
        per_file.clear();
        self.runs = per_file;
        path.map(|(_, p, end)| (p, end))
    }

    /// Lines counted per (input name, topic).
    pub fn route_counters(&self) -> &BTreeMap<(String, String), Counters> {
        &self.routes
    }

    /// Reads once more rotated or deleted files quiet for [`ROTATED_GRACE`] that still have bytes (a
    /// last line without its newline, which that read ships); closes those read to the end,
    /// acknowledged and quiet for a while;
    /// and, past `target` open files, closes the longest-idle finished ones (re-opened by identity when
    /// they change).
    pub fn close_idle(&mut self, now: Instant, starved: bool) {
        self.routine.tick();
        self.warnings.tick();
        self.cut.tick();
        // A rotated file quiet for ROTATED_GRACE with bytes left (a last line without its newline) is
        // read once more, which ships them: no event may ever come for it again.
        let due: Vec<u64> = self
            .followers
            .values()
            .filter(|f| {
                f.rotated
                    && now.duration_since(f.last_active) >= ROTATED_GRACE
                    && f.file
                        .as_ref()
                        .is_some_and(|file| file.metadata().is_ok_and(|m| m.len() > f.read_pos))
            })
            .map(|f| f.key)
            .collect();
        self.hot.extend(due);
        let done: Vec<u64> = self
            .followers
            .values()
            .filter(|f| {
                (f.retired && f.all_acked())
                    || f.rotated
                        && now.duration_since(f.last_active) >= ROTATED_GRACE * 2
                        && f.all_acked()
                        && f.file.as_ref().map_or(f.size <= f.read_pos, |file| {
                            file.metadata().is_ok_and(|m| m.len() <= f.read_pos)
                        })
            })
            .map(|f| f.key)
            .collect();
        for k in done {
            if let Some(f) = self.remove_follower(k) {
                crate::log::debug(format_args!("closed {}", Esc::path(&f.path)));
                // A deleted file (no name left) has nothing left to resume.
                if deleted(&f).is_none() {
                    self.remember(&f);
                }
            }
        }
        // Near the descriptor limit, files quiet for a second are closed; past OPEN_SOFT_TARGET, those
        // quiet for a minute (a file written now and then stays open; 10,000 idle files do not).
        let open = self.open_files();
        let hard = self.cfg.max_open_files * 3 / 4;
        let (target, quiet) = if starved {
            // Files wait for a descriptor: every file read to its end gives its own back, written
            // or not, and is re-opened in its turn (300 busy files under a budget of 64 each get a
            // turn; kept until quiet, the first 64 held theirs for as long as they were written).
            (0, Duration::ZERO)
        } else if open > hard {
            (hard, Duration::from_secs(1))
        } else if open > OPEN_SOFT_TARGET {
            (OPEN_SOFT_TARGET, OPEN_SOFT_QUIET)
        } else {
            return;
        };
        let (copies, hot) = (&self.copies, &self.hot);
        let mut idle: Vec<(Instant, u64)> = self
            .followers
            .values()
            .filter(|f| {
                // A hot file has something to read (re-opened because it grew, not read yet).
                f.file.is_some()
                    && !hot.contains(&f.key)
                    && !f.rotated
                    && f.all_acked()
                    && (f.size == f.read_pos
                        // A copy waiting for its original, which may wait for a descriptor.
                        || starved && f.read_pos == 0 && copies.contains(&f.key))
                    && now.duration_since(f.last_active) >= quiet
            })
            .map(|f| (f.last_active, f.key))
            .collect();
        idle.sort();
        for (_, k) in idle.into_iter().take(open - target) {
            if let Some(f) = self.followers.get_mut(&k) {
                f.close();
            }
        }
    }

    /// Forgets followed files that were deleted (no name left anywhere: a link count of 0), read to
    /// their end and acknowledged: nothing of them is left to resume, and a checkpoint naming them
    /// made the next start warn that each was "neither there nor renamed". Called at the stop,
    /// before the last checkpoint (while running, they are closed after their grace). Returns how
    /// many.
    pub fn forget_deleted(&mut self) -> usize {
        let deleted: Vec<u64> = self
            .followers
            .values()
            .filter(|f| finished_and_deleted(f))
            .map(|f| f.key)
            .collect();
        for &k in &deleted {
            if let Some(f) = self.remove_follower(k) {
                self.known.remove(&(f.id.dev, f.id.ino));
            }
        }
        deleted.len()
    }

    fn remember(&mut self, f: &Follower) {
        self.know(Entry {
            id: f.id,
            fingerprint: f.fingerprint,
            offset: f.acked_pos,
            long_line: long_line_at(f),
            path: f.path.clone(),
            origin: f.origin.clone(),
        });
    }

    /// Keeps `e` among the known files (checkpointed while the file stays at its path).
    fn know(&mut self, e: Entry) {
        self.version += 1;
        self.known.insert((e.id.dev, e.id.ino), e);
    }

    /// The entries to checkpoint: every followed file, plus known files still at their path, sorted.
    pub fn checkpoint_refs(&self) -> Vec<EntryRef<'_>> {
        // A followed file's entry wins over a remembered one of the same identity (sorted first);
        // of two followers of one file, the lower position.
        let mut all: Vec<(bool, EntryRef<'_>)> = self
            .followers
            .values()
            // A deleted file read to its end and acknowledged has nothing to resume: left out, so
            // that a start after a crash in its grace does not warn that it is gone. (Only rotated
            // files are looked at: an fstat each, and they are few.)
            .filter(|f| !(f.rotated && finished_and_deleted(f)))
            .map(|f| {
                let e = EntryRef {
                    id: f.id,
                    fingerprint: f.fingerprint,
                    offset: f.acked_pos,
                    long_line: long_line_at(f),
                    path: &f.path,
                    origin: &f.origin,
                };
                (false, e)
            })
            .chain(self.known.values().map(|e| (true, e.borrowed())))
            .collect();
        all.sort_unstable_by_key(|(remembered, e)| (e.id.dev, e.id.ino, *remembered, e.offset));
        all.dedup_by(|a, b| a.1.id.dev == b.1.id.dev && a.1.id.ino == b.1.id.ino);
        all.into_iter().map(|(_, e)| e).collect()
    }

    /// [`Engine::checkpoint_refs`], owned.
    #[cfg(test)]
    pub fn checkpoint_entries(&self) -> Vec<Entry> {
        self.checkpoint_refs()
            .iter()
            .map(EntryRef::to_entry)
            .collect()
    }

    /// Files followed now (open or closed while idle).
    pub fn file_count(&self) -> usize {
        self.followers.len()
    }

    /// Files open now.
    pub fn open_count(&self) -> usize {
        self.open_files()
    }

    /// Bytes written to followed files that Kafka has not acknowledged yet (as of the last reads),
    /// and those in matched files waiting for a descriptor (as of the last full scan).
    pub fn bytes_behind(&self) -> u64 {
        self.followers.values().map(Follower::behind).sum::<u64>() + self.waiting_bytes().1
    }

    /// Files waiting for a descriptor (as of the last full scan): matched and never opened, or
    /// closed and written since; and their bytes not read.
    pub fn waiting_bytes(&self) -> (usize, u64) {
        self.fd_waiting
            .values()
            .fold((0, 0), |(n, b), (fw, bw)| (n + fw, b + bw))
    }

    /// Matched files the last full scan could not open (permission denied...).
    pub fn unreadable_count(&self) -> usize {
        self.unreadable
    }

    /// [`Engine::waiting_bytes`] per input name.
    pub fn waiting_by_input(&self) -> Vec<(&str, usize, u64)> {
        self.fd_waiting
            .iter()
            .filter_map(|(i, (n, b))| Some((self.cfg.inputs.get(*i)?.name.as_str(), *n, *b)))
            .collect()
    }

    /// Looks at the size of every open file, for the lag: while Kafka is away reading stops, and
    /// the lag as of the last reads would stand still while the files grow. An `fstat` each, at a
    /// stats line or a metrics scrape.
    pub fn observe_sizes(&mut self) {
        for f in self.followers.values_mut() {
            f.observe();
        }
    }

    /// Every followed file's input name, path and bytes not acknowledged yet.
    pub fn behind_by_file(&self) -> Vec<(&str, &std::path::Path, u64)> {
        self.followers
            .values()
            // A file of an input a reload removed is counted under that input's name until it is
            // done (t17 F2: under the input now at its index, or "").
            .map(|f| (self.input_name(f), f.path.as_path(), f.behind()))
            .collect()
    }

    /// The followed file furthest behind and by how many bytes, if any is.
    pub fn most_behind(&self) -> Option<(String, u64)> {
        self.followers
            .values()
            .map(|f| (f, f.behind()))
            .filter(|(_, b)| *b > 0)
            .max_by_key(|(_, b)| *b)
            .map(|(f, b)| (Esc::path(&f.path).to_string(), b))
    }

    /// Lines sent and not acknowledged, over all files.
    pub fn lines_in_flight(&self) -> usize {
        self.followers.values().map(|f| f.in_flight()).sum()
    }

    /// The open files whose unread bytes are one line without its newline yet, and those bytes: not
    /// shipped until the newline comes (said at the stop: a finished file copied in without a last
    /// newline is otherwise taken for shipped whole). Then the same for files joined into events whose
    /// unread bytes are an event not complete yet (waiting for its next start line or its quiet
    /// time); one of those that ends in a line without its newline counts among the first. Each file
    /// is named with -v. Bounded: only the unread bytes of each, at most the line limit (and an
    /// event's bytes), are looked at.
    pub fn unfinished_lines(&self) -> ((usize, u64), (usize, u64)) {
        let (mut lines, mut events) = ((0, 0), (0, 0));
        for f in self.followers.values() {
            let Some(file) = f.file.as_deref() else {
                continue;
            };
            let Ok(size) = file.metadata().map(|m| m.len()) else {
                continue;
            };
            let rest = size.saturating_sub(f.read_pos);
            if f.skipping() || rest == 0 {
                continue;
            }
            let limit = self.cfg.limits.max_line_bytes as u64;
            if let Some(m) = &f.multiline {
                // An event of at most its bytes, and a line being written after it; more is a file
                // behind, not an event waiting.
                if rest <= (m.max_bytes as u64).saturating_add(limit) {
                    let partial = byte_at(file, size - 1) != Some(b'\n');
                    let (n, what) = match partial {
                        true => (&mut lines, "a line without its newline yet"),
                        false => (&mut events, "an event not complete yet"),
                    };
                    n.0 += 1;
                    n.1 += rest;
                    crate::log::debug(format_args!(
                        "{}: ends in {what} ({rest} bytes)",
                        Esc::path(&f.path)
                    ));
                }
                continue;
            }
            if rest > limit {
                continue;
            }
            let start = super::lines::line_start_before(file, size, rest as usize);
            if start.is_none_or(|p| p <= f.read_pos) {
                lines.0 += 1;
                lines.1 += rest;
                crate::log::debug(format_args!(
                    "{}: ends in a line without its newline yet ({rest} bytes)",
                    Esc::path(&f.path)
                ));
            }
        }
        (lines, events)
    }

    /// Every followed file's path, and the real path of those followed through a link: where their
    /// events come from.
    pub fn followed_paths(&self) -> impl Iterator<Item = &std::path::Path> {
        self.followers
            .values()
            .flat_map(|f| std::iter::once(f.path.as_path()).chain(f.target.as_deref()))
    }

    /// Every follower's identity, path and acknowledged offset (for tests and stats).
    pub fn positions(&self) -> Vec<(FileId, PathBuf, u64, u64)> {
        self.followers
            .values()
            .map(|f| (f.id, f.path.clone(), f.read_pos, f.acked_pos))
            .collect()
    }
}

/// Whether `file` still holds, up to `pos`, a line that starts at `from`: a line end just before
/// `from` (or `from` is 0), none from there to `pos` (looked at over the last 64 KiB), and the bytes
/// just before `pos` that `hash` was taken of, when it was. A `from` not before `pos` (the line's
/// start was not known: a `--from-end` start inside it) is checked by those bytes alone.
fn still_in_line(file: &std::fs::File, from: u64, pos: u64, hash: Option<u64>) -> bool {
    const LOOK_BACK: u64 = 64 * 1024;
    if from >= pos {
        return hash.is_none_or(|h| hash_before(Some(file), 0, pos) == Some(h));
    }
    if from > 0 && byte_at(file, from - 1) != Some(b'\n') {
        return false;
    }
    let lo = from.max(pos - pos.min(LOOK_BACK));
    let mut buf = vec![0u8; (pos - lo) as usize];
    if std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, lo).is_err()
        || memchr::memchr(b'\n', &buf).is_some()
    {
        return false;
    }
    // The hashed bytes (up to 64 before `pos`, none before `from`) end the bytes just read.
    let k = buf.len().min(64);
    hash.is_none_or(|h| Fingerprint::of(&buf[buf.len() - k..]).hash == h)
}

/// The hash of up to 64 bytes of `file` just before `pos`, none before `from` (a skip mark's: a file
/// rewritten with a long line at the same place is told by them); `None` when there are none or
/// they cannot be read.
pub(super) fn hash_before(file: Option<&std::fs::File>, from: u64, pos: u64) -> Option<u64> {
    let k = pos.checked_sub(from)?.min(64);
    if k == 0 {
        return None;
    }
    let mut buf = vec![0u8; k as usize];
    std::os::unix::fs::FileExt::read_exact_at(file?, &mut buf, pos - k).ok()?;
    Some(Fingerprint::of(&buf).hash)
}

/// Whether `f`'s file was deleted (open, with no name left anywhere): `None` when it was not (or
/// cannot be told), else whether it was read to its end.
fn deleted(f: &Follower) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let m = f.file.as_ref()?.metadata().ok()?;
    (m.nlink() == 0).then_some(m.len() <= f.read_pos)
}

/// Whether `f`'s file was deleted, read to its end and acknowledged: nothing of it is left to
/// resume.
fn finished_and_deleted(f: &Follower) -> bool {
    f.all_acked() && deleted(f) == Some(true)
}

/// What a follower's checkpoint entry says of a long line at its acknowledged position: where the
/// line starts, or, when that is not known, the position itself; with the hash of the bytes before
/// the position (from the line's start on, or any when the start is not known).
fn long_line_at(f: &Follower) -> LongLine {
    let file = f.file.as_deref();
    match f.acked_skip_from {
        Some(from) if from >= f.acked_pos => {
            LongLine::From(f.acked_pos, hash_before(file, 0, f.acked_pos))
        }
        Some(from) => LongLine::From(from, hash_before(file, from, f.acked_pos)),
        None => LongLine::No,
    }
}

/// The byte at `pos` of `file`, if it has one.
fn byte_at(file: &std::fs::File, pos: u64) -> Option<u8> {
    let mut b = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut b, pos).ok()?;
    Some(b[0])
}

/// The file of follower `o`, to compare a copy with its original: its own, or, closed while it
/// waits its turn for a descriptor, opened again for the comparison if its path still names it.
/// Compared only while open, a copy judged while its original was closed was taken for another
/// file and read from its start (t16: 40,127 duplicates of 100,109 records under `ulimit -n 128`).
fn file_of(o: &Follower) -> Option<Arc<std::fs::File>> {
    if let Some(f) = &o.file {
        return Some(f.clone());
    }
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&o.path)
        .ok()?;
    let m = f.metadata().ok()?;
    FileId::with_fd(&m, &f).same(&o.id).then(|| Arc::new(f))
}

/// How a copy compares with its original `o` (open as `of`) before byte `n`.
#[derive(Debug, PartialEq, Eq)]
enum Against {
    /// The same bytes.
    Same,
    /// The original is truncated (shorter than it was read to, or written again with other first
    /// bytes): compared with what it holds now, the copy would be taken for another file.
    Truncated,
    /// Other bytes in an original that still holds what it was read to: not its copy.
    Other,
}

/// Compares first and looks for a truncation after, when the bytes differ: logrotate truncates the
/// original a moment after its copy is written, so a truncation looked for first and not found
/// could come before the comparison, which then failed on the emptied original (the whole copy read
/// from its start, 300 to 500 lines twice in one run in three under `copytruncate` + `compress`).
fn against(copy: &std::fs::File, of: &std::fs::File, o: &Follower, n: u64) -> Against {
    if super::copytruncate::same_before(copy, of, n) {
        Against::Same
    } else if truncated_under(of, o) {
        Against::Truncated
    } else {
        Against::Other
    }
}

/// Whether follower `o`'s file `of` was truncated since `o` read it: shorter than it was read to, or
/// no longer starting with the bytes it started with.
fn truncated_under(of: &std::fs::File, o: &Follower) -> bool {
    if of.metadata().is_ok_and(|m| m.len() < o.read_pos) {
        return true;
    }
    o.fingerprint.len > 0
        && super::identity::head(of, o.fingerprint.len as usize)
            .is_ok_and(|h| !head_matches(&h, o.fingerprint))
}

/// Whether a file's first bytes `head` match a checkpointed fingerprint (taken over `fp.len` bytes).
fn head_matches(head: &[u8], fp: Fingerprint) -> bool {
    head.len() >= fp.len as usize && Fingerprint::of(&head[..fp.len as usize]) == fp
}

#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod tests;

/// `2 added: 'a', 'b'` (up to five names, then how many more), or `0 added`.
fn named_inputs(names: &[&str], what: &str) -> String {
    const SHOWN: usize = 5;
    if names.is_empty() {
        return format!("0 {what}");
    }
    let mut s = format!("{} {what}: ", names.len());
    let shown: Vec<String> = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("'{}'", Esc::str(n)))
        .collect();
    s += &shown.join(", ");
    if names.len() > SHOWN {
        s += &format!(" and {} more", names.len() - SHOWN);
    }
    s
}

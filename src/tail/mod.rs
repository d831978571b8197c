//! `shipper tail`'s engine: discover files from paths and globs, follow each through rotation and
//! truncation, read new lines through a memory map into the producer, and keep per file the offset
//! Kafka has acknowledged (the checkpoint).
//!
//! - [`map`]: reading a region through a memory map, safe when the file is truncated under us.
//! - [`identity`]: (device, inode) plus a fingerprint of the first bytes.
//! - [`checkpoint`]: the versioned, atomically written checkpoint file.
//! - [`follower`]: one followed file: read position, lines in flight, acknowledged watermark.

pub mod checkpoint;
pub mod follower;
pub mod identity;
pub mod map;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use checkpoint::Entry;
use follower::{Counters, Follower, ReadLimits, ReadResult, SEQ_BITS};
use identity::{fingerprint, FileId};

use crate::producer::{Delivery, Producer};

/// How long a rotated-away or deleted file, read to its end, stays open in case its writer adds more.
pub const ROTATED_GRACE: Duration = Duration::from_secs(5);

/// Settings of the tailer.
#[derive(Debug, Clone)]
pub struct TailConfig {
    /// Paths and globs as the user gave them.
    pub patterns: Vec<String>,
    /// Start files found at the first scan at their end (unless the checkpoint knows them).
    pub from_end: bool,
    /// Reading limits.
    pub limits: ReadLimits,
    /// Header name to carry the source path, if any.
    pub path_header: Option<String>,
}

/// Follows the files matching the patterns.
pub struct Tailer {
    cfg: TailConfig,
    followers: HashMap<u64, Follower>,
    /// Acknowledged positions by identity: loaded from the checkpoint, updated from followers.
    known: HashMap<FileId, Entry>,
    next_key: u64,
    first_scan: bool,
    warned: BTreeSet<String>,
    /// Line and event counters.
    pub counters: Counters,
    dirty: bool,
}

impl Tailer {
    /// A tailer resuming from `known` (the loaded checkpoint).
    pub fn new(cfg: TailConfig, known: HashMap<FileId, Entry>) -> Self {
        Tailer {
            cfg,
            followers: HashMap::new(),
            known,
            next_key: 1,
            first_scan: true,
            warned: BTreeSet::new(),
            counters: Counters::default(),
            dirty: true,
        }
    }

    /// The directories to watch for new files: each pattern's parent.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        for p in &self.cfg.patterns {
            let path = Path::new(p);
            let mut dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            // A glob in a directory component: watch the longest literal prefix.
            while dir.to_string_lossy().contains(['*', '?', '[']) {
                dir = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
            }
            if dir.as_os_str().is_empty() {
                dir = PathBuf::from(".");
            }
            dirs.insert(dir);
        }
        dirs.into_iter().collect()
    }

    fn warn_once(&mut self, key: String, msg: std::fmt::Arguments<'_>) {
        if self.warned.insert(key) {
            crate::log::warn(msg);
        }
    }

    fn expand(&mut self) -> Vec<PathBuf> {
        let mut out = BTreeSet::new();
        for p in self.cfg.patterns.clone() {
            if !p.contains(['*', '?', '[']) {
                let path = PathBuf::from(&p);
                if path.is_dir() {
                    self.warn_once(
                        format!("dir:{p}"),
                        format_args!("{p} is a directory, not a file; to follow its files use a glob such as '{p}/*.log'"),
                    );
                } else if path.exists() {
                    out.insert(path);
                } else if self.first_scan {
                    // Only at start: a path briefly missing during a rotation is not news.
                    self.warn_once(
                        format!("missing:{p}"),
                        format_args!("{p} does not exist yet; waiting for it"),
                    );
                }
                continue;
            }
            match glob::glob(&p) {
                Ok(paths) => {
                    for entry in paths.flatten() {
                        if entry.is_file() {
                            out.insert(entry);
                        }
                    }
                }
                Err(e) => self.warn_once(
                    format!("glob:{p}"),
                    format_args!("invalid pattern '{p}': {e}"),
                ),
            }
        }
        out.into_iter().collect()
    }

    /// Asks for a rescan at the next [`Tailer::scan`] opportunity (a watch event arrived).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether a watch event asked for a rescan.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Finds new, rotated, truncated and deleted files.
    pub fn scan(&mut self) {
        self.dirty = false;
        let paths = self.expand();
        let mut seen_ids: HashMap<FileId, PathBuf> = HashMap::new();
        for path in &paths {
            if let Ok((id, _)) = FileId::of_path(path) {
                seen_ids.insert(id, path.clone());
            }
        }
        // Followers whose file is no longer at its path (renamed away or deleted) are finishing.
        for f in self.followers.values_mut() {
            match seen_ids.get(&f.id) {
                Some(p) => {
                    if *p != f.path {
                        f.path = p.clone();
                    }
                }
                None => {
                    let still_there = FileId::of_path(&f.path).is_ok_and(|(id, _)| id == f.id);
                    if !still_there && !f.rotated {
                        f.rotated = true;
                        self.counters.rotations += 1;
                        crate::log::debug(format_args!(
                            "{}: rotated or deleted; finishing it",
                            f.path.display()
                        ));
                    }
                }
            }
        }
        // Files rewritten in place (copytruncate) keep their inode: compare sizes and first bytes.
        let truncated: Vec<u64> = self
            .followers
            .iter_mut()
            .filter_map(|(k, f)| (!f.rotated && f.was_truncated().unwrap_or(false)).then_some(*k))
            .collect();
        for k in truncated {
            self.restart_truncated(k);
        }
        let followed: BTreeSet<FileId> = self.followers.values().map(|f| f.id).collect();
        for (id, path) in seen_ids {
            if followed.contains(&id) {
                continue;
            }
            self.start(path);
        }
        self.first_scan = false;
    }

    fn start(&mut self, path: PathBuf) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.warn_once(
                    format!("open:{}", path.display()),
                    format_args!("cannot read {}: {e}; skipping it", path.display()),
                );
                return;
            }
        };
        let (Ok(id), Ok(fp), Ok(meta)) = (FileId::of(&file), fingerprint(&file), file.metadata())
        else {
            return;
        };
        let size = meta.len();
        let start = match self.known.get(&id) {
            // Same inode, and its first bytes (if we had them) unchanged: resume where Kafka acked.
            Some(e) if e.fingerprint.is_none() || e.fingerprint == fp => {
                if e.offset > size {
                    self.counters.truncations += 1;
                    0
                } else {
                    e.offset
                }
            }
            _ if self.first_scan && self.cfg.from_end => size,
            _ => 0,
        };
        let key = self.next_key;
        self.next_key += 1;
        match Follower::new(key, path.clone(), file, start) {
            Ok(f) => {
                crate::log::debug(format_args!(
                    "following {} from byte {start}",
                    path.display()
                ));
                self.followers.insert(key, f);
            }
            Err(e) => crate::log::warn(format_args!("cannot follow {}: {e}", path.display())),
        }
    }

    /// Reads new lines from every file into the producer until it is full or every file is read to its
    /// end. Returns whether some file still has bytes waiting.
    pub fn read_pass(&mut self, producer: &mut Producer, timestamp_ms: i64) -> bool {
        let mut more = false;
        let keys: Vec<u64> = self.followers.keys().copied().collect();
        let header = self.cfg.path_header.clone();
        for key in keys {
            if producer.is_full() {
                return true;
            }
            let Some(f) = self.followers.get_mut(&key) else {
                continue;
            };
            let finish = f.rotated && f.last_active.elapsed() >= ROTATED_GRACE;
            let r = f.read(
                producer,
                &self.cfg.limits,
                header.as_deref().map(str::as_bytes),
                timestamp_ms,
                finish,
                &mut self.counters,
            );
            match r {
                Ok(ReadResult::Lines { more: m, .. }) => more |= m,
                Ok(ReadResult::Truncated) => self.restart_truncated(key),
                Err(e) => {
                    let p = f.path.display().to_string();
                    self.warn_once(format!("read:{p}"), format_args!("cannot read {p}: {e}"));
                }
            }
        }
        more
    }

    /// A file shrank or was rewritten in place: follow it again from byte 0 under a new key, so acks
    /// of lines from its old content no longer move its checkpoint.
    fn restart_truncated(&mut self, key: u64) {
        let Some(old) = self.followers.remove(&key) else {
            return;
        };
        self.counters.truncations += 1;
        crate::log::info(format_args!(
            "{}: truncated (copytruncate?); reading again from the start",
            old.path.display()
        ));
        self.known.remove(&old.id);
        if let Ok(file) = File::open(&old.path) {
            if FileId::of(&file).is_ok_and(|id| id == old.id) {
                let k = self.next_key;
                self.next_key += 1;
                if let Ok(f) = Follower::new(k, old.path.clone(), file, 0) {
                    self.followers.insert(k, f);
                }
            }
        }
    }

    /// Applies deliveries: acknowledged lines (and lines failed for good, counted) move watermarks.
    pub fn on_deliveries(&mut self, deliveries: &mut Vec<Delivery>) {
        for d in deliveries.drain(..) {
            let n = d.tokens.len() as u64;
            match &d.error {
                None => self.counters.lines_acked += n,
                Some(e) => {
                    self.counters.lines_failed += n;
                    crate::log::error(format_args!("{n} lines not written, skipped: {e}"));
                }
            }
            for t in d.tokens {
                if let Some(f) = self.followers.get_mut(&(t >> SEQ_BITS)) {
                    f.done(t);
                }
            }
        }
    }

    /// Closes rotated or deleted files that were read to the end, acknowledged, and idle for a while.
    pub fn close_finished(&mut self) {
        let done: Vec<u64> = self
            .followers
            .iter_mut()
            .filter(|(_, f)| {
                f.rotated
                    && f.last_active.elapsed() >= ROTATED_GRACE * 2
                    && f.in_flight() == 0
                    && f.size().is_ok_and(|s| s <= f.read_pos)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in done {
            if let Some(f) = self.followers.remove(&k) {
                crate::log::debug(format_args!("closed {}", f.path.display()));
                self.remember(&f);
            }
        }
    }

    fn remember(&mut self, f: &Follower) {
        self.known.insert(
            f.id,
            Entry {
                id: f.id,
                fingerprint: f.fingerprint,
                offset: f.acked_pos,
                path: f.path.clone(),
            },
        );
    }

    /// The entries to checkpoint: every followed file, plus known files still at their path.
    pub fn checkpoint_entries(&mut self) -> Vec<Entry> {
        let fs: Vec<(FileId, Option<u64>, u64, PathBuf)> = self
            .followers
            .values()
            .map(|f| (f.id, f.fingerprint, f.acked_pos, f.path.clone()))
            .collect();
        for (id, fingerprint, offset, path) in fs {
            self.known.insert(
                id,
                Entry {
                    id,
                    fingerprint,
                    offset,
                    path,
                },
            );
        }
        let live: BTreeSet<FileId> = self.followers.values().map(|f| f.id).collect();
        self.known.retain(|id, e| {
            live.contains(id) || FileId::of_path(&e.path).is_ok_and(|(i, _)| i == *id)
        });
        self.known.values().cloned().collect()
    }

    /// Files followed now.
    pub fn file_count(&self) -> usize {
        self.followers.len()
    }

    /// Bytes written to followed files that Kafka has not acknowledged yet.
    pub fn bytes_behind(&self) -> u64 {
        self.followers
            .values()
            .map(|f| f.size().unwrap_or(0).saturating_sub(f.acked_pos))
            .sum()
    }

    /// The followed file furthest behind and by how many bytes, if any is.
    pub fn most_behind(&self) -> Option<(String, u64)> {
        self.followers
            .values()
            .map(|f| (f, f.size().unwrap_or(0).saturating_sub(f.acked_pos)))
            .filter(|(_, b)| *b > 0)
            .max_by_key(|(_, b)| *b)
            .map(|(f, b)| (f.path.display().to_string(), b))
    }

    /// Lines sent and not acknowledged, over all files.
    pub fn lines_in_flight(&self) -> usize {
        self.followers.values().map(|f| f.in_flight()).sum()
    }
}

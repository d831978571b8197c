//! `from_end`: the files of a `from_end` input begin where they end when shipper starts, not when
//! Kafka first answers. Their ends are taken before anything waits for Kafka and written to the
//! checkpoint at once, so lines appended during an outage at boot, or while a run killed before its
//! first checkpoint was down, are shipped, not skipped.

use std::collections::{HashMap, HashSet};

use super::checkpoint::{Entry, LongLine};
use super::discover;
use super::engine::EngineConfig;
use super::identity::{self, FileId};

/// What the start's look at the `from_end` inputs' files found.
#[derive(Debug, Default)]
pub struct Ends {
    /// A checkpoint entry at the end of each file not known before (at the start of its last line
    /// when that has no newline yet).
    pub entries: Vec<Entry>,
    /// Every file of a `from_end` input that was there, by (dev, ino), recorded or not: one not
    /// among them at the first scan appeared after the start and is read from its beginning.
    pub seen: HashSet<(u64, u64)>,
}

/// Looks at the files of the `from_end` inputs now (a file matched by several inputs belongs to the
/// first, as at a scan); `known` are the checkpoint's entries, whose files resume where they were.
/// Files that cannot be opened are left to the scan, which says why. A file born after `last_run`
/// (when the checkpoint was last written) was created while shipper was down: its lines are new,
/// and it is read whole, as a file that appears while shipper runs is.
pub fn ends(cfg: &EngineConfig, known: &[Entry], last_run: Option<std::time::SystemTime>) -> Ends {
    let last_run_ns = last_run
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128);
    let mut out = Ends::default();
    if !cfg.inputs.iter().any(|i| i.from_end) {
        return out;
    }
    let (patterns, owner) = cfg.flat_patterns();
    let known: HashMap<(u64, u64), &FileId> = known
        .iter()
        .map(|e| ((e.id.dev, e.id.ino), &e.id))
        .collect();
    let found = discover::expand(
        &patterns,
        &cfg.policy,
        false,
        &mut Vec::new(),
        &mut Vec::new(),
    );
    for f in found {
        if !cfg.inputs[owner[f.pattern]].from_end {
            continue;
        }
        let key = (f.id.dev, f.id.ino);
        if let (Some(born), Some(last)) = (f.id.born, last_run_ns) {
            if born > last && !known.contains_key(&key) {
                continue;
            }
        }
        out.seen.insert(key);
        if known.get(&key).is_some_and(|id| id.same(&f.id)) {
            continue;
        }
        let Ok((file, m)) = discover::open(&f, &patterns[f.pattern], &cfg.policy) else {
            continue;
        };
        let Ok(fingerprint) = identity::fingerprint(&file) else {
            continue;
        };
        let size = m.len();
        let (offset, long_line) =
            match super::lines::line_start_before(&file, size, cfg.limits.max_line_bytes) {
                Some(at) => (at, LongLine::No),
                // Inside a line longer than the limit: the rest of it is skipped, marked as the
                // engine marks it (a plain offset there reads as a rewrite, and the file was
                // shipped again from its start).
                None => (
                    size,
                    LongLine::From(size, super::engine::hash_before(Some(&file), 0, size)),
                ),
            };
        out.entries.push(Entry {
            id: FileId::with_fd(&m, &file),
            fingerprint,
            offset,
            long_line,
            path: f.path.clone(),
            origin: f.path,
        });
    }
    out
}

//! File events: inotify (through notify) on the directories that hold followed files and patterns, so
//! new lines are read within milliseconds. Events only mark work: a changed path makes its followers
//! hot, anything else (create, delete, rename, an overflowed queue) asks for a rescan. The periodic
//! rescan in the loop catches whatever events miss (filesystems without inotify, a full queue).

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::escape::Esc;

/// Paths remembered between two looks at most; beyond, one rescan replaces them.
const MAX_PENDING_PATHS: usize = 65_536;

#[derive(Default)]
struct Shared {
    changed: Mutex<HashSet<PathBuf>>,
    rescan: AtomicBool,
    wake: tokio::sync::Notify,
}

/// The watcher and what it saw since the last look.
pub struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    shared: Arc<Shared>,
    watched: BTreeSet<PathBuf>,
}

impl Watch {
    /// Starts watching nothing yet. Without inotify (an error), only rescans find changes.
    pub fn new() -> Watch {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            match ev {
                Ok(ev)
                    if matches!(
                        ev.kind,
                        EventKind::Modify(notify::event::ModifyKind::Data(_))
                    ) =>
                {
                    let mut c = s.changed.lock().unwrap_or_else(|e| e.into_inner());
                    if c.len() < MAX_PENDING_PATHS {
                        c.extend(ev.paths);
                    } else {
                        s.rescan.store(true, Ordering::Relaxed);
                    }
                }
                Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => return,
                _ => s.rescan.store(true, Ordering::Relaxed),
            }
            s.wake.notify_one();
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                crate::log::warn(format_args!(
                    "cannot watch files ({e}); relying on periodic rescans"
                ));
                None
            }
        };
        Watch {
            watcher,
            shared,
            watched: BTreeSet::new(),
        }
    }

    /// Watches a directory (once). A failure is said once and left to rescans.
    pub fn watch_dir(&mut self, dir: &Path, scan_ms: u64) {
        if !self.watched.insert(dir.to_path_buf()) {
            return;
        }
        if let Some(w) = self.watcher.as_mut() {
            if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                crate::log::debug(format_args!(
                    "cannot watch {} ({e}); relying on the {scan_ms} ms rescan",
                    Esc::path(dir)
                ));
            }
        }
    }

    /// Directories watched.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Takes what happened since the last call: paths whose data changed, and whether a rescan is due.
    pub fn take(&self) -> (Vec<PathBuf>, bool) {
        let paths: Vec<PathBuf> = {
            let mut c = self
                .shared
                .changed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            c.drain().collect()
        };
        (paths, self.shared.rescan.swap(false, Ordering::Relaxed))
    }

    /// Waits for the next event.
    pub async fn changed(&self) {
        self.shared.wake.notified().await
    }
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

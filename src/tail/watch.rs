//! File events: inotify (through notify) on the directories that hold followed files and patterns, so
//! new lines are read within milliseconds. Events only mark work: a changed path makes its followers
//! hot; a file created or renamed is handed to the loop, which rescans only if the name may concern a
//! pattern or a followed file (a log directory where other programs create and rename files — or the
//! checkpoint lives — must not cost a walk of ten thousand files each time); anything else (a
//! directory or link created or renamed, a delete, an overflowed queue) asks for a rescan. While every
//! directory is watched, the loop rescans only on such events and, as a safety net, rarely; when a
//! directory cannot be watched (no inotify, the watch limit reached, a directory not there yet) the
//! watch is *degraded* and the loop rescans every `--scan-ms`, reading every file, as without events.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
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
    removed: Mutex<Vec<PathBuf>>,
    /// Names of files created or renamed (old and new names), none of them a directory or a link now.
    named: Mutex<Vec<PathBuf>>,
    rescan: AtomicBool,
    wake: tokio::sync::Notify,
}

/// The watcher and what it saw since the last look.
pub struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    shared: Arc<Shared>,
    /// Watched directories, with the (device, inode) they had when the watch was set.
    watched: BTreeMap<PathBuf, Option<(u64, u64)>>,
    /// Directories wanted but not watched (the watch failed): events may be missed there.
    failed: BTreeSet<PathBuf>,
    /// Whether a watch failed on an inotify limit yet (said once).
    told_limit: bool,
    /// When to try inotify again, while there is no watcher.
    next_try: std::time::Instant,
}

impl Watch {
    /// Starts watching nothing yet. Without inotify (an error), only rescans find changes, and
    /// inotify is tried again every [`WATCHER_RETRY`] (instances used up by other programs may free).
    pub fn new() -> Watch {
        let shared = Arc::new(Shared::default());
        let watcher = match make_watcher(&shared) {
            Ok(w) => Some(w),
            Err(e) => {
                crate::log::warn(format_args!(
                    "cannot watch files ({}); relying on periodic rescans until it can",
                    limit_hint(&e).map_or_else(|| e.to_string(), str::to_string)
                ));
                None
            }
        };
        Watch {
            watcher,
            shared,
            watched: BTreeMap::new(),
            failed: BTreeSet::new(),
            told_limit: false,
            next_try: std::time::Instant::now() + WATCHER_RETRY,
        }
    }

    /// Without a watcher, tries to make one again when it is time (t13: after the instances were
    /// free again, tail polled every file each second until restarted).
    fn retry_watcher(&mut self) {
        let now = std::time::Instant::now();
        if self.watcher.is_some() || now < self.next_try {
            return;
        }
        self.next_try = now + WATCHER_RETRY;
        if let Ok(w) = make_watcher(&self.shared) {
            crate::log::info(format_args!("watching files again (inotify available)"));
            self.watcher = Some(w);
        }
    }
}

/// How often inotify is tried again while it cannot be had.
const WATCHER_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// An inotify watcher whose events go to `shared`.
fn make_watcher(shared: &Arc<Shared>) -> notify::Result<notify::RecommendedWatcher> {
    let s = shared.clone();
    notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = &ev {
            use notify::event::{ModifyKind, RenameMode};
            if let EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::Both)) =
                ev.kind
            {
                // A watched directory renamed within a watched one loses its watch in notify (t49:
                // kept as watched here, renamed back it was never watched again, and its files'
                // lines waited for the minute's rescan). Its old name is forgotten like a removal's.
                let mut r = s.removed.lock().unwrap_or_else(|e| e.into_inner());
                if r.len() < MAX_PENDING_PATHS {
                    r.extend(ev.paths.first().cloned());
                }
            }
        }
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
            Ok(ev) if names_only(&ev.kind) && !ev.paths.iter().any(|p| may_hold_files(p)) => {
                let mut n = s.named.lock().unwrap_or_else(|e| e.into_inner());
                if n.len() + ev.paths.len() <= MAX_PENDING_PATHS {
                    n.extend(ev.paths);
                } else {
                    s.rescan.store(true, Ordering::Relaxed);
                }
            }
            Ok(ev) if matches!(ev.kind, EventKind::Remove(_)) => {
                // A watched directory removed loses its watch: it is watched again if it returns.
                let mut r = s.removed.lock().unwrap_or_else(|e| e.into_inner());
                if r.len() < MAX_PENDING_PATHS {
                    r.extend(ev.paths);
                }
                s.rescan.store(true, Ordering::Relaxed);
            }
            _ => s.rescan.store(true, Ordering::Relaxed),
        }
        s.wake.notify_one();
    })
}

impl Watch {
    /// Watches a directory (once; a failed one is tried again at the next call). A failure makes the
    /// watch degraded until it succeeds or [`Watch::want_only`] drops the directory. Returns whether
    /// a watch began: what was made in the directory after it was listed and before then raised no
    /// event, so it must be listed again.
    #[must_use]
    pub fn watch_dir(&mut self, dir: &Path, scan_ms: u64) -> bool {
        self.retry_watcher();
        let Some(w) = self.watcher.as_mut() else {
            return false;
        };
        let id = std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()));
        if let Some(had) = self.watched.get(dir) {
            if *had == id {
                return false;
            }
            // Replaced (moved away, or removed and made again): the watch follows the old directory,
            // and the new one would be seen only by the safety rescan.
            crate::log::debug(format_args!(
                "{} was replaced: watching the new directory",
                Esc::path(dir)
            ));
            let _ = w.unwatch(dir);
            self.watched.remove(dir);
        }
        if let Some(kind) = remote_filesystem(dir) {
            // inotify sees only this host's writes there: rescan it as if it had no events.
            if self.failed.insert(dir.to_path_buf()) {
                crate::log::debug(format_args!(
                    "{} is on {kind}, where other hosts' writes raise no events; rescanning every {scan_ms} ms",
                    Esc::path(dir)
                ));
            }
            return false;
        }
        match w.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.failed.remove(dir);
                self.watched.insert(dir.to_path_buf(), id);
                // Said, and a later shortage is said again (t15: the second one was silent).
                if self.told_limit && self.failed.is_empty() {
                    self.told_limit = false;
                    crate::log::info(format_args!("watching every directory again"));
                }
                true
            }
            Err(e) => {
                let hint = limit_hint(&e);
                if self.failed.insert(dir.to_path_buf()) {
                    // A kernel limit is the operator's to raise: said once (then at debug level).
                    let line = format!(
                        "cannot watch {} ({}); rescanning every {scan_ms} ms",
                        Esc::path(dir),
                        hint.map_or_else(|| e.to_string(), str::to_string)
                    );
                    if hint.is_some() && !self.told_limit {
                        self.told_limit = true;
                        crate::log::warn(format_args!("{line} (said once for all directories)"));
                    } else {
                        crate::log::debug(format_args!("{line}"));
                    }
                }
                false
            }
        }
    }

    /// Forgets failures for directories no longer wanted (`wanted` says which are).
    pub fn want_only(&mut self, wanted: &HashSet<PathBuf>) {
        self.failed.retain(|d| wanted.contains(d));
    }

    /// Whether events may be missed: no inotify, or a wanted directory is not watched.
    pub fn degraded(&self) -> bool {
        self.watcher.is_none() || !self.failed.is_empty()
    }

    /// Directories watched.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// Whether `dir` is watched.
    pub fn is_watched(&self, dir: &Path) -> bool {
        self.watched.contains_key(dir)
    }

    /// Takes what happened since the last call.
    pub fn take(&mut self) -> Events {
        let paths: Vec<PathBuf> = {
            let mut c = self
                .shared
                .changed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            c.drain().collect()
        };
        let removed: Vec<PathBuf> = {
            let mut r = self
                .shared
                .removed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *r)
        };
        for d in removed {
            self.watched.remove(&d);
        }
        let named =
            std::mem::take(&mut *self.shared.named.lock().unwrap_or_else(|e| e.into_inner()));
        Events {
            changed: paths,
            named,
            rescan: self.shared.rescan.swap(false, Ordering::Relaxed),
        }
    }

    /// Waits for the next event.
    pub async fn changed(&self) {
        self.shared.wake.notified().await
    }
}

/// What happened since the last look.
#[derive(Debug, Default)]
pub struct Events {
    /// Paths whose data changed.
    pub changed: Vec<PathBuf>,
    /// Names of files created or renamed (old and new): a rescan is due if one may concern a pattern
    /// or a followed file.
    pub named: Vec<PathBuf>,
    /// A rescan is due.
    pub rescan: bool,
}

/// A file (not a directory) created, or a name renamed: the loop judges the names.
fn names_only(kind: &EventKind) -> bool {
    use notify::event::{CreateKind, ModifyKind};
    matches!(
        kind,
        EventKind::Create(CreateKind::File) | EventKind::Modify(ModifyKind::Name(_))
    )
}

/// Whether the name now holds a directory or a link (new files may be found through it), or cannot be
/// looked at. A name no longer there (renamed away) holds nothing new; the loop checks it against the
/// followed files.
fn may_hold_files(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) => m.is_dir() || m.file_type().is_symlink(),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// The kind of network or user-space filesystem `dir` is on, where file events miss changes made
/// elsewhere; `None` for a local one (or when it cannot be told).
fn remote_filesystem(dir: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs fills the zeroed struct we own from a NUL-terminated path; nothing is kept.
    let magic = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st.f_type as i64 as u32
    };
    match magic {
        0x6969 => Some("NFS"),
        0x517B | 0xFE53_4D42 | 0xFF53_4D42 => Some("SMB/CIFS"),
        0x6573_5546 => Some("FUSE"),
        0x00C3_6400 => Some("CephFS"),
        0x5346_414F => Some("AFS"),
        0x0102_1997 => Some("9P"),
        0x4750_4653 => Some("GPFS"),
        0x0BD0_0BD0 => Some("Lustre"),
        _ => None,
    }
}

/// Which kernel limit a watch failure hit, when it is one: inotify's own limits are per user and
/// raised with sysctl, not `ulimit -n`, which "No file descriptors available" suggests (t14).
fn limit_hint(e: &notify::Error) -> Option<&'static str> {
    const WATCHES: &str =
        "the user's inotify watches are used up: raise sysctl fs.inotify.max_user_watches";
    match &e.kind {
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::EMFILE) => Some(
            "the user's inotify instances are used up: raise sysctl fs.inotify.max_user_instances",
        ),
        notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => Some(WATCHES),
        notify::ErrorKind::MaxFilesWatch => Some(WATCHES),
        _ => None,
    }
}

impl Default for Watch {
    fn default() -> Self {
        Watch::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Takes events until `done` says enough (or 5 s pass), gathering them.
    fn gather(w: &mut Watch, done: impl Fn(&Events) -> bool) -> Events {
        let mut all = Events::default();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !done(&all) {
            std::thread::sleep(Duration::from_millis(20));
            let e = w.take();
            all.changed.extend(e.changed);
            all.named.extend(e.named);
            all.rescan |= e.rescan;
        }
        all
    }

    /// A watched directory moved away (or removed) and made again is watched again at the next full
    /// scan: its watch had followed the old directory, and the new one's writes raised no event.
    #[test]
    fn a_directory_replaced_by_another_is_watched_again() {
        let top = crate::testkit::scratch_dir("watch-replaced");
        let d = top.join("logs");
        std::fs::create_dir(&d).unwrap();
        let mut w = Watch::new();
        let _ = w.watch_dir(&d, 1000);
        std::fs::rename(&d, top.join("logs.old")).unwrap();
        std::fs::create_dir(&d).unwrap();
        gather(&mut w, |e| e.rescan);
        // The loop's full scan calls watch_dir for every wanted directory.
        let _ = w.watch_dir(&d, 1000);
        assert!(w.is_watched(&d) && !w.degraded());
        let f = d.join("a.log");
        std::fs::write(&f, "x").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .and_then(|mut h| std::io::Write::write_all(&mut h, b"y\n"))
            .unwrap();
        let e = gather(&mut w, |e| e.changed.contains(&f));
        assert!(e.changed.contains(&f), "{e:?}");
    }

    /// A watched directory renamed within a watched one and renamed back is watched again: notify
    /// drops its watch at the rename, and the map kept it as watched (t49).
    #[test]
    fn a_directory_renamed_away_and_back_is_watched_again() {
        let top = crate::testkit::scratch_dir("watch-renamed-back");
        let d = top.join("logs");
        std::fs::create_dir(&d).unwrap();
        let mut w = Watch::new();
        let _ = w.watch_dir(&top, 1000);
        let _ = w.watch_dir(&d, 1000);
        std::fs::rename(&d, top.join("logs.old")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.is_watched(&d) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let _ = w.take();
        }
        assert!(!w.is_watched(&d), "its watch went with the rename");
        std::fs::rename(top.join("logs.old"), &d).unwrap();
        gather(&mut w, |e| e.rescan);
        assert!(w.watch_dir(&d, 1000), "the full scan watches it again");
        let f = d.join("a.log");
        std::fs::write(&f, "x").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .and_then(|mut h| std::io::Write::write_all(&mut h, b"y\n"))
            .unwrap();
        let e = gather(&mut w, |e| e.changed.contains(&f));
        assert!(e.changed.contains(&f), "{e:?}");
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn files_created_or_renamed_are_named_and_directories_or_links_ask_for_a_rescan() {
        let d = crate::testkit::scratch_dir("watch");
        let mut w = Watch::new();
        let _ = w.watch_dir(&d, 1000);
        assert!(w.is_watched(&d) && !w.degraded());

        std::fs::write(d.join(".ckpt.tmp-1"), "x").unwrap();
        std::fs::rename(d.join(".ckpt.tmp-1"), d.join("ckpt")).unwrap();
        let e = gather(&mut w, |e| e.named.contains(&d.join("ckpt")));
        assert!(
            !e.rescan,
            "a file created and renamed is judged by name: {e:?}"
        );
        assert!(e.named.contains(&d.join(".ckpt.tmp-1")), "{e:?}");
        assert!(e.named.contains(&d.join("ckpt")), "{e:?}");

        std::fs::create_dir(d.join("sub")).unwrap();
        assert!(
            gather(&mut w, |e| e.rescan).rescan,
            "a new directory may hold files"
        );
        std::os::unix::fs::symlink("/etc", d.join("link")).unwrap();
        assert!(gather(&mut w, |e| e.rescan).rescan, "so may a link");
        std::fs::create_dir(d.join("moved-in-later")).unwrap();
        let _ = gather(&mut w, |e| e.rescan);
        std::fs::rename(d.join("moved-in-later"), d.join("renamed-dir")).unwrap();
        assert!(gather(&mut w, |e| e.rescan).rescan, "a directory renamed");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn inotify_is_tried_again_while_there_is_no_watcher() {
        let d = crate::testkit::scratch_dir("watch-retry");
        let mut w = Watch::new();
        // As at a start with every inotify instance taken.
        w.watcher = None;
        w.next_try = std::time::Instant::now() + WATCHER_RETRY;
        let _ = w.watch_dir(&d, 1000);
        assert!(w.degraded() && w.watched() == 0, "not before its time");
        w.next_try = std::time::Instant::now();
        let _ = w.watch_dir(&d, 1000);
        assert!(!w.degraded() && w.is_watched(&d), "watched again");
        std::fs::write(d.join("a.log"), "x\n").unwrap();
        let e = gather(&mut w, |e| !e.named.is_empty() || e.rescan);
        assert!(!e.named.is_empty() || e.rescan, "events flow");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn inotify_limits_are_named_by_their_sysctl() {
        let instances = notify::Error::io(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert!(limit_hint(&instances).is_some_and(|h| h.contains("max_user_instances")));
        let watches = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert!(limit_hint(&watches).is_some_and(|h| h.contains("max_user_watches")));
        let other = notify::Error::io(std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(limit_hint(&other), None);
    }
}

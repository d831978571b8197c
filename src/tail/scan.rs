//! One scan of the file system, on a blocking thread: expand the patterns, open new files (within the
//! descriptor budget), check followed files for truncation, find rotated files, and re-open closed
//! files that grew. The engine hands in a snapshot ([`ScanRequest`]) and applies the answer
//! ([`ScanResult`]) on the event loop; nothing here touches engine state.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use super::discover::{self, FilePolicy, Found, Notice, Pattern};
use super::identity::{judge_head, starts_with, FileId, Fingerprint, Head, FINGERPRINT_BYTES};
use crate::escape::Esc;

/// A followed file, as the scan needs to know it.
#[derive(Debug, Clone)]
pub struct Followed {
    /// Follower key.
    pub key: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its identity.
    pub id: FileId,
    /// The open file (`None`: closed while idle). Weak: a file the engine closes while the scan
    /// runs gives its descriptor back at once (held by every scan under way, descriptors closed
    /// for turns stayed open, uncounted: t16 saw 192 log files open while the stats said 0).
    pub file: Option<Weak<File>>,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// Where reading stands.
    pub read_pos: u64,
    /// Already known to be rotated away.
    pub rotated: bool,
    /// Size and modification time the last scan saw: a file found with both unchanged is passed over
    /// without reading it.
    pub seen: (u64, i128),
}

/// What the engine asks of one scan.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// The patterns.
    pub patterns: Arc<Vec<Pattern>>,
    /// Which files may be followed.
    pub policy: Arc<FilePolicy>,
    /// The first scan (missing paths are reported).
    pub first: bool,
    /// Files followed now.
    pub followed: Vec<Followed>,
    /// Checkpoint entries of files not followed: identity, last path, origin (where a pattern matched
    /// it) and acknowledged offset, to learn which still exist and which were rotated away (renamed in
    /// their directory) with lines unread.
    pub known: Vec<(FileId, PathBuf, PathBuf, u64)>,
    /// The engine's configuration generation; a result of an older one is dropped.
    pub generation: u64,
    /// How many more files may be opened.
    pub budget: usize,
    /// Only these closed followers, whose paths had events: re-open those that grew or moved, without
    /// expanding the patterns. `None`: a full scan.
    pub only: Option<Vec<u64>>,
    /// With `only`: new files created or renamed under these names, each looked at alone.
    pub names: Vec<PathBuf>,
    /// Files judged compressed before, as they were then: passed over unopened while unchanged.
    pub compressed: Arc<HashSet<Unchanged>>,
}

/// A file as a scan saw it: device, inode, size and modification time. A file found with the same
/// four is taken to be unchanged.
pub type Unchanged = (u64, u64, u64, i128);

/// What `found` is now, as an [`Unchanged`].
fn unchanged(found: &Found) -> Unchanged {
    (found.id.dev, found.id.ino, found.size, found.mtime_ns)
}

/// A file opened for the first time.
#[derive(Debug)]
pub struct NewFile {
    /// Where and what it is.
    pub found: Found,
    /// The open file.
    pub file: File,
    /// Its first bytes (up to the fingerprint length), to compare with the checkpoint.
    pub head: Vec<u8>,
    /// For a file finished from the checkpoint: where a pattern matched it before it was rotated.
    pub origin: Option<PathBuf>,
    /// Found as a link (--follow-symlinks): the file's real path, where its writes are seen.
    pub target: Option<PathBuf>,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// The generation of the request.
    pub generation: u64,
    /// Followed files a pattern now matches under another path (renamed within the patterns).
    pub renamed: Vec<(u64, PathBuf)>,
    /// Files opened now (not followed before).
    pub opened: Vec<NewFile>,
    /// Followed files no longer at their path nor matched anywhere: rotated away or deleted, with the
    /// path they now have if they were found next to it.
    pub gone: Vec<(u64, Option<PathBuf>)>,
    /// Followed files rewritten in place (shorter than read, or their first bytes changed).
    pub truncated: Vec<(u64, FileId)>,
    /// Open followed files whose size or modification time changed since the last scan, with both.
    pub changed: Vec<(u64, u64, i128)>,
    /// Directories where new matches could appear (to watch).
    pub dirs: Vec<PathBuf>,
    /// Whether this was a full scan (patterns expanded), not only re-opening files.
    pub full: bool,
    /// Files wait to be opened for want of descriptors: rescan soon, not only on events.
    pub starved: bool,
    /// The files waiting so (full scans): each one's pattern and its bytes not shipped yet.
    pub waiting: Vec<(usize, u64)>,
    /// Closed files re-opened because they grew (or rotated away and must be finished).
    pub reopened: Vec<(u64, Arc<File>, Option<PathBuf>)>,
    /// Checkpoint entries whose file no longer exists at their path.
    pub known_gone: Vec<(u64, u64)>,
    /// Checkpoint entries whose file was renamed next to its old path, and its new path.
    pub known_moved: Vec<((u64, u64), PathBuf)>,
    /// Checkpoint entries whose file was renamed next to its old path (rotated while we were not
    /// looking) and holds lines past the checkpoint: opened, to be finished.
    pub known_rotated: Vec<NewFile>,
    /// Matched files that could not be opened (permission denied...) in a full scan: said once
    /// each, counted in the metrics while they last (t22 F8: only said, `/healthz` stayed 200).
    pub unreadable: usize,
    /// Files listed holding bytes and deleted before they could be opened (a file that lives for
    /// less than a scan): their path and the bytes they held when listed, none of them read.
    pub gone_unread: Vec<(PathBuf, u64)>,
    /// Things to say once.
    pub notices: Vec<Notice>,
    /// The matched files that are compressed (judged now, or before and unchanged since).
    pub compressed: Vec<Unchanged>,
}

/// How the keys of [`compressed_notice`]s begin.
pub const COMPRESSED_KEY: &str = "compressed:";

/// Said once per path: a compressed file a pattern matches is not followed.
pub fn compressed_notice(path: &Path, id: FileId, kind: &str) -> Notice {
    Notice {
        // By identity: logrotate renames `.2.gz` to `.3.gz` at each run, and it was said again
        // under every name (t15: 220 warnings for 100 files).
        key: format!("{COMPRESSED_KEY}{}:{}", id.dev, id.ino),
        text: format!(
            "{} is {kind}-compressed (a rotated log?): not followed; its lines are read from the log before it is compressed (with compress but not delaycompress, a copy compressed at once may hold a last line or two that were not)",
            Esc::path(path)
        ),
    }
}

fn read_head(file: &File) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; FINGERPRINT_BYTES];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf.truncate(got);
    buf
}

/// Looks for a file by identity in `dir` (a rotated file usually stays next to its old name).
fn list_files(dir: &Path) -> Vec<(PathBuf, FileId)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).ok()?;
            m.file_type()
                .is_file()
                .then(|| (p.clone(), FileId::at_path(&m, &p)))
        })
        .collect()
}

/// One scan in progress: the request, what the patterns matched, what is found so far, and how many
/// more files may be opened.
struct Pass<'a> {
    req: &'a ScanRequest,
    found: Vec<Found>,
    out: ScanResult,
    budget: usize,
    /// Each directory's regular files, listed once per pass when a file is looked for in it by
    /// identity (t23 F2: listed again, an lstat per entry, for each of 1,000 deleted files still
    /// followed: a million calls a scan, and every file's lines waited seconds).
    listed: HashMap<PathBuf, Vec<(PathBuf, FileId)>>,
}

/// Runs one scan. Blocking: call it on a blocking thread.
pub fn run(req: ScanRequest) -> ScanResult {
    if let Some(keys) = &req.only {
        return reopen_only(&req, keys);
    }
    let mut notices = Vec::new();
    let mut dirs = Vec::new();
    let found = discover::expand(
        &req.patterns,
        &req.policy,
        req.first,
        &mut notices,
        &mut dirs,
    );
    let found = one_name_per_file(found, &req.followed, &mut notices);
    let mut pass = Pass {
        req: &req,
        found,
        out: ScanResult {
            generation: req.generation,
            notices,
            dirs,
            full: true,
            ..ScanResult::default()
        },
        budget: req.budget,
        listed: HashMap::new(),
    };
    let by_ino: HashMap<(u64, u64), Found> = pass
        .found
        .iter()
        .map(|f| ((f.id.dev, f.id.ino), f.clone()))
        .collect();
    let mut closed = Vec::new();
    for f in &req.followed {
        let here = by_ino
            .get(&(f.id.dev, f.id.ino))
            .filter(|x| x.id.same(&f.id));
        if let Some(x) = here.filter(|x| x.path != f.path) {
            pass.out.renamed.push((f.key, x.path.clone()));
        }
        match f.file.as_ref().map(Weak::upgrade) {
            Some(Some(file)) => pass.check_open(f, &file, here),
            // Closed since the request: the next scan looks at it as a closed file.
            Some(None) => {}
            None => closed.push((f, here)),
        }
    }
    // Short of descriptors, files never opened go first: a file followed before is known (a
    // truncation or rotation of it is told when it is re-opened), one never opened is not (rotated
    // by copytruncate while it waited, its lines would be only in a copy no pattern names).
    pass.open_new();
    for (f, here) in closed {
        pass.check_closed(f, here);
    }
    pass.find_known();
    pass.out
}

/// Re-opens the closed followers `keys` whose paths had events (they grew, or were rotated away and
/// must be finished), and opens the new files named in the request: no pattern is expanded, each
/// path is looked at alone.
fn reopen_only(req: &ScanRequest, keys: &[u64]) -> ScanResult {
    let mut pass = Pass {
        req,
        found: Vec::new(),
        out: ScanResult {
            generation: req.generation,
            ..ScanResult::default()
        },
        budget: req.budget,
        listed: HashMap::new(),
    };
    for f in req.followed.iter().filter(|f| keys.contains(&f.key)) {
        if f.file.is_some() {
            continue;
        }
        let here = std::fs::symlink_metadata(&f.path)
            .ok()
            .filter(|m| m.file_type().is_file() && FileId::at_path(m, &f.path).same(&f.id))
            .map(|m| Found {
                path: f.path.clone(),
                id: f.id,
                size: m.len(),
                mtime_ns: discover::mtime_ns(&m),
                pattern: req
                    .patterns
                    .iter()
                    .position(|p| p.matches(&f.path))
                    .unwrap_or(0),
            });
        pass.check_closed(f, here.as_ref());
    }
    for n in &req.names {
        match discover::look_at(n, &req.patterns, &req.policy) {
            Some(Ok(found)) => pass.found.push(found),
            Some(Err(text)) => pass.out.notices.push(Notice {
                key: format!("skip:{}", n.display()),
                text,
            }),
            None => {}
        }
    }
    pass.found = one_name_per_file(
        std::mem::take(&mut pass.found),
        &req.followed,
        &mut pass.out.notices,
    );
    pass.open_new();
    pass.out
}

/// Whether `a` and `b` lead to one file now (links followed).
fn same_file_now(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => FileId::from_meta(&x).same(&FileId::from_meta(&y)),
        _ => false,
    }
}

/// Several names of one file (hard links; with `--follow-symlinks`, a link and its target) make one
/// follower, or each line would ship once per name and the checkpoint, which has one entry per file,
/// would start the other name over at each start. The name kept: the one a follower has, else one
/// that is not a symbolic link (`app-2026-11-28.log`, not `current.log`), else the first. Each name
/// passed over is said once.
fn one_name_per_file(
    found: Vec<Found>,
    followed: &[Followed],
    notices: &mut Vec<Notice>,
) -> Vec<Found> {
    let mut at: HashMap<(u64, u64), usize> = HashMap::new();
    let mut dropped = vec![false; found.len()];
    for i in 0..found.len() {
        let key = (found[i].id.dev, found[i].id.ino);
        let Some(&k) = at.get(&key) else {
            at.insert(key, i);
            continue;
        };
        let has_follower = |f: &Found| {
            followed
                .iter()
                .any(|x| x.path == f.path && x.id.same(&f.id))
        };
        let is_link = |f: &Found| {
            std::fs::symlink_metadata(&f.path).is_ok_and(|m| m.file_type().is_symlink())
        };
        let take_new = !has_follower(&found[k])
            && (has_follower(&found[i]) || (is_link(&found[k]) && !is_link(&found[i])));
        let (keep, drop) = if take_new { (i, k) } else { (k, i) };
        at.insert(key, keep);
        dropped[drop] = true;
        // Said only when both names still lead to it: a file renamed while the directory was
        // listed can be seen under its old name and its new one (logrotate's `create` under a
        // low limit said "app.log.1 is another name of app.log (a link)": t16 F5).
        if !same_file_now(&found[keep].path, &found[drop].path) {
            continue;
        }
        notices.push(Notice {
            key: format!("alias:{}", found[drop].path.display()),
            text: format!(
                "{} is another name of {} (a link): the file is followed once, as {}",
                Esc::path(&found[drop].path),
                Esc::path(&found[keep].path),
                Esc::path(&found[keep].path)
            ),
        });
    }
    found
        .into_iter()
        .zip(dropped)
        .filter_map(|(f, d)| (!d).then_some(f))
        .collect()
}

impl Pass<'_> {
    /// The regular file in `dir` that is `id`, if there is one (renamed next to its old path).
    fn find_in_dir(&mut self, dir: &Path, id: &FileId) -> Option<PathBuf> {
        self.listed
            .entry(dir.to_path_buf())
            .or_insert_with(|| list_files(dir))
            .iter()
            .find(|(_, f)| f.same(id))
            .map(|(p, _)| p.clone())
    }

    fn pattern(&self, i: usize) -> &Pattern {
        &self.req.patterns[i.min(self.req.patterns.len().saturating_sub(1))]
    }

    /// A followed, open file: gone from its path (rotated or deleted), changed since the last scan,
    /// rewritten in place? A file whose size and modification time did not change is not read (with
    /// 10,000 idle files, a scan is one `lstat` each).
    fn check_open(&mut self, f: &Followed, file: &File, here: Option<&Found>) {
        if f.rotated {
            // Rotated away or deleted: no event need come for it (a deleted file has no name left
            // to watch), and its descriptor tells whether it grew since last seen. Only such a
            // one is read after the scan (t23 F2: every rotated file was read after every full
            // scan; with 1,400 deleted files being finished under a create-and-delete churn, the
            // other files' lines waited seconds).
            if let Ok(m) = file.metadata() {
                let now = (m.len(), discover::mtime_ns(&m));
                if now != f.seen {
                    self.out.changed.push((f.key, now.0, now.1));
                }
            }
            return;
        }
        let now = match here {
            Some(x) => (x.size, x.mtime_ns),
            None => match std::fs::symlink_metadata(&f.path) {
                Ok(m) if FileId::at_path(&m, &f.path).same(&f.id) => {
                    (m.len(), discover::mtime_ns(&m))
                }
                // Its directory cannot be searched now (made unreadable for a moment): nothing
                // says the file went, and it is read on through its descriptor; judged again at
                // the next scan (t23 F3: dropped as "rotated or deleted", and found again only by
                // the safety scan a minute later).
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return,
                _ => {
                    let dir = f.path.parent().unwrap_or(Path::new("."));
                    let moved = self.find_in_dir(dir, &f.id);
                    self.out.gone.push((f.key, moved));
                    return;
                }
            },
        };
        if now == f.seen {
            return;
        }
        self.out.changed.push((f.key, now.0, now.1));
        let shrank = now.0 < f.read_pos;
        if shrank || !starts_with(file, f.fingerprint).unwrap_or(true) {
            self.out.truncated.push((f.key, f.id));
        }
    }

    /// A file closed while idle: re-open it if it grew, or if it was rotated away (to finish it).
    fn check_closed(&mut self, f: &Followed, here: Option<&Found>) {
        // A rotated file (a copy being finished) still at its path: not looked for in its
        // directory (500 closed copies in a directory of 1,000 files made each scan list it 500
        // times: t16, turns every 16-35 s).
        let still_there = f.rotated
            && std::fs::symlink_metadata(&f.path)
                .is_ok_and(|m| FileId::at_path(&m, &f.path).same(&f.id));
        let unsearchable = here.is_none()
            && std::fs::symlink_metadata(&f.path)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
        let (path, moved) = match here {
            Some(x) => (x.path.clone(), false),
            None if still_there => (f.path.clone(), false),
            // As for an open file: not gone for a directory that cannot be searched now.
            None if unsearchable => return,
            None => match self.find_in_dir(f.path.parent().unwrap_or(Path::new(".")), &f.id) {
                Some(p) => (p, true),
                None => {
                    self.out.gone.push((f.key, None));
                    return;
                }
            },
        };
        // Grew, or shrank (truncated while closed: re-opened, its read tells it and finds the copy;
        // left closed until it grew past where it was read, a quiet file's new lines would wait),
        // or written since it was closed (to the very size it was read to: its first bytes tell).
        let now = std::fs::symlink_metadata(&path)
            .ok()
            .map(|m| (m.len(), discover::mtime_ns(&m)));
        let grew = now.is_some_and(|n| n.0 != f.read_pos || n != f.seen);
        if (grew || moved) && self.budget == 0 {
            self.out.starved = true;
            // It waits for its turn with what it holds past where it was read (all of it when it
            // was truncated): counted with the files never opened (t16: "0 open, 1 waiting" and
            // a fifth of the bytes behind, while hundreds of closed files waited).
            let size = now.map_or(0, |n| n.0);
            let left = if size < f.read_pos {
                size
            } else {
                size - f.read_pos
            };
            if self.req.only.is_none() && left > 0 {
                self.out.waiting.push((here.map_or(0, |x| x.pattern), left));
            }
        }
        if !(grew || moved) || self.budget == 0 {
            return;
        }
        let probe = Found {
            path: path.clone(),
            id: f.id,
            size: 0,
            mtime_ns: 0,
            pattern: here.map_or(0, |x| x.pattern),
        };
        match discover::open(&probe, self.pattern(probe.pattern), &self.req.policy) {
            Ok((file, _)) => {
                self.budget -= 1;
                self.out
                    .reopened
                    .push((f.key, Arc::new(file), moved.then_some(path)));
            }
            Err(e) => self.out.notices.push(Notice {
                key: format!("reopen:{}", f.path.display()),
                text: format!("cannot re-open {}: {e}", Esc::path(&f.path)),
            }),
        }
    }

    /// Opens `f`. A file replaced at its path between the look and the open (rotated at that moment)
    /// leaves another file there, which is then the one to follow: looked at and opened in its turn,
    /// a few times at most. `None`: nothing to open (gone, or a file already followed).
    fn open_found(
        &self,
        mut f: Found,
        followed: &HashSet<(u64, u64)>,
    ) -> Option<(Found, std::io::Result<(File, std::fs::Metadata)>)> {
        for _ in 0..3 {
            match discover::open(&f, self.pattern(f.pattern), &self.req.policy) {
                Err(e) if discover::is_replaced(&e) => {
                    f = discover::look_at(&f.path, &self.req.patterns, &self.req.policy)?.ok()?;
                    if followed.contains(&(f.id.dev, f.id.ino)) {
                        return None;
                    }
                }
                r => return Some((f, r)),
            }
        }
        let r = discover::open(&f, self.pattern(f.pattern), &self.req.policy);
        Some((f, r))
    }

    /// Notes the matched files from `from` on that nobody follows, which wait for a descriptor, with
    /// what they hold past their checkpoint: the lag counts them (t13: "0 bytes behind" while
    /// hundreds of files waited unread under a low open-files limit).
    fn count_waiting(&mut self, from: usize, followed: &HashSet<(u64, u64)>) {
        let shipped: HashMap<(u64, u64), u64> = self
            .req
            .known
            .iter()
            .map(|(id, _, _, offset)| ((id.dev, id.ino), *offset))
            .collect();
        for f in &self.found[from..] {
            let key = (f.id.dev, f.id.ino);
            if followed.contains(&key) || self.req.compressed.contains(&unchanged(f)) {
                continue;
            }
            // A generation shipped to its end waits for nothing.
            let left = f
                .size
                .saturating_sub(shipped.get(&key).copied().unwrap_or(0));
            if left > 0 {
                self.out.waiting.push((f.pattern, left));
            }
        }
    }

    /// With --follow-symlinks, the real path of `file` when `path` is a link to it: its writes are
    /// reported under that path.
    fn link_target(&self, path: &Path, file: &File) -> Option<PathBuf> {
        if !self.req.policy.follow_symlinks {
            return None;
        }
        discover::real_path(file).filter(|r| r != path)
    }

    /// Opens the matched files nobody follows yet, within the budget.
    fn open_new(&mut self) {
        let followed: HashSet<(u64, u64)> = self
            .req
            .followed
            .iter()
            .map(|f| (f.id.dev, f.id.ino))
            .collect();
        for i in 0..self.found.len() {
            let f = self.found[i].clone();
            if followed.contains(&(f.id.dev, f.id.ino)) {
                continue;
            }
            // A rotated log compressed by logrotate stays as it is: judged once, not re-opened by
            // each scan (a glob over `app.log*` matches every `.gz` of it).
            if self.req.compressed.contains(&unchanged(&f)) {
                self.out.compressed.push(unchanged(&f));
                continue;
            }
            if self.budget == 0 {
                self.out.starved = true;
                self.out.notices.push(Notice {
                    key: "fd-budget".into(),
                    text: "more files match than may be open at once; files read to their end are closed and the rest take turns; lines a copytruncate rotation moves out of a file while it waits are not shipped (raise the open files limit, ulimit -n)".into(),
                });
                self.count_waiting(i, &followed);
                return;
            }
            let Some((f, opened)) = self.open_found(f, &followed) else {
                continue;
            };
            self.found[i] = f.clone();
            match opened {
                Ok((file, _)) => {
                    let head = read_head(&file);
                    if let Head::Compressed(kind) = judge_head(&head) {
                        self.out
                            .notices
                            .push(compressed_notice(&f.path, f.id, kind));
                        self.out.compressed.push(unchanged(&f));
                        continue;
                    }
                    self.budget -= 1;
                    let target = self.link_target(&f.path, &file);
                    self.out.opened.push(NewFile {
                        found: f,
                        file,
                        head,
                        origin: None,
                        target,
                    });
                }
                // Listed, then gone before the open (logrotate's compress removes `.1` for
                // `.1.gz`, a file followed already): routine when empty; one that held bytes lost
                // them unread, which is told.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if f.size > 0 {
                        self.out.gone_unread.push((f.path.clone(), f.size));
                    }
                }
                Err(e) => {
                    self.out.unreadable += 1;
                    self.out.notices.push(Notice {
                        key: format!("open:{}", f.path.display()),
                        text: format!("cannot follow {}: {e}; skipping it", Esc::path(&f.path)),
                    })
                }
            }
        }
    }

    /// Checkpoint entries no pattern names any more: gone, or rotated next to their old path with
    /// lines past the checkpoint (then opened, to be finished, if a pattern still names the path it
    /// was found under: a file whose input was removed from the config is left alone).
    fn find_known(&mut self) {
        let mut vanished = 0;
        let matched: HashSet<(u64, u64)> =
            self.found.iter().map(|f| (f.id.dev, f.id.ino)).collect();
        for (id, path, origin, offset) in &self.req.known {
            if matched.contains(&(id.dev, id.ino)) {
                continue; // a pattern still names it: it resumes as a new file
            }
            let there =
                std::fs::symlink_metadata(path).is_ok_and(|m| FileId::at_path(&m, path).same(id));
            let moved = if there {
                Some(path.clone())
            } else {
                // Renamed next to its path (logrotate's .2 -> .3, between this scan's listing and
                // now): still known, under its new name. Forgotten, the next scan would take it
                // for a new file and ship it again from byte 0 (t13: whole generations twice).
                let moved = self.find_in_dir(path.parent().unwrap_or(Path::new(".")), id);
                match &moved {
                    Some(m) => self.out.known_moved.push(((id.dev, id.ino), m.clone())),
                    None => self.out.known_gone.push((id.dev, id.ino)),
                }
                moved
            };
            let Some(moved) = moved else {
                // At start: a file that was followed under its pattern's name at the last stop
                // (not an older rotated generation) is neither there nor renamed next to it: rotated
                // elsewhere (logrotate's olddir) or deleted while shipper was stopped. Lines written
                // to it after the checkpoint are lost unless a pattern finds where it went: said.
                // A rotated generation (`app.log.1` under `app.log*`, its original still there)
                // compressed or deleted by rotation while shipper was stopped is routine: said with
                // -v only (t33 F5: each restart under logrotate warned of a generation shipped whole).
                let generation = || {
                    super::copytruncate::possible_originals(path)
                        .iter()
                        .any(|o| std::fs::symlink_metadata(o).is_ok_and(|m| m.is_file()))
                };
                if self.req.first && path == origin {
                    let text = format!(
                        "{}: followed at the last stop (Kafka has its first {offset} bytes), it is neither there nor renamed next to it: if it was rotated elsewhere or deleted while shipper was stopped, lines written to it after that are not shipped (a pattern matching where rotation puts it ships them)",
                        Esc::path(path)
                    );
                    // A glob over every generation (`*.log*`) names each one its own origin: the
                    // oldest ones logrotate deleted while shipper was stopped are each said (t15:
                    // 500 lines), so past the first few they are counted.
                    if generation() {
                        crate::log::debug(format_args!("{text}"));
                        continue;
                    }
                    vanished += 1;
                    if vanished <= VANISHED_SAID {
                        self.out.notices.push(Notice {
                            key: format!("vanished:{}", path.display()),
                            text,
                        });
                    } else {
                        crate::log::debug(format_args!("{text}"));
                    }
                }
                continue;
            };
            let size = std::fs::symlink_metadata(&moved).map_or(0, |m| m.len());
            if size > *offset && self.budget == 0 {
                self.out.starved = true;
                if let Some(p) = self.req.patterns.iter().position(|p| p.matches(origin)) {
                    self.out.waiting.push((p, size - offset));
                }
            }
            if size <= *offset || self.budget == 0 {
                continue;
            }
            let Some(pattern) = self.req.patterns.iter().position(|p| p.matches(origin)) else {
                continue; // no input names it now
            };
            let found = Found {
                path: moved,
                id: *id,
                size,
                mtime_ns: 0,
                pattern,
            };
            if let Ok((file, _)) = discover::open(&found, self.pattern(pattern), &self.req.policy) {
                self.budget -= 1;
                let head = read_head(&file);
                let target = self.link_target(&found.path, &file);
                self.out.known_rotated.push(NewFile {
                    found,
                    file,
                    head,
                    origin: Some(origin.clone()),
                    target,
                });
            }
        }
        if vanished > VANISHED_SAID {
            self.out.notices.push(Notice {
                key: "vanished-more".into(),
                text: format!(
                    "{} more files followed at the last stop are neither there nor renamed next to them (each is listed with -v): old generations logrotate deleted while shipper was stopped, or files rotated elsewhere",
                    vanished - VANISHED_SAID
                ),
            });
        }
    }
}

/// Files followed at the last stop and gone since said one by one at start; past it, counted.
const VANISHED_SAID: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    /// A request over `patterns` knowing `known`, with `budget` descriptors.
    fn request(
        patterns: Vec<Pattern>,
        known: Vec<(FileId, PathBuf, PathBuf, u64)>,
        first: bool,
        budget: usize,
    ) -> ScanRequest {
        ScanRequest {
            patterns: Arc::new(patterns),
            policy: Arc::new(FilePolicy::default()),
            first,
            followed: Vec::new(),
            known,
            generation: 0,
            budget,
            only: None,
            names: Vec::new(),
            compressed: Arc::default(),
        }
    }

    /// A pass of `req` over the listing `found`.
    fn pass_over(req: &ScanRequest, found: Vec<Found>) -> Pass<'_> {
        Pass {
            req,
            found,
            out: ScanResult::default(),
            budget: req.budget,
            listed: HashMap::new(),
        }
    }

    #[test]
    fn a_file_replaced_between_the_look_and_the_open_leaves_the_new_one_followed() {
        let d = crate::testkit::scratch_dir("scan-replaced");
        let log = d.join("app.log");
        std::fs::write(&log, "old\n").unwrap();
        let patterns = vec![Pattern::new(log.to_str().unwrap(), &[]).unwrap()];
        let policy = FilePolicy::default();
        let Some(Ok(stale)) = discover::look_at(&log, &patterns, &policy) else {
            panic!("found")
        };
        // Rotated after the look: the path names a new file when it is opened.
        std::fs::rename(&log, d.join("app.log.1")).unwrap();
        std::fs::write(&log, "new\n").unwrap();
        let req = ScanRequest {
            patterns: Arc::new(patterns),
            policy: Arc::new(policy),
            first: false,
            followed: Vec::new(),
            known: Vec::new(),
            generation: 0,
            budget: 10,
            only: Some(Vec::new()),
            names: Vec::new(),
            compressed: Arc::default(),
        };
        let mut pass = Pass {
            req: &req,
            found: vec![stale.clone()],
            out: ScanResult::default(),
            budget: 10,
            listed: HashMap::new(),
        };
        pass.open_new();
        assert_eq!(pass.out.notices, Vec::new());
        assert_eq!(pass.out.opened.len(), 1);
        let opened = &pass.out.opened[0];
        assert!(!opened.found.id.same(&stale.id), "the new file");
        assert_eq!(opened.head, b"new\n");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A file listed and deleted before its open: one that held bytes is reported with them (its
    /// lines were lost unread, and that was silent); an empty one is routine.
    #[test]
    fn a_file_deleted_between_its_listing_and_its_open_is_reported_when_it_held_bytes() {
        let d = crate::testkit::scratch_dir("scan-gone-unread");
        let full = d.join("full.log");
        let empty = d.join("empty.log");
        std::fs::write(&full, "one\ntwo\n").unwrap();
        std::fs::write(&empty, "").unwrap();
        let patterns = vec![Pattern::new(&format!("{}/*.log", d.display()), &[]).unwrap()];
        let policy = FilePolicy::default();
        let look = |p: &Path| match discover::look_at(p, &patterns, &policy) {
            Some(Ok(f)) => f,
            _ => panic!("found"),
        };
        let listed = vec![look(&full), look(&empty)];
        std::fs::remove_file(&full).unwrap();
        std::fs::remove_file(&empty).unwrap();
        let req = request(patterns.clone(), Vec::new(), false, 10);
        let mut pass = pass_over(&req, listed);
        pass.open_new();
        assert_eq!(pass.out.gone_unread, vec![(full, 8)]);
        assert!(pass.out.opened.is_empty());
        assert_eq!(
            pass.out.notices,
            Vec::new(),
            "not a file that cannot be opened"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_seen_under_its_old_and_new_name_in_one_listing_is_no_link() {
        let d = crate::testkit::scratch_dir("scan-alias");
        let log = d.join("app.log");
        let gen1 = d.join("app.log.1");
        std::fs::write(&log, "a\n").unwrap();
        let seen = |p: &Path| Found {
            path: p.to_path_buf(),
            id: FileId::from_meta(&std::fs::metadata(&log).unwrap()),
            size: 2,
            mtime_ns: 0,
            pattern: 0,
        };
        // Listed as app.log, then renamed (logrotate's create) and listed again as app.log.1.
        let listed = vec![seen(&log), seen(&gen1)];
        std::fs::rename(&log, &gen1).unwrap();
        std::fs::write(&log, "new\n").unwrap();
        let mut notices = Vec::new();
        let kept = one_name_per_file(listed.clone(), &[], &mut notices);
        assert_eq!(kept.len(), 1, "followed once");
        assert_eq!(notices, Vec::new(), "no link to speak of");
        // A real second name (a hard link) is said.
        std::fs::remove_file(&log).unwrap();
        std::fs::hard_link(&gen1, &log).unwrap();
        let kept = one_name_per_file(listed, &[], &mut notices);
        assert_eq!(kept.len(), 1);
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(
            notices[0].text.contains("is another name of"),
            "{notices:?}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_followed_log_rotated_out_of_reach_while_stopped_is_said_at_start() {
        let d = crate::testkit::scratch_dir("scan-vanished");
        std::fs::create_dir_all(d.join("old")).unwrap();
        let log = d.join("app.log");
        let gen2 = d.join("app.log.2");
        let gen1 = d.join("app.log.1");
        std::fs::write(&log, "a\nb\n").unwrap();
        std::fs::write(&gen2, "x\n").unwrap();
        std::fs::write(&gen1, "y\n").unwrap();
        let id = |p: &Path| FileId::from_meta(&std::fs::metadata(p).unwrap());
        let known = vec![
            // The live log, read to byte 2, then moved to old/ by a rotation (olddir).
            (id(&log), log.clone(), log.clone(), 2),
            // An older generation (rotated before the stop), deleted: nothing to say.
            (id(&gen2), gen2.clone(), d.join("app.log"), 2),
            // A generation a glob over every generation followed under its own name, compressed
            // while stopped, its original still there: routine, said with -v only (t33 F5).
            (id(&gen1), gen1.clone(), gen1.clone(), 2),
        ];
        std::fs::rename(&log, d.join("old/app.log.1")).unwrap();
        std::fs::write(&log, "new\n").unwrap();
        std::fs::remove_file(&gen2).unwrap();
        std::fs::remove_file(&gen1).unwrap();
        let pattern = Pattern::new(log.to_str().unwrap(), &[]).unwrap();
        for first in [true, false] {
            let req = request(vec![pattern.clone()], known.clone(), first, 10);
            let mut pass = pass_over(&req, Vec::new());
            pass.find_known();
            let said: Vec<&str> = pass.out.notices.iter().map(|n| n.text.as_str()).collect();
            if first {
                assert_eq!(said.len(), 1, "{said:?}");
                assert!(
                    said[0].starts_with(&format!("{}: followed at the last stop", log.display()))
                        && said[0].contains("Kafka has its first 2 bytes"),
                    "{said:?}"
                );
            } else {
                assert!(said.is_empty(), "only at start: {said:?}");
            }
        }
        // Past the first ten, counted (a glob over every generation: each is its own origin).
        let known: Vec<_> = (0..25)
            .map(|i| {
                let p = d.join(format!("gone.log.{i}"));
                let id = FileId {
                    dev: 0,
                    ino: 1 + i,
                    born: None,
                };
                (id, p.clone(), p, 5)
            })
            .collect();
        let req = request(vec![pattern], known, true, 10);
        let mut pass = pass_over(&req, Vec::new());
        pass.find_known();
        let said: Vec<&str> = pass.out.notices.iter().map(|n| n.text.as_str()).collect();
        assert_eq!(said.len(), 11, "{said:?}");
        assert!(said[10].starts_with("15 more files followed at the last stop"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A known generation renamed next to its path after the scan listed its directory (logrotate's
    /// `.2` -> `.3`) stays known under its new name; forgotten, the next scan read it again from byte 0
    /// (t13: 3,102 lines shipped twice).
    #[test]
    fn a_known_generation_renamed_while_scanned_stays_known_under_its_new_name() {
        let d = crate::testkit::scratch_dir("scan-renamed-known");
        let gen2 = d.join("app.log.2");
        std::fs::write(&gen2, "a\nb\n").unwrap();
        let id = FileId::from_meta(&std::fs::metadata(&gen2).unwrap());
        let gen3 = d.join("app.log.3");
        std::fs::rename(&gen2, &gen3).unwrap();
        let pattern = Pattern::new(&format!("{}/app.log*", d.display()), &[]).unwrap();
        let known = vec![(id, gen2.clone(), d.join("app.log"), 4)];
        let req = request(vec![pattern], known, false, 10);
        // The listing missed both names (taken before the rename, looked at after it).
        let mut pass = pass_over(&req, Vec::new());
        pass.find_known();
        assert_eq!(pass.out.known_gone, Vec::new());
        assert_eq!(pass.out.known_moved, vec![((id.dev, id.ino), gen3.clone())]);
        assert!(
            pass.out.known_rotated.is_empty(),
            "read to its end: nothing to finish"
        );
        std::fs::remove_file(&gen3).unwrap();
        let mut pass = pass_over(&req, Vec::new());
        pass.find_known();
        assert_eq!(
            pass.out.known_gone,
            vec![(id.dev, id.ino)],
            "deleted: forgotten"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Files that wait for a descriptor are counted with their bytes (past a checkpoint where known):
    /// the lag said "0 bytes behind" while hundreds waited (t13).
    #[test]
    fn files_waiting_for_a_descriptor_are_counted_with_their_bytes() {
        let d = crate::testkit::scratch_dir("scan-waiting");
        let (a, b, c) = (d.join("a.log"), d.join("b.log"), d.join("c.log"));
        std::fs::write(&a, "0123456789\n").unwrap();
        std::fs::write(&b, "01234\n").unwrap();
        std::fs::write(&c, "01\n").unwrap();
        let found = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            Found {
                path: p.to_path_buf(),
                id: FileId::from_meta(&m),
                size: m.len(),
                mtime_ns: 0,
                pattern: 0,
            }
        };
        let (fa, fb, fc) = (found(&a), found(&b), found(&c));
        let pattern = Pattern::new(&format!("{}/*.log", d.display()), &[]).unwrap();
        // b.log was shipped to byte 4 before, c.log to its end.
        let known = vec![
            (fb.id, b.clone(), b.clone(), 4),
            (fc.id, c.clone(), c.clone(), 3),
        ];
        let req = request(vec![pattern], known, false, 0);
        let mut pass = pass_over(&req, vec![fa, fb, fc]);
        pass.open_new();
        assert!(pass.out.starved && pass.out.opened.is_empty());
        assert_eq!(pass.out.waiting, vec![(0, 11), (0, 2)]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_compressed_generation_renamed_is_not_said_again() {
        let d = crate::testkit::scratch_dir("scan-gz-renamed");
        let gz = d.join("app.log.2.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        let id = FileId::from_meta(&std::fs::metadata(&gz).unwrap());
        let before = compressed_notice(&gz, id, "gzip");
        let after = compressed_notice(&d.join("app.log.3.gz"), id, "gzip");
        assert_eq!(before.key, after.key);
        std::fs::remove_dir_all(&d).unwrap();
    }
}

//! Finding and opening the files to follow, treating every name and file as possibly hostile.
//!
//! Patterns are paths or globs. A match is followed only if it is a regular file (never a FIFO, a
//! device or a directory), is not a symbolic link (unless `--follow-symlinks`, and then only to a
//! regular file under an allowed directory), and, with `--owner`, belongs to one of the given users.
//! Files are opened with `O_NOFOLLOW | O_NONBLOCK` (a FIFO swapped in at the last moment cannot block
//! us), checked again after opening (`fstat`: still regular, still the file found), and, where
//! `/proc` is mounted, the opened file's real path must lie under the pattern's directory — so a
//! planted directory link cannot lead out either. All of this runs on a blocking thread, never on the
//! event loop: a hung filesystem stalls a scan, not shipping.
//!
//! (Over 500 lines with its tests: the file policy is one piece, and its tests of hostile names and
//! links belong next to it.)

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::identity::FileId;
use crate::escape::Esc;

/// Which files may be followed.
#[derive(Debug, Clone, Default)]
pub struct FilePolicy {
    /// Follow symbolic links (to regular files under the pattern's directory or `symlink_roots`).
    pub follow_symlinks: bool,
    /// More directories symbolic links may lead into.
    pub symlink_roots: Vec<PathBuf>,
    /// Only files owned by these user ids, if set.
    pub owners: Option<Vec<u32>>,
    /// The files shipper itself writes: never followed.
    pub own: OwnFiles,
}

/// The files shipper itself writes — its checkpoint, the checkpoint's lock and temporary files, the
/// dead-letter file — which a glob over the same directory would match. Following them would ship
/// shipper's own state, which changes with every acknowledgement, in a loop. Compared as absolute
/// paths (made so lexically, as the patterns are).
#[derive(Debug, Clone, Default)]
pub struct OwnFiles {
    files: Vec<PathBuf>,
    /// The checkpoint's directory and the prefix of its temporary files there.
    temp: Option<(PathBuf, String)>,
}

impl OwnFiles {
    /// The files of a checkpoint at `checkpoint` and an optional dead-letter file.
    pub fn new(checkpoint: &Path, dead_letter: Option<&Path>) -> OwnFiles {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let ck = abs(checkpoint);
        let mut lock = ck.clone().into_os_string();
        lock.push(".lock");
        let temp = match (ck.parent(), ck.file_name()) {
            (Some(dir), Some(name)) => Some((
                dir.to_path_buf(),
                format!(".{}.tmp-", name.to_string_lossy()),
            )),
            _ => None,
        };
        let mut files = vec![ck, PathBuf::from(lock)];
        files.extend(dead_letter.map(abs));
        OwnFiles { files, temp }
    }

    /// Whether `path` is one of them.
    pub fn contains(&self, path: &Path) -> bool {
        if self.files.is_empty() {
            return false;
        }
        let p = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        self.files.contains(&p)
            || self.temp.as_ref().is_some_and(|(dir, prefix)| {
                p.parent() == Some(dir.as_path())
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix.as_str()))
            })
    }
}

/// One path or glob to follow, with its exclusions.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// As the user gave it, made absolute (a relative one joined to the working directory at start:
    /// file events name absolute paths, and a checkpoint must mean the same files from anywhere).
    pub raw: String,
    /// Exactly as the user gave it.
    given: String,
    /// The directory of its literal prefix: watched, and where its files must really be.
    pub base: PathBuf,
    /// Where `base` really was when first seen (at start, or when it first existed): a base swapped
    /// for a link later does not move where files must be (t23 F4: `app/` replaced by a link to
    /// another tree during a run shipped that tree's files).
    real_base: std::sync::OnceLock<PathBuf>,
    is_glob: bool,
    glob: Option<glob::Pattern>,
    excludes: Vec<glob::Pattern>,
    /// What a matching file's name must be: its last component, as a literal name or a glob (`None`:
    /// any name, for a last component of `**` or one that is not a name).
    name: Option<NamePart>,
}

/// `path` made absolute against the working directory, lexically (`./` dropped, links and `..` left
/// to the kernel); in a glob, the directory's own metacharacters are escaped.
fn absolute(path: &str, is_glob: bool) -> Result<String, String> {
    if path.starts_with('/') {
        return Ok(path.to_string());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| format!("'{}': cannot resolve a relative path: {e}", Esc::str(path)))?;
    let Some(cwd) = cwd.to_str() else {
        return Err(format!(
            "'{}': the working directory's name is not UTF-8; give an absolute path",
            Esc::str(path)
        ));
    };
    let cwd = if is_glob {
        glob::Pattern::escape(cwd)
    } else {
        cwd.to_string()
    };
    let mut rest = path;
    while let Some(r) = rest.strip_prefix("./") {
        rest = r.trim_start_matches('/');
    }
    Ok(match rest {
        "" | "." => cwd,
        _ => format!("{}/{rest}", cwd.trim_end_matches('/')),
    })
}

/// The last component of a pattern.
#[derive(Debug, Clone)]
enum NamePart {
    Literal(std::ffi::OsString),
    Glob(glob::Pattern),
}

impl Pattern {
    /// Where the pattern's directory really was when first seen (see `real_base`).
    fn real_base(&self) -> Option<&Path> {
        if let Some(r) = self.real_base.get() {
            return Some(r);
        }
        let r = std::fs::canonicalize(&self.base).ok()?;
        Some(self.real_base.get_or_init(|| r))
    }

    /// What the "outside" message says of the pattern's directory: where it really is, and where it
    /// was first when that differs.
    fn base_shown(&self) -> String {
        let now = std::fs::canonicalize(&self.base).ok();
        match (self.real_base.get(), now) {
            (Some(first), Some(now)) if *first != now => format!(
                "{} (it led to {} when shipper first looked, and leads to {} now: a directory replaced by a link; to follow it there, add that place with --follow-symlinks --symlink-root)",
                Esc::path(&self.base),
                Esc::path(first),
                Esc::path(&now)
            ),
            _ => Esc::path(&self.base).to_string(),
        }
    }

    /// Parses a path or glob and exclusion globs (matched against the whole path, or against the file
    /// name when they hold no `/`).
    pub fn new(given: &str, excludes: &[String]) -> Result<Pattern, String> {
        // Made absolute, an empty path would be the working directory (t14: followed for ever,
        // shipping nothing).
        if given.trim().is_empty() {
            return Err("an empty path: give a file or a glob such as '/var/log/app/*.log'".into());
        }
        // No file name holds one (a config's "\u0000"): it would match nothing, for ever.
        if given.contains('\0') {
            return Err(format!(
                "{} holds a NUL byte, which no path can",
                Esc::str(given)
            ));
        }
        let is_glob = given.contains(['*', '?', '[']);
        let raw = &absolute(given, is_glob)?;
        // A last `**` means every file below, at any depth (as Filebeat's recursive glob and
        // gitignore read `dir/**`): `dir/**/*`. Alone it matched directories only, so no file (t31).
        let deep;
        let raw = match raw.trim_end_matches('/').strip_suffix("/**") {
            Some(dir) if is_glob => {
                deep = format!("{dir}/**/*");
                &deep
            }
            _ => raw,
        };
        // A directory named alone is a mistake for a glob over its files: refused at start, not
        // followed for ever with a warning (t14). One made later is warned about at each scan.
        if !is_glob && Path::new(raw).is_dir() {
            let shown = Esc::str(given.trim_end_matches('/'));
            return Err(format!(
                "{shown} is a directory, not a file; to follow its files use a glob such as '{shown}/*.log'"
            ));
        }
        // A path ending in '/' names a directory, yet it is none (not there yet, or a file): no file
        // could ever match it (its name would be empty), so it would be followed for ever, silently.
        if !is_glob && raw.ends_with('/') {
            let shown = Esc::str(given.trim_end_matches('/'));
            return Err(format!(
                "{shown}/ ends in '/' but is no directory: give a file, or a glob such as '{shown}/*.log'"
            ));
        }
        // A relative exclude naming a directory (`old/*.log`) is made absolute like the patterns; one
        // that begins with a glob (`*/tmp/*`, `**/x`) matches anywhere and stays as it is.
        let excludes: Vec<String> = excludes
            .iter()
            .map(|e| {
                let first = e.split('/').next().unwrap_or("");
                match e.contains('/') && !first.contains(['*', '?', '[']) {
                    true => absolute(e, true),
                    false => Ok(e.clone()),
                }
            })
            .collect::<Result<_, _>>()?;
        let glob = if is_glob {
            Some(
                glob::Pattern::new(raw)
                    .map_err(|e| format!("invalid pattern '{}': {e}", Esc::str(raw)))?,
            )
        } else {
            None
        };
        let mut base = Path::new(raw)
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        while base.to_string_lossy().contains(['*', '?', '[']) {
            base = base.parent().unwrap_or(Path::new(".")).to_path_buf();
        }
        if base.as_os_str().is_empty() {
            base = PathBuf::from(".");
        }
        let excludes = excludes
            .iter()
            .map(|e| {
                glob::Pattern::new(e)
                    .map_err(|err| format!("invalid exclude '{}': {err}", Esc::str(e)))
            })
            .collect::<Result<_, _>>()?;
        let name = match Path::new(raw).components().next_back() {
            Some(std::path::Component::Normal(n)) if !raw.ends_with('/') => {
                let text = n.to_string_lossy();
                if !text.contains(['*', '?', '[']) {
                    Some(NamePart::Literal(n.to_os_string()))
                } else if text == "**" {
                    None
                } else {
                    glob::Pattern::new(&text).ok().map(NamePart::Glob)
                }
            }
            _ => None,
        };
        let real_base = std::sync::OnceLock::new();
        if let Ok(r) = std::fs::canonicalize(&base) {
            let _ = real_base.set(r);
        }
        Ok(Pattern {
            raw: raw.to_string(),
            given: given.to_string(),
            base,
            real_base,
            is_glob,
            glob,
            excludes,
            name,
        })
    }

    /// Whether a file at `path` could be one this pattern finds, judged by its name alone (the last
    /// component, matched as a scan matches it). Cheap, and never wrong in the direction that matters:
    /// a name this says no to is never found by a scan, so a file created or renamed under it needs none.
    pub fn may_name(&self, path: &Path) -> bool {
        let Some(name) = path.file_name() else {
            return true;
        };
        match &self.name {
            None => true,
            Some(NamePart::Literal(n)) => n == name,
            Some(NamePart::Glob(g)) => {
                g.matches_with(&name.to_string_lossy(), glob::MatchOptions::new())
            }
        }
    }

    /// Whether a full scan would find `path` through this pattern (not excluded): components matched
    /// one by one as the directory walk matches them, `**` standing for any number of directories.
    /// For a file created or renamed in a watched directory, so that it is followed without expanding
    /// every pattern again.
    pub fn finds(&self, path: &Path) -> bool {
        if self.excluded(path) {
            return false;
        }
        if !self.is_glob {
            return Path::new(&self.raw) == path;
        }
        let pat: Vec<std::path::Component<'_>> = Path::new(&self.raw).components().collect();
        let got: Vec<std::path::Component<'_>> = path.components().collect();
        components_match(&pat, &got)
    }

    fn excluded(&self, path: &Path) -> bool {
        let name = path.file_name().map(Path::new).unwrap_or(path);
        self.excludes.iter().any(|e| {
            if e.as_str().contains('/') {
                e.matches(&path.to_string_lossy())
            } else {
                e.matches(&name.to_string_lossy())
            }
        })
    }

    /// Whether `path` is one this pattern names (for watch events).
    /// Whether it is the same pattern with the same exclusions (a reload that changes either
    /// changes its input).
    pub fn same_as(&self, other: &Pattern) -> bool {
        self.raw == other.raw && self.excludes == other.excludes
    }

    pub fn matches(&self, path: &Path) -> bool {
        let hit = match &self.glob {
            Some(g) => g.matches(&path.to_string_lossy()),
            None => Path::new(&self.raw) == path,
        };
        hit && !self.excluded(path)
    }
}

/// Whether a pattern component is matched as a glob (else literally), in a walk and alone alike.
fn is_glob_component(comp: &std::path::Component<'_>) -> bool {
    matches!(comp, std::path::Component::Normal(_))
        && comp.as_os_str().to_string_lossy().contains(['*', '?', '['])
}

/// [`Pattern::finds`]: pattern components against path components, as `glob_paths` walks them.
fn components_match(pat: &[std::path::Component<'_>], path: &[std::path::Component<'_>]) -> bool {
    let Some((first, rest)) = pat.split_first() else {
        return path.is_empty();
    };
    let text = first.as_os_str().to_string_lossy();
    let is_glob = is_glob_component(first);
    if is_glob && text == "**" {
        // Zero or more directories: every split that leaves the rest something to match.
        return (0..path.len()).any(|k| components_match(rest, &path[k..]));
    }
    let Some((name, path_rest)) = path.split_first() else {
        return false;
    };
    let hit = if is_glob {
        glob::Pattern::new(&text).is_ok_and(|g| {
            g.matches_with(
                &name.as_os_str().to_string_lossy(),
                glob::MatchOptions::new(),
            )
        })
    } else {
        first == name
    };
    hit && components_match(rest, path_rest)
}

/// A regular file a pattern matched.
#[derive(Debug, Clone)]
pub struct Found {
    /// The path it was found under.
    pub path: PathBuf,
    /// Its identity.
    pub id: FileId,
    /// Its size when found.
    pub size: u64,
    /// Its modification time when found (nanoseconds since the epoch; 0 when not known).
    pub mtime_ns: i128,
    /// Which pattern found it (index).
    pub pattern: usize,
}

/// Something worth saying once per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Says it once: the same key is not repeated.
    pub key: String,
    /// The message.
    pub text: String,
}

/// Expands every pattern: the regular files they match now that the policy allows, by path order.
/// `dirs` gets the directories where a new match could appear (those a glob read, and directories it
/// matched on the way): watching them tells of new files without a rescan.
pub fn expand(
    patterns: &[Pattern],
    policy: &FilePolicy,
    first: bool,
    notices: &mut Vec<Notice>,
    dirs: &mut Vec<PathBuf>,
) -> Vec<Found> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in patterns.iter().enumerate() {
        let paths: Vec<PathBuf> = if p.is_glob {
            if first && std::fs::symlink_metadata(&p.base).is_err() {
                notices.push(Notice {
                    key: format!("missing:{}", p.raw),
                    text: format!(
                        "{} does not exist yet; files of {} are followed once it does",
                        Esc::path(&p.base),
                        Esc::str(&p.raw)
                    ),
                });
            }
            let paths = glob_paths(&p.raw, dirs, notices);
            // `app[1].log` is a glob (a set of characters): a file with that very name is not
            // among its matches, which is said rather than left silent (t62).
            let literal = Path::new(&p.raw);
            if p.raw.contains('[')
                && std::fs::symlink_metadata(literal).is_ok()
                && !paths.iter().any(|m| m == literal)
            {
                notices.push(Notice {
                    key: format!("literal:{}", p.raw),
                    text: format!(
                        "{} is read as a glob, where [...] is a set of characters, and a file has that very name (not followed by it): to follow that file, write [ as [[] (and ] as []])",
                        Esc::str(&p.raw)
                    ),
                });
            }
            paths
        } else {
            let path = PathBuf::from(&p.raw);
            match std::fs::symlink_metadata(&path) {
                Ok(_) => vec![path],
                Err(_) => {
                    if first {
                        // A bare name may be a second topic given on the command line.
                        let hint = if p.given.contains('/') {
                            ""
                        } else {
                            " (if it is a topic: the topic is the last argument, and several topics take a --config file)"
                        };
                        notices.push(Notice {
                            key: format!("missing:{}", p.raw),
                            // Absolute, as every other message names files (t28 F5).
                            text: format!(
                                "{} does not exist yet; waiting for it{hint}",
                                Esc::str(&p.raw)
                            ),
                        });
                    }
                    continue;
                }
            }
        };
        for path in paths {
            if p.excluded(&path) || !seen.insert(path.clone()) {
                continue;
            }
            match check(&path, p, policy, !p.is_glob) {
                Ok(Some((id, size, mtime_ns))) => out.push(Found {
                    path,
                    id,
                    size,
                    mtime_ns,
                    pattern: i,
                }),
                Ok(None) => {}
                Err(text) => notices.push(Notice {
                    key: format!("skip:{}", path.display()),
                    text,
                }),
            }
        }
    }
    out
}

/// What a full scan would find at `path` alone: the first pattern that finds it (see
/// [`Pattern::finds`]) and the file if the policy allows it; `None` if no pattern finds it or it is not
/// a file (a directory), the reason if it is skipped.
pub fn look_at(
    path: &Path,
    patterns: &[Pattern],
    policy: &FilePolicy,
) -> Option<Result<Found, String>> {
    let i = patterns.iter().position(|p| p.finds(path))?;
    let p = &patterns[i];
    match check(path, p, policy, !p.is_glob) {
        Ok(Some((id, size, mtime_ns))) => Some(Ok(Found {
            path: path.to_path_buf(),
            id,
            size,
            mtime_ns,
            pattern: i,
        })),
        Ok(None) => None,
        Err(text) => Some(Err(text)),
    }
}

/// The paths a glob matches, walking the directories itself so that names that are not UTF-8 (which
/// the glob crate skips) are found too: each name is matched as lossy text, kept as its real bytes.
/// `**` matches any number of directories (not following directory links). Sorted. The directories
/// read, and those matched on the way, are added to `dirs`; a directory that cannot be read (not
/// one that is missing) is said in `notices`.
fn glob_paths(pattern: &str, dirs: &mut Vec<PathBuf>, notices: &mut Vec<Notice>) -> Vec<PathBuf> {
    let opts = glob::MatchOptions::new();
    let mut current: Vec<PathBuf> = vec![PathBuf::new()];
    for comp in Path::new(pattern).components() {
        let text = comp.as_os_str().to_string_lossy();
        if !is_glob_component(&comp) {
            for c in &mut current {
                c.push(comp.as_os_str());
            }
            continue;
        }
        let mut next = Vec::new();
        if text == "**" {
            for dir in &current {
                walk_dirs(dir, &mut next, notices);
            }
            dirs.extend(next.iter().cloned());
        } else {
            let Ok(pat) = glob::Pattern::new(&text) else {
                return Vec::new();
            };
            for dir in &current {
                let base = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir.as_path()
                };
                let rd = match std::fs::read_dir(base) {
                    Ok(rd) => rd,
                    Err(e) => {
                        unreadable(base, &e, notices);
                        continue;
                    }
                };
                dirs.push(base.to_path_buf());
                for e in rd.flatten() {
                    if pat.matches_with(&e.file_name().to_string_lossy(), opts) {
                        let path = dir.join(e.file_name());
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            dirs.push(path.clone());
                        }
                        next.push(path);
                    }
                }
            }
        }
        current = next;
    }
    current.retain(|p| !p.as_os_str().is_empty());
    // By bytes, not by components: as deterministic, and ten times cheaper over 10,000 paths (a full
    // scan's largest cost after the lstat calls).
    use std::os::unix::ffi::OsStrExt;
    current.sort_unstable_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
    current
}

/// `dir` and every directory under it, without following links.
fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>, notices: &mut Vec<Notice>) {
    out.push(dir.to_path_buf());
    let base = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let rd = match std::fs::read_dir(base) {
        Ok(rd) => rd,
        Err(e) => {
            unreadable(base, &e, notices);
            return;
        }
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk_dirs(&dir.join(e.file_name()), out, notices);
        }
    }
}

/// Says once that a directory a pattern goes through cannot be read (permissions, most often: shipper
/// runs as a user the directory shuts out), so nothing under it is followed — not silence. A missing
/// directory, or a file where a directory was expected, is not worth a word.
fn unreadable(dir: &Path, e: &io::Error, notices: &mut Vec<Notice>) {
    if matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) {
        return;
    }
    notices.push(Notice {
        key: format!("dir:{}", dir.display()),
        text: format!(
            "cannot read directory {}: {e}; files under it are not followed until it can be read",
            Esc::path(dir)
        ),
    });
}

/// Whether `path` may be followed: its identity and size if so, `None` to pass over it quietly (a
/// directory a glob matched), an explanation otherwise.
fn check(
    path: &Path,
    p: &Pattern,
    policy: &FilePolicy,
    named: bool,
) -> Result<Option<(FileId, u64, i128)>, String> {
    let shown = Esc::path(path);
    if policy.own.contains(path) {
        return if named {
            Err(format!(
                "{shown} is a file shipper writes itself (its checkpoint or dead-letter file); not followed"
            ))
        } else {
            Ok(None)
        };
    }
    let lm = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        // Listed, then gone (logrotate's compress removes a file it just wrote): nothing to say. So
        // for a pattern's directory part matched by a file (`*/app.log` against `x.log/app.log`).
        Err(e)
            if (e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR))
                && !named =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("cannot read {shown}: {e}; skipping it")),
    };
    let (m, at) = if lm.file_type().is_symlink() {
        if !policy.follow_symlinks {
            return Err(format!(
                "{shown} is a symbolic link; not followed (use --follow-symlinks to follow links that stay under {})",
                Esc::path(&p.base)
            ));
        }
        let target = std::fs::canonicalize(path)
            .map_err(|e| format!("{shown}: broken symbolic link ({e}); skipping it"))?;
        if !allowed(&target, p, policy) {
            return Err(format!(
                "{shown} links to {}, outside {}; not followed (add the target's directory with --symlink-root)",
                Esc::path(&target),
                Esc::path(&p.base)
            ));
        }
        let m = std::fs::metadata(&target)
            .map_err(|e| format!("cannot read {shown}: {e}; skipping it"))?;
        (m, target)
    } else {
        (lm, path.to_path_buf())
    };
    let ft = m.file_type();
    if ft.is_dir() {
        return if named {
            Err(format!(
                "{shown} is a directory, not a file; to follow its files use a glob such as '{shown}/*.log'"
            ))
        } else {
            Ok(None)
        };
    }
    if !ft.is_file() {
        return Err(format!(
            "{shown} is {}; only regular files are followed",
            kind_of(ft)
        ));
    }
    if let Some(owners) = &policy.owners {
        if !owners.contains(&m.uid()) {
            return Err(format!(
                "{shown} belongs to uid {}, not one of --owner; skipping it",
                m.uid()
            ));
        }
    }
    Ok(Some((FileId::at_path(&m, &at), m.len(), mtime_ns(&m))))
}

/// What a file that is not a regular file is, for a message: "a directory", "a FIFO", "a socket",
/// "a device", else "not a regular file".
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// A file's modification time in nanoseconds since the epoch.
pub fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

fn allowed(target: &Path, p: &Pattern, policy: &FilePolicy) -> bool {
    let under = |root: &Path| std::fs::canonicalize(root).is_ok_and(|r| target.starts_with(r));
    let in_base = match p.real_base() {
        Some(r) => target.starts_with(r),
        None => false,
    };
    in_base || policy.symlink_roots.iter().any(|r| under(r))
}

/// The error of [`open`] when the path names another file than the one found: it was replaced
/// (rotated) between the look and the open.
#[derive(Debug, thiserror::Error)]
#[error("replaced while being opened")]
pub struct Replaced;

/// Whether `e` is [`Replaced`].
pub fn is_replaced(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Replaced>())
}

/// Opens a found file for reading, safely: no link followed (unless allowed), no blocking on a FIFO,
/// and it must still be the regular file `expected` (when given) that was found.
pub fn open(
    found: &Found,
    p: &Pattern,
    policy: &FilePolicy,
) -> io::Result<(File, std::fs::Metadata)> {
    let path = if policy.follow_symlinks {
        std::fs::canonicalize(&found.path)?
    } else {
        found.path.clone()
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                io::Error::new(io::ErrorKind::InvalidInput, "became a symbolic link")
            }
            _ => e,
        })?;
    let m = file.metadata()?;
    if !m.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if !FileId::with_fd(&m, &file).same(&found.id) {
        return Err(io::Error::other(Replaced));
    }
    if let Some(real) = real_path(&file) {
        if !allowed(&real, p, policy) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "its real path {} is outside {}",
                    Esc::path(&real),
                    p.base_shown()
                ),
            ));
        }
    }
    clear_nonblock(&file);
    Ok((file, m))
}

/// The path the kernel knows an open file by, where `/proc` is mounted.
pub(crate) fn real_path(file: &File) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

/// Regular files ignore O_NONBLOCK, but clear it anyway so that nothing downstream is surprised.
fn clear_nonblock(file: &File) {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL only change its status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// User ids for `--owner` values: numbers, or names looked up in the user database.
pub fn resolve_owners(names: &[String], setting: &str) -> Result<Vec<u32>, String> {
    let ids = names
        .iter()
        .flat_map(|n| n.split(','))
        .filter(|n| !n.trim().is_empty())
        .map(|n| {
            let n = n.trim();
            if let Ok(id) = n.parse::<u32>() {
                return Ok(id);
            }
            lookup_user(n).ok_or_else(|| format!("{setting}: no user named '{}'", Esc::str(n)))
        })
        .collect::<Result<Vec<u32>, String>>()?;
    // An empty name would otherwise leave a list of no one: every file refused, silently.
    if ids.is_empty() {
        return Err(format!("{setting}: names no user (give names or uids)"));
    }
    Ok(ids)
}

fn lookup_user(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        crate::testkit::scratch_dir(&format!("disc-{name}"))
    }

    #[test]
    fn relative_patterns_and_excludes_are_made_absolute_and_leading_globs_kept() {
        let cwd = std::env::current_dir().unwrap();
        let cwd = cwd.to_str().unwrap();
        let p = Pattern::new(
            "./logs/*.log",
            &["old/*".into(), "*/zz-skip/*".into(), "x.log".into()],
        )
        .unwrap();
        assert_eq!(p.raw, format!("{}/logs/*.log", glob::Pattern::escape(cwd)));
        assert!(p.excluded(Path::new(&format!("{cwd}/old/a.log"))));
        assert!(
            p.excluded(Path::new("/var/zz-skip/a.log")),
            "a leading glob matches anywhere"
        );
        assert!(
            p.excluded(Path::new("/any/x.log")),
            "a name alone matches the file name"
        );
        assert!(!p.excluded(Path::new(&format!("{cwd}/logs/a.log"))));
        assert_eq!(Pattern::new("/abs/a.log", &[]).unwrap().raw, "/abs/a.log");
        assert_eq!(
            Pattern::new("a.log", &[]).unwrap().raw,
            format!("{cwd}/a.log")
        );
    }

    #[test]
    fn a_glob_under_a_missing_directory_is_said_once_at_the_first_scan() {
        let d = dir("missing").join("not-yet");
        let p = vec![Pattern::new(&format!("{}/*.log", d.display()), &[]).unwrap()];
        let (mut notices, mut dirs) = (Vec::new(), Vec::new());
        let policy = FilePolicy::default();
        assert!(expand(&p, &policy, true, &mut notices, &mut dirs).is_empty());
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(
            notices[0]
                .text
                .contains("not-yet does not exist yet; files of"),
            "{notices:?}"
        );
        notices.clear();
        expand(&p, &policy, false, &mut notices, &mut dirs);
        assert!(notices.is_empty(), "not at later scans: {notices:?}");
    }

    #[test]
    fn a_glob_whose_brackets_name_a_file_literally_says_how_to_escape_them() {
        let d = dir("brackets");
        std::fs::write(d.join("app[1].log"), "x\n").unwrap();
        let policy = FilePolicy::default();
        let (mut notices, mut dirs) = (Vec::new(), Vec::new());
        let given = format!("{}/app[1].log", d.display());
        let p = vec![Pattern::new(&given, &[]).unwrap()];
        assert!(expand(&p, &policy, true, &mut notices, &mut dirs).is_empty());
        assert!(
            notices.iter().any(|n| n.text.contains("write [ as [[]")),
            "{notices:?}"
        );
        // Escaped, it is followed; and no notice when the glob matches something.
        let escaped = vec![Pattern::new(&given.replace("[1]", "[[]1[]]"), &[]).unwrap()];
        notices.clear();
        assert_eq!(
            expand(&escaped, &policy, true, &mut notices, &mut dirs).len(),
            1
        );
        assert!(notices.is_empty(), "{notices:?}");
        // When the glob matches another file (app1.log), the literal one is still said.
        std::fs::write(d.join("app1.log"), "y\n").unwrap();
        notices.clear();
        assert_eq!(expand(&p, &policy, true, &mut notices, &mut dirs).len(), 1);
        assert!(
            notices.iter().any(|n| n.text.contains("write [ as [[]")),
            "{notices:?}"
        );
    }

    /// Every regular file under `d`, walked without following links.
    fn all_files(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                all_files(&e.path(), out);
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }

    #[test]
    fn a_pattern_finds_a_path_alone_exactly_when_a_full_scan_finds_it() {
        use std::os::unix::ffi::OsStrExt;
        let d = dir("finds");
        for f in [
            "a.log",
            "b.txt",
            ".hidden.log",
            "sub/c.log",
            "sub/deep/e.log",
            "sub/deep/f.txt",
            "x.log.d/inner.log",
            "sub2/deep/g.log",
            "[ab].log",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x\n").unwrap();
        }
        let odd = d.join(std::ffi::OsStr::from_bytes(b"sub/\xff odd.log"));
        std::fs::write(&odd, b"x\n").unwrap();
        let mut files = Vec::new();
        all_files(&d, &mut files);
        let b = d.display();
        let patterns = [
            (format!("{b}/*.log"), vec![]),
            (format!("{b}/**/*.log"), vec![]),
            (format!("{b}/*/*.log"), vec![]),
            (format!("{b}/sub/**/e.log"), vec![]),
            (format!("{b}/**/deep/*"), vec![]),
            (format!("{b}/[ab].log"), vec![]),
            (format!("{b}/a.log"), vec![]),
            (
                format!("{b}/**/*.log"),
                vec!["c*".to_string(), "*/deep/*".to_string()],
            ),
            (format!("{b}/s*/*"), vec![]),
            (format!("{b}/**"), vec![]),
            (format!("{b}/sub/**/"), vec![]),
        ];
        for (raw, excludes) in patterns {
            let p = Pattern::new(&raw, &excludes).unwrap();
            let (mut notices, mut dirs) = (Vec::new(), Vec::new());
            let found: HashSet<PathBuf> = expand(
                std::slice::from_ref(&p),
                &FilePolicy::default(),
                false,
                &mut notices,
                &mut dirs,
            )
            .into_iter()
            .map(|f| f.path)
            .collect();
            assert!(!found.is_empty(), "{raw} finds something");
            if raw.ends_with("/**") {
                assert_eq!(found.len(), files.len(), "{raw}: every file below (t31)");
            }
            for f in &files {
                assert_eq!(
                    p.finds(f),
                    found.contains(f),
                    "{raw} {excludes:?}: {}",
                    f.display()
                );
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    fn found_names(d: &Path, policy: &FilePolicy) -> (Vec<String>, Vec<Notice>) {
        let p = Pattern::new(&format!("{}/*.log", d.display()), &[]).unwrap();
        let mut notices = Vec::new();
        let f = expand(&[p], policy, true, &mut notices, &mut Vec::new());
        (
            f.iter()
                .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
                .collect(),
            notices,
        )
    }

    #[test]
    fn shippers_own_files_are_told_by_path_relative_or_not() {
        let own = OwnFiles::new(
            Path::new("state/ck"),
            Some(Path::new("/var/log/app/dead.jsonl")),
        );
        let cwd = std::env::current_dir().unwrap();
        assert!(own.contains(Path::new("state/ck")));
        assert!(own.contains(&cwd.join("state/ck")));
        assert!(own.contains(&cwd.join("state/ck.lock")));
        assert!(own.contains(&cwd.join("state/.ck.tmp-12-3")));
        assert!(own.contains(Path::new("/var/log/app/dead.jsonl")));
        assert!(!own.contains(&cwd.join("state/ck2")));
        assert!(!own.contains(&cwd.join("other/.ck.tmp-12-3")));
        assert!(!own.contains(Path::new("/var/log/app/app.log")));
        assert!(!OwnFiles::default().contains(Path::new("state/ck")));
    }

    #[test]
    fn a_missing_bare_name_may_be_a_second_topic_and_is_said_so() {
        let mut notices = Vec::new();
        let patterns = [
            Pattern::new("app-logs-shipper-test-absent", &[]).unwrap(),
            Pattern::new("/nonexistent/shipper/app.log", &[]).unwrap(),
        ];
        expand(
            &patterns,
            &FilePolicy::default(),
            true,
            &mut notices,
            &mut Vec::new(),
        );
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(
            notices[0].text.contains("the topic is the last argument"),
            "{notices:?}"
        );
        assert!(notices[1].text.ends_with("waiting for it"), "{notices:?}");
        // A relative path is named as the absolute one it stands for.
        let cwd = std::env::current_dir().unwrap();
        assert!(
            notices[0].text.starts_with(&format!(
                "{}/app-logs-shipper-test-absent does not exist yet",
                cwd.display()
            )),
            "{notices:?}"
        );
    }

    #[test]
    fn symlinks_fifos_and_directories_are_not_followed_by_default() {
        let d = dir("hostile");
        std::fs::write(d.join("ok.log"), "x\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("shadow.log")).unwrap();
        let fifo = std::ffi::CString::new(d.join("pipe.log").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::create_dir(d.join("dir.log")).unwrap();
        let (names, notices) = found_names(&d, &FilePolicy::default());
        assert_eq!(names, vec!["ok.log"]);
        let all: String = notices.iter().map(|n| n.text.clone() + "\n").collect();
        assert!(all.contains("symbolic link"), "{all}");
        assert!(all.contains("a FIFO"), "{all}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_where_the_pattern_wants_a_directory_is_passed_over_quietly() {
        let d = dir("notdir");
        std::fs::create_dir(d.join("app")).unwrap();
        std::fs::write(d.join("app/a.log"), "x\n").unwrap();
        std::fs::write(d.join("a.log"), "x\n").unwrap();
        let p = Pattern::new(&format!("{}/*/a.log", d.display()), &[]).unwrap();
        let mut notices = Vec::new();
        let f = expand(
            &[p],
            &FilePolicy::default(),
            true,
            &mut notices,
            &mut Vec::new(),
        );
        assert_eq!(f.len(), 1);
        assert!(f[0].path.ends_with("app/a.log"));
        assert!(notices.is_empty(), "{notices:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn follow_symlinks_stays_under_the_pattern_directory() {
        let d = dir("links");
        std::fs::write(d.join("real.txt"), "x\n").unwrap();
        std::os::unix::fs::symlink(d.join("real.txt"), d.join("inside.log")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("outside.log")).unwrap();
        let policy = FilePolicy {
            follow_symlinks: true,
            ..FilePolicy::default()
        };
        let (names, notices) = found_names(&d, &policy);
        assert_eq!(names, vec!["inside.log"]);
        assert!(
            notices.iter().any(|n| n.text.contains("outside")),
            "{notices:?}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_swapped_for_a_link_after_the_scan_is_not_opened() {
        let d = dir("swap");
        let path = d.join("a.log");
        std::fs::write(&path, "x\n").unwrap();
        let p = Pattern::new(&format!("{}/*.log", d.display()), &[]).unwrap();
        let found = expand(
            std::slice::from_ref(&p),
            &FilePolicy::default(),
            true,
            &mut Vec::new(),
            &mut Vec::new(),
        );
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(open(&found[0], &p, &FilePolicy::default()).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The pattern's own directory replaced by a link during a run does not lead out of where it
    /// was (t23 F4: `app/` swapped for a link to another tree shipped that tree's files).
    #[test]
    fn the_patterns_directory_swapped_for_a_link_does_not_lead_out() {
        let d = dir("baseswap");
        let (app, out) = (d.join("app"), d.join("out"));
        std::fs::create_dir_all(&app).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(app.join("a.log"), "a\n").unwrap();
        std::fs::write(out.join("x.log"), "secret\n").unwrap();
        let p = Pattern::new(&format!("{}/*.log", app.display()), &[]).unwrap();
        std::fs::rename(&app, d.join("app.old")).unwrap();
        std::os::unix::fs::symlink(&out, &app).unwrap();
        let found = expand(
            std::slice::from_ref(&p),
            &FilePolicy::default(),
            true,
            &mut Vec::new(),
            &mut Vec::new(),
        );
        assert_eq!(found.len(), 1);
        let e = open(&found[0], &p, &FilePolicy::default()).unwrap_err();
        assert!(e.to_string().contains("when shipper first looked"), "{e}");
        // The new place given as a root: followed.
        let roots = FilePolicy {
            symlink_roots: vec![out.clone()],
            ..FilePolicy::default()
        };
        assert!(open(&found[0], &p, &roots).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn excludes_match_file_names_or_whole_paths() {
        let p = Pattern::new(
            "/var/log/*.log",
            &["*.gz".into(), "/var/log/secret*".into()],
        )
        .unwrap();
        assert!(p.matches(Path::new("/var/log/app.log")));
        assert!(!p.matches(Path::new("/var/log/secret.log")));
        let p = Pattern::new("/var/log/*", &["*.gz".into()]).unwrap();
        assert!(!p.matches(Path::new("/var/log/app.log.1.gz")));
    }

    #[test]
    fn globs_find_names_that_are_not_utf8_and_walk_double_stars() {
        use std::os::unix::ffi::OsStrExt;
        let d = dir("bytes");
        let odd = d.join(std::ffi::OsStr::from_bytes(b"odd\xff\nname.log"));
        std::fs::write(&odd, "x\n").unwrap();
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/deep.log"), "x\n").unwrap();
        std::fs::write(d.join("other.txt"), "x\n").unwrap();
        assert_eq!(
            glob_paths(
                &format!("{}/*.log", d.display()),
                &mut Vec::new(),
                &mut Vec::new()
            ),
            vec![odd]
        );
        assert_eq!(
            glob_paths(
                &format!("{}/**/*.log", d.display()),
                &mut Vec::new(),
                &mut Vec::new()
            )
            .len(),
            2,
            "** matches zero or more directories"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn may_name_judges_the_last_component_as_a_scan_does() {
        use std::os::unix::ffi::OsStrExt;
        let p = Pattern::new("/var/log/**/app-*.log", &[]).unwrap();
        assert!(p.may_name(Path::new("/var/log/x/y/app-1.log")));
        assert!(
            p.may_name(Path::new("/elsewhere/app-2.log")),
            "the name alone"
        );
        assert!(!p.may_name(Path::new("/var/log/x/.ckpt.tmp-1-2")));
        assert!(!p.may_name(Path::new("/var/log/x/app-1.log.gz")));
        assert!(!p.may_name(Path::new("/var/log/x")), "a directory's name");
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"/var/log/app-\xff.log"));
        assert!(
            p.may_name(odd),
            "names that are not UTF-8, lossily as a scan reads them"
        );
        let lit = Pattern::new("/var/log/app.log", &[]).unwrap();
        assert!(lit.may_name(Path::new("/var/log/app.log")));
        assert!(!lit.may_name(Path::new("/var/log/app.log.1")));
        for any in ["/var/log/**", "/var/log/*"] {
            let p = Pattern::new(any, &[]).unwrap();
            assert!(p.may_name(Path::new("/var/log/anything")), "{any}");
        }
        for dir in ["/var/log/", "/var/log"] {
            let e = Pattern::new(dir, &[]).unwrap_err();
            assert!(e.contains("use a glob such as '/var/log/*.log'"), "{e}");
        }
        assert!(Pattern::new("", &[]).unwrap_err().contains("an empty path"));
        assert_eq!(
            Pattern::new("/var/log/a\0b.log", &[]).unwrap_err(),
            "/var/log/a\\u{0}b.log holds a NUL byte, which no path can"
        );
        let e = Pattern::new("/no/such/dir/", &[]).unwrap_err();
        assert!(
            e.contains("/no/such/dir/ ends in '/' but is no directory")
                && e.contains("'/no/such/dir/*.log'"),
            "{e}"
        );
        let file = dir("slash").join("a.log");
        std::fs::write(&file, "x\n").unwrap();
        let e = Pattern::new(&format!("{}/", file.display()), &[]).unwrap_err();
        assert!(e.contains("is no directory"), "{e}");
        assert!(Pattern::new("/var/log/[ab]?.log", &[])
            .unwrap()
            .may_name(Path::new("/x/a1.log")));
    }

    #[test]
    fn owners_resolve_names_and_numbers() {
        assert_eq!(
            resolve_owners(&["0,root".into()], "--owner").unwrap(),
            vec![0, 0]
        );
        assert_eq!(
            resolve_owners(&[" root , 0".into()], "--owner").unwrap(),
            vec![0, 0]
        );
        let e = resolve_owners(&["no-such-user-xyz".into()], "owners").unwrap_err();
        assert_eq!(e, "owners: no user named 'no-such-user-xyz'");
        let e = resolve_owners(&["".into()], "--owner").unwrap_err();
        assert!(e.contains("--owner: names no user"), "{e}");
        assert!(resolve_owners(&[",".into(), " ".into()], "--owner").is_err());
    }
}

//! After a copytruncate rotation: finding the copy that holds the lines we had not read yet.
//!
//! logrotate's `copytruncate` copies `app.log` to `app.log.1` (or `app.log-20261128`, ...) and then
//! truncates `app.log` to nothing. Lines written before the copy but not yet read by us exist only in
//! the copy afterwards; lines written between the copy and the truncation exist nowhere (logrotate's
//! own window, which no reader can close). So when a followed file turns out truncated, we look next
//! to it for the copy and read it from where we were.
//!
//! The copy is recognised, never guessed: a regular file (opened `O_NOFOLLOW | O_NONBLOCK`, checked
//! with `fstat`, owned by an allowed user) in the same directory, named after the file plus a
//! separator (`.`, `-`, `_`) and a suffix, that starts with exactly the bytes our fingerprint was taken
//! of, and has a line end just before our position (or at its end, when it is shorter: then all of it
//! was read, and it is only remembered as read, so that a pattern matching it does not read it
//! again). Among several, the most recently modified wins (an older rotated copy with the same first
//! bytes is older). The directory listing is bounded.
//!
//! A pattern may match the copies too (`app.log*`). A new file that starts like a followed one and
//! holds the same bytes as far as that one was read is such a copy: it waits, and is read on from that
//! position when the original is truncated (`Engine::judge_copy`), instead of from its start.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::discover::FilePolicy;
use super::identity::{starts_with, FileId, Fingerprint};

/// Directory entries looked at, at most, when searching for a copy.
const MAX_ENTRIES: usize = 10_000;

/// A copy of a truncated file, opened.
#[derive(Debug)]
pub struct Copy {
    /// Where it is.
    pub path: PathBuf,
    /// The open copy.
    pub file: File,
    /// Its identity.
    pub id: FileId,
    /// Its size when found.
    pub len: u64,
}

/// Whether the file name `copy` is named after `original` as rotations name copies: the name, then
/// `.`, `-` or `_`, then a suffix (`app.log.1`, `app.log-20261128`, `app.log_old`).
fn named_after(original: &[u8], copy: &[u8]) -> bool {
    copy.len() > original.len() + 1
        && copy.starts_with(original)
        && matches!(copy[original.len()], b'.' | b'-' | b'_')
}

/// The paths of which `copy` could be a rotation's copy (see [`could_be_copy`]): in its directory,
/// its name cut before each `.`, `-` or `_` that has a suffix after it.
pub fn possible_originals(copy: &Path) -> Vec<PathBuf> {
    let Some(name) = copy.file_name() else {
        return Vec::new();
    };
    let dir = copy.parent().unwrap_or(Path::new(""));
    let bytes = name.as_bytes();
    (1..bytes.len().saturating_sub(1))
        .filter(|&i| matches!(bytes[i], b'.' | b'-' | b'_'))
        .map(|i| dir.join(std::ffi::OsStr::from_bytes(&bytes[..i])))
        .collect()
}

/// Whether `copy` could be a rotation's copy of `original`: in the same directory and
/// [named after](named_after) it. Only such a file is ever taken for a copy; a file that merely
/// holds the same bytes (another instance's log with the same banner) is a file of its own.
pub fn could_be_copy(original: &Path, copy: &Path) -> bool {
    match (original.file_name(), copy.file_name()) {
        (Some(o), Some(c)) => {
            original.parent() == copy.parent()
                && named_after(o.as_encoded_bytes(), c.as_encoded_bytes())
        }
        _ => false,
    }
}

/// Finds the copy of `path` (whose first bytes were `fp`, read up to `pos`) a copytruncate rotation
/// just made, if there is one: it holds at least `pos` bytes. `not` is the truncated file itself.
/// With `since`, only a copy modified after that moment: the one way to tell a copy of a file that
/// was empty (`pos` 0, no first bytes to compare) from older generations. At `pos` 0 with first
/// bytes (nothing read of them yet), the copy starting with them holds all of it.
pub fn find(
    path: &Path,
    fp: Fingerprint,
    pos: u64,
    not: FileId,
    policy: &FilePolicy,
    since: Option<SystemTime>,
) -> Option<Copy> {
    if pos == 0 && fp.len == 0 && since.is_none() {
        return None;
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let name = path.file_name()?.as_encoded_bytes();
    let mut best: Option<(SystemTime, Copy)> = None;
    for entry in std::fs::read_dir(dir).ok()?.take(MAX_ENTRIES).flatten() {
        if !named_after(name, entry.file_name().as_encoded_bytes()) {
            continue;
        }
        let Some((copy, modified)) = candidate(&entry.path(), fp, pos, not, policy) else {
            continue;
        };
        // The copy of a file empty then was made since: modified since, and born since when the
        // filesystem keeps birth times (t49: a busy sibling, `app.log.json` written all along, was
        // taken for the copy of an `app.log` that had stayed empty, and read from its start).
        if since.is_some_and(|s| modified <= s || copy.id.born.is_some_and(|b| b <= nanos(s))) {
            continue;
        }
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, copy));
        }
    }
    best.map(|(_, c)| c)
}

/// `t` in nanoseconds since the epoch, as birth times are kept (0 before it).
fn nanos(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// `p` opened, if it is a copy of the file `fp` was taken of, up to `pos` bytes or to its end if it
/// is shorter (a copy made before the writer added lines that we read too: nothing left in it to
/// read, but known for what it is).
fn candidate(
    p: &Path,
    fp: Fingerprint,
    pos: u64,
    not: FileId,
    policy: &FilePolicy,
) -> Option<(Copy, SystemTime)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
        .ok()?;
    let m = file.metadata().ok()?;
    let id = FileId::with_fd(&m, &file);
    let owner_ok = policy.owners.as_ref().is_none_or(|o| o.contains(&m.uid()));
    if !m.file_type().is_file() || !owner_ok || id.same(&not) || m.len() == 0 {
        return None;
    }
    let at = pos.min(m.len());
    if !starts_with(&file, fp).ok()? || (at > 0 && !line_ends_before(&file, at)) {
        return None;
    }
    let modified = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Some((
        Copy {
            path: p.to_path_buf(),
            file,
            id,
            len: m.len(),
        },
        modified,
    ))
}

/// Whether `file` holds, up to `pos`, what a file was read to there: it starts with the bytes `fp`
/// was taken of, the bytes just before `pos` are those `before` was taken of (when noted), and a
/// line ends there.
pub fn holds_up_to(file: &File, fp: Fingerprint, before: Fingerprint, pos: u64) -> bool {
    if pos == 0 || fp.len == 0 || !starts_with(file, fp).unwrap_or(false) {
        return false;
    }
    let k = u64::from(before.len).min(pos);
    let mut buf = vec![0u8; k as usize];
    let before_ok = k == 0
        || (file.read_exact_at(&mut buf, pos - k).is_ok() && Fingerprint::of(&buf) == before);
    before_ok && line_ends_before(file, pos)
}

/// Whether `file`, of `len` bytes, starts with the bytes `fp` was taken of and ends with a line end:
/// what a copy made of a file whose first bytes were `fp` before it grew to where it was read holds.
pub fn holds_start_to_end(file: &File, fp: Fingerprint, len: u64) -> bool {
    len > 0 && fp.len > 0 && starts_with(file, fp).unwrap_or(false) && line_ends_before(file, len)
}

/// Whether the byte before `pos` is a line end (we stopped reading at one).
fn line_ends_before(file: &File, pos: u64) -> bool {
    let mut b = [0u8; 1];
    loop {
        match file.read_at(&mut b, pos - 1) {
            Ok(1) => return b[0] == b'\n',
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
}

/// Bytes compared, at most, to tell that a file is a copy of another up to some position.
const COMPARED: u64 = 4096;

/// Whether `a` and `b` hold the same bytes just before `n` (the last [`COMPARED`] of them, all of them
/// when `n` is smaller): with the same first bytes, the sign of a copy of `b` up to `n`. `false` when
/// either is shorter or cannot be read.
pub fn same_before(a: &File, b: &File, n: u64) -> bool {
    let k = n.min(COMPARED);
    let (mut x, mut y) = (vec![0u8; k as usize], vec![0u8; k as usize]);
    a.read_exact_at(&mut x, n - k).is_ok() && b.read_exact_at(&mut y, n - k).is_ok() && x == y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::identity::fingerprint;

    fn dir(name: &str) -> PathBuf {
        crate::testkit::scratch_dir(&format!("ct-{name}"))
    }

    fn fp_and_id(p: &Path) -> (Fingerprint, FileId) {
        let f = File::open(p).unwrap();
        (fingerprint(&f).unwrap(), FileId::of(&f).unwrap())
    }

    #[test]
    fn the_newest_copy_with_our_first_bytes_and_more_than_we_read_is_found() {
        let d = dir("find");
        let log = d.join("app.log");
        std::fs::write(&log, b"one\ntwo\n").unwrap();
        let (fp, id) = fp_and_id(&log);
        std::fs::write(d.join("app.log.2"), b"one\ntwo\nold\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(d.join("app.log.1"), b"one\ntwo\nthree\n").unwrap();
        std::fs::write(d.join("app.logger"), b"one\ntwo\nthree\nfour\n").unwrap();
        std::fs::write(d.join("other.log.1"), b"one\ntwo\nthree\nfour\n").unwrap();
        std::fs::write(d.join("app.log.3"), b"ONE\ntwo\nthree\nfour\n").unwrap();
        std::fs::write(&log, b"").unwrap();
        let c = find(&log, fp, 8, id, &FilePolicy::default(), None).expect("found");
        assert_eq!(c.path, d.join("app.log.1"));
        // Shorter than what we read: found (all of it was read); not at a line end: nothing.
        for pos in [14, 15, 100] {
            let c = find(&log, fp, pos, id, &FilePolicy::default(), None).unwrap();
            assert_eq!((c.path, c.len), (d.join("app.log.1"), 14));
        }
        assert!(find(&log, fp, 7, id, &FilePolicy::default(), None).is_none());
        // Nothing read of first bytes seen: the newest copy starting with them, whole.
        let c = find(&log, fp, 0, id, &FilePolicy::default(), None).unwrap();
        assert_eq!(c.path, d.join("app.log.1"));
        // No first bytes (empty when seen): only with a moment the copy must be newer than.
        assert!(find(
            &log,
            Fingerprint::EMPTY,
            0,
            id,
            &FilePolicy::default(),
            None
        )
        .is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_possible_originals_are_the_names_a_copy_is_named_after() {
        let got = possible_originals(Path::new("/l/app.log-2026_11.1"));
        let want: Vec<PathBuf> = [
            "/l/app",
            "/l/app.log",
            "/l/app.log-2026",
            "/l/app.log-2026_11",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
        for (original, copy) in want.iter().zip(std::iter::repeat("/l/app.log-2026_11.1")) {
            assert!(could_be_copy(original, Path::new(copy)), "{original:?}");
        }
        // A separator with nothing after it, or at the start, names no original.
        assert!(possible_originals(Path::new("/l/app.")).is_empty());
        assert_eq!(
            possible_originals(Path::new(".x.1")),
            vec![PathBuf::from(".x")]
        );
    }

    #[test]
    fn same_before_compares_the_bytes_before_a_position() {
        let d = dir("same-before");
        let (a, b) = (d.join("a"), d.join("b"));
        let body: Vec<u8> = (0..10_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        std::fs::write(&a, &body).unwrap();
        let mut other = body.clone();
        other[9_000] = b'x';
        std::fs::write(&b, &other).unwrap();
        let (fa, fb) = (File::open(&a).unwrap(), File::open(&b).unwrap());
        assert!(same_before(&fa, &fb, 9_000));
        assert!(!same_before(&fa, &fb, 9_001));
        assert!(
            !same_before(&fa, &fb, body.len() as u64 + 1),
            "past the end"
        );
        assert!(same_before(&fa, &fb, 0));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn links_special_files_and_other_owners_are_not_copies() {
        let d = dir("hostile");
        let log = d.join("app.log");
        std::fs::write(&log, b"one\ntwo\n").unwrap();
        let (fp, id) = fp_and_id(&log);
        let elsewhere = d.join("elsewhere");
        std::fs::write(&elsewhere, b"one\ntwo\nsecret\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.join("app.log.1")).unwrap();
        let fifo = std::ffi::CString::new(d.join("app.log.2").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(find(&log, fp, 8, id, &FilePolicy::default(), None).is_none());
        std::fs::write(d.join("app.log.3"), b"one\ntwo\nthree\n").unwrap();
        let nobody = FilePolicy {
            owners: Some(vec![u32::MAX - 1]),
            ..FilePolicy::default()
        };
        assert!(find(&log, fp, 8, id, &nobody, None).is_none());
        assert!(find(&log, fp, 8, id, &FilePolicy::default(), None).is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

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
//! of, is longer than our position, and has a line end just before it. Among several, the most
//! recently modified wins (an older rotated copy with the same first bytes is older). The directory
//! listing is bounded.

use std::fs::{File, OpenOptions};
use std::io;
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

/// Finds the copy of `path` (whose first bytes were `fp`, read up to `pos`) a copytruncate rotation
/// just made, if there is one: it holds at least `pos` bytes. `not` is the truncated file itself.
pub fn find(
    path: &Path,
    fp: Fingerprint,
    pos: u64,
    not: FileId,
    policy: &FilePolicy,
) -> Option<Copy> {
    if pos == 0 {
        return None;
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let name = path.file_name()?.as_encoded_bytes();
    let mut best: Option<(SystemTime, Copy)> = None;
    for entry in std::fs::read_dir(dir).ok()?.take(MAX_ENTRIES).flatten() {
        let other = entry.file_name();
        let other = other.as_encoded_bytes();
        let named_after = other.len() > name.len() + 1
            && other.starts_with(name)
            && matches!(other[name.len()], b'.' | b'-' | b'_');
        if !named_after {
            continue;
        }
        let Some((copy, modified)) = candidate(&entry.path(), fp, pos, not, policy) else {
            continue;
        };
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, copy));
        }
    }
    best.map(|(_, c)| c)
}

/// `p` opened, if it is a copy of the file `fp` was taken of holding more than `pos` bytes.
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
    let id = FileId::from_meta(&m);
    let owner_ok = policy.owners.as_ref().is_none_or(|o| o.contains(&m.uid()));
    if !m.file_type().is_file() || !owner_ok || id.same(&not) || m.len() < pos {
        return None;
    }
    if !starts_with(&file, fp).ok()? || !line_ends_before(&file, pos) {
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
        let c = find(&log, fp, 8, id, &FilePolicy::default()).expect("found");
        assert_eq!(c.path, d.join("app.log.1"));
        // Shorter than what we read, or not at a line end: nothing.
        assert_eq!(
            find(&log, fp, 14, id, &FilePolicy::default()).unwrap().len,
            14
        );
        assert!(find(&log, fp, 15, id, &FilePolicy::default()).is_none());
        assert!(find(&log, fp, 7, id, &FilePolicy::default()).is_none());
        assert!(find(&log, fp, 0, id, &FilePolicy::default()).is_none());
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
        assert!(find(&log, fp, 8, id, &FilePolicy::default()).is_none());
        std::fs::write(d.join("app.log.3"), b"one\ntwo\nthree\n").unwrap();
        let nobody = FilePolicy {
            owners: Some(vec![u32::MAX - 1]),
            ..FilePolicy::default()
        };
        assert!(find(&log, fp, 8, id, &nobody).is_none());
        assert!(find(&log, fp, 8, id, &FilePolicy::default()).is_some());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

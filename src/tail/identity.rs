//! Which file is which: (device, inode, birth time where the filesystem keeps one) plus a fingerprint of
//! the first bytes, so that rotation, truncation and inode reuse can be told apart.
//!
//! The fingerprint covers the first [`FINGERPRINT_BYTES`] bytes, or all of a shorter file, and records
//! how many bytes it covers: a small file has a fingerprint too, compared over the bytes both versions
//! have, and it is extended as the file grows. So a file replaced by another that reuses its inode is
//! recognised even when both are tiny (unless their first bytes are equal and the filesystem keeps no
//! birth time — then the two are indistinguishable by any means, and the offset check still catches a
//! replacement shorter than what was read).

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// Bytes hashed for a full fingerprint.
pub const FINGERPRINT_BYTES: usize = 256;

/// A file's identity on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Birth time in nanoseconds since the epoch, when the filesystem records it (statx): an inode
    /// reused by a new file has a new birth time.
    pub born: Option<i128>,
}

impl FileId {
    /// The identity in `m` (from `fstat`/`lstat`).
    pub fn from_meta(m: &Metadata) -> FileId {
        let born = m
            .created()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128);
        FileId {
            dev: m.dev(),
            ino: m.ino(),
            born,
        }
    }

    /// The identity of an open file.
    pub fn of(file: &File) -> io::Result<FileId> {
        Ok(FileId::with_fd(&file.metadata()?, file))
    }

    /// The identity in `m`, the metadata of the open `file`, with its birth time.
    pub fn with_fd(m: &Metadata, file: &File) -> FileId {
        let mut id = FileId::from_meta(m);
        if id.born.is_none() {
            id.born = statx_birth(Birth::Fd(file.as_raw_fd()), m.ino());
        }
        id
    }

    /// The identity in `m`, the metadata of `path` (not followed if a link), with its birth time.
    pub fn at_path(m: &Metadata, path: &Path) -> FileId {
        let mut id = FileId::from_meta(m);
        if id.born.is_none() {
            id.born = statx_birth(Birth::Path(path), m.ino());
        }
        id
    }

    /// Whether two identities name the same file: same device and inode, and same birth time when both
    /// know one.
    pub fn same(&self, other: &FileId) -> bool {
        self.dev == other.dev
            && self.ino == other.ino
            && match (self.born, other.born) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// Whose birth time [`statx_birth`] asks.
enum Birth<'a> {
    Fd(libc::c_int),
    Path(&'a Path),
}

/// The birth time of a file, in nanoseconds since the epoch, from statx, if the filesystem keeps
/// one and the file is still inode `ino`. Rust's standard library asks statx for it only on glibc:
/// the static (musl) build knew no birth time, so an inode reused by a new file could pass for the
/// old one (t20: checkpoints of the shipped binary said `-`).
fn statx_birth(of: Birth<'_>, ino: u64) -> Option<i128> {
    let (dirfd, path, flags) = match of {
        Birth::Fd(fd) => (fd, std::ffi::CString::default(), libc::AT_EMPTY_PATH),
        Birth::Path(p) => (
            libc::AT_FDCWD,
            std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?,
            libc::AT_SYMLINK_NOFOLLOW,
        ),
    };
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: statx(2) with a NUL-terminated path that outlives the call and a pointer to a
    // zeroed, writable `struct statx` the kernel fills (at most its size); no other memory is touched.
    let r = unsafe {
        libc::syscall(
            libc::SYS_statx,
            dirfd,
            path.as_ptr(),
            flags,
            libc::STATX_BTIME | libc::STATX_INO,
            buf.as_mut_ptr(),
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: a zeroed `struct statx` (plain integers) is a valid value, and the call succeeded.
    let st = unsafe { buf.assume_init() };
    if st.stx_mask & libc::STATX_BTIME == 0 || st.stx_ino != ino {
        return None;
    }
    Some(i128::from(st.stx_btime.tv_sec) * 1_000_000_000 + i128::from(st.stx_btime.tv_nsec))
}

/// A hash of a file's first bytes and how many bytes it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Bytes covered (0..=256).
    pub len: u16,
    /// FNV-1a of those bytes.
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of nothing (an empty file).
    pub const EMPTY: Fingerprint = Fingerprint {
        len: 0,
        hash: 0xcbf2_9ce4_8422_2325,
    };

    /// The fingerprint of `bytes`.
    pub fn of(bytes: &[u8]) -> Fingerprint {
        let mut h = Fingerprint::EMPTY.hash;
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Fingerprint {
            len: bytes.len() as u16,
            hash: h,
        }
    }

    /// Whether the fingerprint covers all the bytes it ever will.
    pub fn is_full(&self) -> bool {
        self.len as usize >= FINGERPRINT_BYTES
    }
}

/// Reads the first `n` bytes of `file` (fewer if it is shorter).
pub fn head(file: &File, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// What a file's first bytes say about it, before any of its lines are shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Text, or anything else that is not a compressed file: read as lines.
    Lines,
    /// A compressed file (a rotated log that logrotate compressed): its bytes are no lines, and its
    /// lines were read from the file before it was rotated.
    Compressed(&'static str),
    /// Too few bytes yet to tell (they begin like a compressed file's header).
    Unsure,
}

/// Bytes [`judge_head`] looks at.
pub const HEAD_JUDGED: usize = 10;

/// Tells a compressed file by its format's magic bytes: gzip, bzip2, xz, zstd and lz4 frames.
pub fn judge_head(head: &[u8]) -> Head {
    const MAGIC: [(&str, &[u8]); 4] = [
        ("gzip", &[0x1f, 0x8b, 0x08]),
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd]),
        ("xz", &[0xfd, b'7', b'z', b'X', b'Z', 0]),
        ("lz4", &[0x04, 0x22, 0x4d, 0x18]),
    ];
    let mut unsure = false;
    for (name, m) in MAGIC {
        if head.starts_with(m) {
            return Head::Compressed(name);
        }
        unsure |= head.len() < m.len() && m.starts_with(head);
    }
    // bzip2: "BZh", a block size digit, then a block's or the end's magic (pi or sqrt(pi)).
    let mut bz = [0u8; 10];
    for (digit, block) in [
        [0x31, 0x41, 0x59, 0x26, 0x53, 0x59],
        [0x17, 0x72, 0x45, 0x38, 0x50, 0x90],
    ]
    .iter()
    .flat_map(|b| (b'1'..=b'9').map(move |d| (d, b)))
    {
        bz[..3].copy_from_slice(b"BZh");
        bz[3] = digit;
        bz[4..].copy_from_slice(block);
        if head.starts_with(&bz) {
            return Head::Compressed("bzip2");
        }
        unsure |= head.len() < bz.len() && bz.starts_with(head);
    }
    if unsure {
        Head::Unsure
    } else {
        Head::Lines
    }
}

/// The first [`HEAD_JUDGED`] bytes of a file (fewer if it is shorter), for [`judge_head`].
pub fn first_bytes(file: &File) -> io::Result<Vec<u8>> {
    head(file, HEAD_JUDGED)
}

/// The fingerprint of the file's first bytes, as many as there are up to [`FINGERPRINT_BYTES`].
pub fn fingerprint(file: &File) -> io::Result<Fingerprint> {
    Ok(Fingerprint::of(&head(file, FINGERPRINT_BYTES)?))
}

/// Whether `file` still starts with the bytes `fp` was taken of: hashes the same number of first bytes.
/// A file now shorter than what `fp` covers does not.
pub fn starts_with(file: &File, fp: Fingerprint) -> io::Result<bool> {
    let bytes = head(file, fp.len as usize)?;
    Ok(bytes.len() == fp.len as usize && Fingerprint::of(&bytes) == fp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// statx's birth time, asked directly (what the static build relies on), is the one the
    /// standard library gives on glibc, by path and by descriptor; another inode is refused.
    #[test]
    fn birth_times_from_statx_match_the_standard_librarys() {
        let d = std::env::temp_dir().join(format!("shipper-birth-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("f");
        std::fs::write(&p, "x").unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let file = File::open(&p).unwrap();
        let by_path = statx_birth(Birth::Path(&p), m.ino());
        let by_fd = statx_birth(Birth::Fd(file.as_raw_fd()), m.ino());
        assert_eq!(by_path, by_fd);
        assert_eq!(statx_birth(Birth::Path(&p), m.ino() + 1), None);
        if let Some(std_born) = FileId::from_meta(&m).born {
            assert_eq!(by_path, Some(std_born));
        }
        assert_eq!(FileId::at_path(&m, &p), FileId::of(&file).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn compressed_files_are_told_by_their_first_bytes() {
        let gz = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3];
        assert_eq!(judge_head(&gz), Head::Compressed("gzip"));
        assert_eq!(judge_head(&gz[..2]), Head::Unsure);
        assert_eq!(
            judge_head(&[0x28, 0xb5, 0x2f, 0xfd, 0x24]),
            Head::Compressed("zstd")
        );
        assert_eq!(
            judge_head(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]),
            Head::Compressed("xz")
        );
        assert_eq!(
            judge_head(&[0x04, 0x22, 0x4d, 0x18, 0x64]),
            Head::Compressed("lz4")
        );
        assert_eq!(judge_head(b"BZh91AY&SY\x00"), Head::Compressed("bzip2"));
        assert_eq!(judge_head(b"BZh9"), Head::Unsure);
        // Text that merely starts like bzip2's header is text.
        assert_eq!(judge_head(b"BZh9 started\n"), Head::Lines);
        assert_eq!(judge_head(b"2026-11-28 INFO hello\n"), Head::Lines);
        assert_eq!(judge_head(b"\x1f\n"), Head::Lines);
        // Real output of the tools where installed.
        for (tool, name) in [
            ("gzip", "gzip"),
            ("bzip2", "bzip2"),
            ("xz", "xz"),
            ("zstd", "zstd"),
        ] {
            let Ok(out) = std::process::Command::new(tool)
                .arg("-c")
                .arg("/etc/hostname")
                .output()
            else {
                continue;
            };
            if out.status.success() {
                assert_eq!(judge_head(&out.stdout), Head::Compressed(name), "{tool}");
            }
        }
    }

    #[test]
    fn a_small_file_has_a_fingerprint_that_grows_with_it() {
        let dir = crate::testkit::scratch_dir("id");
        let p = dir.join("small");
        let mut f = File::create(&p).unwrap();
        f.write_all(b"hello\n").unwrap();
        let r = File::open(&p).unwrap();
        let fp = fingerprint(&r).unwrap();
        assert_eq!(fp.len, 6);
        assert!(starts_with(&r, fp).unwrap());
        f.write_all(&[b'x'; 300]).unwrap();
        assert!(starts_with(&r, fp).unwrap(), "growing keeps the start");
        assert!(fingerprint(&r).unwrap().is_full());
        std::fs::write(&p, b"HELLO\n").unwrap();
        assert!(
            !starts_with(&File::open(&p).unwrap(), fp).unwrap(),
            "rewritten"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

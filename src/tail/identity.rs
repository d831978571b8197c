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
use std::os::unix::fs::{FileExt, MetadataExt};
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
        Ok(FileId::from_meta(&file.metadata()?))
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
fn head(file: &File, n: usize) -> io::Result<Vec<u8>> {
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

    #[test]
    fn a_small_file_has_a_fingerprint_that_grows_with_it() {
        let dir = std::env::temp_dir().join(format!("shipper-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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

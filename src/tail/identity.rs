//! Which file is which: (device, inode) plus a fingerprint of the first bytes, so that rotation,
//! truncation and inode reuse can be told apart.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Bytes hashed for the fingerprint. A file shorter than this has no fingerprint yet.
pub const FINGERPRINT_BYTES: usize = 256;

/// A file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl FileId {
    /// The identity of an open file.
    pub fn of(file: &File) -> io::Result<FileId> {
        let m = file.metadata()?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// The identity of the file at a path (following links).
    pub fn of_path(path: &std::path::Path) -> io::Result<(FileId, u64)> {
        let m = std::fs::metadata(path)?;
        Ok((
            FileId {
                dev: m.dev(),
                ino: m.ino(),
            },
            m.len(),
        ))
    }
}

/// FNV-1a of the first [`FINGERPRINT_BYTES`] bytes, or `None` while the file is shorter.
pub fn fingerprint(file: &File) -> io::Result<Option<u64>> {
    let mut buf = [0u8; FINGERPRINT_BYTES];
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], got as u64)?;
        if n == 0 {
            return Ok(None);
        }
        got += n;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in buf {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(Some(h))
}

//! The checkpoint: per file identity and path, the byte offset Kafka has acknowledged. Versioned text,
//! written atomically (tmp, fsync, rename, fsync the directory).
//!
//! ```text
//! shipper-checkpoint 1
//! <dev>\t<ino>\t<fingerprint hex or ->\t<acked offset>\t<path>
//! ```

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::identity::FileId;

const HEADER: &str = "shipper-checkpoint 1";

/// One file's acknowledged position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file's identity.
    pub id: FileId,
    /// Fingerprint of the first bytes, when the file had enough of them.
    pub fingerprint: Option<u64>,
    /// Bytes of the file Kafka has acknowledged, from the start.
    pub offset: u64,
    /// Where the file was when last seen (informational).
    pub path: PathBuf,
}

/// Reads a checkpoint file; a missing file is an empty checkpoint.
pub fn load(path: &Path) -> io::Result<HashMap<FileId, Entry>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a shipper checkpoint (version 1)", path.display()),
        ));
    }
    let mut out = HashMap::new();
    for (n, line) in lines.enumerate() {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: malformed line {}", path.display(), n + 2),
            )
        };
        let mut f = line.splitn(5, '\t');
        let mut next = || f.next().ok_or_else(bad);
        let dev = next()?.parse().map_err(|_| bad())?;
        let ino = next()?.parse().map_err(|_| bad())?;
        let fp = next()?;
        let fingerprint = if fp == "-" {
            None
        } else {
            Some(u64::from_str_radix(fp, 16).map_err(|_| bad())?)
        };
        let offset = next()?.parse().map_err(|_| bad())?;
        let p = PathBuf::from(next()?);
        let id = FileId { dev, ino };
        out.insert(
            id,
            Entry {
                id,
                fingerprint,
                offset,
                path: p,
            },
        );
    }
    Ok(out)
}

/// Writes the checkpoint atomically: a crash leaves either the old or the new file, never a torn one.
pub fn store<'a>(path: &Path, entries: impl Iterator<Item = &'a Entry>) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut text = String::from(HEADER);
    text.push('\n');
    for e in entries {
        let fp = e
            .fingerprint
            .map_or("-".to_string(), |f| format!("{f:016x}"));
        text.push_str(&format!(
            "{}\t{}\t{fp}\t{}\t{}\n",
            e.id.dev,
            e.id.ino,
            e.offset,
            e.path.display()
        ));
    }
    {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The default checkpoint location: `$XDG_STATE_HOME/shipper/` or `~/.local/state/shipper/`, named
/// after the topic so that several tails do not share one.
pub fn default_path(topic: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("shipper")
        .join(format!("tail-{topic}.checkpoint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_other_files() {
        let dir = std::env::temp_dir().join(format!("shipper-ckpt-{}", std::process::id()));
        let p = dir.join("c");
        let e = Entry {
            id: FileId { dev: 1, ino: 2 },
            fingerprint: Some(0xabc),
            offset: 77,
            path: PathBuf::from("/var/log/a b.log"),
        };
        store(&p, [e.clone()].iter()).unwrap();
        let got = load(&p).unwrap();
        assert_eq!(got.get(&e.id), Some(&e));
        fs::write(&p, "something else\n").unwrap();
        assert!(load(&p).is_err());
        assert!(load(&dir.join("missing")).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}

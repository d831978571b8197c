//! The checkpoint: per file identity, the byte offset Kafka has acknowledged. Versioned text with
//! percent-encoded paths, written atomically (a fresh temp file created exclusively with mode 0600 and
//! without following links, fsync, rename, fsync of the directory), guarded by an exclusive lock so two
//! processes never share one checkpoint.
//!
//! ```text
//! shipper-checkpoint 2
//! skip-marks                                               (the offsets below say when they are inside a long line)
//! <dev> <ino> <birth ns or -> <fingerprint bytes> <fingerprint hex> <acked offset>[+skip:<line start>[:<hex>]] <path, %-encoded> [<origin, %-encoded>]
//! eo-producer <producer id> <epoch>                       (with --exactly-once)
//! eo-mark <topic, %-encoded> <partition> <offset>          (with --exactly-once)
//! ```
//!
//! The origin is the path under which a pattern matched the file, written when it differs from where
//! the file is now (a rotated file being finished): on restart the file is finished only if a pattern
//! of the config still names its origin, and its lines keep the route of that pattern's input.
//!
//! `+skip:START` marks an offset inside a line longer than the line limit, whose rest is being skipped,
//! and where that line starts: a restart goes on skipping it, whatever the limit is then, if the file
//! still holds a line there (a line start at START, no line end from there to the offset, looked at
//! over the last 64 KiB, and the same bytes just before the offset as the hash says: up to 64 of
//! them, none before START); an unmarked offset that is not at a line start means the file was
//! rewritten. Checkpoints written before the marks (no `skip-marks`
//! line) are judged by the bytes: no line end within the limit before the offset. A binary older
//! than the marks drops a marked entry and the `skip-marks` line as damaged.
//!
//! Loading never stops `tail`: a damaged line is dropped (and said), the damaged file is moved aside
//! for inspection, and the good entries are kept. Version 1 files (round 1) are read too.
//!
//! (Over 500 lines with its tests: the format, its encoding and its damage recovery are one contract,
//! tested next to the code.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::exactly::EoState;
use super::identity::{FileId, Fingerprint};
use crate::escape::Esc;

const HEADER_V1: &str = "shipper-checkpoint 1";
const HEADER_V2: &str = "shipper-checkpoint 2";
/// The line that says the offsets of the entries below are marked when they are inside a long line.
const SKIP_MARKS: &str = "skip-marks";
/// Between such an offset and its line's start.
const SKIP_MARK: &str = "+skip:";

/// Whether an entry's offset is inside a line longer than the limit, whose rest is being skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongLine {
    /// The checkpoint does not say (written before it did): judged by the bytes.
    Unknown,
    /// At a line start, or at the end of a last line without its newline yet.
    No,
    /// Inside a line that starts here (or, when that was not known, at the offset itself), with the
    /// hash of its bytes just before the offset (up to 64, none before its start; not known when
    /// the file was not open).
    From(u64, Option<u64>),
}

/// One file's acknowledged position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file's identity.
    pub id: FileId,
    /// Fingerprint of its first bytes.
    pub fingerprint: Fingerprint,
    /// Bytes of the file Kafka has acknowledged, from the start.
    pub offset: u64,
    /// Whether `offset` is inside a line longer than the limit, whose rest is being skipped.
    pub long_line: LongLine,
    /// Where the file was when last seen.
    pub path: PathBuf,
    /// Where a pattern matched it (its name before a rotation); usually `path`.
    pub origin: PathBuf,
}

impl Entry {
    /// This entry, borrowed.
    pub fn borrowed(&self) -> EntryRef<'_> {
        EntryRef {
            id: self.id,
            fingerprint: self.fingerprint,
            offset: self.offset,
            long_line: self.long_line,
            path: &self.path,
            origin: &self.origin,
        }
    }
}

/// An [`Entry`] borrowed from where it lives: rendering a checkpoint copies no path.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    /// The file's identity.
    pub id: FileId,
    /// Fingerprint of its first bytes.
    pub fingerprint: Fingerprint,
    /// Bytes of the file Kafka has acknowledged, from the start.
    pub offset: u64,
    /// Whether `offset` is inside a line being skipped (see [`Entry::long_line`]).
    pub long_line: LongLine,
    /// Where the file was when last seen.
    pub path: &'a Path,
    /// Where a pattern matched it; usually `path`.
    pub origin: &'a Path,
}

impl EntryRef<'_> {
    /// An owned copy.
    pub fn to_entry(&self) -> Entry {
        Entry {
            id: self.id,
            fingerprint: self.fingerprint,
            offset: self.offset,
            long_line: self.long_line,
            path: self.path.to_path_buf(),
            origin: self.origin.to_path_buf(),
        }
    }
}

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The good entries.
    pub entries: Vec<Entry>,
    /// What exactly-once keeps (nothing without it).
    pub eo: EoState,
    /// Damaged lines dropped.
    pub dropped: usize,
    /// Where a damaged file was moved, if it was.
    pub moved_to: Option<PathBuf>,
    /// Larger than a checkpoint can be: only its first part was read.
    pub oversized: bool,
    /// When the file was last written.
    pub written: Option<std::time::SystemTime>,
}

/// `%`-encodes every byte that is not a printable, non-space ASCII character (and `%` itself).
pub fn encode_path(p: &Path) -> String {
    let mut s = String::new();
    encode_path_into(&mut s, p);
    s
}

/// [`encode_path`], appending to `out`.
pub fn encode_path_into(out: &mut String, p: &Path) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = p.as_os_str().as_bytes();
    out.reserve(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let plain = rest
            .iter()
            .position(|&b| !b.is_ascii_graphic() || b == b'%')
            .unwrap_or(rest.len());
        // The run is printable ASCII: valid UTF-8 by construction.
        out.push_str(std::str::from_utf8(&rest[..plain]).unwrap_or_default());
        if let Some(&b) = rest.get(plain) {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
            rest = &rest[plain + 1..];
        } else {
            rest = &[];
        }
    }
}

/// Reverses [`encode_path`]; `None` for a malformed encoding.
pub fn decode_path(s: &str) -> Option<PathBuf> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
}

/// A version 2 entry; `marks`: the checkpoint marks offsets inside a long line.
fn parse_v2(line: &str, marks: bool) -> Option<Entry> {
    let mut f = line.split(' ');
    let dev = f.next()?.parse().ok()?;
    let ino = f.next()?.parse().ok()?;
    let born = match f.next()? {
        "-" => None,
        n => Some(n.parse().ok()?),
    };
    let fp_len: u16 = f.next()?.parse().ok()?;
    let fp_hash = u64::from_str_radix(f.next()?, 16).ok()?;
    let offset = f.next()?;
    let (offset, long_line) = match offset.split_once(SKIP_MARK) {
        Some((o, mark)) if marks => {
            let (from, hash) = match mark.split_once(':') {
                Some((f, h)) if h.len() == 16 => (f, Some(u64::from_str_radix(h, 16).ok()?)),
                Some(_) => return None,
                None => (mark, None),
            };
            let (o, from): (u64, u64) = (o.parse().ok()?, from.parse().ok()?);
            (o, LongLine::From((from <= o).then_some(from)?, hash))
        }
        Some(_) => return None,
        None if marks => (offset.parse().ok()?, LongLine::No),
        None => (offset.parse().ok()?, LongLine::Unknown),
    };
    let path = decode_path(f.next()?)?;
    let origin = match f.next() {
        Some(o) => decode_path(o)?,
        None => path.clone(),
    };
    if f.next().is_some() || fp_len as usize > super::identity::FINGERPRINT_BYTES {
        return None;
    }
    Some(Entry {
        id: FileId { dev, ino, born },
        fingerprint: Fingerprint {
            len: fp_len,
            hash: fp_hash,
        },
        offset,
        long_line,
        path,
        origin,
    })
}

/// Round 1's format: tab-separated, a 256-byte fingerprint or `-`, a raw path.
fn parse_v1(line: &str) -> Option<Entry> {
    let mut f = line.splitn(5, '\t');
    let dev = f.next()?.parse().ok()?;
    let ino = f.next()?.parse().ok()?;
    let fp = f.next()?;
    let offset = f.next()?.parse().ok()?;
    let path = PathBuf::from(f.next()?);
    let origin = path.clone();
    // A v1 fingerprint is a hash of 256 bytes; without one, the file was shorter: unknown, so take
    // the empty fingerprint (it matches any file) and rely on the inode and the offset.
    let fingerprint = match fp {
        "-" => Fingerprint::EMPTY,
        h => Fingerprint {
            len: super::identity::FINGERPRINT_BYTES as u16,
            hash: u64::from_str_radix(h, 16).ok()?,
        },
    };
    Some(Entry {
        id: FileId {
            dev,
            ino,
            born: None,
        },
        fingerprint,
        offset,
        long_line: LongLine::Unknown,
        path,
        origin,
    })
}

/// A checkpoint larger than this is not ours (10,000 files take about 1.5 MB).
const MAX_CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// Parses a checkpoint's bytes: the good entries and how many lines were damaged (an unknown header
/// counts as one). Never fails, never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let (entries, _, dropped) = parse_all(bytes);
    (entries, dropped)
}

/// Parses one entry line of a version; `true` when the checkpoint marks long-line positions.
type ParseLine = fn(&str, bool) -> Option<Entry>;

/// Like [`parse`], with the exactly-once lines (`eo-…`, version 2 only).
pub fn parse_all(bytes: &[u8]) -> (Vec<Entry>, EoState, usize) {
    let mut eo = EoState::default();
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split('\n');
    let header = lines.next().unwrap_or_default();
    let (parse_line, mut dropped): (ParseLine, usize) = match header {
        HEADER_V2 => (parse_v2, 0),
        HEADER_V1 => (|l, _| parse_v1(l), 0),
        _ => (|_, _| None, 1),
    };
    let mut marks = false;
    let mut entries = Vec::new();
    // Every line is written with its newline: a last one without it was cut (a full disk, a
    // truncation), and its path may be cut too: damaged, not taken (t20 F5: no word of it).
    let cut = !text.ends_with('\n');
    let mut lines = lines.peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if cut && lines.peek().is_none() {
            dropped += 1;
            break;
        }
        if line == SKIP_MARKS && header == HEADER_V2 {
            marks = true;
            continue;
        }
        if line.starts_with("eo-") && header == HEADER_V2 {
            if !eo.parse_line(line) {
                dropped += 1;
            }
            continue;
        }
        match parse_line(line, marks) {
            Some(e) => entries.push(e),
            None => dropped += 1,
        }
    }
    (entries, eo, dropped)
}

/// Reads a checkpoint file; a missing file is an empty checkpoint. Damage is repaired, not fatal: the
/// good entries are kept and the damaged file is moved aside.
/// Refuses a checkpoint path that names something else than a checkpoint: not a regular file (a FIFO
/// would block the start, `/dev/null` would be replaced by a file), or a file with other content (a
/// log or `/etc/passwd` given by mistake would be moved aside and replaced). A missing or empty file
/// is fine. Checked before the lock file is made.
pub fn check_path(path: &Path) -> Result<(), String> {
    let m = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let ft = m.file_type();
    if !ft.is_file() {
        return Err(format!(
            "it is {}, not a checkpoint file",
            super::discover::kind_of(ft)
        ));
    }
    if m.len() == 0 {
        return Ok(());
    }
    let mut head = [0u8; 19];
    let n = io::Read::read(&mut File::open(path).map_err(|e| e.to_string())?, &mut head)
        .map_err(|e| e.to_string())?;
    if head[..n] != HEADER_V2.as_bytes()[..19] {
        return Err(
            "it exists and is no shipper checkpoint (it does not start with 'shipper-checkpoint'): not overwritten; give the checkpoint a path of its own".into(),
        );
    }
    Ok(())
}

pub fn load(path: &Path) -> io::Result<Loaded> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(e),
    };
    let written = file.metadata().and_then(|m| m.modified()).ok();
    let mut bytes = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(&file, MAX_CHECKPOINT_BYTES + 1),
        &mut bytes,
    )?;
    // Larger than any checkpoint (damage, or another file grown into it): its lines as far as
    // the limit are read, the rest counted as one damaged line (t20 F5: every good entry was
    // dropped, every file read again from its start).
    let oversized = bytes.len() as u64 > MAX_CHECKPOINT_BYTES;
    if oversized {
        let end =
            memchr::memrchr(b'\n', &bytes[..MAX_CHECKPOINT_BYTES as usize]).map_or(0, |i| i + 1);
        bytes.truncate(end);
    }
    let (entries, eo, mut dropped) = parse_all(&bytes);
    dropped += usize::from(oversized);
    let mut moved_to = None;
    if dropped > 0 {
        // Beside it under its own bytes (display() would change a name that is not UTF-8).
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(
            ".damaged-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ));
        let aside = PathBuf::from(aside);
        if fs::rename(path, &aside).is_ok() {
            moved_to = Some(aside);
        }
    }
    Ok(Loaded {
        entries,
        eo,
        dropped,
        moved_to,
        oversized,
        written,
    })
}

/// The checkpoint's text.
pub fn render<'a>(entries: impl Iterator<Item = &'a Entry>) -> String {
    render_all(&entries.map(Entry::borrowed).collect::<Vec<_>>(), None)
}

/// Like [`render`], with the exactly-once lines. Sized once and written without `format!`: at 10,000
/// files this runs on the agent's loop every checkpoint interval.
pub fn render_all(entries: &[EntryRef<'_>], eo: Option<&EoState>) -> String {
    let paths: usize = entries
        .iter()
        .map(|e| {
            e.path.as_os_str().len()
                + if e.origin != e.path {
                    e.origin.as_os_str().len()
                } else {
                    0
                }
        })
        .sum();
    let mut text =
        String::with_capacity(HEADER_V2.len() + 256 + entries.len() * 96 + paths * 5 / 4);
    text.push_str(HEADER_V2);
    text.push('\n');
    text.push_str(SKIP_MARKS);
    text.push('\n');
    if let Some(eo) = eo {
        eo.render_into(&mut text);
    }
    for e in entries {
        push_u64(&mut text, e.id.dev);
        text.push(' ');
        push_u64(&mut text, e.id.ino);
        text.push(' ');
        match e.id.born {
            Some(b) => push_i128(&mut text, b),
            None => text.push('-'),
        }
        text.push(' ');
        push_u64(&mut text, u64::from(e.fingerprint.len));
        text.push(' ');
        push_hex16(&mut text, e.fingerprint.hash);
        text.push(' ');
        push_u64(&mut text, e.offset);
        if let LongLine::From(from, hash) = e.long_line {
            text.push_str(SKIP_MARK);
            push_u64(&mut text, from);
            if let Some(h) = hash {
                text.push(':');
                push_hex16(&mut text, h);
            }
        }
        text.push(' ');
        encode_path_into(&mut text, e.path);
        if e.origin != e.path {
            text.push(' ');
            encode_path_into(&mut text, e.origin);
        }
        text.push('\n');
    }
    text
}

/// Appends `v` in decimal.
fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Decimal digits: ASCII.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// Appends `v` in decimal (a birth time: nanoseconds since the epoch, which fit in a u64 until 2554).
fn push_i128(out: &mut String, v: i128) {
    match u64::try_from(v.unsigned_abs()) {
        Ok(m) => {
            if v < 0 {
                out.push('-');
            }
            push_u64(out, m);
        }
        Err(_) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v}");
        }
    }
}

/// Appends `v` as 16 lower-case hex digits.
fn push_hex16(out: &mut String, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((v >> (shift * 4)) & 15) as usize] as char);
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or("checkpoint".into(), |n| n.to_string_lossy().into_owned())
}

/// Writes the checkpoint atomically: a crash leaves either the old or the new file, never a torn one.
/// The temp file is new (`O_EXCL`), private (0600) and never a link someone planted (`O_NOFOLLOW`).
pub fn store(path: &Path, text: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name(path),
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let r = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive lock on a checkpoint, held for the life of the process: a second `tail` on the same
/// checkpoint is refused instead of shipping everything twice.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

/// What [`Lock::check`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LockCheck {
    /// The lock file is the one held.
    Held,
    /// The lock file was deleted or replaced, and a new one is held now.
    Retaken,
}

impl Lock {
    /// Creates the checkpoint's directory if needed and takes `<checkpoint>.lock`.
    pub fn take(checkpoint: &Path) -> io::Result<Lock> {
        if let Some(dir) = checkpoint.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        // The checkpoint is replaced by a rename, which would replace a link by a file, and a link
        // would lock its own name, not the file's: a second tail through another name would run.
        if fs::symlink_metadata(checkpoint).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link; give the checkpoint's own path",
                    Esc::path(checkpoint)
                ),
            ));
        }
        let mut path = checkpoint.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create {}: {e}; its directory must be writable by the user running shipper",
                        Esc::path(&path)
                    ),
                ),
                _ => e,
            })?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "checkpoint {} is in use by another shipper tail (locked: {}); run one tail per checkpoint, or give this one its own --checkpoint (checkpoint = \"PATH\" in a config file)",
                        Esc::path(checkpoint),
                        Esc::path(&path)
                    ),
                ));
            }
            return Err(e);
        }
        // Leftover temp files of processes that died mid-write.
        let prefix = format!(".{}.tmp-", file_name(checkpoint));
        if let Ok(rd) = fs::read_dir(
            checkpoint
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        ) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(Lock { file, path })
    }

    /// Checks that the lock file under its name is still the one held: deleted (an operator's
    /// `rm /var/lib/shipper/*`, a tmpfiles cleanup), a second tail could take the checkpoint too
    /// and both would ship every line (t20 F4). A new lock file is then taken; `Err` when another
    /// process holds it already.
    pub fn check(&mut self) -> io::Result<LockCheck> {
        let held = self.file.metadata()?;
        let same = fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino());
        if same {
            return Ok(LockCheck::Held);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.file = file;
        Ok(LockCheck::Retaken)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The default checkpoint location, named after the topic so that several tails do not share one:
/// systemd's `$STATE_DIRECTORY` (a unit's `StateDirectory=`), else `$XDG_STATE_HOME/shipper/`, else
/// `~/.local/state/shipper/` when the home directory exists. Only absolute directories count: with
/// no `HOME` (`env -i`, runit, a container) the default was `./shipper/`, one checkpoint per start
/// directory, and a start elsewhere shipped every file again (t17 F3); with `HOME=/nonexistent`
/// (a system user's), root created that directory. With none, the error asks for `--checkpoint`.
pub fn default_path(topic: &str) -> Result<PathBuf, String> {
    default_path_from(topic, |k| std::env::var_os(k))
}

fn default_path_from(
    topic: &str,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<PathBuf, String> {
    let absolute = |k: &str| var(k).map(PathBuf::from).filter(|p| p.is_absolute());
    let safe: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("tail-{safe}.checkpoint");
    // A list (several StateDirectory= entries) is separated by colons: the first is ours.
    let state = var("STATE_DIRECTORY").and_then(|v| {
        let first = v.as_bytes().split(|&b| b == b':').next()?.to_vec();
        let p = PathBuf::from(std::ffi::OsString::from_vec(first));
        p.is_absolute().then_some(p)
    });
    if let Some(dir) = state {
        return Ok(dir.join(name));
    }
    if let Some(x) = absolute("XDG_STATE_HOME") {
        return Ok(x.join("shipper").join(name));
    }
    if let Some(h) = absolute("HOME").filter(|h| h.is_dir()) {
        return Ok(h.join(".local/state/shipper").join(name));
    }
    Err(format!(
        "no place for the checkpoint: no STATE_DIRECTORY, XDG_STATE_HOME or home directory ({}); give one with --checkpoint PATH (checkpoint = \"PATH\" in a config)",
        match var("HOME") {
            Some(h) => format!("HOME={} is not an existing directory", Esc::path(Path::new(&h))),
            None => "HOME is not set".to_string(),
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_checkpoint_is_never_relative_and_systemds_state_directory_comes_first() {
        let at = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            default_path_from("app logs", move |k| {
                vars.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            })
        };
        let home = std::env::temp_dir();
        let h = home.to_str().unwrap();
        assert_eq!(
            at(&[("HOME", h)]).unwrap(),
            home.join(".local/state/shipper/tail-app_logs.checkpoint")
        );
        assert_eq!(
            at(&[("HOME", h), ("XDG_STATE_HOME", "/x/state")]).unwrap(),
            Path::new("/x/state/shipper/tail-app_logs.checkpoint")
        );
        assert_eq!(
            at(&[
                ("HOME", h),
                ("XDG_STATE_HOME", "/x/state"),
                ("STATE_DIRECTORY", "/var/lib/shipper:/var/lib/other")
            ])
            .unwrap(),
            Path::new("/var/lib/shipper/tail-app_logs.checkpoint")
        );
        // Relative values are passed over (the XDG spec says so for XDG_STATE_HOME).
        assert_eq!(
            at(&[
                ("HOME", h),
                ("XDG_STATE_HOME", "state"),
                ("STATE_DIRECTORY", "s")
            ])
            .unwrap(),
            home.join(".local/state/shipper/tail-app_logs.checkpoint")
        );
        // No home: an error asking for --checkpoint, not ./shipper/.
        let e = at(&[]).unwrap_err();
        assert!(
            e.contains("HOME is not set") && e.contains("--checkpoint"),
            "{e}"
        );
        let e = at(&[("HOME", "/nonexistent")]).unwrap_err();
        assert!(
            e.contains("HOME=/nonexistent is not an existing directory"),
            "{e}"
        );
        assert!(at(&[("HOME", ".")]).is_err());
    }

    fn dir(name: &str) -> PathBuf {
        crate::testkit::scratch_dir(&format!("ckpt-{name}"))
    }

    fn entry(path: &str) -> Entry {
        let path = PathBuf::from(std::ffi::OsString::from_vec(path.as_bytes().to_vec()));
        Entry {
            id: FileId {
                dev: 1,
                ino: 2,
                born: Some(1_700_000_000_123_456_789),
            },
            fingerprint: Fingerprint::of(b"abc"),
            offset: 77,
            long_line: LongLine::No,
            origin: path.clone(),
            path,
        }
    }

    #[test]
    fn every_byte_is_encoded_plain_or_as_percent_hex_and_decoded_back() {
        for b in 0..=255u8 {
            let raw = [b'a', b, b'%', b, b'z'];
            let path = PathBuf::from(std::ffi::OsString::from_vec(raw.to_vec()));
            let want: String = raw
                .iter()
                .map(|&c| {
                    if c.is_ascii_graphic() && c != b'%' {
                        (c as char).to_string()
                    } else {
                        format!("%{c:02X}")
                    }
                })
                .collect();
            let mut out = String::from("x ");
            encode_path_into(&mut out, &path);
            assert_eq!(out, format!("x {want}"), "byte {b}");
            assert_eq!(decode_path(&want), Some(path), "byte {b}");
        }
    }

    #[test]
    fn entries_render_as_the_formatted_fields_at_every_edge() {
        let borns = [
            None,
            Some(0),
            Some(-1),
            Some(1_700_000_000_123_456_789),
            Some(i128::from(u64::MAX)),
            Some(i128::from(u64::MAX) + 1),
            Some(i128::MIN),
        ];
        let mut entries = Vec::new();
        for (i, born) in borns.into_iter().enumerate() {
            let mut e = entry(&format!("/var/log/a b/{i}.log"));
            e.id = FileId {
                dev: [0, 9, u64::MAX][i % 3],
                ino: [u64::MAX, 10, 0][i % 3],
                born,
            };
            e.fingerprint.hash = [0, 0xabc, u64::MAX][i % 3];
            e.offset = [0, 12_345, u64::MAX][(i + 1) % 3];
            if i % 3 == 2 {
                e.long_line = LongLine::From(e.offset / 2, (i % 2 == 0).then_some(0xabc));
            }
            if i % 2 == 1 {
                e.origin = PathBuf::from("/var/log/app.log");
            }
            entries.push(e);
        }
        let mut want = format!("{HEADER_V2}\nskip-marks\n");
        for e in &entries {
            let born = e.id.born.map_or("-".to_string(), |b| b.to_string());
            want += &format!(
                "{} {} {born} {} {:016x} {}{} {}",
                e.id.dev,
                e.id.ino,
                e.fingerprint.len,
                e.fingerprint.hash,
                e.offset,
                match e.long_line {
                    LongLine::From(f, None) => format!("+skip:{f}"),
                    LongLine::From(f, Some(h)) => format!("+skip:{f}:{h:016x}"),
                    _ => String::new(),
                },
                encode_path(&e.path)
            );
            if e.origin != e.path {
                want += &format!(" {}", encode_path(&e.origin));
            }
            want.push('\n');
        }
        assert_eq!(render(entries.iter()), want);
        assert_eq!(parse(want.as_bytes()), (entries, 0));
    }

    /// Before the skip marks, no entry says whether it is inside a long line (judged by the bytes);
    /// a marked offset in such a checkpoint is damage.
    #[test]
    fn a_checkpoint_without_skip_marks_says_nothing_of_long_lines() {
        let text = format!(
            "{HEADER_V2}\n1 2 - 3 00000000000000ab 77 /a\n1 3 - 3 00000000000000ab 9+skip:4 /b\n"
        );
        let (entries, dropped) = parse(text.as_bytes());
        assert_eq!(dropped, 1);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].offset, entries[0].long_line),
            (77, LongLine::Unknown)
        );
        let marked = text.replacen('\n', "\nskip-marks\n", 1);
        let (entries, dropped) = parse(marked.as_bytes());
        assert_eq!(dropped, 0);
        let got: Vec<_> = entries.iter().map(|e| (e.offset, e.long_line)).collect();
        assert_eq!(got, [(77, LongLine::No), (9, LongLine::From(4, None))]);
        let hashed = marked.replace("9+skip:4", "9+skip:4:00000000000000ff");
        assert_eq!(
            parse(hashed.as_bytes()).0[1].long_line,
            LongLine::From(4, Some(255))
        );
        // Damaged marks: no start, a start after the offset, another suffix.
        for bad in [
            "9+skip",
            "9+skip:",
            "9+skip:10",
            "9+skipx",
            "9+",
            "+skip:4",
            "9+skip:4+skip:4",
            "9+skip:4:ff",
            "9+skip:4:00000000000000ff:1",
            "9+skip:4:",
        ] {
            let t = marked.replace("9+skip:4", bad);
            assert_eq!(parse(t.as_bytes()).1, 1, "{bad}");
        }
    }

    #[test]
    fn hostile_file_names_round_trip() {
        let d = dir("names");
        let p = d.join("c");
        let e1 = entry("/var/log/a b\n\tc%d.log");
        let mut e2 = entry("/var/log/\u{1b}[31m.log");
        e2.id.ino = 3;
        e2.path = PathBuf::from(std::ffi::OsString::from_vec(
            b"/var/log/\xff\xfe.log".to_vec(),
        ));
        store(&p, &render([e1.clone(), e2.clone()].iter())).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        // e2 was renamed (rotated): its origin is written after its path; e1's is not.
        let fields: Vec<usize> = text.lines().skip(2).map(|l| l.split(' ').count()).collect();
        assert_eq!(fields, vec![7, 8], "{text}");
        let got = load(&p).unwrap();
        assert_eq!(got.entries, vec![e1, e2]);
        assert_eq!(got.dropped, 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_checkpoint_keeps_its_good_entries_and_is_moved_aside() {
        let d = dir("damaged");
        let p = d.join("c");
        let good = entry("/var/log/app.log");
        let mut text = render([good.clone()].iter());
        text.push_str("garbage line\n1 2 - 999 zz 5 /x\n");
        fs::write(&p, text).unwrap();
        let got = load(&p).unwrap();
        assert_eq!(got.entries, vec![good]);
        assert_eq!(got.dropped, 2);
        assert!(got.moved_to.as_ref().is_some_and(|m| m.exists()));
        assert!(!p.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    /// A checkpoint cut in its last line (no newline) counts that line damaged: its path may be cut
    /// too, and the files it no longer names are said (t20 F5: silent).
    #[test]
    fn a_cut_last_line_is_damaged() {
        let d = dir("cut");
        let p = d.join("c");
        let (a, b) = (entry("/var/log/a.log"), entry("/var/log/b.log"));
        let text = render([a.clone(), b].iter());
        fs::write(&p, &text[..text.len() - 5]).unwrap();
        let got = load(&p).unwrap();
        assert_eq!(got.entries, vec![a]);
        assert_eq!(got.dropped, 1);
        fs::remove_dir_all(&d).unwrap();
    }

    /// A checkpoint grown past the size any can have (zeros appended) keeps the good entries before
    /// the limit (t20 F5: all were dropped, and every file was read again from its start).
    #[test]
    fn an_oversized_checkpoint_keeps_its_entries_before_the_limit() {
        let d = dir("oversized");
        let p = d.join("c");
        let good = entry("/var/log/app.log");
        let mut bytes = render([good.clone()].iter()).into_bytes();
        bytes.resize(MAX_CHECKPOINT_BYTES as usize + 10, 0);
        fs::write(&p, bytes).unwrap();
        let got = load(&p).unwrap();
        assert_eq!(got.entries, vec![good]);
        assert!(got.oversized);
        assert!(got.dropped >= 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_foreign_file_is_moved_aside_not_fatal() {
        let d = dir("foreign");
        let p = d.join("c");
        fs::write(&p, "something else\n").unwrap();
        let got = load(&p).unwrap();
        assert!(got.entries.is_empty());
        assert!(got.moved_to.is_some());
        assert!(load(&d.join("missing")).unwrap().entries.is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn round_one_checkpoints_are_read() {
        let d = dir("v1");
        let p = d.join("c");
        fs::write(
            &p,
            "shipper-checkpoint 1\n5\t6\t00000000000000ab\t10\t/var/log/a b.log\n5\t7\t-\t3\t/x\n",
        )
        .unwrap();
        let got = load(&p).unwrap();
        assert_eq!(got.entries.len(), 2);
        assert_eq!(got.entries[0].path, PathBuf::from("/var/log/a b.log"));
        assert_eq!(got.entries[1].fingerprint, Fingerprint::EMPTY);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn random_and_mutated_checkpoints_never_panic() {
        let good = render([entry("/var/log/a.log"), entry("/var/log/b\nc.log")].iter());
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut b = good.clone().into_bytes();
            for _ in 0..rng.usize(1..8) {
                match rng.u8(..3) {
                    0 if !b.is_empty() => {
                        let i = rng.usize(..b.len());
                        b[i] = rng.u8(..);
                    }
                    1 if !b.is_empty() => {
                        let i = rng.usize(..b.len());
                        b.truncate(i);
                    }
                    _ => b.extend((0..rng.usize(..20)).map(|_| rng.u8(..))),
                }
            }
            let (entries, dropped) = parse(&b);
            assert!(entries.len() <= 2 + b.len() / 10 && dropped <= b.len() + 1);
            // What parses renders back to something that parses the same (an entry that said
            // nothing of long lines, its checkpoint's marks line damaged, as not inside one).
            let again = parse(render(entries.iter()).as_bytes());
            let marked: Vec<Entry> = entries
                .into_iter()
                .map(|e| Entry {
                    long_line: match e.long_line {
                        LongLine::Unknown => LongLine::No,
                        l => l,
                    },
                    ..e
                })
                .collect();
            assert_eq!((again.0, again.1), (marked, 0));
        }
    }

    /// A lock file deleted under a running tail is taken again; if a second tail took a new one
    /// meanwhile, the check fails (t20 F4: both ran and shipped every line).
    #[test]
    fn a_deleted_lock_file_is_taken_again_or_found_taken() {
        let d = dir("lock-deleted");
        let p = d.join("c");
        let mut first = Lock::take(&p).unwrap();
        assert_eq!(first.check().unwrap(), LockCheck::Held);
        fs::remove_file(first.path()).unwrap();
        assert_eq!(first.check().unwrap(), LockCheck::Retaken);
        assert!(Lock::take(&p).is_err(), "held again");
        fs::remove_file(first.path()).unwrap();
        let _second = Lock::take(&p).unwrap();
        let e = first.check().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_checkpoint_named_in_bytes_that_are_not_utf8_locks_beside_itself() {
        use std::os::unix::ffi::OsStrExt;
        let d = dir("lock-bytes").join(std::ffi::OsStr::from_bytes(b"d\xff"));
        fs::create_dir_all(&d).unwrap();
        let p = d.join(std::ffi::OsStr::from_bytes(b"c\xfe"));
        let lock = Lock::take(&p).unwrap();
        assert_eq!(
            lock.path().as_os_str().as_bytes(),
            [p.as_os_str().as_bytes(), b".lock"].concat()
        );
        assert!(lock.path().exists());
        // A second name that differs only in bytes display() would have changed is another lock.
        let other = d.join(std::ffi::OsStr::from_bytes(b"c\xfd"));
        let _second = Lock::take(&other).unwrap();
        fs::remove_dir_all(d.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_second_lock_on_one_checkpoint_is_refused() {
        let d = dir("lock");
        let p = d.join("c");
        let first = Lock::take(&p).unwrap();
        // flock locks belong to the open file description: a second open in this process conflicts
        // just as another process would.
        let e = Lock::take(&p).unwrap_err();
        assert!(
            e.to_string().contains("in use by another shipper tail"),
            "{e}"
        );
        // Nor through a link to it, whose lock file would have another name.
        fs::write(&p, "").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = Lock::take(&link).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        drop(first);
        Lock::take(&p).unwrap();
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_temp_file_never_follows_a_planted_link() {
        let d = dir("link");
        let p = d.join("c");
        let victim = d.join("victim");
        fs::write(&victim, "precious").unwrap();
        // Plant links at every name a writer might use next.
        for n in 0..4 {
            let name = d.join(format!(
                ".c.tmp-{}-{}",
                std::process::id(),
                TMP_COUNTER.load(Ordering::Relaxed) + n
            ));
            let _ = std::os::unix::fs::symlink(&victim, name);
        }
        let r = store(&p, "x");
        assert!(r.is_err() || fs::read_to_string(&p).unwrap() == "x");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        fs::remove_dir_all(&d).unwrap();
    }
}

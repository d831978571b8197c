//! The dead-letter file: records Kafka refuses for good (too large for the topic even alone, invalid)
//! are appended here, one JSON object per line, so that nothing refused is lost without a trace:
//!
//! ```text
//! {"time":1700000000000,"topic":"logs","path":"/var/log/app.log","error":"...","key":null,"value":"..."}
//! ```
//!
//! Values that are not UTF-8 are base64 with a `value_encoding` marker, as `consume -J` writes them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::Error;
use crate::escape::Esc;
use crate::output::json_bytes;
use crate::wire::records;

/// Where refused records go: said (the first ten one by one, then one line every 10 s counting
/// the rest, so that a topic whose `max.message.bytes` fell below its lines does not flood the log),
/// and written to the dead-letter file if there is one.
pub struct Refused {
    /// The dead-letter file, if `--dead-letter` is set.
    pub file: Option<DeadLetters>,
    said: u32,
    quiet: u64,
    /// The last refusal not said yet.
    last: Option<String>,
    next: Option<std::time::Instant>,
}

impl Refused {
    /// Said one by one before they are counted.
    const ONE_BY_ONE: u32 = 10;
    /// At most one line this often after that.
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// Says what is refused into `file` (if any).
    pub fn new(file: Option<DeadLetters>) -> Refused {
        Refused {
            file,
            said: 0,
            quiet: 0,
            last: None,
            next: None,
        }
    }

    /// Says the refused lines not said yet (at the stop).
    pub fn finish(&mut self) {
        self.say_counted(std::time::Instant::now());
    }

    /// Says the refused lines counted since the last such line, if it is time (called every few
    /// seconds: the end of a burst is said without waiting for another refusal).
    pub fn tick(&mut self, now: std::time::Instant) {
        if self.next.is_none_or(|t| now >= t) {
            self.say_counted(now);
        }
    }

    fn say_counted(&mut self, now: std::time::Instant) {
        if self.quiet == 0 {
            return;
        }
        let last = self.last.take().unwrap_or_default();
        crate::log::error(format_args!(
            "{} more lines refused by Kafka, skipped (the last: {last})",
            self.quiet
        ));
        self.quiet = 0;
        self.next = Some(now + Self::EVERY);
    }

    /// `n` lines of `source` (its path, and the byte offset after the last of them) refused by
    /// Kafka for good with `error`: said (paced) and kept.
    pub fn refused(
        &mut self,
        topic: &str,
        source: Option<(&Path, Option<u64>)>,
        error: &Error,
        batch: Option<&[u8]>,
        n: usize,
    ) {
        let shown = source.map_or("?".to_string(), |(p, _)| Esc::path(p).to_string());
        let lines = if n == 1 { "line" } else { "lines" };
        let at = match source.and_then(|(_, end)| end) {
            Some(end) if n == 1 => format!(" (ending at byte {end})"),
            Some(end) => format!(" (the last ending at byte {end})"),
            None => String::new(),
        };
        let what = format!("{n} {lines} of {shown}{at}");
        let now = std::time::Instant::now();
        if self.said < Self::ONE_BY_ONE {
            self.said += 1;
            crate::log::error(format_args!("{what} refused by Kafka, skipped: {error}"));
            if self.said == Self::ONE_BY_ONE {
                crate::log::error(format_args!(
                    "further refused lines are counted and said every {} s",
                    Self::EVERY.as_secs()
                ));
                self.next = Some(now + Self::EVERY);
            }
        } else {
            self.quiet += n as u64;
            self.last = Some(format!("{what}: {error}"));
            self.tick(now);
        }
        if let (Some(dl), Some(batch)) = (self.file.as_mut(), batch) {
            if let Err(err) = dl.write(topic, source.map(|(p, _)| p), error, batch) {
                crate::log::error(format_args!("cannot write to the dead-letter file: {err}"));
            }
        }
    }
}

/// An open dead-letter file.
pub struct DeadLetters {
    file: File,
}

impl DeadLetters {
    /// Opens (creating, mode 0600, never through a symbolic link) `path` for appending. An existing
    /// file must be a regular file holding dead letters already (or nothing): a mistyped path such as
    /// `/etc/passwd` or a log is refused, not appended to.
    pub fn open(path: &Path) -> anyhow::Result<DeadLetters> {
        let refuse = |why: &dyn std::fmt::Display| {
            anyhow::anyhow!("cannot open dead-letter file {}: {why}", Esc::path(path))
        };
        // O_NONBLOCK: a FIFO at the path fails at once instead of blocking until a reader comes.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                // O_NOFOLLOW's refusal (errno 40 says "too many levels"): a link another user
                // could point at any file this one may write.
                Some(libc::ELOOP) => refuse(&"it is a symbolic link (give the real path)"),
                _ => refuse(&e),
            })?;
        let meta = file.metadata().map_err(|e| refuse(&e))?;
        if !meta.file_type().is_file() {
            return Err(refuse(&"not a regular file"));
        }
        let mut first = [0u8; 1];
        if meta.len() > 0 {
            std::os::unix::fs::FileExt::read_at(&file, &mut first, 0).map_err(|e| refuse(&e))?;
        }
        if meta.len() > 0 && first[0] != b'{' {
            return Err(refuse(
                &"it holds something else than dead letters (JSON lines); give a new path",
            ));
        }
        Ok(DeadLetters { file })
    }

    /// Appends every record of a refused batch.
    pub fn write(
        &mut self,
        topic: &str,
        source: Option<&Path>,
        error: &Error,
        batch: &[u8],
    ) -> io::Result<()> {
        let mut out = Vec::new();
        let now = crate::producer::timestamp_now_ms();
        let path = source.map(|p| {
            use std::os::unix::ffi::OsStrExt;
            p.as_os_str().as_bytes().to_vec()
        });
        for b in records::split_batches(batch) {
            let Ok((h, bytes)) = b else { break };
            let mut scratch = Vec::new();
            let Ok(section) = records::records_section(&h, bytes, &mut scratch, usize::MAX) else {
                break;
            };
            for r in records::records(&h, section).flatten() {
                write!(out, "{{\"time\":{now},")?;
                json_bytes(&mut out, "topic", Some(topic.as_bytes()))?;
                out.push(b',');
                json_bytes(&mut out, "path", path.as_deref())?;
                out.push(b',');
                json_bytes(&mut out, "error", Some(error.to_string().as_bytes()))?;
                out.push(b',');
                json_bytes(&mut out, "key", r.key)?;
                out.push(b',');
                json_bytes(&mut out, "value", r.value)?;
                out.extend_from_slice(b"}\n");
            }
        }
        self.file.write_all(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_new_file_or_one_of_dead_letters_is_appended_to() {
        let d = crate::testkit::scratch_dir("dead");
        let new = d.join("dead.jsonl");
        DeadLetters::open(&new).unwrap();
        std::fs::write(&new, "{\"time\":1}\n").unwrap();
        DeadLetters::open(&new).unwrap();
        let passwd = d.join("passwd");
        std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let e = DeadLetters::open(&passwd).err().unwrap().to_string();
        assert!(e.contains("something else than dead letters"), "{e}");
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = DeadLetters::open(&fifo).err().unwrap().to_string();
        assert!(e.contains("cannot open dead-letter file"), "{e}");
        let link = d.join("link.jsonl");
        std::os::unix::fs::symlink(&new, &link).unwrap();
        let e = DeadLetters::open(&link).err().unwrap().to_string();
        assert!(
            e.ends_with("it is a symbolic link (give the real path)"),
            "{e}"
        );
        assert_eq!(std::fs::read(&passwd).unwrap().len(), 32, "untouched");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_end_of_a_burst_of_refusals_is_said_without_another_refusal() {
        // t10: 10 said one by one, then the rest only when a later refusal came.
        let mut r = Refused::new(None);
        let e = Error::NoBrokers;
        let path = Path::new("/var/log/a.log");
        for i in 0..15 {
            r.refused("t", Some((path, Some(100 * i))), &e, None, 1);
        }
        assert_eq!(r.quiet, 5);
        assert!(r.last.as_deref().unwrap().contains("ending at byte 1400"));
        let now = std::time::Instant::now();
        r.tick(now);
        assert_eq!(r.quiet, 5, "not before 10 s");
        r.tick(now + Refused::EVERY + std::time::Duration::from_secs(1));
        assert_eq!((r.quiet, r.last.is_none()), (0, true), "said at the tick");
    }
}

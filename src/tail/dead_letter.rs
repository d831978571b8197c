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

/// An open dead-letter file.
pub struct DeadLetters {
    file: File,
}

impl DeadLetters {
    /// Opens (creating, mode 0600, never through a symbolic link) `path` for appending.
    pub fn open(path: &Path) -> anyhow::Result<DeadLetters> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                anyhow::anyhow!("cannot open dead-letter file {}: {e}", Esc::path(path))
            })?;
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

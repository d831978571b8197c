//! One followed file: where we have read to, which lines are in flight, and how far Kafka has
//! acknowledged (the checkpoint, which never runs ahead of Kafka).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

use super::identity::{fingerprint, FileId};
use super::map::Region;
use crate::producer::Producer;
use crate::wire::records::Header;

/// Bits of a delivery token that hold the line's sequence number; the rest hold the follower key.
pub const SEQ_BITS: u32 = 40;

/// Counters every line ends up in exactly one of (plus truncation events).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Lines handed to the producer.
    pub lines_read: u64,
    /// Bytes of those lines (without newlines).
    pub bytes_read: u64,
    /// Lines Kafka acknowledged.
    pub lines_acked: u64,
    /// Lines longer than the limit, sent truncated (counted in read/acked too).
    pub long_lines: u64,
    /// Lines Kafka refused for good (e.g. too large for the topic); skipped, counted here.
    pub lines_failed: u64,
    /// Times a file shrank or was replaced in place (copytruncate); reading restarted at 0.
    pub truncations: u64,
    /// Rotations seen (the path now names another file).
    pub rotations: u64,
}

/// Limits for reading.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// Lines longer than this are truncated to it.
    pub max_line_bytes: usize,
    /// Bytes mapped and read per call, for fairness between files.
    pub chunk_bytes: usize,
}

/// What one read pass found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// Read this many lines; `more` if the file has more bytes ready.
    Lines {
        /// Lines sent to the producer.
        lines: u64,
        /// More bytes wait beyond this chunk.
        more: bool,
    },
    /// The file is shorter than our position or its first bytes changed: it was truncated.
    Truncated,
}

/// A file being followed.
pub struct Follower {
    /// Unique key of this follower (a truncated file gets a new one).
    pub key: u64,
    /// The path the file was found under.
    pub path: PathBuf,
    file: File,
    /// Identity.
    pub id: FileId,
    /// Fingerprint of the first bytes, once there are enough.
    pub fingerprint: Option<u64>,
    /// Next byte to read: the start of the first line not yet sent.
    pub read_pos: u64,
    /// Inside a line longer than the limit: drop bytes up to its newline.
    skipping: bool,
    /// The path no longer names this file (renamed away or deleted): finish it, then close.
    pub rotated: bool,
    /// When the file last grew (or we last read from it).
    pub last_active: Instant,
    next_seq: u64,
    base_seq: u64,
    inflight: VecDeque<(u64, bool)>,
    /// Bytes acknowledged by Kafka, from the start of the file.
    pub acked_pos: u64,
    scratch: Vec<u8>,
    header_value: Option<Vec<u8>>,
}

impl Follower {
    /// Starts following `file` (found at `path`) from byte `start`.
    pub fn new(key: u64, path: PathBuf, file: File, start: u64) -> io::Result<Self> {
        let id = FileId::of(&file)?;
        let fp = fingerprint(&file)?;
        Ok(Follower {
            key,
            header_value: Some(path.to_string_lossy().into_owned().into_bytes()),
            path,
            file,
            id,
            fingerprint: fp,
            read_pos: start,
            skipping: false,
            rotated: false,
            last_active: Instant::now(),
            next_seq: 0,
            base_seq: 0,
            inflight: VecDeque::new(),
            acked_pos: start,
            scratch: Vec::new(),
        })
    }

    /// Current size of the file.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether the file was truncated or rewritten in place since we read it.
    pub fn was_truncated(&mut self) -> io::Result<bool> {
        let size = self.size()?;
        if size < self.read_pos {
            return Ok(true);
        }
        let fp = fingerprint(&self.file)?;
        match (self.fingerprint, fp) {
            (Some(old), Some(new)) if old != new => Ok(true),
            (Some(_), None) => Ok(true),
            (None, Some(new)) => {
                self.fingerprint = Some(new);
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Lines sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.inflight.iter().filter(|(_, a)| !a).count()
    }

    fn token(&mut self, end: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.inflight.push_back((end, false));
        (self.key << SEQ_BITS) | seq
    }

    /// Marks the line with this token's sequence as done (acknowledged, or failed for good) and moves
    /// the acknowledged watermark over the contiguous done prefix.
    pub fn done(&mut self, token: u64) {
        let seq = token & ((1 << SEQ_BITS) - 1);
        if seq < self.base_seq {
            return;
        }
        if let Some(e) = self.inflight.get_mut((seq - self.base_seq) as usize) {
            e.1 = true;
        }
        while let Some(&(end, true)) = self.inflight.front() {
            self.acked_pos = end;
            self.inflight.pop_front();
            self.base_seq += 1;
        }
    }

    /// Bytes from `read_pos` skipped without a record (the rest of an over-long line); done at once.
    fn skip_to(&mut self, end: u64) {
        self.read_pos = end;
        let t = self.token(end);
        self.done(t);
    }

    /// Reads complete lines from the current position into the producer (up to one chunk). With
    /// `finish`, a final line without newline is sent too (the file will not grow any more).
    pub fn read(
        &mut self,
        producer: &mut Producer,
        limits: &ReadLimits,
        path_header: Option<&[u8]>,
        timestamp_ms: i64,
        finish: bool,
        c: &mut Counters,
    ) -> io::Result<ReadResult> {
        let size = self.size()?;
        if size < self.read_pos {
            return Ok(ReadResult::Truncated);
        }
        if size == self.read_pos {
            return Ok(ReadResult::Lines {
                lines: 0,
                more: false,
            });
        }
        let len = (size - self.read_pos).min(limits.chunk_bytes as u64) as usize;
        // Copy out of the map first and check for truncation before anything reaches a batch: a page
        // that vanished under us reads as zeros, which must never be shipped as data.
        {
            let region = Region::map(&self.file, self.read_pos, len)?;
            region.begin_copy();
            self.scratch.clear();
            self.scratch.extend_from_slice(region.bytes());
            if region.truncated() {
                return Ok(ReadResult::Truncated);
            }
        }
        if self.size()? < self.read_pos + len as u64 {
            return Ok(ReadResult::Truncated);
        }
        self.last_active = Instant::now();
        let more = (self.read_pos + len as u64) < size;
        let data = std::mem::take(&mut self.scratch);
        let lines = self.send_lines(
            &data,
            producer,
            limits,
            path_header,
            timestamp_ms,
            finish && !more,
            c,
        );
        self.scratch = data;
        Ok(ReadResult::Lines { lines, more })
    }

    #[allow(clippy::too_many_arguments)]
    fn send_lines(
        &mut self,
        data: &[u8],
        producer: &mut Producer,
        limits: &ReadLimits,
        path_header: Option<&[u8]>,
        ts: i64,
        at_end: bool,
        c: &mut Counters,
    ) -> u64 {
        let base = self.read_pos;
        let mut start = 0usize;
        let mut lines = 0;
        let header_value = self.header_value.take();
        let headers_buf: Vec<Header<'_>> = match (path_header, &header_value) {
            (Some(name), Some(v)) => vec![(name, Some(v.as_slice()))],
            _ => Vec::new(),
        };
        if self.skipping {
            match memchr::memchr(b'\n', data) {
                Some(nl) => {
                    self.skipping = false;
                    start = nl + 1;
                    self.skip_to(base + start as u64);
                }
                None => {
                    self.skip_to(base + data.len() as u64);
                    self.header_value = header_value;
                    return 0;
                }
            }
        }
        loop {
            let rest = &data[start..];
            let (line, next, complete) = match memchr::memchr(b'\n', rest) {
                Some(nl) => (&rest[..nl], start + nl + 1, true),
                None if at_end && !rest.is_empty() => (rest, data.len(), true),
                None => (rest, data.len(), false),
            };
            if !complete {
                if line.len() > limits.max_line_bytes {
                    // A partial line already over the limit: send its head now, drop the rest.
                    self.send_one(
                        &line[..limits.max_line_bytes],
                        base + next as u64,
                        &headers_buf,
                        producer,
                        ts,
                        c,
                    );
                    c.long_lines += 1;
                    lines += 1;
                    self.skipping = true;
                }
                break;
            }
            let mut value = line.strip_suffix(b"\r").unwrap_or(line);
            if value.len() > limits.max_line_bytes {
                value = &value[..limits.max_line_bytes];
                c.long_lines += 1;
            }
            self.send_one(value, base + next as u64, &headers_buf, producer, ts, c);
            lines += 1;
            start = next;
            if start >= data.len() {
                break;
            }
        }
        drop(headers_buf);
        self.header_value = header_value;
        lines
    }

    fn send_one(
        &mut self,
        value: &[u8],
        end: u64,
        headers: &[Header<'_>],
        producer: &mut Producer,
        ts: i64,
        c: &mut Counters,
    ) {
        let token = self.token(end);
        self.read_pos = end;
        c.lines_read += 1;
        c.bytes_read += value.len() as u64;
        if let Err(e) = producer.append(None, Some(value), headers, ts, token) {
            // max_line_bytes is below the topic's limit unless the user raised it: count and skip.
            crate::log::warn(format_args!("{}: line skipped: {e}", self.path.display()));
            c.lines_failed += 1;
            self.done(token);
        }
    }
}

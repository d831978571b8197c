//! One followed file: where we have read to, which lines are in flight, and how far Kafka has
//! acknowledged (the checkpoint, which never runs ahead of Kafka).
//!
//! New bytes are mapped ([`super::map`]) and split into lines ([`super::lines`]) that are copied
//! straight from the map into a batch: one copy from the page cache. After each line the map's fault
//! flag is checked; if a page vanished (the file was truncated under us), that line is taken back out
//! of the batch and the file is re-examined, so zeros are never shipped.
//!
//! (Over 500 lines: reading, in-flight tracking and acknowledgement of one file keep one invariant —
//! the acked offset is the end of a shipped prefix — and `read` and `ship_events` (each ~90 lines) are
//! one loop over the map whose fault, multiline and batch-full exits must all restore it; split, the
//! exits would no longer sit next to the state they restore. Tested through the engine's tests.)

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::time::Instant;

use super::identity::{fingerprint, FileId, Fingerprint, Head};
use super::lines::{LineSplitter, Piece};
use super::map::Region;
use super::multiline::{self, MultilineConfig};
use super::sink::Sink;
use crate::producer::SourcePos;
use crate::wire::records::Header;

/// Bits of a delivery token that hold the line's sequence number; the rest hold the follower key.
pub const SEQ_BITS: u32 = 36;
/// In a line in flight: its end is not inside a long line being skipped.
const NO_SKIP: u64 = u64::MAX;

/// Lines grouped into multiline events in one pass over a region, at most (unless `max_lines` needs
/// more): 65,536 lines are 2.5 MiB of line records.
const MULTILINE_PASS_LINES: usize = 65_536;

/// Largest follower key (keys are reused after it, skipping live ones).
pub const MAX_KEY: u64 = (1 << (64 - SEQ_BITS)) - 1;

/// The bits of a token that hold its line's sequence.
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// Counters every line ends up in exactly one of (plus events).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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
    /// Truncated files whose unread rest was found in their copy (copytruncate) and read from there.
    pub copies_read: u64,
    /// Rotations seen (the path now names another file).
    pub rotations: u64,
    /// Full scans (the patterns expanded: a walk of every directory they cover).
    pub full_scans: u64,
    /// Files deleted between a scan listing them, holding bytes, and their open: none of it read.
    pub gone_unread: u64,
}

impl Counters {
    /// Adds another's line counts (not truncations or rotations, which are the engine's).
    pub fn add(&mut self, o: &Counters) {
        self.lines_read += o.lines_read;
        self.bytes_read += o.bytes_read;
        self.lines_acked += o.lines_acked;
        self.long_lines += o.long_lines;
        self.lines_failed += o.lines_failed;
    }
}

/// Limits for reading.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// Lines longer than this are truncated to it.
    pub max_line_bytes: usize,
    /// Bytes mapped and read per call, for fairness between files.
    pub chunk_bytes: usize,
}

/// Where a file's lines go: topic, key and headers, resolved when the file is first followed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The topic's name.
    pub topic_name: String,
    /// The topic's index in the sink, once the sink knows the topic.
    pub topic: Option<usize>,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record headers.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What one read found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// Read this many lines; `more` if the file has more bytes ready.
    Lines {
        /// Lines sent.
        lines: u64,
        /// More bytes wait beyond what was read.
        more: bool,
    },
    /// The file is shorter than what we read: it was truncated.
    Truncated,
    /// The file begins with a compression format's header (a rotated log compressed by logrotate):
    /// not lines. Nothing of it was shipped.
    Compressed(&'static str),
    /// Read again from the start after a truncation, it began with this many NUL bytes, passed over:
    /// the hole a writer without `O_APPEND` leaves when it writes on at its old offset after a
    /// copytruncate (its next line lands there, and the bytes before it read as zeros).
    Hole {
        /// NUL bytes passed over.
        bytes: u64,
        /// More bytes wait beyond them.
        more: bool,
    },
    /// A page faulted but the file is not shorter: the disk could not read it.
    BadPage {
        /// Where the unreadable region starts.
        offset: u64,
    },
}

/// Whether a file nothing was read of yet is a copy of another followed file (a copytruncate copy
/// that a pattern matches too): a copy is not read from its start, which would ship again what was
/// read from the original (see `Engine::judge_copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOf {
    /// Not judged yet: judged before its first line is read.
    Unjudged,
    /// Not a copy (or read from its start anyway).
    No,
    /// The same bytes as the follower `key`'s file, as far as that was read; it had `size` bytes,
    /// and last grew at `grew`.
    Of {
        /// The original's follower.
        key: u64,
        /// Its size at the last look.
        size: u64,
        /// When it last grew.
        grew: Instant,
    },
}

/// Bytes before the read position whose fingerprint is kept (see `Follower::before`).
pub const BEFORE_BYTES: u64 = 64;

/// A file being followed.
pub struct Follower {
    /// Unique key of this follower (a truncated file gets a new one).
    pub key: u64,
    /// The path the file is at (its new name once rotated).
    pub path: PathBuf,
    /// The path a pattern matched it under (checkpointed, so a restart knows its input).
    pub origin: PathBuf,
    /// When `path` is a link to it (--follow-symlinks): its real path, where its writes are seen.
    pub target: Option<PathBuf>,
    /// The open file, shared with scans; `None` while closed for idleness.
    pub file: Option<Arc<File>>,
    /// Identity.
    pub id: FileId,
    /// Fingerprint of the first bytes (extended as the file grows).
    pub fingerprint: Fingerprint,
    /// Next byte to read: the start of the first line not yet sent.
    pub read_pos: u64,
    /// Fingerprint of the bytes just before `read_pos` (up to [`BEFORE_BYTES`]; none yet when it
    /// covers 0 bytes): a file rewritten in place and grown past our position with the same first
    /// bytes (a banner) is told by them.
    before: Fingerprint,
    /// Inside a line longer than the limit: its rest is being skipped.
    skipping: bool,
    /// While `skipping`: where that line starts (or, when that is not known, where skipping began).
    skip_from: u64,
    /// While `skipping`: the line's start is not known (skipping began inside it: a `--from-end`
    /// start, a restart or a read-back at a position inside it). Its tokens then carry their own end
    /// as the start, so that a checkpoint marks the position itself, checked by the bytes before it.
    unknown_start: bool,
    /// The path no longer names this file (renamed away or deleted): finish it, then close.
    pub rotated: bool,
    /// A copytruncate copy read on from where its original was: that original's follower.
    pub copy_of: Option<u64>,
    /// Counted among rotations already (renamed to a name a pattern still matches, and a new file
    /// took its old name): not counted again when it leaves the patterns.
    pub rotation_counted: bool,
    /// When the file last grew (or we last read from it).
    pub last_active: Instant,
    /// Which input found it.
    pub input: usize,
    /// Whether it is a copy of another followed file (only while nothing of it was read).
    pub copy: CopyOf,
    /// Its input was removed by a reload: nothing more is read, it is closed once acknowledged.
    pub retired: bool,
    /// The name of the input a reload retired it from (its acknowledgements are counted there).
    pub retired_from: Option<String>,
    /// Inputs a reload took it from while lines they read were in flight, each with the first line
    /// number read after it: those lines' acknowledgements are counted under the input that read
    /// them, not the new one (t36 F1). Dropped once every line before that number is done.
    earlier_inputs: Vec<(u64, String)>,
    /// Lines joined into events, if its input says so.
    pub multiline: Option<Arc<MultilineConfig>>,
    /// Where its lines go.
    pub route: Route,
    next_seq: u64,
    base_seq: u64,
    /// Per line handed out and not yet passed by the watermark: where it ends, whether it is done,
    /// and, when that end is inside a long line being skipped, where the line starts ([`NO_SKIP`]
    /// when it is not: 24 bytes a line in flight, not 32).
    inflight: VecDeque<(u64, bool, u64)>,
    /// Bytes acknowledged by Kafka, from the start of the file.
    pub acked_pos: u64,
    /// When `acked_pos` is inside a line longer than the limit, whose rest is skipped: where that line
    /// starts (kept in the checkpoint, so that a restart goes on skipping it, once it has checked
    /// that the file still holds a line there); `acked_pos` itself when that start is not known.
    pub acked_skip_from: Option<u64>,
    /// Read again from the start after a truncation, and no byte other than NUL seen yet: leading NUL
    /// bytes are a hole (see [`ReadResult::Hole`]), passed over.
    pub hole_check: bool,
    /// NUL bytes passed over so far, not yet told.
    hole_skipped: u64,
    /// Size at the last read.
    pub size: u64,
    /// Size the last look for the lag saw, without reading ([`Follower::observe`]): while Kafka is
    /// away reading stops, but the lag keeps growing.
    pub observed: u64,
    /// With exactly-once, the identity its records' positions are given under.
    pub source: Option<Arc<str>>,
    /// Size and modification time the last scan saw (a scan passes over a file where both are
    /// unchanged).
    pub seen: (u64, i128),
}

impl Follower {
    /// Bytes written that Kafka has not acknowledged, as far as is known.
    pub fn behind(&self) -> u64 {
        self.size.max(self.observed).saturating_sub(self.acked_pos)
    }

    /// Closes the file (a scan re-opens it by identity). What it was then, size and modification
    /// time, is kept as what the last scan saw: a scan re-opens it when either changed, whatever its
    /// size (truncated and written again to the very size it was read to, it looked unchanged).
    pub fn close(&mut self) -> Option<(u64, i128)> {
        let m = self.file.take()?.metadata().ok()?;
        self.seen = (m.len(), super::discover::mtime_ns(&m));
        Some(self.seen)
    }

    /// Looks at an open file's size for the lag, without reading it (an `fstat`).
    pub fn observe(&mut self) {
        if let Some(m) = self.file.as_ref().and_then(|f| f.metadata().ok()) {
            self.observed = m.len();
        }
    }

    /// Starts following `file` (found at `path`) from byte `start`.
    pub fn new(
        key: u64,
        path: PathBuf,
        file: Arc<File>,
        id: FileId,
        start: u64,
        input: usize,
        route: Route,
    ) -> io::Result<Self> {
        let fp = fingerprint(&file)?;
        let meta = file.metadata()?;
        let size = meta.len();
        Ok(Follower {
            key,
            origin: path.clone(),
            target: None,
            path,
            file: Some(file),
            id,
            fingerprint: fp,
            read_pos: start,
            before: Fingerprint::EMPTY,
            skipping: false,
            skip_from: 0,
            unknown_start: false,
            rotated: false,
            copy_of: None,
            rotation_counted: false,
            last_active: Instant::now(),
            input,
            copy: if start == 0 {
                CopyOf::Unjudged
            } else {
                CopyOf::No
            },
            retired: false,
            retired_from: None,
            earlier_inputs: Vec::new(),
            multiline: None,
            route,
            next_seq: 0,
            base_seq: 0,
            inflight: VecDeque::new(),
            acked_pos: start,
            acked_skip_from: None,
            hole_check: false,
            hole_skipped: 0,
            size,
            observed: 0,
            source: None,
            seen: (size, super::discover::mtime_ns(&meta)),
        })
    }

    /// Moves a file nothing is in flight from to `pos` (where Kafka has it, found by exactly-once's
    /// read-back); a file now shorter than that was truncated and starts again at 0. `skip_from`:
    /// `pos` is inside a long line being skipped, which starts there (or `pos`, or later, when not
    /// known).
    /// `false` if it cannot move (lines in flight).
    pub fn advance_to(&mut self, pos: u64, skip_from: Option<u64>) -> bool {
        if !self.all_acked() || !self.inflight.is_empty() {
            return false;
        }
        let (pos, skip_from) = if pos > self.size {
            (0, None)
        } else {
            (pos, skip_from.map(|s| s.min(pos)))
        };
        self.read_pos = pos;
        self.acked_pos = pos;
        self.acked_skip_from = skip_from;
        self.skipping = skip_from.is_some();
        self.skip_from = skip_from.unwrap_or(pos);
        self.unknown_start = skip_from.is_some_and(|s| s >= pos);
        self.before = Fingerprint::EMPTY;
        true
    }

    /// The fingerprint of the bytes just before `read_pos` (empty when none were noted).
    pub fn before(&self) -> Fingerprint {
        self.before
    }

    /// Whether it is inside a line longer than the limit (its rest is being skipped).
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    fn position(source: Option<&Arc<str>>, end: u64, skipping: bool) -> Option<SourcePos<'_>> {
        source.map(|source| SourcePos {
            source,
            end,
            skipping,
        })
    }

    /// Lines sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.inflight.iter().filter(|(_, a, _)| !a).count()
    }

    /// Whether everything read has been acknowledged.
    pub fn all_acked(&self) -> bool {
        self.acked_pos == self.read_pos
    }

    /// A token for the line ending at `end` (`skipping`: inside a long line whose rest is skipped,
    /// which starts at `skip_from`, or, when that is not known, whose mark is `end` itself).
    fn token(&mut self, end: u64, skipping: bool) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let from = match (skipping, self.unknown_start) {
            (false, _) => NO_SKIP,
            (true, false) => self.skip_from,
            (true, true) => end,
        };
        self.inflight.push_back((end, false, from));
        // A token holds the sequence's low SEQ_BITS (see [`Follower::in_flight_seq`]).
        (self.key << SEQ_BITS) | (seq & SEQ_MASK)
    }

    /// The sequence of an in-flight line's token, `None` when its line is no longer (or never was)
    /// in flight. Tokens hold only the low [`SEQ_BITS`] of a sequence: a file of more than 2^36
    /// lines (68.7 billion) wraps them, and the lines in flight, never that many, are told apart
    /// by their distance from the oldest (t49: past 2^36, acknowledgements went to another key).
    fn in_flight_seq(&self, token: u64) -> Option<u64> {
        let ahead = (token & SEQ_MASK).wrapping_sub(self.base_seq) & SEQ_MASK;
        (ahead < self.inflight.len() as u64).then(|| self.base_seq + ahead)
    }

    /// Marks the line with this token's sequence as done (acknowledged, or failed for good) and moves
    /// the acknowledged watermark over the contiguous done prefix. Returns the byte offset after the
    /// line, if the token is still known.
    pub fn done(&mut self, token: u64) -> Option<u64> {
        let seq = self.in_flight_seq(token)?;
        let mut line_end = None;
        if let Some(e) = self.inflight.get_mut((seq - self.base_seq) as usize) {
            e.1 = true;
            line_end = Some(e.0);
        }
        while let Some(&(end, true, from)) = self.inflight.front() {
            self.acked_pos = end;
            self.acked_skip_from = (from != NO_SKIP).then_some(from);
            self.inflight.pop_front();
            self.base_seq += 1;
        }
        line_end
    }

    /// Bytes from `read_pos` passed over without a record (the rest of an over-long line): done at once.
    /// `skipping`: `end` is still inside that line.
    fn skip_to(&mut self, end: u64, skipping: bool) {
        self.read_pos = end;
        let t = self.token(end, skipping);
        let _ = self.done(t);
    }

    /// A reload hands the file from input `from` to another: the lines in flight, read under `from`,
    /// stay counted there (see [`Follower::earlier_input`]).
    pub fn handed_over_from(&mut self, from: &str) {
        if self.base_seq < self.next_seq {
            self.earlier_inputs.push((self.next_seq, from.to_string()));
        }
    }

    /// The input that read the line of `token` when a reload has handed the file to another since
    /// (an index for [`Follower::earlier_input_name`]); `None` when its current input did.
    pub fn earlier_input(&self, token: u64) -> Option<usize> {
        let seq = self.in_flight_seq(token)?;
        self.earlier_inputs
            .iter()
            .position(|(first_after, _)| seq < *first_after)
    }

    /// The name of an input [`Follower::earlier_input`] gave.
    pub fn earlier_input_name(&self, i: usize) -> Option<&str> {
        self.earlier_inputs.get(i).map(|(_, n)| n.as_str())
    }

    /// Forgets the earlier inputs whose lines are all done.
    pub fn forget_earlier_inputs(&mut self) {
        let base = self.base_seq;
        self.earlier_inputs
            .retain(|(first_after, _)| *first_after > base);
    }

    /// Takes back the last token handed out (its line was taken back out of the batch).
    fn untoken(&mut self, previous_pos: u64) {
        self.inflight.pop_back();
        self.next_seq -= 1;
        self.read_pos = previous_pos;
    }

    /// Extends a short fingerprint as the file grows; `false` if the file no longer starts with the
    /// bytes it was taken of (rewritten in place).
    pub fn recheck_fingerprint(&mut self) -> io::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(true);
        };
        if !super::identity::starts_with(file, self.fingerprint)? {
            return Ok(false);
        }
        if !self.fingerprint.is_full() {
            self.fingerprint = fingerprint(file)?;
        }
        Ok(true)
    }

    /// Whether the bytes before `read_pos` are still those we read there (or none were noted).
    fn before_unchanged(&self, file: &File) -> io::Result<bool> {
        let k = u64::from(self.before.len);
        if k == 0 || k > self.read_pos {
            return Ok(true);
        }
        let mut buf = vec![0u8; k as usize];
        match file.read_exact_at(&mut buf, self.read_pos - k) {
            Ok(()) => Ok(Fingerprint::of(&buf) == self.before),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Notes the bytes before `read_pos` (see [`Follower::before`]): from `region` (mapped from
    /// `base`) when it holds them, else read from the file.
    fn note_before(&mut self, file: &File, region: &Region, base: u64) -> io::Result<()> {
        let k = self.read_pos.min(BEFORE_BYTES);
        let in_region = (self.read_pos - k).checked_sub(base).and_then(|from| {
            let from = usize::try_from(from).ok()?;
            region.bytes().get(from..from + k as usize)
        });
        if let Some(bytes) = in_region {
            let fp = Fingerprint::of(bytes);
            if !region.faulted() {
                self.before = fp;
                return Ok(());
            }
        }
        let mut buf = vec![0u8; k as usize];
        self.before = match file.read_exact_at(&mut buf, self.read_pos - k) {
            Ok(()) => Fingerprint::of(&buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Fingerprint::EMPTY,
            Err(e) => return Err(e),
        };
        Ok(())
    }

    /// Reads complete lines from the current position into `sink` (up to one chunk). With `finish`, a
    /// final line without newline is sent too (the file will not grow any more).
    pub fn read(
        &mut self,
        sink: &mut dyn Sink,
        limits: &ReadLimits,
        at: (i64, Instant),
        finish: bool,
        c: &mut Counters,
    ) -> io::Result<ReadResult> {
        const NOTHING: ReadResult = ReadResult::Lines {
            lines: 0,
            more: false,
        };
        let Some(file) = self.file.clone() else {
            return Ok(NOTHING);
        };
        let size = file.metadata()?.len();
        if size < self.read_pos {
            return Ok(ReadResult::Truncated);
        }
        // Truncated and grown again past our position (copytruncate, then a busy writer): its first
        // bytes tell. Reading on from the old position would ship a fragment of some new line.
        // Nothing read yet of first bytes seen (a file whose reading waited: helper-67, a whole
        // generation lost when copytruncate came first): they are checked at every read from 0 —
        // a file of other bytes now is another generation, and the one seen is in its copy.
        let unread_head = self.read_pos == 0 && self.fingerprint.len > 0;
        if (unread_head
            || (self.read_pos > 0 && (size != self.size || !self.fingerprint.is_full())))
            && !self.recheck_fingerprint()?
        {
            return Ok(ReadResult::Truncated);
        }
        // Rewritten in place and grown past our position with the same first bytes (a banner, a
        // header): the bytes just before our position tell. Reading on would lose the new lines
        // before it and ship a fragment of one.
        if self.read_pos > 0 && size != self.size && !self.before_unchanged(&file)? {
            return Ok(ReadResult::Truncated);
        }
        if size > self.size {
            self.last_active = at.1;
        }
        self.size = size;
        if size == self.read_pos {
            return Ok(NOTHING);
        }
        // Before its first line ships, a file is judged by its first bytes: a compressed file created
        // empty (gzip writing a rotated log) is only told once its header is written.
        if self.read_pos == 0 {
            match super::identity::judge_head(&super::identity::first_bytes(&file)?) {
                Head::Compressed(kind) => return Ok(ReadResult::Compressed(kind)),
                Head::Unsure if !finish => return Ok(NOTHING),
                _ => {}
            }
        }
        let base = self.read_pos;
        // An unfinished event is read again from its start: the region must hold a whole event and
        // the line after it, or a long event would never complete.
        let chunk = match &self.multiline {
            Some(m) => limits.chunk_bytes.max(
                m.max_bytes
                    .saturating_add(limits.max_line_bytes)
                    .saturating_add(2),
            ),
            None => limits.chunk_bytes,
        };
        let len = (size - base).min(chunk as u64) as usize;
        let more = base + (len as u64) < size;
        let region = Region::map(&file, base, len)?;
        if self.hole_check && !self.skipping {
            if let Some(r) = self.pass_hole(&file, &region, base, more)? {
                return Ok(r);
            }
        }
        let mut shipping = Shipping {
            sink,
            timestamp_ms: at.0,
            counters: c,
            lines: 0,
            faulted: false,
            full: false,
            cut: false,
        };
        match self.multiline.clone() {
            Some(m) => {
                let quiet = at.1.duration_since(self.last_active) >= m.timeout;
                self.ship_events(
                    &region,
                    limits.max_line_bytes,
                    &m,
                    (finish && !more, (finish || quiet) && !more, more),
                    &mut shipping,
                )
            }
            None => self.ship_region(
                &region,
                limits.max_line_bytes,
                finish && !more,
                &mut shipping,
            ),
        }
        let (lines, full) = (shipping.lines, shipping.full || shipping.cut);
        if shipping.faulted || region.faulted() {
            drop(region);
            if file.metadata()?.len() < base + len as u64 {
                // What was shipped before the fault moved the position: the bytes before it are
                // not known now (nothing to check a copy against), rather than those of the old one.
                if self.read_pos != base {
                    self.before = Fingerprint::EMPTY;
                }
                return Ok(ReadResult::Truncated);
            }
            return Ok(ReadResult::BadPage {
                offset: self.read_pos,
            });
        }
        // The bytes before the new position, noted before a truncation is looked for: a copy the
        // read goes on in is checked against them (t29 F5: noted only after, they were those before
        // the old position, no copy matched them, and the whole copy was read again from its start).
        if self.read_pos != base {
            self.note_before(&file, &region, base)?;
        }
        if !self.fingerprint.is_full() && !self.recheck_fingerprint()? {
            // Rewritten while we read it: what we read may be the new content's start, which the
            // restart from byte 0 reads again.
            return Ok(ReadResult::Truncated);
        }
        Ok(ReadResult::Lines {
            lines,
            more: more || full,
        })
    }

    /// Passes over the NUL bytes at the front of `region` (mapped at `base`) while looking for the end
    /// of a hole (see [`Follower::hole_check`]): `None` when none are there (read on as usual), else
    /// what to tell. A faulted page reads as zeros: that is no hole, and the usual read says what it is.
    fn pass_hole(
        &mut self,
        file: &File,
        region: &Region,
        base: u64,
        more: bool,
    ) -> io::Result<Option<ReadResult>> {
        let bytes = region.bytes();
        let n = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        if region.faulted() {
            return Ok(None);
        }
        if n < bytes.len() {
            self.hole_check = false;
        }
        if n == 0 {
            return Ok(None);
        }
        self.skip_to(base + n as u64, false);
        self.note_before(file, region, base)?;
        self.hole_skipped += n as u64;
        let more = more || n < bytes.len();
        if !self.hole_check || !more {
            let bytes = std::mem::take(&mut self.hole_skipped);
            return Ok(Some(ReadResult::Hole { bytes, more }));
        }
        Ok(Some(ReadResult::Lines { lines: 0, more }))
    }

    /// Splits the mapped region into lines and ships each, until the region ends, the sink is full, or
    /// a page of the map faulted.
    fn ship_region(
        &mut self,
        region: &Region,
        max_line_bytes: usize,
        last: bool,
        s: &mut Shipping<'_>,
    ) {
        let mut splitter = LineSplitter::resume(max_line_bytes, self.skipping);
        let base = self.read_pos;
        let route = self.route.clone();
        let source = self.source.clone();
        let headers: Vec<Header<'_>> = route
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
            .collect();
        splitter.split(region.bytes(), last, |piece| {
            let end = base + piece.end() as u64;
            match piece {
                Piece::Skipped { .. } if region.faulted() => {
                    s.faulted = true;
                    ControlFlow::Break(())
                }
                Piece::Skipped { end: rel } => {
                    // Still inside the line unless the skipped bytes end with its newline.
                    let skipping = region.bytes().get(rel.wrapping_sub(1)) != Some(&b'\n');
                    self.skip_to(end, skipping);
                    ControlFlow::Continue(())
                }
                Piece::Line {
                    bytes,
                    truncated,
                    end: rel,
                } => {
                    // The head of a line whose newline has not come: its rest is skipped.
                    let skipping =
                        truncated && region.bytes().get(rel.wrapping_sub(1)) != Some(&b'\n');
                    if skipping {
                        self.skip_from = self.read_pos;
                        self.unknown_start = false;
                    }
                    self.ship_line(
                        bytes,
                        (truncated, skipping),
                        (end, source.as_ref()),
                        &route,
                        &headers,
                        region,
                        s,
                    )
                }
            }
        });
        self.skipping = splitter.is_skipping();
    }

    /// Joins the region's lines into events and ships the complete ones; an event that may still grow
    /// stays in the file, to be read again (`last`: the file is quiet or finished, so its last event
    /// is complete). A line without its newline is a line only once the file is `finished`: quiet
    /// time ends an event, never a line (t14: a line written in two pieces became two records).
    /// `cut_short`: the file goes on past the region.
    fn ship_events(
        &mut self,
        region: &Region,
        max_line_bytes: usize,
        m: &MultilineConfig,
        (finished, last, cut_short): (bool, bool, bool),
        s: &mut Shipping<'_>,
    ) {
        let mut splitter = LineSplitter::resume(max_line_bytes, self.skipping);
        let mut lines = Vec::new();
        // Lines taken in one pass; the rest of the region is read in the next. A region of 2 MB of
        // blank lines was 2 million of them, 80 MB of `Line`s at once. Room for an event of
        // max_lines and the line after it, so that each pass completes one.
        let most = MULTILINE_PASS_LINES.max(m.max_lines.saturating_add(2));
        let mut stopped = false;
        // Where the next line starts: after the piece before it, a line or the skipped rest of one.
        let mut start = 0;
        let used = splitter.split(region.bytes(), finished, |piece| {
            let end = piece.end();
            if let Piece::Line {
                bytes, truncated, ..
            } = piece
            {
                lines.push(multiline::Line {
                    bytes,
                    start,
                    end,
                    truncated,
                });
            }
            start = end;
            if lines.len() >= most {
                stopped = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        let (last, cut_short) = (last && !stopped, cut_short || stopped);
        s.cut = stopped;
        let (mut events, mut pending) = m.group(&lines, last);
        if pending == Some(0) && cut_short {
            // The region holds one unfinished event and not the whole line after it: read again, it
            // would be the same region for ever (t49: CRLF lines take a byte more in the file than
            // in the event, so an event of max_bytes did not leave room for the next line; the file
            // stalled and the loop spun). The event is complete here, as one cut at max_bytes is.
            (events, pending) = m.group(&lines, true);
        }
        if region.faulted() {
            // The lines were read from a vanished page: nothing of them may be shipped.
            s.faulted = true;
            return;
        }
        let base = self.read_pos;
        let route = self.route.clone();
        let source = self.source.clone();
        let headers: Vec<Header<'_>> = route
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
            .collect();
        for e in &events {
            // An event ends at a line end, or inside its last line when that was cut and the chunk
            // ended before its newline: its rest is skipped.
            let skipping = e.truncated && region.bytes().get(e.end.wrapping_sub(1)) != Some(&b'\n');
            if skipping {
                // Where its last line starts.
                let start = lines
                    .iter()
                    .rfind(|l| l.end <= e.end)
                    .map_or(0, |l| l.start);
                self.skip_from = base + start as u64;
                self.unknown_start = false;
            }
            let token = self.token(base + e.end as u64, skipping);
            let pos = Self::position(source.as_ref(), base + e.end as u64, skipping);
            self.read_pos = base + e.end as u64;
            self.skipping = skipping;
            s.counters.lines_read += 1;
            let topic = route.topic.unwrap_or(0);
            let (appended, used) = s.sink.append_cut_to_fit(
                topic,
                route.key.as_deref(),
                &e.value,
                &headers,
                s.timestamp_ms,
                token,
                pos.as_ref(),
            );
            // The bytes of the event as shipped (after a cut to fit).
            s.counters.bytes_read += used as u64;
            s.counters.long_lines += (e.truncated || used < e.value.len()) as u64;
            match appended {
                Ok(_) => s.lines += 1,
                Err(err) => {
                    crate::log::warn(format_args!(
                        "{}: event skipped: {err}",
                        crate::escape::Esc::path(&self.path)
                    ));
                    s.counters.lines_failed += 1;
                    self.done(token);
                }
            }
            if s.sink.is_full_for(topic) {
                s.full = true;
                return;
            }
        }
        match pending {
            // The unfinished event waits in the file, from its first line.
            Some(begins) => {
                let at = base + begins as u64;
                if at > self.read_pos {
                    // The skipped rest of a long line before it: passed over, done at once.
                    self.skip_to(at, false);
                }
                self.read_pos = at;
                self.skipping = false;
            }
            // Everything the splitter took is in shipped events, or skipped bytes after them.
            None => {
                if base + used as u64 > self.read_pos {
                    self.skip_to(base + used as u64, splitter.is_skipping());
                }
                self.skipping = splitter.is_skipping();
            }
        }
    }

    /// Copies one line from the map into the sink's batch; takes it back if the copy read a vanished
    /// page.
    #[allow(clippy::too_many_arguments)]
    fn ship_line(
        &mut self,
        bytes: &[u8],
        (truncated, skipping): (bool, bool),
        (end, source): (u64, Option<&Arc<str>>),
        route: &Route,
        headers: &[Header<'_>],
        region: &Region,
        s: &mut Shipping<'_>,
    ) -> ControlFlow<()> {
        let before = self.read_pos;
        let token = self.token(end, skipping);
        self.read_pos = end;
        let pos = Self::position(source, end, skipping);
        let (appended, used) = s.sink.append_cut_to_fit(
            route.topic.unwrap_or(0),
            route.key.as_deref(),
            bytes,
            headers,
            s.timestamp_ms,
            token,
            pos.as_ref(),
        );
        if region.faulted() {
            if let Ok(a) = appended {
                s.sink.undo_last(a);
            }
            self.untoken(before);
            s.faulted = true;
            return ControlFlow::Break(());
        }
        s.counters.lines_read += 1;
        // The bytes of the line as shipped (after a cut to fit).
        s.counters.bytes_read += used as u64;
        s.counters.long_lines += (truncated || used < bytes.len()) as u64;
        match appended {
            Ok(_) => s.lines += 1,
            Err(e) => {
                // Not even an empty value fits beside the record's key and headers.
                crate::log::warn(format_args!(
                    "{}: line skipped: {e}",
                    crate::escape::Esc::path(&self.path)
                ));
                s.counters.lines_failed += 1;
                self.done(token);
            }
        }
        if s.sink.is_full_for(route.topic.unwrap_or(0)) {
            s.full = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// One read's shipping state: where lines go and what happened.
struct Shipping<'a> {
    sink: &'a mut dyn Sink,
    timestamp_ms: i64,
    counters: &'a mut Counters,
    lines: u64,
    faulted: bool,
    full: bool,
    /// Stopped before the region's end (multiline's lines per pass): more to read now.
    cut: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past 2^36 lines of one file, tokens wrap their sequence and still name their line (t49: the
    /// sequence ran into the key's bits, acknowledgements went to another key, and the file's
    /// checkpoint froze while its lines in flight grew).
    #[test]
    fn tokens_still_name_their_lines_past_two_to_the_36_lines() {
        let d = crate::testkit::scratch_dir("follower-seq-wrap");
        let p = d.join("a.log");
        std::fs::write(&p, "x\n").unwrap();
        let file = File::open(&p).unwrap();
        let id = FileId::with_fd(&file.metadata().unwrap(), &file);
        let key = 8;
        let mut f = Follower::new(key, p, Arc::new(file), id, 0, 0, Route::default()).unwrap();
        f.next_seq = SEQ_MASK - 1;
        f.base_seq = SEQ_MASK - 1;
        let tokens: Vec<u64> = (1..=4).map(|end| f.token(end, false)).collect();
        assert!(tokens.iter().all(|t| t >> SEQ_BITS == key), "{tokens:x?}");
        // Out of order, across the wrap: the watermark moves over the contiguous prefix only.
        assert_eq!(f.done(tokens[2]), Some(3));
        assert_eq!(f.acked_pos, 0);
        assert_eq!(f.done(tokens[0]), Some(1));
        assert_eq!(f.done(tokens[1]), Some(2));
        assert_eq!(f.acked_pos, 3);
        assert_eq!(
            f.done(tokens[1]),
            None,
            "acknowledged twice: already passed"
        );
        assert_eq!(f.done(tokens[3]), Some(4));
        assert_eq!(f.acked_pos, 4);
        std::fs::remove_dir_all(&d).unwrap();
    }
}

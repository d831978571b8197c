//! `shipper produce TOPIC`: stdin (or a file) lines to Kafka, one record per line.

use std::io::Read;
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::{Common, ProduceArgs};
use crate::escape::Esc;
use crate::output::behind::Behind;
use crate::producer::{
    timestamp_now_ms, Appended, Delivery, OnPermanent, Producer, TroubleNews, TroubleWatch,
};
use crate::settings::{parse_headers, producer_config, usage, KafkaSettings};
use crate::tail::lines::{LineSplitter, Piece};
use crate::tail::map::Region;
use crate::wire::records::Header;

const CHUNK_BYTES: usize = 256 * 1024;
/// A regular file is read through a memory map, this much at a time: its lines are copied from the
/// page cache straight into batches, with no `read` copying them into a buffer first.
const MAP_BYTES: usize = 4 << 20;

/// Counters of one produce run.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    acked: u64,
    failed: u64,
    /// Of the failed, records larger than a batch may be: never sent.
    too_large: u64,
    truncated: u64,
    /// The lines cut to `--max-line-bytes`.
    truncated_lines: LineRanges,
    /// Records acknowledged after a resend that followed a lost answer, without idempotence.
    resent: u64,
    /// Their lines.
    resent_lines: LineRanges,
    errors_shown: u64,
    /// The lines of failed records Kafka refused or never saw.
    not_written: LineRanges,
    /// The lines of failed records that were sent but never answered (a timeout, a broken
    /// connection): Kafka may hold them after all.
    unanswered: LineRanges,
    /// Set at the first failure no retry will fix for any record (an ACL refusal): reading stops
    /// there (the failure itself is reported with its records).
    refused: bool,
    /// Set when `--print-offsets` could not write to standard output (other than a closed pipe):
    /// the run then fails, since the offsets asked for were not all printed.
    offsets_unprinted: bool,
    /// `--print-offsets`: records Kafka acknowledged without their offset (a base offset of -1:
    /// Kafka before 2.x answering a resent batch as a duplicate, or a broker that breaks the
    /// protocol), so not printed; the run then fails.
    offsets_unknown: u64,
}

impl Tally {
    /// Says one failure with `say` while fewer than five were said, then once that more failed: a
    /// run of a million lines too large or refused prints six lines, not a million (the lines are
    /// listed as ranges in the summary).
    fn say_failure(&mut self, say: impl FnOnce()) {
        if self.errors_shown < 5 {
            say();
        } else if self.errors_shown == 5 {
            crate::log::error(format_args!(
                "more records failed; their lines are listed at the end"
            ));
        }
        self.errors_shown += 1;
    }
}

/// Line numbers as sorted ranges, bounded: past [`LineRanges::MAX_RUNS`] runs even after merging,
/// further lines are only counted.
#[derive(Debug, Default)]
struct LineRanges {
    runs: Vec<(u64, u64)>,
    untracked: u64,
    /// Merging no longer frees much room: not tried again (it sorts every run).
    saturated: bool,
}

impl LineRanges {
    const MAX_RUNS: usize = 100_000;

    fn add(&mut self, lines: &[u64]) {
        for &l in lines {
            if let Some((_, end)) = self.runs.last_mut().filter(|(_, end)| *end + 1 == l) {
                *end = l;
                continue;
            }
            if self.runs.len() >= Self::MAX_RUNS && !self.saturated {
                self.compact();
                self.saturated = self.runs.len() > Self::MAX_RUNS / 2;
            }
            if self.runs.len() >= Self::MAX_RUNS {
                self.untracked += 1;
            } else {
                self.runs.push((l, l));
            }
        }
    }

    fn compact(&mut self) {
        self.runs.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.runs.len());
        for &(a, b) in &self.runs {
            match out.last_mut() {
                Some((_, end)) if a <= *end + 1 => *end = (*end).max(b),
                _ => out.push((a, b)),
            }
        }
        self.runs = out;
    }

    /// `5..7, 9, 12..40 and 3 more ranges`, the first `shown` ranges.
    fn describe(&mut self, shown: usize) -> String {
        self.compact();
        let mut text: Vec<String> = self
            .runs
            .iter()
            .take(shown)
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}..{b}")
                }
            })
            .collect();
        if self.runs.len() > shown {
            text.push(format!("and {} more ranges", self.runs.len() - shown));
        }
        if self.untracked > 0 {
            text.push(format!("and {} more lines", self.untracked));
        }
        text.join(", ")
    }
}

/// Input bytes: read into a buffer (a pipe, a terminal), or a mapped region of a regular file.
enum Chunk {
    Read(Vec<u8>),
    Mapped(Region),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Read(b) => b,
            Chunk::Mapped(r) => r.bytes(),
        }
    }

    /// A page of a mapped region faulted (the file shrank under us, or the disk failed): what was
    /// copied out of it since may be zeros.
    fn faulted(&self) -> bool {
        matches!(self, Chunk::Mapped(r) if r.faulted())
    }
}

/// Chunks of the input, and a way to hand read buffers back.
struct Chunks {
    rx: mpsc::Receiver<std::io::Result<Chunk>>,
    /// Read buffers given back for reuse: a fresh 256 KB buffer is a fresh mapping with musl's
    /// allocator, whose pages all fault on the first read into it.
    spent: std::sync::mpsc::SyncSender<Vec<u8>>,
}

/// The input: a regular file (`--file`, or stdin redirected from one) is mapped; anything else is read.
enum Input {
    Mapped(std::fs::File),
    Read(Box<dyn Read + Send>),
}

impl Input {
    fn open(file: Option<&std::path::Path>) -> anyhow::Result<Input> {
        use std::os::fd::AsFd;
        // `--file -` is standard input, as for cat and kcat (a file named `-` is `--file ./-`).
        let file = file.filter(|p| p.as_os_str() != "-");
        let f = match file {
            // One that does not exist is a wrong --file, as a directory is (usage, exit 2; t29 F8:
            // exit 1 where a directory was 2); one that cannot be read is a failure.
            Some(p) => match std::fs::File::open(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return usage(format!("--file {}: no such file", Esc::path(p)));
                }
                r => r.with_context(|| format!("cannot open {}", Esc::path(p)))?,
            },
            None => match std::io::stdin().as_fd().try_clone_to_owned() {
                Ok(fd) => std::fs::File::from(fd),
                Err(_) => return Ok(Input::Read(Box::new(std::io::stdin()))),
            },
        };
        // A directory opens but cannot be read: named at once (t28 F5: "cannot read input: Is a
        // directory", naming nothing).
        if f.metadata().is_ok_and(|m| m.is_dir()) {
            return usage(match file {
                Some(p) => format!(
                    "--file {} is a directory, not a file of lines",
                    Esc::path(p)
                ),
                None => "standard input is a directory, not a file of lines".to_string(),
            });
        }
        // A size of 0 may be a file that only reads have content for (/proc): read those.
        let mappable = f.metadata().is_ok_and(|m| m.is_file() && m.len() > 0);
        Ok(if mappable {
            Input::Mapped(f)
        } else if file.is_none() {
            Input::Read(Box::new(std::io::stdin()))
        } else {
            Input::Read(Box::new(f))
        })
    }
}

/// Maps `file` region by region from its current offset (stdin may have been read from already) to
/// its end as it grows while read, leaving the offset there as reading would; falls back to reading
/// from where the map stopped if a region cannot be mapped.
fn map_regions(
    mut file: std::fs::File,
    tx: &mpsc::Sender<std::io::Result<Chunk>>,
) -> Option<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let mut pos = file.stream_position().unwrap_or(0);
    loop {
        let size = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return None;
            }
        };
        if pos >= size {
            let _ = file.seek(SeekFrom::Start(pos));
            return None;
        }
        let len = (size - pos).min(MAP_BYTES as u64) as usize;
        match Region::map(&file, pos, len) {
            Ok(r) => {
                pos += len as u64;
                if tx.blocking_send(Ok(Chunk::Mapped(r))).is_err() {
                    let _ = file.seek(SeekFrom::Start(pos));
                    return None;
                }
            }
            Err(_) => return file.seek(SeekFrom::Start(pos)).is_ok().then_some(file),
        }
    }
}

/// Reads `input` in chunks on a thread of its own, so a slow or interactive stdin never stalls acks.
fn spawn_reader(input: Input) -> Chunks {
    let (tx, rx) = mpsc::channel(4);
    let (spent, reuse) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    std::thread::spawn(move || {
        let mut input: Box<dyn Read + Send> = match input {
            Input::Mapped(f) => match map_regions(f, &tx) {
                Some(rest) => Box::new(rest),
                None => return,
            },
            Input::Read(r) => r,
        };
        loop {
            let mut buf = reuse.try_recv().unwrap_or_default();
            buf.resize(CHUNK_BYTES, 0);
            match input.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Chunk::Read(buf))).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    Chunks { rx, spent }
}

/// What every line is sent with.
struct Shape<'a> {
    key: Option<&'a [u8]>,
    key_separator: Option<&'a [u8]>,
    headers: Vec<Header<'a>>,
    /// `-Z`: an empty key or value is null.
    null_empty: bool,
}

/// The producer, the line splitter and the tallies of one run.
struct Run<'a> {
    producer: Producer,
    shape: Shape<'a>,
    splitter: LineSplitter,
    tally: Tally,
    line_no: u64,
    sync: bool,
    /// `--print-offsets`: written by a thread of its own (see [`Behind`]); `None` once it failed.
    printer: Option<Behind>,
    deliveries: Vec<Delivery>,
    /// The mapped input file shrank while it was read: the run stops at `line_no`.
    shrank: bool,
    /// Reading the input failed: what was read is delivered and summed up, then the run fails
    /// (t49: it ended at once, the lines in the buffer dropped without a word).
    read_error: Option<String>,
    /// Stopped by this signal (SIGINT, SIGTERM): input no longer read, what was read delivered.
    interrupted: Option<i32>,
    /// The whole input was read (its end was reached).
    input_done: bool,
    /// Deliveries failing (an outage in mid-stream): said after 5 s, then every 30 s, and once they
    /// work again; a stream was silent through minutes of outage.
    trouble: TroubleWatch,
    /// Records acknowledged when the trouble was last said.
    acked_when_said: u64,
    /// Records given up when the trouble was said: the trouble may end by giving up, not delivering.
    failed_when_said: u64,
}

impl Run<'_> {
    fn send_line(&mut self, line: &[u8], truncated: bool, ts: i64) -> Option<Appended> {
        self.line_no += 1;
        let (key, value) = match (self.shape.key, self.shape.key_separator) {
            (Some(k), _) => (Some(k), line),
            (None, Some(sep)) => match memchr::memmem::find(line, sep) {
                Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
                None => (None, line),
            },
            (None, None) => (None, line),
        };
        let (key, value) = match self.shape.null_empty {
            true => (
                key.filter(|k| !k.is_empty()),
                Some(value).filter(|v| !v.is_empty()),
            ),
            false => (key, Some(value)),
        };
        self.tally.sent += 1;
        if truncated {
            self.tally.truncated += 1;
            self.tally.truncated_lines.add(&[self.line_no]);
        }
        match self
            .producer
            .append(0, key, value, &self.shape.headers, ts, self.line_no)
        {
            Ok(a) => Some(a),
            Err(e) => {
                self.tally.failed += 1;
                self.tally.too_large += 1;
                self.tally.not_written.add(&[self.line_no]);
                let line_no = self.line_no;
                self.tally.say_failure(|| {
                    crate::log::error(format_args!("line {line_no}: {e}; not sent"))
                });
                None
            }
        }
    }

    /// Splits `data` into lines and sends them; returns the offset of an incomplete last line. With
    /// `mapped`, the region `data` lies in is checked after each line: a line holding zeros from a page
    /// that vanished (the file shrank) is taken back and the run stops (`self.shrank`).
    async fn feed(
        &mut self,
        data: &[u8],
        last: bool,
        mapped: Option<&Chunk>,
    ) -> anyhow::Result<usize> {
        let mut pos = 0;
        loop {
            let ts = timestamp_now_ms();
            let mut sent_one = false;
            let mut splitter = self.splitter.clone();
            let used = splitter.split(&data[pos..], last, |piece| {
                if let Piece::Line {
                    bytes, truncated, ..
                } = piece
                {
                    let appended = self.send_line(bytes, truncated, ts);
                    if mapped.is_some_and(Chunk::faulted) {
                        if let Some(a) = appended {
                            self.producer.undo_last(a);
                        }
                        self.tally.sent -= 1;
                        self.shrank = true;
                        return ControlFlow::Break(());
                    }
                    sent_one = true;
                    if self.sync || self.producer.is_full() {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
            self.splitter = splitter;
            pos += used;
            if self.shrank {
                return Ok(pos);
            }
            if self.sync && sent_one {
                self.producer.flush(&mut self.deliveries).await?;
                self.report();
                // With --sync, the line Kafka refused is the last one sent.
                if self.tally.refused {
                    return Ok(pos);
                }
            }
            // Held while Kafka or the reader of the offsets falls behind.
            while self.producer.is_full() || self.printer.as_ref().is_some_and(Behind::is_full) {
                let printer = self.printer.as_ref();
                tokio::select! {
                    r = self.producer.drive(&mut self.deliveries), if !self.producer.is_idle() => r?,
                    () = async { if let Some(p) = printer { p.room().await } }, if printer.is_some_and(Behind::is_full) => {}
                }
                self.report();
            }
            if !sent_one || pos >= data.len() {
                return Ok(pos);
            }
        }
    }

    fn report(&mut self) {
        report(&mut self.deliveries, &mut self.tally, &mut self.printer);
        match self
            .trouble
            .look_at(self.producer.trouble_since(), Instant::now())
        {
            Some(TroubleNews::Failing(e, for_)) => {
                self.acked_when_said = self.tally.acked;
                self.failed_when_said = self.tally.failed;
                crate::log::warn(format_args!(
                    "cannot deliver to Kafka for {}s ({e}); still trying, {}",
                    for_.as_secs(),
                    match self.producer.delivery_timeout() {
                        Some(t) => format!("each record for up to {} s (--timeout)", t.as_secs()),
                        None => "until it works (--timeout 0)".to_string(),
                    }
                ))
            }
            // Only when something got through and nothing was given up since: the trouble may
            // have ended by giving up (t11), while other partitions' records were acknowledged
            // (t21 F4: "again" came in the millisecond of the first "gave up" error).
            Some(TroubleNews::Recovered(after))
                if self.tally.acked > self.acked_when_said
                    && self.tally.failed == self.failed_when_said =>
            {
                crate::log::info(format_args!(
                    "delivering to Kafka again after {:.1}s",
                    after.as_secs_f64()
                ))
            }
            _ => {}
        }
    }
}

/// Runs the command; returns the exit code.
pub async fn run(common: &Common, args: &ProduceArgs) -> anyhow::Result<i32> {
    crate::settings::check_topic_to_write(&args.topic)?;
    let headers_owned = parse_headers(&args.producer.headers)?;
    let input = Input::open(args.file.as_deref())?;
    // kcat's escapes, as in -K: `\t` is a tab.
    let key_separator = args.key_separator.as_deref().map(crate::output::unescape);
    // Said with the error: the whole input is still to be sent (t10: no summary, no word on it).
    let producer = start_producer(common, args).await.map_err(|e| match e
        .downcast_ref::<crate::settings::UsageError>(
    ) {
        Some(_) => e,
        None => anyhow::anyhow!("{e:#}; nothing was sent (the input was not read)"),
    })?;
    let mut run = Run {
        producer,
        shape: Shape {
            key: args
                .key
                .as_deref()
                .map(std::os::unix::ffi::OsStrExt::as_bytes),
            key_separator: key_separator.as_deref(),
            headers: headers_owned
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect(),
            null_empty: args.null_empty,
        },
        splitter: LineSplitter::new(args.max_line_bytes as usize),
        tally: Tally::default(),
        line_no: 0,
        sync: args.sync,
        printer: match args.print_offsets {
            true => Some(Behind::stdout()?),
            false => None,
        },
        deliveries: Vec::new(),
        shrank: false,
        read_error: None,
        interrupted: None,
        input_done: false,
        trouble: TroubleWatch::new(Duration::from_secs(5), Some(Duration::from_secs(30))),
        acked_when_said: 0,
        failed_when_said: 0,
    };
    run.ship(spawn_reader(input)).await?;
    // What was read before the input shrank is still delivered, then the run fails.
    // Said while it waits (t11: a last line to a hung broker was silent until the give-up). After a
    // signal, said at once too (t19 F5: silent for the whole --timeout while Kafka was away). A
    // signal now stops at once: a second one, or the first once the input was read (t12: ignored,
    // only SIGKILL ended it; with --timeout 0 and Kafka away, the wait is for ever); what was not
    // acknowledged is then counted as not.
    let signalled = run.interrupted.is_some();
    if signalled && !run.producer.is_idle() {
        crate::log::info(format_args!(
            "stopping: delivering the lines read so far (each within --timeout); a second signal abandons them"
        ));
    }
    let mut stop = std::pin::pin!(crate::tasks::stop_signal());
    while !run.producer.is_idle() {
        run.producer.seal_all();
        tokio::select! {
            r = run.producer.drive(&mut run.deliveries) => r?,
            sig = &mut stop => {
                crate::log::warn(format_args!(
                    "{}: not waiting for the records in flight",
                    if signalled { "a second signal" } else { "a signal after the end of the input" }
                ));
                run.interrupted.get_or_insert(sig);
                break;
            }
        }
        run.report();
    }
    run.report();
    // The offsets still queued are written before the summary; a signal stops the wait (a reader
    // of standard output that never reads would hold the run for ever).
    if let Some(p) = run.printer.take() {
        let written = tokio::task::spawn_blocking(move || p.finish());
        tokio::select! {
            r = written => match r {
                Ok(Err(e)) => offsets_not_printed(e, &mut run.tally, &mut None),
                Ok(Ok(())) => {}
                Err(e) => offsets_not_printed(std::io::Error::other(e), &mut run.tally, &mut None),
            },
            _ = crate::tasks::stop_signal() => {
                crate::log::warn(format_args!(
                    "a signal while standard output was behind: not waiting for it to take the rest of the offsets"
                ));
                run.tally.offsets_unprinted = true;
            }
        }
    }
    let t = &mut run.tally;
    let truncated = if t.truncated > 0 {
        // Named like failed records: a record that is not the line given is no success.
        format!(
            ", {} truncated to {} bytes (line{} {}; raise --max-line-bytes to send them whole)",
            t.truncated,
            args.max_line_bytes,
            if t.truncated == 1 { "" } else { "s" },
            t.truncated_lines.describe(20)
        )
    } else {
        String::new()
    };
    // Without idempotence a resend after a lost answer may be written twice: said, not hidden.
    let truncated = if t.resent > 0 {
        format!(
            "{truncated}, {} resent after an answer was lost (line{} {}; idempotence is off: Kafka may hold them twice)",
            t.resent,
            if t.resent == 1 { "" } else { "s" },
            t.resent_lines.describe(20)
        )
    } else {
        truncated
    };
    // Records too large to send count as failed, not as sent.
    let (sent, failed) = match t.too_large {
        0 => (t.sent, format!("{} failed", t.failed)),
        n => (
            t.sent - n,
            format!("{} failed ({n} too large to send)", t.failed),
        ),
    };
    let summary = if matches!(args.producer.acks, crate::cli::AcksArg::None) {
        // Kafka answers nothing with acks=0: "acked" would claim what nobody knows.
        format!(
            "topic '{}': {} sent, {failed}{truncated} (--acks 0: Kafka does not answer, so a refusal goes unseen)",
            Esc::str(&args.topic),
            crate::escape::count(sent, "record", "records"),
        )
    } else {
        // Left in flight at a second signal: neither acknowledged nor failed, and Kafka may hold
        // some of them.
        let abandoned = t.sent.saturating_sub(t.acked + t.failed);
        let abandoned = match abandoned {
            0 => String::new(),
            n => {
                format!(", {n} abandoned in flight (not acknowledged: Kafka may hold some of them)")
            }
        };
        format!(
            "topic '{}': {} sent, {} acked, {failed}{abandoned}{truncated}",
            Esc::str(&args.topic),
            crate::escape::count(sent, "record", "records"),
            t.acked,
        )
    };
    if let Some(e) = &run.read_error {
        crate::log::error(format_args!(
            "{summary}; stopped after {}: cannot read input: {e}; the rest was not read",
            crate::escape::count(t.sent, "line", "lines")
        ));
        return Ok(1);
    }
    if run.shrank {
        crate::log::error(format_args!(
            "{summary}; stopped after {}: the input file shrank while it was read (truncated or rewritten in place), the rest was not sent",
            crate::escape::count(t.sent, "line", "lines")
        ));
        return Ok(1);
    }
    if t.failed > 0 || t.acked != t.sent || run.interrupted.is_some() {
        let t = &mut run.tally;
        if !t.not_written.runs.is_empty() || t.not_written.untracked > 0 {
            crate::log::error(format_args!(
                "lines not written: {}",
                t.not_written.describe(20)
            ));
        }
        if !t.unanswered.runs.is_empty() || t.unanswered.untracked > 0 {
            crate::log::error(format_args!(
                "lines sent but not acknowledged (Kafka may hold them): {}",
                t.unanswered.describe(20)
            ));
        }
        // Stopped by a signal: what was read is delivered (or named above), and the exit code
        // is the shell's for that signal, since the rest of the input was not read.
        if let Some(sig) = run.interrupted {
            let name = if sig == libc::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            // A stop the user asked for, with every line read delivered, is no error (the exit
            // code still says the input was cut short); lines lost to it are.
            let clean = t.failed == 0 && t.acked == t.sent && t.truncated == 0;
            let said: fn(std::fmt::Arguments<'_>) = if clean {
                crate::log::info
            } else {
                crate::log::error
            };
            if run.input_done {
                said(format_args!(
                    "{summary}; stopped by {name} while waiting for Kafka, after the whole input was read"
                ));
            } else {
                said(format_args!(
                    "{summary}; stopped by {name} after {}: the rest of the input was not read",
                    crate::escape::count(t.sent, "line", "lines")
                ));
            }
            return Ok(128 + sig);
        }
        if t.refused && !run.input_done {
            crate::log::error(format_args!(
                "{summary}; stopped at a refusal no retry fixes, after {}: the rest of the input was not read",
                crate::escape::count(t.sent, "line", "lines")
            ));
            return Ok(1);
        }
        crate::log::error(format_args!("{summary}"));
        return Ok(1);
    }
    if run.tally.offsets_unprinted {
        crate::log::error(format_args!(
            "{summary}; some offsets were not printed (standard output failed)"
        ));
        return Ok(1);
    }
    if run.tally.offsets_unknown > 0 {
        crate::log::error(format_args!(
            "{summary}; the offsets of {} were not printed: Kafka acknowledged them without one",
            crate::escape::count(run.tally.offsets_unknown, "record", "records")
        ));
        return Ok(1);
    }
    if run.tally.truncated > 0 {
        crate::log::error(format_args!("{summary}"));
        return Ok(1);
    }
    crate::log::info(format_args!("{summary}"));
    Ok(0)
}

/// The producer for this run: settings from the flags, the topic's metadata, a producer id.
async fn start_producer(common: &Common, args: &ProduceArgs) -> anyhow::Result<Producer> {
    let mut cfg = producer_config(&args.producer)?;
    let kafka = KafkaSettings::from_flags(common, Some(Duration::from_secs(30)))?;
    cfg.delivery_timeout = kafka.timeout;
    if let Some(t) = kafka.timeout {
        // A record waits up to the linger before it is sent: it could never be delivered in time.
        if cfg.linger >= t {
            return usage(format!(
                "--linger-ms {} is not shorter than --timeout ({} ms): records would time out before they are sent",
                cfg.linger.as_millis(),
                t.as_millis()
            ));
        }
        // At least three attempts fit in the timeout (a hung leader is left for the one Kafka
        // elects instead), each waiting at most the default ack timeout.
        let attempt = (t / 3).clamp(
            Duration::from_secs(1),
            Duration::from_millis(cfg.ack_timeout_ms as u64),
        );
        cfg.ack_timeout_ms = attempt.as_millis() as i32;
    }
    cfg.on_permanent = OnPermanent::Fail;
    if args.sync {
        cfg.linger = Duration::ZERO;
        cfg.max_in_flight = 1;
    }
    let cluster = kafka.cluster()?;
    let wanted: Vec<i32> = args.partition.into_iter().collect();
    let deadline = cluster.options().deadline();
    let meta = cluster
        .topic_for(&args.topic, true, deadline, &wanted)
        .await?
        .writable()?;
    if let Some(p) = args.partition {
        if p as usize >= meta.partitions.len() {
            return Err(crate::error::Error::UnknownPartition {
                topic: args.topic.clone(),
                partition: p,
                count: meta.partitions.len(),
            }
            .into());
        }
        cfg.partition = Some(p);
    }
    if args.print_offsets && cfg.acks == 0 {
        crate::log::warn(format_args!(
            "--print-offsets: with --acks 0 the broker reports no offsets"
        ));
    }
    let mut producer = Producer::for_topic(cluster, meta, cfg);
    producer.init().await?;
    Ok(producer)
}

impl Run<'_> {
    /// Ships every line of the input, collecting deliveries as they come. Stops early, with `shrank`
    /// set, if a mapped input file shrank under it.
    async fn ship(&mut self, mut chunks: Chunks) -> anyhow::Result<()> {
        // Only an incomplete line is carried between chunks (at most --max-line-bytes), never a chunk.
        let mut carry: Vec<u8> = Vec::new();
        let stop = crate::tasks::stop_signal();
        tokio::pin!(stop);
        while !self.shrank && !self.tally.refused {
            tokio::select! {
                sig = &mut stop => {
                    // What was read is delivered (the flush that follows); an unfinished last line
                    // is not a line yet.
                    self.interrupted = Some(sig);
                    return Ok(());
                }
                chunk = chunks.rx.recv() => match chunk {
                    Some(Ok(c)) => {
                        // A signal stops the lines of a chunk too, while they wait for room in a
                        // full buffer or for each answer with --sync (t49: only SIGKILL ended a
                        // run whose Kafka hung with --timeout 0).
                        tokio::select! {
                            sig = &mut stop => {
                                self.interrupted = Some(sig);
                                return Ok(());
                            }
                            r = self.take_chunk(&c, &mut carry) => r?,
                        }
                        // Said while input flows too (drive's own wake-ups are cut short by it).
                        self.report();
                        // Full (the reader has spares) or gone: then the buffer is just freed.
                        if let Chunk::Read(b) = c {
                            let _ = chunks.spent.try_send(b);
                        }
                    }
                    Some(Err(e)) => {
                        self.read_error = Some(e.to_string());
                        break;
                    }
                    None => {
                        self.input_done = true;
                        break;
                    }
                },
                r = self.producer.drive(&mut self.deliveries), if !self.producer.is_idle() => {
                    r?;
                    self.report();
                }
            }
        }
        // (Not after a read error: the line was cut by it, not ended.)
        if !carry.is_empty() && !self.shrank && !self.tally.refused && self.read_error.is_none() {
            self.feed(&carry, true, None).await?;
        }
        Ok(())
    }

    /// Sends the lines of one chunk; the incomplete line at its end goes to `carry`.
    async fn take_chunk(&mut self, chunk: &Chunk, carry: &mut Vec<u8>) -> anyhow::Result<()> {
        let mut rest = chunk.bytes();
        if !carry.is_empty() {
            let nl = memchr::memchr(b'\n', rest);
            let end = nl.map_or(rest.len(), |nl| nl + 1);
            carry.extend_from_slice(&rest[..end]);
            // Copied out of the map: zeros if a page vanished meanwhile.
            if chunk.faulted() {
                self.shrank = true;
                return Ok(());
            }
            if nl.is_none() && !self.splitter.is_skipping() {
                let held = carry.strip_suffix(b"\r").unwrap_or(carry);
                if held.len() <= self.splitter.max_line_bytes() {
                    // Not a line yet and not too long yet: nothing to split. (Splitting it again at
                    // each chunk made one long line cost its length squared: 9 s for 40 MB.)
                    return Ok(());
                }
            }
            let line = std::mem::take(carry);
            let used = self.feed(&line, false, None).await?;
            if self.tally.refused {
                return Ok(());
            }
            if nl.is_none() {
                *carry = line[used..].to_vec();
                return Ok(());
            }
            rest = &rest[end..];
        }
        let used = self.feed(rest, false, Some(chunk)).await?;
        if self.tally.refused {
            return Ok(());
        }
        if !self.shrank {
            carry.extend_from_slice(&rest[used..]);
            self.shrank = chunk.faulted();
        }
        Ok(())
    }
}

/// Whether a delivery's failure ends the run (the rest of the input is not read): a refusal no retry
/// fixes for any record, such as an ACL's. Not a failure after retries for --timeout (Kafka away for a
/// while: later records may go through), nor one of the record itself (too large, invalid).
fn ends_the_run(e: &crate::error::Error) -> bool {
    use crate::error::{Code, Error};
    match e {
        Error::Deadline { .. } | Error::Compression(_) => false,
        Error::Kafka { code, .. } => {
            !e.is_retriable()
                && !matches!(
                    code,
                    Code::MessageTooLarge
                        | Code::RecordListTooLarge
                        | Code::InvalidRecord
                        | Code::InvalidTimestamp
                        | Code::CorruptMessage
                        | Code::InvalidRequiredAcks
                )
        }
        e => !e.is_retriable(),
    }
}

/// `3 records (lines 5..6, 9)`: a batch's lines as ranges. They need not be consecutive (the lines
/// between went to other partitions): first..last named lines that were written (t21 F3).
fn records_and_lines(tokens: &[u64]) -> String {
    let mut lines = LineRanges::default();
    lines.add(tokens);
    match tokens.len() {
        1 => format!("1 record (line {})", lines.describe(1)),
        n => format!("{n} records (lines {})", lines.describe(5)),
    }
}

fn report(deliveries: &mut Vec<Delivery>, tally: &mut Tally, printer: &mut Option<Behind>) {
    use std::io::Write;
    let mut out = Vec::new();
    for d in deliveries.drain(..) {
        let n = d.tokens.len() as u64;
        match d.error {
            Some(e) => {
                tally.failed += n;
                tally.refused |= ends_the_run(&e);
                let unsure = d.maybe_written;
                let what = match unsure {
                    true => "not acknowledged (sent, but no answer came: Kafka may hold them)",
                    false => "not written",
                };
                tally.say_failure(|| {
                    let which = records_and_lines(&d.tokens);
                    crate::log::error(format_args!("{which} {what}: {e}"));
                });
                match unsure {
                    true => tally.unanswered.add(&d.tokens),
                    false => tally.not_written.add(&d.tokens),
                }
            }
            None => {
                tally.acked += n;
                if d.resent {
                    tally.resent += n;
                    tally.resent_lines.add(&d.tokens);
                }
                if printer.is_some() && d.base_offset < 0 {
                    if tally.offsets_unknown == 0 {
                        crate::log::error(format_args!(
                            "partition {}: Kafka acknowledged {} without an offset (base offset {}): not printed",
                            d.partition,
                            records_and_lines(&d.tokens),
                            d.base_offset
                        ));
                    }
                    tally.offsets_unknown += n;
                } else if printer.is_some() {
                    // Acknowledgements come per batch, not in input order (partitions interleave):
                    // the line number says which record each offset holds (t12).
                    for (i, line) in d.tokens.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "partition {} offset {} line {line}",
                            d.partition,
                            d.base_offset + i as i64
                        );
                    }
                }
            }
        }
    }
    if let Some(p) = printer {
        if let Err(e) = p.write(&out) {
            offsets_not_printed(e, tally, printer);
        }
    }
}

/// `--print-offsets` cannot write: a closed pipe (`| head`) ends the printing quietly (the records
/// are still sent); any other error is said, and fails the run at its end.
fn offsets_not_printed(e: std::io::Error, tally: &mut Tally, printer: &mut Option<Behind>) {
    *printer = None;
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        crate::log::error(format_args!(
            "{e}: the offsets of later records are not printed (the records are still sent)"
        ));
        tally.offsets_unprinted = true;
    }
}

#[cfg(test)]
mod tests {
    use super::{records_and_lines, report, LineRanges, Tally};
    use crate::output::behind::Behind;
    use crate::producer::Delivery;

    struct Collect(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Collect {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn acked(partition: i32, base_offset: i64, tokens: Vec<u64>) -> Delivery {
        Delivery {
            topic: 0,
            partition,
            base_offset,
            tokens,
            error: None,
            batch: None,
            maybe_written: false,
            resent: false,
        }
    }

    /// Records acknowledged without an offset are counted (the run fails), not printed as
    /// negative offsets, and not passed over silently as they were.
    #[test]
    fn records_acknowledged_without_an_offset_are_counted_not_printed() {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = std::sync::Arc::clone(&got);
        let mut printer = Some(Behind::start(move || Collect(g)).unwrap());
        let mut tally = Tally::default();
        let mut ds = vec![acked(0, 41, vec![1, 2]), acked(1, -1, vec![3, 4, 5])];
        report(&mut ds, &mut tally, &mut printer);
        printer.take().unwrap().finish().unwrap();
        assert_eq!(tally.acked, 5);
        assert_eq!(tally.offsets_unknown, 3);
        assert_eq!(
            String::from_utf8(got.lock().unwrap().clone()).unwrap(),
            "partition 0 offset 41 line 1\npartition 0 offset 42 line 2\n"
        );
    }

    #[test]
    fn a_batchs_lines_are_named_as_ranges_not_first_to_last() {
        assert_eq!(records_and_lines(&[7]), "1 record (line 7)");
        assert_eq!(
            records_and_lines(&[5, 6, 9, 10, 11]),
            "5 records (lines 5..6, 9..11)"
        );
    }

    #[test]
    fn failed_lines_are_told_as_merged_ranges_within_a_bound() {
        let mut r = LineRanges::default();
        r.add(&[7, 8, 9]);
        r.add(&[1, 2]);
        r.add(&[3, 12]);
        r.add(&[10]);
        assert_eq!(r.describe(20), "1..3, 7..10, 12");
        assert_eq!(r.describe(1), "1..3, and 2 more ranges");
        let mut r = LineRanges::default();
        let odd: Vec<u64> = (0..(LineRanges::MAX_RUNS as u64 + 10))
            .map(|i| 2 * i)
            .collect();
        r.add(&odd);
        assert_eq!(r.runs.len(), LineRanges::MAX_RUNS);
        assert_eq!(r.untracked, 10);
        assert!(r
            .describe(2)
            .ends_with("and 99998 more ranges, and 10 more lines"));
    }
}

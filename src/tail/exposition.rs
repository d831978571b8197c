//! What `tail --metrics-listen` serves: the engine's, the producer's and the process's numbers in the
//! Prometheus text format, and whether the agent is healthy.
//!
//! Per-file series are bounded: only the [`MAX_FILE_SERIES`] files furthest behind get one, so a
//! directory of ten thousand logs does not make ten thousand series; the per-input totals count all.

use std::collections::BTreeMap;
use std::time::Duration;

use super::engine::Engine;
use super::saver::Saver;
use crate::metrics::Exposition;
use crate::producer::Producer;

/// At most this many `shipper_file_bytes_behind` series (the files furthest behind).
pub const MAX_FILE_SERIES: usize = 100;

/// Everything the text is made of.
pub struct View<'a> {
    /// The tail engine.
    pub engine: &'a Engine,
    /// The producer.
    pub producer: &'a Producer,
    /// The checkpoint writer.
    pub saver: &'a Saver,
    /// How long delivery has been failing, if it is.
    pub delivery_failing: Option<Duration>,
    /// Seconds since the Unix epoch when the agent started.
    pub started_unix: f64,
    /// Exactly-once: the topic whose reading back has failed longest (its files wait), how long,
    /// and why.
    pub read_back_failing: Option<(&'a str, Duration, &'a str)>,
}

impl View<'_> {
    /// The topic lines have waited for longest, as the producer (it is not available) or the
    /// exactly-once read-back (it cannot be read) sees it: its name, how long, why.
    fn topic_waiting(&self) -> Option<(String, Duration, String)> {
        let produce = self
            .producer
            .topic_waiting()
            .map(|(t, w, why)| (t.to_string(), w, why));
        let read_back = self.read_back_failing.map(|(t, w, why)| {
            (
                t.to_string(),
                w,
                format!("exactly-once: cannot read it back: {why}"),
            )
        });
        [produce, read_back]
            .into_iter()
            .flatten()
            .max_by_key(|x| x.1)
    }
}

/// The metrics text.
pub fn render(v: &View<'_>) -> String {
    let mut e = Exposition::default();
    build_info(&mut e);
    routes(&mut e, v.engine);
    files(&mut e, v.engine);
    producer(&mut e, v);
    let ckpt = v.saver.failing_for();
    gauge(
        &mut e,
        "shipper_checkpoint_failing",
        "1 while the checkpoint cannot be written.",
        f64::from(u8::from(ckpt.is_some())),
    );
    process(&mut e, v.started_unix);
    e.finish()
}

/// The metrics text before Kafka has answered once: nothing is followed yet, and delivery counts as
/// failing since the start (an alert on `shipper_delivery_failing_seconds` fires for an agent that
/// never reached Kafka too).
pub fn starting(waited: Duration, started_unix: f64) -> String {
    let mut e = Exposition::default();
    build_info(&mut e);
    delivery_failing(&mut e, Some(waited));
    process(&mut e, started_unix);
    e.finish()
}

/// `Ok` when healthy; else why not. Unhealthy: delivery or the checkpoint failing for longer than
/// `after`.
pub fn health(v: &View<'_>, after: Duration) -> Result<(), String> {
    if let Some(t) = v.delivery_failing.filter(|t| *t >= after) {
        let why = v.producer.trouble().unwrap_or_default();
        return Err(format!(
            "delivery to Kafka failing for {:.0}s: {why}",
            t.as_secs_f64()
        ));
    }
    if v.saver.failing_for().is_some_and(|t| t >= after) {
        return Err(v.saver.trouble().unwrap_or_default());
    }
    if let Some((topic, waited, why)) = v.topic_waiting().filter(|t| t.1 >= after) {
        return Err(format!(
            "topic '{}' not available for {:.0}s, its lines wait in their files: {why}",
            crate::escape::Esc::str(&topic),
            waited.as_secs_f64()
        ));
    }
    Ok(())
}

fn build_info(e: &mut Exposition) {
    e.family(
        "shipper_build_info",
        "gauge",
        "Version of the running shipper.",
    );
    e.sample(
        "shipper_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("SHIPPER_COMMIT")),
        ],
        1.0,
    );
}

fn delivery_failing(e: &mut Exposition, failing: Option<Duration>) {
    gauge(
        e,
        "shipper_delivery_failing",
        "1 while deliveries to Kafka fail (lines wait in their files).",
        f64::from(u8::from(failing.is_some())),
    );
    gauge(
        e,
        "shipper_delivery_failing_seconds",
        "How long deliveries have been failing (0 when they work).",
        failing.map_or(0.0, |d| d.as_secs_f64()),
    );
}

fn gauge(e: &mut Exposition, name: &str, help: &str, value: f64) {
    e.family(name, "gauge", help);
    e.sample(name, &[], value);
}

fn counter(e: &mut Exposition, name: &str, help: &str, value: u64) {
    e.family(name, "counter", help);
    e.sample(name, &[], value as f64);
}

/// Line counters per (input, topic).
fn routes(e: &mut Exposition, engine: &Engine) {
    type Pick = fn(&super::follower::Counters) -> u64;
    let families: [(&str, &str, Pick); 5] = [
        (
            "shipper_lines_read_total",
            "Lines read and handed to the producer.",
            |c| c.lines_read,
        ),
        (
            "shipper_bytes_read_total",
            "Bytes of those lines, without newlines.",
            |c| c.bytes_read,
        ),
        (
            "shipper_lines_acked_total",
            "Lines Kafka acknowledged.",
            |c| c.lines_acked,
        ),
        (
            "shipper_lines_failed_total",
            "Lines Kafka refused for good (skipped).",
            |c| c.lines_failed,
        ),
        (
            "shipper_long_lines_total",
            "Lines over the size limit, sent truncated.",
            |c| c.long_lines,
        ),
    ];
    for (name, help, pick) in families {
        e.family(name, "counter", help);
        for ((input, topic), c) in engine.route_counters() {
            e.sample(name, &[("input", input), ("topic", topic)], pick(c) as f64);
        }
    }
    counter(
        e,
        "shipper_rotations_total",
        "Rotations seen (a path named another file).",
        engine.counters.rotations,
    );
    counter(
        e,
        "shipper_truncations_total",
        "Files that shrank or were rewritten in place; read again from byte 0.",
        engine.counters.truncations,
    );
    counter(
        e,
        "shipper_scans_total",
        "Full scans: the patterns expanded (at start, when a created or renamed name may concern a pattern or a followed file, and as a safety net).",
        engine.counters.full_scans,
    );
    counter(
        e,
        "shipper_files_deleted_unread_total",
        "Files listed holding bytes and deleted before they could be opened (alive for less than a scan): none of their lines were read.",
        engine.counters.gone_unread,
    );
    counter(
        e,
        "shipper_copytruncate_copies_read_total",
        "Truncated files whose unread rest was read from the copy made before the truncation.",
        engine.counters.copies_read,
    );
}

/// Files followed and how far behind they are.
fn files(e: &mut Exposition, engine: &Engine) {
    gauge(
        e,
        "shipper_files_followed",
        "Files followed.",
        engine.file_count() as f64,
    );
    gauge(
        e,
        "shipper_files_open",
        "Files open.",
        engine.open_count() as f64,
    );
    gauge(
        e,
        "shipper_files_unreadable",
        "Matched files that could not be opened (permission denied...), as of the last full scan: their lines are not shipped.",
        engine.unreadable_count() as f64,
    );
    let mut files = engine.behind_by_file();
    let mut per_input: BTreeMap<&str, u64> = BTreeMap::new();
    for (input, _, b) in &files {
        *per_input.entry(input).or_default() += b;
    }
    let waiting = engine.waiting_by_input();
    for (input, _, b) in &waiting {
        *per_input.entry(input).or_default() += b;
    }
    e.family(
        "shipper_files_waiting",
        "gauge",
        "Matched files waiting for a file descriptor (the open files limit), as of the last full scan.",
    );
    e.sample(
        "shipper_files_waiting",
        &[],
        waiting.iter().map(|w| w.1).sum::<usize>() as f64,
    );
    e.family(
        "shipper_bytes_behind",
        "gauge",
        "Bytes written to followed files (and to matched files waiting for a descriptor) and not acknowledged by Kafka yet, per input.",
    );
    for (input, b) in per_input {
        e.sample("shipper_bytes_behind", &[("input", input)], b as f64);
    }
    files.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(b.1)));
    e.family(
        "shipper_file_bytes_behind",
        "gauge",
        "Bytes not acknowledged yet, for the files furthest behind (at most 100 series).",
    );
    for (input, path, b) in files.into_iter().take(MAX_FILE_SERIES) {
        // As messages show it: bytes that are not UTF-8 as `\xff` (lossy, two such names made
        // one series twice: t17 F7), a backslash doubled, so that every file has its own.
        let p = crate::escape::path(path);
        e.sample(
            "shipper_file_bytes_behind",
            &[("input", input), ("path", &p)],
            b as f64,
        );
    }
}

fn producer(e: &mut Exposition, v: &View<'_>) {
    let s = v.producer.stats();
    gauge(
        e,
        "shipper_buffered_bytes",
        "Record bytes held by the producer (batching or in flight).",
        v.producer.buffered_bytes() as f64,
    );
    delivery_failing(e, v.delivery_failing);
    gauge(
        e,
        "shipper_topic_waiting_seconds",
        "How long lines have waited for a topic that is not available (does not exist, may not be created, described or, with exactly-once, read back); 0 when none waits.",
        v.topic_waiting().map_or(0.0, |t| t.1.as_secs_f64()),
    );
    counter(
        e,
        "shipper_produce_requests_total",
        "Produce requests completed.",
        s.requests,
    );
    counter(
        e,
        "shipper_produce_request_errors_total",
        "Produce requests that failed as a whole (connection, timeout).",
        s.request_errors,
    );
    e.family(
        "shipper_produce_partition_errors_total",
        "counter",
        "Batches a Produce response refused, by Kafka's error name (an ACL, a leader change, a record too large).",
    );
    for (error, n) in &s.partition_errors {
        e.sample(
            "shipper_produce_partition_errors_total",
            &[("error", error)],
            *n as f64,
        );
    }
    counter(
        e,
        "shipper_produce_retries_total",
        "Batches put back to be sent again.",
        s.retries,
    );
    e.histogram(
        "shipper_produce_batch_bytes",
        "Size of record batches when first sent, after compression.",
        &s.batch_bytes,
    );
    e.histogram(
        "shipper_produce_request_seconds",
        "Time from sending a Produce request to its response.",
        &s.request_seconds,
    );
}

/// The standard process series (Linux).
fn process(e: &mut Exposition, started_unix: f64) {
    gauge(
        e,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds.",
        started_unix,
    );
    if let Some(rss) = resident_bytes() {
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss as f64,
        );
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            e,
            "process_open_fds",
            "Number of open file descriptors.",
            d.count() as f64,
        );
    }
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096))
}

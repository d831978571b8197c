//! Batches being filled and waiting to be sent: per topic and partition an open batch that records are
//! written into in place, a queue of sealed batches, and the accounting of bytes buffered. No I/O.
//!
//! A record goes to its partition (fixed, murmur2 of its key, or the topic's sticky partition), into the
//! open batch, which is sealed when the next record would not fit, or when it has lingered long enough
//! and no sealed batch of its partition is still waiting to be sent (as the Java producer, which closes
//! a batch only when it is drained or full: while the broker is away or slow, records fill one batch
//! instead of making thousands of small ones, each with a buffer of its own).
//! A sealed batch keeps its records uncompressed and unstamped until it is first sent: then it is
//! compressed, stamped (idempotence) and checksummed once, and its bytes never change again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::cluster::TopicMeta;
use crate::partitioner::{partition_for_key, Partitioner};
use crate::wire::compression::{Compression, CompressionError, Compressor};
use crate::wire::records::{self, BatchBuilder, Header, ProducerStamp, RecordMark};

/// How records are batched.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// How long a batch waits for more records.
    pub linger: Duration,
    /// Largest batch before compression.
    pub batch_bytes: usize,
    /// Largest batch the topic accepts (the broker's default `message.max.bytes`).
    pub max_message_bytes: usize,
    /// Fixed partition, if any.
    pub partition: Option<i32>,
    /// Partitioning of records without a fixed partition.
    pub partitioner: Partitioner,
}

/// A record that can never be sent: alone it is larger than the topic accepts.
#[derive(Debug, Clone, thiserror::Error)]
#[error("record of {size} bytes exceeds the largest batch shipper sends ({limit} bytes; if the topic's max.message.bytes allows more, raise --max-message-bytes)")]
pub struct RecordTooLarge {
    /// Encoded size of the record in a batch of its own.
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

/// Where an appended record went: what [`Accumulator::undo_last`] needs to take it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Topic index.
    pub topic: usize,
    /// Partition.
    pub partition: i32,
}

/// A source and the byte offset a record of it ended at.
type At = (Arc<str>, u64);

/// What an append changed of [`OpenBatch::at`], to undo it.
enum PrevAt {
    Unchanged,
    /// Same source: its previous end.
    End(u64),
    /// Another source (or none) before.
    At(Option<At>),
}

pub(crate) struct OpenBatch {
    buf: BytesMut,
    builder: BatchBuilder,
    tokens: Vec<u64>,
    created: Instant,
    /// The last record's mark and size, and the source position before it, to take it back.
    last: Option<(RecordMark, usize, PrevAt)>,
    /// Source and end of the last record that came with a [`SourcePos`] (exactly-once).
    at: Option<At>,
}

/// Where a record comes from, for exactly-once: the source's identity and the byte offset in it just
/// after the record. A record whose position does not follow from the one before it in its batch
/// carries it in a [`POSITION_HEADER`] header, so a restart can read back from Kafka what each source
/// has there (see `crate::tail::exactly`).
#[derive(Debug, Clone)]
pub struct SourcePos<'a> {
    /// The source's identity (host and file identity).
    pub source: &'a Arc<str>,
    /// Byte offset after the record in its source.
    pub end: u64,
    /// The record is the head of an over-long line whose rest, after `end`, is skipped.
    pub skipping: bool,
}

/// The header that carries a record's [`SourcePos`]: `<source>@<end>`, with `+` after the end when the
/// rest of an over-long line is skipped.
pub const POSITION_HEADER: &str = "shipper.pos";

impl SourcePos<'_> {
    /// The header value.
    pub fn header_value(&self) -> String {
        format!(
            "{}@{}{}",
            self.source,
            self.end,
            if self.skipping { "+" } else { "" }
        )
    }

    /// Whether a record of `value_len` bytes at this position continues `prev` (same source, starting
    /// where the previous record ended, one newline between): then it needs no header.
    fn continues(&self, prev: Option<&(Arc<str>, u64)>, value_len: usize) -> bool {
        match prev {
            Some((s, end)) => {
                !self.skipping
                    && (Arc::ptr_eq(s, self.source) || **s == **self.source)
                    && end.checked_add(value_len as u64 + 1) == Some(self.end)
            }
            None => false,
        }
    }
}

/// The body of a sealed batch: records not yet finished, or the bytes as first sent.
pub(crate) enum Body {
    Records {
        buf: BytesMut,
        builder: BatchBuilder,
    },
    Finished(Bytes),
}

/// A sealed batch waiting to be sent, in flight, or waiting to be retried.
pub(crate) struct Batch {
    pub(crate) body: Body,
    /// The caller's tokens of the records, in order.
    pub(crate) tokens: Vec<u64>,
    /// When its first record was appended (delivery timeouts count from here).
    pub(crate) created: Instant,
    /// Bytes it counts for in the buffer.
    pub(crate) size: usize,
    /// An attempt failed without an answer after the request may have been sent: Kafka may hold
    /// it, whatever later attempts say.
    pub(crate) maybe_written: bool,
    /// Moved from a partition that no longer exists: its stamp (that partition's sequences) is
    /// replaced at its next send.
    pub(crate) moved: bool,
}

impl Batch {
    /// Compresses and checksums the records with `stamp`, once; a finished batch is left alone.
    pub(crate) fn finish(
        &mut self,
        codec: Compression,
        level: Option<i32>,
        stamp: ProducerStamp,
        compressor: &mut Compressor,
    ) -> Result<(), CompressionError> {
        let body = std::mem::replace(&mut self.body, Body::Finished(Bytes::new()));
        self.body = match body {
            Body::Records { mut buf, builder } => {
                builder.finish(&mut buf, codec, level, stamp, compressor)?;
                Body::Finished(buf.freeze())
            }
            done => done,
        };
        Ok(())
    }

    /// The finished bytes (empty before [`Batch::finish`]).
    pub(crate) fn bytes(&self) -> Bytes {
        match &self.body {
            Body::Finished(b) => b.clone(),
            Body::Records { .. } => Bytes::new(),
        }
    }

    /// The stamp a finished batch carries.
    pub(crate) fn stamp(&self) -> Option<ProducerStamp> {
        match &self.body {
            Body::Finished(b) => records::stamp_of(b),
            Body::Records { .. } => None,
        }
    }

    /// Replaces the stamp of a finished batch (a new producer id); recomputes its checksum.
    pub(crate) fn restamp(&mut self, stamp: ProducerStamp) {
        if let Body::Finished(b) = &mut self.body {
            let mut m = std::mem::take(b)
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            records::restamp(&mut m, stamp);
            *b = m.freeze();
        }
    }
}

/// One partition's batches and delivery state.
#[derive(Default)]
pub(crate) struct PartitionQueue {
    pub(crate) open: Option<OpenBatch>,
    pub(crate) ready: VecDeque<Batch>,
    /// One batch per partition is in flight at a time: order is kept, retries cannot reorder.
    pub(crate) in_flight: bool,
    pub(crate) retry_at: Option<Instant>,
    pub(crate) backoff: Option<Backoff>,
    /// When its front batch first failed, for the delivery timeout and the operator's messages.
    pub(crate) failing_since: Option<Instant>,
    /// When the batch in flight was sent.
    pub(crate) sent_at: Option<Instant>,
}

/// One topic's partitions.
pub(crate) struct TopicQueues {
    pub(crate) name: String,
    pub(crate) meta: Arc<TopicMeta>,
    pub(crate) parts: Vec<PartitionQueue>,
    sticky: i32,
    /// Bytes of its records appended and not yet delivered (its share of [`Accumulator::buffered`]).
    pub(crate) buffered: usize,
    /// It was found holding its most of the buffer (see `Producer::holds_back`): named ready again
    /// once it holds less.
    pub(crate) held: bool,
    /// Some of its records were acknowledged: its deliveries worked at least once.
    pub(crate) proven: bool,
}

impl TopicQueues {
    /// How many partitions records may go to: the topic's count now, or the count at start if the
    /// topic grew since (records placed keep their partition; keys keep theirs within a run).
    fn live(&self) -> usize {
        self.parts.len().min(self.meta.partitions.len().max(1))
    }

    /// Whether records without a key may go to partition `p` now: it has a leader and its batches
    /// are not failing (its broker down or refusing). Kafka's partitioner and librdkafka's pass over
    /// partitions without a leader likewise (t21 F1: a partition whose only replica was down took
    /// most records, each full batch failing at --timeout, while two partitions were healthy).
    fn available(&self, p: i32) -> bool {
        self.meta.leader(p) >= 0
            && usize::try_from(p)
                .ok()
                .and_then(|i| self.parts.get(i))
                .is_some_and(|q| q.failing_since.is_none())
    }

    /// A partition for records without a key, other than `not` when there is another: one of the
    /// available ones at random, else any.
    fn pick(&self, not: Option<i32>) -> i32 {
        let n = self.live() as i32;
        let others = (0..n).filter(|&p| Some(p) != not);
        let count = others.clone().filter(|&p| self.available(p)).count();
        if count > 0 {
            let k = fastrand::usize(0..count);
            return others.filter(|&p| self.available(p)).nth(k).unwrap_or(0);
        }
        match not {
            Some(x) if n > 1 => (x + fastrand::i32(1..n)) % n,
            _ => fastrand::i32(0..n.max(1)),
        }
    }
}

/// The batches of every topic and the bytes they hold.
pub(crate) struct Accumulator {
    pub(crate) cfg: BatchConfig,
    pub(crate) topics: Vec<TopicQueues>,
    /// Bytes appended and not yet delivered.
    pub(crate) buffered: usize,
    /// The last source placed (exactly-once), its topic and partition.
    last_source: Option<(Arc<str>, usize, i32)>,
    /// Buffers of acknowledged batches, reused for new ones (see [`Accumulator::recycle`]).
    free: Vec<BytesMut>,
    /// Records in the last batch sealed: a new batch's token list starts that large, not grown by
    /// doubling (each step a copy, and with musl past 128 KB a fresh mapping).
    tokens_hint: usize,
}

/// At most this many batch buffers are kept for reuse.
const FREE_BUFFERS: usize = 4;

impl Accumulator {
    pub(crate) fn new(cfg: BatchConfig) -> Self {
        Accumulator {
            cfg,
            topics: Vec::new(),
            buffered: 0,
            last_source: None,
            free: Vec::new(),
            tokens_hint: 0,
        }
    }

    /// Takes back the buffer of a batch Kafka has acknowledged, for the next batch. A fresh
    /// batch-sized buffer is a fresh mapping with most allocators (musl's always): every page of it
    /// faults on first write, and freeing it unmaps it again — as much kernel work as filling it.
    /// A buffer still shared (a request not yet dropped) or too small is left to be freed.
    pub(crate) fn recycle(&mut self, body: Body) {
        let Body::Finished(b) = body else { return };
        if self.free.len() >= FREE_BUFFERS {
            return;
        }
        if let Ok(mut m) = b.try_into_mut() {
            if m.capacity() >= self.limit() + 64 {
                m.clear();
                self.free.push(m);
            }
        }
    }

    /// Adds a topic; returns its index.
    pub(crate) fn add_topic(&mut self, meta: Arc<TopicMeta>) -> usize {
        let n = meta.partitions.len().max(1);
        self.topics.push(TopicQueues {
            name: meta.name.clone(),
            parts: (0..n).map(|_| PartitionQueue::default()).collect(),
            sticky: fastrand::i32(0..n as i32),
            meta,
            buffered: 0,
            held: false,
            proven: false,
        });
        self.topics.len() - 1
    }

    /// Counts `add` bytes more of topic `t` buffered.
    pub(crate) fn grow(&mut self, t: usize, add: usize) {
        self.buffered += add;
        if let Some(q) = self.topics.get_mut(t) {
            q.buffered += add;
        }
    }

    /// Counts `n` bytes of topic `t` no longer buffered (delivered, failed, taken back).
    pub(crate) fn shrink(&mut self, t: usize, n: usize) {
        self.buffered = self.buffered.saturating_sub(n);
        if let Some(q) = self.topics.get_mut(t) {
            q.buffered = q.buffered.saturating_sub(n);
        }
    }

    /// Takes newer metadata for a topic (leaders moved). A topic that grew keeps the partition count
    /// it had: records already placed stay where they are, and keys keep their partition within a
    /// run. A topic with fewer partitions than before was deleted and created again: the batches of
    /// the partitions that are gone move to those left (t10: they waited for ever on
    /// UNKNOWN_TOPIC_OR_PARTITION). Returns the partitions emptied that way.
    pub(crate) fn update_meta(&mut self, topic: usize, meta: Arc<TopicMeta>) -> Vec<i32> {
        let Some(t) = self.topics.get_mut(topic) else {
            return Vec::new();
        };
        let live = meta.partitions.len();
        if live == 0 {
            return Vec::new(); // being created: no partitions to go to yet
        }
        let shrunk = live < t.meta.partitions.len().min(t.parts.len());
        t.meta = meta;
        if live >= t.parts.len() || self.cfg.partition.is_some() {
            return Vec::new();
        }
        if shrunk {
            crate::log::warn(format_args!(
                "topic '{}' has {live} partition{} now, {} before (deleted and created again?): what waits for the others goes to {}",
                crate::escape::Esc::str(&t.name),
                if live == 1 { "" } else { "s" },
                t.parts.len(),
                if live == 1 { "it" } else { "these" }
            ));
        }
        if t.sticky as usize >= live {
            t.sticky = fastrand::i32(0..live as i32);
        }
        let mut emptied = Vec::new();
        for q in live..self.topics[topic].parts.len() {
            let t = &self.topics[topic];
            if t.parts[q].in_flight || (t.parts[q].open.is_none() && t.parts[q].ready.is_empty()) {
                continue; // moved once its request is back
            }
            self.seal(topic, q);
            let t = &mut self.topics[topic];
            let moved: Vec<Batch> = t.parts[q].ready.drain(..).collect();
            let (gone, to) = (&mut t.parts[q], q % live);
            gone.retry_at = None;
            gone.backoff = None;
            gone.failing_since = None;
            for mut b in moved {
                b.moved = true;
                t.parts[to].ready.push_back(b);
            }
            emptied.push(q as i32);
        }
        let t = &mut self.topics[topic];
        if t.parts[live..].iter().all(|q| !q.in_flight) {
            t.parts.truncate(live);
        }
        emptied
    }

    fn choose_partition(
        &mut self,
        topic: usize,
        key: Option<&[u8]>,
        pos: Option<&SourcePos<'_>>,
    ) -> i32 {
        let t = &self.topics[topic];
        let n = t.live();
        if let Some(p) = self.cfg.partition {
            return p;
        }
        if let Some(pos) = pos {
            // Exactly-once: a source's records all go to one partition, in order. The hash of the
            // source is kept while the same source (the same Arc) keeps coming.
            if let Some(k) = key {
                return partition_for_key(k, n);
            }
            if let Some((s, t, p)) = &self.last_source {
                if Arc::ptr_eq(s, pos.source) && *t == topic {
                    return *p;
                }
            }
            let p = partition_for_key(pos.source.as_bytes(), n);
            self.last_source = Some((pos.source.clone(), topic, p));
            return p;
        }
        match (self.cfg.partitioner, key) {
            (Partitioner::Default | Partitioner::Murmur2, Some(k)) => partition_for_key(k, n),
            (Partitioner::Random, _) => t.pick(None),
            _ => {
                // The sticky partition lost its leader or fails: move on to one that works.
                if !t.available(t.sticky) {
                    let p = t.pick(Some(t.sticky));
                    if t.available(p) {
                        self.topics[topic].sticky = p;
                    }
                }
                self.topics[topic].sticky
            }
        }
    }

    /// The largest batch this topic's records may fill.
    fn limit(&self) -> usize {
        self.cfg.batch_bytes.min(self.cfg.max_message_bytes)
    }

    /// Adds one record. The record stays the last of its open batch until the next append, so it can be
    /// taken back with [`Accumulator::undo_last`].
    #[cfg(test)]
    pub(crate) fn append(
        &mut self,
        topic: usize,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
        timestamp_ms: i64,
        token: u64,
    ) -> Result<Appended, RecordTooLarge> {
        self.append_at(topic, key, value, headers, timestamp_ms, token, None)
    }

    /// Adds one record, from `pos` in its source when exactly-once: the record then goes to its
    /// source's partition, with a position header unless it continues the record before it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append_at(
        &mut self,
        topic: usize,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
        timestamp_ms: i64,
        token: u64,
        pos: Option<&SourcePos<'_>>,
    ) -> Result<Appended, RecordTooLarge> {
        let p = self.choose_partition(topic, key, pos);
        let limit = self.limit();
        let max_message = self.cfg.max_message_bytes;
        let idx = p as usize;
        let value_len = value.map_or(0, <[u8]>::len);
        let positioned = |open: Option<&OpenBatch>| {
            pos.filter(|pos| !pos.continues(open.and_then(|o| o.at.as_ref()), value_len))
                .map(SourcePos::header_value)
        };
        let mut header_value = positioned(self.topics[topic].parts[idx].open.as_ref());
        if let Some(open) = &self.topics[topic].parts[idx].open {
            let add = match &header_value {
                None => open.builder.record_size(timestamp_ms, key, value, headers),
                Some(v) => {
                    let hs = with_position(headers, v);
                    open.builder.record_size(timestamp_ms, key, value, &hs)
                }
            };
            if open.builder.len(&open.buf) + add > limit {
                self.seal(topic, idx);
                // The record now opens a batch: it carries its position.
                header_value = positioned(None);
            }
        }
        let extended;
        let headers = match &header_value {
            Some(v) => {
                extended = with_position(headers, v);
                &extended[..]
            }
            None => headers,
        };
        let (free, tokens_hint) = (&mut self.free, self.tokens_hint);
        let q = &mut self.topics[topic].parts[idx];
        let open = q.open.get_or_insert_with(|| {
            // Full size at once: untouched pages cost no memory, and growth by doubling would copy.
            let mut buf = free
                .pop()
                .filter(|b| b.capacity() >= limit + 64)
                .unwrap_or_else(|| BytesMut::with_capacity(limit + 64));
            let builder = BatchBuilder::begin(&mut buf, timestamp_ms);
            OpenBatch {
                buf,
                builder,
                tokens: Vec::with_capacity(tokens_hint),
                created: Instant::now(),
                last: None,
                at: None,
            }
        });
        let add = open.builder.record_size(timestamp_ms, key, value, headers);
        if open.builder.is_empty() && records::BATCH_HEADER_BYTES + add > max_message {
            // Its buffer is kept for the next batch (a cut to fit tries up to three sizes).
            if let Some(mut o) = q.open.take() {
                o.buf.clear();
                free.push(o.buf);
            }
            return Err(RecordTooLarge {
                size: records::BATCH_HEADER_BYTES + add,
                limit: max_message,
            });
        }
        let mark = open
            .builder
            .push(&mut open.buf, timestamp_ms, key, value, headers);
        open.tokens.push(token);
        let before = match (pos, &mut open.at) {
            (None, _) => PrevAt::Unchanged,
            (Some(pos), Some((s, end))) if Arc::ptr_eq(s, pos.source) => {
                PrevAt::End(std::mem::replace(end, pos.end))
            }
            (Some(pos), at) => PrevAt::At(at.replace((pos.source.clone(), pos.end))),
        };
        open.last = Some((mark, add, before));
        self.grow(topic, add);
        Ok(Appended {
            topic,
            partition: p,
        })
    }

    /// Takes back the record just appended (before any other append).
    pub(crate) fn undo_last(&mut self, a: Appended) {
        let Some(tq) = self.topics.get_mut(a.topic) else {
            return;
        };
        let Some(q) = tq.parts.get_mut(a.partition as usize) else {
            return;
        };
        let Some(open) = q.open.as_mut() else { return };
        let Some((mark, size, before)) = open.last.take() else {
            return;
        };
        match before {
            PrevAt::Unchanged => {}
            PrevAt::End(e) => {
                if let Some(at) = &mut open.at {
                    at.1 = e;
                }
            }
            PrevAt::At(a) => open.at = a,
        }
        open.builder.pop(&mut open.buf, mark);
        open.tokens.pop();
        if open.builder.is_empty() {
            q.open = None;
        }
        tq.buffered = tq.buffered.saturating_sub(size);
        self.buffered = self.buffered.saturating_sub(size);
    }

    /// Closes the open batch of a partition and queues it for sending.
    pub(crate) fn seal(&mut self, topic: usize, idx: usize) {
        let fixed = self.cfg.partition.is_some();
        let t = &mut self.topics[topic];
        let Some(open) = t.parts[idx].open.take() else {
            return;
        };
        let size = open.builder.len(&open.buf) - records::BATCH_HEADER_BYTES;
        self.tokens_hint = open.tokens.len();
        t.parts[idx].ready.push_back(Batch {
            body: Body::Records {
                buf: open.buf,
                builder: open.builder,
            },
            tokens: open.tokens,
            created: open.created,
            size,
            maybe_written: false,
            moved: false,
        });
        let n = t.live() as i32;
        if idx as i32 == t.sticky && !fixed && n > 1 {
            // Move on to another partition: even spread over time, large batches.
            t.sticky = t.pick(Some(t.sticky));
        }
    }

    /// Seals every open batch that has lingered long enough while nothing of its partition waits to be
    /// sent or is in flight (all of them with `force`). One batch per partition is in flight at a
    /// time, so a batch sealed behind one could not go before its response anyway: it keeps filling
    /// instead, and is sealed when the response comes. That is what batches records with a linger of
    /// 0: the first record goes at once, the next ones gather while it is out.
    pub(crate) fn seal_due(&mut self, now: Instant, force: bool) {
        let linger = self.cfg.linger;
        for t in 0..self.topics.len() {
            for i in 0..self.topics[t].parts.len() {
                let q = &self.topics[t].parts[i];
                let due = q.open.as_ref().is_some_and(|o| {
                    force
                        || (q.ready.is_empty()
                            && !q.in_flight
                            && now.duration_since(o.created) >= linger)
                });
                if due {
                    self.seal(t, i);
                }
            }
        }
    }

    /// The next moment after `now` something becomes due: a linger ends or a retry may go. (What is
    /// already due and still waits, waits for something else — a response, a refresh — that wakes
    /// the caller by itself.)
    pub(crate) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        for t in &self.topics {
            for q in &t.parts {
                // An open batch behind a waiting or in-flight one is sealed when that one goes (its
                // response or retry wakes the caller), not at its linger.
                let linger = q
                    .open
                    .as_ref()
                    .filter(|_| q.ready.is_empty() && !q.in_flight)
                    .map(|o| o.created + self.cfg.linger);
                let retry = q.retry_at.filter(|_| !q.ready.is_empty() && !q.in_flight);
                for x in [linger, retry].into_iter().flatten().filter(|x| *x > now) {
                    d = Some(d.map_or(x, |y| y.min(x)));
                }
            }
        }
        d
    }

    /// Whether no record is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.buffered == 0
    }
}

/// `headers` and the position header with value `v`.
fn with_position<'a>(headers: &[Header<'a>], v: &'a str) -> Vec<Header<'a>> {
    let mut hs = headers.to_vec();
    hs.push((POSITION_HEADER.as_bytes(), Some(v.as_bytes())));
    hs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PartitionMeta;

    fn meta(n: i32) -> Arc<TopicMeta> {
        Arc::new(TopicMeta {
            name: "t".into(),
            id: [0; 16],
            error: 0,
            internal: false,
            bad_ids: false,
            partitions: (0..n)
                .map(|id| PartitionMeta {
                    id,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    offline: vec![],
                    error: 0,
                })
                .collect(),
        })
    }

    fn acc(batch_bytes: usize) -> Accumulator {
        Accumulator::new(BatchConfig {
            linger: Duration::from_millis(5),
            batch_bytes,
            max_message_bytes: 1_048_588,
            partition: None,
            partitioner: Partitioner::Default,
        })
    }

    #[test]
    fn keyed_records_go_where_java_puts_them_and_keyless_stick_to_one_partition() {
        let mut a = acc(1 << 20);
        let t = a.add_topic(meta(3));
        let k = a.append(t, Some(b"key-1"), Some(b"v"), &[], 1, 0).unwrap();
        assert_eq!(k.partition, partition_for_key(b"key-1", 3));
        let first = a.append(t, None, Some(b"v"), &[], 1, 1).unwrap().partition;
        for i in 0..10 {
            assert_eq!(
                a.append(t, None, Some(b"v"), &[], 1, i).unwrap().partition,
                first
            );
        }
    }

    #[test]
    fn a_full_batch_is_sealed_before_the_record_that_does_not_fit() {
        let mut a = acc(2048);
        let t = a.add_topic(meta(1));
        for i in 0..30 {
            a.append(t, None, Some(&[b'x'; 100]), &[], 1, i).unwrap();
        }
        let q = &a.topics[t].parts[0];
        assert!(!q.ready.is_empty());
        let sealed: usize = q.ready.iter().map(|b| b.tokens.len()).sum();
        assert_eq!(sealed + q.open.as_ref().map_or(0, |o| o.tokens.len()), 30);
        assert!(q
            .ready
            .iter()
            .all(|b| b.size + records::BATCH_HEADER_BYTES <= 2048));
    }

    #[test]
    fn a_lingered_batch_behind_a_waiting_one_keeps_filling_until_that_one_goes() {
        let mut a = acc(4096);
        let t = a.add_topic(meta(1));
        let later = Instant::now() + Duration::from_secs(1);
        a.append(t, None, Some(b"first"), &[], 1, 0).unwrap();
        a.seal_due(later, false);
        assert_eq!(
            a.topics[t].parts[0].ready.len(),
            1,
            "lingered, nothing waiting: sealed"
        );
        // The broker is away: the sealed batch waits; records keep coming for a long time.
        for i in 1..200 {
            a.append(t, None, Some(&[b'x'; 100]), &[], 1, i).unwrap();
            a.seal_due(later + Duration::from_millis(10 * i), false);
        }
        let q = &a.topics[t].parts[0];
        // Only full batches were sealed behind the waiting one: 4 KiB each, never one per linger.
        assert!(q
            .ready
            .iter()
            .skip(1)
            .all(|b| b.size + 110 > 4096 - records::BATCH_HEADER_BYTES));
        assert!(
            q.ready.len() <= 1 + 199 * 110 / 3900 + 1,
            "{}",
            q.ready.len()
        );
        assert!(
            a.next_deadline(later).is_none(),
            "no wake-ups for a batch that cannot go"
        );
        // The waiting batches go: the lingered open one is sealed at once.
        let waiting = a.topics[t].parts[0].ready.len();
        a.topics[t].parts[0].ready.clear();
        a.seal_due(later + Duration::from_secs(3), false);
        let q = &a.topics[t].parts[0];
        assert!(
            q.open.is_none() && q.ready.len() == 1,
            "{waiting} then {}",
            q.ready.len()
        );
    }

    #[test]
    fn with_no_linger_records_gather_while_their_partition_has_a_batch_in_flight() {
        let mut a = Accumulator::new(BatchConfig {
            linger: Duration::ZERO,
            ..acc(1 << 20).cfg
        });
        let t = a.add_topic(meta(1));
        let now = Instant::now();
        a.append(t, None, Some(b"first"), &[], 1, 0).unwrap();
        a.seal_due(now, false);
        let q = &mut a.topics[t].parts[0];
        assert_eq!(
            q.ready.len(),
            1,
            "nothing in flight: the first record goes at once"
        );
        // It is sent: the records that come while it is out gather in one batch, whatever the time.
        q.ready.clear();
        q.in_flight = true;
        for i in 1..100 {
            a.append(t, None, Some(b"later"), &[], 1, i).unwrap();
            a.seal_due(now + Duration::from_millis(i), false);
        }
        let q = &a.topics[t].parts[0];
        assert!(
            q.ready.is_empty(),
            "{} batches sealed behind one in flight",
            q.ready.len()
        );
        assert_eq!(q.open.as_ref().map(|o| o.tokens.len()), Some(99));
        assert!(
            a.next_deadline(now).is_none(),
            "no wake-ups for a batch that cannot go: the response wakes the producer"
        );
        // The response came: the gathered records go as one batch.
        a.topics[t].parts[0].in_flight = false;
        a.seal_due(now + Duration::from_millis(100), false);
        let q = &a.topics[t].parts[0];
        assert!(q.open.is_none());
        assert_eq!(
            q.ready.iter().map(|b| b.tokens.len()).collect::<Vec<_>>(),
            [99]
        );
    }

    #[test]
    fn undo_last_takes_back_exactly_the_last_record() {
        let mut a = acc(1 << 20);
        let t = a.add_topic(meta(1));
        a.append(t, None, Some(b"keep"), &[], 1, 1).unwrap();
        let before = a.buffered;
        let x = a
            .append(t, None, Some(b"zeros from a vanished page"), &[], 2, 2)
            .unwrap();
        a.undo_last(x);
        assert_eq!(a.buffered, before);
        a.seal_due(Instant::now(), true);
        let mut b = a.topics[t].parts[0].ready.pop_front().unwrap();
        assert_eq!(b.tokens, vec![1]);
        b.finish(
            Compression::None,
            None,
            ProducerStamp::NONE,
            &mut Compressor::default(),
        )
        .unwrap();
        let bytes = b.bytes();
        let (h, batch) = records::split_batches(&bytes).next().unwrap().unwrap();
        records::verify_crc(&h, batch).unwrap();
        assert_eq!((h.record_count, h.max_timestamp), (1, 1));
    }

    #[test]
    fn an_acknowledged_batch_buffer_carries_the_next_batch_unless_still_shared() {
        let mut a = acc(1 << 20);
        let t = a.add_topic(meta(1));
        let sealed = |a: &mut Accumulator, token| {
            a.append(t, None, Some(b"line"), &[], 1, token).unwrap();
            a.seal_due(Instant::now(), true);
            let mut b = a.topics[t].parts[0].ready.pop_front().unwrap();
            b.finish(
                Compression::Zstd,
                None,
                ProducerStamp::NONE,
                &mut Compressor::default(),
            )
            .unwrap();
            b
        };
        let first = sealed(&mut a, 1);
        let at = first.bytes().as_ptr();
        a.recycle(first.body);
        let second = sealed(&mut a, 2);
        assert_eq!(second.bytes().as_ptr(), at, "the buffer was reused");
        let held = second.bytes();
        let (h, batch) = records::split_batches(&held).next().unwrap().unwrap();
        records::verify_crc(&h, batch).unwrap();
        assert_eq!(h.record_count, 1);
        // Still held (a request not yet dropped): not taken.
        a.recycle(second.body);
        let third = sealed(&mut a, 3);
        assert_ne!(third.bytes().as_ptr(), held.as_ptr());
    }

    #[test]
    fn a_record_larger_than_the_topic_takes_is_refused_alone() {
        let mut a = acc(1 << 20);
        a.cfg.max_message_bytes = 1000;
        let t = a.add_topic(meta(1));
        assert!(a.append(t, None, Some(&[0; 2000]), &[], 1, 1).is_err());
        assert_eq!(a.buffered, 0);
    }

    #[test]
    fn positions_written_with_records_are_read_back_exactly() {
        use crate::tail::exactly::Positions;
        let mut a = acc(1 << 20);
        let t = a.add_topic(meta(1));
        let src = |s: &str| -> Arc<str> { Arc::from(s) };
        let (x, y) = (src("h:1:1:0"), src("h:1:2:0"));
        fn pos(source: &Arc<str>, end: u64, skipping: bool) -> SourcePos<'_> {
            SourcePos {
                source,
                end,
                skipping,
            }
        }
        // x: "aa\n" "b\n", then y: "ccc\n", then x again after 10 skipped bytes, then a truncated head.
        let recs: Vec<(&[u8], SourcePos)> = vec![
            (b"aa", pos(&x, 3, false)),
            (b"b", pos(&x, 5, false)),
            (b"ccc", pos(&y, 4, false)),
            (b"d", pos(&x, 17, false)),
            (b"e", pos(&x, 19, false)),
            (b"ffff", pos(&x, 23, true)),
        ];
        for (i, (v, p)) in recs.iter().enumerate() {
            a.append_at(t, None, Some(v), &[], 1, i as u64, Some(p))
                .unwrap();
        }
        // Taking back the last record restores the position it continued from.
        let undo = a
            .append_at(t, None, Some(b"zz"), &[], 1, 99, Some(&pos(&x, 100, false)))
            .unwrap();
        a.undo_last(undo);
        a.seal_due(Instant::now(), true);
        let mut b = a.topics[t].parts[0].ready.pop_front().unwrap();
        b.finish(
            Compression::None,
            None,
            ProducerStamp::NONE,
            &mut Compressor::default(),
        )
        .unwrap();
        let bytes = b.bytes();
        let (h, batch) = records::split_batches(&bytes).next().unwrap().unwrap();
        let mut scratch = Vec::new();
        let section = records::records_section(&h, batch, &mut scratch, 1 << 20).unwrap();
        let mut with_header = 0;
        let mut rs = Vec::new();
        for r in records::records(&h, section) {
            let r = r.unwrap();
            let p = r
                .headers()
                .find(|(k, _)| *k == POSITION_HEADER.as_bytes())
                .and_then(|(_, v)| v);
            with_header += p.is_some() as usize;
            rs.push((r.value.map_or(0, <[u8]>::len), p));
        }
        assert_eq!(
            with_header, 4,
            "first of x, y, x after a gap, the truncated head"
        );
        let mut found = Positions::new("h:".into());
        found.batch(0, 1, rs.into_iter());
        let ends = found.into_ends();
        assert_eq!(ends["h:1:1:0"], (23, true));
        assert_eq!(ends["h:1:2:0"], (4, false));
        // Records of one source all go to one partition of a topic with several.
        let mut a = acc(1 << 20);
        let t = a.add_topic(meta(8));
        let parts: std::collections::BTreeSet<i32> = (0..50)
            .map(|i| {
                a.append_at(
                    t,
                    None,
                    Some(b"v"),
                    &[],
                    1,
                    i,
                    Some(&pos(&x, 2 * i + 2, false)),
                )
                .unwrap()
                .partition
            })
            .collect();
        assert_eq!(parts.len(), 1);
    }
}

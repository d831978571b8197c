//! The producer engine: per-partition batches filled in place, linger and size limits, one Produce
//! request per leader broker carrying every ready partition's batch, several requests in flight per
//! broker, retries that resend the same bytes, and a delivery report per batch.
//!
//! The engine does no I/O of its own input: callers [`Producer::append`] records and call
//! [`Producer::drive`] to send and collect deliveries. `drive` is cancel-safe: requests are written by
//! spawned tasks in the order they were made, so dropping a `drive` future never tears a request.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::cluster::{Cluster, TopicMeta};
use crate::error::{is_retriable_code, is_stale_metadata_code, Error};
use crate::partitioner::{partition_for_key, Partitioner};
use crate::wire::compression::{Compression, Compressor};
use crate::wire::records::{self, BatchBuilder, Header, ProducerStamp};

/// Produce versions we speak: flexible (9+, Kafka 2.4+) up to 12, the last with topic names.
const PRODUCE_VERSIONS: VersionRange = VersionRange { min: 9, max: 12 };
/// Broker default `message.max.bytes`: the largest batch a default topic accepts.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// How the producer batches and acknowledges.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// -1 (all in-sync replicas), 1 (leader) or 0 (no response).
    pub acks: i16,
    /// Batch codec.
    pub compression: Compression,
    /// Codec level (gzip, zstd).
    pub compression_level: Option<i32>,
    /// How long a batch waits for more records.
    pub linger: Duration,
    /// Largest batch before compression.
    pub batch_bytes: usize,
    /// Requests in flight per broker.
    pub max_in_flight: usize,
    /// Bytes buffered (open, ready and in flight) before [`Producer::is_full`] says stop.
    pub buffer_bytes: usize,
    /// Fixed partition, if any.
    pub partition: Option<i32>,
    /// Partitioning of records without a fixed partition.
    pub partitioner: Partitioner,
    /// Broker-side wait for acks, in ms.
    pub ack_timeout_ms: i32,
    /// Give up on a batch that has failed for this long; `None` retries forever.
    pub delivery_timeout: Option<Duration>,
    /// Largest batch the topic accepts.
    pub max_message_bytes: usize,
    /// Idempotent produce (producer id and sequence numbers): retries cannot duplicate. Needs acks=all;
    /// ignored otherwise.
    pub idempotence: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            compression: Compression::None,
            compression_level: None,
            linger: Duration::from_millis(5),
            batch_bytes: 1_000_000,
            max_in_flight: 5,
            buffer_bytes: 4 * 1024 * 1024,
            partition: None,
            partitioner: Partitioner::Default,
            ack_timeout_ms: 30_000,
            delivery_timeout: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            idempotence: true,
        }
    }
}

/// The outcome of one batch: its records' tokens, in order, and where they landed or why not.
#[derive(Debug)]
pub struct Delivery {
    /// Partition of the batch.
    pub partition: i32,
    /// Offset of the first record (-1 with acks=0 or on error).
    pub base_offset: i64,
    /// The caller's tokens of the batch's records, in record order.
    pub tokens: Vec<u64>,
    /// Why the batch was not written, if it was not.
    pub error: Option<Error>,
}

/// A record that can never be sent: alone it is larger than the topic accepts.
#[derive(Debug, thiserror::Error)]
#[error("record of {size} bytes exceeds the largest batch the topic accepts ({limit} bytes)")]
pub struct RecordTooLarge {
    /// Encoded size of the record in a batch of its own.
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

struct OpenBatch {
    buf: BytesMut,
    builder: BatchBuilder,
    tokens: Vec<u64>,
    created: Instant,
}

struct Sealed {
    bytes: Bytes,
    tokens: Vec<u64>,
    /// Stamped with the producer id and a sequence (idempotence), which happens at the first send.
    stamped: bool,
    first_failure: Option<Instant>,
    last_error: Option<Error>,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<Sealed>,
    retry_at: Option<Instant>,
    backoff: Option<Backoff>,
    in_flight: bool,
}

type Outcome = (
    i32,
    Vec<(i32, Sealed)>,
    Result<Option<ProduceResponse>, Error>,
);

/// Batches records for one topic and ships them to the partition leaders.
pub struct Producer {
    cluster: Arc<Cluster>,
    topic: String,
    meta: Arc<TopicMeta>,
    cfg: ProducerConfig,
    queues: Vec<PartitionQueue>,
    sticky: i32,
    buffered: usize,
    in_flight: HashMap<i32, usize>,
    tasks: JoinSet<Outcome>,
    refresh: Option<tokio::task::JoinHandle<()>>,
    compressor: Compressor,
    fatal: Option<Error>,
    /// Producer id and epoch when idempotent.
    pid: Option<(i64, i16)>,
    /// Next sequence number per partition.
    next_seq: Vec<i32>,
    /// The broker no longer accepts our sequences: get a new producer id before sending more.
    reset_pid: bool,
    /// Why batches are being retried, until one gets through again.
    trouble: Option<String>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Producer {
    /// A producer for `topic`, whose metadata must already be known.
    pub fn new(cluster: Arc<Cluster>, meta: Arc<TopicMeta>, cfg: ProducerConfig) -> Self {
        let n = meta.partitions.len().max(1);
        Producer {
            cluster,
            topic: meta.name.clone(),
            queues: (0..n).map(|_| PartitionQueue::default()).collect(),
            sticky: fastrand::i32(0..n as i32),
            meta,
            cfg,
            buffered: 0,
            in_flight: HashMap::new(),
            tasks: JoinSet::new(),
            refresh: None,
            compressor: Compressor::default(),
            fatal: None,
            pid: None,
            next_seq: vec![0; n],
            reset_pid: false,
            trouble: None,
        }
    }

    /// Gets a producer id when idempotence is on (and acks=all); call once before appending.
    pub async fn init(&mut self) -> Result<(), Error> {
        if self.cfg.idempotence && self.cfg.acks == -1 {
            self.pid = Some(self.cluster.init_producer_id().await?);
            self.next_seq.iter_mut().for_each(|s| *s = 0);
            crate::log::debug(format_args!("idempotent producer id {:?}", self.pid));
        }
        Ok(())
    }

    /// Why deliveries are being retried right now, if they are: for a caller to say so once.
    pub fn trouble(&self) -> Option<&str> {
        self.trouble.as_deref()
    }

    /// Whether batches carry a producer id and sequences.
    pub fn is_idempotent(&self) -> bool {
        self.pid.is_some()
    }

    /// Number of partitions of the topic.
    pub fn partition_count(&self) -> usize {
        self.queues.len()
    }

    /// Bytes appended and not yet delivered.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Whether the buffer bound is reached: stop appending and [`Producer::drive`] until it is not.
    pub fn is_full(&self) -> bool {
        self.buffered >= self.cfg.buffer_bytes
    }

    /// Whether nothing is buffered or in flight.
    pub fn is_idle(&self) -> bool {
        self.buffered == 0 && self.tasks.is_empty()
    }

    /// The largest value (with the given key and headers) that fits in a batch of its own.
    pub fn max_value_bytes(&self, key_len: usize, headers_len: usize) -> usize {
        // Header, record length and field varints take at most ~40 bytes.
        self.cfg
            .max_message_bytes
            .saturating_sub(records::BATCH_HEADER_BYTES + 40 + key_len + headers_len)
    }

    fn choose_partition(&mut self, key: Option<&[u8]>) -> i32 {
        let n = self.queues.len();
        if let Some(p) = self.cfg.partition {
            return p;
        }
        match (self.cfg.partitioner, key) {
            (Partitioner::Default | Partitioner::Murmur2, Some(k)) => partition_for_key(k, n),
            (Partitioner::Random, _) => fastrand::i32(0..n as i32),
            _ => self.sticky,
        }
    }

    /// Moves the sticky partition on, to a different partition when there is more than one.
    fn next_sticky(&mut self) {
        let n = self.queues.len() as i32;
        if n > 1 {
            self.sticky = (self.sticky + fastrand::i32(1..n)) % n;
        }
    }

    /// Adds one record. `token` comes back in the [`Delivery`] of its batch.
    pub fn append(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
        timestamp_ms: i64,
        token: u64,
    ) -> Result<i32, RecordTooLarge> {
        let p = self.choose_partition(key);
        let idx = p as usize;
        let limit = self.cfg.batch_bytes.min(self.cfg.max_message_bytes);
        if let Some(open) = &self.queues[idx].open {
            let add = open.builder.record_size(timestamp_ms, key, value, headers);
            if open.builder.len(&open.buf) + add > limit {
                self.seal(idx);
            }
        }
        let q = &mut self.queues[idx];
        let open = q.open.get_or_insert_with(|| {
            // Full size at once: untouched pages cost no memory, and growth by doubling would copy.
            let mut buf = BytesMut::with_capacity(limit + 64);
            let builder = BatchBuilder::begin(&mut buf, timestamp_ms);
            OpenBatch {
                buf,
                builder,
                tokens: Vec::new(),
                created: Instant::now(),
            }
        });
        let add = open.builder.record_size(timestamp_ms, key, value, headers);
        if open.builder.is_empty() && records::BATCH_HEADER_BYTES + add > self.cfg.max_message_bytes
        {
            return Err(RecordTooLarge {
                size: records::BATCH_HEADER_BYTES + add,
                limit: self.cfg.max_message_bytes,
            });
        }
        open.builder
            .push(&mut open.buf, timestamp_ms, key, value, headers);
        open.tokens.push(token);
        self.buffered += add;
        if open.builder.len(&open.buf) >= limit {
            self.seal(idx);
        }
        Ok(p)
    }

    /// Closes the open batch of partition `idx` and queues it for sending.
    fn seal(&mut self, idx: usize) {
        let Some(open) = self.queues[idx].open.take() else {
            return;
        };
        let OpenBatch {
            mut buf,
            builder,
            tokens,
            ..
        } = open;
        let before = buf.len();
        match builder.finish(
            &mut buf,
            self.cfg.compression,
            self.cfg.compression_level,
            ProducerStamp::NONE,
            &mut self.compressor,
        ) {
            Ok(_) => {
                // `buffered` counted the records as appended; now count the sealed (maybe compressed) batch.
                self.buffered = self.buffered + buf.len() - (before - records::BATCH_HEADER_BYTES);
                self.queues[idx].ready.push_back(Sealed {
                    bytes: buf.freeze(),
                    tokens,
                    stamped: false,
                    first_failure: None,
                    last_error: None,
                });
            }
            Err(e) => self.fatal = Some(Error::Compression(e)),
        }
        if idx as i32 == self.sticky && self.cfg.partition.is_none() {
            self.next_sticky();
        }
    }

    /// Seals every open batch now, without waiting for linger.
    pub fn seal_all(&mut self) {
        for i in 0..self.queues.len() {
            self.seal(i);
        }
    }

    /// Seals lingered batches, sends what is ready, and waits for one event: a response, a linger or
    /// retry deadline. Deliveries are pushed to `out`. Returns an error only when the run must stop.
    pub async fn drive(&mut self, out: &mut Vec<Delivery>) -> Result<(), Error> {
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        if self.reset_pid && self.tasks.is_empty() {
            // Every batch is back in its queue now; restamp them all under a new producer id.
            self.init().await?;
            self.reset_pid = false;
            crate::log::warn(format_args!(
                "topic '{}': new idempotent producer id {:?}; batches retried after this may be duplicates",
                self.topic, self.pid
            ));
        }
        let now = Instant::now();
        for i in 0..self.queues.len() {
            if self.queues[i]
                .open
                .as_ref()
                .is_some_and(|o| now.duration_since(o.created) >= self.cfg.linger)
            {
                self.seal(i);
            }
        }
        self.dispatch(out).await?;
        let deadline = self.next_deadline();
        tokio::select! {
            Some(res) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                match res {
                    Ok(outcome) => self.complete(outcome, out),
                    Err(e) => panic!("produce task failed: {e}"),
                }
            }
            _ = async {
                match &mut self.refresh {
                    Some(h) => { let _ = h.await; }
                    None => std::future::pending::<()>().await,
                }
            }, if self.refresh.is_some() => {
                self.refresh = None;
                if let Some(m) = self.cluster.cached_topic(&self.topic) { self.meta = m; }
            }
            _ = sleep_until(deadline) => {}
        }
        Ok(())
    }

    /// Sends everything and waits until every record is delivered (or failed).
    pub async fn flush(&mut self, out: &mut Vec<Delivery>) -> Result<(), Error> {
        while !self.is_idle() {
            self.seal_all();
            self.drive(out).await?;
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        for q in &self.queues {
            let c = q.open.as_ref().map(|o| o.created + self.cfg.linger);
            for t in [c, q.retry_at.filter(|_| !q.ready.is_empty())]
                .into_iter()
                .flatten()
            {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        }
        d
    }

    fn start_refresh(&mut self) {
        if self.refresh.is_some() {
            return;
        }
        let cluster = self.cluster.clone();
        let topic = self.topic.clone();
        let generation = cluster.generation();
        self.refresh = Some(tokio::spawn(async move {
            if let Err(e) = cluster.refresh(&topic, generation).await {
                crate::log::warn(format_args!("metadata refresh for '{topic}' failed: {e}"));
            }
        }));
    }

    /// Builds one request per leader from the front batch of each ready partition and spawns its send.
    async fn dispatch(&mut self, out: &mut Vec<Delivery>) -> Result<(), Error> {
        let now = Instant::now();
        let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready.is_empty() || q.in_flight || q.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let leader = self.meta.partitions.get(i).map_or(-1, |p| p.leader);
            by_leader.entry(leader).or_default().push(i as i32);
        }
        if by_leader.contains_key(&-1) {
            self.start_refresh();
            by_leader.remove(&-1);
        }
        for (leader, parts) in by_leader {
            if self.in_flight.get(&leader).copied().unwrap_or(0) >= self.cfg.max_in_flight {
                continue;
            }
            let conn = match self.cluster.broker(leader).await {
                Ok(c) => c,
                Err(e) => {
                    crate::log::debug(format_args!("broker {leader}: {e}"));
                    for p in parts {
                        self.fail_attempt(p, e.to_string_error(), out);
                    }
                    self.start_refresh();
                    continue;
                }
            };
            let version = conn.version::<ProduceRequest>(PRODUCE_VERSIONS)?;
            let mut batches = Vec::with_capacity(parts.len());
            let mut pdata = Vec::with_capacity(parts.len());
            for p in parts {
                let q = &mut self.queues[p as usize];
                let Some(mut b) = q.ready.pop_front() else {
                    continue;
                };
                if let (Some((id, epoch)), false) = (self.pid, b.stamped) {
                    let seq = &mut self.next_seq[p as usize];
                    let s = ProducerStamp {
                        producer_id: id,
                        producer_epoch: epoch,
                        base_sequence: *seq,
                    };
                    b.bytes = stamp(b.bytes, s);
                    // Sequences wrap to 0 after i32::MAX, as the broker expects.
                    *seq = ((*seq as i64 + b.tokens.len() as i64) % (i32::MAX as i64 + 1)) as i32;
                    b.stamped = true;
                }
                q.in_flight = true;
                let mut d = PartitionProduceData::default();
                d.index = p;
                d.records = Some(b.bytes.clone());
                pdata.push(d);
                batches.push((p, b));
            }
            let mut td = TopicProduceData::default();
            td.name = TopicName(StrBytes::from_string(self.topic.clone()));
            td.partition_data = pdata;
            let mut req = ProduceRequest::default();
            req.acks = self.cfg.acks;
            req.timeout_ms = self.cfg.ack_timeout_ms;
            req.topic_data = vec![td];
            *self.in_flight.entry(leader).or_default() += 1;
            let acks = self.cfg.acks;
            self.tasks.spawn(async move {
                let res = async {
                    let pending = conn.send(&req, version, acks != 0).await?;
                    match pending {
                        None => Ok(None),
                        Some(p) => {
                            let frame = conn.wait(p).await?;
                            conn.decode::<ProduceRequest>(frame, version).map(Some)
                        }
                    }
                }
                .await;
                (leader, batches, res)
            });
        }
        Ok(())
    }

    /// Handles one finished request.
    fn complete(&mut self, (leader, batches, res): Outcome, out: &mut Vec<Delivery>) {
        if let Some(n) = self.in_flight.get_mut(&leader) {
            *n = n.saturating_sub(1);
        }
        let resp = match res {
            Ok(r) => r,
            Err(e) => {
                crate::log::debug(format_args!("produce to broker {leader} failed: {e}"));
                let stale = e.is_retriable();
                for (p, b) in batches {
                    self.queues[p as usize].in_flight = false;
                    self.retry_or_fail(p, b, e.to_string_error(), out);
                }
                if stale {
                    self.start_refresh();
                }
                return;
            }
        };
        let mut results: HashMap<i32, (i16, i64, i32, i32)> = HashMap::new();
        if let Some(resp) = resp {
            for t in resp.responses {
                for pr in t.partition_responses {
                    results.insert(
                        pr.index,
                        (
                            pr.error_code,
                            pr.base_offset,
                            pr.current_leader.leader_id.0,
                            pr.current_leader.leader_epoch,
                        ),
                    );
                }
            }
            for ep in resp.node_endpoints {
                self.cluster
                    .add_broker(ep.node_id.0, format!("{}:{}", ep.host, ep.port));
            }
        }
        for (p, b) in batches {
            self.queues[p as usize].in_flight = false;
            let (code, base_offset, hint_leader, hint_epoch) = if self.cfg.acks == 0 {
                (0, -1, -1, -1)
            } else {
                results.get(&p).copied().unwrap_or((-1, -1, -1, -1))
            };
            // DUPLICATE_SEQUENCE_NUMBER: the broker already has this batch (an earlier try was written).
            if code == 0 || (code == 46 && self.pid.is_some()) {
                let q = &mut self.queues[p as usize];
                q.backoff = None;
                q.retry_at = None;
                self.trouble = None;
                self.buffered = self.buffered.saturating_sub(b.bytes.len());
                out.push(Delivery {
                    partition: p,
                    base_offset,
                    tokens: b.tokens,
                    error: None,
                });
                continue;
            }
            let err = Error::Kafka {
                context: format!("topic '{}' partition {p}: Produce", self.topic),
                code,
            };
            if hint_leader >= 0 {
                self.cluster
                    .set_leader(&self.topic, p, hint_leader, hint_epoch);
                if let Some(m) = self.cluster.cached_topic(&self.topic) {
                    self.meta = m;
                }
            } else if is_stale_metadata_code(code) {
                self.start_refresh();
            }
            if self.pid.is_some() && matches!(code, 45 | 47 | 59 | 90) {
                // OUT_OF_ORDER_SEQUENCE, INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID, PRODUCER_FENCED:
                // the broker lost our producer state. Start a new producer id and resend.
                self.reset_pid = true;
                let mut b = b;
                b.stamped = false;
                self.queues[p as usize].ready.push_front(b);
                continue;
            }
            if code == 10 && b.tokens.len() > 1 {
                self.split(p, b);
                continue;
            }
            self.retry_or_fail(p, b, err, out);
        }
    }

    /// Splits a batch the broker found too large into two, keeping record order; the new halves go to
    /// the front of the queue.
    /// A stamped batch that will not be written gives its sequence numbers back, so the next batch of
    /// the partition continues where the broker expects (one batch per partition is in flight).
    fn release_sequence(&mut self, p: i32, b: &Sealed) {
        if b.stamped && self.pid.is_some() && b.bytes.len() >= records::BATCH_HEADER_BYTES {
            let s = &b.bytes[53..57];
            self.next_seq[p as usize] = i32::from_be_bytes([s[0], s[1], s[2], s[3]]);
        }
    }

    fn split(&mut self, p: i32, b: Sealed) {
        self.release_sequence(p, &b);
        let halves = match split_batch(&b.bytes, &self.cfg, &mut self.compressor) {
            Ok(h) => h,
            Err(e) => {
                self.fatal = Some(e);
                return;
            }
        };
        let q = &mut self.queues[p as usize];
        let mut tokens = b.tokens;
        let rest = tokens.split_off(halves.0 .1);
        let before = b.bytes.len();
        let after = halves.0 .0.len() + halves.1 .0.len();
        q.ready.push_front(Sealed {
            bytes: halves.1 .0,
            tokens: rest,
            stamped: false,
            first_failure: b.first_failure,
            last_error: None,
        });
        q.ready.push_front(Sealed {
            bytes: halves.0 .0,
            tokens,
            stamped: false,
            first_failure: b.first_failure,
            last_error: None,
        });
        self.buffered = (self.buffered + after).saturating_sub(before);
        crate::log::debug(format_args!("partition {p}: batch too large, split in two"));
    }

    fn fail_attempt(&mut self, p: i32, err: Error, out: &mut Vec<Delivery>) {
        if let Some(b) = self.queues[p as usize].ready.pop_front() {
            self.retry_or_fail(p, b, err, out);
        }
    }

    /// Requeues a failed batch (same bytes) with backoff, or reports it failed when the error is fatal
    /// for the batch or its delivery timeout has passed.
    fn retry_or_fail(&mut self, p: i32, mut b: Sealed, err: Error, out: &mut Vec<Delivery>) {
        let now = Instant::now();
        let first = *b.first_failure.get_or_insert(now);
        let expired = self
            .cfg
            .delivery_timeout
            .is_some_and(|t| now.duration_since(first) >= t);
        let retriable = match &err {
            Error::Kafka { code, .. } => is_retriable_code(*code),
            e => e.is_retriable(),
        };
        if retriable && !expired {
            crate::log::debug(format_args!("partition {p}: will retry: {err}"));
            self.trouble = Some(err.to_string());
            b.last_error = Some(err);
            let q = &mut self.queues[p as usize];
            let delay = q
                .backoff
                .get_or_insert_with(|| Backoff::new(None))
                .next_delay()
                .unwrap_or(Duration::from_secs(1));
            q.retry_at = Some(now + delay);
            q.ready.push_front(b);
            return;
        }
        self.release_sequence(p, &b);
        self.buffered = self.buffered.saturating_sub(b.bytes.len());
        out.push(Delivery {
            partition: p,
            base_offset: -1,
            tokens: b.tokens,
            error: Some(if expired {
                Error::Deadline {
                    ms: now.duration_since(first).as_millis() as u64,
                    last: Box::new(err),
                }
            } else {
                err
            }),
        });
    }
}

/// Turns a reference-holding error into an owned one for a second batch (errors are not `Clone`).
trait ToStringError {
    fn to_string_error(&self) -> Error;
}

impl ToStringError for Error {
    fn to_string_error(&self) -> Error {
        match self {
            Error::Kafka { context, code } => Error::Kafka {
                context: context.clone(),
                code: *code,
            },
            e if e.is_retriable() => Error::NoBroker(e.to_string()),
            e => Error::Failed(e.to_string()),
        }
    }
}

/// One half of a split batch: its bytes and record count.
type BatchHalf = (Bytes, usize);

/// Re-encodes a sealed batch as two batches of about half the records each. Returns each half's bytes
/// and record count.
fn split_batch(
    bytes: &[u8],
    cfg: &ProducerConfig,
    compressor: &mut Compressor,
) -> Result<(BatchHalf, BatchHalf), Error> {
    let rec_err = |source| Error::Records {
        topic: String::new(),
        partition: -1,
        source,
    };
    let mut it = records::split_batches(bytes);
    let (h, batch) = it
        .next()
        .ok_or(rec_err(records::RecordError::Truncated("own batch")))?
        .map_err(rec_err)?;
    let mut dec = Vec::new();
    let section = records::records_section(&h, batch, &mut dec, usize::MAX).map_err(rec_err)?;
    let recs: Vec<_> = records::records(&h, section)
        .collect::<Result<_, _>>()
        .map_err(rec_err)?;
    let mid = recs.len() / 2;
    let mut halves = Vec::with_capacity(2);
    for part in [&recs[..mid], &recs[mid..]] {
        let mut buf = BytesMut::new();
        let mut b = BatchBuilder::begin(&mut buf, part.first().map_or(0, |r| r.timestamp));
        for r in part {
            let hs: Vec<Header<'_>> = r.headers().collect();
            b.push(&mut buf, r.timestamp, r.key, r.value, &hs);
        }
        b.finish(
            &mut buf,
            cfg.compression,
            cfg.compression_level,
            ProducerStamp::NONE,
            compressor,
        )?;
        halves.push((buf.freeze(), part.len()));
    }
    let second = halves.pop().expect("two halves");
    let first = halves.pop().expect("two halves");
    Ok((first, second))
}

/// Stamps a batch for idempotence, in place when its buffer is not shared (it never is before the first
/// send).
fn stamp(bytes: Bytes, s: ProducerStamp) -> Bytes {
    let mut m = bytes
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    records::restamp(&mut m, s);
    m.freeze()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Wall-clock milliseconds, the timestamp records get when read.
pub fn timestamp_now_ms() -> i64 {
    now_ms()
}

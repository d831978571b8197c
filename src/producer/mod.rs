//! The producer engine: records appended into per-partition batches ([`accumulator`]), stamped for
//! idempotence ([`sequence`]), and shipped in one Produce request per leader broker ([`sender`]), with
//! several requests in flight per broker, retries that resend the same bytes, and a delivery report
//! per batch.
//!
//! The engine does no I/O of its own input: callers [`Producer::append`] records and call
//! [`Producer::drive`] to send and collect deliveries. `drive` is cancel-safe: requests, metadata
//! refreshes and producer-id requests run as tasks of their own, so dropping a `drive` future never
//! tears a request or loses a response.
//!
//! Every failure is classified once ([`crate::error::classify`]): retriable errors are retried with
//! backoff (after a metadata refresh when the leader may have moved); records the broker refuses
//! themselves are split until the refused one is alone, which is then reported failed; producer-state
//! errors take a new producer id; anything else either fails the batch (a one-shot command) or is
//! retried with a longer backoff (`tail`, where the file is the buffer). With a delivery timeout, a
//! batch not acknowledged that long after its first record was appended fails with the last error.
//!
//! (Over 500 lines: `Producer` is one state machine — batches, in-flight requests, producer id and
//! retry decisions all read and change the same per-partition state; its parts that stand alone already
//! live in the submodules.)

pub mod accumulator;
mod background;
pub mod sender;
pub mod sequence;
mod settle;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::backoff::Backoff;
pub use crate::backoff::{TroubleNews, TroubleWatch};
use crate::cluster::{Cluster, TopicMeta};
use crate::error::Error;
use crate::escape::Esc;
use crate::partitioner::Partitioner;
use crate::tasks::{join_slot, sleep_until};
use crate::wire::compression::{Compression, Compressor};
use crate::wire::records::{self, Header};
use accumulator::{Accumulator, Batch, BatchConfig, Body};
pub use accumulator::{Appended, RecordTooLarge, SourcePos, POSITION_HEADER};
use sender::{Completed, InFlight};
use sequence::Sequences;

/// Broker default `message.max.bytes`: the largest batch a default topic accepts.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// How much longer than its ack timeout one Produce request is waited for (transit, a busy broker).
const ATTEMPT_MARGIN: Duration = Duration::from_secs(1);

/// What to do with a batch that fails with an error retrying will not soon fix (authorization, an
/// unknown server error, a response that makes no sense).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPermanent {
    /// Report the batch failed (a one-shot command: the user sees the error and exit code 1).
    Fail,
    /// Keep retrying with a growing backoff (a log shipper: the file is the buffer, and an ACL or a
    /// broker may be fixed an hour later).
    Retry,
}

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
    /// Fail a batch not acknowledged this long after its first record was appended; `None` = never.
    pub delivery_timeout: Option<Duration>,
    /// Largest batch the topic accepts.
    pub max_message_bytes: usize,
    /// Idempotent produce (producer id and sequence numbers): retries cannot duplicate. Needs acks=all;
    /// ignored otherwise.
    pub idempotence: bool,
    /// What a permanent error does to a batch.
    pub on_permanent: OnPermanent,
    /// Ask the broker to create topics asked for by name that do not exist (if it allows).
    pub auto_create_topics: bool,
    /// Exactly-once: when the broker loses or fences the producer state, stop with
    /// [`Error::ProducerStateLost`] instead of taking a new producer id.
    pub stop_on_state_loss: bool,
}

/// The runtime's timer resolution: a sleep ends up to this much after its deadline.
const TIMER_TICK: Duration = Duration::from_millis(1);

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            compression: Compression::None,
            compression_level: None,
            linger: Duration::from_millis(2),
            batch_bytes: 1_000_000,
            max_in_flight: 5,
            buffer_bytes: 4 * 1024 * 1024,
            partition: None,
            partitioner: Partitioner::Default,
            ack_timeout_ms: 10_000,
            delivery_timeout: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            idempotence: true,
            on_permanent: OnPermanent::Fail,
            auto_create_topics: true,
            stop_on_state_loss: false,
        }
    }
}

/// The outcome of one batch: its records' tokens, in order, and where they landed or why not.
#[derive(Debug)]
pub struct Delivery {
    /// Topic index (from [`Producer::add_topic`]).
    pub topic: usize,
    /// Partition of the batch.
    pub partition: i32,
    /// Offset of the first record (-1 with acks=0 or on error).
    pub base_offset: i64,
    /// The caller's tokens of the batch's records, in record order.
    pub tokens: Vec<u64>,
    /// Why the batch was not written, if it was not.
    pub error: Option<Error>,
    /// The batch's bytes when it was not written (for a dead-letter file).
    pub batch: Option<bytes::Bytes>,
    /// Failed, but an attempt went unanswered after it was sent: Kafka may hold the records.
    pub maybe_written: bool,
    /// Acknowledged, after an earlier attempt went unanswered once sent, by a producer that is not
    /// idempotent: Kafka may hold the records twice.
    pub resent: bool,
}

/// Per partition, the last error while its front batch is failing.
type Failing = HashMap<(usize, i32), Error>;

/// Batches records for some topics and ships them to the partition leaders.
pub struct Producer {
    cluster: Arc<Cluster>,
    cfg: ProducerConfig,
    acc: Accumulator,
    seq: Sequences,
    compressor: Compressor,
    tasks: JoinSet<Completed>,
    requests_in_flight: HashMap<i32, usize>,
    throttled: HashMap<i32, Instant>,
    stale: BTreeSet<usize>,
    refresh: Option<JoinHandle<background::Refreshed>>,
    /// Topics the last metadata refresh found gone (deleted, not created again).
    gone: BTreeSet<usize>,
    refresh_backoff: Backoff,
    refresh_not_before: Option<Instant>,
    pid_task: Option<JoinHandle<Result<(i64, i16), Error>>>,
    pid_not_before: Option<Instant>,
    failing: Failing,
    /// Per partition, why its last batch failed for good, until one is acknowledged: the cause
    /// named for a batch that then expires waiting behind it (it was named "no available leader"),
    /// or whose attempt was cut to what was left of its timeout.
    last_failed: Failing,
    last_reset_warning: Option<Instant>,
    fatal: Option<Error>,
    /// Topics asked for by name whose metadata is being fetched (or retried later).
    pending: HashMap<String, PendingTopic>,
    resolving: JoinSet<(String, Result<Arc<TopicMeta>, Error>)>,
    /// Topics that became ready since the caller last asked.
    newly_ready: Vec<String>,
    stats: ProducerStats,
}

/// What the producer measured, for metrics.
#[derive(Debug, Clone)]
pub struct ProducerStats {
    /// Bytes of each batch when first sent (after compression).
    pub batch_bytes: crate::metrics::Histogram,
    /// Seconds from sending a Produce request (connecting included) to its response.
    pub request_seconds: crate::metrics::Histogram,
    /// Produce requests completed (answered or failed).
    pub requests: u64,
    /// Produce requests that failed as a whole (connection, timeout).
    pub request_errors: u64,
    /// Batches put back to be sent again.
    pub retries: u64,
    /// Batches a Produce response refused, by Kafka's error name (`TOPIC_AUTHORIZATION_FAILED`,
    /// `NOT_LEADER_OR_FOLLOWER`): a request answered whose every partition was refused is no
    /// request error (t30 F3: 25 s of ACL refusals left every counter but the retries at 0).
    pub partition_errors: std::collections::BTreeMap<String, u64>,
}

impl Default for ProducerStats {
    fn default() -> Self {
        ProducerStats {
            batch_bytes: crate::metrics::Histogram::new(&[
                1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
            ]),
            request_seconds: crate::metrics::Histogram::new(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            requests: 0,
            request_errors: 0,
            retries: 0,
            partition_errors: std::collections::BTreeMap::new(),
        }
    }
}

/// A topic asked for by name, not yet known.
struct PendingTopic {
    /// When to ask again (after a failure).
    not_before: Option<Instant>,
    backoff: Backoff,
    in_flight: bool,
    /// Why it is not ready, once an attempt failed.
    error: Option<Error>,
    /// When it was first asked for.
    since: Instant,
}

/// Where a topic asked for by name stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicState {
    /// Known: its index for [`Producer::append`].
    Ready(usize),
    /// Its metadata is being fetched (or retried: the text says why it is not ready).
    Pending(Option<String>),
}

impl Producer {
    /// A producer on `cluster`; add topics with [`Producer::add_topic`].
    pub fn new(cluster: Arc<Cluster>, cfg: ProducerConfig) -> Self {
        let acc = Accumulator::new(BatchConfig {
            linger: cfg.linger,
            batch_bytes: cfg.batch_bytes,
            max_message_bytes: cfg.max_message_bytes,
            partition: cfg.partition,
            partitioner: cfg.partitioner,
        });
        Producer {
            cluster,
            cfg,
            acc,
            seq: Sequences::new(),
            compressor: Compressor::default(),
            tasks: JoinSet::new(),
            requests_in_flight: HashMap::new(),
            throttled: HashMap::new(),
            stale: BTreeSet::new(),
            refresh: None,
            gone: BTreeSet::new(),
            refresh_backoff: Backoff::new(None),
            refresh_not_before: None,
            pid_task: None,
            pid_not_before: None,
            failing: HashMap::new(),
            last_failed: HashMap::new(),
            last_reset_warning: None,
            fatal: None,
            pending: HashMap::new(),
            resolving: JoinSet::new(),
            newly_ready: Vec::new(),
            stats: ProducerStats::default(),
        }
    }

    /// What was measured so far.
    pub fn stats(&self) -> &ProducerStats {
        &self.stats
    }

    /// A producer for one topic whose metadata is known (topic index 0).
    pub fn for_topic(cluster: Arc<Cluster>, meta: Arc<TopicMeta>, cfg: ProducerConfig) -> Self {
        let mut p = Producer::new(cluster, cfg);
        p.add_topic(meta);
        p
    }

    /// Adds a topic whose metadata is known; returns its index for [`Producer::append`].
    pub fn add_topic(&mut self, meta: Arc<TopicMeta>) -> usize {
        self.acc.add_topic(meta)
    }

    /// The index of a topic already added.
    pub fn topic_index(&self, name: &str) -> Option<usize> {
        self.acc.topics.iter().position(|t| t.name == name)
    }

    /// A topic by name: ready (its index), or pending while [`Producer::drive`] fetches its metadata
    /// in the background (creating it when the broker allows), retrying with a backoff when it cannot.
    pub fn topic(&mut self, name: &str) -> TopicState {
        if let Some(i) = self.topic_index(name) {
            return TopicState::Ready(i);
        }
        let p = self
            .pending
            .entry(name.to_string())
            .or_insert_with(|| PendingTopic {
                not_before: None,
                backoff: Backoff::with(Duration::from_millis(500), Duration::from_secs(30), None),
                in_flight: false,
                error: None,
                since: Instant::now(),
            });
        TopicState::Pending(p.error.as_ref().map(|e| e.to_string()))
    }

    /// Stops looking up the topics asked for by name that `keep` does not keep (no line waits for
    /// them any more: a reload removed or re-routed their input), so they are no longer reported
    /// as waited for.
    pub fn forget_topics(&mut self, keep: impl Fn(&str) -> bool) {
        self.pending.retain(|name, _| keep(name));
    }

    /// Topics that became ready since the last call: known at last, or held back (see
    /// [`Producer::holds_back`]) and no longer.
    pub fn take_newly_ready(&mut self) -> Vec<String> {
        for t in 0..self.acc.topics.len() {
            if self.acc.topics[t].held && !self.must_hold(t) {
                self.acc.topics[t].held = false;
                let name = self.acc.topics[t].name.clone();
                self.newly_ready.push(name);
            }
        }
        std::mem::take(&mut self.newly_ready)
    }

    /// Whether records for topic `t` are held back now. One topic may take at most
    /// 1 - 1/[`HELD_SHARE`] of the buffer, and one in trouble (a partition failing, or nothing
    /// of it acknowledged yet) no more than one record of the last 1/[`HELD_SHARE`]: that stays for
    /// the topics that work.
    /// Without this, a topic whose deliveries fail for as long as it lasts (the ACLs refuse writes to
    /// it, Kafka refuses it, it lacks in-sync replicas) filled the buffer with its records, and every
    /// file of every topic stopped. A caller holds back what it would append (its lines wait in their
    /// files) until [`Producer::take_newly_ready`] names the topic again.
    pub fn holds_back(&mut self, t: usize) -> bool {
        let hold = self.must_hold(t);
        if let Some(q) = self.acc.topics.get_mut(t) {
            q.held |= hold;
        }
        hold
    }

    /// Whether nothing more of topic `t` may be appended now: the buffer is full, or the topic is
    /// held back (see [`Producer::holds_back`]).
    pub fn is_full_for(&self, t: usize) -> bool {
        self.is_full() || self.must_hold(t)
    }

    /// See [`Producer::holds_back`].
    fn must_hold(&self, t: usize) -> bool {
        // Whether or not other topics are known yet: a file of another topic may come (a template
        // making one of a new file's name), or its topic be still looked up while this one fills
        // the buffer (a broker test lost that race).
        let most = self.cfg.buffer_bytes - self.cfg.buffer_bytes / HELD_SHARE;
        self.acc.topics.get(t).is_some_and(|q| {
            q.buffered >= most
                || (self.acc.buffered >= most
                    && q.buffered > 0
                    && (!q.proven || self.failing.keys().any(|&(ft, _)| ft == t)))
        })
    }

    /// The name of topic `i`.
    pub fn topic_name(&self, i: usize) -> &str {
        self.acc.topics.get(i).map_or("", |t| t.name.as_str())
    }

    /// Gets a producer id when idempotence is on (and acks=all), retrying until the cluster's retry
    /// limit; call once before appending.
    pub async fn init(&mut self) -> Result<(), Error> {
        if self.cfg.idempotence && self.cfg.acks == -1 {
            let pid = self
                .cluster
                .init_producer_id(self.cluster.options().deadline())
                .await?;
            self.seq.set_pid(pid);
            crate::log::debug(format_args!("idempotent producer id {pid:?}"));
        }
        Ok(())
    }

    /// The cluster it writes to.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.cluster.clone()
    }

    /// The producer id and epoch batches are stamped with now, if idempotent.
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        self.seq.pid()
    }

    /// Why deliveries are failing right now, if they are: for a caller to say so once.
    pub fn trouble(&self) -> Option<String> {
        self.trouble_since().map(|(e, _)| e)
    }

    /// Why deliveries are failing right now, and since when: a batch failing, or a request the
    /// broker has held for [`HELD_AFTER`] (a hung broker is said while it hangs, not once the
    /// request times out: t11, t10).
    pub fn trouble_since(&self) -> Option<(String, Instant)> {
        let parts = || self.acc.topics.iter().flat_map(|t| t.parts.iter());
        if let Some(e) = self.failing.values().next() {
            let since = parts().filter_map(|q| q.failing_since).min();
            return Some((e.to_string(), since.unwrap_or_else(Instant::now)));
        }
        let now = Instant::now();
        let (t, p, sent) = self
            .acc
            .topics
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                t.parts
                    .iter()
                    .enumerate()
                    .filter(|(_, q)| q.in_flight)
                    .filter_map(move |(p, q)| Some((i, p, q.sent_at?)))
            })
            .filter(|(_, _, s)| now.saturating_duration_since(*s) >= HELD_AFTER)
            .min_by_key(|(_, _, s)| *s)?;
        let leader = self.acc.topics[t].meta.leader(p as i32);
        let addr = self
            .cluster
            .broker_addr(leader)
            .unwrap_or_else(|| format!("id {leader}"));
        Some((
            format!(
                "broker {} has not answered a Produce for {} s",
                Esc::str(&addr),
                now.saturating_duration_since(sent).as_secs()
            ),
            sent,
        ))
    }

    /// The topic asked for by name that has waited longest and failed (it does not exist and may not
    /// be created, or may not be described): its name, how long, and why. Lines for it wait.
    pub fn topic_waiting(&self) -> Option<(&str, Duration, String)> {
        self.pending
            .iter()
            .filter_map(|(name, p)| Some((name.as_str(), p.since.elapsed(), p.error.as_ref()?)))
            .max_by_key(|(_, waited, _)| *waited)
            .map(|(name, waited, e)| (name, waited, e.to_string()))
    }

    /// How long a record may wait to be acknowledged before it fails (`None`: for ever).
    pub fn delivery_timeout(&self) -> Option<Duration> {
        self.cfg.delivery_timeout
    }

    /// Whether batches carry a producer id and sequences.
    pub fn is_idempotent(&self) -> bool {
        self.seq.is_idempotent()
    }

    /// Number of partitions of topic `i`.
    pub fn partition_count(&self, i: usize) -> usize {
        self.acc.topics.get(i).map_or(0, |t| t.parts.len())
    }

    /// Bytes appended and not yet delivered.
    pub fn buffered_bytes(&self) -> usize {
        self.acc.buffered
    }

    /// Whether the buffer bound is reached: stop appending and [`Producer::drive`] until it is not.
    pub fn is_full(&self) -> bool {
        self.acc.buffered >= self.cfg.buffer_bytes
    }

    /// Stops waiting for topics not known yet: at shutdown nothing waits on them (their lines wait
    /// in their files), and a flush would otherwise wait for a topic that may never come (t15: a
    /// SIGTERM took the whole shutdown timeout for a topic missing under auto_create_topics = false).
    pub fn forget_pending_topics(&mut self) {
        self.pending.clear();
    }

    /// Whether nothing is buffered or in flight (topics being looked up count as work).
    pub fn is_idle(&self) -> bool {
        self.acc.is_empty() && self.tasks.is_empty() && self.pending.is_empty()
    }

    /// Until when new input may wait to be read: while an open batch lingers (or a retry is due)
    /// within one linger from `now`, what is read before its end still goes in the same batch, so a
    /// reader that waits is woken about once per linger instead of once per write. It ends a timer
    /// tick before that deadline: the runtime's timers fire up to a millisecond late, and input read
    /// in that last tick (woken by the input itself, as without waiting) seals the batch as soon as
    /// its linger is over.
    pub fn gather_until(&self, now: Instant) -> Option<Instant> {
        let d = self.acc.next_deadline(now)?;
        (d <= now + self.cfg.linger && d > now + TIMER_TICK).then(|| d - TIMER_TICK)
    }

    /// The largest record batch sent (`--max-message-bytes`).
    pub fn max_message_bytes(&self) -> usize {
        self.cfg.max_message_bytes
    }

    /// The largest value a record without key or headers can carry: alone in a batch, that batch is
    /// at most `--max-message-bytes` (the check [`Producer::append`] makes). A key or headers take
    /// their own bytes from it.
    pub fn max_value_bytes(&self) -> usize {
        max_value_bytes(self.cfg.max_message_bytes)
    }

    /// Whether a record with `key`, `headers` and a value of one byte fits alone in a batch of at
    /// most `--max-message-bytes` (with no room for one, every line would be cut to nothing: t33 F4).
    pub fn fits_alone(&self, key: Option<&[u8]>, headers: &[Header<'_>]) -> bool {
        max_value_beside(self.cfg.max_message_bytes, key, headers) > 0
    }

    /// Adds one record to topic `topic`. `token` comes back in the [`Delivery`] of its batch. Until the
    /// next append, [`Producer::undo_last`] can take it back.
    pub fn append(
        &mut self,
        topic: usize,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
        timestamp_ms: i64,
        token: u64,
    ) -> Result<Appended, RecordTooLarge> {
        self.acc
            .append_at(topic, key, value, headers, timestamp_ms, token, None)
    }

    /// Like [`Producer::append`], for a record from `pos` in its source (exactly-once): it goes to
    /// its source's partition and carries its position where the batch needs it.
    #[allow(clippy::too_many_arguments)]
    pub fn append_at(
        &mut self,
        topic: usize,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
        timestamp_ms: i64,
        token: u64,
        pos: Option<&SourcePos<'_>>,
    ) -> Result<Appended, RecordTooLarge> {
        self.acc
            .append_at(topic, key, value, headers, timestamp_ms, token, pos)
    }

    /// Takes back the record just appended.
    pub fn undo_last(&mut self, a: Appended) {
        self.acc.undo_last(a);
    }

    /// Seals every open batch now, without waiting for linger.
    pub fn seal_all(&mut self) {
        self.acc.seal_due(Instant::now(), true);
    }

    /// Seals lingered batches, sends what is ready, and waits for one event: a response, a linger or
    /// retry deadline, a metadata refresh or producer id. Deliveries are pushed to `out`. Returns an
    /// error only when the run must stop (a batch could not be compressed).
    pub async fn drive(&mut self, out: &mut Vec<Delivery>) -> Result<(), Error> {
        if let Some(e) = self.fatal.take() {
            return Err(e);
        }
        self.poll_background();
        let now = Instant::now();
        self.acc.seal_due(now, false);
        self.maybe_reset_pid(now);
        self.resolve_topics(now);
        let before = out.len();
        self.dispatch(now, out);
        self.maybe_refresh(now);
        if out.len() > before {
            // Batches expired or failed: report them now rather than after the next event.
            return Ok(());
        }
        let wake = [
            self.acc.next_deadline(now),
            self.pid_not_before.filter(|_| self.pid_task.is_none()),
            self.refresh_not_before
                .filter(|_| self.refresh.is_none() && !self.stale.is_empty()),
            self.throttled.values().min().copied(),
            self.next_expiry(),
            self.next_held_look(now),
            self.pending
                .values()
                .filter(|p| !p.in_flight)
                .filter_map(|p| p.not_before)
                .min(),
        ]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min();
        tokio::select! {
            Some(res) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                match res {
                    Ok(c) => self.complete(c, out),
                    Err(e) => panic!("a produce task failed: {e}"),
                }
            }
            Some(r) = join_slot(&mut self.refresh), if self.refresh.is_some() => self.refreshed(Some(r)),
            r = join_slot(&mut self.pid_task), if self.pid_task.is_some() => self.pid_answered(r),
            Some(r) = self.resolving.join_next(), if !self.resolving.is_empty() => {
                if let Ok((name, r)) = r {
                    self.topic_resolved(name, r);
                }
            }
            _ = sleep_until(wake) => {}
        }
        self.poll_background();
        Ok(())
    }

    /// When a request in flight is next to be looked at as held (see [`Producer::trouble_since`]):
    /// once it is, every second, so the caller can say so while it lasts.
    fn next_held_look(&self, now: Instant) -> Option<Instant> {
        let oldest = self
            .acc
            .topics
            .iter()
            .flat_map(|t| t.parts.iter())
            .filter(|q| q.in_flight)
            .filter_map(|q| q.sent_at)
            .min()?;
        Some((oldest + HELD_AFTER).max(now + Duration::from_secs(1)))
    }

    /// Sends everything and waits until every record is delivered (or failed).
    pub async fn flush(&mut self, out: &mut Vec<Delivery>) -> Result<(), Error> {
        while !self.is_idle() {
            self.seal_all();
            self.drive(out).await?;
        }
        Ok(())
    }

    /// The next moment a waiting batch passes its delivery timeout.
    fn next_expiry(&self) -> Option<Instant> {
        let timeout = self.cfg.delivery_timeout?;
        self.acc
            .topics
            .iter()
            .flat_map(|t| t.parts.iter())
            .filter(|q| !q.in_flight)
            .filter_map(|q| q.ready.front().map(|b| b.created + timeout))
            .min()
    }

    /// Builds one request per leader from the front batch of each ready partition and spawns its send.
    fn dispatch(&mut self, now: Instant, out: &mut Vec<Delivery>) {
        self.throttled.retain(|_, t| *t > now);
        if self.seq.reset_wanted() || self.pid_task.is_some() {
            // Nothing leaves until the new producer id is there.
            self.expire_waiting(now, out);
            return;
        }
        self.expire_waiting(now, out);
        let mut by_leader: HashMap<i32, Vec<(usize, i32)>> = HashMap::new();
        for (t, topic) in self.acc.topics.iter().enumerate() {
            for (p, q) in topic.parts.iter().enumerate() {
                if q.ready.is_empty() || q.in_flight || q.retry_at.is_some_and(|r| r > now) {
                    continue;
                }
                let leader = topic.meta.leader(p as i32);
                if leader < 0 {
                    self.stale.insert(t);
                    continue;
                }
                if self.throttled.contains_key(&leader) {
                    continue;
                }
                by_leader.entry(leader).or_default().push((t, p as i32));
            }
        }
        for (leader, parts) in by_leader {
            if self.requests_in_flight.get(&leader).copied().unwrap_or(0)
                >= self.cfg.max_in_flight.max(1)
            {
                continue;
            }
            let mut batches = Vec::with_capacity(parts.len());
            for (t, p) in parts {
                let Some(mut batch) = self.acc.topics[t].parts[p as usize].ready.pop_front() else {
                    continue;
                };
                if let Err(e) = self.prepare(t, p, &mut batch) {
                    self.fatal = Some(Error::Compression(e));
                    self.acc.topics[t].parts[p as usize].ready.push_front(batch);
                    continue;
                }
                let q = &mut self.acc.topics[t].parts[p as usize];
                q.in_flight = true;
                q.sent_at = Some(now);
                batches.push(InFlight {
                    topic: t,
                    partition: p,
                    batch,
                });
            }
            if batches.is_empty() {
                continue;
            }
            // One attempt waits as long as the broker may take to answer (its ack timeout, plus
            // transit), never the whole delivery timeout: a leader that hangs is given up on in time
            // to retry on the leader Kafka elects instead.
            let attempt = Instant::now()
                + Duration::from_millis(self.cfg.ack_timeout_ms.max(0) as u64)
                + ATTEMPT_MARGIN;
            let deadline = self
                .cfg
                .delivery_timeout
                .and_then(|d| batches.iter().map(|b| b.batch.created + d).min())
                .map_or(attempt, |d| d.min(attempt));
            let s = sender::Send {
                cluster: self.cluster.clone(),
                leader,
                acks: self.cfg.acks,
                ack_timeout_ms: self.cfg.ack_timeout_ms,
                deadline: Some(deadline),
                topic_names: batches
                    .iter()
                    .map(|b| (b.topic, self.acc.topics[b.topic].name.clone()))
                    .collect(),
            };
            *self.requests_in_flight.entry(leader).or_default() += 1;
            self.tasks.spawn(sender::send(s, batches));
        }
    }

    /// Finishes (compresses, stamps, checksums) a batch at its first send; restamps one whose producer
    /// id is no longer ours.
    fn prepare(
        &mut self,
        t: usize,
        p: i32,
        b: &mut Batch,
    ) -> Result<(), crate::wire::compression::CompressionError> {
        let n = b.tokens.len();
        match &b.body {
            Body::Records { .. } => {
                let stamp = self.seq.stamp(t, p, n);
                b.finish(
                    self.cfg.compression,
                    self.cfg.compression_level,
                    stamp,
                    &mut self.compressor,
                )?;
                self.stats.batch_bytes.observe(b.bytes().len() as f64);
            }
            Body::Finished(_) => {
                let current = b.stamp().is_some_and(|s| self.seq.is_current(s));
                if self.seq.is_idempotent() && (!current || b.moved) {
                    let stamp = self.seq.stamp(t, p, n);
                    b.restamp(stamp);
                }
                b.moved = false;
            }
        }
        Ok(())
    }
}

/// Wall-clock milliseconds, the timestamp records get when read (Kafka 4 refuses timestamps far ahead).
pub fn timestamp_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A topic leaves at least 1/HELD_SHARE of the buffer to the others (known or still to come), and
/// one in trouble all of the last 1/HELD_SHARE but a record (see [`Producer::holds_back`]).
const HELD_SHARE: usize = 4;

/// A Produce unanswered this long counts as failing (for messages and health), until it is answered
/// or times out.
const HELD_AFTER: Duration = Duration::from_secs(5);

/// The largest value a record without key or headers can carry, alone in a batch of at most
/// `max_message_bytes` (see [`Producer::max_value_bytes`]).
pub fn max_value_bytes(max: usize) -> usize {
    max_value_beside(max, None, &[])
}

/// The largest value a record with `key` and `headers` can carry, alone in a batch of at most
/// `max_message_bytes`; 0 when not even an empty value fits.
pub fn max_value_beside(max: usize, key: Option<&[u8]>, headers: &[Header<'_>]) -> usize {
    // A lone record: timestamp and offset deltas 0.
    let batch = |v: usize| {
        let body = records::record_body_len(0, 0, key, Some(&[]), headers) - 1
            + records::varint_len(v as i64)
            + v;
        records::BATCH_HEADER_BYTES + records::varint_len(body as i64) + body
    };
    // batch(v) >= batch(0) + v: no value longer than what is left beside an empty one fits, and
    // the length varints make at most a few bytes of difference below that.
    let mut v = max.saturating_sub(batch(0));
    while v > 0 && batch(v) > max {
        v -= 1;
    }
    v
}

#[cfg(test)]
mod tests;

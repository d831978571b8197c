//! Reading topics: ListOffsets to find where to start ([`offsets`]), then a Fetch loop with one
//! long-polling request in flight per leader. The next fetch for a broker is sent as soon as the previous
//! response's batch headers tell the next offsets, before its records are decoded, so the broker stays
//! busy while we write output.
//!
//! What a broker sends is checked before it is believed: data for a topic or partition not asked for is
//! dropped (and said once), a partition whose data never advances (a batch running past the response)
//! gets a larger share and then a backoff instead of a spin, and an offset out of range is reset with a
//! backoff. Errors are classified once: retriable ones refresh metadata and back off until the retry
//! limit; others end the read with a clear message.

mod fetched;
pub mod offsets;
mod start;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use crate::backoff::{Backoff, TroubleNews, TroubleWatch, STILL_TRYING_AFTER};
use crate::cluster::{Cluster, TopicMeta};
use crate::error::{classify, code, Class, Code, Error, Result, Target};
use crate::escape::Esc;
pub use fetched::{Fetched, Walk, WalkStop};
pub use offsets::{list_offsets, list_offsets_as, EARLIEST, LATEST};
use offsets::{list_offsets_pass, Ask};
pub use start::StartOffset;

/// Fetch versions: 13 names topics by id (Kafka 3.1+), so a fetch of a topic deleted and created
/// again under its name fails with UNKNOWN_TOPIC_ID instead of reading the new topic's records at the
/// old position (t29 F3: they were printed, then read again from the new log's start). 12, the last
/// that names topics, for older brokers and for a topic whose broker gave no id.
const FETCH_VERSIONS: VersionRange = VersionRange { min: 12, max: 13 };
/// The last Fetch version that names topics.
const FETCH_BY_NAME: VersionRange = VersionRange { min: 12, max: 12 };

/// Fetch sizes and waits.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// How long the broker may hold a fetch waiting for data.
    pub max_wait_ms: i32,
    /// Bytes the broker waits for before answering.
    pub min_bytes: i32,
    /// Largest response.
    pub max_bytes: i32,
    /// Largest share of one partition in a response.
    pub partition_max_bytes: i32,
    /// Largest decompressed batch accepted.
    pub max_decompressed_bytes: usize,
    /// Read as `isolation.level=read_committed`: only up to the last stable offset, without the
    /// batches of aborted transactions (kcat's default); else every record (the Java consumer's).
    pub read_committed: bool,
    /// Following (no end to reach): a partition that cannot be read for the retry limit is said
    /// every [`SAID_EVERY`] while the others are read on, and the read ends only when none could be
    /// read for the limit (t21 F5: one partition whose broker was down ended a group member,
    /// which then left the group; kcat reads on). Else (reading to an end) one partition
    /// unreadable for the limit ends the read, since the end cannot be reached without it.
    pub read_on: bool,
    /// The partitions come from a group's assignment: when a topic created again has fewer, those
    /// gone are dropped and the member reads on (with none, it waits for its next assignment), rather
    /// than ending as a read of named partitions does.
    pub group: bool,
}

/// How often a partition that cannot be read is said again while it cannot.
const SAID_EVERY: Duration = Duration::from_secs(30);

/// A fetch unanswered this long past the broker's wait counts as failing (a hung broker), for the
/// notice and the give-up; the request's own timeout ends it later.
const HUNG_AFTER: Duration = Duration::from_secs(2);

/// How long past its wait a fetch may go unanswered before it fails (a hung broker).
const FETCH_ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How long one metadata refresh after a failed fetch may take.
const REFRESH_FOR: Duration = Duration::from_secs(5);

/// The largest share one partition grows to when a batch does not fit (a broker that follows KIP-74
/// returns a first batch larger than the share anyway; older message formats do not).
const GROWN_SHARE_BYTES: i32 = 64 * 1024 * 1024;

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_wait_ms: 500,
            min_bytes: 1,
            // Two responses are held at a time (one decoded while the next arrives): 2 x 4 MiB
            // bounds the consumer's memory whatever the partition count; a larger share only cut
            // round trips that take ~1 ms here next to ~15 ms to print a response (see README).
            max_bytes: 4 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            max_decompressed_bytes: 256 * 1024 * 1024,
            read_committed: false,
            read_on: false,
            group: false,
        }
    }
}

#[derive(Debug, Clone)]
struct PartitionState {
    offset: i64,
    /// The end offset as of start, for exit-at-end.
    end_at_start: i64,
    in_flight: bool,
    /// Share of a response asked for this partition (grows when a batch does not fit).
    max_bytes: i32,
    /// Not fetched before this moment (after an error or a response that did not advance).
    not_before: Option<Instant>,
    backoff: Option<Backoff>,
    /// Since when it cannot be read (when the first fetch that failed was sent), if `failing`: one
    /// unreadable for the retry limit ends the read.
    failing_since: Instant,
    /// Whether the last fetch of it failed (or it has no leader).
    failing: bool,
    /// Since when the broker's answers for it make no progress (data without a whole batch at the
    /// largest share, an offset out of range inside the log it says it has, no answer for it at
    /// all): as unreadable as failing for the retry limit (probe D: `consume -e --timeout 5s` fetched
    /// such a partition for ever).
    stuck_since: Option<Instant>,
    /// When its fetch in flight was sent.
    sent_at: Option<Instant>,
    /// Where it starts is not known yet: its ListOffsets failed (a leader just elected whose high
    /// watermark is not caught up, a leader away). Asked again with backoff while the other
    /// partitions are read (t10: one such partition kept every other from being printed).
    pending: Option<Pending>,
    /// Its bounds are being asked for (see [`Consumer::ask_pending`]).
    asking: bool,
}

/// How a partition whose bounds are not known yet is to start, once they are.
#[derive(Debug, Clone, Copy)]
struct Pending {
    start: StartOffset,
    /// A group's committed offset for it.
    from: Option<i64>,
}

/// A partition's earliest and latest offsets, and its offset for a timestamp start.
type Bounds = (i64, i64, Option<i64>);

/// How long one attempt to learn waiting partitions' bounds may take (it runs beside the fetches).
const PENDING_ATTEMPT: Duration = Duration::from_secs(2);

struct TopicState {
    name: String,
    meta: Arc<TopicMeta>,
    /// Every partition was asked for (no list): one added when the topic is created again with
    /// more is read too.
    all: bool,
}

type Key = (usize, i32);
/// A fetch's answer: the leader, what was asked (partition and offset), and the response with the
/// version it was asked in.
type FetchOutcome = (i32, Vec<(Key, i64)>, Result<(FetchResponse, i16)>);
/// A waiting partitions' bounds ask: the topic index, the partitions, when it was sent, and the
/// bounds of those that answered with the last retriable failure of the others.
type AskOutcome = (
    usize,
    Vec<i32>,
    Instant,
    Result<(HashMap<i32, Bounds>, Option<Error>)>,
);

/// Reads partitions of some topics from their leaders.
pub struct Consumer {
    cluster: Arc<Cluster>,
    cfg: FetchConfig,
    topics: Vec<TopicState>,
    parts: BTreeMap<Key, PartitionState>,
    tasks: JoinSet<FetchOutcome>,
    /// Bounds asked for partitions waiting for them, beside the fetches.
    asks: JoinSet<AskOutcome>,
    /// Topics seen deleted and created again since [`Consumer::take_recreated`] was last called.
    recreated: Vec<String>,
    /// The ids of topics that were deleted and created again: a fetch asked by such an id before the
    /// change was seen is answered by it (the most recent 1,024).
    retired_ids: Vec<[u8; 16]>,
    /// The last fetch failure, for the notice and the give-up line.
    last_error: Option<Error>,
    /// Metadata is not asked for again before this, after a failure (paced by `refresh_backoff`).
    refresh_at: Option<Instant>,
    refresh_backoff: Backoff,
    /// Says partitions that cannot be read for a while, and when they can again.
    watch: TroubleWatch,
    /// Since when this consumer has waited for fetch answers without any coming. Only that
    /// waiting makes a fetch count as held by its broker: a caller that stopped polling (its
    /// output blocked, `| less` paused) must not make a broker look hung.
    waiting_since: Option<Instant>,
    warned: BTreeSet<String>,
    /// Warnings about this reader's start go to the debug log (a server's reader: any client could
    /// fill its stderr otherwise).
    quiet: bool,
}

impl Consumer {
    /// A consumer with nothing assigned yet.
    pub fn new(cluster: Arc<Cluster>, cfg: FetchConfig) -> Self {
        Consumer {
            cluster,
            cfg,
            topics: Vec::new(),
            parts: BTreeMap::new(),
            tasks: JoinSet::new(),
            asks: JoinSet::new(),
            recreated: Vec::new(),
            retired_ids: Vec::new(),
            last_error: None,
            refresh_at: None,
            refresh_backoff: Backoff::until(None),
            watch: TroubleWatch::new(STILL_TRYING_AFTER, Some(SAID_EVERY)),
            waiting_since: None,
            warned: BTreeSet::new(),
            quiet: false,
        }
    }

    /// This consumer's warnings about where it starts are debug lines only (see `quiet`).
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Adds `partitions` (all when empty) of a topic, each starting at `start`; returns the topic index.
    pub async fn assign(
        &mut self,
        meta: Arc<TopicMeta>,
        partitions: &[i32],
        start: StartOffset,
    ) -> Result<usize> {
        self.assign_from(meta, partitions, &HashMap::new(), start)
            .await
    }

    /// Like [`Consumer::assign`], but a partition with an offset in `from` (a group's committed
    /// offset) starts there (kept within the log's bounds) instead of at `start`.
    pub async fn assign_from(
        &mut self,
        meta: Arc<TopicMeta>,
        partitions: &[i32],
        from: &HashMap<i32, i64>,
        start: StartOffset,
    ) -> Result<usize> {
        let count = meta.partitions.len();
        let ids: Vec<i32> = if partitions.is_empty() {
            meta.partitions.iter().map(|p| p.id).collect()
        } else {
            for &p in partitions {
                if p < 0 || p as usize >= count {
                    return Err(Error::UnknownPartition {
                        topic: meta.name.clone(),
                        partition: p,
                        count,
                    });
                }
            }
            // `-p 0 -p 0` names one partition: asked twice in one ListOffsets, a broker refuses it.
            let mut ids = partitions.to_vec();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let (bounds, pending, why) = self.start_bounds(&meta.name, &ids, start).await?;
        let topic = match self.topics.iter().position(|t| t.name == meta.name) {
            Some(i) => {
                self.topics[i].meta = meta.clone();
                self.topics[i].all &= partitions.is_empty();
                i
            }
            None => {
                self.topics.push(TopicState {
                    name: meta.name.clone(),
                    meta: meta.clone(),
                    all: partitions.is_empty(),
                });
                self.topics.len() - 1
            }
        };
        let now = Instant::now();
        for id in ids {
            let mut state = PartitionState {
                offset: -1,
                end_at_start: i64::MAX,
                in_flight: false,
                max_bytes: self.cfg.partition_max_bytes,
                not_before: None,
                backoff: None,
                failing_since: now,
                failing: false,
                stuck_since: None,
                sent_at: None,
                pending: None,
                asking: false,
            };
            match bounds.get(&id) {
                Some(&b) => {
                    state.offset = self.place(&meta.name, id, b, start, from.get(&id).copied());
                    state.end_at_start = b.1;
                }
                None => {
                    // Up to 5 s between asks (each runs beside the others' fetches).
                    let mut b =
                        Backoff::with(Duration::from_millis(100), Duration::from_secs(5), None);
                    state.not_before = Some(now + b.next_delay().unwrap_or(PENDING_ATTEMPT));
                    state.backoff = Some(b);
                    state.failing = true;
                    state.pending = Some(Pending {
                        start,
                        from: from.get(&id).copied(),
                    });
                    debug_assert!(pending.contains(&id));
                }
            }
            self.parts.insert((topic, id), state);
        }
        if let Some(e) = why.filter(|_| !pending.is_empty()) {
            crate::log::debug(format_args!(
                "topic '{}': {} partitions wait for their offsets ({e}); the others are read",
                Esc::str(&meta.name),
                pending.len()
            ));
            self.last_error = Some(e);
        }
        Ok(topic)
    }

    /// The bounds of partitions `ids` of `name` for a `start`, from one pass of ListOffsets (bounded
    /// by the cluster's deadline): the partitions that failed retriably are returned apart, with the
    /// last error, to be asked again while the others are read ([`Consumer::ask_pending`]). When none
    /// answered, they are asked again until the retry limit, as one read cannot start otherwise.
    async fn start_bounds(
        &self,
        name: &str,
        ids: &[i32],
        start: StartOffset,
    ) -> Result<(HashMap<i32, Bounds>, Vec<i32>, Option<Error>)> {
        let deadline = self.cluster.options().deadline();
        // An unanswered ListOffsets is said after a few seconds, as other requests are (t19 F2).
        let backoff = crate::backoff::Backoff::until(deadline);
        // The first pass is held to a few seconds: the partitions of a hung leader (paused, not yet
        // fenced) wait for their bounds while the others are read (t24 F1: nothing was printed
        // for the connect timeout, 10 s, and `--timeout 10s` ended the read with none).
        let committed = self.cfg.read_committed;
        let each = Some(PENDING_ATTEMPT);
        let once = bounds_pass(&self.cluster, committed, name, ids, start, deadline, each);
        let (bounds, why) = match crate::backoff::attempt(&backoff, once).await {
            Ok(r) => r,
            Err(e) if e.is_retriable() => (HashMap::new(), Some(e)),
            Err(e) => return Err(e),
        };
        if !bounds.is_empty() || ids.is_empty() {
            let pending = ids
                .iter()
                .filter(|p| !bounds.contains_key(p))
                .copied()
                .collect();
            return Ok((bounds, pending, why));
        }
        let committed = self.cfg.read_committed;
        let earliest = list_offsets(&self.cluster, name, ids, EARLIEST).await?;
        let latest = list_offsets_as(&self.cluster, name, ids, LATEST, committed).await?;
        let by_time = match start {
            StartOffset::Timestamp(ts) => {
                Some(list_offsets_as(&self.cluster, name, ids, ts, committed).await?)
            }
            _ => None,
        };
        let bounds = ids
            .iter()
            .map(|&id| {
                let lo = earliest.get(&id).copied().unwrap_or(0);
                let hi = latest.get(&id).copied().unwrap_or(lo);
                let t = by_time.as_ref().and_then(|m| m.get(&id).copied());
                (id, (lo, hi, t))
            })
            .collect();
        Ok((bounds, Vec::new(), None))
    }

    /// A partition that waits for its bounds to start by `start` (or at `from`, a group's
    /// committed offset): asked at once, then with a backoff up to 5 s between asks (each runs
    /// beside the others' fetches), failing until they come.
    fn waiting_state(&self, now: Instant, start: StartOffset, from: Option<i64>) -> PartitionState {
        PartitionState {
            offset: -1,
            end_at_start: i64::MAX,
            in_flight: false,
            max_bytes: self.cfg.partition_max_bytes,
            not_before: None,
            backoff: Some(Backoff::with(
                Duration::from_millis(100),
                Duration::from_secs(5),
                None,
            )),
            failing_since: now,
            failing: true,
            stuck_since: None,
            sent_at: None,
            pending: Some(Pending { start, from }),
            asking: false,
        }
    }

    /// Where partition `id` of `name` starts within `bounds`: at `from` (a group's committed offset)
    /// if given, else at `start`; a broker's bounds that make no sense and an offset asked for that
    /// is not there are said.
    fn place(
        &mut self,
        name: &str,
        id: i32,
        bounds: Bounds,
        start: StartOffset,
        from: Option<i64>,
    ) -> i64 {
        let (lo, hi, by_time) = bounds;
        if lo > hi {
            self.warn_once(
                format!("range:{name}:{id}"),
                format_args!(
                    "topic '{}' partition {id}: the broker says it starts at {lo} but ends at {hi}; starting at {}",
                    Esc::str(name),
                    hi.max(0)
                ),
            );
        }
        let offset = match from {
            // A group's offset past the log's end (the topic created again, records lost to an
            // unclean election) is out of range: the start rule applies, as Kafka's consumer resets
            // by auto.offset.reset (it was the end: a topic created again under a group that had
            // read further in the old one lost its first records). For a read_committed reader
            // the end is the last stable offset: a read_uncommitted member of the same group may
            // have committed past it while a transaction is open, and is then reset alike.
            Some(o) if o > hi && lo <= hi => {
                let offset = start.resolve(lo, hi, by_time);
                self.warn_once(
                    format!("committed:{name}:{id}"),
                    format_args!(
                        "topic '{}' partition {id}: the group's offset {o} is past the end ({hi}); starting at {offset} (-o)",
                        Esc::str(name)
                    ),
                );
                offset
            }
            Some(o) => StartOffset::Absolute(o).resolve(lo, hi, None),
            None => start.resolve(lo, hi, by_time),
        };
        crate::log::debug(format_args!(
            "topic '{}' partition {id}: starting at {offset} (log {lo}..{hi}, group offset {from:?})",
            Esc::str(name)
        ));
        // An offset asked for that is not there (kcat says "Offset out of range" too).
        if let (StartOffset::Absolute(o), None) = (start, from) {
            if o != offset && lo <= hi {
                let what = if o > hi {
                    "is past the end; starting at the end, offset"
                } else {
                    "is before the log start (older records were deleted); starting at"
                };
                self.warn_once(
                    format!("offset:{name}:{id}"),
                    format_args!(
                        "topic '{}' partition {id}: offset {o} {what} {offset}",
                        Esc::str(name)
                    ),
                );
            }
        }
        offset
    }

    /// Asks again for the bounds of the partitions waiting for them whose backoff is over: one
    /// pass per topic and start, held to [`PENDING_ATTEMPT`], run beside the fetches (awaited here,
    /// it held up every other partition's read for up to 2 s in each 5 while a leader hung); its
    /// answer is taken by [`Consumer::took_ask`].
    fn ask_pending(&mut self) {
        let now = Instant::now();
        let mut due: BTreeMap<(usize, i64), (StartOffset, Vec<i32>)> = BTreeMap::new();
        for (&(t, p), s) in &self.parts {
            let Some(w) = s
                .pending
                .filter(|_| !s.asking && s.not_before.is_none_or(|n| n <= now))
            else {
                continue;
            };
            // Grouped by topic and start (a timestamp start is its own ListOffsets).
            let kind = match w.start {
                StartOffset::Timestamp(ts) => ts,
                _ => -1,
            };
            due.entry((t, kind))
                .or_insert((w.start, Vec::new()))
                .1
                .push(p);
        }
        for ((t, _), (start, ids)) in due {
            for p in &ids {
                if let Some(s) = self.parts.get_mut(&(t, *p)) {
                    s.asking = true;
                }
            }
            let cluster = self.cluster.clone();
            let name = self.topics[t].name.clone();
            let committed = self.cfg.read_committed;
            let limit = self.cluster.options().deadline();
            self.asks.spawn(async move {
                let each = Some(PENDING_ATTEMPT);
                let r = bounds_pass(&cluster, committed, &name, &ids, start, limit, each).await;
                (t, ids, now, r)
            });
        }
    }

    /// Takes the answer of a bounds ask ([`Consumer::ask_pending`]): the partitions that answered
    /// are read from then on, the others back off again (and are given up at the retry limit, as a
    /// fetch that fails).
    async fn took_ask(&mut self, done: std::result::Result<AskOutcome, JoinError>) -> Result<()> {
        let (t, ids, asked, r) = match done {
            Ok(o) => o,
            Err(e) => panic!("a ListOffsets task failed: {e}"),
        };
        for p in &ids {
            if let Some(s) = self.parts.get_mut(&(t, *p)) {
                s.asking = false;
            }
        }
        let (bounds, why) = match r {
            Ok(r) => r,
            Err(e) if e.is_retriable() => (HashMap::new(), Some(e)),
            Err(e) => return Err(e),
        };
        let name = self.topics[t].name.clone();
        let mut still = Vec::new();
        for p in ids {
            let Some(w) = self.parts.get(&(t, p)).and_then(|s| s.pending) else {
                continue; // unassigned meanwhile, or started otherwise (its topic created again)
            };
            let Some(&b) = bounds.get(&p) else {
                still.push((t, p));
                continue;
            };
            let offset = self.place(&name, p, b, w.start, w.from);
            if let Some(s) = self.parts.get_mut(&(t, p)) {
                s.offset = offset;
                s.end_at_start = b.1;
                s.pending = None;
                s.failing = false;
                s.not_before = None;
                s.backoff = None;
            }
        }
        if !still.is_empty() {
            let e = why.unwrap_or(Error::NoLeader {
                topic: name,
                partition: still[0].1,
            });
            self.failed(&still, e, asked).await?;
        }
        Ok(())
    }

    /// Stops reading these partitions of topic `name`; returns where each stood (the next offset to
    /// read). Data of a fetch already in flight for them is dropped when it comes.
    pub fn unassign(&mut self, name: &str, partitions: &[i32]) -> Vec<(i32, i64)> {
        let Some(t) = self.topics.iter().position(|t| t.name == name) else {
            return Vec::new();
        };
        partitions
            .iter()
            .filter_map(|&p| {
                // Removed either way; one whose start is not known yet stood nowhere.
                let s = self.parts.remove(&(t, p))?;
                s.pending.is_none().then_some((p, s.offset))
            })
            .collect()
    }

    /// Whether partition `p` of topic `name` is assigned.
    pub fn is_assigned(&self, name: &str, p: i32) -> bool {
        self.topics
            .iter()
            .position(|t| t.name == name)
            .is_some_and(|t| self.parts.contains_key(&(t, p)))
    }

    /// The topics seen deleted and created again (a new topic id) since the last call: positions
    /// of theirs held elsewhere are in the old log and mean nothing in the new one.
    pub fn take_recreated(&mut self) -> Vec<String> {
        std::mem::take(&mut self.recreated)
    }

    /// Where partition `p` of topic `name` is read next; `None` while its start is not known yet
    /// (or it is not assigned).
    pub fn next_offset_of(&self, name: &str, p: i32) -> Option<i64> {
        let t = self.topics.iter().position(|t| t.name == name)?;
        self.parts
            .get(&(t, p))
            .filter(|s| s.pending.is_none())
            .map(|s| s.offset)
    }

    /// The id topic `name` had when it was last read (all zeros when the broker gives none).
    pub fn topic_id(&self, name: &str) -> Option<[u8; 16]> {
        self.topics
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.meta.id)
    }

    /// Whether any partition is assigned.
    pub fn has_partitions(&self) -> bool {
        !self.parts.is_empty()
    }

    /// The name of topic `i`.
    pub fn topic_name(&self, i: usize) -> &str {
        self.topics.get(i).map_or("", |t| t.name.as_str())
    }

    fn warn_once(&mut self, key: String, msg: std::fmt::Arguments<'_>) {
        if self.quiet {
            crate::log::debug(msg);
        } else if self.warned.insert(key) {
            crate::log::warn(msg);
        }
    }

    /// Whether every partition has reached the end offset it had when it was assigned.
    pub fn at_end_of_start(&self) -> bool {
        self.parts.values().all(|p| p.offset >= p.end_at_start)
    }

    /// Current position of each partition: (topic index, partition, offset).
    pub fn positions(&self) -> Vec<(usize, i32, i64)> {
        self.parts
            .iter()
            .filter(|(_, s)| s.pending.is_none())
            .map(|((t, p), s)| (*t, *p, s.offset))
            .collect()
    }

    /// Sends a fetch to every leader that has none in flight, then waits for the next response. Returns
    /// the partitions' data (possibly empty after a long-poll timeout).
    pub async fn poll(&mut self) -> Result<Vec<Fetched>> {
        // Every poll first looks at what cannot be read: said after a while, given up at the
        // limit (before a fetch, so that records already taken are returned first).
        self.look()?;
        while let Some(done) = self.asks.try_join_next() {
            self.took_ask(done).await?;
        }
        self.ask_pending();
        self.poll_once().await
    }

    async fn poll_once(&mut self) -> Result<Vec<Fetched>> {
        let orphans = self.dispatch();
        if !orphans.is_empty() {
            let (t, p) = orphans[0];
            let e = Error::NoLeader {
                topic: self.topics[t].name.clone(),
                partition: p,
            };
            self.failed(&orphans, e, Instant::now()).await?;
        }
        let waited_from;
        let (leader, asked, resp) = if self.tasks.is_empty() {
            self.waiting_since = None;
            // Everything waits for a backoff, a leader or its bounds: sleep until the first may go.
            let wake = self
                .parts
                .values()
                .filter(|s| !s.asking)
                .filter_map(|s| s.not_before)
                .min();
            let wake = wake.unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                Some(done) = self.asks.join_next(), if !self.asks.is_empty() => {
                    self.took_ask(done).await?;
                }
            }
            return Ok(Vec::new());
        } else {
            // A broker that holds a fetch is noticed while it holds it (see `look`).
            self.waiting_since.get_or_insert_with(Instant::now);
            let o = tokio::select! {
                o = self.tasks.join_next() => o,
                Some(done) = self.asks.join_next(), if !self.asks.is_empty() => {
                    self.took_ask(done).await?;
                    return Ok(Vec::new());
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => return Ok(Vec::new()),
            };
            waited_from = self.waiting_since.take();
            match o {
                Some(Ok(o)) => o,
                Some(Err(e)) => panic!("a fetch task failed: {e}"),
                None => return Ok(Vec::new()),
            }
        };
        let mut sent = Instant::now();
        for (k, at) in &asked {
            // A partition given up and assigned again meanwhile may have its own fetch out.
            if let Some(s) = self.parts.get_mut(k).filter(|s| s.offset == *at) {
                s.in_flight = false;
                sent = sent.min(s.sent_at.take().unwrap_or(sent));
            }
        }
        // A failure in this answer counts from the send, but not from before this poll's wait
        // began (time its caller spent away is not the broker's).
        let sent = sent.max(waited_from.unwrap_or_else(Instant::now));
        let keys: Vec<Key> = asked.iter().map(|(k, _)| *k).collect();
        let (resp, version) = match resp {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                crate::log::debug(format_args!("fetch from broker {leader} failed: {e}"));
                self.failed(&keys, e, sent).await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        if let Some(c) = code(resp.error_code) {
            let e = Error::Kafka {
                api: "Fetch",
                target: Target::Broker(format!("id {leader}")),
                code: c,
            };
            if e.is_retriable() {
                self.failed(&keys, e, sent).await?;
                return Ok(Vec::new());
            }
            return Err(e);
        }
        let out = self.take_response(resp, version, &asked, sent).await?;
        // Keep the broker busy: the next fetch leaves before the caller decodes this one.
        // Partitions without a leader are taken up by the next poll's dispatch.
        let _ = self.dispatch();
        Ok(out)
    }

    /// Notes partitions that cannot be read now, says so after a while (and when they can again),
    /// and ends the read with the last failure once one has not been read for the retry limit.
    fn look(&mut self) -> Result<()> {
        let now = Instant::now();
        let hung_after = Duration::from_millis(self.cfg.max_wait_ms.max(0) as u64) + HUNG_AFTER;
        let mut failing: Vec<(Key, Instant)> = Vec::new();
        let mut hung: Option<(i32, Instant)> = None;
        for (k, s) in &self.parts {
            // Held: unanswered while this consumer waited for it (not while its caller was away).
            let held = match (s.sent_at, self.waiting_since) {
                (Some(t), Some(w)) if s.in_flight => {
                    Some(t.max(w)).filter(|t| now.saturating_duration_since(*t) >= hung_after)
                }
                _ => None,
            };
            let since = match (s.failing, held) {
                (true, _) => s.failing_since,
                (false, _) if s.stuck_since.is_some() => s.stuck_since.unwrap_or(now),
                (false, Some(t)) => {
                    hung = Some((self.topics[k.0].meta.leader(k.1), t));
                    t
                }
                (false, None) => continue,
            };
            failing.push((*k, since));
        }
        let Some(began) = failing.iter().map(|(_, t)| *t).min() else {
            self.refresh_backoff.reset();
            self.last_error = None;
            if let Some(TroubleNews::Recovered(after)) = self.watch.look_at(None, now) {
                self.say(
                    false,
                    format_args!("reading from Kafka again after {:.1}s", after.as_secs_f64()),
                );
            }
            return Ok(());
        };
        // Reading on, the time that counts is since the last partition that could be read failed
        // too; and only while none can be read.
        let all = failing.len() == self.parts.len();
        let counted = if !self.cfg.read_on {
            Some(began)
        } else if all {
            failing.iter().map(|(_, t)| *t).max()
        } else {
            None
        };
        let failure = match (&self.last_error, hung) {
            // An ask's own give-up is not this read's ("cannot read ... (gave up after 2.0s: ...);
            // still trying": t24 F5).
            (Some(Error::Deadline { last, .. }), _) => last.to_string(),
            (Some(e), _) => e.to_string(),
            (None, Some((leader, sent))) => format!(
                "broker {} has not answered a Fetch for {} s",
                self.cluster
                    .broker_addr(leader)
                    .unwrap_or_else(|| format!("id {leader}")),
                now.saturating_duration_since(sent).as_secs()
            ),
            (None, None) => "no answer".to_string(),
        };
        // The partitions are named only when said or given up: `look` runs at every poll while
        // one fails.
        let limit = self.cluster.options().retry_limit;
        if let (Some(l), Some(c)) = (limit, counted) {
            if now.saturating_duration_since(c) >= l {
                let named = self.partitions_named(failing.iter().map(|(k, _)| *k));
                let last = match self.last_error.take() {
                    Some(e) => e,
                    None => Error::Conn(crate::connection::ConnError::Timeout {
                        addr: hung
                            .and_then(|(l, _)| self.cluster.broker_addr(l))
                            .unwrap_or_else(|| "?".into()),
                        api: "Fetch",
                        ms: hung.map_or(0, |(_, t)| {
                            now.saturating_duration_since(t).as_millis() as u64
                        }),
                    }),
                };
                // One "gave up after", this one's: not the inner one of an attempt's own limit too.
                let last = match last {
                    Error::Deadline { last, .. } => *last,
                    last => last,
                };
                let last = if last.to_string().contains(&named) {
                    last
                } else {
                    Error::Unreadable {
                        which: named,
                        error: Box::new(last),
                    }
                };
                return Err(Error::Deadline {
                    ms: now.saturating_duration_since(c).as_millis() as u64,
                    last: Box::new(last),
                });
            }
        }
        if let Some(TroubleNews::Failing(e, for_)) = self.watch.look_at(Some((failure, began)), now)
        {
            // "cannot read topic 't' partition 2 (topic 't' partition 2 has no leader)" says it twice.
            let named = self.partitions_named(failing.iter().map(|(k, _)| *k));
            let which = if e.contains(&named) {
                "from Kafka".to_string()
            } else {
                named
            };
            let until = match (limit, counted) {
                (Some(l), Some(c)) => format!(
                    "still trying for up to {} s (--timeout)",
                    l.saturating_sub(now.saturating_duration_since(c))
                        .as_secs_f64()
                        .ceil()
                ),
                (None, _) => "still trying (--timeout 0: until it answers)".to_string(),
                (Some(_), None) => {
                    "reading the others meanwhile, and still trying (following: a partition is not given up while others can be read)".to_string()
                }
            };
            self.say(
                true,
                format_args!("cannot read {which} for {}s ({e}); {until}", for_.as_secs()),
            );
        }
        Ok(())
    }

    /// "topic 't' partition 1", "topic 't' partitions 0, 2; topic 'u' partition 3", at most 8
    /// partitions named ("and 3 more").
    fn partitions_named(&self, keys: impl Iterator<Item = Key>) -> String {
        const NAMED: usize = 8;
        let mut by_topic: BTreeMap<usize, Vec<i32>> = BTreeMap::new();
        let mut n = 0;
        for (t, p) in keys {
            n += 1;
            if n <= NAMED {
                by_topic.entry(t).or_default().push(p);
            }
        }
        let mut out: Vec<String> = by_topic
            .into_iter()
            .map(|(t, ps)| {
                format!(
                    "topic '{}' partition{} {}",
                    crate::escape::Esc::str(&self.topics[t].name),
                    if ps.len() == 1 { "" } else { "s" },
                    ps.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        if n > NAMED {
            out.push(format!("and {} more", n - NAMED));
        }
        out.join("; ")
    }

    /// A warning (or an info line), or a debug line for a quiet consumer.
    fn say(&self, warn: bool, msg: std::fmt::Arguments<'_>) {
        match (self.quiet, warn) {
            (true, _) => crate::log::debug(msg),
            (false, true) => crate::log::warn(msg),
            (false, false) => crate::log::info(msg),
        }
    }

    /// The partitions' data in a response, believing only what was asked for. From version 13 the
    /// response names topics by id: an id asked for is the topic as it was when asked.
    async fn take_response(
        &mut self,
        resp: FetchResponse,
        version: i16,
        asked: &[(Key, i64)],
        sent: Instant,
    ) -> Result<Vec<Fetched>> {
        let mut out = Vec::new();
        let mut stale: Option<Error> = None;
        let mut stale_keys: Vec<Key> = Vec::new();
        let mut answered: Vec<Key> = Vec::new();
        for t in resp.responses {
            let id = *t.topic_id.as_bytes();
            let ours = asked.iter().map(|((ti, _), _)| *ti).find(|&ti| {
                let ts = &self.topics[ti];
                if version >= 13 {
                    ts.meta.id == id
                } else {
                    ts.name == t.topic.0.as_str()
                }
            });
            let name = match ours {
                Some(ti) => self.topics[ti].name.clone(),
                // Asked for before the topic was seen created again: that topic is gone.
                None if version >= 13 && self.retired_ids.contains(&id) => continue,
                None if version >= 13 => t.topic_id.to_string(),
                None => t.topic.0.to_string(),
            };
            for pd in t.partitions {
                let p = pd.partition_index;
                let key = asked
                    .iter()
                    .copied()
                    .find(|((ti, pi), _)| *pi == p && Some(*ti) == ours);
                if let Some((k, _)) = key {
                    answered.push(k);
                }
                let Some((key, at)) = key else {
                    self.warn_once(
                        format!("foreign:{name}:{p}"),
                        format_args!(
                            "broker sent data for topic '{}' partition {p}, which was not asked for; ignored",
                            Esc::str(&name)
                        ),
                    );
                    continue;
                };
                // Given up since (or given up and assigned again at another offset): not ours.
                let Some(state) = self.parts.get(&key).filter(|s| s.offset == at).cloned() else {
                    continue;
                };
                let target = Target::Partition(name.clone(), p);
                if code(pd.error_code).is_none_or(|c| c == Code::OffsetOutOfRange) {
                    // The broker answered for it.
                    if let Some(s) = self.parts.get_mut(&key) {
                        s.failing = false;
                    }
                }
                match code(pd.error_code) {
                    None => {}
                    Some(Code::OffsetOutOfRange) => {
                        self.reset_out_of_range(key).await?;
                        continue;
                    }
                    Some(c) => {
                        let e = Error::Kafka {
                            api: "Fetch",
                            target,
                            code: c,
                        };
                        match classify(c) {
                            Class::Retriable { .. } => {
                                stale = Some(e);
                                stale_keys.push(key);
                            }
                            _ => return Err(e),
                        }
                        continue;
                    }
                }
                let f = Fetched {
                    topic: key.0,
                    partition: p,
                    fetch_offset: state.offset,
                    records: pd.records.unwrap_or_default(),
                    high_watermark: pd.high_watermark,
                    aborted: aborted_of(pd.aborted_transactions),
                };
                let next = f.next_offset().map_err(|error| Error::Records {
                    topic: name.clone(),
                    partition: p,
                    error,
                })?;
                if next == state.offset && !f.records.is_empty() {
                    self.no_progress(key, &name);
                    continue;
                }
                if let Some(s) = self.parts.get_mut(&key) {
                    s.offset = next;
                    s.stuck_since = None;
                    s.backoff = None;
                    s.not_before = None;
                    s.max_bytes = s.max_bytes.max(self.cfg.partition_max_bytes);
                    // Nothing at our position, and the broker's end is there: the end it had at
                    // the start is no longer in its log (truncated by an unclean election, or
                    // reset below after OFFSET_OUT_OF_RANGE), and reading to it would never end
                    // (t49: `consume -e` and tail's read-back of its own records hung). kcat's end
                    // of partition is the same.
                    if f.records.is_empty() && (0..=state.offset).contains(&f.high_watermark) {
                        s.end_at_start = s.end_at_start.min(state.offset);
                    }
                }
                out.push(f);
            }
        }
        if let Some(e) = stale {
            self.failed(&stale_keys, e, sent).await?;
        }
        // Asked for and left out: fetched again at once, it was asked for 5,000 times a second.
        for &(key, at) in asked {
            if answered.contains(&key) || self.parts.get(&key).is_none_or(|s| s.offset != at) {
                continue;
            }
            let name = self.topics[key.0].name.clone();
            self.stuck(key, "its partition is missing from the answer");
            self.warn_once(
                format!("missing:{name}:{}", key.1),
                format_args!(
                    "topic '{}' partition {}: the broker's Fetch answers leave it out; retrying with backoff",
                    Esc::str(&name),
                    key.1
                ),
            );
        }
        Ok(out)
    }

    /// The broker answered for `key` without progress: backed off, and counted against the retry
    /// limit from the first such answer (see [`PartitionState::stuck_since`]).
    fn stuck(&mut self, key: Key, what: &'static str) {
        let Some(s) = self.parts.get_mut(&key) else {
            return;
        };
        let now = Instant::now();
        s.stuck_since.get_or_insert(now);
        let b = s.backoff.get_or_insert_with(|| {
            Backoff::with(Duration::from_millis(200), Duration::from_secs(5), None)
        });
        s.not_before = Some(now + b.next_delay().unwrap_or(Duration::from_secs(5)));
        self.last_error = Some(Error::Incomplete {
            api: "Fetch",
            target: Target::Partition(self.topics[key.0].name.clone(), key.1),
            what,
        });
    }

    /// Data came but no whole batch: ask for a larger share; at the limit, back off and say so.
    fn no_progress(&mut self, key: Key, name: &str) {
        let limit = self.cfg.max_bytes.max(GROWN_SHARE_BYTES);
        let Some(s) = self.parts.get_mut(&key) else {
            return;
        };
        if s.max_bytes < limit {
            s.max_bytes = s.max_bytes.saturating_mul(2).min(limit);
            return;
        }
        let offset = s.offset;
        self.stuck(
            key,
            "no whole batch at its offset, even at the largest share",
        );
        self.warn_once(
            format!("stuck:{name}:{}", key.1),
            format_args!(
                "topic '{}' partition {}: the broker's data at offset {offset} does not hold a whole batch even at {limit} bytes; retrying with backoff",
                Esc::str(name),
                key.1
            ),
        );
    }

    /// After a failed fetch of partitions `keys`: each backs off on its own (the others are read on
    /// meanwhile), and metadata is asked for again, paced, so the next fetches go to current leaders.
    /// Giving up is [`look`](Self::look)'s, at the retry limit.
    /// `sent` is when the failed fetch was sent: a partition is unreadable from then on.
    async fn failed(&mut self, keys: &[Key], err: Error, sent: Instant) -> Result<()> {
        let now = Instant::now();
        for k in keys {
            if let Some(s) = self.parts.get_mut(k) {
                if !s.failing {
                    s.failing_since = sent.min(now);
                }
                s.failing = true;
                let b = s.backoff.get_or_insert_with(|| Backoff::until(None));
                s.not_before = Some(now + b.next_delay().unwrap_or(Duration::from_secs(1)));
            }
        }
        self.last_error = Some(err);
        if self.refresh_at.is_some_and(|t| now < t) {
            return Ok(());
        }
        let pause = self.refresh_backoff.next_delay();
        self.refresh_at = Some(now + pause.unwrap_or(Duration::from_secs(1)));
        // A few seconds at most (the partitions that can be read are read on meanwhile), and not
        // past the moment the oldest failing partition is given up.
        let oldest = self
            .parts
            .values()
            .filter(|s| s.failing)
            .map(|s| s.failing_since)
            .min()
            .unwrap_or(now);
        let mut until = now + REFRESH_FOR;
        // Reading on, a partition failing past the limit does not end the read: its refresh keeps
        // its few seconds (cut to 100 ms, a Metadata request queued behind a long-poll Fetch would
        // time out and close that connection).
        if let Some(l) = self
            .cluster
            .options()
            .retry_limit
            .filter(|_| !self.cfg.read_on)
        {
            until = until.min((oldest + l).max(now + Duration::from_millis(100)));
        }
        let limit = Some(until);
        let generation = self.cluster.generation();
        for i in 0..self.topics.len() {
            let name = self.topics[i].name.clone();
            match self.cluster.refresh(&name, generation, limit).await {
                Ok(()) => {}
                Err(e) if e.is_retriable() => continue,
                Err(e) => return Err(e),
            }
            if let Some(m) = self.cluster.cached_topic(&name) {
                self.take_meta(i, m)?;
            }
        }
        Ok(())
    }

    /// Takes topic `i`'s current metadata. When its id changed (the topic was deleted and created
    /// again), positions in the old log mean nothing in the new one: every partition of it is read
    /// again from its start, and that is said (the new topic's first records were skipped: reset
    /// to its end when past it, or read on from the old position when inside it).
    fn take_meta(&mut self, i: usize, m: Arc<TopicMeta>) -> Result<bool> {
        let old = self.topics[i].meta.id;
        let recreated = old != [0; 16] && m.id != [0; 16] && old != m.id;
        let was = std::mem::replace(&mut self.topics[i].meta, m);
        if !recreated {
            return Ok(false);
        }
        if self.retired_ids.len() >= 1024 {
            self.retired_ids.remove(0);
        }
        self.retired_ids.push(old);
        let name = self.topics[i].name.clone();
        if self.recreated.len() < 1024 && !self.recreated.contains(&name) {
            self.recreated.push(name.clone());
        }
        let meta = self.topics[i].meta.clone();
        let (ps, gone): (Vec<i32>, Vec<i32>) = self
            .parts
            .keys()
            .filter(|k| k.0 == i)
            .map(|k| k.1)
            .partition(|p| meta.partitions.iter().any(|m| m.id == *p));
        // Created again with fewer partitions: those past its count are no more. Asked for, they
        // were retried as leaderless until the retry limit, and the read of the others ended with
        // them (t25 F4: a web view showed nothing, then "partition 1 has no available leader").
        if let Some(&first) = gone.first() {
            self.unassign(&name, &gone);
            crate::log::warn(format_args!(
                "topic '{}' was created again with {} partition(s): partition(s) {} no longer exist",
                Esc::str(&name),
                meta.partitions.len(),
                crate::escape::partitions(&gone)
            ));
            if ps.is_empty() && self.cfg.group {
                return Ok(true);
            }
            if ps.is_empty() {
                return Err(Error::UnknownPartition {
                    topic: name,
                    partition: first,
                    count: meta.partitions.len(),
                });
            }
        }
        // Said before the new log's offsets are asked (said after them, it went unsaid when they
        // did not come: CI, a static-binary run).
        let id: String = self.topics[i]
            .meta
            .id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.warn_once(
            format!("recreated:{name}:{id}"),
            format_args!(
                "topic '{}' was deleted and created again (its topic id changed): reading it from its start",
                Esc::str(&name)
            ),
        );
        // Placed in the new log as a partition that waits for its offsets at the start: asked
        // beside the other partitions' reads (`ask_pending`), retried with a backoff and given up
        // at the retry limit as any read (read on when following). `-e`'s goal becomes the new
        // log's end then: the old log's end means nothing in it. Asked here, inline, a failed ask
        // ended the read at once, and held every other partition back while it waited.
        // A read of every partition (no group, no -p) reads the new ones too (t29 F2: a topic
        // created again with more partitions was read on its old ones only, unsaid).
        let had_all = !self.cfg.group
            && self.topics[i].all
            && was
                .partitions
                .iter()
                .all(|p| self.parts.contains_key(&(i, p.id)));
        let added: Vec<i32> = meta
            .partitions
            .iter()
            .map(|p| p.id)
            .filter(|p| had_all && !self.parts.contains_key(&(i, *p)))
            .collect();
        if !added.is_empty() {
            crate::log::warn(format_args!(
                "topic '{}' was created again with {} partition(s): reading the new partition(s) {} too",
                Esc::str(&name),
                meta.partitions.len(),
                crate::escape::partitions(&added)
            ));
        }
        let now = Instant::now();
        for p in ps.into_iter().chain(added) {
            // A fetch still out for the old log is not this partition's any more (its answer is
            // passed over, being at another offset): the new state has none in flight (without
            // this, the partition waited for it for good and was never read again, seen with a
            // partition of the topic gone).
            let state = self.waiting_state(now, StartOffset::Beginning, None);
            self.parts.insert((i, p), state);
        }
        Ok(true)
    }

    /// OFFSET_OUT_OF_RANGE: the log moved (retention, truncation). Restart at its start if we were
    /// before it, at its end if we were past it, and where we were if the broker's own offsets say we
    /// were inside (nothing is skipped on its word alone); paced by a backoff so a broker that keeps
    /// saying it cannot make us spin.
    async fn reset_out_of_range(&mut self, key: Key) -> Result<()> {
        let name = self.topics[key.0].name.clone();
        let p = key.1;
        // A log that moved may be a new topic of the same name: then it is read from its start.
        let generation = self.cluster.generation();
        let limit = self.cluster.options().deadline();
        if self.cluster.refresh(&name, generation, limit).await.is_ok() {
            if let Some(m) = self.cluster.cached_topic(&name) {
                if self.take_meta(key.0, m)? {
                    return Ok(());
                }
            }
        }
        let lo = list_offsets(&self.cluster, &name, &[p], EARLIEST).await?;
        let hi =
            list_offsets_as(&self.cluster, &name, &[p], LATEST, self.cfg.read_committed).await?;
        let Some(s) = self.parts.get_mut(&key) else {
            return Ok(());
        };
        let lo = lo.get(&p).copied().unwrap_or(0);
        let hi = hi.get(&p).copied().unwrap_or(lo);
        let new = StartOffset::Absolute(s.offset).resolve(lo, hi, None);
        let old = s.offset;
        s.offset = new;
        let b = s.backoff.get_or_insert_with(|| {
            Backoff::with(Duration::from_millis(100), Duration::from_secs(5), None)
        });
        s.not_before = Some(Instant::now() + b.next_delay().unwrap_or(Duration::from_secs(5)));
        if new == old {
            self.stuck(
                key,
                "its offset is out of range, inside the log the broker says it has",
            );
        }
        let key_s = format!("range:{name}:{p}:{new}");
        let msg = if new == old {
            format!("the broker says offset {old} is out of range but its log spans {lo}..{hi}; retrying")
        } else {
            format!("offset {old} out of range, resetting to {new}")
        };
        self.warn_once(
            key_s,
            format_args!("topic '{}' partition {p}: {msg}", Esc::str(&name)),
        );
        Ok(())
    }

    /// Sends a fetch to each leader with partitions ready and none in flight; returns the
    /// partitions that have no leader now (held back 200 ms).
    fn dispatch(&mut self) -> Vec<Key> {
        let now = Instant::now();
        let mut by_leader: HashMap<i32, Vec<Key>> = HashMap::new();
        for (k, s) in &self.parts {
            if s.in_flight || s.pending.is_some() || s.not_before.is_some_and(|t| t > now) {
                continue;
            }
            let leader = self.topics[k.0].meta.leader(k.1);
            by_leader.entry(leader).or_default().push(*k);
        }
        let orphans = by_leader.remove(&-1).unwrap_or_default();
        if !orphans.is_empty() {
            crate::log::debug(format_args!(
                "{} partitions have no leader yet",
                orphans.len()
            ));
            for k in &orphans {
                if let Some(s) = self.parts.get_mut(k) {
                    s.not_before = Some(now + Duration::from_millis(200));
                }
            }
        }
        for (leader, keys) in by_leader {
            let req = self.request(&keys);
            // By id when every topic asked for has one (a broker before 2.8 gives none).
            let versions = if keys.iter().all(|k| self.topics[k.0].meta.id != [0; 16]) {
                FETCH_VERSIONS
            } else {
                FETCH_BY_NAME
            };
            let mut asked = Vec::with_capacity(keys.len());
            for k in &keys {
                if let Some(s) = self.parts.get_mut(k) {
                    s.in_flight = true;
                    s.sent_at = Some(now);
                    asked.push((*k, s.offset));
                }
            }
            let cluster = self.cluster.clone();
            let wait = Duration::from_millis(self.cfg.max_wait_ms.max(0) as u64);
            self.tasks.spawn(async move {
                let r = async {
                    let conn = cluster.broker(leader, None).await?;
                    let version = conn.version::<FetchRequest>(versions)?;
                    // The broker may hold the request for max_wait_ms before answering.
                    // A fetch is answered within its wait: one held FETCH_ANSWER_WITHIN past it
                    // fails, and the metadata refresh that follows finds the new leader (t12: a
                    // paused broker held the read for the whole 30 s request timeout, past
                    // --timeout, while Kafka had moved its partitions in 11-22 s).
                    let quick = Instant::now() + FETCH_ANSWER_WITHIN + wait;
                    let until = (conn.request_deadline(None) + wait).min(quick);
                    Ok((conn.call(&req, version, until).await?, version))
                }
                .await;
                (leader, asked, r)
            });
        }
        orphans
    }

    fn request(&self, keys: &[Key]) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for &(t, p) in keys {
            let Some(s) = self.parts.get(&(t, p)) else {
                continue;
            };
            let mut fp = FetchPartition::default();
            fp.partition = p;
            fp.fetch_offset = s.offset;
            fp.current_leader_epoch = -1;
            fp.last_fetched_epoch = -1;
            fp.log_start_offset = -1;
            fp.partition_max_bytes = s.max_bytes;
            let name = &self.topics[t].name;
            match topics.iter_mut().find(|ft| ft.topic.0.as_str() == name) {
                Some(ft) => ft.partitions.push(fp),
                None => {
                    // Both: the version chosen for the broker encodes one of them.
                    let mut ft = FetchTopic::default();
                    ft.topic = TopicName(StrBytes::from_string(name.clone()));
                    ft.topic_id = uuid::Uuid::from_bytes(self.topics[t].meta.id);
                    ft.partitions.push(fp);
                    topics.push(ft);
                }
            }
        }
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = self.cfg.max_wait_ms;
        req.min_bytes = self.cfg.min_bytes;
        // A share grown for an oversized batch must fit in the response too.
        let largest = topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.partition_max_bytes))
            .max()
            .unwrap_or(0);
        req.max_bytes = self.cfg.max_bytes.max(largest);
        req.isolation_level = i8::from(self.cfg.read_committed);
        req.session_id = 0;
        req.session_epoch = -1;
        req.topics = topics;
        req
    }
}

/// A response's aborted transactions as (producer id, first offset), sorted by first offset.
fn aborted_of(
    list: Option<Vec<kafka_protocol::messages::fetch_response::AbortedTransaction>>,
) -> Vec<(i64, i64)> {
    let mut v: Vec<(i64, i64)> = list
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect();
    v.sort_unstable_by_key(|&(_, first)| first);
    v
}

/// One pass of ListOffsets for the bounds of `ids`: those of the partitions that answered every
/// request, and the last retriable failure of the others. Each request (earliest, latest, a
/// time) is held to `each` when given, and all to `deadline`: one cut short for a hung leader
/// leaves the next asked of the others with its own time (t24 F1: the latest offsets were
/// asked with no time left, timed out, and closed the healthy brokers' connections).
/// A free function, so that [`Consumer::ask_pending`] can run it beside the fetches.
#[allow(clippy::too_many_arguments)]
async fn bounds_pass(
    cluster: &Cluster,
    read_committed: bool,
    topic: &str,
    ids: &[i32],
    start: StartOffset,
    deadline: Option<Instant>,
    each: Option<Duration>,
) -> Result<(HashMap<i32, Bounds>, Option<Error>)> {
    let mut asks = vec![(EARLIEST, false), (LATEST, read_committed)];
    if let StartOffset::Timestamp(ts) = start {
        asks.push((ts, read_committed));
    }
    let mut left: Vec<i32> = ids.to_vec();
    let mut found: Vec<HashMap<i32, i64>> = Vec::new();
    let mut why = None;
    for (timestamp, read_committed) in asks {
        if left.is_empty() {
            break;
        }
        let ask = Ask {
            topic,
            partitions: &left,
            timestamp,
            read_committed,
        };
        let until = match each.map(|e| Instant::now() + e) {
            Some(e) => Some(deadline.map_or(e, |d| d.min(e))),
            None => deadline,
        };
        let pass = list_offsets_pass(cluster, ask, until).await?;
        why = pass.last_err.or(why);
        left.retain(|p| pass.found.contains_key(p));
        found.push(pass.found);
    }
    let bounds = left
        .into_iter()
        .map(|p| {
            let at = |i: usize| found.get(i).and_then(|m| m.get(&p).copied());
            (p, (at(0).unwrap_or(0), at(1).unwrap_or(0), at(2)))
        })
        .collect();
    Ok((bounds, why))
}

#[cfg(test)]
mod tests;

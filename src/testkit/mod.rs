//! A fake Kafka cluster for tests: it speaks the real wire protocol (kafka-protocol's codecs, our record
//! batches), keeps what is produced, serves it back, and can misbehave one way per case — what a real
//! broker rarely does on demand. It never replaces the real broker as proof of a feature; it drives the
//! error paths.
//!
//! Two ways in: [`FakeBroker::transport`] gives an in-memory [`Transport`] for unit tests (no sockets,
//! works with tokio's paused clock), and [`FakeBroker::start_tcp`] serves on loopback TCP ports from a
//! thread of its own, so integration tests can run the `shipper` binary against it.
//!
//! Served: ApiVersions, Metadata, InitProducerId, Produce (offsets assigned, idempotent sequences checked
//! like a broker: duplicates answered DUPLICATE_SEQUENCE_NUMBER, gaps OUT_OF_ORDER_SEQUENCE_NUMBER),
//! ListOffsets, Fetch, and a minimal classic group coordinator (FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch; see `group.rs`).

#![allow(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use tokio::task::AbortHandle;
use tokio::time::Instant;

mod group;
mod handlers;
mod next;
mod serve;

use handlers::{batch_values, store};

use crate::connection::{BoxFuture, BoxIo, ConnError, Transport};
use crate::wire::records;

/// One way to misbehave. Each applies to the next `times` matching requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehave {
    /// Never answer anything again (the connection stays open).
    Silent,
    /// Answer with a correlation id that matches no request.
    WrongCorrelationId,
    /// Announce a frame of this size.
    FrameSize(i32),
    /// Announce a frame of this size in answer to a request of this API.
    FrameSizeOn(ApiKey, i32),
    /// Never answer a request of this API (the connection stays open).
    SilentOn(ApiKey),
    /// Close the connection when a request of this API arrives.
    DropOn(ApiKey),
    /// Handle a request of this API, then close the connection without answering (the response is
    /// lost after the work was done).
    DropAfter(ApiKey),
    /// Answer a request of this API with bytes that do not decode.
    Garbage(ApiKey),
    /// Answer Produce for a partition with this error code; `leader_hint` names a new leader (KIP-951).
    ProduceError { code: i16, leader_hint: Option<i32> },
    /// Answer Produce for every partition of this topic with this error code (a topic the ACLs
    /// refuse writes to), the others as usual.
    ProduceErrorFor { topic: String, code: i16 },
    /// Answer Produce leaving out every partition.
    ProduceMissingPartition,
    /// Answer Produce with `throttle_time_ms`.
    Throttle(i32),
    /// Answer InitProducerId with this error code.
    InitProducerIdError(i16),
    /// Answer Fetch for a partition with this error code.
    FetchError(i16),
    /// Answer Fetch with data for a partition that was not asked for, besides the real answer.
    FetchForeignPartition,
    /// Answer Fetch with a batch header whose length runs past the response (and nothing else).
    FetchNoProgress,
    /// Answer Fetch leaving out every partition (the topics are there, without them).
    FetchMissingPartition,
    /// ListOffsets answers these offsets for earliest and latest.
    Offsets { earliest: i64, latest: i64 },
    /// ListOffsets answers this partition with this error code (counted per request asking for it).
    OffsetsError { partition: i32, code: i16 },
    /// Metadata describes this many partitions for each topic asked for.
    HugeMetadata(usize),
    /// Metadata says this topic does not exist.
    UnknownTopic,
    /// Answer a group API (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
    /// OffsetFetch) with this error code: at the top level, on each coordinator key (FindCoordinator),
    /// on each partition (OffsetCommit), on the group (OffsetFetch). A JoinGroup, SyncGroup or
    /// Heartbeat answered UNKNOWN_MEMBER_ID (25) also drops the member from the group.
    GroupError { api: ApiKey, code: i16 },
    /// Answer a successful SyncGroup with these assignment bytes instead of the leader's.
    SyncAssignment(Vec<u8>),
    /// Answer a successful ConsumerGroupHeartbeat with this member epoch.
    MemberEpoch(i32),
    /// Carry the assignment in every successful ConsumerGroupHeartbeat answer, changed or not.
    AssignmentEveryTime,
    /// Answer Metadata without topic ids (as a broker that does not know them yet).
    NoTopicIds,
}

#[derive(Debug, Clone)]
struct Rule {
    what: Misbehave,
    times: usize,
}

#[derive(Debug, Clone, Default)]
struct PartitionLog {
    leader: i32,
    leader_epoch: i32,
    /// Stored batches: base offset, bytes (with the offset patched in).
    batches: Vec<(i64, Bytes)>,
    next_offset: i64,
    /// Per producer id: the last five batches' (first sequence, last sequence, base offset).
    producers: HashMap<i64, Vec<(i32, i32, i64)>>,
    /// The high watermark while commits are held: batches from here on are appended but not yet
    /// visible to Fetch and ListOffsets (acks=all waiting for followers).
    held_at: Option<i64>,
}

impl PartitionLog {
    /// The high watermark: what readers see.
    fn high_watermark(&self) -> i64 {
        self.held_at.unwrap_or(self.next_offset)
    }
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<i32, Node>,
    topics: BTreeMap<String, Vec<PartitionLog>>,
    auto_create_partitions: Option<usize>,
    rules: Vec<Rule>,
    requests: HashMap<i16, usize>,
    /// SASL PLAIN user and password the brokers require, and the session they grant (ms, 0: none).
    sasl: Option<(String, String, i64)>,
    next_producer_id: i64,
    open_streams: usize,
    /// Consumer groups, by id (broker 1 coordinates them all).
    groups: BTreeMap<String, group::Group>,
    /// The last member id handed out.
    next_member: u64,
    /// Whether ConsumerGroupHeartbeat is offered (see `next.rs`).
    consumer_protocol: bool,
    /// Consumer-protocol groups, by id.
    next_groups: BTreeMap<String, next::NextGroup>,
    /// Each topic's id: a new one each time it is created (as Kafka's topic ids).
    topic_ids: BTreeMap<String, u128>,
    /// The last topic id handed out.
    next_topic_id: u128,
}

#[derive(Debug, Default)]
struct Node {
    addr: String,
    up: bool,
    tasks: Vec<AbortHandle>,
}

/// A fake cluster of `n` brokers (ids 1..=n).
#[derive(Clone)]
pub struct FakeBroker {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeBroker")
    }
}

impl FakeBroker {
    /// A cluster of `n` in-memory brokers at `fake-ID:9092`; topics are created on first use with 3
    /// partitions (see [`FakeBroker::auto_create`]).
    pub fn new(n: i32) -> FakeBroker {
        let b = FakeBroker {
            state: Arc::new(Mutex::new(State {
                auto_create_partitions: Some(3),
                next_producer_id: 1000,
                ..State::default()
            })),
        };
        for id in 1..=n {
            b.lock().nodes.insert(
                id,
                Node {
                    addr: format!("fake-{id}:9092"),
                    up: true,
                    tasks: Vec::new(),
                },
            );
        }
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the cluster on loopback TCP from a thread of its own; returns it and the bootstrap list.
    pub fn start_tcp(n: i32) -> (FakeBroker, String) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async move {
                let b = FakeBroker::new(n);
                let mut listeners = Vec::new();
                for id in 1..=n {
                    let Ok(l) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
                        return;
                    };
                    let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                    if let Some(node) = b.lock().nodes.get_mut(&id) {
                        node.addr = addr;
                    }
                    listeners.push((id, l));
                }
                let boot = b
                    .lock()
                    .nodes
                    .values()
                    .map(|n| n.addr.clone())
                    .collect::<Vec<_>>()
                    .join(",");
                let _ = tx.send((b.clone(), boot));
                let mut accepts = Vec::new();
                for (id, l) in listeners {
                    let b = b.clone();
                    accepts.push(tokio::spawn(async move {
                        while let Ok((s, _)) = l.accept().await {
                            if b.lock().nodes.get(&id).is_some_and(|n| n.up) {
                                b.serve(id, Box::new(s));
                            }
                        }
                    }));
                }
                for a in accepts {
                    let _ = a.await;
                }
            });
        });
        rx.recv()
            .unwrap_or_else(|_| panic!("the fake broker did not start"))
    }

    /// The in-memory transport to this cluster.
    pub fn transport(&self) -> FakeTransport {
        FakeTransport(self.clone())
    }

    /// Address of broker `id`.
    pub fn addr(&self, id: i32) -> String {
        self.lock()
            .nodes
            .get(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default()
    }

    /// The bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.lock()
            .nodes
            .values()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Creates a topic with `partitions` partitions, leaders spread over the brokers.
    pub fn create_topic(&self, name: &str, partitions: usize) {
        let mut st = self.lock();
        let ids: Vec<i32> = st.nodes.keys().copied().collect();
        let logs = (0..partitions)
            .map(|p| PartitionLog {
                leader: ids[p % ids.len()],
                ..PartitionLog::default()
            })
            .collect();
        st.topics.insert(name.to_string(), logs);
        // Created again: as Kafka, the groups' offsets of the deleted topic go with it.
        for g in st.groups.values_mut() {
            g.offsets.retain(|(t, _), _| t != name);
        }
        st.next_topic_id += 1;
        let id = st.next_topic_id;
        st.topic_ids.insert(name.to_string(), id);
    }

    /// Whether unknown topics are created on first use, and with how many partitions.
    pub fn auto_create(&self, partitions: Option<usize>) {
        self.lock().auto_create_partitions = partitions;
    }

    /// Misbehaves this way for the next `times` matching requests (`usize::MAX`: from now on).
    pub fn misbehave_times(&self, what: Misbehave, times: usize) {
        self.lock().rules.push(Rule { what, times });
    }

    /// Misbehaves this way from now on.
    pub fn misbehave(&self, what: Misbehave) {
        self.misbehave_times(what, usize::MAX);
    }

    /// Behaves again.
    pub fn behave(&self) {
        self.lock().rules.clear();
    }

    /// Moves a partition's leadership.
    pub fn set_leader(&self, topic: &str, partition: i32, leader: i32) {
        if let Some(p) = self
            .lock()
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(partition as usize))
        {
            p.leader = leader;
            p.leader_epoch += 1;
        }
    }

    /// Requires SASL PLAIN with this user and password on every connection, granting sessions of
    /// `session_ms` (0: unlimited); like Kafka, a request after the session ended closes the stream.
    pub fn require_sasl(&self, user: &str, password: &str, session_ms: i64) {
        self.lock().sasl = Some((user.into(), password.into(), session_ms));
    }

    /// Stops a broker: its connections close, new ones are refused.
    pub fn stop(&self, id: i32) {
        let tasks = match self.lock().nodes.get_mut(&id) {
            Some(n) => {
                n.up = false;
                std::mem::take(&mut n.tasks)
            }
            None => Vec::new(),
        };
        for t in tasks {
            t.abort();
        }
    }

    /// Starts a stopped broker again.
    pub fn start(&self, id: i32) {
        if let Some(n) = self.lock().nodes.get_mut(&id) {
            n.up = true;
        }
    }

    /// How many requests of this API arrived.
    /// From now on, batches appended to this partition stay invisible to readers (appended, not yet
    /// committed) until [`FakeBroker::commit`].
    pub fn hold_commits(&self, topic: &str, partition: i32) {
        let mut st = self.lock();
        if let Some(log) = st
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(partition as usize))
        {
            log.held_at = Some(log.next_offset);
        }
    }

    /// Makes every batch of the partition visible again.
    pub fn commit(&self, topic: &str, partition: i32) {
        let mut st = self.lock();
        if let Some(log) = st
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(partition as usize))
        {
            log.held_at = None;
        }
    }

    /// Requests of `api` answered so far.
    pub fn requests(&self, api: ApiKey) -> usize {
        self.lock()
            .requests
            .get(&(api as i16))
            .copied()
            .unwrap_or(0)
    }

    /// Streams currently served.
    pub fn open_streams(&self) -> usize {
        self.lock().open_streams
    }

    /// Every record value of a topic, partition by partition, in offset order.
    pub fn values(&self, topic: &str) -> Vec<Vec<u8>> {
        let st = self.lock();
        let mut out = Vec::new();
        for log in st.topics.get(topic).into_iter().flatten() {
            for (_, b) in &log.batches {
                out.extend(batch_values(b));
            }
        }
        out
    }

    /// Every record value of one partition, in offset order.
    pub fn partition_values(&self, topic: &str, partition: i32) -> Vec<Vec<u8>> {
        let st = self.lock();
        let Some(log) = st.topics.get(topic).and_then(|t| t.get(partition as usize)) else {
            return Vec::new();
        };
        log.batches
            .iter()
            .flat_map(|(_, b)| batch_values(b))
            .collect()
    }

    /// Appends records to a partition directly (as another producer would).
    pub fn append(&self, topic: &str, partition: i32, values: &[&[u8]]) {
        self.append_compressed(
            topic,
            partition,
            values,
            crate::wire::compression::Compression::None,
        );
    }

    /// [`FakeBroker::append`] in one batch compressed with `codec`.
    pub fn append_compressed(
        &self,
        topic: &str,
        partition: i32,
        values: &[&[u8]],
        codec: crate::wire::compression::Compression,
    ) {
        let mut buf = BytesMut::new();
        let mut b = records::BatchBuilder::begin(&mut buf, 1_700_000_000_000);
        for v in values {
            b.push(&mut buf, 1_700_000_000_000, None, Some(v), &[]);
        }
        let mut c = crate::wire::compression::Compressor::default();
        if b.finish(&mut buf, codec, None, records::ProducerStamp::NONE, &mut c)
            .is_err()
        {
            return;
        }
        let mut st = self.lock();
        if let Some(log) = st
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(partition as usize))
        {
            store(log, buf);
        }
    }

    /// Takes one rule matching `pred`, counting it down; returns what it says.
    fn take_rule(&self, pred: impl Fn(&Misbehave) -> bool) -> Option<Misbehave> {
        let mut st = self.lock();
        let i = st.rules.iter().position(|r| r.times > 0 && pred(&r.what))?;
        let r = &mut st.rules[i];
        r.times = r.times.saturating_sub(1);
        let what = r.what.clone();
        if r.times == 0 {
            st.rules.remove(i);
        }
        Some(what)
    }
}

/// The in-memory way to a [`FakeBroker`].
#[derive(Debug, Clone)]
pub struct FakeTransport(FakeBroker);

impl Transport for FakeTransport {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
        _until: Instant,
    ) -> BoxFuture<'a, Result<BoxIo, ConnError>> {
        Box::pin(async move {
            let node = {
                let st = self.0.lock();
                st.nodes
                    .iter()
                    .find(|(_, n)| n.addr == addr)
                    .map(|(id, n)| (*id, n.up))
            };
            match node {
                Some((id, true)) => {
                    let (client, server) = tokio::io::duplex(1 << 20);
                    self.0.serve(id, Box::new(server));
                    Ok(Box::new(client) as BoxIo)
                }
                _ => Err(ConnError::Connect {
                    addr: addr.to_string(),
                    detail: "Connection refused (os error 111)".into(),
                }),
            }
        })
    }
}

/// A fresh, empty directory for one test: `<temp dir>/shipper-<name>-<pid>`, emptied first.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("shipper-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a scratch directory under the temp dir");
    d
}

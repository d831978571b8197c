//! Reading a topic: ListOffsets to find where to start, then a Fetch loop with one long-polling request
//! in flight per leader broker. The next fetch for a broker is sent as soon as the previous response's
//! batch headers tell the next offsets, before its records are decoded, so the broker stays busy while we
//! write output.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::cluster::{Cluster, TopicMeta};
use crate::error::{is_stale_metadata_code, Error, Result};
use crate::wire::records::{self, Record, RecordError};

/// Fetch version: 12, the last that names topics (Kafka 2.7+; 4.x still serves it).
const FETCH_VERSIONS: VersionRange = VersionRange { min: 12, max: 12 };
/// ListOffsets versions: the flexible ones (6+, Kafka 2.5+).
const LIST_OFFSETS_VERSIONS: VersionRange = VersionRange { min: 6, max: 7 };
/// ListOffsets timestamp for the earliest offset.
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp for the latest offset (the high watermark).
pub const LATEST: i64 = -1;

/// Where to start reading each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The log start.
    Beginning,
    /// The end: only new records.
    End,
    /// This absolute offset (clamped to what exists).
    Absolute(i64),
    /// This many records before the end of each partition.
    FromEnd(i64),
    /// The first record at or after this timestamp (ms).
    Timestamp(i64),
}

impl StartOffset {
    /// Parses `beginning`, `end`, `N`, `-N`, `s@TIMESTAMP_MS`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "beginning" | "earliest" => Some(StartOffset::Beginning),
            "end" | "latest" => Some(StartOffset::End),
            _ => {
                if let Some(ts) = s.strip_prefix("s@") {
                    return ts.parse().ok().map(StartOffset::Timestamp);
                }
                let n: i64 = s.parse().ok()?;
                Some(if n < 0 {
                    StartOffset::FromEnd(-n)
                } else {
                    StartOffset::Absolute(n)
                })
            }
        }
    }
}

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
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 64 * 1024 * 1024,
            partition_max_bytes: 8 * 1024 * 1024,
            max_decompressed_bytes: 256 * 1024 * 1024,
        }
    }
}

/// One partition's share of a fetch response.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Partition.
    pub partition: i32,
    /// The offset asked for: records below it are dropped.
    pub fetch_offset: i64,
    /// Raw batches (the last may be truncated).
    pub records: Bytes,
    /// High watermark at the time of the response.
    pub high_watermark: i64,
}

impl Fetched {
    /// Calls `f` for each record at or after the fetch offset, skipping control batches. `scratch` is
    /// reused for decompression.
    pub fn for_each_record(
        &self,
        scratch: &mut Vec<u8>,
        max_decompressed: usize,
        mut f: impl FnMut(&Record<'_>),
    ) -> std::result::Result<(), RecordError> {
        for b in records::split_batches(&self.records) {
            let (h, batch) = b?;
            if h.next_offset() <= self.fetch_offset || h.is_control() {
                continue;
            }
            records::verify_crc(&h, batch)?;
            let section = records::records_section(&h, batch, scratch, max_decompressed)?;
            for r in records::records(&h, section) {
                let r = r?;
                if r.offset >= self.fetch_offset {
                    f(&r);
                }
            }
        }
        Ok(())
    }

    /// The offset after the last whole batch in this response, or the fetch offset if there is none.
    pub fn next_offset(&self) -> std::result::Result<i64, RecordError> {
        let mut next = self.fetch_offset;
        for b in records::split_batches(&self.records) {
            let (h, _) = b?;
            next = next.max(h.next_offset());
        }
        Ok(next)
    }
}

#[derive(Debug, Clone)]
struct PartitionState {
    offset: i64,
    /// The end offset as of start, for exit-at-end.
    end_at_start: i64,
    in_flight: bool,
}

type FetchOutcome = (i32, Vec<i32>, Result<FetchResponse>);

/// Reads a topic's partitions from their leaders.
pub struct Consumer {
    cluster: Arc<Cluster>,
    meta: Arc<TopicMeta>,
    cfg: FetchConfig,
    parts: BTreeMap<i32, PartitionState>,
    tasks: JoinSet<FetchOutcome>,
    backoff: Option<Backoff>,
}

impl Consumer {
    /// Resolves the start offsets of `partitions` (all when empty) of the topic.
    pub async fn new(
        cluster: Arc<Cluster>,
        meta: Arc<TopicMeta>,
        partitions: &[i32],
        start: StartOffset,
        cfg: FetchConfig,
    ) -> Result<Self> {
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
            partitions.to_vec()
        };
        let earliest = list_offsets(&cluster, &meta.name, &ids, EARLIEST).await?;
        let latest = list_offsets(&cluster, &meta.name, &ids, LATEST).await?;
        let by_time = match start {
            StartOffset::Timestamp(ts) => Some(list_offsets(&cluster, &meta.name, &ids, ts).await?),
            _ => None,
        };
        let mut parts = BTreeMap::new();
        for id in ids {
            let lo = earliest.get(&id).copied().unwrap_or(0);
            let hi = latest.get(&id).copied().unwrap_or(lo);
            let offset = match start {
                StartOffset::Beginning => lo,
                StartOffset::End => hi,
                StartOffset::Absolute(n) => n.clamp(lo, hi),
                StartOffset::FromEnd(n) => (hi - n).max(lo),
                StartOffset::Timestamp(_) => by_time
                    .as_ref()
                    .and_then(|m| m.get(&id).copied())
                    .filter(|&o| o >= 0)
                    .unwrap_or(hi),
            };
            parts.insert(
                id,
                PartitionState {
                    offset,
                    end_at_start: hi,
                    in_flight: false,
                },
            );
        }
        Ok(Consumer {
            cluster,
            meta,
            cfg,
            parts,
            tasks: JoinSet::new(),
            backoff: None,
        })
    }

    /// Whether every partition has reached the end offset it had when the consumer started.
    pub fn at_end_of_start(&self) -> bool {
        self.parts.values().all(|p| p.offset >= p.end_at_start)
    }

    /// Current position of each partition.
    pub fn positions(&self) -> Vec<(i32, i64)> {
        self.parts.iter().map(|(k, v)| (*k, v.offset)).collect()
    }

    /// Sends a fetch to every leader that has none in flight, then waits for the next response. Returns
    /// the partitions' data (possibly empty after a long-poll timeout).
    pub async fn poll(&mut self) -> Result<Vec<Fetched>> {
        self.dispatch().await?;
        let Some(res) = self.tasks.join_next().await else {
            return Ok(Vec::new());
        };
        let (leader, asked, resp) = match res {
            Ok(o) => o,
            Err(e) => panic!("fetch task failed: {e}"),
        };
        for p in &asked {
            if let Some(s) = self.parts.get_mut(p) {
                s.in_flight = false;
            }
        }
        let resp = match resp {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                crate::log::debug(format_args!("fetch from broker {leader} failed: {e}"));
                self.recover().await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        if resp.error_code != 0 {
            return Err(Error::Kafka {
                context: format!("broker {leader}: Fetch"),
                code: resp.error_code,
            });
        }
        let mut out = Vec::new();
        let mut stale = false;
        for t in resp.responses {
            for pd in t.partitions {
                let p = pd.partition_index;
                let Some(state) = self.parts.get(&p).cloned() else {
                    continue;
                };
                match pd.error_code {
                    0 => {}
                    1 => {
                        self.reset_out_of_range(p).await?;
                        continue;
                    }
                    c if is_stale_metadata_code(c) || c == 7 => {
                        stale = true;
                        continue;
                    }
                    c => {
                        return Err(Error::Kafka {
                            context: format!("topic '{}' partition {p}: Fetch", self.meta.name),
                            code: c,
                        })
                    }
                }
                let f = Fetched {
                    partition: p,
                    fetch_offset: state.offset,
                    records: pd.records.unwrap_or_default(),
                    high_watermark: pd.high_watermark,
                };
                let next = f.next_offset().map_err(|source| Error::Records {
                    topic: self.meta.name.clone(),
                    partition: p,
                    source,
                })?;
                if let Some(s) = self.parts.get_mut(&p) {
                    s.offset = next;
                }
                out.push(f);
            }
        }
        if stale {
            self.recover().await?;
        } else {
            self.backoff = None;
            // Keep the broker busy: the next fetch leaves before the caller decodes this one.
            self.dispatch().await?;
        }
        Ok(out)
    }

    /// After an error: back off, then refresh metadata so the next fetches go to current leaders.
    async fn recover(&mut self) -> Result<()> {
        let limit = self.cluster.options().retry_limit;
        let b = self.backoff.get_or_insert_with(|| Backoff::new(limit));
        if !b.wait().await {
            return Err(Error::NoLeader {
                topic: self.meta.name.clone(),
                partition: self.parts.keys().next().copied().unwrap_or(0),
            });
        }
        let generation = self.cluster.generation();
        match self.cluster.refresh(&self.meta.name, generation).await {
            Ok(()) => {
                if let Some(m) = self.cluster.cached_topic(&self.meta.name) {
                    self.meta = m;
                }
                Ok(())
            }
            Err(e) if e.is_retriable() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn reset_out_of_range(&mut self, p: i32) -> Result<()> {
        let lo = list_offsets(&self.cluster, &self.meta.name, &[p], EARLIEST).await?;
        let hi = list_offsets(&self.cluster, &self.meta.name, &[p], LATEST).await?;
        if let Some(s) = self.parts.get_mut(&p) {
            let lo = lo.get(&p).copied().unwrap_or(0);
            let hi = hi.get(&p).copied().unwrap_or(lo);
            let new = if s.offset < lo { lo } else { hi };
            crate::log::warn(format_args!(
                "topic '{}' partition {p}: offset {} out of range, resetting to {new}",
                self.meta.name, s.offset
            ));
            s.offset = new;
        }
        Ok(())
    }

    async fn dispatch(&mut self) -> Result<()> {
        let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
        for (p, s) in &self.parts {
            if s.in_flight {
                continue;
            }
            let leader = self
                .meta
                .partitions
                .iter()
                .find(|m| m.id == *p)
                .map_or(-1, |m| m.leader);
            by_leader.entry(leader).or_default().push(*p);
        }
        if let Some(orphans) = by_leader.remove(&-1) {
            crate::log::debug(format_args!("partitions {orphans:?} have no leader yet"));
        }
        for (leader, ps) in by_leader {
            let conn = match self.cluster.broker(leader).await {
                Ok(c) => c,
                Err(e) if e.is_retriable() => {
                    crate::log::debug(format_args!("broker {leader}: {e}"));
                    self.recover().await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let version = conn.version::<FetchRequest>(FETCH_VERSIONS)?;
            let mut ft = FetchTopic::default();
            ft.topic = TopicName(StrBytes::from_string(self.meta.name.clone()));
            for p in &ps {
                let s = self.parts.get_mut(p).expect("partition in the map");
                s.in_flight = true;
                let mut fp = FetchPartition::default();
                fp.partition = *p;
                fp.fetch_offset = s.offset;
                fp.current_leader_epoch = -1;
                fp.last_fetched_epoch = -1;
                fp.log_start_offset = -1;
                fp.partition_max_bytes = self.cfg.partition_max_bytes;
                ft.partitions.push(fp);
            }
            let mut req = FetchRequest::default();
            req.replica_id = kafka_protocol::messages::BrokerId(-1);
            req.max_wait_ms = self.cfg.max_wait_ms;
            req.min_bytes = self.cfg.min_bytes;
            req.max_bytes = self.cfg.max_bytes;
            req.isolation_level = 0;
            req.session_id = 0;
            req.session_epoch = -1;
            req.topics = vec![ft];
            self.tasks.spawn(async move {
                let r = conn.call_at(&req, version).await;
                (leader, ps, r)
            });
        }
        Ok(())
    }
}

/// The offset for `timestamp` (or [`EARLIEST`] / [`LATEST`]) of each partition, asking each leader.
pub async fn list_offsets(
    cluster: &Cluster,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<HashMap<i32, i64>> {
    let mut backoff = Backoff::new(cluster.options().retry_limit);
    let mut result = HashMap::new();
    let mut todo: Vec<i32> = partitions.to_vec();
    loop {
        let meta = cluster.topic(topic, false).await?;
        let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in &todo {
            let leader = meta
                .partitions
                .iter()
                .find(|m| m.id == *p)
                .map_or(-1, |m| m.leader);
            by_leader.entry(leader).or_default().push(*p);
        }
        let generation = cluster.generation();
        let mut retry = Vec::new();
        let mut last_err = None;
        for (leader, ps) in by_leader {
            match list_offsets_at(cluster, topic, leader, &ps, timestamp).await {
                Ok(got) => {
                    for (p, r) in got {
                        match r {
                            Ok(o) => {
                                result.insert(p, o);
                            }
                            Err(e) if e.is_retriable() => {
                                retry.push(p);
                                last_err = Some(e);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if e.is_retriable() => {
                    retry.extend(ps);
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if retry.is_empty() {
            return Ok(result);
        }
        todo = retry;
        if !backoff.wait().await {
            return Err(last_err.unwrap_or(Error::NoBroker("ListOffsets".into())));
        }
        let _ = cluster.refresh(topic, generation).await;
    }
}

type OffsetResults = Vec<(i32, Result<i64>)>;

async fn list_offsets_at(
    cluster: &Cluster,
    topic: &str,
    leader: i32,
    partitions: &[i32],
    timestamp: i64,
) -> Result<OffsetResults> {
    if leader < 0 {
        return Ok(partitions
            .iter()
            .map(|&p| {
                (
                    p,
                    Err(Error::NoLeader {
                        topic: topic.into(),
                        partition: p,
                    }),
                )
            })
            .collect());
    }
    let conn = cluster.broker(leader).await?;
    let version = conn.version::<ListOffsetsRequest>(LIST_OFFSETS_VERSIONS)?;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    for &p in partitions {
        let mut lp = ListOffsetsPartition::default();
        lp.partition_index = p;
        lp.current_leader_epoch = -1;
        lp.timestamp = timestamp;
        t.partitions.push(lp);
    }
    let mut req = ListOffsetsRequest::default();
    // The crate defaults replica_id to 0, which asks as a follower and gets the log end, not the HW.
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    req.isolation_level = 0;
    req.topics = vec![t];
    let resp = conn.call_at(&req, version).await?;
    let mut out = Vec::new();
    for t in resp.topics {
        for p in t.partitions {
            let r = if p.error_code == 0 {
                Ok(p.offset)
            } else {
                Err(Error::Kafka {
                    context: format!(
                        "topic '{topic}' partition {}: ListOffsets",
                        p.partition_index
                    ),
                    code: p.error_code,
                })
            };
            out.push((p.partition_index, r));
        }
    }
    Ok(out)
}

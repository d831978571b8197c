//! ListOffsets: where a partition starts, ends, or first reaches a timestamp, asked of each leader,
//! retried (after a metadata refresh) until the cluster's retry limit.

use std::collections::HashMap;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::time::Instant;

use crate::backoff::{gave_up, note_failure, Backoff};
use crate::cluster::Cluster;
use crate::error::{code, Error, Result, Target};

/// ListOffsets versions: the flexible ones (6+, Kafka 2.5+).
const LIST_OFFSETS_VERSIONS: VersionRange = VersionRange { min: 6, max: 7 };
/// ListOffsets timestamp for the earliest offset.
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp for the latest offset (the high watermark).
pub const LATEST: i64 = -1;

/// The offset for `timestamp` (or [`EARLIEST`] / [`LATEST`]) of each partition, asking each leader;
/// -1 for a timestamp after the last record.
pub async fn list_offsets(
    cluster: &Cluster,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<HashMap<i32, i64>> {
    list_offsets_as(cluster, topic, partitions, timestamp, false).await
}

/// [`list_offsets`] as a read_committed consumer sees the log when `read_committed`: [`LATEST`] is
/// then the last stable offset (before the first open transaction), not the high watermark.
pub async fn list_offsets_as(
    cluster: &Cluster,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
    read_committed: bool,
) -> Result<HashMap<i32, i64>> {
    let mut backoff = Backoff::until(cluster.options().deadline());
    let mut result = HashMap::new();
    let mut todo: Vec<i32> = partitions.to_vec();
    // What to name if the time runs out (not a connect the deadline cut short: t10 was told
    // "connect timed out" after 10 s of OFFSET_NOT_AVAILABLE from a connected broker).
    let mut telling: Option<Error> = None;
    loop {
        let ask = Ask {
            topic,
            partitions: &todo,
            timestamp,
            read_committed,
        };
        let generation = cluster.generation();
        // An unanswered request is said after a few seconds, as in other retry loops (t19 F2).
        let pass = crate::backoff::attempt(
            &backoff,
            list_offsets_pass(cluster, ask, backoff.deadline()),
        )
        .await?;
        result.extend(pass.found);
        let Some(err) = pass.last_err else {
            return Ok(result);
        };
        todo = pass.retry;
        crate::backoff::tell_still_trying(&backoff, &err);
        note_failure(&mut telling, err);
        if !backoff.wait().await {
            let last = telling.take().unwrap_or(Error::NoBrokers);
            return Err(gave_up(&backoff, last));
        }
        let _ = cluster.refresh(topic, generation, backoff.deadline()).await;
    }
}

/// What one pass of ListOffsets requests found: the offsets of the partitions that answered, the
/// partitions to ask again (a retriable error, no leader, no answer) and the last such error
/// (`None`: nothing to ask again).
pub struct OffsetsPass {
    /// Offsets found.
    pub found: HashMap<i32, i64>,
    /// Partitions to ask again.
    pub retry: Vec<i32>,
    /// Why the last of them failed.
    pub last_err: Option<Error>,
}

/// One ListOffsets request per leader of `ask.partitions`, no retry: a partition that fails
/// retriably is in the answer's `retry`; an error that retrying cannot mend is returned.
pub async fn list_offsets_pass(
    cluster: &Cluster,
    ask: Ask<'_>,
    deadline: Option<Instant>,
) -> Result<OffsetsPass> {
    let topic = ask.topic;
    let meta = cluster
        .topic_for(topic, false, deadline, ask.partitions)
        .await?;
    let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in ask.partitions {
        by_leader.entry(meta.leader(*p)).or_default().push(*p);
    }
    let mut out = OffsetsPass {
        found: HashMap::new(),
        retry: Vec::new(),
        last_err: None,
    };
    // Every leader asked at once: a hung one must not hold up the others' answers.
    let by_leader: Vec<(i32, Vec<i32>)> = by_leader.into_iter().collect();
    let answers = crate::tasks::join_all(
        by_leader
            .iter()
            .map(|(leader, ps)| async move {
                match *leader {
                    l if l < 0 => Err(Error::NoLeader {
                        topic: topic.into(),
                        partition: ps[0],
                    }),
                    l => {
                        let one = Ask {
                            partitions: ps,
                            ..ask
                        };
                        list_offsets_at(cluster, l, one, deadline).await
                    }
                }
            })
            .collect(),
    )
    .await;
    for ((_, ps), got) in by_leader.into_iter().zip(answers) {
        let got = match got {
            Ok(g) => g,
            Err(e) if e.is_retriable() => {
                out.retry.extend(ps);
                out.last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        for p in ps {
            match got.get(&p) {
                Some(Ok(o)) => {
                    out.found.insert(p, *o);
                }
                Some(Err(e)) if !e.is_retriable() => return Err(e.clone()),
                Some(Err(e)) => {
                    out.retry.push(p);
                    out.last_err = Some(e.clone());
                }
                None => {
                    out.retry.push(p);
                    out.last_err = Some(Error::Incomplete {
                        api: "ListOffsets",
                        target: Target::Partition(topic.into(), p),
                        what: "no answer for this partition",
                    });
                }
            }
        }
    }
    Ok(out)
}

type OffsetResults = HashMap<i32, Result<i64>>;

/// What a ListOffsets request asks.
#[derive(Clone, Copy)]
pub struct Ask<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Its partitions asked for.
    pub partitions: &'a [i32],
    /// [`EARLIEST`], [`LATEST`] or a timestamp.
    pub timestamp: i64,
    /// As a read_committed consumer sees the log.
    pub read_committed: bool,
}

async fn list_offsets_at(
    cluster: &Cluster,
    leader: i32,
    ask: Ask<'_>,
    deadline: Option<Instant>,
) -> Result<OffsetResults> {
    let Ask {
        topic,
        partitions,
        timestamp,
        read_committed,
    } = ask;
    let conn = cluster.broker(leader, deadline).await?;
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
    req.replica_id = BrokerId(-1);
    req.isolation_level = i8::from(read_committed);
    req.topics = vec![t];
    let resp = conn
        .call(&req, version, conn.request_deadline(deadline))
        .await?;
    let mut out = HashMap::new();
    for t in resp.topics {
        if t.name.0.as_str() != topic {
            continue;
        }
        for p in t.partitions {
            if !partitions.contains(&p.partition_index) {
                continue;
            }
            let r = match code(p.error_code) {
                None => Ok(p.offset),
                Some(c) => Err(Error::Kafka {
                    api: "ListOffsets",
                    target: Target::Partition(topic.into(), p.partition_index),
                    code: c,
                }),
            };
            out.insert(p.partition_index, r);
        }
    }
    Ok(out)
}

//! What `shipper groups` shows: the groups of a cluster (ListGroups on every broker), and one group's
//! members, assignments, committed offsets and lag (ConsumerGroupDescribe for consumer-protocol groups,
//! DescribeGroups for classic ones, OffsetFetch, ListOffsets), like `kafka-consumer-groups --describe`.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::assign::{decode_assignment, Assignment};
use super::coordinator::Coordinator;
use super::offsets;
use crate::cluster::Cluster;
use crate::consumer::offsets::{list_offsets_pass, Ask};
use crate::consumer::LATEST;
use crate::error::{code, Code, Error, Result, Target};

const LIST_GROUPS_VERSIONS: VersionRange = VersionRange { min: 4, max: 5 };
const DESCRIBE_GROUPS_VERSIONS: VersionRange = VersionRange { min: 5, max: 6 };
const CONSUMER_GROUP_DESCRIBE_VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

/// One group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    /// The group id.
    pub group: String,
    /// Its protocol type ("consumer" for consumers; empty for groups that only commit offsets).
    pub protocol_type: String,
    /// Its state (Stable, Empty, PreparingRebalance, ...).
    pub state: String,
    /// Its type ("classic" or "consumer"; empty on brokers before Kafka 3.8).
    pub group_type: String,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member id.
    pub member_id: String,
    /// The client id it connected with.
    pub client_id: String,
    /// The host it connected from.
    pub host: String,
    /// Its partitions.
    pub assignment: Assignment,
}

/// One partition of a group: where the group stands and how far behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The committed offset, if any.
    pub committed: Option<i64>,
    /// The log end offset.
    pub end: Option<i64>,
    /// Index into the members of the member assigned this partition, if any.
    pub member: Option<usize>,
}

impl PartitionLag {
    /// Records not yet committed: end - committed (`None` without a committed offset).
    pub fn lag(&self) -> Option<i64> {
        Some((self.end? - self.committed?).max(0))
    }
}

/// One group described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The group id.
    pub group: String,
    /// Its state.
    pub state: String,
    /// "consumer" (KIP-848) or "classic".
    pub protocol: String,
    /// The assignor in use (range, uniform, ...), if known.
    pub assignor: String,
    /// Its members.
    pub members: Vec<MemberInfo>,
    /// Every partition it has a committed offset for or is assigned, in order.
    pub partitions: Vec<PartitionLag>,
}

/// The groups of a cluster: every broker asked at once (each knows the groups it coordinates).
pub struct GroupList {
    /// The groups the brokers that answered know, in order.
    pub groups: Vec<Listed>,
    /// The brokers that did not answer, with why: their groups are missing from `groups`.
    pub failed: Vec<Error>,
}

/// Every group on every broker, in order. A broker that does not answer (hung, down, refusing)
/// leaves its groups out and is in `failed`, rather than hiding what the others answered (t24 F3).
pub async fn list(cluster: &Cluster) -> Result<GroupList> {
    let md = cluster.metadata(Some(&[]), false).await?;
    let deadline = cluster.options().deadline();
    let answers = crate::tasks::join_all(
        md.brokers
            .iter()
            .map(|b| list_on(cluster, b.id, b.addr(), deadline))
            .collect(),
    )
    .await;
    let mut out = BTreeSet::new();
    let mut failed = Vec::new();
    for a in answers {
        match a {
            Ok(groups) => out.extend(groups),
            Err(e) => failed.push(e),
        }
    }
    Ok(GroupList {
        groups: out.into_iter().collect(),
        failed,
    })
}

/// The groups one broker coordinates.
async fn list_on(
    cluster: &Cluster,
    id: i32,
    addr: String,
    deadline: Option<tokio::time::Instant>,
) -> Result<Vec<Listed>> {
    let conn = cluster.broker(id, deadline).await?;
    let version = conn.version::<ListGroupsRequest>(LIST_GROUPS_VERSIONS)?;
    let resp = conn
        .call(
            &ListGroupsRequest::default(),
            version,
            conn.request_deadline(deadline),
        )
        .await?;
    if let Some(c) = code(resp.error_code) {
        return Err(Error::Kafka {
            api: "ListGroups",
            target: Target::Broker(addr),
            code: c,
        });
    }
    Ok(resp
        .groups
        .into_iter()
        .map(|g| Listed {
            group: g.group_id.0.to_string(),
            protocol_type: g.protocol_type.to_string(),
            state: g.group_state.to_string(),
            group_type: g.group_type.to_string(),
        })
        .collect())
}

/// One group: members, assignments, committed offsets, end offsets.
pub async fn describe(cluster: &std::sync::Arc<Cluster>, group: &str) -> Result<Described> {
    let coord = Coordinator::new(cluster.clone(), group);
    let deadline = cluster.options().deadline();
    let conn = crate::backoff::retry(deadline, |d| coord.connection(d)).await?;
    let mut d = None;
    if conn.supports::<ConsumerGroupDescribeRequest>() {
        d = consumer_group(&coord, deadline).await?;
    }
    let mut d = match d {
        Some(d) => d,
        None => classic_group(&coord, deadline).await?,
    };
    let committed = offsets::fetch(&coord, None, None, deadline).await?;
    let mut parts: BTreeMap<(String, i32), PartitionLag> = BTreeMap::new();
    for ((t, p), o) in &committed {
        parts.insert((t.clone(), *p), lag_row(t, *p));
        if let Some(r) = parts.get_mut(&(t.clone(), *p)) {
            r.committed = Some(*o);
        }
    }
    for (i, m) in d.members.iter().enumerate() {
        for (t, ps) in &m.assignment {
            for p in ps {
                parts
                    .entry((t.clone(), *p))
                    .or_insert_with(|| lag_row(t, *p))
                    .member = Some(i);
            }
        }
    }
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts.keys() {
        by_topic.entry(t.clone()).or_default().push(*p);
    }
    for (t, ps) in by_topic {
        let (ends, missing) = ends_known(cluster, &t, &ps).await;
        for (p, e) in ends {
            if let Some(r) = parts.get_mut(&(t.clone(), p)) {
                r.end = Some(e);
            }
        }
        if let Some((ps, e)) = missing {
            crate::log::warn(format_args!(
                "end offsets of '{}' partition(s) {} unknown (shown as -): {e}",
                crate::escape::Esc::str(&t),
                crate::escape::partitions(&ps)
            ));
        }
    }
    d.partitions = parts.into_values().collect();
    Ok(d)
}

/// How long the end offsets of a described group's partitions are asked for: what answers by then is
/// shown, the rest is "-" (t24 F2: one leaderless partition hid every partition's end and lag, after
/// 30 s). An election after a broker is fenced takes about as long.
const ENDS_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The end offsets of `ps` that their leaders give within [`ENDS_WITHIN`] (each leader asked on its
/// own: a hung one holds up no other), and the partitions left unknown with the last reason.
async fn ends_known(
    cluster: &Cluster,
    topic: &str,
    ps: &[i32],
) -> (
    std::collections::HashMap<i32, i64>,
    Option<(Vec<i32>, Error)>,
) {
    let deadline = tokio::time::Instant::now() + ENDS_WITHIN;
    let mut found = std::collections::HashMap::new();
    let mut todo = ps.to_vec();
    let mut why = None;
    loop {
        let ask = Ask {
            topic,
            partitions: &todo,
            timestamp: LATEST,
            read_committed: false,
        };
        let generation = cluster.generation();
        // Bounded inside (each request and connection by the deadline); the outer bound is for
        // anything that is not.
        let pass = tokio::time::timeout_at(
            deadline + std::time::Duration::from_secs(1),
            list_offsets_pass(cluster, ask, Some(deadline)),
        )
        .await;
        match pass {
            Ok(Ok(pass)) => {
                found.extend(pass.found);
                todo = pass.retry;
                why = pass.last_err.or(why);
            }
            Ok(Err(e)) => {
                why = Some(e);
                break;
            }
            Err(_) => break,
        }
        let pause = std::time::Duration::from_millis(250);
        if todo.is_empty() || tokio::time::Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
        let _ = cluster.refresh(topic, generation, Some(deadline)).await;
    }
    todo.retain(|p| !found.contains_key(p));
    let missing = (!todo.is_empty()).then(|| {
        let e = why.unwrap_or(Error::Incomplete {
            api: "ListOffsets",
            target: Target::Topic(topic.into()),
            what: "no answer within 5 s",
        });
        (todo, e)
    });
    (found, missing)
}

fn lag_row(t: &str, p: i32) -> PartitionLag {
    PartitionLag {
        topic: t.to_string(),
        partition: p,
        committed: None,
        end: None,
        member: None,
    }
}

/// One ConsumerGroupDescribe of the coordinator's group: the group as the broker describes it, or
/// `None` when the group is not a consumer-protocol group (or the broker gave no group back).
async fn describe_consumer_group(
    coord: &Coordinator,
    deadline: Option<tokio::time::Instant>,
) -> Result<Option<DescribedGroup>> {
    let mut req = ConsumerGroupDescribeRequest::default();
    req.group_ids = vec![GroupId(StrBytes::from_string(coord.group().to_string()))];
    let first = |r: &kafka_protocol::messages::ConsumerGroupDescribeResponse| {
        r.groups.first().map_or(0, |g| g.error_code)
    };
    let (resp, _) = coord
        .call(
            &req,
            CONSUMER_GROUP_DESCRIBE_VERSIONS,
            deadline,
            None,
            first,
        )
        .await?;
    let Some(g) = resp.groups.into_iter().next() else {
        return Ok(None);
    };
    match code(g.error_code) {
        None => Ok(Some(g)),
        // Not a consumer-protocol group, or (Kafka 3.x) the protocol is not enabled.
        Some(Code::GroupIdNotFound | Code::UnsupportedVersion) => Ok(None),
        Some(c) => Err(coord.error("ConsumerGroupDescribe", c)),
    }
}

/// ConsumerGroupDescribe; `None` when the group is not a consumer-protocol group.
async fn consumer_group(
    coord: &Coordinator,
    deadline: Option<tokio::time::Instant>,
) -> Result<Option<Described>> {
    let Some(g) = describe_consumer_group(coord, deadline).await? else {
        return Ok(None);
    };
    let members = g
        .members
        .into_iter()
        .map(|m| MemberInfo {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: m
                .assignment
                .topic_partitions
                .into_iter()
                .map(|tp| {
                    (
                        tp.topic_name.0.to_string(),
                        tp.partitions.into_iter().collect(),
                    )
                })
                .collect(),
        })
        .collect();
    Ok(Some(Described {
        group: coord.group().to_string(),
        state: g.group_state.to_string(),
        protocol: "consumer".into(),
        assignor: g.assignor_name.to_string(),
        members,
        partitions: Vec::new(),
    }))
}

/// Whether the coordinator means this member of a consumer-protocol group to own nothing: its
/// target assignment is empty (an empty current assignment alone is not that: partitions meant for
/// it may still be held by a member that has to give them back first). `None` when it cannot tell
/// (the member or the group not described, or the call failed).
pub(super) async fn target_is_empty(coord: &Coordinator, member_id: &str) -> Option<bool> {
    let deadline = Some(tokio::time::Instant::now() + std::time::Duration::from_secs(5));
    let g = describe_consumer_group(coord, deadline).await.ok()??;
    let me = g
        .members
        .into_iter()
        .find(|m| m.member_id.as_str() == member_id)?;
    Some(
        me.target_assignment
            .topic_partitions
            .iter()
            .all(|tp| tp.partitions.is_empty()),
    )
}

/// DescribeGroups (classic groups, and groups that only commit offsets).
async fn classic_group(
    coord: &Coordinator,
    deadline: Option<tokio::time::Instant>,
) -> Result<Described> {
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(StrBytes::from_string(coord.group().to_string()))];
    let first = |r: &kafka_protocol::messages::DescribeGroupsResponse| {
        r.groups.first().map_or(0, |g| g.error_code)
    };
    let (resp, _) = coord
        .call(&req, DESCRIBE_GROUPS_VERSIONS, deadline, None, first)
        .await?;
    let Some(g) = resp.groups.into_iter().next() else {
        return Err(Error::Incomplete {
            api: "DescribeGroups",
            target: coord.target(),
            what: "no group in the answer",
        });
    };
    if let Some(c) = code(g.error_code) {
        return Err(coord.error("DescribeGroups", c));
    }
    let consumer = g.protocol_type.as_str() == "consumer";
    let members = g
        .members
        .into_iter()
        .map(|m| MemberInfo {
            member_id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assignment: if consumer {
                decode_assignment(&m.member_assignment).unwrap_or_default()
            } else {
                Assignment::new()
            },
        })
        .collect();
    Ok(Described {
        group: coord.group().to_string(),
        state: g.group_state.to_string(),
        protocol: "classic".into(),
        assignor: g.protocol_data.to_string(),
        members,
        partitions: Vec::new(),
    })
}

//! What `shipper groups` shows: the groups of a cluster (ListGroups on every broker), and one group's
//! members, assignments, committed offsets and lag (ConsumerGroupDescribe for consumer-protocol groups,
//! DescribeGroups for classic ones, OffsetFetch, ListOffsets), like `kafka-consumer-groups --describe`.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::assign::{decode_assignment, Assignment};
use super::coordinator::Coordinator;
use super::offsets;
use crate::cluster::Cluster;
use crate::consumer::{list_offsets, LATEST};
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

/// Every group on every broker, in order.
pub async fn list(cluster: &Cluster) -> Result<Vec<Listed>> {
    let md = cluster.metadata(Some(&[]), false).await?;
    let mut out = BTreeSet::new();
    for b in &md.brokers {
        let conn = cluster.broker(b.id, cluster.options().deadline()).await?;
        let version = conn.version::<ListGroupsRequest>(LIST_GROUPS_VERSIONS)?;
        let resp = conn
            .call(
                &ListGroupsRequest::default(),
                version,
                conn.request_deadline(None),
            )
            .await?;
        if let Some(c) = code(resp.error_code) {
            return Err(Error::Kafka {
                api: "ListGroups",
                target: Target::Broker(b.addr()),
                code: c,
            });
        }
        for g in resp.groups {
            out.insert(Listed {
                group: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
                group_type: g.group_type.to_string(),
            });
        }
    }
    Ok(out.into_iter().collect())
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
        match list_offsets(cluster, &t, &ps, LATEST).await {
            Ok(ends) => {
                for (p, e) in ends {
                    if let Some(r) = parts.get_mut(&(t.clone(), p)) {
                        r.end = Some(e);
                    }
                }
            }
            Err(e) => crate::log::warn(format_args!(
                "end offsets of '{}' unknown: {e}",
                crate::escape::Esc::str(&t)
            )),
        }
    }
    d.partitions = parts.into_values().collect();
    Ok(d)
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

/// ConsumerGroupDescribe; `None` when the group is not a consumer-protocol group.
async fn consumer_group(
    coord: &Coordinator,
    deadline: Option<tokio::time::Instant>,
) -> Result<Option<Described>> {
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
        None => {}
        // Not a consumer-protocol group, or (Kafka 3.x) the protocol is not enabled.
        Some(Code::GroupIdNotFound | Code::UnsupportedVersion) => return Ok(None),
        Some(c) => return Err(coord.error("ConsumerGroupDescribe", c)),
    }
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

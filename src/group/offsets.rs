//! Committed offsets: OffsetFetch (where a group stands) and OffsetCommit (where it stands now).

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::time::Instant;

use super::coordinator::Coordinator;
use crate::error::{code, Code, Error, Result, Target};

/// OffsetCommit: 8 (flexible, Kafka 2.8+); 9 carries the member epoch of the consumer protocol.
const OFFSET_COMMIT_VERSIONS: VersionRange = VersionRange { min: 8, max: 9 };
/// OffsetFetch: 8 (groups batched, Kafka 3.0+); 9 carries the member id and epoch.
const OFFSET_FETCH_VERSIONS: VersionRange = VersionRange { min: 8, max: 9 };

/// Offsets by (topic, partition).
pub type Offsets = BTreeMap<(String, i32), i64>;

/// Who commits: the member id and its generation (classic) or member epoch (consumer protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The member id the coordinator knows us by.
    pub member_id: String,
    /// The generation id (classic) or member epoch (consumer protocol).
    pub generation: i32,
}

/// The committed offsets of `group` for `topics` (all its partitions), or for every topic the group has
/// offsets for when `None`. Partitions with no committed offset are left out.
pub async fn fetch(
    coord: &Coordinator,
    topics: Option<&[(String, Vec<i32>)]>,
    member: Option<&Generation>,
    deadline: Option<Instant>,
) -> Result<Offsets> {
    // UNSTABLE_OFFSET_COMMIT (a transaction's offsets pending) and the like are retried.
    crate::backoff::retry(deadline, |d| fetch_once(coord, topics, member, d)).await
}

async fn fetch_once(
    coord: &Coordinator,
    topics: Option<&[(String, Vec<i32>)]>,
    member: Option<&Generation>,
    deadline: Option<Instant>,
) -> Result<Offsets> {
    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = GroupId(StrBytes::from_string(coord.group().to_string()));
    g.member_id = member.map(|m| StrBytes::from_string(m.member_id.clone()));
    g.member_epoch = member.map_or(-1, |m| m.generation);
    g.topics = topics.map(|ts| {
        ts.iter()
            .map(|(t, ps)| {
                let mut rt = OffsetFetchRequestTopics::default();
                rt.name = TopicName(StrBytes::from_string(t.clone()));
                rt.partition_indexes = ps.clone();
                rt
            })
            .collect()
    });
    let mut req = OffsetFetchRequest::default();
    req.groups = vec![g];
    req.require_stable = true;
    let (resp, _) = coord
        .call(&req, OFFSET_FETCH_VERSIONS, deadline, None, |r| {
            r.groups.first().map_or(r.error_code, |g| g.error_code)
        })
        .await?;
    let Some(g) = resp.groups.into_iter().next() else {
        return Err(Error::Incomplete {
            api: "OffsetFetch",
            target: coord.target(),
            what: "no group in the answer",
        });
    };
    if let Some(c) = code(g.error_code) {
        return Err(coord.error("OffsetFetch", c));
    }
    let mut out = Offsets::new();
    for t in g.topics {
        let name = t.name.0.to_string();
        for p in t.partitions {
            if let Some(c) = code(p.error_code) {
                return Err(Error::Kafka {
                    api: "OffsetFetch",
                    target: Target::Partition(name.clone(), p.partition_index),
                    code: c,
                });
            }
            if p.committed_offset >= 0 {
                out.insert((name.clone(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` (the next offset to read, per partition) as member `gen`. Returns the first
/// partition error, if any: ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS and
/// STALE_MEMBER_EPOCH mean the group moved on and this member's view is old.
pub async fn commit(
    coord: &Coordinator,
    gen: Option<&Generation>,
    offsets: &Offsets,
    deadline: Option<Instant>,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for ((t, p), o) in offsets {
        let mut rp = OffsetCommitRequestPartition::default();
        rp.partition_index = *p;
        rp.committed_offset = *o;
        rp.committed_leader_epoch = -1;
        rp.committed_metadata = Some(StrBytes::from_static_str(""));
        match topics.last_mut().filter(|rt| rt.name.0.as_str() == t) {
            Some(rt) => rt.partitions.push(rp),
            None => {
                let mut rt = OffsetCommitRequestTopic::default();
                rt.name = TopicName(StrBytes::from_string(t.clone()));
                rt.partitions.push(rp);
                topics.push(rt);
            }
        }
    }
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(StrBytes::from_string(coord.group().to_string()));
    req.generation_id_or_member_epoch = gen.map_or(-1, |g| g.generation);
    req.member_id = StrBytes::from_string(gen.map(|g| g.member_id.clone()).unwrap_or_default());
    req.topics = topics;
    // Coordinator errors come per partition in OffsetCommit: judge the first one as the top level.
    let first = |r: &kafka_protocol::messages::OffsetCommitResponse| {
        r.topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.error_code)
            .find(|c| *c != 0)
            .unwrap_or(0)
    };
    let (resp, _) = coord
        .call(&req, OFFSET_COMMIT_VERSIONS, deadline, None, first)
        .await?;
    let mut failed: Vec<(String, i32, Code)> = Vec::new();
    let mut answered = 0usize;
    for t in &resp.topics {
        for p in &t.partitions {
            answered += 1;
            if let Some(c) = code(p.error_code) {
                failed.push((t.name.0.to_string(), p.partition_index, c));
            }
        }
    }
    match commit_error_target(coord.group(), &failed, answered) {
        Some((target, code)) => Err(Error::Kafka {
            api: "OffsetCommit",
            target,
            code,
        }),
        None => Ok(()),
    }
}

/// What a refused commit names: the group when every partition was refused alike for a reason of
/// the group's (an ACL on it, a rebalance) or across topics, the topic when all of its partitions
/// were, else the first partition refused (t30 F2: "partition 0" was said when the group's ACL
/// refused the member's partitions 0 and 1).
fn commit_error_target(
    group: &str,
    failed: &[(String, i32, Code)],
    answered: usize,
) -> Option<(Target, Code)> {
    let (t, p, c) = failed.first()?;
    let alike = failed.len() == answered && failed.iter().all(|(_, _, fc)| fc == c);
    let one_topic = failed.iter().all(|(ft, _, _)| ft == t);
    let of_the_group = matches!(
        c,
        Code::GroupAuthorizationFailed
            | Code::CoordinatorNotAvailable
            | Code::NotCoordinator
            | Code::CoordinatorLoadInProgress
            | Code::IllegalGeneration
            | Code::UnknownMemberId
            | Code::RebalanceInProgress
            | Code::StaleMemberEpoch
            | Code::FencedMemberEpoch
            | Code::GroupIdNotFound
    );
    let target = match (alike, failed.len()) {
        (_, 1) if !of_the_group => Target::Partition(t.clone(), *p),
        (true, _) if of_the_group || !one_topic => Target::Group(group.to_string()),
        (true, _) => Target::Topic(t.clone()),
        (false, _) => Target::Partition(t.clone(), *p),
    };
    Some((target, *c))
}

/// Whether a commit failed only because the group moved on (a rebalance, a new epoch): expected now
/// and then, not worth more than a debug line when the next commit will do.
pub fn is_stale(e: &Error) -> bool {
    matches!(
        e.code(),
        Some(
            Code::IllegalGeneration
                | Code::UnknownMemberId
                | Code::RebalanceInProgress
                | Code::StaleMemberEpoch
                | Code::FencedMemberEpoch
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_commit_names_what_was_refused() {
        let f = |parts: &[(&str, i32, Code)]| -> Vec<(String, i32, Code)> {
            parts
                .iter()
                .map(|(t, p, c)| (t.to_string(), *p, *c))
                .collect()
        };
        let acl = Code::GroupAuthorizationFailed;
        let said = |failed: &[(String, i32, Code)], answered| {
            commit_error_target("g", failed, answered).map(|(t, _)| t.to_string())
        };
        // The group's ACL refused both partitions: the group, not "partition 0" (t30 F2).
        let both = f(&[("t", 0, acl), ("t", 1, acl)]);
        assert_eq!(said(&both, 2).as_deref(), Some("group 'g'"));
        assert_eq!(said(&f(&[("t", 0, acl)]), 1).as_deref(), Some("group 'g'"));
        let topic = Code::TopicAuthorizationFailed;
        let all = f(&[("t", 0, topic), ("t", 1, topic)]);
        assert_eq!(said(&all, 2).as_deref(), Some("topic 't'"));
        let across = f(&[("t", 0, topic), ("u", 1, topic)]);
        assert_eq!(said(&across, 2).as_deref(), Some("group 'g'"));
        // Some refused, some not: the first refused.
        let some = f(&[("t", 1, topic)]);
        assert_eq!(said(&some, 2).as_deref(), Some("topic 't' partition 1"));
        assert_eq!(said(&[], 2), None);
    }
}

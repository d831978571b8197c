//! A minimal KIP-848 group coordinator for the fake cluster (ConsumerGroupHeartbeat), served only
//! when [`FakeBroker::offer_consumer_protocol`] was called. It drives the consumer protocol's error
//! paths; the real broker proves the protocol.
//!
//! The group epoch goes up when a member joins or leaves. Every member is at the group's epoch after
//! each heartbeat it makes. The target spreads the subscribed topics' partitions over the members in
//! id order. A member is given its target less the partitions another member still says it owns,
//! and only when that differs from what it was last given, as Kafka does.

#![allow(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::handlers::Body;
use super::{FakeBroker, Misbehave};

const UNKNOWN_MEMBER_ID: i16 = 25;
const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;

/// How often members are asked to heartbeat.
pub(super) const INTERVAL_MS: i32 = 5_000;

type ById = BTreeMap<Uuid, BTreeSet<i32>>;

/// One group's state on the coordinator.
#[derive(Debug, Default)]
pub(super) struct NextGroup {
    epoch: i32,
    members: BTreeMap<String, NextMember>,
}

#[derive(Debug, Default)]
struct NextMember {
    epoch: i32,
    topics: Vec<String>,
    /// What it last said it owns.
    owned: ById,
    /// What it was last given.
    given: Option<ById>,
}

impl FakeBroker {
    /// Offers ConsumerGroupHeartbeat (the consumer protocol of KIP-848) from now on.
    pub fn offer_consumer_protocol(&self) {
        self.lock().consumer_protocol = true;
    }

    /// The member epoch a group's member is at, if it is one.
    pub fn member_epoch(&self, group: &str, member: &str) -> Option<i32> {
        let st = self.lock();
        st.next_groups
            .get(group)?
            .members
            .get(member)
            .map(|m| m.epoch)
    }

    /// The members of a consumer-protocol group.
    pub fn consumer_members(&self, group: &str) -> Vec<String> {
        let st = self.lock();
        st.next_groups
            .get(group)
            .map(|g| g.members.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// OffsetCommit's check for a member of a consumer-protocol group: `None` when `member` is not one.
    pub(super) fn next_commit_check(&self, group: &str, member: &str, epoch: i32) -> Option<i16> {
        let st = self.lock();
        let m = st.next_groups.get(group)?.members.get(member)?;
        Some(if m.epoch == epoch {
            0
        } else {
            STALE_MEMBER_EPOCH
        })
    }

    pub(super) fn consumer_group_heartbeat(&self, req: ConsumerGroupHeartbeatRequest) -> Body {
        let mut r = ConsumerGroupHeartbeatResponse::default();
        r.heartbeat_interval_ms = INTERVAL_MS;
        r.member_id = Some(req.member_id.clone());
        if let Some(code) = self.group_rule(ApiKey::ConsumerGroupHeartbeat) {
            r.error_code = code;
            if code == UNKNOWN_MEMBER_ID {
                let mut st = self.lock();
                if let Some(g) = st.next_groups.get_mut(req.group_id.0.as_str()) {
                    if g.members.remove(req.member_id.as_str()).is_some() {
                        g.epoch += 1;
                    }
                }
            }
            return Body::ConsumerGroupHeartbeat(r);
        }
        let every_time = self
            .take_rule(|m| *m == Misbehave::AssignmentEveryTime)
            .is_some();
        let epoch_rule = match self.take_rule(|m| matches!(m, Misbehave::MemberEpoch(_))) {
            Some(Misbehave::MemberEpoch(e)) => Some(e),
            _ => None,
        };
        let mut st = self.lock();
        if req.member_id.is_empty() {
            st.next_member += 1;
            r.member_id = Some(StrBytes::from_string(format!(
                "next-member-{}",
                st.next_member
            )));
        }
        let id = r
            .member_id
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        let topic_ids = st.topic_ids.clone();
        let partitions: BTreeMap<String, usize> = st
            .topics
            .iter()
            .map(|(t, l)| (t.clone(), l.len()))
            .collect();
        let g = st
            .next_groups
            .entry(req.group_id.0.to_string())
            .or_default();
        match req.member_epoch {
            -1 | -2 => {
                if g.members.remove(&id).is_some() {
                    g.epoch += 1;
                }
                r.member_epoch = req.member_epoch;
                return Body::ConsumerGroupHeartbeat(r);
            }
            0 => {
                g.epoch += 1;
                g.members.insert(id.clone(), NextMember::default());
            }
            e => match g.members.get(&id) {
                None => {
                    r.error_code = UNKNOWN_MEMBER_ID;
                    return Body::ConsumerGroupHeartbeat(r);
                }
                Some(m) if m.epoch != e => {
                    r.error_code = FENCED_MEMBER_EPOCH;
                    return Body::ConsumerGroupHeartbeat(r);
                }
                Some(_) => {}
            },
        }
        let epoch = g.epoch;
        let Some(m) = g.members.get_mut(&id) else {
            unreachable!("the member was just found or added")
        };
        m.epoch = epoch;
        if let Some(names) = &req.subscribed_topic_names {
            m.topics = names.iter().map(|t| t.0.to_string()).collect();
        }
        if let Some(owned) = &req.topic_partitions {
            m.owned = owned
                .iter()
                .map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect()))
                .collect();
        }
        // The target: every subscribed partition, dealt to the members in id order.
        let ids: Vec<String> = g.members.keys().cloned().collect();
        let mut wanted: BTreeSet<&String> = BTreeSet::new();
        for m in g.members.values() {
            wanted.extend(m.topics.iter());
        }
        let mut target = ById::new();
        let mut i = 0;
        for t in wanted {
            let (Some(&tid), Some(&n)) = (topic_ids.get(t), partitions.get(t)) else {
                continue;
            };
            for p in 0..n as i32 {
                if ids.get(i % ids.len()) == Some(&id) {
                    target.entry(Uuid::from_u128(tid)).or_default().insert(p);
                }
                i += 1;
            }
        }
        // Less what another member still owns.
        for (other, om) in &g.members {
            if *other == id {
                continue;
            }
            for (tid, ps) in &om.owned {
                if let Some(mine) = target.get_mut(tid) {
                    mine.retain(|p| !ps.contains(p));
                }
            }
        }
        target.retain(|_, ps| !ps.is_empty());
        let Some(m) = g.members.get_mut(&id) else {
            unreachable!("the member is in the group")
        };
        if every_time || m.given.as_ref() != Some(&target) {
            let mut a = Assignment::default();
            a.topic_partitions = target
                .iter()
                .map(|(tid, ps)| {
                    let mut tp = TopicPartitions::default();
                    tp.topic_id = *tid;
                    tp.partitions = ps.iter().copied().collect();
                    tp
                })
                .collect();
            r.assignment = Some(a);
            m.given = Some(target);
        }
        r.member_epoch = epoch_rule.unwrap_or(epoch);
        Body::ConsumerGroupHeartbeat(r)
    }
}

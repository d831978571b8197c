//! A minimal classic group coordinator for the fake cluster: FindCoordinator (broker 1 coordinates
//! every group), JoinGroup / SyncGroup / Heartbeat / LeaveGroup with the generation logic of one or
//! two members, OffsetCommit / OffsetFetch. It drives the group error paths; the real broker proves
//! the protocol.
//!
//! Generations: a join round starts when a new member joins, or a member that already joined the
//! current generation joins again; the generation goes up and the join completes at once with the
//! members known. A member that has not joined the new generation yet is told REBALANCE_IN_PROGRESS
//! when it heartbeats, and catches up (same generation) when it joins. The leader is the first member;
//! a follower's SyncGroup is held (see `serve.rs`) until the leader's has brought the assignments.
//! Members that stop heartbeating are dropped after their session timeout, like Kafka does.

#![allow(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::handlers::Body;
use super::{FakeBroker, Misbehave};

/// The error codes the coordinator answers with.
const NONE: i16 = 0;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

/// One group's state on the coordinator.
#[derive(Debug, Default)]
pub(super) struct Group {
    generation: i32,
    members: Vec<GroupMember>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not joined yet.
    pending: Vec<String>,
    /// The protocol (assignor) of the current generation.
    protocol: String,
    /// The generation whose assignments the leader has brought.
    synced: Option<i32>,
    assignments: HashMap<String, Bytes>,
    pub(super) offsets: BTreeMap<(String, i32), i64>,
}

#[derive(Debug)]
struct GroupMember {
    id: String,
    metadata: Bytes,
    /// The generation it last joined.
    joined: i32,
    session: Duration,
    expires: Instant,
}

impl GroupMember {
    fn touch(&mut self) {
        self.expires = Instant::now() + self.session;
    }
}

impl Group {
    fn member(&mut self, id: &str) -> Option<&mut GroupMember> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    /// A new generation: every member must join it.
    fn new_round(&mut self) {
        self.generation += 1;
        self.synced = None;
        self.assignments.clear();
    }

    /// Drops members whose session ran out; the others rebalance.
    fn expire(&mut self) {
        let now = Instant::now();
        let before = self.members.len();
        self.members.retain(|m| m.expires > now);
        if self.members.len() < before && !self.members.is_empty() {
            self.new_round();
        }
    }

    /// Removes a member; the others rebalance.
    fn remove(&mut self, id: &str) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m.id != id);
        let gone = self.members.len() < before;
        if gone && !self.members.is_empty() {
            self.new_round();
        }
        gone
    }

    fn leader(&self) -> Option<&str> {
        self.members.first().map(|m| m.id.as_str())
    }

    /// The error for a member at `generation`: none when it is in the current generation,
    /// REBALANCE_IN_PROGRESS when a round it has not joined yet started, else ILLEGAL_GENERATION.
    fn check(&mut self, member: &str, generation: i32) -> i16 {
        self.expire();
        let current = self.generation;
        let Some(m) = self.member(member) else {
            return UNKNOWN_MEMBER_ID;
        };
        m.touch();
        if generation == current && m.joined == current {
            NONE
        } else if generation == m.joined && m.joined < current {
            REBALANCE_IN_PROGRESS
        } else {
            ILLEGAL_GENERATION
        }
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl FakeBroker {
    /// The error code a `GroupError` rule for `api` says to answer with, if one is in force.
    pub(super) fn group_rule(&self, api: ApiKey) -> Option<i16> {
        match self.take_rule(|m| matches!(m, Misbehave::GroupError { api: a, .. } if *a == api)) {
            Some(Misbehave::GroupError { code, .. }) => Some(code),
            _ => None,
        }
    }

    /// [`FakeBroker::group_rule`] for a request from `member`: UNKNOWN_MEMBER_ID is meant (the member
    /// is dropped from the group), so the member's next steps meet a coordinator that agrees.
    fn member_rule(&self, api: ApiKey, group: &str, member: &str) -> Option<i16> {
        let code = self.group_rule(api)?;
        if code == UNKNOWN_MEMBER_ID {
            self.with_group(group, |g| g.remove(member));
        }
        Some(code)
    }

    fn with_group<T>(&self, group: &str, f: impl FnOnce(&mut Group) -> T) -> T {
        let mut st = self.lock();
        f(st.groups.entry(group.to_string()).or_default())
    }

    pub(super) fn find_coordinator(&self, req: FindCoordinatorRequest) -> Body {
        let addr = self.addr(1);
        let (host, port) = addr.rsplit_once(':').unwrap_or((&addr, "9092"));
        let mut r = FindCoordinatorResponse::default();
        for key in req.coordinator_keys {
            let mut c = find_coordinator_response::Coordinator::default();
            c.key = key;
            c.error_message = None;
            match self.group_rule(ApiKey::FindCoordinator) {
                Some(code) => {
                    c.error_code = code;
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                }
                None => {
                    c.node_id = BrokerId(1);
                    c.host = s(host);
                    c.port = port.parse().unwrap_or(9092);
                }
            }
            r.coordinators.push(c);
        }
        Body::FindCoordinator(r)
    }

    pub(super) fn join_group(&self, req: JoinGroupRequest) -> Body {
        let mut r = JoinGroupResponse::default();
        r.generation_id = -1;
        r.member_id = req.member_id.clone();
        let group = req.group_id.0.to_string();
        if let Some(code) = self.member_rule(ApiKey::JoinGroup, &group, req.member_id.as_str()) {
            r.error_code = code;
            return Body::JoinGroup(r);
        }
        let (protocol, metadata) = req
            .protocols
            .first()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .unwrap_or_default();
        let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
        let mut st = self.lock();
        let fresh = if req.member_id.is_empty() {
            st.next_member += 1;
            Some(format!("member-{}", st.next_member))
        } else {
            None
        };
        let g = st.groups.entry(group).or_default();
        g.expire();
        if let Some(id) = fresh {
            // Kafka 2.2+: a member without an id is given one and must join again with it.
            g.pending.push(id.clone());
            r.error_code = MEMBER_ID_REQUIRED;
            r.member_id = s(&id);
            return Body::JoinGroup(r);
        }
        let id = req.member_id.to_string();
        if let Some(i) = g.pending.iter().position(|p| *p == id) {
            g.pending.remove(i);
            g.new_round();
            g.members.push(GroupMember {
                id: id.clone(),
                metadata,
                joined: g.generation,
                session,
                expires: Instant::now() + session,
            });
        } else {
            let current = g.generation;
            let Some(joined) = g.member(&id).map(|m| m.joined) else {
                r.error_code = UNKNOWN_MEMBER_ID;
                return Body::JoinGroup(r);
            };
            if joined == current {
                g.new_round();
            }
            let generation = g.generation;
            if let Some(m) = g.member(&id) {
                m.joined = generation;
                m.metadata = metadata;
                m.session = session;
                m.touch();
            }
        }
        g.protocol = protocol;
        let leader = g.leader().unwrap_or_default().to_string();
        r.generation_id = g.generation;
        r.protocol_type = Some(req.protocol_type.clone());
        r.protocol_name = Some(s(&g.protocol));
        r.leader = s(&leader);
        if leader == id {
            r.members = g
                .members
                .iter()
                .map(|m| {
                    let mut jm = join_group_response::JoinGroupResponseMember::default();
                    jm.member_id = s(&m.id);
                    jm.metadata = m.metadata.clone();
                    jm
                })
                .collect();
        }
        Body::JoinGroup(r)
    }

    /// Whether a follower's SyncGroup must wait for the leader's (which brings the assignments).
    pub(super) fn sync_must_wait(&self, req: &SyncGroupRequest) -> bool {
        let st = self.lock();
        let Some(g) = st.groups.get(req.group_id.0.as_str()) else {
            return false;
        };
        let id = req.member_id.as_str();
        let in_generation = g
            .members
            .iter()
            .any(|m| m.id == id && m.joined == g.generation);
        in_generation
            && req.generation_id == g.generation
            && g.leader() != Some(id)
            && g.synced != Some(g.generation)
    }

    pub(super) fn sync_group(&self, req: SyncGroupRequest) -> Body {
        let mut r = SyncGroupResponse::default();
        r.protocol_type = Some(StrBytes::from_static_str("consumer"));
        let group = req.group_id.0.as_str();
        if let Some(code) = self.member_rule(ApiKey::SyncGroup, group, req.member_id.as_str()) {
            r.error_code = code;
            return Body::SyncGroup(r);
        }
        let forced = match self.take_rule(|m| matches!(m, Misbehave::SyncAssignment(_))) {
            Some(Misbehave::SyncAssignment(b)) => Some(Bytes::from(b)),
            _ => None,
        };
        let id = req.member_id.to_string();
        self.with_group(group, |g| {
            r.error_code = g.check(&id, req.generation_id);
            if r.error_code != NONE {
                return;
            }
            r.protocol_name = Some(s(&g.protocol));
            if g.leader() == Some(id.as_str()) && g.synced != Some(g.generation) {
                g.assignments = req
                    .assignments
                    .iter()
                    .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                    .collect();
                g.synced = Some(g.generation);
            }
            if g.synced != Some(g.generation) {
                // The leader never came: the round failed.
                r.error_code = REBALANCE_IN_PROGRESS;
                return;
            }
            r.assignment = g.assignments.get(&id).cloned().unwrap_or_default();
        });
        if let (Some(b), NONE) = (forced, r.error_code) {
            r.assignment = b;
        }
        Body::SyncGroup(r)
    }

    pub(super) fn heartbeat(&self, req: HeartbeatRequest) -> Body {
        let mut r = HeartbeatResponse::default();
        let (group, id) = (req.group_id.0.as_str(), req.member_id.as_str());
        r.error_code = match self.member_rule(ApiKey::Heartbeat, group, id) {
            Some(code) => code,
            None => self.with_group(group, |g| g.check(id, req.generation_id)),
        };
        Body::Heartbeat(r)
    }

    pub(super) fn leave_group(&self, req: LeaveGroupRequest) -> Body {
        let mut r = LeaveGroupResponse::default();
        if let Some(code) = self.group_rule(ApiKey::LeaveGroup) {
            r.error_code = code;
            return Body::LeaveGroup(r);
        }
        self.with_group(req.group_id.0.as_str(), |g| {
            for m in &req.members {
                let mut mr = leave_group_response::MemberResponse::default();
                mr.member_id = m.member_id.clone();
                if !g.remove(m.member_id.as_str()) {
                    mr.error_code = UNKNOWN_MEMBER_ID;
                }
                r.members.push(mr);
            }
        });
        Body::LeaveGroup(r)
    }

    pub(super) fn offset_commit(&self, req: OffsetCommitRequest) -> Body {
        let code = match self.group_rule(ApiKey::OffsetCommit) {
            Some(c) => c,
            // A commit outside the group's membership (generation -1, no member id) is taken as is.
            None if req.member_id.is_empty() && req.generation_id_or_member_epoch < 0 => NONE,
            None => match self.next_commit_check(
                req.group_id.0.as_str(),
                req.member_id.as_str(),
                req.generation_id_or_member_epoch,
            ) {
                Some(c) => c,
                None => self.with_group(req.group_id.0.as_str(), |g| {
                    match g.check(req.member_id.as_str(), req.generation_id_or_member_epoch) {
                        // Kafka takes commits from members of the generation a round is replacing.
                        REBALANCE_IN_PROGRESS => NONE,
                        c => c,
                    }
                }),
            },
        };
        let mut r = OffsetCommitResponse::default();
        self.with_group(req.group_id.0.as_str(), |g| {
            for t in &req.topics {
                let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
                tr.name = t.name.clone();
                for p in &t.partitions {
                    let mut pr = offset_commit_response::OffsetCommitResponsePartition::default();
                    pr.partition_index = p.partition_index;
                    pr.error_code = code;
                    if code == NONE {
                        g.offsets.insert(
                            (t.name.0.to_string(), p.partition_index),
                            p.committed_offset,
                        );
                    }
                    tr.partitions.push(pr);
                }
                r.topics.push(tr);
            }
        });
        Body::OffsetCommit(r)
    }

    pub(super) fn offset_fetch(&self, req: OffsetFetchRequest) -> Body {
        use offset_fetch_response::{
            OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
        };
        let mut r = OffsetFetchResponse::default();
        for rg in req.groups {
            let mut out = OffsetFetchResponseGroup::default();
            out.group_id = rg.group_id.clone();
            if let Some(code) = self.group_rule(ApiKey::OffsetFetch) {
                out.error_code = code;
                r.groups.push(out);
                continue;
            }
            let stored = self.with_group(rg.group_id.0.as_str(), |g| g.offsets.clone());
            let wanted: Vec<(String, Vec<i32>)> = match &rg.topics {
                Some(ts) => ts
                    .iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect(),
                None => {
                    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                    for (t, p) in stored.keys() {
                        by_topic.entry(t.clone()).or_default().push(*p);
                    }
                    by_topic.into_iter().collect()
                }
            };
            for (name, parts) in wanted {
                let mut tr = OffsetFetchResponseTopics::default();
                tr.name = TopicName(s(&name));
                for p in parts {
                    let mut pr = OffsetFetchResponsePartitions::default();
                    pr.partition_index = p;
                    pr.committed_offset = stored.get(&(name.clone(), p)).copied().unwrap_or(-1);
                    pr.committed_leader_epoch = -1;
                    pr.metadata = Some(StrBytes::from_static_str(""));
                    tr.partitions.push(pr);
                }
                out.topics.push(tr);
            }
            r.groups.push(out);
        }
        Body::OffsetFetch(r)
    }

    /// The members of a group, leader first.
    pub fn group_members(&self, group: &str) -> Vec<String> {
        self.lock()
            .groups
            .get(group)
            .map(|g| g.members.iter().map(|m| m.id.clone()).collect())
            .unwrap_or_default()
    }

    /// A group's current generation (0 before anyone joined).
    pub fn group_generation(&self, group: &str) -> i32 {
        self.lock().groups.get(group).map_or(0, |g| g.generation)
    }

    /// The offset a group has committed for a partition.
    pub fn committed_offset(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.lock()
            .groups
            .get(group)
            .and_then(|g| g.offsets.get(&(topic.to_string(), partition)).copied())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::wire::validate::check_body;

    /// Encodes `body` at every version in `versions` and checks it against the client's layout.
    fn check(api: ApiKey, versions: std::ops::RangeInclusive<i16>, body: &Body) {
        for v in versions {
            let mut out = BytesMut::new();
            if let Err(e) = body.encode(&mut out, v) {
                panic!("{api:?} v{v} does not encode: {e}");
            }
            if let Err(e) = check_body(api, v, &out) {
                panic!("{api:?} v{v} fails the client's layout: {e}");
            }
        }
    }

    #[test]
    fn every_group_answer_passes_the_client_layouts_at_each_version_it_may_negotiate() {
        let b = FakeBroker::new(1);
        let mut fc = FindCoordinatorRequest::default();
        fc.coordinator_keys = vec![s("g")];
        check(
            ApiKey::FindCoordinator,
            4..=6,
            &b.find_coordinator(fc.clone()),
        );
        b.misbehave_times(
            Misbehave::GroupError {
                api: ApiKey::FindCoordinator,
                code: 15,
            },
            1,
        );
        check(ApiKey::FindCoordinator, 4..=6, &b.find_coordinator(fc));

        let mut p = join_group_request::JoinGroupRequestProtocol::default();
        p.name = s("range");
        p.metadata = crate::group::assign::encode_subscription(&["t".to_string()]);
        let mut jg = JoinGroupRequest::default();
        jg.group_id = GroupId(s("g"));
        jg.session_timeout_ms = 10_000;
        jg.protocol_type = s("consumer");
        jg.protocols = vec![p];
        let first = b.join_group(jg.clone());
        check(ApiKey::JoinGroup, 7..=9, &first);
        let Body::JoinGroup(r) = first else {
            panic!("not a JoinGroup answer");
        };
        assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
        jg.member_id = r.member_id;
        let joined = b.join_group(jg.clone());
        check(ApiKey::JoinGroup, 7..=9, &joined);
        let Body::JoinGroup(r) = joined else {
            panic!("not a JoinGroup answer");
        };
        assert_eq!((r.error_code, r.generation_id, r.members.len()), (0, 1, 1));
        assert_eq!(r.leader, jg.member_id);

        let mut a = sync_group_request::SyncGroupRequestAssignment::default();
        a.member_id = jg.member_id.clone();
        a.assignment = Bytes::from_static(b"\0\0\0\0\0\0\xff\xff\xff\xff");
        let mut sg = SyncGroupRequest::default();
        sg.group_id = GroupId(s("g"));
        sg.generation_id = r.generation_id;
        sg.member_id = jg.member_id.clone();
        sg.assignments = vec![a.clone()];
        let synced = b.sync_group(sg);
        check(ApiKey::SyncGroup, 5..=5, &synced);
        let Body::SyncGroup(sr) = synced else {
            panic!("not a SyncGroup answer");
        };
        assert_eq!((sr.error_code, sr.assignment), (0, a.assignment));

        let mut hb = HeartbeatRequest::default();
        hb.group_id = GroupId(s("g"));
        hb.generation_id = r.generation_id;
        hb.member_id = jg.member_id.clone();
        check(ApiKey::Heartbeat, 4..=4, &b.heartbeat(hb));

        let mut cp = offset_commit_request::OffsetCommitRequestPartition::default();
        cp.partition_index = 1;
        cp.committed_offset = 9;
        let mut ct = offset_commit_request::OffsetCommitRequestTopic::default();
        ct.name = TopicName(s("t"));
        ct.partitions = vec![cp];
        let mut oc = OffsetCommitRequest::default();
        oc.group_id = GroupId(s("g"));
        oc.generation_id_or_member_epoch = r.generation_id;
        oc.member_id = jg.member_id.clone();
        oc.topics = vec![ct];
        check(ApiKey::OffsetCommit, 8..=9, &b.offset_commit(oc));
        assert_eq!(b.committed_offset("g", "t", 1), Some(9));

        for topics in [None, Some(vec![0, 1])] {
            let mut fg = offset_fetch_request::OffsetFetchRequestGroup::default();
            fg.group_id = GroupId(s("g"));
            fg.topics = topics.map(|ps| {
                let mut ft = offset_fetch_request::OffsetFetchRequestTopics::default();
                ft.name = TopicName(s("t"));
                ft.partition_indexes = ps;
                vec![ft]
            });
            let mut of = OffsetFetchRequest::default();
            of.groups = vec![fg];
            check(ApiKey::OffsetFetch, 8..=9, &b.offset_fetch(of));
        }

        let mut who = leave_group_request::MemberIdentity::default();
        who.member_id = jg.member_id.clone();
        let mut lg = LeaveGroupRequest::default();
        lg.group_id = GroupId(s("g"));
        lg.members = vec![who];
        check(ApiKey::LeaveGroup, 4..=5, &b.leave_group(lg));
        assert!(b.group_members("g").is_empty());
    }
}

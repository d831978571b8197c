//! The classic group protocol, eager: JoinGroup (the leader learns every member's subscription),
//! SyncGroup (the leader hands out the range assignment, every member receives its share), Heartbeat
//! until the coordinator says the group rebalances; then every partition is given back (committed
//! first) and the member joins again.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::time::Instant;

use super::assign::{self, assignment_text, Assignment, RANGE};
use super::coordinator::Coordinator;
use super::{Ctx, Event, Generation};
use crate::backoff::Backoff;
use crate::error::{code, Code, Error, Result};
use crate::escape::Esc;

const JOIN_GROUP_VERSIONS: VersionRange = VersionRange { min: 7, max: 9 };
const SYNC_GROUP_VERSIONS: VersionRange = VersionRange { min: 5, max: 5 };
const HEARTBEAT_VERSIONS: VersionRange = VersionRange { min: 4, max: 4 };
const LEAVE_GROUP_VERSIONS: VersionRange = VersionRange { min: 4, max: 5 };

/// How often a classic group's leader (when it is this member) asks for its topics' partition
/// counts: when they differ from those it assigned (partitions added, a topic created again with
/// fewer or more, deleted, or created), it joins again so that the group is assigned anew, as the
/// leader of Kafka's Java consumer does on a metadata change. Without it, partitions added were read
/// only after a restart, and a member whose partitions were gone and came back never read them (t27:
/// 201 of 400 records printed, lag growing on partitions assigned to running members).
const LEADER_CHECK_EVERY: Duration = Duration::from_secs(10);

/// How long the leader's look at the partition counts may hold up the next heartbeat.
const LEADER_CHECK_WITHIN: Duration = Duration::from_secs(2);

/// What a leader assigned from: every subscribed topic, and the partition count of each it could
/// read.
struct Planned {
    topics: Vec<String>,
    counts: BTreeMap<String, i32>,
}

/// Why heartbeating stopped.
enum Stop {
    /// The group rebalances: give everything back (committed), join again.
    Rebalance,
    /// Our membership is gone (session expired, generation fenced): give everything back without
    /// committing; `forget` when the member id itself is unknown now.
    Lost { forget: bool },
}

fn group_id(ctx: &Ctx) -> GroupId {
    GroupId(StrBytes::from_string(ctx.cfg.group.clone()))
}

/// The membership task: join, sync, heartbeat, give back, again, until aborted or a fatal error.
pub(super) async fn run(ctx: Ctx) {
    let mut member_id = String::new();
    loop {
        let (gen, mine, planned) = match join_and_sync(&ctx, &mut member_id).await {
            Ok(v) => v,
            Err(e) => {
                let _ = ctx.events.send(Err(e)).await;
                return;
            }
        };
        ctx.shared.set_gen(Some(gen.clone()));
        if ctx
            .events
            .send(Ok(Event::Assigned(mine.clone())))
            .await
            .is_err()
        {
            return;
        }
        let stop = match heartbeat(&ctx, &gen, planned.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                let _ = ctx.events.send(Err(e)).await;
                return;
            }
        };
        let lost = match stop {
            Stop::Rebalance => false,
            Stop::Lost { forget } => {
                ctx.shared.set_gen(None);
                if forget {
                    member_id.clear();
                }
                true
            }
        };
        if !ctx.revoke(mine, lost).await {
            return;
        }
        ctx.shared.set_gen(None);
    }
}

/// Joins and syncs until this member has an assignment for a generation.
async fn join_and_sync(
    ctx: &Ctx,
    member_id: &mut String,
) -> Result<(Generation, Assignment, Option<Planned>)> {
    // The retry limit bounds failures (garbage, a closed connection: t19 F8 gave up at --timeout
    // + 30 s). A join or sync the coordinator holds, waiting for the other members, may wait past
    // it by the rebalance timeout: that is the attempt's own wait (Coordinator::call).
    let deadline = ctx.coord.cluster().options().deadline();
    let mut backoff = Backoff::until(deadline);
    loop {
        let joined = join(ctx, member_id, deadline).await?;
        *member_id = joined.member_id.to_string();
        let gen = Generation {
            member_id: member_id.clone(),
            generation: joined.generation_id,
        };
        let (plan, planned) = if joined.leader == joined.member_id {
            let (plan, planned) = leader_plan(ctx, &joined).await?;
            (plan, Some(planned))
        } else {
            (BTreeMap::new(), None)
        };
        match sync(ctx, &gen, &joined, plan, deadline).await? {
            Ok(mine) => {
                crate::log::debug(format_args!(
                    "group '{}': generation {} as {}, assigned {}",
                    Esc::str(&ctx.cfg.group),
                    gen.generation,
                    Esc::str(&gen.member_id),
                    assignment_text(&mine)
                ));
                return Ok((gen, mine, planned));
            }
            Err(forget) => {
                if forget {
                    member_id.clear();
                }
                if !backoff.wait().await {
                    return Err(ctx.coord.error("SyncGroup", Code::RebalanceInProgress));
                }
            }
        }
    }
}

/// JoinGroup until the coordinator accepts us into a generation.
async fn join(
    ctx: &Ctx,
    member_id: &mut String,
    deadline: Option<Instant>,
) -> Result<JoinGroupResponse> {
    let mut backoff = Backoff::until(deadline);
    let mut id_given = false;
    loop {
        let mut p = JoinGroupRequestProtocol::default();
        p.name = StrBytes::from_static_str(RANGE);
        p.metadata = assign::encode_subscription(&ctx.cfg.topics);
        let mut req = JoinGroupRequest::default();
        req.group_id = group_id(ctx);
        req.session_timeout_ms = ctx.cfg.session_timeout.as_millis() as i32;
        req.rebalance_timeout_ms = ctx.cfg.rebalance_timeout.as_millis() as i32;
        req.member_id = StrBytes::from_string(member_id.clone());
        req.protocol_type = StrBytes::from_static_str("consumer");
        req.protocols = vec![p];
        // The coordinator holds a join until every member has joined (up to the rebalance timeout).
        let hold = Some(ctx.cfg.rebalance_timeout);
        let (resp, _) = ctx
            .coord
            .call(&req, JOIN_GROUP_VERSIONS, deadline, hold, |r| r.error_code)
            .await?;
        let c = match code(resp.error_code) {
            None => return Ok(resp),
            c
            @ Some(Code::MemberIdRequired | Code::UnknownMemberId | Code::RebalanceInProgress) => c,
            Some(c) => return Err(ctx.coord.error("JoinGroup", c)),
        };
        match c {
            // The id the coordinator hands out (KIP-394): join again at once with it, the first time.
            Some(Code::MemberIdRequired) if !id_given && !resp.member_id.is_empty() => {
                *member_id = resp.member_id.to_string();
                id_given = true;
                continue;
            }
            Some(Code::MemberIdRequired) => *member_id = resp.member_id.to_string(),
            Some(Code::UnknownMemberId) => member_id.clear(),
            _ => {}
        }
        // Anything else, or the same again: paced, and given up at the deadline.
        if !backoff.wait().await {
            return Err(ctx
                .coord
                .error("JoinGroup", c.unwrap_or(Code::RebalanceInProgress)));
        }
    }
}

/// The leader's plan: every member's subscription, the partition counts, the range assignment; and
/// what it was made from, to be watched ([`LEADER_CHECK_EVERY`]).
async fn leader_plan(
    ctx: &Ctx,
    joined: &JoinGroupResponse,
) -> Result<(BTreeMap<String, Assignment>, Planned)> {
    let mut members = Vec::new();
    for m in &joined.members {
        let topics = assign::decode_subscription(&m.metadata).map_err(|_| Error::Incomplete {
            api: "JoinGroup",
            target: ctx.coord.target(),
            what: "a member's subscription cannot be read",
        })?;
        members.push((m.member_id.to_string(), topics));
    }
    let mut counts = BTreeMap::new();
    let mut all: Vec<String> = members.iter().flat_map(|(_, ts)| ts.clone()).collect();
    all.sort();
    all.dedup();
    // Asked, not taken from the cache: a topic created again with fewer partitions since it was
    // cached would be assigned its gone partitions (CI, Kafka 3.9.1: a member was given partition 1
    // of a topic that had only partition 0, and waited for its leader).
    for t in &all {
        match ctx.coord.cluster().topic_current(t).await {
            Ok(meta) => {
                counts.insert(t.clone(), meta.partitions.len() as i32);
            }
            Err(e) => crate::log::warn(format_args!(
                "group '{}': a member subscribes to '{}', which cannot be read now ({e}); not assigned",
                Esc::str(&ctx.cfg.group),
                Esc::str(t)
            )),
        }
    }
    let plan = assign::range(&members, &counts);
    Ok((
        plan,
        Planned {
            topics: all,
            counts,
        },
    ))
}

/// The partition count of each of `topics` that exists now, from one Metadata request held to
/// [`LEADER_CHECK_WITHIN`]; `None` when it failed (looked at again later).
async fn partition_counts(ctx: &Ctx, topics: &[String]) -> Option<BTreeMap<String, i32>> {
    let deadline = Some(Instant::now() + LEADER_CHECK_WITHIN);
    let cluster = ctx.coord.cluster();
    match cluster.fetch_metadata(Some(topics), false, deadline).await {
        Ok(md) => Some(
            md.topics
                .into_iter()
                .filter(|t| t.error == 0)
                .map(|t| (t.name, t.partitions.len() as i32))
                .collect(),
        ),
        Err(e) => {
            crate::log::debug(format_args!(
                "group '{}': partition counts not looked at: {e}",
                Esc::str(&ctx.cfg.group)
            ));
            None
        }
    }
}

/// SyncGroup: `Ok(Ok(mine))`, or `Ok(Err(forget))` when the group moved on and we must join again
/// (`forget`: with a new member id).
async fn sync(
    ctx: &Ctx,
    gen: &Generation,
    joined: &JoinGroupResponse,
    plan: BTreeMap<String, Assignment>,
    deadline: Option<Instant>,
) -> Result<std::result::Result<Assignment, bool>> {
    let mut req = SyncGroupRequest::default();
    req.group_id = group_id(ctx);
    req.generation_id = gen.generation;
    req.member_id = StrBytes::from_string(gen.member_id.clone());
    req.protocol_type = Some(StrBytes::from_static_str("consumer"));
    req.protocol_name = joined.protocol_name.clone();
    req.assignments = plan
        .iter()
        .map(|(m, a)| {
            let mut s = SyncGroupRequestAssignment::default();
            s.member_id = StrBytes::from_string(m.clone());
            s.assignment = assign::encode_assignment(a);
            s
        })
        .collect();
    let hold = Some(ctx.cfg.rebalance_timeout);
    let (resp, _) = ctx
        .coord
        .call(&req, SYNC_GROUP_VERSIONS, deadline, hold, |r| r.error_code)
        .await?;
    match code(resp.error_code) {
        None => {}
        Some(Code::RebalanceInProgress | Code::IllegalGeneration) => return Ok(Err(false)),
        Some(Code::UnknownMemberId) => return Ok(Err(true)),
        Some(c) => return Err(ctx.coord.error("SyncGroup", c)),
    }
    let mine = assign::decode_assignment(&resp.assignment).map_err(|_| Error::Incomplete {
        api: "SyncGroup",
        target: ctx.coord.target(),
        what: "the assignment cannot be read",
    })?;
    // Only what we subscribed to: a leader (another client) cannot make us read other topics.
    Ok(Ok(mine
        .into_iter()
        .filter(|(t, _)| ctx.cfg.topics.contains(t))
        .collect()))
}

/// Heartbeats until the group rebalances or our membership is lost; as the leader (`planned`), also
/// until the partition counts it assigned from change.
async fn heartbeat(ctx: &Ctx, gen: &Generation, planned: Option<&Planned>) -> Result<Stop> {
    let mut last_ok = Instant::now();
    let mut next_check = last_ok + LEADER_CHECK_EVERY;
    let mut req = HeartbeatRequest::default();
    req.group_id = group_id(ctx);
    req.generation_id = gen.generation;
    req.member_id = StrBytes::from_string(gen.member_id.clone());
    loop {
        tokio::time::sleep(ctx.cfg.heartbeat_interval).await;
        if last_ok.elapsed() > ctx.cfg.session_timeout {
            crate::log::warn(format_args!(
                "group '{}': no heartbeat got through for {:.0}s; the coordinator has dropped us, rejoining",
                Esc::str(&ctx.cfg.group),
                ctx.cfg.session_timeout.as_secs_f64()
            ));
            return Ok(Stop::Lost { forget: false });
        }
        let until = Some(last_ok + ctx.cfg.session_timeout);
        let beat = ctx
            .coord
            .call(&req, HEARTBEAT_VERSIONS, until, None, |r| r.error_code);
        let resp = match crate::backoff::bounded_by("heartbeat", beat).await {
            Ok((r, _)) => r,
            Err(e) if e.is_retriable() => {
                crate::log::debug(format_args!("heartbeat: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        match code(resp.error_code) {
            None => last_ok = Instant::now(),
            Some(Code::RebalanceInProgress) => return Ok(Stop::Rebalance),
            Some(Code::IllegalGeneration | Code::FencedInstanceId) => {
                return Ok(Stop::Lost { forget: false })
            }
            Some(Code::UnknownMemberId) => return Ok(Stop::Lost { forget: true }),
            Some(c) => return Err(ctx.coord.error("Heartbeat", c)),
        }
        let Some(p) = planned.filter(|_| Instant::now() >= next_check) else {
            continue;
        };
        next_check = Instant::now() + LEADER_CHECK_EVERY;
        let Some(now) = partition_counts(ctx, &p.topics).await else {
            continue;
        };
        if now != p.counts {
            let said: Vec<String> = p
                .topics
                .iter()
                .filter(|t| now.get(*t) != p.counts.get(*t))
                .map(|t| {
                    let n = |c: Option<&i32>| c.map_or("none".to_string(), i32::to_string);
                    format!(
                        "'{}' {} -> {}",
                        Esc::str(t),
                        n(p.counts.get(t)),
                        n(now.get(t))
                    )
                })
                .collect();
            crate::log::info(format_args!(
                "group '{}': partitions changed ({}): assigning again",
                Esc::str(&ctx.cfg.group),
                said.join(", ")
            ));
            return Ok(Stop::Rebalance);
        }
    }
}

/// LeaveGroup for `member_id`.
pub(super) async fn leave(
    coord: &Coordinator,
    member_id: &str,
    until: Option<Instant>,
) -> Result<()> {
    let mut m = MemberIdentity::default();
    m.member_id = StrBytes::from_string(member_id.to_string());
    m.reason = Some(StrBytes::from_static_str("the consumer is stopping"));
    let mut req = LeaveGroupRequest::default();
    req.group_id = GroupId(StrBytes::from_string(coord.group().to_string()));
    req.members = vec![m];
    let (resp, _) = coord
        .call(&req, LEAVE_GROUP_VERSIONS, until, None, |r| r.error_code)
        .await?;
    match code(resp.error_code) {
        None | Some(Code::UnknownMemberId) => Ok(()),
        Some(c) => Err(coord.error("LeaveGroup", c)),
    }
}

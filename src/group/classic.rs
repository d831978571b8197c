//! The classic group protocol, eager: JoinGroup (the leader learns every member's subscription),
//! SyncGroup (the leader hands out the range assignment, every member receives its share), Heartbeat
//! until the coordinator says the group rebalances; then every partition is given back (committed
//! first) and the member joins again.

use std::collections::BTreeMap;

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
        let (gen, mine) = match join_and_sync(&ctx, &mut member_id).await {
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
        let stop = match heartbeat(&ctx, &gen).await {
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
async fn join_and_sync(ctx: &Ctx, member_id: &mut String) -> Result<(Generation, Assignment)> {
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
        let plan = if joined.leader == joined.member_id {
            leader_plan(ctx, &joined).await?
        } else {
            BTreeMap::new()
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
                return Ok((gen, mine));
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

/// The leader's plan: every member's subscription, the partition counts, the range assignment.
async fn leader_plan(
    ctx: &Ctx,
    joined: &JoinGroupResponse,
) -> Result<BTreeMap<String, Assignment>> {
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
    for t in all {
        match ctx.coord.cluster().topic_current(&t).await {
            Ok(meta) => {
                counts.insert(t, meta.partitions.len() as i32);
            }
            Err(e) => crate::log::warn(format_args!(
                "group '{}': a member subscribes to '{}', which cannot be read now ({e}); not assigned",
                Esc::str(&ctx.cfg.group),
                Esc::str(&t)
            )),
        }
    }
    Ok(assign::range(&members, &counts))
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

/// Heartbeats until the group rebalances or our membership is lost.
async fn heartbeat(ctx: &Ctx, gen: &Generation) -> Result<Stop> {
    let mut last_ok = Instant::now();
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

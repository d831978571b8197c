//! The consumer group protocol of KIP-848 (Kafka 4.0+): one ConsumerGroupHeartbeat carries the
//! subscription up and the member's target assignment down; the broker assigns. The member gives back
//! what left its target (committed first), takes what joined it, and says what it owns in the next
//! heartbeat; the broker only hands a partition over once its previous owner has said it let go.
//! <https://cwiki.apache.org/confluence/x/HhD1D>

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, GroupId, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::time::Instant;
use uuid::Uuid;

use super::assign::assignment_text;
use super::coordinator::Coordinator;
use super::{Assignment, Ctx, Event, Generation};
use crate::backoff::Backoff;
use crate::error::{code, Code, Error, Result};
use crate::escape::Esc;

const HEARTBEAT_VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

/// Partitions by topic id, as the broker speaks of them.
type ById = BTreeMap<Uuid, BTreeSet<i32>>;

/// The membership task. With `fallback`, a coordinator that turns the protocol down (Kafka 3.x with
/// it disabled) makes the member use the classic one instead.
pub(super) async fn run(ctx: Ctx, fallback: bool) {
    match member(&ctx).await {
        Ok(()) => {}
        Err(e) if fallback && e.code() == Some(Code::UnsupportedVersion) => {
            crate::log::debug(format_args!(
                "group '{}': the consumer protocol is not enabled on the coordinator; using the classic one",
                Esc::str(&ctx.cfg.group)
            ));
            ctx.shared.set_consumer_protocol(false);
            super::classic::run(ctx).await;
        }
        // Asked for by name: said as what it is (it was "the broker is too old for shipper: Kafka
        // 3.x or newer", from a Kafka 3.9 broker).
        Err(e) if e.code() == Some(Code::UnsupportedVersion) => {
            let group = ctx.cfg.group.clone();
            let _ = ctx
                .events
                .send(Err(Error::NoConsumerProtocol { group }))
                .await;
        }
        Err(e) => {
            let _ = ctx.events.send(Err(e)).await;
        }
    }
}

/// A random member id (KIP-1082: version 1 members choose their own).
fn new_member_id() -> String {
    let mut b = [0u8; 16];
    for x in &mut b {
        *x = fastrand::u8(..);
    }
    Uuid::from_bytes(b).to_string()
}

/// What a heartbeat answered with an error does next (errors the coordinator call did not handle
/// itself: a moved or loading coordinator is found again there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnError {
    /// Fenced: give the partitions up and join again.
    Rejoin,
    /// The coordinator failed on its side (Kafka 4.1 did, in CI, while a classic member joined the
    /// same group): ask again, paced, until the retry limit; then it is the error.
    AskAgain,
    /// Anything else ends the membership with the error (as the Java consumer does).
    Fail,
}

fn on_error(c: Code) -> OnError {
    match c {
        Code::FencedMemberEpoch | Code::UnknownMemberId => OnError::Rejoin,
        Code::UnknownServerError => OnError::AskAgain,
        _ => OnError::Fail,
    }
}

/// The retry limit (`--timeout`) counted from now.
fn deadline_from_now(ctx: &Ctx) -> Option<Instant> {
    ctx.coord.cluster().options().deadline()
}

async fn member(ctx: &Ctx) -> Result<()> {
    // How long a join may be retried: `--timeout` from the join, and again from each rejoin (a
    // member fenced after hours must not find its budget spent).
    let mut deadline = deadline_from_now(ctx);
    let mut member_id = new_member_id();
    let mut epoch = 0;
    let mut owned = ById::new();
    let mut names: HashMap<Uuid, String> = HashMap::new();
    // Until the first answer (and after being fenced) the request carries everything.
    let mut full = true;
    // Whether an assignment was given to the reading loop since (re)joining: an empty one is told
    // once too (a member given nothing, with more members than partitions, has joined all the
    // same: with -e it ends at the end of nothing instead of waiting for ever).
    let mut told = false;
    // An empty assignment came since (re)joining, not told yet.
    let mut empty_heard = false;
    let mut report_owned = true;
    // The last target while some of its topics cannot be named yet: named again at each heartbeat
    // until they can (the coordinator sends a target only when it changes: dropped, its
    // partitions were the member's and nobody's, t49).
    let mut unnamed: Option<ById> = None;
    // A heartbeat went out at once after the last answer (to say what is owned): the next waits.
    let mut rushed = false;
    let mut interval = Duration::from_secs(3);
    let mut trouble: Option<Backoff> = None;
    let mut server_trouble: Option<Backoff> = None;
    // Fences in a row without a heartbeat answered in between, and the pause before each rejoin:
    // a coordinator that kept fencing the rejoining member made 46,059 warnings in 35 s (t29 F4).
    let mut fenced: Option<(Backoff, u32)> = None;
    loop {
        let mut req = ConsumerGroupHeartbeatRequest::default();
        req.group_id = GroupId(StrBytes::from_string(ctx.cfg.group.clone()));
        req.member_id = StrBytes::from_string(member_id.clone());
        req.member_epoch = epoch;
        if full {
            req.rebalance_timeout_ms = ctx.cfg.rebalance_timeout.as_millis() as i32;
            req.subscribed_topic_names = Some(
                ctx.cfg
                    .topics
                    .iter()
                    .map(|t| TopicName(StrBytes::from_string(t.clone())))
                    .collect(),
            );
        } else {
            req.rebalance_timeout_ms = -1;
        }
        if full || report_owned {
            req.topic_partitions = Some(
                owned
                    .iter()
                    .map(|(id, ps)| {
                        let mut tp = TopicPartitions::default();
                        tp.topic_id = *id;
                        tp.partitions = ps.iter().copied().collect();
                        tp
                    })
                    .collect(),
            );
        }
        let until = if epoch == 0 {
            deadline
        } else {
            Some(Instant::now() + interval * 3)
        };
        let beat = ctx
            .coord
            .call(&req, HEARTBEAT_VERSIONS, until, None, |r| r.error_code);
        // The first heartbeat joins, within --timeout; the later ones have a limit of their own.
        let beat = if epoch == 0 {
            beat.await
        } else {
            crate::backoff::bounded_by("heartbeat", beat).await
        };
        let resp = match beat {
            Ok((r, version)) => {
                if version == 0 && epoch == 0 {
                    member_id.clear(); // version 0: the broker names us
                }
                r
            }
            Err(e) if e.is_retriable() && epoch != 0 => {
                crate::log::debug(format_args!("heartbeat: {e}"));
                let b = trouble.get_or_insert_with(|| Backoff::until(None));
                b.wait().await;
                continue;
            }
            Err(e) => return Err(e),
        };
        trouble = None;
        match code(resp.error_code).map(|c| (c, on_error(c))) {
            None => {}
            Some((c, OnError::Rejoin)) => {
                let (pause, times) = fenced.get_or_insert_with(|| {
                    (
                        Backoff::with(Duration::from_millis(100), Duration::from_secs(5), None),
                        0,
                    )
                });
                *times += 1;
                let msg = format!(
                    "group '{}': the coordinator fenced this member ({}); rejoining",
                    Esc::str(&ctx.cfg.group),
                    crate::error::name(c)
                );
                match *times {
                    1 => crate::log::warn(format_args!("{msg}")),
                    n => crate::log::debug(format_args!("{msg} ({n} times in a row)")),
                }
                // The first rejoin at once; then paced, up to 5 s apart.
                if *times > 1 {
                    pause.wait().await;
                }
                ctx.shared.set_gen(None);
                let lost = to_names(&owned, &names);
                if !ctx.revoke(lost, true).await {
                    return Ok(());
                }
                owned.clear();
                epoch = 0;
                full = true;
                told = false;
                empty_heard = false;
                deadline = deadline_from_now(ctx);
                if c == Code::UnknownMemberId {
                    member_id = new_member_id();
                }
                continue;
            }
            Some((c, OnError::AskAgain)) => {
                let b =
                    server_trouble.get_or_insert_with(|| Backoff::until(deadline_from_now(ctx)));
                crate::log::debug(format_args!(
                    "group '{}': heartbeat: {}; asking again",
                    Esc::str(&ctx.cfg.group),
                    crate::error::name(c)
                ));
                if !b.wait().await {
                    return Err(ctx.coord.error("ConsumerGroupHeartbeat", c));
                }
                continue;
            }
            Some((c, OnError::Fail)) => return Err(ctx.coord.error("ConsumerGroupHeartbeat", c)),
        }
        server_trouble = None;
        fenced = None;
        if let Some(id) = resp.member_id.as_ref().filter(|m| !m.is_empty()) {
            member_id = id.to_string();
        }
        if resp.member_epoch < 1 {
            // Sent back, -1 and -2 would leave the group and 0 join it again (t49).
            return Err(Error::Incomplete {
                api: "ConsumerGroupHeartbeat",
                target: ctx.coord.target(),
                what: "a member epoch below 1 in an answer without error",
            });
        }
        epoch = resp.member_epoch;
        interval = Duration::from_millis(resp.heartbeat_interval_ms.clamp(100, 60_000) as u64);
        full = false;
        report_owned = false;
        ctx.shared.set_gen(Some(Generation {
            member_id: member_id.clone(),
            generation: epoch,
        }));
        if let Some(a) = resp.assignment {
            let target: ById = a
                .topic_partitions
                .into_iter()
                .map(|tp| (tp.topic_id, tp.partitions.into_iter().collect()))
                .collect();
            learn_names(ctx, &target, &mut names).await;
            // (A target of topics not named yet is not nothing: taken once named.)
            let nothing = target.values().all(|ps| ps.is_empty());
            unnamed = (!all_named(&target, &names)).then(|| target.clone());
            if !reconcile(ctx, &mut owned, target, &names).await {
                return Ok(());
            }
            // Nothing now is told once it is what the coordinator means (below).
            if nothing {
                empty_heard = true;
            } else {
                told = true;
            }
            report_owned = true;
            if !std::mem::replace(&mut rushed, true) {
                continue; // say at once what we own now (once: a coordinator sending an
                          // assignment in every answer is not answered back to back)
            }
        } else if let Some(target) = unnamed.take() {
            learn_names(ctx, &target, &mut names).await;
            if !all_named(&target, &names) {
                unnamed = Some(target.clone());
            }
            if !reconcile(ctx, &mut owned, target, &names).await {
                return Ok(());
            }
            report_owned = true;
        }
        // An empty assignment since (re)joining is told once the coordinator's target for this
        // member is empty too. A new member's partitions are handed over only once their owner let
        // them go, so for a heartbeat or two it owns nothing: told as final, a -e member ended at
        // once and its share went unread (two -e members of a new group printed nothing).
        if !told && empty_heard && owned.is_empty() && unnamed.is_none() {
            let final_ = super::describe::target_is_empty(&ctx.coord, &member_id)
                .await
                .unwrap_or(true);
            if final_ {
                let nothing = crate::group::Assignment::new();
                if ctx.events.send(Ok(Event::Assigned(nothing))).await.is_err() {
                    return Ok(());
                }
                told = true;
            }
        }
        rushed = false;
        tokio::time::sleep(interval).await;
    }
}

/// Gives back what left the target, takes what joined it. False when the reading loop is gone.
async fn reconcile(
    ctx: &Ctx,
    owned: &mut ById,
    target: ById,
    names: &HashMap<Uuid, String>,
) -> bool {
    let mut gone = ById::new();
    let mut new = ById::new();
    for (id, ps) in owned.iter() {
        let keep = target.get(id);
        let g: BTreeSet<i32> = ps
            .iter()
            .filter(|p| keep.is_none_or(|k| !k.contains(p)))
            .copied()
            .collect();
        if !g.is_empty() {
            gone.insert(*id, g);
        }
    }
    for (id, ps) in &target {
        if !names.contains_key(id) {
            continue; // a topic we cannot name (deleted, or metadata lags): taken when we can
        }
        let have = owned.get(id);
        let n: BTreeSet<i32> = ps
            .iter()
            .filter(|p| have.is_none_or(|h| !h.contains(p)))
            .copied()
            .collect();
        if !n.is_empty() {
            new.insert(*id, n);
        }
    }
    if !gone.is_empty() {
        if !ctx.revoke(to_names(&gone, names), false).await {
            return false;
        }
        for (id, ps) in &gone {
            if let Some(o) = owned.get_mut(id) {
                o.retain(|p| !ps.contains(p));
            }
        }
        owned.retain(|_, ps| !ps.is_empty());
    }
    if !new.is_empty() {
        let a = to_names(&new, names);
        crate::log::debug(format_args!(
            "group '{}': assigned {}",
            Esc::str(&ctx.cfg.group),
            assignment_text(&a)
        ));
        if ctx.events.send(Ok(Event::Assigned(a))).await.is_err() {
            return false;
        }
        for (id, ps) in new {
            owned.entry(id).or_default().extend(ps);
        }
    }
    true
}

/// Whether every topic of `target` has a name.
fn all_named(target: &ById, names: &HashMap<Uuid, String>) -> bool {
    target.keys().all(|id| names.contains_key(id))
}

/// Looks up the names of topic ids not known yet (one metadata request for the subscribed topics).
async fn learn_names(ctx: &Ctx, target: &ById, names: &mut HashMap<Uuid, String>) {
    if all_named(target, names) {
        return;
    }
    let cluster = ctx.coord.cluster();
    match cluster.metadata(Some(&ctx.cfg.topics), false).await {
        Ok(md) => {
            for t in md.topics {
                names.insert(Uuid::from_bytes(t.id), t.name);
            }
        }
        Err(e) => crate::log::warn(format_args!(
            "group '{}': cannot name the assigned topics: {e}",
            Esc::str(&ctx.cfg.group)
        )),
    }
}

fn to_names(by_id: &ById, names: &HashMap<Uuid, String>) -> Assignment {
    by_id
        .iter()
        .filter_map(|(id, ps)| names.get(id).map(|n| (n.clone(), ps.clone())))
        .collect()
}

/// Leaves the group: a heartbeat with epoch -1.
pub(super) async fn leave(
    coord: &Coordinator,
    member_id: &str,
    until: Option<Instant>,
) -> Result<()> {
    let mut req = ConsumerGroupHeartbeatRequest::default();
    req.group_id = GroupId(StrBytes::from_string(coord.group().to_string()));
    req.member_id = StrBytes::from_string(member_id.to_string());
    req.member_epoch = -1;
    req.rebalance_timeout_ms = -1;
    let (resp, _) = coord
        .call(&req, HEARTBEAT_VERSIONS, until, None, |r| r.error_code)
        .await?;
    match code(resp.error_code) {
        None | Some(Code::UnknownMemberId | Code::FencedMemberEpoch) => Ok(()),
        Some(c) => Err(Error::Kafka {
            api: "ConsumerGroupHeartbeat",
            target: coord.target(),
            code: c,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_is_asked_again_fencing_rejoins_and_the_rest_ends_the_membership() {
        assert_eq!(on_error(Code::UnknownServerError), OnError::AskAgain);
        assert_eq!(on_error(Code::FencedMemberEpoch), OnError::Rejoin);
        assert_eq!(on_error(Code::UnknownMemberId), OnError::Rejoin);
        for c in [
            Code::GroupAuthorizationFailed,
            Code::InvalidRequest,
            Code::UnsupportedVersion,
        ] {
            assert_eq!(on_error(c), OnError::Fail, "{c:?}");
        }
    }
}

//! Group membership against the fake broker's coordinator: joining, commits, rebalances, lost
//! memberships, and what a refusing or misbehaving coordinator makes of them (an error, never a spin
//! or a panic).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::time::Instant;

use super::*;
use crate::cluster::{ClientOptions, Cluster};
use crate::error::{Code, Error};
use crate::testkit::{FakeBroker, Misbehave};

const LIMIT: Duration = Duration::from_secs(30);

fn cluster(b: &FakeBroker) -> Arc<Cluster> {
    let mut o = ClientOptions::new(&b.bootstrap());
    o.retry_limit = Some(LIMIT);
    o.connection.request_timeout = Duration::from_secs(5);
    Arc::new(Cluster::with_transport(o, Arc::new(b.transport())))
}

/// One broker with topic `t` of 3 partitions.
fn fake() -> FakeBroker {
    let b = FakeBroker::new(1);
    b.create_topic("t", 3);
    b
}

fn cfg(protocol: GroupProtocol) -> GroupConfig {
    let mut c = GroupConfig::new("g", &["t".to_string()]);
    c.protocol = protocol;
    c
}

async fn join(b: &FakeBroker) -> Member {
    match Member::join(cluster(b), cfg(GroupProtocol::Auto)).await {
        Ok(m) => m,
        Err(e) => panic!("join: {e}"),
    }
}

async fn join_classic(b: &FakeBroker) -> Member {
    match Member::join(cluster(b), cfg(GroupProtocol::Classic)).await {
        Ok(m) => m,
        Err(e) => panic!("join: {e}"),
    }
}

fn rule(api: ApiKey, code: i16) -> Misbehave {
    Misbehave::GroupError { api, code }
}

fn all() -> Assignment {
    Assignment::from([("t".to_string(), BTreeSet::from([0, 1, 2]))])
}

fn offsets(list: &[(i32, i64)]) -> Offsets {
    list.iter()
        .map(|(p, o)| (("t".to_string(), *p), *o))
        .collect()
}

/// The next event (within two minutes of paused time).
async fn next(m: &mut Member) -> Result<Event> {
    match tokio::time::timeout(Duration::from_secs(120), m.event()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("the membership task ended"),
        Err(_) => panic!("no event in two minutes"),
    }
}

async fn assigned(m: &mut Member) -> Assignment {
    match next(m).await {
        Ok(Event::Assigned(a)) => a,
        other => panic!("expected an assignment, got {other:?}"),
    }
}

async fn error(m: &mut Member) -> Error {
    match next(m).await {
        Err(e) => e,
        Ok(ev) => panic!("expected an error, got {ev:?}"),
    }
}

/// Whether no event comes for `secs` (paused) seconds.
async fn quiet_for(m: &mut Member, secs: u64) -> bool {
    tokio::time::timeout(Duration::from_secs(secs), m.event())
        .await
        .is_err()
}

#[tokio::test(start_paused = true)]
async fn a_lone_member_is_assigned_every_partition_and_reads_back_its_commits() {
    let b = fake();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    assert_eq!(b.group_members("g").len(), 1);
    assert_eq!(
        b.requests(ApiKey::JoinGroup),
        2,
        "MEMBER_ID_REQUIRED, then the join"
    );
    let offs = offsets(&[(0, 5), (1, 7)]);
    assert!(m.commit(&offs).await.unwrap());
    assert_eq!(b.committed_offset("g", "t", 1), Some(7));
    // Partition 2 has no commit: left out.
    assert_eq!(m.committed(&all()).await.unwrap(), offs);
    // Heartbeats keep the membership.
    assert!(quiet_for(&mut m, 60).await);
    let beats = b.requests(ApiKey::Heartbeat);
    assert!((15..=21).contains(&beats), "{beats} heartbeats in 60 s");
    m.leave().await;
    assert!(b.group_members("g").is_empty());
    assert_eq!(b.requests(ApiKey::LeaveGroup), 1);
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_not_available_for_a_while_is_waited_for() {
    let b = fake();
    b.misbehave_times(rule(ApiKey::FindCoordinator, 15), 3);
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    assert_eq!(b.requests(ApiKey::FindCoordinator), 4);
}

/// Checks the error of a coordinator that is never available: given up at the retry limit, named, and
/// after paced attempts.
fn check_gave_up(b: &FakeBroker, e: &Error, took: Duration, limit: Duration) {
    assert!(
        took >= limit - Duration::from_secs(2) && took <= limit + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(e.to_string().contains("COORDINATOR_NOT_AVAILABLE"), "{e}");
    assert_eq!(e.code(), Some(Code::CoordinatorNotAvailable));
    let n = b.requests(ApiKey::FindCoordinator);
    // Backoff from 100 ms to 1 s: about one attempt a second.
    let secs = limit.as_secs() as usize;
    assert!(
        (secs / 3..=secs * 2).contains(&n),
        "{n} FindCoordinator in {took:?}"
    );
}

/// `Member::join`'s error (with the protocol chosen by the coordinator's versions).
async fn join_error(b: &FakeBroker) -> Error {
    match Member::join(cluster(b), cfg(GroupProtocol::Auto)).await {
        Ok(_) => panic!("joined without a coordinator"),
        Err(e) => e,
    }
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_never_available_fails_the_join_at_the_retry_limit() {
    let b = fake();
    b.misbehave(rule(ApiKey::FindCoordinator, 15));
    let start = Instant::now();
    let e = join_error(&b).await;
    check_gave_up(&b, &e, start.elapsed(), LIMIT);
    assert_eq!(b.requests(ApiKey::JoinGroup), 0);
}

#[tokio::test(start_paused = true)]
async fn a_coordinator_never_available_is_the_first_event_of_a_classic_member() {
    let b = fake();
    b.misbehave(rule(ApiKey::FindCoordinator, 15));
    let start = Instant::now();
    let mut m = join_classic(&b).await;
    let e = error(&mut m).await;
    // Failures stop at the retry limit (only a join the coordinator holds may wait past it).
    check_gave_up(&b, &e, start.elapsed(), LIMIT);
    assert!(m.event().await.is_none(), "the membership task ended");
}

#[tokio::test(start_paused = true)]
async fn a_rebalance_revokes_with_a_commit_still_allowed_then_assigns_again() {
    let b = fake();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    let gen = b.group_generation("g");
    let id = b.group_members("g");
    b.misbehave_times(rule(ApiKey::Heartbeat, 27), 1);
    match next(&mut m).await {
        Ok(Event::Revoke { parts, lost, done }) => {
            assert_eq!(parts, all());
            assert!(!lost);
            let offs = offsets(&[(2, 42)]);
            assert!(
                m.commit(&offs).await.unwrap(),
                "the generation is still valid"
            );
            assert_eq!(b.committed_offset("g", "t", 2), Some(42));
            done.send(()).unwrap();
        }
        other => panic!("expected a revocation, got {other:?}"),
    }
    assert_eq!(assigned(&mut m).await, all());
    assert_eq!(b.group_generation("g"), gen + 1);
    assert_eq!(b.group_members("g"), id, "the same member joined again");
    assert!(m.commit(&offsets(&[(2, 43)])).await.unwrap());
}

/// A heartbeat answered `code` loses the membership: everything is revoked as lost (nothing to commit
/// as), then the member joins again. Returns the member ids before and after, and the JoinGroups the
/// rejoin took.
async fn lost_membership(code: i16) -> (Vec<String>, Vec<String>, usize) {
    let b = fake();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    let before = b.group_members("g");
    let joins = b.requests(ApiKey::JoinGroup);
    b.misbehave_times(rule(ApiKey::Heartbeat, code), 1);
    match next(&mut m).await {
        Ok(Event::Revoke { parts, lost, done }) => {
            assert_eq!(parts, all());
            assert!(lost);
            assert!(
                !m.commit(&offsets(&[(0, 1)])).await.unwrap(),
                "no generation to commit as"
            );
            assert_eq!(b.requests(ApiKey::OffsetCommit), 0);
            done.send(()).unwrap();
        }
        other => panic!("expected a revocation, got {other:?}"),
    }
    assert_eq!(assigned(&mut m).await, all());
    assert!(m.commit(&offsets(&[(0, 1)])).await.unwrap());
    (
        before,
        b.group_members("g"),
        b.requests(ApiKey::JoinGroup) - joins,
    )
}

#[tokio::test(start_paused = true)]
async fn unknown_member_id_on_heartbeat_loses_the_partitions_and_rejoins_as_a_new_member() {
    let (before, after, joins) = lost_membership(25).await;
    assert_eq!(after.len(), 1);
    assert_ne!(before, after, "a new member id");
    assert_eq!(joins, 2, "MEMBER_ID_REQUIRED, then the join");
}

#[tokio::test(start_paused = true)]
async fn illegal_generation_on_heartbeat_loses_the_partitions_and_rejoins_as_the_same_member() {
    let (before, after, joins) = lost_membership(22).await;
    assert_eq!(before, after);
    assert_eq!(joins, 1);
}

#[tokio::test(start_paused = true)]
async fn group_authorization_failed_on_join_is_an_error_without_retries() {
    let b = fake();
    b.misbehave(rule(ApiKey::JoinGroup, 30));
    let mut m = join(&b).await;
    let e = error(&mut m).await.to_string();
    assert!(e.contains("GROUP_AUTHORIZATION_FAILED"), "{e}");
    assert!(e.contains("group 'g'"), "{e}");
    assert!(m.event().await.is_none(), "the membership task ended");
    assert_eq!(b.requests(ApiKey::JoinGroup), 1);
}

#[tokio::test(start_paused = true)]
async fn a_commit_refused_for_an_old_generation_is_stale_and_not_retried() {
    let b = fake();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    b.misbehave_times(rule(ApiKey::OffsetCommit, 22), 1);
    let offs = offsets(&[(0, 3)]);
    let e = m.commit(&offs).await.unwrap_err();
    assert!(offsets::is_stale(&e), "{e}");
    assert_eq!(e.code(), Some(Code::IllegalGeneration));
    assert_eq!(b.requests(ApiKey::OffsetCommit), 1);
    assert_eq!(b.committed_offset("g", "t", 0), None);
    assert!(m.commit(&offs).await.unwrap());
    assert_eq!(b.committed_offset("g", "t", 0), Some(3));
}

#[tokio::test(start_paused = true)]
async fn the_coordinator_refuses_commits_from_a_wrong_generation_or_an_unknown_member() {
    let b = fake();
    let c = cluster(&b);
    let mut m = match Member::join(c.clone(), cfg(GroupProtocol::Auto)).await {
        Ok(m) => m,
        Err(e) => panic!("join: {e}"),
    };
    assert_eq!(assigned(&mut m).await, all());
    let id = b.group_members("g")[0].clone();
    let gen = b.group_generation("g");
    let coord = Coordinator::new(c.clone(), "g");
    let offs = offsets(&[(1, 9)]);
    let deadline = c.options().deadline();
    for (who, code) in [
        (
            Generation {
                member_id: id.clone(),
                generation: gen + 1,
            },
            Code::IllegalGeneration,
        ),
        (
            Generation {
                member_id: "ghost".into(),
                generation: gen,
            },
            Code::UnknownMemberId,
        ),
    ] {
        let e = offsets::commit(&coord, Some(&who), &offs, deadline)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(code), "{e}");
        assert!(offsets::is_stale(&e), "{e}");
    }
    assert_eq!(b.committed_offset("g", "t", 1), None);
    let me = Generation {
        member_id: id,
        generation: gen,
    };
    offsets::commit(&coord, Some(&me), &offs, deadline)
        .await
        .unwrap();
    assert_eq!(b.committed_offset("g", "t", 1), Some(9));
}

#[tokio::test(start_paused = true)]
async fn an_assignment_that_cannot_be_read_is_an_error_not_a_panic() {
    let b = fake();
    // Version 0, then five topics announced in no bytes.
    b.misbehave_times(Misbehave::SyncAssignment(vec![0, 0, 0, 0, 0, 5]), 1);
    let mut m = join(&b).await;
    let e = error(&mut m).await.to_string();
    assert!(e.contains("SyncGroup"), "{e}");
    assert!(e.contains("the assignment cannot be read"), "{e}");
    assert!(m.event().await.is_none(), "the membership task ended");
}

#[tokio::test(start_paused = true)]
async fn a_sync_group_answer_that_does_not_decode_is_asked_again_on_a_new_connection() {
    let b = fake();
    b.misbehave_times(Misbehave::Garbage(ApiKey::SyncGroup), 1);
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    assert_eq!(b.requests(ApiKey::SyncGroup), 2);
}

#[tokio::test(start_paused = true)]
async fn sync_group_answers_that_never_decode_end_in_an_error_at_the_retry_limit() {
    let b = fake();
    b.misbehave(Misbehave::Garbage(ApiKey::SyncGroup));
    let start = Instant::now();
    let mut m = join(&b).await;
    let e = error(&mut m).await;
    let took = start.elapsed();
    assert!(matches!(e, Error::Deadline { .. }), "{e}");
    // The retry limit plus the rebalance timeout a classic join may be held for.
    assert!(took <= LIMIT + Duration::from_secs(31), "{took:?}");
    let n = b.requests(ApiKey::SyncGroup);
    assert!((10..=120).contains(&n), "{n} SyncGroup in {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_moved_coordinator_is_found_again_without_a_rebalance() {
    let b = fake();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    let finds = b.requests(ApiKey::FindCoordinator);
    let gen = b.group_generation("g");
    b.misbehave_times(rule(ApiKey::Heartbeat, 16), 2);
    assert!(quiet_for(&mut m, 20).await, "the membership held");
    assert_eq!(b.requests(ApiKey::FindCoordinator) - finds, 2);
    assert_eq!(b.group_generation("g"), gen);
}

#[tokio::test(start_paused = true)]
async fn committed_waits_out_a_loading_coordinator_and_reports_a_refusal() {
    let b = fake();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    let offs = offsets(&[(0, 11), (2, 12)]);
    assert!(m.commit(&offs).await.unwrap());
    b.misbehave_times(rule(ApiKey::OffsetFetch, 14), 2);
    assert_eq!(m.committed(&all()).await.unwrap(), offs);
    assert_eq!(b.requests(ApiKey::OffsetFetch), 3);
    // Fenced while it asked (UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH): asked again as the member is
    // then, not an end (a member ended at UNKNOWN_MEMBER_ID).
    for fenced in [25, 110] {
        let before = b.requests(ApiKey::OffsetFetch);
        b.misbehave_times(rule(ApiKey::OffsetFetch, fenced), 1);
        assert_eq!(m.committed(&all()).await.unwrap(), offs);
        assert_eq!(b.requests(ApiKey::OffsetFetch) - before, 2);
    }
    b.misbehave_times(rule(ApiKey::OffsetFetch, 30), 1);
    let e = m.committed(&all()).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::GroupAuthorizationFailed), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_second_member_takes_its_share_and_gives_it_back_when_it_leaves() {
    let b = fake();
    let mut m1 = join(&b).await;
    assert_eq!(assigned(&mut m1).await, all());
    let mut m2 = join(&b).await;
    let second = tokio::spawn(async move {
        let a = assigned(&mut m2).await;
        (m2, a)
    });
    // The first member gives everything back (committing allowed), then gets its share.
    match next(&mut m1).await {
        Ok(Event::Revoke { parts, lost, done }) => {
            assert_eq!(parts, all());
            assert!(!lost);
            assert!(m1.commit(&offsets(&[(0, 1)])).await.unwrap());
            done.send(()).unwrap();
        }
        other => panic!("expected a revocation, got {other:?}"),
    }
    let a1 = assigned(&mut m1).await;
    let (m2, a2) = second.await.unwrap();
    let p1 = a1.get("t").cloned().unwrap_or_default();
    let p2 = a2.get("t").cloned().unwrap_or_default();
    assert!(!p1.is_empty() && !p2.is_empty(), "{p1:?} {p2:?}");
    assert!(p1.is_disjoint(&p2), "{p1:?} {p2:?}");
    assert_eq!(&p1 | &p2, BTreeSet::from([0, 1, 2]));
    assert_eq!(b.group_members("g").len(), 2);
    m2.leave().await;
    match next(&mut m1).await {
        Ok(Event::Revoke { parts, lost, done }) => {
            assert_eq!(parts, a1);
            assert!(!lost);
            done.send(()).unwrap();
        }
        other => panic!("expected a revocation, got {other:?}"),
    }
    assert_eq!(assigned(&mut m1).await, all());
    assert_eq!(b.group_members("g").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn group_authorization_failed_on_find_coordinator_fails_the_join_at_once() {
    let b = fake();
    b.misbehave(rule(ApiKey::FindCoordinator, 30));
    let start = Instant::now();
    let e = join_error(&b).await;
    let msg = e.to_string();
    assert!(msg.contains("FindCoordinator"), "{msg}");
    assert!(msg.contains("GROUP_AUTHORIZATION_FAILED"), "{msg}");
    assert_eq!(b.requests(ApiKey::FindCoordinator), 1);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_sync_group_during_a_new_rebalance_joins_again() {
    let b = fake();
    b.misbehave_times(rule(ApiKey::SyncGroup, 27), 1);
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    assert_eq!(b.requests(ApiKey::SyncGroup), 2);
    assert_eq!(
        b.requests(ApiKey::JoinGroup),
        3,
        "member id, join, join again"
    );
    assert_eq!(b.group_generation("g"), 2);
    assert_eq!(b.group_members("g").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_sync_group_for_an_unknown_member_starts_over_with_a_new_member_id() {
    let b = fake();
    b.misbehave_times(rule(ApiKey::SyncGroup, 25), 1);
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    assert_eq!(b.requests(ApiKey::JoinGroup), 4, "twice: member id, join");
    assert_eq!(b.group_members("g"), vec!["member-2".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn a_rejoin_refused_for_an_unknown_member_starts_over_with_a_new_member_id() {
    let b = fake();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    let before = b.group_members("g");
    b.misbehave_times(rule(ApiKey::Heartbeat, 27), 1);
    b.misbehave_times(rule(ApiKey::JoinGroup, 25), 1);
    match next(&mut m).await {
        Ok(Event::Revoke { lost, done, .. }) => {
            assert!(!lost);
            done.send(()).unwrap();
        }
        other => panic!("expected a revocation, got {other:?}"),
    }
    assert_eq!(assigned(&mut m).await, all());
    let after = b.group_members("g");
    assert_eq!(after.len(), 1);
    assert_ne!(before, after);
}

#[tokio::test(start_paused = true)]
async fn a_commit_to_a_moved_coordinator_finds_it_again() {
    let b = fake();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    assert!(m.commit(&offsets(&[(0, 1)])).await.unwrap());
    let finds = b.requests(ApiKey::FindCoordinator);
    b.misbehave_times(rule(ApiKey::OffsetCommit, 16), 1);
    assert!(m.commit(&offsets(&[(0, 2)])).await.unwrap());
    assert_eq!(b.requests(ApiKey::FindCoordinator) - finds, 1);
    assert_eq!(b.requests(ApiKey::OffsetCommit), 3);
    assert_eq!(b.committed_offset("g", "t", 0), Some(2));
}

/// A coordinator that keeps refusing the member id (UNKNOWN_MEMBER_ID on every join) is asked again
/// at the backoff's pace, not flooded. Real time: a spin would keep a paused clock from advancing.
#[tokio::test]
async fn a_coordinator_refusing_every_member_id_is_not_flooded() {
    let b = fake();
    b.misbehave(rule(ApiKey::JoinGroup, 25));
    let m = join(&b).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = b.requests(ApiKey::JoinGroup);
    m.leave().await;
    assert!(n <= 20, "{n} JoinGroup in 500 ms");
}

/// An offset fetch refused with STALE_MEMBER_EPOCH (the member's epoch moved on as it went) is asked
/// again as the member is now; nothing is asked for no partitions (a run saw two members of three
/// end at STALE_MEMBER_EPOCH after an empty assignment).
#[tokio::test(start_paused = true)]
async fn an_offset_fetch_with_a_stale_epoch_is_asked_again() {
    let b = fake();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    let before = b.requests(ApiKey::OffsetFetch);
    assert!(m.committed(&Assignment::new()).await.unwrap().is_empty());
    assert_eq!(b.requests(ApiKey::OffsetFetch), before, "nothing to ask");
    b.misbehave_times(rule(ApiKey::OffsetFetch, 113), 2);
    assert!(m.committed(&all()).await.is_ok());
    assert_eq!(b.requests(ApiKey::OffsetFetch), before + 3);
}

#[tokio::test(start_paused = true)]
async fn a_classic_leader_plans_with_the_topics_current_partitions() {
    let b = fake();
    let mut m = join_classic(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    // The topic is created again with one partition, then the group rebalances: the leader's
    // metadata of `t` (3 partitions) is stale and must not be what it assigns from.
    b.create_topic("t", 1);
    b.misbehave_times(rule(ApiKey::Heartbeat, 27), 1);
    match next(&mut m).await {
        Ok(Event::Revoke { done, .. }) => done.send(()).unwrap(),
        other => panic!("expected a revocation, got {other:?}"),
    }
    let only = Assignment::from([("t".to_string(), BTreeSet::from([0]))]);
    assert_eq!(assigned(&mut m).await, only);
}

#[tokio::test(start_paused = true)]
async fn a_classic_leader_assigns_again_when_its_topics_partitions_change() {
    let b = fake();
    let mut m = join_classic(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    assert!(quiet_for(&mut m, 30).await, "nothing changed: no rebalance");
    // Partitions added (or the topic created again with more): the leader notices within its
    // check interval and the group is assigned again, with the new ones.
    b.create_topic("t", 5);
    let start = Instant::now();
    match next(&mut m).await {
        Ok(Event::Revoke { parts, lost, done }) => {
            assert_eq!(parts, all());
            assert!(!lost);
            done.send(()).unwrap();
        }
        other => panic!("expected a revocation, got {other:?}"),
    }
    assert!(
        start.elapsed() <= Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    let five = Assignment::from([("t".to_string(), BTreeSet::from([0, 1, 2, 3, 4]))]);
    assert_eq!(assigned(&mut m).await, five);
}

// The consumer protocol (KIP-848) against the fake coordinator of `testkit/next.rs`.

/// One broker with topic `t` of 3 partitions that offers the consumer protocol.
fn fake_next() -> FakeBroker {
    let b = fake();
    b.offer_consumer_protocol();
    b
}

#[tokio::test(start_paused = true)]
async fn a_consumer_protocol_member_is_assigned_by_the_coordinator_commits_and_leaves() {
    let b = fake_next();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    assert_eq!(b.requests(ApiKey::JoinGroup), 0, "the consumer protocol");
    let ids = b.consumer_members("g");
    assert_eq!(ids.len(), 1);
    let offs = offsets(&[(0, 5), (1, 7)]);
    assert!(
        m.commit(&offs).await.unwrap(),
        "committed at the member epoch"
    );
    assert_eq!(b.committed_offset("g", "t", 1), Some(7));
    assert!(quiet_for(&mut m, 60).await);
    // The join, one heartbeat at once to say what is owned, then one each 5 s.
    let beats = b.requests(ApiKey::ConsumerGroupHeartbeat);
    assert!((12..=15).contains(&beats), "{beats} heartbeats in 60 s");
    m.leave().await;
    assert!(b.consumer_members("g").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_target_whose_topics_cannot_be_named_yet_is_taken_once_they_can_be() {
    let b = fake_next();
    // The coordinator assigns topic ids the metadata answers do not carry yet (t49).
    b.misbehave_times(Misbehave::NoTopicIds, 3);
    let start = Instant::now();
    let mut m = join(&b).await;
    // The coordinator sends the target once; the member names it again at later heartbeats.
    assert_eq!(assigned(&mut m).await, all());
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "named at a later heartbeat, not at the first answer: {:?}",
        start.elapsed()
    );
    assert!(b.requests(ApiKey::ConsumerGroupHeartbeat) >= 3);
}

#[tokio::test(start_paused = true)]
async fn a_member_epoch_below_one_in_an_answer_without_error_ends_the_membership() {
    for bad in [0, -1, -2] {
        let b = fake_next();
        b.misbehave_times(Misbehave::MemberEpoch(bad), 1);
        let mut m = join(&b).await;
        let e = error(&mut m).await;
        assert!(e.to_string().contains("a member epoch below 1"), "{e}");
        // Not sent back: -1 would have left the group and 0 joined it again.
        assert!(m.event().await.is_none(), "the membership task ended");
        assert_eq!(b.requests(ApiKey::ConsumerGroupHeartbeat), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn an_assignment_in_every_answer_is_not_answered_back_to_back() {
    let b = fake_next();
    b.misbehave_times(Misbehave::AssignmentEveryTime, 10_000);
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    assert!(quiet_for(&mut m, 60).await, "the same target is no news");
    // At most one heartbeat at once after each answer carrying an assignment, then the interval.
    let beats = b.requests(ApiKey::ConsumerGroupHeartbeat);
    assert!((12..=26).contains(&beats), "{beats} heartbeats in 60 s");
}

#[tokio::test(start_paused = true)]
async fn a_fenced_consumer_protocol_member_loses_its_partitions_and_joins_again() {
    let b = fake_next();
    let mut m = join(&b).await;
    assert_eq!(assigned(&mut m).await, all());
    let id = b.consumer_members("g");
    b.misbehave_times(rule(ApiKey::ConsumerGroupHeartbeat, 110), 1);
    match next(&mut m).await {
        Ok(Event::Revoke { parts, lost, done }) => {
            assert_eq!(parts, all());
            assert!(lost, "fenced: nothing to commit as");
            done.send(()).unwrap();
        }
        other => panic!("expected a revocation, got {other:?}"),
    }
    assert_eq!(assigned(&mut m).await, all());
    assert_eq!(
        b.consumer_members("g"),
        id,
        "the same member id (FENCED_MEMBER_EPOCH)"
    );
    assert!(m.commit(&offsets(&[(0, 1)])).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_partition_moves_to_a_second_member_only_once_the_first_let_it_go() {
    let b = fake_next();
    let mut m1 = join(&b).await;
    assert_eq!(assigned(&mut m1).await, all());
    let mut m2 = join(&b).await;
    // The coordinator's target for the second member is held back while the first owns it.
    let second = tokio::spawn(async move {
        let mut got = Assignment::new();
        while got.get("t").is_none_or(|p| p.is_empty()) {
            for (t, ps) in assigned(&mut m2).await {
                got.entry(t).or_default().extend(ps);
            }
        }
        (m2, got)
    });
    let gave = match next(&mut m1).await {
        Ok(Event::Revoke { parts, lost, done }) => {
            assert!(!lost);
            assert!(m1.commit(&offsets(&[(0, 1)])).await.unwrap());
            done.send(()).unwrap();
            parts
        }
        other => panic!("expected a revocation, got {other:?}"),
    };
    let (m2, got) = second.await.unwrap();
    assert_eq!(got, gave, "the second member took what the first gave back");
    assert_eq!(b.consumer_members("g").len(), 2);
    m2.leave().await;
    // The first member is given the rest back.
    assert_eq!(assigned(&mut m1).await, gave);
}

//! The cluster view against the fake broker.

use super::*;
use crate::testkit::{FakeBroker, Misbehave};

fn cluster(b: &FakeBroker) -> Cluster {
    let mut o = ClientOptions::new(&b.bootstrap());
    o.retry_limit = Some(Duration::from_secs(5));
    Cluster::with_transport(o, Arc::new(b.transport()))
}

#[tokio::test]
async fn topic_metadata_names_every_leader() {
    let b = FakeBroker::new(3);
    b.create_topic("t", 6);
    let c = cluster(&b);
    let t = c.topic("t", false).await.unwrap();
    assert_eq!(t.partitions.len(), 6);
    assert_eq!(t.leader(4), 2);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_topic_is_an_error_without_waiting_out_the_timeout() {
    let b = FakeBroker::new(1);
    b.auto_create(None);
    let c = cluster(&b);
    let start = Instant::now();
    let e = c.topic("nope", false).await.unwrap_err();
    assert!(matches!(e, Error::UnknownTopic { .. }), "{e}");
    // Asked again for UNKNOWN_FOR (a broker may lag), not until the 5 s retry limit.
    assert!(start.elapsed() >= UNKNOWN_FOR, "{:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// A broker that has not yet learnt of a topic created a moment ago (its metadata lags the
/// controller's) says "unknown" for a while: a reader waits that out rather than calling the topic
/// absent after three quick answers (CI: a consumer started right after kafka-topics --create on a
/// loaded three-broker cluster said "does not exist").
#[tokio::test(start_paused = true)]
async fn a_topic_a_lagging_broker_does_not_know_yet_is_found() {
    let b = FakeBroker::new(1);
    b.auto_create(None);
    b.create_topic("fresh", 2);
    b.misbehave_times(Misbehave::UnknownTopic, 5);
    let c = cluster(&b);
    let t = c.topic("fresh", false).await.unwrap();
    assert_eq!(t.partitions.len(), 2);
}

/// A topic asked to be created and not created, because its name collides with an existing one's
/// (`a.b` and `a_b`), is said so with Kafka's reason, not "does not exist (create it ...)" (t36 F3);
/// one the broker would create (auto-creation off) is still "does not exist".
#[tokio::test(start_paused = true)]
async fn a_topic_kafka_refuses_to_create_is_said_with_its_reason() {
    let b = FakeBroker::new(1);
    b.auto_create(Some(1));
    b.create_topic("app.logs", 1);
    let c = cluster(&b);
    let e = c.topic("app_logs", true).await.unwrap_err();
    assert!(matches!(e, Error::CannotCreate { .. }), "{e}");
    assert!(
        e.to_string().contains(
            "topic 'app_logs' does not exist, and Kafka refuses to create it: Topic 'app_logs' collides with existing topic: app.logs"
        ),
        "{e}"
    );
    b.auto_create(None);
    let e = c.topic("other_logs", true).await.unwrap_err();
    assert!(matches!(e, Error::UnknownTopic { .. }), "{e}");
    // Not asked to create it: not asked why it was not.
    let e = c.topic("app_logs", false).await.unwrap_err();
    assert!(matches!(e, Error::UnknownTopic { .. }), "{e}");
}

/// Time running out while the broker still calls a topic unknown (it may be being created) says
/// so, not that a partition has no leader (which blamed brokers being down).
#[tokio::test(start_paused = true)]
async fn time_running_out_on_an_unknown_topic_says_it_is_not_known_yet() {
    let b = FakeBroker::new(1);
    b.auto_create(None);
    let c = cluster(&b);
    let e = c
        .topic_until(
            "nope",
            true,
            Some(Instant::now() + Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("topic 'nope' is not known to the broker yet"),
        "{e}"
    );
    assert!(!e.to_string().contains("leader"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_cluster_is_given_up_at_the_timeout() {
    let b = FakeBroker::new(1);
    b.stop(1);
    let c = cluster(&b);
    let start = Instant::now();
    let e = c.topic("t", true).await.unwrap_err();
    assert!(matches!(e, Error::Deadline { .. }), "{e}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took <= Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_metadata_response_describing_millions_of_partitions_is_refused() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::HugeMetadata(1_000_000));
    let c = cluster(&b);
    let e = c
        .fetch_metadata(Some(&["t".into()]), false, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("MiB"), "{e}");
}

/// A broker that stopped answering (paused) is asked last: a metadata request on its connection would
/// wait behind the request it left unanswered, while another broker answers at once.
#[tokio::test(start_paused = true)]
async fn a_broker_not_answering_or_just_failed_is_asked_last_for_metadata() {
    let b = FakeBroker::new(3);
    b.create_topic("t", 3);
    let c = Arc::new(cluster(&b));
    c.topic("t", false).await.unwrap();
    let addr = b.addr(1);
    let conn = c.connection(&addr, None).await.unwrap();
    b.misbehave_times(Misbehave::Silent, 1);
    let hung = tokio::spawn({
        let conn = conn.clone();
        async move {
            let req = MetadataRequest::default();
            conn.call(&req, 12, Instant::now() + Duration::from_secs(600))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!conn.stalled(STALLED_AFTER), "not yet");
    tokio::time::sleep(STALLED_AFTER).await;
    assert!(conn.stalled(STALLED_AFTER));
    for _ in 0..20 {
        let other = c.any_connection(None).await.unwrap();
        assert_ne!(other.addr(), addr, "the stalled broker was picked");
    }
    let start = Instant::now();
    c.fetch_metadata(Some(&["t".into()]), false, None)
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    hung.abort();
    // A broker that just refused a connection is asked last too.
    let c2 = cluster(&b);
    c2.topic("t", false).await.unwrap();
    let down = b.addr(2);
    b.stop(2);
    // The lookup above may have connected to it: that connection goes too.
    if let Some(open) = c2.open_connection(&down) {
        open.close();
    }
    c2.connection(&down, None).await.unwrap_err();
    // Back up at once: still asked last for a while (a paused broker accepts connections and then
    // does not answer: trying it again costs a whole connect timeout).
    b.start(2);
    for _ in 0..20 {
        let other = c2.any_connection(None).await.unwrap();
        assert_ne!(other.addr(), down, "the broker that failed was picked");
    }
}

/// A bootstrap broker that accepts connections and never answers (paused) costs the next one a
/// head start, not the whole connect timeout (t21 F6: `metadata` took 10 s), and is asked last after.
#[tokio::test(start_paused = true)]
async fn a_hung_broker_delays_finding_another_by_a_second_not_the_connect_timeout() {
    let b = FakeBroker::new(3);
    b.create_topic("t", 3);
    let c = cluster(&b);
    b.misbehave_times(
        Misbehave::SilentOn(kafka_protocol::messages::ApiKey::ApiVersions),
        1,
    );
    let start = Instant::now();
    let conn = c.any_connection(None).await.unwrap();
    let took = start.elapsed();
    assert!(
        took >= NEXT_ATTEMPT_AFTER && took < NEXT_ATTEMPT_AFTER + Duration::from_millis(100),
        "{took:?}"
    );
    let hung: Vec<String> = c.failed_lock().keys().cloned().collect();
    assert_eq!(hung.len(), 1, "{hung:?}");
    assert_ne!(conn.addr(), hung[0]);
    // An open connection is used before a new one is made.
    for _ in 0..10 {
        assert_eq!(c.any_connection(None).await.unwrap().addr(), conn.addr());
    }
}

/// The broker a "no answer from Kafka" line waits on is named (t21 F6: which of three was hung?).
#[tokio::test(start_paused = true)]
async fn the_longest_unanswered_wait_names_its_broker_and_request() {
    let b = FakeBroker::new(1);
    let c = Arc::new(cluster(&b));
    b.misbehave_times(
        Misbehave::SilentOn(kafka_protocol::messages::ApiKey::ApiVersions),
        1,
    );
    let addr = b.addr(1);
    let pending = tokio::spawn({
        let (c, addr) = (c.clone(), addr.clone());
        async move { c.connection(&addr, None).await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        crate::connection::longest_wait(Duration::from_secs(4)),
        None
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let said = crate::connection::longest_wait(Duration::from_secs(4)).unwrap();
    assert_eq!(
        said,
        format!("broker {addr} has not answered ApiVersions for 5 s")
    );
    pending.await.unwrap().unwrap_err();
    assert_eq!(crate::connection::longest_wait(Duration::ZERO), None);
}

/// A caller of some partitions does not wait for another's leader (t24 F5: `produce -p 0` and
/// `consume -p 0` took 3 s more while partition 2 had none); a caller of all of them still does.
#[tokio::test(start_paused = true)]
async fn only_the_wanted_partitions_leaders_are_waited_for() {
    let b = FakeBroker::new(3);
    b.create_topic("t", 3);
    b.set_leader("t", 2, -1);
    let c = cluster(&b);
    let start = Instant::now();
    let t = c.topic_for("t", false, None, &[0]).await.unwrap();
    assert!(t.leader(0) >= 0);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // Partition 2 itself, or all: waited for, then taken with it leaderless.
    let start = Instant::now();
    let e = c
        .topic_for(
            "t",
            false,
            Some(Instant::now() + Duration::from_secs(2)),
            &[2],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Deadline { .. } | Error::NoLeader { .. }),
        "{e}"
    );
    let t = c.topic("t", false).await.unwrap();
    assert!(t.leader(2) < 0);
    assert!(
        start.elapsed() >= EVERY_LEADER_WITHIN,
        "{:?}",
        start.elapsed()
    );
}

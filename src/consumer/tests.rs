//! The consumer against the fake broker: what a misbehaving broker sends is checked before it is
//! believed, and nothing makes it spin.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::time::Instant;

use super::*;
use crate::cluster::{ClientOptions, Cluster};
use crate::testkit::{FakeBroker, Misbehave};

fn cluster(b: &FakeBroker) -> Arc<Cluster> {
    let mut o = ClientOptions::new(&b.bootstrap());
    o.retry_limit = Some(Duration::from_secs(30));
    o.connection.request_timeout = Duration::from_secs(5);
    Arc::new(Cluster::with_transport(o, Arc::new(b.transport())))
}

async fn consumer(b: &FakeBroker, topic: &str, start: StartOffset) -> Consumer {
    let c = cluster(b);
    let meta = c.topic(topic, false).await.unwrap();
    let mut k = Consumer::new(c, FetchConfig::default());
    k.assign(meta, &[], start).await.unwrap();
    k
}

/// A consumer of every partition of `topic` from the beginning that reads on (as `consume` does
/// when following) rather than ending when one partition cannot be read.
async fn following(b: &FakeBroker, topic: &str) -> Consumer {
    let c = cluster(b);
    let meta = c.topic(topic, false).await.unwrap();
    let cfg = FetchConfig {
        read_on: true,
        ..FetchConfig::default()
    };
    let mut k = Consumer::new(c, cfg);
    k.assign(meta, &[], StartOffset::Beginning).await.unwrap();
    k
}

/// Polls for `secs` of (paused) time; returns every value read.
async fn read_for(k: &mut Consumer, secs: u64) -> Result<Vec<Vec<u8>>> {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    while Instant::now() < end {
        let Ok(r) = tokio::time::timeout_at(end, k.poll()).await else {
            break;
        };
        for f in r? {
            f.for_each_record(&mut scratch, 1 << 20, |r| {
                out.push(r.value.unwrap_or_default().to_vec())
            })
            .unwrap();
        }
    }
    Ok(out)
}

#[test]
fn start_offsets_resolve_within_what_exists_even_when_the_broker_lies() {
    assert_eq!(StartOffset::Absolute(7).resolve(2, 10, None), 7);
    assert_eq!(StartOffset::Absolute(70).resolve(2, 10, None), 10);
    assert_eq!(StartOffset::FromEnd(3).resolve(2, 10, None), 7);
    assert_eq!(StartOffset::FromEnd(i64::MAX).resolve(2, 10, None), 2);
    // Earliest past latest: no panic, start at the latest.
    assert_eq!(StartOffset::Absolute(7).resolve(10, 5, None), 5);
    assert_eq!(StartOffset::Beginning.resolve(10, 5, None), 5);
    assert_eq!(StartOffset::Timestamp(1).resolve(-1, -1, Some(-1)), 0);
    assert_eq!(StartOffset::parse(&i64::MIN.to_string()), None);
    // Negative timestamps are Kafka's markers (-1 latest, -2 earliest), not times.
    assert_eq!(StartOffset::parse("s@-5"), None);
    assert_eq!(StartOffset::parse("s@-3"), None);
    assert_eq!(StartOffset::parse("s@0"), Some(StartOffset::Timestamp(0)));
    // -0: nothing before the end, not the beginning.
    assert_eq!(StartOffset::parse("-0"), Some(StartOffset::FromEnd(0)));
    assert_eq!(StartOffset::FromEnd(0).resolve(2, 10, None), 10);
    assert_eq!(StartOffset::parse("0"), Some(StartOffset::Absolute(0)));
}

#[tokio::test(start_paused = true)]
async fn earliest_after_latest_from_the_broker_starts_at_the_latest() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a", b"b", b"c"]);
    b.misbehave_times(
        Misbehave::Offsets {
            earliest: 10,
            latest: 2,
        },
        2,
    );
    let k = consumer(&b, "t", StartOffset::Absolute(5)).await;
    assert_eq!(k.positions(), vec![(0, 0, 2)]);
}

/// An end offset at the start that the log no longer reaches (truncated by an unclean leader
/// election) is lowered to the broker's high watermark once a fetch there comes back empty: reading
/// to the end ends (t49: `consume -e` hung for ever).
#[tokio::test(start_paused = true)]
async fn the_end_at_the_start_is_lowered_to_a_high_watermark_below_it() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a", b"b", b"c"]);
    b.misbehave_times(
        Misbehave::Offsets {
            earliest: 0,
            latest: 10,
        },
        2,
    );
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    assert!(!k.at_end_of_start());
    let got = read_for(&mut k, 2).await.unwrap();
    assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert!(k.at_end_of_start());
}

#[tokio::test(start_paused = true)]
async fn data_for_a_partition_not_asked_for_is_ignored() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"mine"]);
    b.misbehave_times(Misbehave::FetchForeignPartition, 1);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    let got = read_for(&mut k, 2).await.unwrap();
    assert_eq!(got, vec![b"mine".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn out_of_range_is_reset_with_a_backoff_not_a_spin() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a"]);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    b.misbehave(Misbehave::FetchError(1));
    let before = b.requests(ApiKey::ListOffsets);
    let got = read_for(&mut k, 20).await.unwrap();
    assert!(got.is_empty());
    let resets = b.requests(ApiKey::ListOffsets) - before;
    assert!(resets < 40, "{resets} ListOffsets in 20 s");
    b.behave();
    let got = read_for(&mut k, 10).await.unwrap();
    assert_eq!(got, vec![b"a".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_that_never_advances_backs_off_instead_of_spinning() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a"]);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    b.misbehave(Misbehave::FetchNoProgress);
    let before = b.requests(ApiKey::Fetch);
    let start = Instant::now();
    let got = read_for(&mut k, 25).await.unwrap();
    assert!(got.is_empty());
    let fetches = b.requests(ApiKey::Fetch) - before;
    assert!(fetches < 50, "{fetches} fetches in 25 s");
    assert_eq!(k.positions(), vec![(0, 0, 0)], "no offset invented");
    // And not for ever: given up at the retry limit (probe D: `consume -e --timeout 5s` ran on).
    let e = read_for(&mut k, 120).await.unwrap_err();
    assert!(e.to_string().contains("whole batch"), "{e}");
    assert!(
        start.elapsed() <= Duration::from_secs(36),
        "{:?}",
        start.elapsed()
    );
}

/// A partition the broker's answers leave out is fetched again with backoff (it was asked for as
/// fast as the broker answered) and given up at the retry limit.
#[tokio::test(start_paused = true)]
async fn a_partition_the_answers_leave_out_backs_off_and_is_given_up_at_the_limit() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a"]);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    b.misbehave(Misbehave::FetchMissingPartition);
    let before = b.requests(ApiKey::Fetch);
    let start = Instant::now();
    let e = read_for(&mut k, 120).await.unwrap_err();
    assert!(matches!(e, Error::Deadline { .. }), "{e}");
    assert!(e.to_string().contains("missing from the answer"), "{e}");
    assert!(
        start.elapsed() <= Duration::from_secs(36),
        "{:?}",
        start.elapsed()
    );
    let fetches = b.requests(ApiKey::Fetch) - before;
    assert!(fetches < 60, "{fetches} fetches");
}

/// OFFSET_OUT_OF_RANGE for an offset inside the log the broker says it has, again and again: given
/// up at the retry limit, not fetched for ever.
#[tokio::test(start_paused = true)]
async fn an_offset_out_of_range_inside_the_log_for_ever_is_given_up_at_the_limit() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a"]);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    b.misbehave(Misbehave::FetchError(1));
    let start = Instant::now();
    let e = read_for(&mut k, 120).await.unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
    assert!(
        start.elapsed() <= Duration::from_secs(36),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_move_is_followed() {
    let b = FakeBroker::new(2);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a"]);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    b.set_leader("t", 0, 2);
    let got = read_for(&mut k, 10).await.unwrap();
    assert_eq!(got, vec![b"a".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn an_authorization_error_ends_the_read_with_its_name() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    b.misbehave(Misbehave::FetchError(29));
    let e = read_for(&mut k, 10).await.unwrap_err();
    assert!(e.to_string().contains("TOPIC_AUTHORIZATION_FAILED"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_leader_is_given_up_at_the_retry_limit() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    b.stop(1);
    let start = Instant::now();
    let e = read_for(&mut k, 120).await.unwrap_err();
    assert!(matches!(e, Error::Deadline { .. }), "{e}");
    assert!(
        start.elapsed() <= Duration::from_secs(35),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_partition_that_cannot_be_read_is_given_up_at_the_retry_limit_while_others_are_read() {
    // Broker 1 answers for partition 0 all along: that must not restart partition 1's clock
    // (t10: a consumer outlived its --timeout through minutes of a two-broker outage).
    let b = FakeBroker::new(2);
    b.create_topic("t", 2);
    b.append("t", 0, &[b"a"]);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    b.stop(2);
    let start = Instant::now();
    let e = read_for(&mut k, 120).await.unwrap_err();
    assert!(matches!(e, Error::Deadline { .. }), "{e}");
    assert!(
        (Duration::from_secs(29)..=Duration::from_secs(32)).contains(&start.elapsed()),
        "{:?}",
        start.elapsed()
    );
    assert!(e.to_string().contains(&b.addr(2)), "{e}");
    assert!(e.to_string().contains("topic 't' partition 1:"), "{e}");
}

/// Following (`read_on`), a partition unreadable past the limit is read on once it can be, and
/// the others meanwhile (t21 F5: a group member ended, and left its group, over one partition
/// whose only broker was down; kcat read on).
#[tokio::test(start_paused = true)]
async fn following_a_partition_unreadable_past_the_limit_does_not_end_the_read() {
    let b = FakeBroker::new(2);
    b.create_topic("t", 2);
    let mut k = following(&b, "t").await;
    b.stop(2);
    for i in 0..6 {
        b.append("t", 0, &[format!("zero-{i}").as_bytes()]);
        let got = read_for(&mut k, 10).await.unwrap();
        assert_eq!(got, vec![format!("zero-{i}").into_bytes()]);
    }
    b.start(2);
    b.append("t", 1, &[b"one"]);
    assert_eq!(read_for(&mut k, 10).await.unwrap(), vec![b"one".to_vec()]);
}

/// Following, the read still ends when no partition could be read for the limit (the whole
/// cluster down), naming the partitions.
#[tokio::test(start_paused = true)]
async fn following_the_read_ends_when_no_partition_could_be_read_for_the_limit() {
    let b = FakeBroker::new(2);
    b.create_topic("t", 2);
    let mut k = following(&b, "t").await;
    b.stop(2);
    assert!(read_for(&mut k, 20).await.unwrap().is_empty());
    b.stop(1);
    let start = Instant::now();
    let e = read_for(&mut k, 120).await.unwrap_err();
    assert!(
        (Duration::from_secs(29)..=Duration::from_secs(32)).contains(&start.elapsed()),
        "{:?}",
        start.elapsed()
    );
    assert!(
        e.to_string()
            .contains("cannot read topic 't' partitions 0, 1"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_holds_a_fetch_is_given_up_at_the_retry_limit_not_the_request_timeout() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut o = ClientOptions::new(&b.bootstrap());
    o.retry_limit = Some(Duration::from_secs(10));
    o.connection.request_timeout = Duration::from_secs(60);
    let c = Arc::new(Cluster::with_transport(o, Arc::new(b.transport())));
    let meta = c.topic("t", false).await.unwrap();
    let mut k = Consumer::new(c, FetchConfig::default());
    k.assign(meta, &[], StartOffset::Beginning).await.unwrap();
    b.misbehave(Misbehave::Silent);
    let start = Instant::now();
    let e = read_for(&mut k, 120).await.unwrap_err();
    assert!(
        start.elapsed() <= Duration::from_secs(12),
        "{:?}",
        start.elapsed()
    );
    assert!(e.to_string().contains("no response to Fetch"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_partition_that_fails_for_less_than_the_limit_is_read_on() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    for _ in 0..3 {
        b.misbehave(Misbehave::FetchError(6));
        assert!(read_for(&mut k, 20).await.unwrap().is_empty());
        b.behave();
        assert!(read_for(&mut k, 3).await.unwrap().is_empty());
    }
    b.append("t", 0, &[b"after"]);
    assert_eq!(read_for(&mut k, 3).await.unwrap(), vec![b"after".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_stops_polling_does_not_make_a_broker_look_hung() {
    // `consume | less` paused for a minute: the fetch answered meanwhile was not taken, and that is
    // not the broker's doing (the first version of the hung-broker check gave up here).
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a"]);
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    assert_eq!(read_for(&mut k, 2).await.unwrap(), vec![b"a".to_vec()]);
    let _ = k.poll().await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    b.append("t", 0, &[b"b"]);
    assert_eq!(read_for(&mut k, 5).await.unwrap(), vec![b"b".to_vec()]);
}

/// A partition whose ListOffsets fails (a new leader whose high watermark is not caught up:
/// OFFSET_NOT_AVAILABLE) waits for its start while the others are read, and is read once it
/// answers. t10: nothing was printed until the retry limit, then "gave up".
#[tokio::test(start_paused = true)]
async fn a_partition_without_offsets_yet_does_not_hold_up_the_others() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 2);
    b.append("t", 0, &[b"p0-a", b"p0-b"]);
    b.append("t", 1, &[b"p1-a"]);
    b.misbehave_times(
        Misbehave::OffsetsError {
            partition: 1,
            code: 78,
        },
        // Asked again with backoff (from 100 ms, doubling, each jittered to half or more): six
        // refusals take 1.55 s at the least (so partition 0 is read first) and 6.3 s at the most,
        // and each ask the paused clock jumps past (the fake answers on its own thread) adds its
        // 2 s hold: well inside the 25 s read below and the 30 s retry limit (eight refusals, up to
        // 16 s of backoff, overran a 20 s read now and then).
        6,
    );
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    assert_eq!(
        k.positions(),
        vec![(0, 0, 0)],
        "partition 1 waits, uncommittable"
    );
    assert!(!k.at_end_of_start());
    let first = read_for(&mut k, 1).await.unwrap();
    assert_eq!(first, vec![b"p0-a".to_vec(), b"p0-b".to_vec()]);
    let rest = read_for(&mut k, 25).await.unwrap();
    assert_eq!(rest, vec![b"p1-a".to_vec()]);
    assert!(k.at_end_of_start());
    assert_eq!(k.positions(), vec![(0, 0, 2), (0, 1, 1)]);
}

/// A topic created again while one partition's offsets in the new log are refused for a while: the
/// others are read from the new log's start meanwhile, and that one once its offsets come. Asked
/// inline, the ask held every partition back and a failure ended the read.
#[tokio::test(start_paused = true)]
async fn a_topic_created_again_reads_its_partitions_as_their_new_offsets_come() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 2);
    b.append("t", 0, &[b"old-0a", b"old-0b"]);
    b.append("t", 1, &[b"old-1a", b"old-1b"]);
    let mut k = following(&b, "t").await;
    let mut old = read_for(&mut k, 2).await.unwrap();
    old.sort();
    assert_eq!(old.len(), 4, "{old:?}");
    // Deleted and created again (a new topic id), with one record in each partition; the new log's
    // offsets of partition 1 are refused for a while.
    b.create_topic("t", 2);
    b.append("t", 0, &[b"new-0"]);
    b.append("t", 1, &[b"new-1"]);
    b.misbehave_times(
        Misbehave::OffsetsError {
            partition: 1,
            code: 78,
        },
        // Backoff from 100 ms, doubling, each jittered to half or more: 1.55 s at the least.
        6,
    );
    let first = read_for(&mut k, 1).await.unwrap();
    assert_eq!(
        first,
        vec![b"new-0".to_vec()],
        "partition 0 is not held back"
    );
    let rest = read_for(&mut k, 25).await.unwrap();
    assert_eq!(rest, vec![b"new-1".to_vec()]);
    assert_eq!(k.positions(), vec![(0, 0, 1), (0, 1, 1)]);
}

/// A topic deleted and created again under a read that sees no gap: the next fetch names the old
/// topic by its id and is refused, so the new topic is read once, from its start (t29 F3: fetched by
/// name, the new records past the old position were printed, and then the whole new log again).
#[tokio::test(start_paused = true)]
async fn a_topic_created_again_is_not_read_at_the_old_topics_position() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"old-0", b"old-1"]);
    let mut k = following(&b, "t").await;
    assert_eq!(read_for(&mut k, 2).await.unwrap().len(), 2);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"new-0", b"new-1", b"new-2", b"new-3"]);
    let got = read_for(&mut k, 10).await.unwrap();
    let want: Vec<Vec<u8>> = (0..4).map(|i| format!("new-{i}").into_bytes()).collect();
    assert_eq!(got, want);
    assert_eq!(k.take_recreated(), vec!["t".to_string()]);
    assert_eq!(k.positions(), vec![(0, 0, 4)]);
}

/// A read of every partition whose topic is created again with more: the new partitions are read
/// too (t29 F2: only the old ones were, unsaid). A read of named partitions keeps to them.
#[tokio::test(start_paused = true)]
async fn a_topic_created_again_with_more_partitions_reads_the_new_ones() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"old-0", b"old-1"]);
    let mut k = following(&b, "t").await;
    let c = cluster(&b);
    let meta = c.topic("t", false).await.unwrap();
    let mut named = Consumer::new(c, FetchConfig::default());
    named
        .assign(meta, &[0], StartOffset::Beginning)
        .await
        .unwrap();
    assert_eq!(read_for(&mut k, 2).await.unwrap().len(), 2);
    assert_eq!(read_for(&mut named, 2).await.unwrap().len(), 2);
    b.create_topic("t", 3);
    for p in 0..3 {
        b.append("t", p, &[format!("new-{p}").as_bytes()]);
    }
    let mut got = read_for(&mut k, 10).await.unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![b"new-0".to_vec(), b"new-1".to_vec(), b"new-2".to_vec()]
    );
    assert_eq!(k.positions(), vec![(0, 0, 1), (0, 1, 1), (0, 2, 1)]);
    assert_eq!(
        read_for(&mut named, 10).await.unwrap(),
        vec![b"new-0".to_vec()]
    );
    assert!(!named.is_assigned("t", 1));
}

/// One that never answers is given up at the retry limit with its error, after the others were read.
#[tokio::test(start_paused = true)]
async fn a_partition_whose_offsets_never_come_is_given_up_at_the_limit() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 2);
    b.append("t", 0, &[b"p0"]);
    b.misbehave_times(
        Misbehave::OffsetsError {
            partition: 1,
            code: 78,
        },
        1_000_000,
    );
    let mut k = consumer(&b, "t", StartOffset::Beginning).await;
    assert_eq!(read_for(&mut k, 5).await.unwrap(), vec![b"p0".to_vec()]);
    // Given up at the limit with the last failure (its own, or a metadata refresh's: the fake
    // answers on its own thread while the paused clock may jump past a short request deadline).
    let e = read_for(&mut k, 60).await.unwrap_err();
    assert!(e.to_string().starts_with("gave up after 30"), "{e}");
}

/// When no partition answers at all, the start waits (and gives up) as one read, as before.
#[tokio::test(start_paused = true)]
async fn when_no_partition_has_offsets_the_start_itself_waits() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"x"]);
    b.misbehave_times(
        Misbehave::OffsetsError {
            partition: 0,
            code: 78,
        },
        3,
    );
    let k = consumer(&b, "t", StartOffset::Beginning).await;
    assert_eq!(k.positions(), vec![(0, 0, 0)]);
    assert!(!k.at_end_of_start());
}

/// A leader that accepts connections and never answers (paused, not yet fenced) at the start does
/// not hold up the others: their offsets are asked at once, each ask is held to a few seconds, and
/// the others are read while its partition waits (t24 F1: nothing printed for 10 s, and a
/// `--timeout 10s` consume ended with nothing).
#[tokio::test(start_paused = true)]
async fn a_hung_leader_at_the_start_does_not_hold_up_the_other_partitions() {
    let b = FakeBroker::new(3);
    b.create_topic("t", 3);
    for p in 0..3 {
        b.append("t", p, &[format!("p{p}").as_bytes()]);
    }
    let c = cluster(&b);
    let meta = c.topic("t", false).await.unwrap();
    // The next connection's first request goes unanswered: one of the two leaders not yet met.
    b.misbehave_times(
        Misbehave::SilentOn(kafka_protocol::messages::ApiKey::ApiVersions),
        1,
    );
    let cfg = FetchConfig {
        read_on: true,
        ..FetchConfig::default()
    };
    let mut k = Consumer::new(c, cfg);
    let start = Instant::now();
    k.assign(meta, &[], StartOffset::Beginning).await.unwrap();
    assert!(
        start.elapsed() <= PENDING_ATTEMPT * 2,
        "{:?}",
        start.elapsed()
    );
    let got = read_for(&mut k, 1).await.unwrap();
    assert!(got.len() >= 2, "{got:?}");
}

/// While a waiting partition's bounds are asked of a leader that does not answer (hung, not yet
/// fenced), the other partitions' records keep coming: the ask runs beside the fetches. Awaited in
/// the read loop, each ask held every record of the others back for up to PENDING_ATTEMPT (2 s) in
/// each 5.
#[tokio::test(start_paused = true)]
async fn a_hung_bounds_ask_does_not_hold_up_the_other_partitions_records() {
    let b = FakeBroker::new(2);
    b.create_topic("t", 2);
    b.misbehave_times(
        Misbehave::OffsetsError {
            partition: 1,
            code: 78,
        },
        1,
    );
    // Reading on: partition 1 unreadable past the retry limit does not end the read.
    let mut k = following(&b, "t").await;
    assert_eq!(k.positions(), vec![(0, 0, 0)], "partition 1 waits");
    // From now on every ListOffsets hangs (only partition 1's bounds are asked for).
    b.misbehave(Misbehave::SilentOn(ApiKey::ListOffsets));
    let mut scratch = Vec::new();
    let mut worst = Duration::ZERO;
    for i in 0..30 {
        let want = format!("r{i}").into_bytes();
        b.append("t", 0, &[&want]);
        let at = Instant::now();
        'wait: loop {
            assert!(
                at.elapsed() < Duration::from_secs(30),
                "record {i} never read"
            );
            for f in k.poll().await.unwrap() {
                let mut got = false;
                f.for_each_record(&mut scratch, 1 << 20, |r| got |= r.value == Some(&want[..]))
                    .unwrap();
                if got {
                    break 'wait;
                }
            }
        }
        worst = worst.max(at.elapsed());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        b.requests(ApiKey::ListOffsets) >= 4,
        "partition 1 was asked again"
    );
    assert!(
        worst < Duration::from_millis(1500),
        "a record waited {worst:?}"
    );
}

/// A group's offset past the log's end (the topic created again after the group read further in
/// the old one) is out of range: the start rule applies, as Kafka's consumer resets by
/// auto.offset.reset; one inside the log is where the read starts. It was the end, whatever the rule:
/// the new log's first records were skipped.
#[tokio::test(start_paused = true)]
async fn a_group_offset_past_the_end_starts_by_the_start_rule() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 2);
    b.append("t", 0, &[b"a", b"b", b"c"]);
    b.append("t", 1, &[b"x", b"y", b"z"]);
    let c = cluster(&b);
    let meta = c.topic("t", false).await.unwrap();
    let from = HashMap::from([(0, 50), (1, 2)]);
    for (start, want) in [(StartOffset::Beginning, 0), (StartOffset::End, 3)] {
        let mut k = Consumer::new(c.clone(), FetchConfig::default());
        k.assign_from(meta.clone(), &[0, 1], &from, start)
            .await
            .unwrap();
        let mut at = k.positions();
        at.sort_unstable();
        assert_eq!(at, vec![(0, 0, want), (0, 1, 2)], "{start:?}");
    }
}

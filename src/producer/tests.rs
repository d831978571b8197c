//! The producer's error paths, driven by the fake broker (in memory, tokio's paused clock: no sleeps).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::time::Instant;

use super::*;
use crate::cluster::{ClientOptions, Cluster};
use crate::testkit::{FakeBroker, Misbehave};

fn cluster(b: &FakeBroker, retry_limit: Option<Duration>) -> Arc<Cluster> {
    let mut o = ClientOptions::new(&b.bootstrap());
    o.retry_limit = retry_limit;
    o.connection.request_timeout = Duration::from_secs(5);
    Arc::new(Cluster::with_transport(o, Arc::new(b.transport())))
}

fn tail_config() -> ProducerConfig {
    ProducerConfig {
        on_permanent: OnPermanent::Retry,
        delivery_timeout: None,
        ..ProducerConfig::default()
    }
}

fn produce_config() -> ProducerConfig {
    ProducerConfig {
        on_permanent: OnPermanent::Fail,
        delivery_timeout: Some(Duration::from_secs(30)),
        ..ProducerConfig::default()
    }
}

async fn producer(b: &FakeBroker, topic: &str, cfg: ProducerConfig) -> Producer {
    let c = cluster(b, Some(Duration::from_secs(30)));
    let meta = c.topic(topic, false).await.unwrap();
    let mut p = Producer::for_topic(c, meta, cfg);
    p.init().await.unwrap();
    p
}

/// Appends `values` (token = index) and flushes; returns the deliveries.
async fn send(p: &mut Producer, values: &[&[u8]]) -> Vec<Delivery> {
    for (i, v) in values.iter().enumerate() {
        p.append(0, None, Some(v), &[], timestamp_now_ms(), i as u64)
            .unwrap();
    }
    let mut out = Vec::new();
    p.flush(&mut out).await.unwrap();
    out
}

fn values(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("line {i}").into_bytes()).collect()
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(|x| x.as_slice()).collect()
}

fn acked(d: &[Delivery]) -> usize {
    d.iter()
        .filter(|d| d.error.is_none())
        .map(|d| d.tokens.len())
        .sum()
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn every_record_is_delivered_once_in_partition_order() {
    let b = FakeBroker::new(3);
    b.create_topic("t", 3);
    let mut p = producer(&b, "t", produce_config()).await;
    let v = values(1000);
    let d = send(&mut p, &refs(&v)).await;
    assert_eq!(acked(&d), 1000);
    assert_eq!(sorted(b.values("t")), sorted(v));
    for part in 0..3 {
        let got = b.partition_values("t", part);
        let mut idx: Vec<usize> = got
            .iter()
            .map(|x| String::from_utf8_lossy(&x[5..]).parse().unwrap())
            .collect();
        let before = idx.clone();
        idx.sort();
        assert_eq!(idx, before, "partition {part} keeps append order");
    }
}

#[tokio::test(start_paused = true)]
async fn not_leader_with_a_hint_goes_to_the_new_leader_without_a_metadata_refresh() {
    let b = FakeBroker::new(2);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    let md_before = b.requests(ApiKey::Metadata);
    b.set_leader("t", 0, 2);
    b.misbehave_times(
        Misbehave::ProduceError {
            code: 6,
            leader_hint: Some(2),
        },
        1,
    );
    let d = send(&mut p, &[b"x"]).await;
    assert_eq!(acked(&d), 1);
    assert_eq!(
        b.requests(ApiKey::Metadata),
        md_before,
        "the hint spared a refresh"
    );
    assert_eq!(b.partition_values("t", 0), vec![b"x".to_vec()]);
    // Counted by name, though the request itself was answered (t30 F3: nothing counted an ACL's
    // refusals).
    let s = p.stats();
    assert_eq!(s.partition_errors.get("NOT_LEADER_OR_FOLLOWER"), Some(&1));
    assert_eq!(s.request_errors, 0);
}

#[tokio::test(start_paused = true)]
async fn not_leader_without_a_hint_refreshes_metadata_and_follows_the_leader() {
    let b = FakeBroker::new(2);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    let md_before = b.requests(ApiKey::Metadata);
    b.set_leader("t", 0, 2);
    let d = send(&mut p, &[b"x", b"y"]).await;
    assert_eq!(acked(&d), 2);
    assert!(b.requests(ApiKey::Metadata) > md_before);
    assert_eq!(
        b.partition_values("t", 0),
        vec![b"x".to_vec(), b"y".to_vec()]
    );
}

#[tokio::test(start_paused = true)]
async fn message_too_large_splits_until_the_refused_record_is_alone() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", tail_config()).await;
    b.misbehave_times(
        Misbehave::ProduceError {
            code: 10,
            leader_hint: None,
        },
        4,
    );
    let v = values(8);
    let d = send(&mut p, &refs(&v)).await;
    let failed: Vec<u64> = d
        .iter()
        .filter(|d| d.error.is_some())
        .flat_map(|d| d.tokens.clone())
        .collect();
    assert_eq!(failed, vec![0], "only the first record, alone, is refused");
    assert!(
        d.iter().any(|d| d.batch.is_some()),
        "a refused batch carries its bytes for a dead letter"
    );
    assert_eq!(
        b.partition_values("t", 0),
        v[1..].to_vec(),
        "the rest arrive, in order"
    );
}

/// The largest value shipper says it sends (tail's line limit) is exactly the largest one a batch of
/// `--max-message-bytes` holds: one byte more is refused. It was 29 bytes short (t31: tail cut lines
/// that produce sent whole). A line with a key and headers that take its record past the limit is cut
/// to fit, by what it was over, and arrives; it was skipped, in no topic and no dead letter (t31).
#[tokio::test(start_paused = true)]
async fn the_largest_value_fits_exactly_and_a_record_over_it_is_cut_to_fit() {
    use crate::tail::sink::Sink;
    // 8,3xx and 1,048,7xx: cutting the value takes its length across a varint boundary (8,192 and
    // 1,048,576 bytes), which shortens the record by one more byte (t32 F8: cut a byte short).
    for max in [
        1_048_588, 2_000, 200_000, 8_300, 8_320, 1_048_700, 1_048_720,
    ] {
        let b = FakeBroker::new(1);
        b.create_topic("t", 1);
        let cfg = ProducerConfig {
            max_message_bytes: max,
            ..produce_config()
        };
        let mut p = producer(&b, "t", cfg).await;
        let n = p.max_value_bytes();
        if max == 1_048_588 {
            assert_eq!(n, 1_048_516, "as kcat and produce send");
        }
        let big = vec![b'x'; n + 1];
        let ts = timestamp_now_ms();
        assert!(
            p.append(0, None, Some(&big[..n]), &[], ts, 0).is_ok(),
            "{max}"
        );
        assert!(p.append(0, None, Some(&big), &[], ts, 1).is_err(), "{max}");
        let key = b"/var/log/app/service.log".as_slice();
        let headers: &[Header<'_>] = &[(b"src".as_slice(), Some(key))];
        let (r, used) = p.append_cut_to_fit(0, Some(key), &big[..n], headers, ts, 2, None);
        assert!(r.is_ok() && used < n, "{max}");
        let used_cut = used;
        let (r, used) = p.append_cut_to_fit(0, None, b"short", headers, ts, 3, None);
        assert!(r.is_ok() && used == 5, "{max}");
        let room = |k: usize| vec![b'k'; k];
        let k = (0..max)
            .rev()
            .find(|&k| p.fits_alone(Some(&room(k)), &[]))
            .unwrap();
        // Room for one byte of value beside a key: fits_alone says so; for none, it does not
        // (t33 F4: with room for none, every line was cut to nothing).
        let one = p.append(0, Some(&room(k)), Some(b"a"), &[], ts, 4);
        assert!(one.is_ok(), "{max}: a key of {k} bytes leaves one");
        p.undo_last(one.unwrap());
        let mut out = Vec::new();
        p.flush(&mut out).await.unwrap();
        let got = b.partition_values("t", 0);
        assert_eq!(got.len(), 3, "{max}");
        assert_eq!(got[0].len(), n, "{max}");
        assert!(
            got[1].len() < n && got[1].len() > n - 2 * (key.len() + 8),
            "{max}: {}",
            got[1].len()
        );
        assert_eq!(got[2], b"short");
        // Cut no more than it had to: one byte more does not fit.
        let m = got[1].len();
        assert_eq!(m, used_cut, "{max}: the bytes said are those shipped");
        assert_eq!(m, super::max_value_beside(max, Some(key), headers), "{max}");
        assert!(
            p.append(0, Some(key), Some(&big[..m + 1]), headers, ts, 5)
                .is_err(),
            "{max}: cut to {m}, one more byte fits"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_response_is_retried_with_the_same_sequence_and_not_duplicated() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    b.misbehave_times(Misbehave::DropAfter(ApiKey::Produce), 1);
    let v = values(10);
    let d = send(&mut p, &refs(&v)).await;
    assert_eq!(acked(&d), 10);
    assert_eq!(
        b.partition_values("t", 0),
        v,
        "written once: DUPLICATE_SEQUENCE_NUMBER counts as acked"
    );
    assert!(
        d.iter().all(|d| !d.resent),
        "idempotent: no duplicate to warn of"
    );
}

/// Without idempotence a resend after a lost answer is written twice: the delivery says so (t19
/// F10: 1000 silent duplicates).
#[tokio::test(start_paused = true)]
async fn a_resend_after_a_lost_answer_without_idempotence_is_marked() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let cfg = ProducerConfig {
        idempotence: false,
        ..produce_config()
    };
    let mut p = producer(&b, "t", cfg).await;
    b.misbehave_times(Misbehave::DropAfter(ApiKey::Produce), 1);
    let v = values(10);
    let d = send(&mut p, &refs(&v)).await;
    assert_eq!(acked(&d), 10);
    assert_eq!(b.partition_values("t", 0).len(), 20, "written twice");
    assert!(d.iter().all(|d| d.resent), "{d:?}");
    let d = send(&mut p, &refs(&v)).await;
    assert!(
        d.iter().all(|d| !d.resent),
        "an answered batch is not marked"
    );
}

#[tokio::test(start_paused = true)]
async fn out_of_order_sequence_takes_a_new_producer_id_and_resends() {
    for code in [45, 59, 47, 90] {
        let b = FakeBroker::new(1);
        b.create_topic("t", 1);
        let mut p = producer(&b, "t", produce_config()).await;
        b.misbehave_times(
            Misbehave::ProduceError {
                code,
                leader_hint: None,
            },
            1,
        );
        let v = values(5);
        let d = send(&mut p, &refs(&v)).await;
        assert_eq!(acked(&d), 5, "code {code}");
        assert_eq!(b.requests(ApiKey::InitProducerId), 2, "code {code}");
        assert_eq!(b.partition_values("t", 0), v, "code {code}");
    }
}

#[tokio::test(start_paused = true)]
async fn exactly_once_stops_instead_of_taking_a_new_producer_id() {
    // A new id would resend under it batches whose first attempt may already be written.
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let cfg = ProducerConfig {
        stop_on_state_loss: true,
        ..tail_config()
    };
    let mut p = producer(&b, "t", cfg).await;
    b.misbehave_times(
        Misbehave::ProduceError {
            code: 45,
            leader_hint: None,
        },
        1,
    );
    p.append(0, None, Some(b"x"), &[], timestamp_now_ms(), 0)
        .unwrap();
    p.seal_all();
    let mut out = Vec::new();
    let mut stopped = None;
    for _ in 0..20 {
        if let Err(e) = p.drive(&mut out).await {
            stopped = Some(e);
            break;
        }
    }
    let e = stopped.expect("the producer stops").to_string();
    assert!(
        e.contains("exactly-once") && e.contains("OUT_OF_ORDER_SEQUENCE_NUMBER"),
        "{e}"
    );
    assert_eq!(b.requests(ApiKey::InitProducerId), 1);
    assert!(b.partition_values("t", 0).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_keeps_refusing_producer_state_is_paced_and_the_timeout_holds() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    b.misbehave(Misbehave::ProduceError {
        code: 45,
        leader_hint: None,
    });
    let start = Instant::now();
    let d = send(&mut p, &[b"x"]).await;
    let took = start.elapsed();
    assert_eq!(acked(&d), 0);
    let e = d[0].error.as_ref().unwrap().to_string();
    assert!(
        e.contains("gave up after") && e.contains("OUT_OF_ORDER"),
        "{e}"
    );
    assert!(took <= Duration::from_secs(31), "{took:?}");
    let inits = b.requests(ApiKey::InitProducerId);
    assert!(inits <= 15, "{inits} InitProducerId requests in {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_connection_closed_mid_request_is_retried_without_loss() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    b.misbehave_times(Misbehave::DropOn(ApiKey::Produce), 2);
    let v = values(20);
    let d = send(&mut p, &refs(&v)).await;
    assert_eq!(acked(&d), 20);
    assert_eq!(b.partition_values("t", 0), v);
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_stops_answering_times_out_and_the_retry_goes_through() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    b.misbehave_times(Misbehave::Silent, 1);
    let start = Instant::now();
    let d = send(&mut p, &[b"x"]).await;
    assert_eq!(acked(&d), 1);
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "waited for the request timeout"
    );
    assert_eq!(
        b.open_streams(),
        1,
        "the silent connection was closed, one fresh one is left"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttle_is_respected_before_the_next_request() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    b.misbehave_times(Misbehave::Throttle(700), 1);
    send(&mut p, &[b"a"]).await;
    let start = Instant::now();
    send(&mut p, &[b"b"]).await;
    assert!(
        start.elapsed() >= Duration::from_millis(690),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn an_acl_refusal_fails_a_one_shot_produce_at_once() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    b.misbehave(Misbehave::ProduceError {
        code: 29,
        leader_hint: None,
    });
    let start = Instant::now();
    let d = send(&mut p, &[b"x"]).await;
    assert!(start.elapsed() < Duration::from_secs(1));
    let e = d[0].error.as_ref().unwrap().to_string();
    assert!(
        e.contains("TOPIC_AUTHORIZATION_FAILED") && e.contains("ACL"),
        "{e}"
    );
}

/// Drives `p` for `secs` of (paused) time, collecting deliveries.
async fn drive_for(p: &mut Producer, secs: u64, out: &mut Vec<Delivery>) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end && !p.is_idle() {
        let _ = tokio::time::timeout_at(end, p.drive(out)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn tail_keeps_every_line_through_errors_that_are_not_about_the_records() {
    let cases = [
        Misbehave::ProduceError {
            code: 29,
            leader_hint: None,
        },
        Misbehave::ProduceError {
            code: -1,
            leader_hint: None,
        },
        Misbehave::ProduceMissingPartition,
        Misbehave::Garbage(ApiKey::Produce),
        Misbehave::WrongCorrelationId,
    ];
    for case in cases {
        let b = FakeBroker::new(1);
        b.create_topic("t", 1);
        let mut p = producer(&b, "t", tail_config()).await;
        b.misbehave(case.clone());
        let v = values(50);
        for (i, x) in v.iter().enumerate() {
            p.append(0, None, Some(x), &[], timestamp_now_ms(), i as u64)
                .unwrap();
        }
        let mut out = Vec::new();
        drive_for(&mut p, 300, &mut out).await;
        assert_eq!(acked(&out), 0, "{case:?}");
        assert!(
            out.iter().all(|d| d.error.is_none()),
            "{case:?}: nothing may be dropped"
        );
        assert!(p.trouble().is_some(), "{case:?}");
        let attempts = b.requests(ApiKey::Produce);
        // Connection-level trouble is retried about once a second (jittered), a refusal every 10 s.
        let bound = if matches!(
            case,
            Misbehave::ProduceError { .. } | Misbehave::ProduceMissingPartition
        ) {
            60
        } else {
            450
        };
        assert!(
            attempts < bound,
            "{case:?}: {attempts} attempts in 300 s is not a backoff"
        );
        // The ACL is fixed, the broker mended: everything arrives, once.
        b.behave();
        drive_for(&mut p, 60, &mut out).await;
        assert_eq!(acked(&out), 50, "{case:?}");
        assert_eq!(b.partition_values("t", 0), v, "{case:?}");
        assert!(p.trouble().is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn produce_gives_up_on_a_silent_broker_within_its_timeout() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    b.misbehave(Misbehave::Silent);
    let start = Instant::now();
    let d = send(&mut p, &[b"x"]).await;
    let took = start.elapsed();
    assert!(d[0].error.is_some());
    assert!(
        took <= Duration::from_secs(31),
        "--timeout 30s must be an upper bound: took {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn records_for_several_topics_share_one_request_per_leader() {
    let b = FakeBroker::new(1);
    b.create_topic("a", 2);
    b.create_topic("b", 2);
    let c = cluster(&b, Some(Duration::from_secs(30)));
    let mut p = Producer::new(c.clone(), produce_config());
    let ta = p.add_topic(c.topic("a", false).await.unwrap());
    let tb = p.add_topic(c.topic("b", false).await.unwrap());
    p.init().await.unwrap();
    let before = b.requests(ApiKey::Produce);
    for i in 0..10u64 {
        p.append(
            ta,
            Some(&i.to_be_bytes()),
            Some(b"A"),
            &[],
            timestamp_now_ms(),
            i,
        )
        .unwrap();
        p.append(
            tb,
            Some(&i.to_be_bytes()),
            Some(b"B"),
            &[],
            timestamp_now_ms(),
            100 + i,
        )
        .unwrap();
    }
    let mut out = Vec::new();
    p.flush(&mut out).await.unwrap();
    assert_eq!(acked(&out), 20);
    assert_eq!(
        b.requests(ApiKey::Produce) - before,
        1,
        "every ready partition in one request"
    );
    assert_eq!(b.values("a").len(), 10);
    assert_eq!(b.values("b").len(), 10);
}

#[tokio::test(start_paused = true)]
async fn batches_for_partitions_of_a_topic_created_again_with_fewer_go_to_those_left() {
    // t10: a topic deleted and auto-created with fewer partitions under a running tail; lines the
    // partitioner had put on the vanished partitions waited (UNKNOWN_TOPIC_OR_PARTITION) for ever.
    let b = FakeBroker::new(1);
    b.create_topic("t", 4);
    let cfg = ProducerConfig {
        partitioner: Partitioner::Random,
        batch_bytes: 200,
        ..tail_config()
    };
    let mut p = producer(&b, "t", cfg).await;
    let first = values(100);
    assert_eq!(acked(&send(&mut p, &refs(&first)).await), 100);
    b.create_topic("t", 2);
    let v: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("again {i}").into_bytes())
        .collect();
    let d = tokio::time::timeout(Duration::from_secs(120), send(&mut p, &refs(&v)))
        .await
        .expect("every batch delivered to the partitions left");
    assert_eq!(acked(&d), 1000);
    assert_eq!(sorted(b.values("t")), sorted(v), "each once");
    assert_eq!(p.partition_count(0), 2);
    assert!(p.trouble().is_none());
}

/// A Produce answer that leaves a partition out says nothing of its batch: the broker may have written
/// it (t49: taken for "not written", its sequence numbers went to the next batch, which the broker
/// then took for a resend and dropped, acknowledged).
#[tokio::test(start_paused = true)]
async fn a_partition_left_out_of_the_answer_may_have_been_written() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    b.misbehave(Misbehave::ProduceMissingPartition);
    let d = send(&mut p, &[b"first"]).await;
    assert_eq!(acked(&d), 0);
    assert!(d.iter().all(|d| d.maybe_written), "said as maybe written");
    b.behave();
    let d = send(&mut p, &[b"second"]).await;
    assert_eq!(acked(&d), 1);
    assert_eq!(b.values("t"), vec![b"first".to_vec(), b"second".to_vec()]);
}

/// NOT_LEADER_OR_FOLLOWER may come after the old leader appended the batch (acks=all waits for the
/// followers after the append): given up, the batch may be in Kafka, and its sequence numbers are not
/// given to the next batch.
#[tokio::test(start_paused = true)]
async fn a_batch_given_up_after_not_leader_answers_may_have_been_written() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let cfg = ProducerConfig {
        delivery_timeout: Some(Duration::from_secs(2)),
        ..produce_config()
    };
    let mut p = producer(&b, "t", cfg).await;
    b.misbehave(Misbehave::ProduceError {
        code: 6,
        leader_hint: None,
    });
    let d = send(&mut p, &[b"first"]).await;
    assert_eq!(acked(&d), 0);
    assert!(d.iter().all(|d| d.maybe_written), "said as maybe written");
    b.behave();
    let d = send(&mut p, &[b"second"]).await;
    assert_eq!(acked(&d), 1);
    assert_eq!(b.values("t"), vec![b"second".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_given_up_after_the_broker_wrote_it_does_not_lend_its_sequences_to_the_next() {
    // t11: a batch whose answers were lost (the broker wrote it) failed at its delivery timeout and
    // gave its sequence numbers back; the next batch went out with them, the broker took it for a
    // resend, answered success and dropped it: lines lost, reported acknowledged.
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let cfg = ProducerConfig {
        delivery_timeout: Some(Duration::from_secs(2)),
        ..produce_config()
    };
    let mut p = producer(&b, "t", cfg).await;
    b.misbehave(Misbehave::DropAfter(ApiKey::Produce));
    let d = send(&mut p, &[b"first"]).await;
    assert_eq!(acked(&d), 0);
    assert!(d.iter().all(|d| d.maybe_written), "said as maybe written");
    b.behave();
    let d = send(&mut p, &[b"second"]).await;
    assert_eq!(acked(&d), 1);
    assert_eq!(b.values("t"), vec![b"first".to_vec(), b"second".to_vec()]);
}

/// A topic that does not exist under `auto_create_topics = false` is said to be kept from creation by
/// that setting, not by the broker's `auto.create.topics.enable` (t14: the broker had it on).
#[tokio::test(start_paused = true)]
async fn a_topic_shipper_may_not_create_names_the_setting() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    b.auto_create(Some(1));
    let cfg = ProducerConfig {
        auto_create_topics: false,
        ..tail_config()
    };
    let mut p = producer(&b, "t", cfg).await;
    assert!(matches!(p.topic("missing"), TopicState::Pending(_)));
    let mut out = Vec::new();
    while p.topic_waiting().is_none() {
        p.drive(&mut out).await.unwrap();
    }
    let (name, _, why) = p.topic_waiting().unwrap();
    assert_eq!(name, "missing");
    assert!(why.contains("auto_create_topics = false"), "{why}");
    // At shutdown nothing waits on it: the flush ends at once (t15: a SIGTERM took 10 s).
    assert!(!p.is_idle());
    p.forget_pending_topics();
    let start = tokio::time::Instant::now();
    p.flush(&mut out).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// A batch that waited past the timeout with its leader known and nothing failed (the loop was held
/// up) names that, not a missing leader (it said "no available leader" for a healthy partition).
#[tokio::test(start_paused = true)]
async fn a_batch_that_waited_past_its_timeout_with_a_leader_says_so() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut cfg = produce_config();
    cfg.delivery_timeout = Some(Duration::from_secs(2));
    let mut p = producer(&b, "t", cfg).await;
    p.append(0, None, Some(b"late"), &[], timestamp_now_ms(), 1)
        .unwrap();
    // Nothing drives the producer for longer than the timeout.
    tokio::time::advance(Duration::from_secs(3)).await;
    let mut out = Vec::new();
    p.flush(&mut out).await.unwrap();
    let e = out
        .iter()
        .find_map(|d| d.error.as_ref())
        .expect("given up")
        .to_string();
    assert!(
        e.contains("not sent in time") && e.contains("broker"),
        "{e}"
    );
    assert!(!e.contains("no available leader"), "{e}");
}

/// A batch that waited its turn behind a failing one, and whose first attempt was cut to what was
/// left of the timeout, names the failure that held it up (malformed answers), not "no response to
/// Produce within 0 ms" (t19 F7).
#[tokio::test(start_paused = true)]
async fn a_batch_given_up_behind_a_failing_one_names_the_failure_not_its_cut_attempt() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let cfg = ProducerConfig {
        delivery_timeout: Some(Duration::from_secs(2)),
        ..produce_config()
    };
    let mut p = producer(&b, "t", cfg).await;
    b.misbehave(Misbehave::FrameSizeOn(ApiKey::Produce, i32::MAX));
    let mut out = Vec::new();
    p.append(0, None, Some(b"first"), &[], timestamp_now_ms(), 1)
        .unwrap();
    p.seal_all();
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        let _ = tokio::time::timeout_at(until, p.drive(&mut out)).await;
    }
    // The second batch waits behind the first, which fails at its timeout; the second then has
    // 300 ms left, and its one attempt gets no answer.
    p.append(0, None, Some(b"second"), &[], timestamp_now_ms(), 2)
        .unwrap();
    p.seal_all();
    while out.is_empty() {
        p.drive(&mut out).await.unwrap();
    }
    b.misbehave(Misbehave::Silent);
    p.flush(&mut out).await.unwrap();
    let errors: Vec<String> = out
        .iter()
        .filter_map(|d| d.error.as_ref().map(|e| e.to_string()))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for e in &errors {
        assert!(e.contains("frame size"), "{e}");
    }
}

/// Records without a key go to partitions whose leader works: once a partition's batch fails (its
/// broker down), the others take the records, so only the batch it had is lost to --timeout (t21
/// F1: 57,865 of 300,000 lines were lost to one partition whose only replica was down).
#[tokio::test(start_paused = true)]
async fn keyless_records_pass_over_a_partition_whose_leader_is_down() {
    let b = FakeBroker::new(3);
    b.create_topic("t", 3);
    let cfg = ProducerConfig {
        batch_bytes: 300,
        delivery_timeout: Some(Duration::from_secs(5)),
        ..produce_config()
    };
    let mut p = producer(&b, "t", cfg).await;
    b.stop(2); // the leader of partition 1
    let mut out = Vec::new();
    for (i, v) in values(3000).iter().enumerate() {
        p.append(0, None, Some(v), &[], timestamp_now_ms(), i as u64)
            .unwrap();
        // Lines arrive over time, as a log's do.
        if i % 30 == 0 {
            let until = Instant::now() + Duration::from_millis(20);
            let _ = tokio::time::timeout_at(until, p.drive(&mut out)).await;
        }
    }
    p.flush(&mut out).await.unwrap();
    let failed: usize = out
        .iter()
        .filter(|d| d.error.is_some())
        .map(|d| d.tokens.len())
        .sum();
    assert_eq!(acked(&out) + failed, 3000);
    assert!(failed < 100, "{failed} records failed");
}

/// A topic with a partition that has no leader (its only replica's broker down) is taken after a
/// short wait, and records without a key go to the others, all delivered (t21: produce refused to
/// start, and kcat wrote to the others).
#[tokio::test(start_paused = true)]
async fn a_topic_with_a_leaderless_partition_is_written_through_the_others() {
    let b = FakeBroker::new(3);
    b.create_topic("t", 3);
    b.set_leader("t", 1, -1);
    let start = Instant::now();
    let mut p = producer(&b, "t", produce_config()).await;
    assert!(start.elapsed() < Duration::from_secs(10));
    let v = values(300);
    let d = send(&mut p, &refs(&v)).await;
    assert_eq!(acked(&d), 300);
    assert!(b.partition_values("t", 1).is_empty());
}

/// Records given up for a partition that has no leader say so, not the broker's
/// NOT_LEADER_OR_FOLLOWER of the last attempt, which reads as a leader move (t21 F7).
#[tokio::test(start_paused = true)]
async fn records_given_up_for_a_leaderless_partition_say_it_has_no_leader() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let mut p = producer(&b, "t", produce_config()).await;
    b.misbehave(Misbehave::ProduceError {
        code: 6,
        leader_hint: None,
    });
    b.set_leader("t", 0, -1);
    let d = send(&mut p, &[b"x"]).await;
    assert_eq!(acked(&d), 0);
    let e = d[0].error.as_ref().unwrap().to_string();
    assert!(
        e.contains("gave up after") && e.contains("partition 0 has no available leader"),
        "{e}"
    );
    assert!(!e.contains("NOT_LEADER"), "{e}");
}

/// One topic takes at most 3/4 of the buffer, even before others are known, and one in trouble
/// (failing, or nothing acknowledged yet) one record of the last quarter: topics the ACLs refuse
/// writes to (retried for as long as it lasts, as tail does) no longer fill it and stop every other
/// topic. Held back, a topic is named ready again once it holds less.
#[tokio::test(start_paused = true)]
async fn refused_topics_cannot_take_the_whole_buffer_from_the_others() {
    let b = FakeBroker::new(1);
    for t in ["bad", "bad2", "good"] {
        b.create_topic(t, 1);
    }
    let cfg = ProducerConfig {
        buffer_bytes: 64 * 1024,
        batch_bytes: 8 * 1024,
        ..tail_config()
    };
    let mut p = producer(&b, "bad", cfg).await;
    for t in ["bad", "bad2"] {
        b.misbehave(Misbehave::ProduceErrorFor {
            topic: t.into(),
            code: 29,
        });
    }
    let line = [b'x'; 500];
    let mut tokens = [0u64; 3];
    let mut fill = |p: &mut Producer, t: usize| {
        while !p.is_full_for(t) {
            p.append(
                t,
                None,
                Some(&line),
                &[],
                timestamp_now_ms(),
                (t as u64) << 40 | tokens[t],
            )
            .unwrap();
            tokens[t] += 1;
        }
    };
    fill(&mut p, 0);
    assert!(p.holds_back(0));
    assert!(!p.is_full(), "a quarter left for topics still to come");
    let meta = p.cluster.topic("bad2", false).await.unwrap();
    let bad2 = p.add_topic(meta);
    let meta = p.cluster.topic("good", false).await.unwrap();
    let good = p.add_topic(meta);
    fill(&mut p, bad2);
    assert!(p.holds_back(bad2));
    assert_eq!(
        tokens[bad2], 1,
        "one record of the last quarter, not acknowledged yet"
    );
    assert!(!p.is_full());
    let mut out = Vec::new();
    drive_for(&mut p, 5, &mut out).await;
    assert!(b.requests(ApiKey::Produce) > 0);
    assert_eq!(acked(&out), 0, "refused records are retried, not given up");
    assert!(p.take_newly_ready().is_empty(), "still held");
    // The other topic's records go through meanwhile.
    let mut good_sent = 0;
    for _ in 0..200 {
        if !p.is_full_for(good) {
            p.append(
                good,
                None,
                Some(&line),
                &[],
                timestamp_now_ms(),
                2 << 40 | good_sent,
            )
            .unwrap();
            good_sent += 1;
        }
        drive_for(&mut p, 1, &mut out).await;
    }
    assert!(good_sent >= 190, "{good_sent}");
    assert_eq!(acked(&out), good_sent as usize);
    assert_eq!(b.partition_values("good", 0).len(), good_sent as usize);
    // The ACLs lifted: their records are delivered, and the topics named ready again.
    b.behave();
    let mut named = Vec::new();
    for _ in 0..30 {
        drive_for(&mut p, 1, &mut out).await;
        named.extend(p.take_newly_ready());
    }
    named.sort();
    assert_eq!(named, vec!["bad".to_string(), "bad2".to_string()]);
    assert_eq!(b.partition_values("bad", 0).len(), tokens[0] as usize);
    assert_eq!(b.partition_values("bad2", 0).len(), 1);
    assert!(!p.holds_back(0) && !p.holds_back(bad2));
}

#[tokio::test(start_paused = true)]
async fn input_may_wait_to_be_read_only_while_a_batch_lingers_and_not_in_its_last_tick() {
    let b = FakeBroker::new(1);
    b.create_topic("t", 1);
    let cfg = ProducerConfig {
        linger: Duration::from_millis(5),
        ..tail_config()
    };
    let mut p = producer(&b, "t", cfg).await;
    let t0 = Instant::now();
    assert_eq!(p.gather_until(t0), None, "nothing buffered: read at once");
    p.append(0, None, Some(b"a"), &[], timestamp_now_ms(), 0)
        .unwrap();
    // The batch lingers until t0 + 5 ms: input may wait until a tick before.
    assert_eq!(p.gather_until(t0), Some(t0 + Duration::from_millis(4)));
    assert_eq!(
        p.gather_until(t0 + Duration::from_millis(3)),
        Some(t0 + Duration::from_millis(4))
    );
    assert_eq!(
        p.gather_until(t0 + Duration::from_millis(4)),
        None,
        "the last tick: read at once"
    );
    // Sent and acknowledged: nothing lingers.
    let mut out = Vec::new();
    p.flush(&mut out).await.unwrap();
    assert_eq!(acked(&out), 1);
    assert_eq!(p.gather_until(Instant::now()), None);
    // With no linger, input is never held.
    let mut p = producer(
        &b,
        "t",
        ProducerConfig {
            linger: Duration::ZERO,
            ..tail_config()
        },
    )
    .await;
    p.append(0, None, Some(b"b"), &[], timestamp_now_ms(), 1)
        .unwrap();
    assert_eq!(p.gather_until(Instant::now()), None);
}

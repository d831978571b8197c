//! The wire core against real brokers: exact records back, every leader used, typed errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shipper::cluster::{ClientOptions, Cluster};
use shipper::consumer::{Consumer, FetchConfig, StartOffset};
use shipper::error::Error;
use shipper::partitioner::Partitioner;
use shipper::producer::{Producer, ProducerConfig};
use shipper::wire::compression::Compression;

use crate::harness::*;

type Rec = (Option<Vec<u8>>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, i64);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Produces `n` records (keys, headers, distinct timestamps) and returns them by partition, in order.
async fn produce_records(
    cluster: &Arc<Cluster>,
    topic: &str,
    n: usize,
    codec: Compression,
) -> BTreeMap<i32, Vec<Rec>> {
    let meta = cluster.topic(topic, false).await.unwrap();
    let cfg = ProducerConfig {
        partitioner: Partitioner::Random,
        compression: codec,
        batch_bytes: 16 * 1024,
        ..ProducerConfig::default()
    };
    let mut p = Producer::for_topic(cluster.clone(), meta, cfg);
    p.init().await.unwrap();
    let mut sent: Vec<(i32, Rec)> = Vec::new();
    let base = shipper::producer::timestamp_now_ms() - 10_000;
    let mut deliveries = Vec::new();
    for i in 0..n {
        let key = (i % 7 != 0).then(|| format!("key-{}", i % 13).into_bytes());
        let value = format!("value {i} {}", "x".repeat(i % 50)).into_bytes();
        let headers = vec![(b"h".to_vec(), format!("{i}").into_bytes())];
        let hs: Vec<(&[u8], Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
            .collect();
        let ts = base + i as i64;
        let part = p
            .append(0, key.as_deref(), Some(&value), &hs, ts, i as u64)
            .unwrap()
            .partition;
        sent.push((part, (key, value, headers, ts)));
        if p.is_full() {
            p.drive(&mut deliveries).await.unwrap();
        }
    }
    p.flush(&mut deliveries).await.unwrap();
    let acked: usize = deliveries
        .iter()
        .map(|d| {
            assert!(d.error.is_none(), "delivery failed: {:?}", d.error);
            d.tokens.len()
        })
        .sum();
    assert_eq!(acked, n);
    let mut by_part: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    for (part, r) in sent {
        by_part.entry(part).or_default().push(r);
    }
    by_part
}

async fn fetch_all(cluster: &Arc<Cluster>, topic: &str) -> BTreeMap<i32, Vec<Rec>> {
    let meta = cluster.topic(topic, false).await.unwrap();
    let mut c = Consumer::new(cluster.clone(), FetchConfig::default());
    c.assign(meta, &[], StartOffset::Beginning).await.unwrap();
    let mut got: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    let mut scratch = Vec::new();
    let mut expected_offset: BTreeMap<i32, i64> = BTreeMap::new();
    while !c.at_end_of_start() {
        for f in c.poll().await.unwrap() {
            for b in shipper::wire::records::split_batches(&f.records) {
                let (h, _) = b.unwrap();
                assert!(
                    h.producer_id >= 0 && h.base_sequence >= 0,
                    "idempotent batches carry a producer id and sequence: {h:?}"
                );
            }
            f.for_each_record(&mut scratch, 1 << 30, |r| {
                let next = expected_offset.entry(f.partition).or_insert(0);
                assert_eq!(r.offset, *next, "offsets are contiguous");
                *next += 1;
                got.entry(f.partition).or_default().push((
                    r.key.map(|k| k.to_vec()),
                    r.value.unwrap().to_vec(),
                    r.headers()
                        .map(|(k, v)| (k.to_vec(), v.unwrap_or_default().to_vec()))
                        .collect(),
                    r.timestamp,
                ));
            })
            .unwrap();
        }
    }
    got
}

#[test]
fn produced_records_come_back_exactly_from_three_partitions() {
    let Some(b) = broker() else { return };
    let t = topic("wire-exact");
    create_topic(&b, &t, 3, 1, &[]);
    runtime().block_on(async {
        let cluster = Arc::new(Cluster::new(ClientOptions::new(&b)));
        let sent = produce_records(&cluster, &t, 3000, Compression::None).await;
        assert_eq!(
            sent.len(),
            3,
            "random partitioning used all three partitions"
        );
        let got = fetch_all(&cluster, &t).await;
        assert_eq!(got, sent);
    });
}

#[test]
fn every_codec_round_trips_through_the_broker() {
    let Some(b) = broker() else { return };
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let t = topic(&format!("wire-{codec:?}").to_lowercase());
        runtime().block_on(async {
            let cluster = Arc::new(Cluster::new(ClientOptions::new(&b)));
            cluster.topic(&t, true).await.unwrap();
            let sent = produce_records(&cluster, &t, 500, codec).await;
            let got = fetch_all(&cluster, &t).await;
            assert_eq!(got, sent, "{codec:?}");
        });
    }
}

#[test]
fn partitions_led_by_different_brokers_are_produced_and_fetched_through_each_leader() {
    let Some(c) = cluster() else { return };
    let t = topic("wire-leaders");
    create_topic(&c, &t, 3, 3, &[]);
    runtime().block_on(async {
        let cluster = Arc::new(Cluster::new(ClientOptions::new(&c)));
        let meta = cluster.topic(&t, false).await.unwrap();
        let leaders: std::collections::BTreeSet<i32> =
            meta.partitions.iter().map(|p| p.leader).collect();
        assert_eq!(
            leaders.len(),
            3,
            "each partition has its own leader: {meta:?}"
        );
        let sent = produce_records(&cluster, &t, 2000, Compression::Lz4).await;
        assert_eq!(sent.len(), 3);
        let got = fetch_all(&cluster, &t).await;
        assert_eq!(got, sent);
    });
}

#[test]
fn unknown_topic_is_a_typed_error_naming_the_topic() {
    let Some(b) = broker() else { return };
    runtime().block_on(async {
        let cluster = Cluster::new(ClientOptions::new(&b));
        let t = topic("never-created");
        match cluster.topic(&t, false).await {
            Err(Error::UnknownTopic { topic }) => assert_eq!(topic, t),
            other => panic!("expected UnknownTopic, got {other:?}"),
        }
    });
}

#[test]
fn unreachable_bootstrap_is_a_typed_error_naming_the_address() {
    runtime().block_on(async {
        let mut opts = ClientOptions::new("127.0.0.1:1");
        opts.retry_limit = Some(Duration::from_millis(500));
        let cluster = Cluster::new(opts);
        let err = cluster.metadata(None, false).await.unwrap_err();
        match &err {
            Error::Deadline { last, .. } => {
                assert!(
                    matches!(
                        **last,
                        Error::Conn(shipper::connection::ConnError::Connect { .. })
                    ),
                    "{last:?}"
                )
            }
            other => panic!("expected Deadline(Connect), got {other:?}"),
        }
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    });
}

#[test]
fn unresolvable_host_is_a_typed_error() {
    runtime().block_on(async {
        let mut opts = ClientOptions::new("no-such-host.invalid:9092");
        opts.retry_limit = Some(Duration::from_millis(300));
        let err = Cluster::new(opts).metadata(None, false).await.unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
    });
}

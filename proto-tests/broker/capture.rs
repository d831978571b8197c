//! Captures the fixtures in `fixtures/` from a real broker and kcat. Not a test: run it by hand
//! (`cargo test --test broker capture_fixtures -- --ignored`) with the single broker up, then commit the
//! files. fixtures/README.md says what each is.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, BrokerId, FetchRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use shipper::cluster::{ClientOptions, Cluster};
use shipper::connection::Connection;
use shipper::wire::compression::{Compression, Compressor};
use shipper::wire::records::{BatchBuilder, ProducerStamp};

use crate::harness::*;

/// The records kcat writes for every codec fixture (key, value), each with header h=all; the
/// protocol tests (proto-tests/fixtures.rs) expect exactly these.
pub const KCAT_INPUT: &[(&str, &str)] = &[
    ("k0", "first value"),
    ("k1", ""),
    ("k2", "third value, long and repetitive so that every codec shrinks the batch: compress me, compress me, compress me, compress me, compress me, compress me, compress me, compress me, compress me, compress me, compress me, compress me"),
    ("k3", "fourth"),
    ("k4", "fifth and last"),
];

async fn raw<R: Request>(conn: &Connection, req: &R, version: i16) -> Bytes {
    let until = conn.request_deadline(None);
    let p = conn.send(req, version, true, until).await.unwrap();
    let frame = conn.wait(p, until).await.unwrap();
    let mut out = BytesMut::new();
    out.put_i32(frame.len() as i32);
    out.extend_from_slice(&frame);
    out.freeze()
}

fn save(name: &str, bytes: &[u8]) {
    let p = root().join("fixtures").join(name);
    std::fs::write(&p, bytes).unwrap();
    eprintln!("wrote {} ({} bytes)", p.display(), bytes.len());
}

fn fetch_req(topic: &str) -> FetchRequest {
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = 0;
    fp.current_leader_epoch = -1;
    fp.last_fetched_epoch = -1;
    fp.log_start_offset = -1;
    fp.partition_max_bytes = 1 << 20;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
    ft.partitions = vec![fp];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 100;
    req.min_bytes = 1;
    req.max_bytes = 1 << 20;
    req.session_epoch = -1;
    req.topics = vec![ft];
    req
}

#[test]
#[ignore = "captures fixtures; run by hand"]
fn capture_fixtures() {
    let b = broker().expect("the single broker must be up");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cluster = Arc::new(Cluster::new(ClientOptions::new(&b)));
        let conn = cluster.connection(&b, None).await.unwrap();
        let mut av = ApiVersionsRequest::default();
        av.client_software_name = StrBytes::from_static_str("shipper");
        av.client_software_version = StrBytes::from_static_str("0.1.0");
        save("api-versions-v3.bin", &raw(&conn, &av, 3).await);

        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let t = topic(&format!("fixture-kcat-{codec}"));
            let input: String = KCAT_INPUT
                .iter()
                .map(|(k, v)| format!("{k}:{v}\n"))
                .collect();
            kcat(
                &b,
                &[
                    "-P",
                    "-t",
                    &t,
                    "-z",
                    codec,
                    "-K",
                    ":",
                    "-H",
                    "h=all",
                    "-X",
                    "linger.ms=100",
                ],
                input.as_bytes(),
            );
            cluster.topic(&t, false).await.unwrap();
            save(
                &format!("fetch-v12-kcat-{codec}.bin"),
                &raw(&conn, &fetch_req(&t), 12).await,
            );
        }

        // A fresh topic per capture, so the Produce fixture is the topic's first batch (offset 0).
        let t = topic("fixture-meta");
        cluster.topic(&t, true).await.unwrap();
        let mut mt = MetadataRequestTopic::default();
        mt.name = Some(TopicName(StrBytes::from_string(t.clone())));
        let mut md = MetadataRequest::default();
        md.topics = Some(vec![mt]);
        save("metadata-v12.bin", &raw(&conn, &md, 12).await);

        let mut buf = BytesMut::new();
        let mut bb = BatchBuilder::begin(&mut buf, 1_700_000_000_000);
        bb.push(
            &mut buf,
            1_700_000_000_000,
            Some(b"k"),
            Some(b"produced by shipper"),
            &[],
        );
        bb.finish(
            &mut buf,
            Compression::None,
            None,
            ProducerStamp::NONE,
            &mut Compressor::default(),
        )
        .unwrap();
        let mut pd = PartitionProduceData::default();
        pd.index = 0;
        pd.records = Some(buf.freeze());
        let mut td = TopicProduceData::default();
        td.name = TopicName(StrBytes::from_string(t.clone()));
        td.partition_data = vec![pd];
        let mut pr = ProduceRequest::default();
        pr.acks = -1;
        pr.timeout_ms = 5000;
        pr.topic_data = vec![td];
        save("produce-v9.bin", &raw(&conn, &pr, 9).await);
    });
}

/// Writes the hand-made part of fixtures/hostile/ (the rest are fuzzer findings). Not a test: run by
/// hand (`cargo test --test broker write_hostile_corpus -- --ignored`) and commit the files.
#[test]
#[ignore = "writes fixtures; run by hand"]
fn write_hostile_corpus() {
    let dir = root().join("fixtures/hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let w = |name: &str, b: &[u8]| std::fs::write(dir.join(name), b).unwrap();
    // Frames: a negative size, a 2 GiB size, and a size past the end.
    w("frame-negative-size.bin", &[0xff, 0xff, 0xff, 0xf0, 0, 0]);
    w("frame-2gib-size.bin", &[0x7f, 0xff, 0xff, 0xff, 1, 2, 3]);
    // Batches: every codec's records section decompressing to 4 MiB of zeros (a bomb against a 1 MiB
    // bound), a flipped CRC, an absurd record count, a negative batch length.
    for (name, codec) in [
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let mut buf = BytesMut::new();
        let mut b = BatchBuilder::begin(&mut buf, 1_700_000_000_000);
        let zeros = vec![0u8; 4 << 20];
        b.push(&mut buf, 1_700_000_000_000, None, Some(&zeros), &[]);
        b.finish(
            &mut buf,
            codec,
            None,
            ProducerStamp::NONE,
            &mut Compressor::default(),
        )
        .unwrap();
        w(&format!("batch-bomb-{name}.bin"), &buf);
    }
    let mut buf = BytesMut::new();
    let mut b = BatchBuilder::begin(&mut buf, 1_700_000_000_000);
    b.push(&mut buf, 1_700_000_000_000, Some(b"k"), Some(b"value"), &[]);
    b.finish(
        &mut buf,
        Compression::None,
        None,
        ProducerStamp::NONE,
        &mut Compressor::default(),
    )
    .unwrap();
    let mut crc = buf.to_vec();
    crc[17] ^= 0xff;
    w("batch-bad-crc.bin", &crc);
    let mut count = buf.to_vec();
    count[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    w("batch-absurd-record-count.bin", &count);
    let mut neg = buf.to_vec();
    neg[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    w("batch-negative-length.bin", &neg);
    // Responses: every fixture cut in half (selector byte first, as the response fuzz target reads).
    for (name, sel) in [
        ("fetch-v12-kcat-zstd", 0u8),
        ("metadata-v12", 1 + 8 * 3),
        ("produce-v9", 2),
        ("api-versions-v3", 4),
    ] {
        let f = std::fs::read(root().join(format!("fixtures/{name}.bin"))).unwrap();
        let mut v = vec![sel];
        v.extend_from_slice(&f[4..4 + (f.len() - 4) / 2]);
        w(&format!("response-{name}-truncated.bin"), &v);
    }
}

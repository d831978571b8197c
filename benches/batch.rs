//! Record batch encode and decode: shipper's own codec side by side with kafka-protocol's
//! `RecordBatchEncoder`/`RecordBatchDecoder` on the same records, and a plain memcpy of the same bytes
//! (the physical limit). Run: `cargo bench --bench batch`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::records::{
    Compression as KpCompression, Record as KpRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use shipper::wire::compression::{Compression, Compressor};
use shipper::wire::records::{self, BatchBuilder, ProducerStamp};

const RECORDS: usize = 1000;
const VALUE_BYTES: usize = 100;

/// Realistic 100-byte log lines (a syslog-like prefix and varying text), not one repeated byte.
fn values() -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|i| {
            let mut v = format!(
                "2026-11-27T09:{:02}:{:02}.{:03} INFO worker-{} handled request id={} status={} path=/api/v1/items/{}",
                i % 60,
                (i * 7) % 60,
                i % 1000,
                i % 16,
                i * 7919,
                [200, 201, 404, 500][i % 4],
                i * 31
            )
            .into_bytes();
            v.resize(VALUE_BYTES, b' ');
            v
        })
        .collect()
}

fn encode_ours(values: &[Vec<u8>], buf: &mut BytesMut, compressor: &mut Compressor) {
    buf.clear();
    let ts = 1_700_000_000_000;
    let mut b = BatchBuilder::begin(buf, ts);
    for v in values {
        b.push(buf, ts, None, Some(v), &[]);
    }
    b.finish(
        buf,
        Compression::None,
        None,
        ProducerStamp::NONE,
        compressor,
    )
    .unwrap();
}

fn kp_records(values: &[Vec<u8>]) -> Vec<KpRecord> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| KpRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::copy_from_slice(v)),
            headers: Default::default(),
        })
        .collect()
}

fn bench_encode(c: &mut Criterion) {
    let values = values();
    let payload: usize = values.iter().map(|v| v.len()).sum();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(payload as u64));
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut compressor = Compressor::default();
    g.bench_function(BenchmarkId::new("shipper", RECORDS), |b| {
        b.iter(|| encode_ours(black_box(&values), &mut buf, &mut compressor))
    });
    let recs = kp_records(&values);
    let opts = RecordEncodeOptions {
        version: 2,
        compression: KpCompression::None,
    };
    g.bench_function(
        BenchmarkId::new("kafka-protocol (records prebuilt)", RECORDS),
        |b| {
            b.iter(|| {
                buf.clear();
                RecordBatchEncoder::encode(&mut buf, black_box(&recs), &opts).unwrap();
            })
        },
    );
    g.bench_function(
        BenchmarkId::new("kafka-protocol (build records + encode)", RECORDS),
        |b| {
            b.iter(|| {
                buf.clear();
                let recs = kp_records(black_box(&values));
                RecordBatchEncoder::encode(&mut buf, &recs, &opts).unwrap();
            })
        },
    );
    g.bench_function(BenchmarkId::new("memcpy", RECORDS), |b| {
        b.iter(|| {
            buf.clear();
            for v in black_box(&values) {
                buf.extend_from_slice(v);
            }
        })
    });
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let values = values();
    let payload: usize = values.iter().map(|v| v.len()).sum();
    let mut buf = BytesMut::new();
    encode_ours(&values, &mut buf, &mut Compressor::default());
    let batch = buf.freeze();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Bytes(payload as u64));
    let mut scratch = Vec::new();
    g.bench_function(BenchmarkId::new("shipper", RECORDS), |b| {
        b.iter(|| {
            let mut n = 0usize;
            for r in records::split_batches(black_box(&batch)) {
                let (h, bytes) = r.unwrap();
                records::verify_crc(&h, bytes).unwrap();
                let sec = records::records_section(&h, bytes, &mut scratch, 1 << 30).unwrap();
                for rec in records::records(&h, sec) {
                    n += rec.unwrap().value.map_or(0, |v| v.len());
                }
            }
            n
        })
    });
    g.bench_function(BenchmarkId::new("kafka-protocol", RECORDS), |b| {
        b.iter(|| {
            let mut bytes = black_box(&batch).clone();
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            set.records.len()
        })
    });
    let mut out = Vec::with_capacity(payload);
    g.bench_function(BenchmarkId::new("memcpy", RECORDS), |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&batch[61..]));
        })
    });
    g.finish();
}

criterion_group!(benches, bench_encode, bench_decode);
criterion_main!(benches);

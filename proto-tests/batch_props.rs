//! Property tests: our record batch encoder against kafka-protocol's decoder and encoder, and the
//! reverse, on random records (keys, null values, headers, empty and large values) with every codec.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KpCompression, Record as KpRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;
use shipper::wire::compression::{Compression, Compressor};
use shipper::wire::records::{self, BatchBuilder, ProducerStamp};

#[derive(Debug, Clone)]
struct Rec {
    ts: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn bytes_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<u8>(), 1000..20_000),
    ]
}

fn rec_strategy() -> impl Strategy<Value = Rec> {
    (
        0i64..100_000,
        proptest::option::of(bytes_strategy()),
        proptest::option::weighted(0.9, bytes_strategy()),
        proptest::collection::btree_map(
            "[a-z]{1,8}",
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            0..3,
        ),
    )
        .prop_map(|(ts, key, value, headers)| Rec {
            ts,
            key,
            value,
            headers: headers.into_iter().collect(),
        })
}

fn records_strategy() -> impl Strategy<Value = Vec<Rec>> {
    proptest::collection::vec(rec_strategy(), 1..40).prop_map(|mut v| {
        // kafka-protocol bases timestamps on the smallest; ours on the first. Sorted, they agree.
        let base = 1_700_000_000_000;
        let mut ts: Vec<i64> = v.iter().map(|r| r.ts).collect();
        ts.sort();
        for (r, t) in v.iter_mut().zip(ts) {
            r.ts = base + t;
        }
        v
    })
}

const CODECS: [(Compression, KpCompression); 5] = [
    (Compression::None, KpCompression::None),
    (Compression::Gzip, KpCompression::Gzip),
    (Compression::Snappy, KpCompression::Snappy),
    (Compression::Lz4, KpCompression::Lz4),
    (Compression::Zstd, KpCompression::Zstd),
];

fn encode_ours(recs: &[Rec], codec: Compression) -> BytesMut {
    let mut buf = BytesMut::new();
    let mut b = BatchBuilder::begin(&mut buf, recs[0].ts);
    for r in recs {
        let hs: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_deref()))
            .collect();
        b.push(&mut buf, r.ts, r.key.as_deref(), r.value.as_deref(), &hs);
    }
    b.finish(
        &mut buf,
        codec,
        None,
        ProducerStamp::NONE,
        &mut Compressor::default(),
    )
    .unwrap();
    buf
}

fn to_kp(recs: &[Rec]) -> Vec<KpRecord> {
    recs.iter()
        .enumerate()
        .map(|(i, r)| KpRecord {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch whenever offset - sequence changes; keep it constant so
            // the first record carries base sequence -1 (no idempotence) and all stay in one batch.
            sequence: i as i32 - 1,
            timestamp: r.ts,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                .collect::<IndexMap<_, _>>(),
        })
        .collect()
}

fn assert_same(decoded: &[KpRecord], recs: &[Rec]) {
    assert_eq!(decoded.len(), recs.len());
    for (i, (d, r)) in decoded.iter().zip(recs).enumerate() {
        assert_eq!(d.offset, i as i64);
        assert_eq!(d.timestamp, r.ts);
        assert_eq!(d.key.as_deref(), r.key.as_deref());
        assert_eq!(d.value.as_deref(), r.value.as_deref());
        let hs: Vec<(String, Option<Vec<u8>>)> = d
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_ref().map(|b| b.to_vec())))
            .collect();
        assert_eq!(hs, r.headers);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn our_batches_decode_with_kafka_protocol(recs in records_strategy()) {
        for (codec, _) in CODECS {
            let buf = encode_ours(&recs, codec);
            let mut bytes = buf.freeze();
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_same(&set.records, &recs);
        }
    }

    #[test]
    fn uncompressed_batches_are_byte_identical_to_kafka_protocol(recs in records_strategy()) {
        let ours = encode_ours(&recs, Compression::None);
        let mut theirs = BytesMut::new();
        let opts = RecordEncodeOptions { version: 2, compression: KpCompression::None };
        RecordBatchEncoder::encode(&mut theirs, &to_kp(&recs), &opts).unwrap();
        prop_assert_eq!(&ours[..], &theirs[..]);
    }

    #[test]
    fn kafka_protocol_batches_decode_with_ours(recs in records_strategy()) {
        for (codec, kp) in CODECS {
            let mut theirs = BytesMut::new();
            let opts = RecordEncodeOptions { version: 2, compression: kp };
            RecordBatchEncoder::encode(&mut theirs, &to_kp(&recs), &opts).unwrap();
            let mut n = 0;
            for b in records::split_batches(&theirs) {
                let (h, batch) = b.unwrap();
                records::verify_crc(&h, batch).unwrap();
                let mut scratch = Vec::new();
                let sec = records::records_section(&h, batch, &mut scratch, 1 << 30).unwrap();
                for (r, want) in records::records(&h, sec).zip(&recs[n..]) {
                    let r = r.unwrap();
                    prop_assert_eq!(r.offset, n as i64, "{:?}", codec);
                    prop_assert_eq!(r.timestamp, want.ts);
                    prop_assert_eq!(r.key, want.key.as_deref());
                    prop_assert_eq!(r.value, want.value.as_deref());
                    let hs: Vec<(String, Option<Vec<u8>>)> = r
                        .headers()
                        .map(|(k, v)| (String::from_utf8(k.to_vec()).unwrap(), v.map(|v| v.to_vec())))
                        .collect();
                    prop_assert_eq!(&hs, &want.headers);
                    n += 1;
                }
            }
            prop_assert_eq!(n, recs.len());
        }
    }
}

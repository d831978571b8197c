//! Fixtures captured from a real Kafka 4.1 broker and kcat (see fixtures/README.md): each is fed to the
//! frame reader a byte at a time, decoded, checked field by field, and re-encoded to identical bytes
//! (with kafka-protocol for messages; with our batch encoder for the uncompressed record batch).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsResponse, FetchRequest, MetadataRequest, ProduceRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request};
use shipper::wire::codec::decode_response;
use shipper::wire::compression::{Compression, Compressor};
use shipper::wire::frame;
use shipper::wire::records::{self, BatchBuilder, Header, ProducerStamp};

const CODECS: [(&str, Compression); 5] = [
    ("none", Compression::None),
    ("gzip", Compression::Gzip),
    ("snappy", Compression::Snappy),
    ("lz4", Compression::Lz4),
    ("zstd", Compression::Zstd),
];

/// Must match KCAT_INPUT in proto-tests/broker/capture.rs, which wrote the fixtures.
const KCAT_RECORDS: &[(&str, &str)] = &[
    ("k0", "first value"),
    ("k1", ""),
    ("k2", "third value, long and repetitive so that every codec shrinks the batch: compress me, compress me, compress me, compress me, compress me, compress me, compress me, compress me, compress me, compress me, compress me, compress me"),
    ("k3", "fourth"),
    ("k4", "fifth and last"),
];

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn all_fixtures() -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".bin"))
            .collect();
    v.sort();
    v
}

/// Feeds a captured response to the frame reader one byte at a time.
fn frame_byte_by_byte(bytes: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let r = frame::parse(&mut buf, frame::DEFAULT_MAX_FRAME_BYTES).unwrap();
        if i + 1 < bytes.len() {
            assert!(
                r.is_none(),
                "frame complete after {} of {} bytes",
                i + 1,
                bytes.len()
            );
        } else {
            let f = r.expect("whole frame");
            assert_eq!(f.len(), bytes.len() - 4);
            assert!(buf.is_empty());
            return f;
        }
    }
    unreachable!("empty fixture")
}

/// Re-encodes a decoded response (header and body) with kafka-protocol.
fn reencode<R: Request>(frame: &Bytes, resp: &R::Response, version: i16) -> Vec<u8> {
    let hv = <R::Response as HeaderVersion>::header_version(version);
    let mut out = BytesMut::new();
    let mut h = kafka_protocol::messages::ResponseHeader::default();
    h.correlation_id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    h.encode(&mut out, hv).unwrap();
    resp.encode(&mut out, version).unwrap();
    out.to_vec()
}

#[test]
fn every_fixture_frames_byte_by_byte() {
    let names = all_fixtures();
    assert!(names.len() >= 8, "{names:?}");
    for n in names {
        frame_byte_by_byte(&fixture(&n));
    }
}

#[test]
fn api_versions_fixture_decodes_and_reencodes_identically() {
    let frame = frame_byte_by_byte(&fixture("api-versions-v3.bin"));
    let mut body = frame.slice(4..);
    let resp = ApiVersionsResponse::decode(&mut body, 3).unwrap();
    assert_eq!(resp.error_code, 0);
    let produce = resp.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert!(
        produce.min_version <= 3 && produce.max_version >= 12,
        "{produce:?}"
    );
    let mut out = BytesMut::new();
    frame[..4].iter().for_each(|b| out.extend_from_slice(&[*b]));
    resp.encode(&mut out, 3).unwrap();
    assert_eq!(&out[..], &frame[..]);
}

#[test]
fn kcat_batches_of_every_codec_decode_to_the_records_kcat_was_given() {
    for (name, codec) in CODECS {
        let frame = frame_byte_by_byte(&fixture(&format!("fetch-v12-kcat-{name}.bin")));
        let resp = decode_response::<FetchRequest>(frame.clone(), 12).unwrap();
        assert_eq!(
            reencode::<FetchRequest>(&frame, &resp, 12),
            frame.to_vec(),
            "{name}"
        );
        let t = &resp.responses[0];
        assert!(
            t.topic.0.starts_with(&format!("fixture-kcat-{name}-")),
            "{:?}",
            t.topic
        );
        let p = &t.partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 5));
        let data = p.records.clone().unwrap();
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        let mut codecs = Vec::new();
        for b in records::split_batches(&data) {
            let (h, batch) = b.unwrap();
            codecs.push(h.compression().unwrap());
            records::verify_crc(&h, batch).unwrap();
            let sec = records::records_section(&h, batch, &mut scratch, 1 << 20).unwrap();
            for r in records::records(&h, sec) {
                let r = r.unwrap();
                let hs: Vec<Header<'_>> = r.headers().collect();
                assert_eq!(hs, vec![(&b"h"[..], Some(&b"all"[..]))]);
                got.push((
                    String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    r.offset,
                ));
            }
        }
        // librdkafka sends a batch uncompressed when compressing would not shrink it.
        assert!(codecs.contains(&codec), "{name}: {codecs:?}");
        assert!(
            codecs
                .iter()
                .all(|c| *c == codec || *c == Compression::None),
            "{name}: {codecs:?}"
        );
        let want: Vec<(String, String, i64)> = KCAT_RECORDS
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (k.to_string(), v.to_string(), i as i64))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn our_encoder_reproduces_kcats_uncompressed_batch_byte_for_byte() {
    let frame = frame_byte_by_byte(&fixture("fetch-v12-kcat-none.bin"));
    let resp = decode_response::<FetchRequest>(frame, 12).unwrap();
    let data = resp.responses[0].partitions[0].records.clone().unwrap();
    let (h, batch) = records::split_batches(&data).next().unwrap().unwrap();
    let mut scratch = Vec::new();
    let sec = records::records_section(&h, batch, &mut scratch, 1 << 20).unwrap();
    let recs: Vec<_> = records::records(&h, sec).map(|r| r.unwrap()).collect();
    let mut buf = BytesMut::new();
    let mut b = BatchBuilder::begin(&mut buf, h.base_timestamp);
    for r in &recs {
        let hs: Vec<Header<'_>> = r.headers().collect();
        b.push(&mut buf, r.timestamp, r.key, r.value, &hs);
    }
    let stamp = ProducerStamp {
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
    };
    b.finish(
        &mut buf,
        Compression::None,
        None,
        stamp,
        &mut Compressor::default(),
    )
    .unwrap();
    // The broker assigns the base offset and stamps the leader epoch; neither is covered by the CRC.
    buf[0..8].copy_from_slice(&batch[0..8]);
    buf[12..16].copy_from_slice(&batch[12..16]);
    assert_eq!(&buf[..], batch);
}

#[test]
fn metadata_fixture_decodes_and_reencodes_identically() {
    let frame = frame_byte_by_byte(&fixture("metadata-v12.bin"));
    let resp = decode_response::<MetadataRequest>(frame.clone(), 12).unwrap();
    assert_eq!(
        reencode::<MetadataRequest>(&frame, &resp, 12),
        frame.to_vec()
    );
    assert_eq!(resp.brokers.len(), 1);
    assert_eq!(
        (&*resp.brokers[0].host, resp.brokers[0].port),
        ("127.0.0.1", 9092)
    );
    let t = &resp.topics[0];
    assert!(
        t.name
            .as_ref()
            .is_some_and(|n| n.0.starts_with("fixture-meta-")),
        "{t:?}"
    );
    assert_eq!(
        (
            t.error_code,
            t.partitions.len(),
            t.partitions[0].leader_id.0
        ),
        (0, 1, 1)
    );
}

#[test]
fn produce_fixture_decodes_and_reencodes_identically() {
    let frame = frame_byte_by_byte(&fixture("produce-v9.bin"));
    let resp = decode_response::<ProduceRequest>(frame.clone(), 9).unwrap();
    assert_eq!(reencode::<ProduceRequest>(&frame, &resp, 9), frame.to_vec());
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!((p.index, p.error_code, p.base_offset), (0, 0, 0));
}

/// Every truncation and every single-byte corruption of every fixture decodes to a value or a typed
/// error; none panics, and record decoding never allocates past its bound.
#[test]
fn corrupted_fixtures_are_errors_not_panics() {
    for n in all_fixtures() {
        let bytes = fixture(&n);
        let body = Bytes::from(bytes[4..].to_vec());
        let version: i16 = n
            .split('-')
            .find_map(|s| {
                s.strip_prefix('v')
                    .and_then(|v| v.trim_end_matches(".bin").parse().ok())
            })
            .unwrap();
        let mut variants: Vec<Bytes> = (0..body.len()).map(|i| body.slice(..i)).collect();
        for i in 0..body.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut v = body.to_vec();
                v[i] ^= flip;
                variants.push(Bytes::from(v));
            }
        }
        for v in variants {
            let _ = if n.starts_with("fetch") {
                decode_response::<FetchRequest>(v.clone(), version).map(|r| {
                    for t in r.responses {
                        for p in t.partitions {
                            let data = p.records.unwrap_or_default();
                            let mut scratch = Vec::new();
                            for b in records::split_batches(&data) {
                                let Ok((h, batch)) = b else { break };
                                if let Ok(sec) =
                                    records::records_section(&h, batch, &mut scratch, 1 << 16)
                                {
                                    for r in records::records(&h, sec) {
                                        let _ = r.map(|r| r.headers().count());
                                    }
                                }
                            }
                        }
                    }
                })
            } else if n.starts_with("metadata") {
                decode_response::<MetadataRequest>(v.clone(), version).map(|_| ())
            } else if n.starts_with("produce") {
                decode_response::<ProduceRequest>(v.clone(), version).map(|_| ())
            } else {
                shipper::wire::codec::decode_api_versions(v.slice(4.min(v.len())..), version)
                    .map(|_| ())
            };
        }
    }
}

/// The hostile corpus (fixtures/hostile/: frames, responses, record batches of each codec including
/// decompression bombs, and what the fuzz targets found), replayed as the fuzz targets do: each must end
/// in a typed error, never a panic, and decompression never allocates past its bound.
#[test]
fn hostile_inputs_found_by_fuzzing_are_typed_errors() {
    use kafka_protocol::messages::ListOffsetsRequest;
    use shipper::wire::codec::decode_api_versions;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hostile");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((&sel, rest)) = data.split_first() else {
            continue;
        };
        let frame = Bytes::copy_from_slice(rest);
        if name.starts_with("response-") {
            let r = match sel % 8 {
                0 => decode_response::<FetchRequest>(frame, 12).map(|_| ()),
                1 => {
                    decode_response::<MetadataRequest>(frame, 9 + (sel / 8 % 4) as i16).map(|_| ())
                }
                2 => decode_response::<ProduceRequest>(frame, 9 + (sel / 8 % 4) as i16).map(|_| ()),
                3 => decode_response::<ListOffsetsRequest>(frame, 6 + (sel / 8 % 2) as i16)
                    .map(|_| ()),
                4 => decode_api_versions(frame, 3).map(|_| ()),
                _ => decode_api_versions(frame, 0).map(|_| ()),
            };
            assert!(r.is_err(), "{name} decoded");
            n += 1;
        } else if name.starts_with("frame-") {
            let mut buf = BytesMut::from(&data[..]);
            assert!(
                frame::parse(&mut buf, frame::DEFAULT_MAX_FRAME_BYTES).is_err(),
                "{name}"
            );
            n += 1;
        } else if name.starts_with("batch-") {
            // Decoded as the consumer does, with a 1 MiB bound on decompression: an error, not a value.
            let mut scratch = Vec::new();
            let r: Result<usize, records::RecordError> = records::split_batches(&data)
                .map(|b| {
                    let (h, batch) = b?;
                    records::verify_crc(&h, batch)?;
                    let sec = records::records_section(&h, batch, &mut scratch, 1 << 20)?;
                    records::records(&h, sec)
                        .map(|r| r.map(|_| 1))
                        .sum::<Result<usize, _>>()
                })
                .sum();
            assert!(r.is_err(), "{name} decoded: {r:?}");
            assert!(
                scratch.capacity() <= 2 << 20,
                "{name}: {} bytes allocated",
                scratch.capacity()
            );
            n += 1;
        }
    }
    assert!(n >= 12, "{n} hostile inputs");
}

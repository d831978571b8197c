//! The Produce request written around its record batches instead of over them.
//!
//! kafka-protocol's encoder copies every batch into the request buffer. On the hot path that is one
//! full copy of everything shipped, so the Produce request (the flexible versions 9-12 shipper
//! speaks, request header v2) is encoded here as a list of parts: small encoded pieces (header,
//! names, lengths, tagged fields) and, between them, the batches themselves, shared `Bytes` that the
//! connection hands to one vectored write. The parts concatenated are exactly kafka-protocol's
//! encoding (proven by the tests below for every version). See
//! <https://kafka.apache.org/protocol#The_Messages_Produce>.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::CodecError;

/// The Produce versions this encoder writes: flexible (compact) encoding, topics by name.
pub const VERSIONS: std::ops::RangeInclusive<i16> = 9..=12;

/// Kafka's api key for Produce.
const PRODUCE_KEY: i16 = 0;

/// One topic's batches in a Produce request: `(partition, record batch bytes)`.
pub struct TopicBatches<'a> {
    /// The topic's name.
    pub name: &'a str,
    /// Partition index and its batch (a whole RecordBatch v2, or several back to back).
    pub batches: Vec<(i32, Bytes)>,
}

/// A request encoded as parts to write in order, size prefix first.
#[derive(Debug, Default)]
pub struct Parts {
    /// The parts; concatenated, they are the size-prefixed frame.
    pub parts: Vec<Bytes>,
    /// Their total length (the frame's size plus 4).
    pub len: usize,
}

/// The request header and body fields other than the topics.
pub struct ProduceHead<'a> {
    /// Produce version, one of [`VERSIONS`].
    pub version: i16,
    /// Correlation id for the header.
    pub correlation_id: i32,
    /// Client id for the header.
    pub client_id: &'a str,
    /// 0, 1 or -1.
    pub acks: i16,
    /// How long the broker may wait for replication.
    pub timeout_ms: i32,
}

/// Encodes a Produce request; `scratch` holds the small parts (its contents are split off, its
/// allocation reused while no earlier request's parts still share it).
pub fn encode(
    scratch: &mut BytesMut,
    head: &ProduceHead<'_>,
    topics: &[TopicBatches<'_>],
) -> Result<Parts, CodecError> {
    let err = |detail: String| CodecError {
        api: "Produce",
        version: head.version,
        action: "encode the request",
        detail,
        too_large: false,
    };
    if !VERSIONS.contains(&head.version) {
        return Err(err(format!(
            "version {} is not one shipper writes ({}-{})",
            head.version,
            VERSIONS.start(),
            VERSIONS.end()
        )));
    }
    let client_id = i16::try_from(head.client_id.len())
        .map_err(|_| err("client id longer than 32767 bytes".into()))?;
    let size = frame_size(head, topics);
    let size = i32::try_from(size).map_err(|_| err(format!("request of {size} bytes")))?;
    scratch.clear();
    let mut out = Parts::default();
    scratch.put_i32(size);
    scratch.put_i16(PRODUCE_KEY);
    scratch.put_i16(head.version);
    scratch.put_i32(head.correlation_id);
    scratch.put_i16(client_id);
    scratch.put_slice(head.client_id.as_bytes());
    put_uvarint(scratch, 0); // header tagged fields
    put_uvarint(scratch, 0); // transactional_id: null
    scratch.put_i16(head.acks);
    scratch.put_i32(head.timeout_ms);
    put_uvarint(scratch, topics.len() as u64 + 1);
    for t in topics {
        put_uvarint(scratch, t.name.len() as u64 + 1);
        scratch.put_slice(t.name.as_bytes());
        put_uvarint(scratch, t.batches.len() as u64 + 1);
        for (partition, records) in &t.batches {
            scratch.put_i32(*partition);
            put_uvarint(scratch, records.len() as u64 + 1);
            out.push(scratch.split().freeze());
            out.push(records.clone());
            put_uvarint(scratch, 0); // partition tagged fields
        }
        put_uvarint(scratch, 0); // topic tagged fields
    }
    put_uvarint(scratch, 0); // request tagged fields
    out.push(scratch.split().freeze());
    if out.len != size as usize + 4 {
        // A broken invariant, but the connection must not send a frame whose prefix lies.
        return Err(err(format!(
            "encoded {} bytes, computed {size}",
            out.len - 4
        )));
    }
    Ok(out)
}

/// The size the request's frame will have (after its 4-byte prefix), computed before encoding so that
/// the prefix is written first.
fn frame_size(head: &ProduceHead<'_>, topics: &[TopicBatches<'_>]) -> usize {
    let mut n = 2 + 2 + 4 + 2 + head.client_id.len() + 1 + 1 + 2 + 4;
    n += uvarint_len(topics.len() as u64 + 1);
    for t in topics {
        n += uvarint_len(t.name.len() as u64 + 1) + t.name.len();
        n += uvarint_len(t.batches.len() as u64 + 1);
        for (_, records) in &t.batches {
            n += 4 + uvarint_len(records.len() as u64 + 1) + records.len() + 1;
        }
        n += 1;
    }
    n + 1
}

/// Bytes [`put_uvarint`] writes for `v`.
fn uvarint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

impl Parts {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.parts.push(b);
        }
    }
}

/// Kafka's unsigned varint (protobuf style, 7 bits per byte, low first).
fn put_uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_len_is_what_put_uvarint_writes() {
        let mut b = BytesMut::new();
        for shift in 0..64 {
            for v in [
                (1u64 << shift) - 1,
                1u64 << shift,
                (1u64 << shift) + 1,
                u64::MAX,
            ] {
                b.clear();
                put_uvarint(&mut b, v);
                assert_eq!(uvarint_len(v), b.len(), "{v}");
            }
        }
    }
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn concat(p: &Parts) -> Vec<u8> {
        let v: Vec<u8> = p.parts.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(v.len(), p.len);
        v
    }

    fn theirs(version: i16, id: i32, client: &str, topics: &[TopicBatches<'_>]) -> Vec<u8> {
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.timeout_ms = 30_000;
        req.topic_data = topics
            .iter()
            .map(|t| {
                let mut td = TopicProduceData::default();
                td.name = TopicName(StrBytes::from_string(t.name.to_string()));
                td.partition_data = t
                    .batches
                    .iter()
                    .map(|(i, b)| {
                        let mut d = PartitionProduceData::default();
                        d.index = *i;
                        d.records = Some(b.clone());
                        d
                    })
                    .collect();
                td
            })
            .collect();
        let mut out = BytesMut::new();
        crate::wire::codec::encode_request(
            &mut out,
            &req,
            version,
            id,
            &StrBytes::from_string(client.to_string()),
        )
        .expect("kafka-protocol encodes");
        out.to_vec()
    }

    #[test]
    fn parts_are_byte_for_byte_kafka_protocols_encoding_in_every_version() {
        let big = Bytes::from(vec![7u8; 200]); // a length that needs a two-byte varint
        let long_name = "n".repeat(130);
        let cases: Vec<Vec<TopicBatches<'_>>> = vec![
            vec![],
            vec![TopicBatches {
                name: "t",
                batches: vec![(0, Bytes::from_static(b"abc"))],
            }],
            vec![
                TopicBatches {
                    name: "app-logs",
                    batches: vec![(3, big.clone()), (11, Bytes::from_static(b"x"))],
                },
                TopicBatches {
                    name: &long_name,
                    batches: vec![(0, Bytes::new()), (1, big.clone())],
                },
            ],
        ];
        for version in VERSIONS {
            for topics in &cases {
                for client in ["shipper", "", "ü-client"] {
                    let head = ProduceHead {
                        version,
                        correlation_id: 0x0102_0304,
                        client_id: client,
                        acks: -1,
                        timeout_ms: 30_000,
                    };
                    let mut scratch = BytesMut::new();
                    let ours = encode(&mut scratch, &head, topics).expect("encodes");
                    assert_eq!(
                        concat(&ours),
                        theirs(version, 0x0102_0304, client, topics),
                        "v{version}"
                    );
                }
            }
        }
    }

    #[test]
    fn batches_are_shared_not_copied() {
        let batch = Bytes::from(vec![1u8; 4096]);
        let topics = [TopicBatches {
            name: "t",
            batches: vec![(0, batch.clone())],
        }];
        let head = ProduceHead {
            version: 12,
            correlation_id: 1,
            client_id: "c",
            acks: 1,
            timeout_ms: 1,
        };
        let p = encode(&mut BytesMut::new(), &head, &topics).expect("encodes");
        assert!(p.parts.iter().any(|b| b.as_ptr() == batch.as_ptr()));
    }

    #[test]
    fn versions_outside_the_flexible_range_are_refused() {
        for version in [3, 8, 13] {
            let head = ProduceHead {
                version,
                correlation_id: 1,
                client_id: "c",
                acks: 1,
                timeout_ms: 1,
            };
            let e = encode(&mut BytesMut::new(), &head, &[]).expect_err("refused");
            assert!(e.to_string().contains("not one shipper writes"), "{e}");
        }
    }
}

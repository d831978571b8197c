//! Unit tests of the record batch codec.

use bytes::{BufMut, BytesMut};

use super::decode::Cursor;
use super::encode::put_varint;
use super::*;
use crate::wire::compression::{Compression, Compressor};

#[test]
fn varint_len_matches_encoding() {
    for v in [
        0i64,
        1,
        -1,
        63,
        64,
        -64,
        -65,
        8191,
        8192,
        i32::MAX as i64,
        i64::MIN,
        i64::MAX,
    ] {
        let mut b = BytesMut::new();
        put_varint(&mut b, v);
        assert_eq!(b.len(), varint_len(v), "{v}");
        let mut c = Cursor { b: &b, offset: 0 };
        assert_eq!(c.varint("x").unwrap(), v);
    }
}

#[test]
fn batch_round_trips_keys_values_and_headers() {
    let mut buf = BytesMut::new();
    buf.put_slice(b"prefix");
    let mut b = BatchBuilder::begin(&mut buf, 1000);
    b.push(
        &mut buf,
        1000,
        Some(b"k"),
        Some(b"v1"),
        &[(b"h", Some(b"x"))],
    );
    b.push(&mut buf, 1005, None, None, &[]);
    b.push(&mut buf, 1002, Some(b""), Some(b""), &[(b"n", None)]);
    let total = b
        .finish(
            &mut buf,
            Compression::None,
            None,
            ProducerStamp::NONE,
            &mut Compressor::default(),
        )
        .unwrap();
    assert_eq!(total, buf.len() - 6);
    let batches: Vec<_> = split_batches(&buf[6..]).collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.len(), 1);
    let (h, bytes) = batches[0];
    verify_crc(&h, bytes).unwrap();
    assert_eq!(
        (h.record_count, h.last_offset_delta, h.max_timestamp),
        (3, 2, 1005)
    );
    let mut scratch = Vec::new();
    let sec = records_section(&h, bytes, &mut scratch, 1 << 20).unwrap();
    let recs: Vec<_> = records(&h, sec).collect::<Result<_, _>>().unwrap();
    assert_eq!(recs[0].key, Some(&b"k"[..]));
    assert_eq!(
        recs[0].headers().collect::<Vec<_>>(),
        vec![(&b"h"[..], Some(&b"x"[..]))]
    );
    assert_eq!(
        (recs[1].key, recs[1].value, recs[1].timestamp),
        (None, None, 1005)
    );
    assert_eq!(
        recs[2].headers().collect::<Vec<_>>(),
        vec![(&b"n"[..], None)]
    );
    assert_eq!(recs[2].offset, 2);
}

/// Appends a one-record uncompressed batch holding "hello".
fn push_hello_batch(buf: &mut BytesMut) {
    let mut b = BatchBuilder::begin(buf, 1);
    b.push(buf, 1, None, Some(b"hello"), &[]);
    b.finish(
        buf,
        Compression::None,
        None,
        ProducerStamp::NONE,
        &mut Compressor::default(),
    )
    .unwrap();
}

#[test]
fn truncated_tail_batch_is_ignored() {
    let mut buf = BytesMut::new();
    for _ in 0..2 {
        push_hello_batch(&mut buf);
    }
    let cut = &buf[..buf.len() - 3];
    assert_eq!(split_batches(cut).count(), 1);
}

#[test]
fn flipped_byte_fails_the_crc() {
    let mut buf = BytesMut::new();
    push_hello_batch(&mut buf);
    let n = buf.len();
    buf[n - 2] ^= 1;
    let (h, bytes) = split_batches(&buf).next().unwrap().unwrap();
    assert!(matches!(
        verify_crc(&h, bytes),
        Err(RecordError::Crc { .. })
    ));
}

#[test]
fn absurd_lengths_are_errors_not_panics() {
    let mut buf = BytesMut::new();
    push_hello_batch(&mut buf);
    // Corrupt the record's value length into a huge varint.
    buf[BATCH_HEADER_BYTES + 5] = 0xfe;
    let (h, bytes) = split_batches(&buf).next().unwrap().unwrap();
    let mut scratch = Vec::new();
    let sec = records_section(&h, bytes, &mut scratch, 1 << 20).unwrap();
    assert!(records(&h, sec).any(|r| r.is_err()));
}

/// A batch whose count is below the records it holds, or whose record names an offset outside the
/// batch, is refused rather than read in part (probe D: a count of 1 over three records printed one
/// and skipped the others' offsets).
#[test]
fn a_batch_that_lies_about_its_records_is_an_error() {
    let three = || {
        let mut buf = BytesMut::new();
        let mut b = BatchBuilder::begin(&mut buf, 1);
        for v in [&b"a"[..], b"b", b"c"] {
            b.push(&mut buf, 1, None, Some(v), &[]);
        }
        b.finish(
            &mut buf,
            Compression::None,
            None,
            ProducerStamp::NONE,
            &mut Compressor::default(),
        )
        .unwrap();
        let (h, _) = split_batches(&buf).next().unwrap().unwrap();
        (h, buf[BATCH_HEADER_BYTES..].to_vec())
    };
    let (h, sec) = three();
    assert_eq!(records(&h, &sec).filter(|r| r.is_ok()).count(), 3);
    for count in [-1, 0, 1, 2] {
        let h = BatchHeader {
            record_count: count,
            ..h
        };
        let got: Vec<_> = records(&h, &sec).collect();
        assert!(got.last().is_some_and(|r| r.is_err()), "count {count}");
        assert_eq!(
            got.iter().filter(|r| r.is_err()).count(),
            1,
            "count {count}"
        );
    }
    // The last record's offset delta (2) past a last offset delta of 1.
    let h = BatchHeader {
        last_offset_delta: 1,
        ..h
    };
    let got: Vec<_> = records(&h, &sec).collect();
    assert!(got[2].is_err() && got[..2].iter().all(|r| r.is_ok()));
}

/// Magic 0 and 1 are Kafka's old formats; any other magic but 2 is damage, and said as such (magic
/// 9 was called "the message format of Kafka before 0.11").
#[test]
fn a_magic_no_format_has_is_said_as_damage_not_as_an_old_format() {
    let old = RecordError::Magic(1).to_string();
    assert!(old.contains("before 0.11"), "{old}");
    for m in [9, -1, 3] {
        let e = RecordError::Magic(m).to_string();
        assert!(
            e.contains(&format!("magic {m}, which no Kafka message format has"))
                && !e.contains("0.11"),
            "{e}"
        );
    }
}

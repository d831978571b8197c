//! Writing record batches: records appended in place, header and CRC filled at the end.

use bytes::{BufMut, BytesMut};

use super::decode::{records, records_section, split_batches, Record};
use super::{
    BatchHeader, Header, ProducerStamp, RecordError, BATCH_HEADER_BYTES, CRC_START, LOG_OVERHEAD,
};
use crate::wire::compression::{Compression, CompressionError, Compressor};

/// Builds one batch at the end of a buffer; records are appended in place.
///
/// `begin` reserves the header, `push` appends records, `finish` compresses (if asked) and fills the
/// header and CRC. The buffer may hold other bytes before the batch.
#[derive(Debug)]
pub struct BatchBuilder {
    start: usize,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
}

/// Zig-zag encoding of a signed 64-bit integer.
#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Bytes a zig-zag varint of `v` takes.
#[inline]
pub fn varint_len(v: i64) -> usize {
    let z = zigzag(v) | 1;
    (70 - z.leading_zeros() as usize) / 7
}

#[inline]
pub(crate) fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

#[inline]
fn put_bytes_field(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i64);
            // musl's memcpy is slow for short copies (see crate::fastcopy).
            crate::fastcopy::extend(buf, b);
        }
    }
}

#[inline]
fn bytes_field_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varint_len(b.len() as i64) + b.len(),
    }
}

/// Bytes a record body (everything after its length varint) takes.
#[inline]
pub fn record_body_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header<'_>],
) -> usize {
    let mut n = 1 + varint_len(timestamp_delta) + varint_len(offset_delta as i64);
    n += bytes_field_len(key) + bytes_field_len(value);
    n += varint_len(headers.len() as i64);
    for (k, v) in headers {
        n += bytes_field_len(Some(k)) + bytes_field_len(*v);
    }
    n
}

impl BatchBuilder {
    /// Starts a batch at the end of `buf`, whose first record has `base_timestamp` (ms).
    pub fn begin(buf: &mut BytesMut, base_timestamp: i64) -> Self {
        let start = buf.len();
        buf.put_bytes(0, BATCH_HEADER_BYTES);
        BatchBuilder {
            start,
            base_timestamp,
            max_timestamp: base_timestamp,
            count: 0,
        }
    }

    /// Records appended so far.
    pub fn count(&self) -> i32 {
        self.count
    }

    /// Bytes of the batch so far (header and uncompressed records).
    pub fn len(&self, buf: &BytesMut) -> usize {
        buf.len() - self.start
    }

    /// Whether no record was appended yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes one more record would add to the batch.
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> usize {
        let body = record_body_len(
            timestamp - self.base_timestamp,
            self.count,
            key,
            value,
            headers,
        );
        varint_len(body as i64) + body
    }

    /// Appends one record. The returned mark undoes it with [`BatchBuilder::pop`] while it is the last.
    pub fn push(
        &mut self,
        buf: &mut BytesMut,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) -> RecordMark {
        let mark = RecordMark {
            len: buf.len(),
            max_timestamp: self.max_timestamp,
        };
        let ts_delta = timestamp - self.base_timestamp;
        let body = record_body_len(ts_delta, self.count, key, value, headers);
        buf.reserve(body + 5);
        put_varint(buf, body as i64);
        buf.put_u8(0);
        put_varint(buf, ts_delta);
        put_varint(buf, self.count as i64);
        put_bytes_field(buf, key);
        put_bytes_field(buf, value);
        put_varint(buf, headers.len() as i64);
        for (k, v) in headers {
            put_bytes_field(buf, Some(k));
            put_bytes_field(buf, *v);
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        mark
    }

    /// Removes the last record appended (the one `mark` came from): the tail reader takes back a line
    /// whose bytes may have come from a page that vanished under its memory map.
    pub fn pop(&mut self, buf: &mut BytesMut, mark: RecordMark) {
        debug_assert!(self.count > 0 && mark.len >= self.start + BATCH_HEADER_BYTES);
        buf.truncate(mark.len);
        self.count -= 1;
        self.max_timestamp = mark.max_timestamp;
    }

    /// Compresses the records (unless `codec` is none), fills in the header and the CRC.
    ///
    /// `compressor` keeps compression state between batches. Returns the batch's total size.
    pub fn finish(
        self,
        buf: &mut BytesMut,
        codec: Compression,
        level: Option<i32>,
        stamp: ProducerStamp,
        compressor: &mut Compressor,
    ) -> Result<usize, CompressionError> {
        let records_at = self.start + BATCH_HEADER_BYTES;
        if codec != Compression::None {
            let compressed = compressor.compress(codec, level, &buf[records_at..])?;
            buf.truncate(records_at);
            buf.extend_from_slice(compressed);
        }
        let total = buf.len() - self.start;
        let h = &mut buf[self.start..];
        h[0..8].copy_from_slice(&0i64.to_be_bytes());
        h[8..12].copy_from_slice(&((total - LOG_OVERHEAD) as i32).to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        h[16] = 2;
        h[21..23].copy_from_slice(&(codec.id() as i16).to_be_bytes());
        h[23..27].copy_from_slice(&(self.count - 1).max(0).to_be_bytes());
        h[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        h[43..51].copy_from_slice(&stamp.producer_id.to_be_bytes());
        h[51..53].copy_from_slice(&stamp.producer_epoch.to_be_bytes());
        h[53..57].copy_from_slice(&stamp.base_sequence.to_be_bytes());
        h[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&h[CRC_START..]);
        h[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(total)
    }
}

/// Where a batch stood before one record was pushed: enough to take that record back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMark {
    len: usize,
    max_timestamp: i64,
}

/// The producer stamp of a finished batch (its header fields), if the bytes hold a batch header.
pub fn stamp_of(batch: &[u8]) -> Option<ProducerStamp> {
    let h = BatchHeader::parse(batch).ok()?;
    Some(ProducerStamp {
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
    })
}

/// Re-encodes one finished batch as two of about half the records each (same codec, no producer
/// stamp), for a broker that found it too large or refused a record in it. Returns each half's bytes
/// and record count.
pub fn split_batch(
    batch: &[u8],
    codec: Compression,
    level: Option<i32>,
    compressor: &mut Compressor,
) -> Result<[(BytesMut, usize); 2], RecordError> {
    let (h, bytes) = split_batches(batch)
        .next()
        .ok_or(RecordError::Truncated("batch"))??;
    let mut scratch = Vec::new();
    let section = records_section(&h, bytes, &mut scratch, usize::MAX)?;
    let recs: Vec<Record<'_>> = records(&h, section).collect::<Result<_, _>>()?;
    let mid = recs.len() / 2;
    let mut encode = |part: &[Record<'_>]| -> Result<(BytesMut, usize), RecordError> {
        let mut buf = BytesMut::new();
        let mut b = BatchBuilder::begin(&mut buf, part.first().map_or(0, |r| r.timestamp));
        for r in part {
            let hs: Vec<Header<'_>> = r.headers().collect();
            b.push(&mut buf, r.timestamp, r.key, r.value, &hs);
        }
        b.finish(&mut buf, codec, level, ProducerStamp::NONE, compressor)
            .map_err(|error| RecordError::Compression {
                offset: h.base_offset,
                error,
            })?;
        Ok((buf, part.len()))
    };
    Ok([encode(&recs[..mid])?, encode(&recs[mid..])?])
}

/// Rewrites a finished batch's producer id, epoch and base sequence and recomputes its CRC: for a batch
/// split or re-sent under a new producer id.
pub fn restamp(batch: &mut [u8], stamp: ProducerStamp) {
    batch[43..51].copy_from_slice(&stamp.producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&stamp.producer_epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&stamp.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

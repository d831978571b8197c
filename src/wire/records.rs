//! Record batch v2 (magic 2): our own encoder and decoder.
//!
//! The encoder writes records straight into a batch buffer, computing each record's length arithmetically,
//! with no per-record structs. The decoder borrows from the fetched bytes (or from one reused buffer when the
//! batch is compressed). Layout: <https://kafka.apache.org/documentation/#recordbatch>.
//!
//! ```text
//! 0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32
//! 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64
//! 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 | 57 recordCount i32 | 61 records
//! ```

use bytes::{BufMut, BytesMut};

use super::compression::{self, Compression, CompressionError, Compressor};

/// Size of the batch header, up to and including `recordCount`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength themselves.
const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;
const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;

/// A batch that cannot be decoded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the header or the announced length.
    #[error("record batch truncated: {0}")]
    Truncated(&'static str),
    /// Old message formats (magic 0/1) are not supported (Kafka 4 removed them too).
    #[error("record batch has magic {0}; only magic 2 is supported")]
    Magic(i8),
    /// The stored CRC does not match the bytes.
    #[error("record batch at offset {offset}: CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc {
        /// baseOffset of the batch.
        offset: i64,
        /// CRC in the batch.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A length field is negative or larger than the data holds.
    #[error("record batch at offset {offset}: malformed {what}")]
    Malformed {
        /// baseOffset of the batch.
        offset: i64,
        /// Which field.
        what: &'static str,
    },
    /// Decompression failed.
    #[error("record batch at offset {offset}: {source}")]
    Compression {
        /// baseOffset of the batch.
        offset: i64,
        /// The codec's error.
        source: CompressionError,
    },
}

/// The identity an idempotent producer stamps on a batch; all -1 without idempotence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id from InitProducerId, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// The stamp of a producer without idempotence.
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// One record header: a key and an optional value.
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

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
fn put_varint(buf: &mut BytesMut, v: i64) {
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
            buf.put_slice(b);
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
            .map_err(|source| RecordError::Compression {
                offset: h.base_offset,
                source,
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

/// The fixed fields of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the batchLength field.
    pub batch_length: i32,
    /// Leader epoch stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Message format; 2.
    pub magic: i8,
    /// CRC-32C of bytes 21..end.
    pub crc: u32,
    /// Codec, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record minus baseOffset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the header at the front of `b` (which must hold at least [`BATCH_HEADER_BYTES`]).
    pub fn parse(b: &[u8]) -> Result<Self, RecordError> {
        if b.len() < 17 {
            return Err(RecordError::Truncated("header"));
        }
        let magic = b[16] as i8;
        if magic != 2 {
            return Err(RecordError::Magic(magic));
        }
        if b.len() < BATCH_HEADER_BYTES {
            return Err(RecordError::Truncated("header"));
        }
        Ok(BatchHeader {
            base_offset: be_i64(b, 0),
            batch_length: be_i32(b, 8),
            partition_leader_epoch: be_i32(b, 12),
            magic,
            crc: be_i32(b, 17) as u32,
            attributes: be_i16(b, 21),
            last_offset_delta: be_i32(b, 23),
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            record_count: be_i32(b, 57),
        })
    }

    /// The codec of the records section.
    pub fn compression(&self) -> Result<Compression, RecordError> {
        Compression::from_id((self.attributes & 0x7) as u8).map_err(|source| {
            RecordError::Compression {
                offset: self.base_offset,
                source,
            }
        })
    }

    /// Whether this is a control batch (transaction markers), never shown to users.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether timestamps are the broker's append time (then `max_timestamp` is every record's time).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    /// The offset after this batch, whether or not it still holds records (compaction may empty it).
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64 + 1
    }
}

/// Splits fetched bytes into whole batches; a truncated batch at the end is ignored, as the protocol allows.
#[derive(Debug, Clone)]
pub struct BatchSplitter<'a> {
    rest: &'a [u8],
}

/// Iterates the whole batches in `data`.
pub fn split_batches(data: &[u8]) -> BatchSplitter<'_> {
    BatchSplitter { rest: data }
}

impl<'a> Iterator for BatchSplitter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < LOG_OVERHEAD + 5 {
            return None;
        }
        let len = be_i32(self.rest, 8);
        let offset = be_i64(self.rest, 0);
        if len < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32 {
            // A magic 0/1 message set has a shorter minimum; report the magic when it is readable.
            let magic = self.rest[16] as i8;
            self.rest = &[];
            if magic != 2 {
                return Some(Err(RecordError::Magic(magic)));
            }
            return Some(Err(RecordError::Malformed {
                offset,
                what: "batchLength",
            }));
        }
        let total = LOG_OVERHEAD + len as usize;
        if total > self.rest.len() {
            // The partial batch a fetch may end with: not an error, just not ours yet.
            self.rest = &[];
            return None;
        }
        let (batch, rest) = self.rest.split_at(total);
        self.rest = rest;
        Some(BatchHeader::parse(batch).map(|h| (h, batch)))
    }
}

/// Checks the batch's CRC-32C.
pub fn verify_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), RecordError> {
    let computed = crc32c::crc32c(&batch[CRC_START..]);
    if computed != header.crc {
        return Err(RecordError::Crc {
            offset: header.base_offset,
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// The records section of a batch, decompressed into `scratch` when needed.
///
/// `limit` bounds the decompressed size.
pub fn records_section<'a>(
    header: &BatchHeader,
    batch: &'a [u8],
    scratch: &'a mut Vec<u8>,
    limit: usize,
) -> Result<&'a [u8], RecordError> {
    let raw = &batch[BATCH_HEADER_BYTES..];
    match header.compression()? {
        Compression::None => Ok(raw),
        codec => {
            compression::decompress(codec, raw, scratch, limit).map_err(|source| {
                RecordError::Compression {
                    offset: header.base_offset,
                    source,
                }
            })?;
            Ok(&scratch[..])
        }
    }
}

/// One decoded record, borrowing its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Absolute offset.
    pub offset: i64,
    /// Timestamp in ms (create time, or the broker's append time).
    pub timestamp: i64,
    /// Key, or `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// Value, or `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// Number of headers.
    pub header_count: usize,
    /// The encoded headers, read with [`Record::headers`].
    pub headers_raw: &'a [u8],
}

impl<'a> Record<'a> {
    /// Iterates the record's headers.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            cur: Cursor {
                b: self.headers_raw,
                offset: self.offset,
            },
            left: self.header_count,
        }
    }
}

/// Iterator over a record's headers.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    cur: Cursor<'a>,
    left: usize,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Headers were validated when the record was decoded.
        let k = self.cur.bytes("header key").ok()??;
        let v = self.cur.bytes("header value").ok()?;
        Some((k, v))
    }
}

#[derive(Debug, Clone)]
struct Cursor<'a> {
    b: &'a [u8],
    offset: i64,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, what: &'static str) -> RecordError {
        RecordError::Malformed {
            offset: self.offset,
            what,
        }
    }

    #[inline]
    fn varint(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let mut z: u64 = 0;
        for (i, &byte) in self.b.iter().enumerate().take(10) {
            z |= ((byte & 0x7f) as u64) << (7 * i);
            if byte < 0x80 {
                self.b = &self.b[i + 1..];
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(self.malformed(what))
    }

    #[inline]
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if n > self.b.len() {
            return Err(self.malformed(what));
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }

    #[inline]
    fn bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, RecordError> {
        let n = self.varint(what)?;
        if n < 0 {
            return if n == -1 {
                Ok(None)
            } else {
                Err(self.malformed(what))
            };
        }
        self.take(n as usize, what).map(Some)
    }
}

/// Iterates the records of one batch's (decompressed) records section.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    cur: Cursor<'a>,
    header: BatchHeader,
    left: i32,
}

/// Decodes the records of a batch from its records section.
pub fn records<'a>(header: &BatchHeader, section: &'a [u8]) -> RecordIter<'a> {
    RecordIter {
        cur: Cursor {
            b: section,
            offset: header.base_offset,
        },
        header: *header,
        left: header.record_count.max(0),
    }
}

impl<'a> RecordIter<'a> {
    fn decode_one(&mut self) -> Result<Record<'a>, RecordError> {
        let len = self.cur.varint("record length")?;
        if len < 0 {
            return Err(self.cur.malformed("record length"));
        }
        let body = self.cur.take(len as usize, "record length")?;
        let mut c = Cursor {
            b: body,
            offset: self.header.base_offset,
        };
        c.take(1, "record attributes")?;
        let ts_delta = c.varint("timestamp delta")?;
        let off_delta = c.varint("offset delta")?;
        let key = c.bytes("key")?;
        let value = c.bytes("value")?;
        let header_count = c.varint("header count")?;
        if header_count < 0 || header_count as usize > c.b.len() {
            return Err(c.malformed("header count"));
        }
        let headers_raw = c.b;
        let mut h = c.clone();
        for _ in 0..header_count {
            if h.bytes("header key")?.is_none() {
                return Err(h.malformed("header key"));
            }
            h.bytes("header value")?;
        }
        let timestamp = if self.header.is_log_append_time() {
            self.header.max_timestamp
        } else {
            self.header.base_timestamp.wrapping_add(ts_delta)
        };
        Ok(Record {
            offset: self.header.base_offset.wrapping_add(off_delta),
            timestamp,
            key,
            value,
            header_count: header_count as usize,
            headers_raw,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = self.decode_one();
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

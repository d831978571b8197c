//! Reading record batches: whole batches out of fetched bytes, CRC, decompression, records that
//! borrow their bytes.

use super::{
    be_i32, be_i64, BatchHeader, Header, RecordError, BATCH_HEADER_BYTES, CRC_START, LOG_OVERHEAD,
};
use crate::wire::compression::{self, Compression};

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
            compression::decompress(codec, raw, scratch, limit).map_err(|error| {
                RecordError::Compression {
                    offset: header.base_offset,
                    error,
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
pub(crate) struct Cursor<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) offset: i64,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, what: &'static str) -> RecordError {
        RecordError::Malformed {
            offset: self.offset,
            what,
        }
    }

    #[inline]
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<i64, RecordError> {
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
    records_resume(header, section, header.record_count)
}

/// Decodes the records of a batch from `rest`, the part of its records section not yet read, where
/// the batch says `left` records remain (see [`RecordIter::unread`] and [`RecordIter::left`]).
pub fn records_resume<'a>(header: &BatchHeader, rest: &'a [u8], left: i32) -> RecordIter<'a> {
    RecordIter {
        cur: Cursor {
            b: rest,
            offset: header.base_offset,
        },
        header: *header,
        left: left.max(0),
    }
}

impl<'a> RecordIter<'a> {
    /// Bytes of the section not read yet.
    pub fn unread(&self) -> usize {
        self.cur.b.len()
    }

    /// Records the batch says are left.
    pub fn left(&self) -> i32 {
        self.left
    }

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
        if !(0..=i64::from(self.header.last_offset_delta)).contains(&off_delta) {
            return Err(c.malformed("offset delta (outside the batch's offsets)"));
        }
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
            // More than the batch counts: a batch that lies about its count (Java refuses it too);
            // what it holds past the count would be skipped silently (probe D: a count of 1 over
            // three records printed one, and the next offsets were jumped over).
            if self.cur.b.is_empty() {
                return None;
            }
            let e = self
                .cur
                .malformed("record count (records past the batch's count)");
            self.cur.b = &[];
            return Some(Err(e));
        }
        self.left -= 1;
        let r = self.decode_one();
        if r.is_err() {
            self.left = 0;
            self.cur.b = &[];
        }
        Some(r)
    }
}

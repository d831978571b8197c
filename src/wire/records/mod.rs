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

//!
//! - [`encode`]: the batch builder (records written in place), restamping, re-batching.
//! - [`decode`]: splitting fetched bytes into batches, checking them, iterating records.

mod decode;
mod encode;

pub use decode::*;
pub use encode::*;

use super::compression::{Compression, CompressionError};

/// Size of the batch header, up to and including `recordCount`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength themselves.
const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;
const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;

/// What a batch's magic byte other than 2 says.
fn magic_text(magic: i8) -> String {
    match magic {
        0 | 1 => format!("record batch has magic {magic}: the message format of Kafka before 0.11 (kept from an old cluster or written by an old client), which shipper does not read (Kafka 4 dropped it too); only magic 2 is supported"),
        _ => format!("record batch has magic {magic}, which no Kafka message format has (only 0, 1 and 2 exist): the bytes are damaged, or not a Kafka batch"),
    }
}

/// A batch that cannot be decoded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the header or the announced length.
    #[error("record batch truncated: {0}")]
    Truncated(&'static str),
    /// Old message formats (magic 0/1) are not supported (Kafka 4 removed them too); any other
    /// magic but 2 is no format at all.
    #[error("{}", magic_text(*.0))]
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
    #[error("record batch at offset {offset}: {error}")]
    Compression {
        /// baseOffset of the batch.
        offset: i64,
        /// The codec's error (in the message, so not a `source` too: it was printed twice).
        error: CompressionError,
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

pub(crate) fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
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
        Compression::from_id((self.attributes & 0x7) as u8).map_err(|error| {
            RecordError::Compression {
                offset: self.base_offset,
                error,
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
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
            .saturating_add(1)
    }
}

#[cfg(test)]
mod tests;

//! One partition's share of a fetch response, decoded lazily: whole batches only, CRC checked,
//! control batches and records before the fetch offset skipped.

use bytes::Bytes;

use crate::wire::records::{self, BatchHeader, Record, RecordError};

/// One partition's share of a fetch response.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Topic index (order of [`Consumer::assign`] calls).
    pub topic: usize,
    /// Partition.
    pub partition: i32,
    /// The offset asked for: records below it are dropped.
    pub fetch_offset: i64,
    /// Raw batches (the last may be truncated).
    pub records: Bytes,
    /// High watermark at the time of the response.
    pub high_watermark: i64,
}

impl Fetched {
    /// Calls `f` for each record at or after the fetch offset, skipping control batches. `scratch` is
    /// reused for decompression.
    pub fn for_each_record(
        &self,
        scratch: &mut Vec<u8>,
        max_decompressed: usize,
        mut f: impl FnMut(&Record<'_>),
    ) -> std::result::Result<(), RecordError> {
        let from = self.fetch_offset;
        self.for_each_batch(scratch, max_decompressed, |h, section| {
            for r in records::records(h, section) {
                let r = r?;
                if r.offset >= from {
                    f(&r);
                }
            }
            Ok(())
        })
    }

    /// Calls `f` for each whole batch reaching past the fetch offset (control batches skipped, CRC
    /// checked) with its header and its records section, decompressed into `scratch` when needed.
    pub fn for_each_batch(
        &self,
        scratch: &mut Vec<u8>,
        max_decompressed: usize,
        mut f: impl FnMut(&BatchHeader, &[u8]) -> std::result::Result<(), RecordError>,
    ) -> std::result::Result<(), RecordError> {
        for b in records::split_batches(&self.records) {
            let (h, batch) = b?;
            if h.next_offset() <= self.fetch_offset || h.is_control() {
                continue;
            }
            records::verify_crc(&h, batch)?;
            let section = records::records_section(&h, batch, scratch, max_decompressed)?;
            f(&h, section)?;
        }
        Ok(())
    }

    /// The offset after the last whole batch in this response, or the fetch offset if there is none.
    pub fn next_offset(&self) -> std::result::Result<i64, RecordError> {
        let mut next = self.fetch_offset;
        for b in records::split_batches(&self.records) {
            let (h, _) = b?;
            next = next.max(h.next_offset());
        }
        Ok(next)
    }
}

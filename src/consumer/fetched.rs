//! One partition's share of a fetch response, decoded lazily: whole batches only, CRC checked,
//! control batches and records before the fetch offset skipped, and (read_committed) the batches of
//! aborted transactions skipped.

use std::collections::HashSet;
use std::ops::ControlFlow;

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
    /// Aborted transactions the response covers, as (producer id, first offset), sorted by first
    /// offset: only a read_committed fetch gets any.
    pub aborted: Vec<(i64, i64)>,
}

impl Fetched {
    /// Calls `f` for each record at or after the fetch offset, skipping control batches. `scratch` is
    /// reused for decompression. Offsets only go up: a record at or below one already given (a batch
    /// repeated or overlapping, offset deltas out of order, from a broken broker) is dropped, as the
    /// Java consumer drops it, not printed twice.
    pub fn for_each_record(
        &self,
        scratch: &mut Vec<u8>,
        max_decompressed: usize,
        mut f: impl FnMut(&Record<'_>),
    ) -> std::result::Result<(), RecordError> {
        self.for_each_record_while(scratch, max_decompressed, |r| {
            f(r);
            ControlFlow::Continue(())
        })
    }

    /// [`Fetched::for_each_record`] until `f` breaks: the batches after are not decompressed.
    pub fn for_each_record_while(
        &self,
        scratch: &mut Vec<u8>,
        max_decompressed: usize,
        mut f: impl FnMut(&Record<'_>) -> ControlFlow<()>,
    ) -> std::result::Result<(), RecordError> {
        let mut from = self.fetch_offset;
        self.batches_while(scratch, max_decompressed, |h, section| {
            for r in records::records(h, section) {
                let r = r?;
                if r.offset >= from {
                    from = r.offset.saturating_add(1);
                    if f(&r).is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
            Ok(ControlFlow::Continue(()))
        })
    }

    /// Calls `f` for each whole batch reaching past the fetch offset and past every batch given before
    /// it (control batches, aborted transactions and repeated batches skipped, CRC checked) with its
    /// header and its records section, decompressed into `scratch` when needed.
    ///
    /// Aborted transactions as the Java consumer drops them: a producer's transactional batches are
    /// skipped from the first offset of its aborted transaction (as the broker lists them) up to the
    /// abort marker that ends it; its batches after the marker are shown again.
    pub fn for_each_batch(
        &self,
        scratch: &mut Vec<u8>,
        max_decompressed: usize,
        mut f: impl FnMut(&BatchHeader, &[u8]) -> std::result::Result<(), RecordError>,
    ) -> std::result::Result<(), RecordError> {
        self.batches_while(scratch, max_decompressed, |h, section| {
            f(h, section).map(ControlFlow::Continue)
        })
    }

    /// [`Fetched::for_each_batch`] until `f` breaks.
    fn batches_while(
        &self,
        scratch: &mut Vec<u8>,
        max_decompressed: usize,
        mut f: impl FnMut(&BatchHeader, &[u8]) -> std::result::Result<ControlFlow<()>, RecordError>,
    ) -> std::result::Result<(), RecordError> {
        let mut pending = self.aborted.iter().peekable();
        // Producers inside an aborted transaction at the current batch: a set, since a hostile
        // response may list millions of aborted transactions and batches.
        let mut aborting: HashSet<i64> = HashSet::new();
        // The offset after the batches given so far.
        let mut done = self.fetch_offset;
        for b in records::split_batches(&self.records) {
            let (h, batch) = b?;
            let last = h.next_offset().saturating_sub(1);
            while let Some(&(producer, _)) = pending.next_if(|(_, first)| *first <= last) {
                aborting.insert(producer);
            }
            if h.is_control() {
                if aborting.contains(&h.producer_id) && is_abort_marker(&h, batch) {
                    aborting.remove(&h.producer_id);
                }
                continue;
            }
            if h.next_offset() <= done
                || (h.is_transactional() && aborting.contains(&h.producer_id))
            {
                continue;
            }
            records::verify_crc(&h, batch)?;
            let section = records::records_section(&h, batch, scratch, max_decompressed)?;
            if f(&h, section)?.is_break() {
                break;
            }
            done = h.next_offset();
        }
        Ok(())
    }

    /// The offset after the last whole batch in this response, or the fetch offset if there is none.
    /// (Skipped batches count: reading goes on after them.)
    pub fn next_offset(&self) -> std::result::Result<i64, RecordError> {
        let mut next = self.fetch_offset;
        for b in records::split_batches(&self.records) {
            let (h, _) = b?;
            next = next.max(h.next_offset());
        }
        Ok(next)
    }
}

/// Whether a control batch is a transaction's abort marker: its record's key is (version: i16, type:
/// i16), type 0 for ABORT, 1 for COMMIT. A marker that cannot be read is not taken for an abort.
fn is_abort_marker(h: &BatchHeader, batch: &[u8]) -> bool {
    if records::verify_crc(h, batch).is_err() {
        return false;
    }
    let mut none = Vec::new();
    let Ok(section) = records::records_section(h, batch, &mut none, 0) else {
        return false;
    };
    match records::records(h, section).next() {
        Some(Ok(r)) => matches!(r.key, Some([_, _, 0, 0, ..])),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record as KpRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::Fetched;

    /// One batch at `offset` of `values` from `producer` (-1: not transactional); a control batch
    /// (`marker` 0 abort, 1 commit) when `marker` is set.
    fn batch(buf: &mut BytesMut, offset: i64, producer: i64, values: &[&str], marker: Option<u8>) {
        let records: Vec<KpRecord> = (0..values.len().max(1))
            .map(|i| KpRecord {
                transactional: producer >= 0,
                control: marker.is_some(),
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: producer,
                producer_epoch: if producer >= 0 { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: offset + i as i64,
                sequence: if producer >= 0 {
                    i as i32
                } else {
                    i as i32 - 1
                },
                timestamp: 1,
                key: marker.map(|t| Bytes::from(vec![0, 0, 0, t])),
                value: match marker {
                    Some(_) => Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
                    None => Some(Bytes::from(values[i].as_bytes().to_vec())),
                },
                headers: Default::default(),
            })
            .collect();
        let opts = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(buf, &records, &opts).unwrap();
    }

    /// A log with an aborted transaction of producer 7 between plain records and committed ones:
    /// 0 plain, 1-2 pid 7 (aborted), 3 pid 8, 4 abort marker of 7, 5 commit marker of 8, 6 pid 7 (its
    /// next transaction, committed), 7 its commit marker, 8 plain.
    fn log() -> Bytes {
        let mut b = BytesMut::new();
        batch(&mut b, 0, -1, &["plain-0"], None);
        batch(&mut b, 1, 7, &["t7-aborted-1", "t7-aborted-2"], None);
        batch(&mut b, 3, 8, &["t8-committed"], None);
        batch(&mut b, 4, 7, &[], Some(0));
        batch(&mut b, 5, 8, &[], Some(1));
        batch(&mut b, 6, 7, &["t7-committed"], None);
        batch(&mut b, 7, 7, &[], Some(1));
        batch(&mut b, 8, -1, &["plain-8"], None);
        b.freeze()
    }

    fn values(fetch_offset: i64, aborted: Vec<(i64, i64)>) -> Vec<String> {
        let f = Fetched {
            topic: 0,
            partition: 0,
            fetch_offset,
            records: log(),
            high_watermark: 9,
            aborted,
        };
        let mut out = Vec::new();
        f.for_each_record(&mut Vec::new(), 1 << 20, |r| {
            out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        })
        .unwrap();
        assert_eq!(f.next_offset().unwrap(), 9, "skipped batches are read past");
        out
    }

    #[test]
    fn aborted_transactions_are_left_out_only_when_the_broker_lists_them() {
        // read_uncommitted: the broker lists none, every record is shown (markers never).
        assert_eq!(
            values(0, vec![]),
            [
                "plain-0",
                "t7-aborted-1",
                "t7-aborted-2",
                "t8-committed",
                "t7-committed",
                "plain-8"
            ]
        );
        // read_committed: producer 7's batches from offset 1 to its abort marker are left out; its
        // next transaction is shown, as are other producers' batches inside the aborted range.
        let committed = ["plain-0", "t8-committed", "t7-committed", "plain-8"];
        assert_eq!(values(0, vec![(7, 1)]), committed);
        // Fetched from inside the aborted transaction: the broker still lists it.
        assert_eq!(values(2, vec![(7, 1)]), committed[1..]);
        // A listed transaction of another producer hides nothing of producer 7.
        assert_eq!(values(0, vec![(9, 1)]).len(), 6);
    }

    /// A broken broker's response repeating a batch, or one overlapping the last, gives each offset
    /// once (every copy was printed, and a group's commit position could move back).
    #[test]
    fn repeated_and_overlapping_batches_give_each_offset_once() {
        let mut b = BytesMut::new();
        batch(&mut b, 0, -1, &["a0", "a1"], None);
        batch(&mut b, 0, -1, &["a0", "a1"], None);
        batch(&mut b, 1, -1, &["b1", "b2", "b3"], None);
        batch(&mut b, 2, -1, &["c2"], None);
        batch(&mut b, 4, -1, &["d4"], None);
        let f = Fetched {
            topic: 0,
            partition: 0,
            fetch_offset: 0,
            records: b.freeze(),
            high_watermark: 5,
            aborted: vec![],
        };
        let mut out = Vec::new();
        f.for_each_record(&mut Vec::new(), 1 << 20, |r| {
            out.push((
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ))
        })
        .unwrap();
        let want = [(0, "a0"), (1, "a1"), (2, "b2"), (3, "b3"), (4, "d4")];
        let want: Vec<(i64, String)> = want.iter().map(|(o, v)| (*o, v.to_string())).collect();
        assert_eq!(out, want);
    }
}

//! One partition's share of a fetch response, decoded lazily: whole batches only, CRC checked,
//! control batches and records before the fetch offset skipped, and (read_committed) the batches of
//! aborted transactions skipped.

use std::collections::HashSet;
use std::ops::ControlFlow;

use bytes::Bytes;

use crate::wire::compression::Compression;
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
        let mut skip = Skipper::new(self.fetch_offset);
        for b in records::split_batches(&self.records) {
            let (h, batch) = b?;
            if skip.skips(&self.aborted, &h, batch) {
                continue;
            }
            records::verify_crc(&h, batch)?;
            let section = records::records_section(&h, batch, scratch, max_decompressed)?;
            if f(&h, section)?.is_break() {
                break;
            }
            skip.done = h.next_offset();
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

/// Which batches a walk over a response leaves out: control batches, aborted transactions (when the
/// broker lists them) and batches wholly below where the walk stands.
#[derive(Debug)]
struct Skipper {
    /// The next of the response's aborted transactions not yet reached.
    next_aborted: usize,
    /// Producers inside an aborted transaction at the current batch: a set, since a hostile
    /// response may list millions of aborted transactions and batches.
    aborting: HashSet<i64>,
    /// The offset after the batches read so far.
    done: i64,
}

impl Skipper {
    fn new(fetch_offset: i64) -> Skipper {
        Skipper {
            next_aborted: 0,
            aborting: HashSet::new(),
            done: fetch_offset,
        }
    }

    /// Whether the batch `h` (bytes `batch`) is left out. Aborted transactions as the Java consumer
    /// drops them: a producer's transactional batches are skipped from the first offset of its aborted
    /// transaction (as the broker lists them) up to the abort marker that ends it; its batches after
    /// the marker are shown again.
    fn skips(&mut self, aborted: &[(i64, i64)], h: &BatchHeader, batch: &[u8]) -> bool {
        let last = h.next_offset().saturating_sub(1);
        while let Some(&(producer, first)) = aborted.get(self.next_aborted) {
            if first > last {
                break;
            }
            self.aborting.insert(producer);
            self.next_aborted += 1;
        }
        if h.is_control() {
            if self.aborting.contains(&h.producer_id) && is_abort_marker(h, batch) {
                self.aborting.remove(&h.producer_id);
            }
            return true;
        }
        h.next_offset() <= self.done
            || (h.is_transactional() && self.aborting.contains(&h.producer_id))
    }
}

/// A walk over one [`Fetched`]'s records that stops and goes on later, across awaits, without
/// checking, decompressing or decoding again what it has read: a web view that sends a response's rows
/// in pieces reads the response once (each piece used to decompress the response again from its first
/// batch: a 64 MiB batch of small records, shown 1 MiB of rows at a time, was decompressed hundreds of
/// times). Records as [`Fetched::for_each_record`] gives them.
#[derive(Debug)]
pub struct Walk {
    /// Byte position in the response of the next batch to open.
    pos: usize,
    skip: Skipper,
    /// The next offset to give: records below it were given (or were below the fetch offset).
    from: i64,
    /// The batch being read.
    open: Option<Open>,
    /// The open batch's records, decompressed.
    scratch: Vec<u8>,
    /// A batch header could not be read: nothing after it can be.
    ended: bool,
}

/// Where a walk stands in its open batch.
#[derive(Debug)]
struct Open {
    header: BatchHeader,
    /// The records section: in the response (`pos` of the batch + header), or the walk's scratch.
    section: Option<std::ops::Range<usize>>,
    /// Bytes of the section read.
    read: usize,
    /// Records the batch says are left.
    left: i32,
}

/// What a [`Walk::run`] stopped at.
#[derive(Debug)]
pub enum WalkStop {
    /// The end of the response.
    End,
    /// The callback said stop: the record it was given is given again by the next run.
    Stopped,
    /// A batch that fails its CRC, does not decompress or holds a malformed record: its records from
    /// the bad one on are left out, and the next run goes on with the next batch.
    BadBatch(RecordError),
    /// A batch header that cannot be read (an old message format, a broken length): nothing after it
    /// can be read.
    Unreadable(RecordError),
}

impl Walk {
    /// A walk over `f` from its fetch offset; `scratch` is memory to decompress into (kept from an
    /// earlier walk, or empty).
    pub fn new(f: &Fetched, scratch: Vec<u8>) -> Walk {
        Walk {
            pos: 0,
            skip: Skipper::new(f.fetch_offset),
            from: f.fetch_offset,
            open: None,
            scratch,
            ended: false,
        }
    }

    /// The walk's decompression memory, to give the next walk.
    pub fn into_scratch(self) -> Vec<u8> {
        self.scratch
    }

    /// Gives `f` the records from where the walk stands until `f` breaks or a batch is bad (see
    /// [`WalkStop`]). `fetched` must be the response the walk was made for.
    pub fn run(
        &mut self,
        fetched: &Fetched,
        max_decompressed: usize,
        mut f: impl FnMut(&Record<'_>) -> ControlFlow<()>,
    ) -> WalkStop {
        let data = &fetched.records[..];
        loop {
            let Some(open) = &mut self.open else {
                if self.ended {
                    return WalkStop::End;
                }
                match self.open_next(fetched, max_decompressed) {
                    Ok(true) => continue,
                    Ok(false) => return WalkStop::End,
                    Err(stop) => return stop,
                }
            };
            let section = match &open.section {
                Some(r) => &data[r.clone()],
                None => &self.scratch[..],
            };
            let rest = &section[open.read..];
            let mut it = records::records_resume(&open.header, rest, open.left);
            let before = it.unread();
            match it.next() {
                None => self.open = None,
                Some(Err(e)) => {
                    self.open = None;
                    return WalkStop::BadBatch(e);
                }
                Some(Ok(r)) => {
                    if r.offset >= self.from {
                        if f(&r).is_break() {
                            return WalkStop::Stopped;
                        }
                        self.from = r.offset.saturating_add(1);
                    }
                    open.read += before - it.unread();
                    open.left = it.left();
                }
            }
        }
    }

    /// Opens the next batch that is not left out: `Ok(false)` at the end of the response.
    fn open_next(&mut self, f: &Fetched, max_decompressed: usize) -> Result<bool, WalkStop> {
        let data = &f.records[..];
        let Some(b) = records::split_batches(&data[self.pos.min(data.len())..]).next() else {
            return Ok(false);
        };
        let (h, batch) = b.map_err(|e| {
            self.ended = true;
            WalkStop::Unreadable(e)
        })?;
        let start = self.pos;
        self.pos += batch.len();
        if self.skip.skips(&f.aborted, &h, batch) {
            return Ok(true);
        }
        self.skip.done = h.next_offset();
        records::verify_crc(&h, batch).map_err(WalkStop::BadBatch)?;
        let section = records::records_section(&h, batch, &mut self.scratch, max_decompressed)
            .map_err(WalkStop::BadBatch)?;
        // An uncompressed section lies in the response itself; a decompressed one in scratch.
        let in_response = matches!(h.compression(), Ok(Compression::None));
        let len = section.len();
        self.open = Some(Open {
            header: h,
            section: in_response.then(|| {
                start + records::BATCH_HEADER_BYTES..start + records::BATCH_HEADER_BYTES + len
            }),
            read: 0,
            left: h.record_count.max(0),
        });
        Ok(true)
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

    /// [`log`] fetched at `fetch_offset`, with the broker listing `aborted`.
    fn fetched_log(fetch_offset: i64, aborted: Vec<(i64, i64)>) -> Fetched {
        Fetched {
            topic: 0,
            partition: 0,
            fetch_offset,
            records: log(),
            high_watermark: 9,
            aborted,
        }
    }

    fn values(fetch_offset: i64, aborted: Vec<(i64, i64)>) -> Vec<String> {
        let f = fetched_log(fetch_offset, aborted);
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

    /// A walk stopped at every record and run again gives what one pass gives, each record once.
    #[test]
    fn a_walk_stopped_anywhere_goes_on_where_it_stood() {
        for (fetch_offset, aborted) in [
            (0, vec![]),
            (0, vec![(7, 1)]),
            (2, vec![(7, 1)]),
            (5, vec![]),
        ] {
            let f = fetched_log(fetch_offset, aborted.clone());
            let mut want = Vec::new();
            f.for_each_record(&mut Vec::new(), 1 << 20, |r| want.push(r.offset))
                .unwrap();
            let mut walk = super::Walk::new(&f, Vec::new());
            let mut got = Vec::new();
            let mut stop = false;
            loop {
                // Every other record offered is refused: the next run offers it again.
                let end = walk.run(&f, 1 << 20, |r| {
                    stop = !stop;
                    if stop {
                        return std::ops::ControlFlow::Break(());
                    }
                    got.push(r.offset);
                    std::ops::ControlFlow::Continue(())
                });
                match end {
                    super::WalkStop::Stopped => {}
                    super::WalkStop::End => break,
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(
                got, want,
                "fetch offset {fetch_offset}, aborted {aborted:?}"
            );
        }
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

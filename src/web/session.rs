//! One browser's view of a topic, streamed as server-sent events: first what lies between the chosen
//! start and the live end (read on its own), then the topic's hub, each record once, filtered here so
//! that only what the view shows crosses the network. Records go out in batches (an event every
//! 100 ms at most, or sooner past 256 KiB), each an array of rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::hub::{live_fetch, Hubs};
use super::row::{write_row, Filter};
use crate::cluster::{Cluster, TopicMeta};
use crate::consumer::{list_offsets_as, Consumer, Fetched, StartOffset, Walk, WalkStop, LATEST};
use crate::wire::records::RecordError;

/// A batch is sent when it reaches this size, or after [`FLUSH_EVERY`].
const BATCH_BYTES: usize = 256 * 1024;
/// Rows of one fetched response are added up to this much, then sent before the rest is added: a
/// response of highly compressed records must not become tens of MB of JSON per view.
const BATCH_CAP: usize = 1024 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The largest decompressed batch a view reads.
const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;
/// Decompression memory a view keeps between responses; a larger batch's is freed once read.
const SCRATCH_KEEP: usize = 1024 * 1024;
/// A write the browser does not take within this long ends the view.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Offsets by partition.
type Offsets = BTreeMap<i32, i64>;

/// What one view asks for.
pub struct View {
    /// The topic.
    pub topic: String,
    /// Where to start.
    pub start: StartOffset,
    /// Which records.
    pub filter: Filter,
}

impl View {
    /// The topic's partitions this view shows.
    pub fn partitions(&self, meta: &crate::cluster::TopicMeta) -> Vec<i32> {
        meta.partitions
            .iter()
            .map(|p| p.id)
            .filter(|p| self.filter.wants_partition(*p))
            .collect()
    }
}

/// Builds the events of a view and writes them.
struct Out<'a, S> {
    s: &'a mut S,
    batch: Vec<u8>,
    rows: usize,
    last_flush: Instant,
    /// Decompression memory kept between responses (up to [`SCRATCH_KEEP`]).
    scratch: Vec<u8>,
    /// A `failed` event was sent.
    ended: bool,
}

/// Where [`Out::add_until`] stopped.
enum Step {
    /// At the end of the response or of the range.
    Done,
    /// At the batch cap: send it and go on.
    Capped,
    /// At a batch that does not check or decode: the walk goes on after it.
    Skipped(RecordError),
    /// At a batch header that cannot be read: nothing after it can be.
    Unreadable(RecordError),
}

impl<S: AsyncWrite + Unpin> Out<'_, S> {
    async fn event(&mut self, name: &str, data: &str) -> std::io::Result<()> {
        let e = format!("event: {name}\ndata: {data}\n\n");
        self.write(e.as_bytes()).await
    }

    async fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.s.write_all(b)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the browser does not read",
            )),
        }
    }

    /// Adds the records of `f` in `from..end` that the filter wants, from where `walk` stands until
    /// the batch holds [`BATCH_CAP`] (then send the batch and add again: the walk goes on from the
    /// record it stopped at), a batch is bad, or the end; `next` is moved past each record read.
    fn add_until(
        &mut self,
        walk: &mut Walk,
        f: &Fetched,
        (from, end): (i64, i64),
        filter: &Filter,
        next: &mut i64,
    ) -> Step {
        let mut capped = false;
        let (batch, rows) = (&mut self.batch, &mut self.rows);
        // Stopping at the cap or the end stops the walk: the rest of the answer is not decompressed
        // now (it is, from where the walk stands, at the next call).
        let stop = walk.run(f, MAX_DECOMPRESSED, |r| {
            if r.offset < from {
                return std::ops::ControlFlow::Continue(());
            }
            if r.offset >= end {
                return std::ops::ControlFlow::Break(());
            }
            if batch.len() >= BATCH_CAP {
                capped = true;
                return std::ops::ControlFlow::Break(());
            }
            *next = r.offset + 1;
            if filter.wants(r) {
                batch.push(if *rows == 0 { b'[' } else { b',' });
                let _ = write_row(batch, f.partition, r);
                *rows += 1;
            }
            std::ops::ControlFlow::Continue(())
        });
        match stop {
            WalkStop::Stopped if capped => Step::Capped,
            WalkStop::Stopped | WalkStop::End => Step::Done,
            WalkStop::BadBatch(e) => Step::Skipped(e),
            WalkStop::Unreadable(e) => Step::Unreadable(e),
        }
    }

    /// Adds all of `f` in `from..end` (see [`Out::add_until`]), sending the batch each time it
    /// reaches the cap; returns the next offset. A batch that does not check or decode is skipped
    /// and the browser told (a `skipped` event): a view shows what it can, `consume` is the tool that
    /// stops at it. One whose header cannot be read (an old message format) ends the view with a
    /// `failed` event, as nothing after it can be read.
    async fn add_all(
        &mut self,
        f: &Fetched,
        from: i64,
        end: i64,
        filter: &Filter,
    ) -> std::io::Result<i64> {
        let mut walk = Walk::new(f, std::mem::take(&mut self.scratch));
        let mut next = from;
        let res = loop {
            match self.add_until(&mut walk, f, (from, end), filter, &mut next) {
                Step::Capped => self.flush(true).await?,
                Step::Done => {
                    self.flush(false).await?;
                    // Past the batches (control records, compaction gaps), never past the end.
                    break Ok(next.max(f.next_offset().unwrap_or(next)).min(end));
                }
                Step::Skipped(e) => {
                    crate::log::debug(format_args!("web: partition {}: {e}", f.partition));
                    self.flush(true).await?;
                    let why = format!(
                        "partition {}: {e}; shown from the next batch on",
                        f.partition
                    );
                    self.event("skipped", &crate::escape::json_quoted(&why))
                        .await?;
                }
                Step::Unreadable(e) => {
                    self.flush(true).await?;
                    let why = format!(
                        "partition {}: {e}; nothing after offset {next} can be shown",
                        f.partition
                    );
                    self.fail(&why).await?;
                    break Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
                }
            }
        };
        // The memory of a large batch is not kept for the rest of the view (up to 64 MiB each, and
        // 32 views).
        let mut scratch = walk.into_scratch();
        if scratch.capacity() <= SCRATCH_KEEP {
            scratch.clear();
            self.scratch = scratch;
        }
        res
    }

    /// Ends the view with a `failed` event telling `why`, once.
    async fn fail(&mut self, why: &str) -> std::io::Result<()> {
        if std::mem::replace(&mut self.ended, true) {
            return Ok(());
        }
        self.event("failed", &crate::escape::json_quoted(why)).await
    }

    /// Sends the batch if it is due (or `force`).
    async fn flush(&mut self, force: bool) -> std::io::Result<()> {
        let due = self.batch.len() >= BATCH_BYTES || self.last_flush.elapsed() >= FLUSH_EVERY;
        if self.rows == 0 || !(force || due) {
            return Ok(());
        }
        self.batch.push(b']');
        let mut e = Vec::with_capacity(self.batch.len() + 16);
        e.extend_from_slice(b"data: ");
        e.extend_from_slice(&self.batch);
        e.extend_from_slice(b"\n\n");
        self.batch.clear();
        self.rows = 0;
        self.last_flush = Instant::now();
        self.write(&e).await
    }
}

/// Streams `view` to `s` until the browser goes away (it closes its side of `peer`, or stops
/// reading), or the hub drops it. `meta` is the topic's metadata as of the view's opening.
pub async fn stream<S: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
    s: &mut S,
    peer: &mut R,
    cluster: &Arc<Cluster>,
    hubs: &Hubs,
    view: View,
    meta: Arc<TopicMeta>,
) -> std::io::Result<()> {
    // A browser that closed the view (a reload, Apply, a closed tab) frees its slot now, whatever
    // the view is doing (catching up, live and quiet), not when a write finally fails.
    let gone = async {
        let mut discard = [0u8; 512];
        while matches!(peer.read(&mut discard).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        r = serve(s, cluster, hubs, view, meta) => r,
        _ = gone => Ok(()),
    }
}

async fn serve<S: AsyncWrite + Unpin>(
    s: &mut S,
    cluster: &Arc<Cluster>,
    hubs: &Hubs,
    view: View,
    meta: Arc<TopicMeta>,
) -> std::io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n";
    let mut out = Out {
        s,
        batch: Vec::new(),
        rows: 0,
        last_flush: Instant::now(),
        scratch: Vec::new(),
        ended: false,
    };
    out.write(head.as_bytes()).await?;
    let fail = |e: crate::error::Error| std::io::Error::other(e.to_string());
    // Up to the end as of now, on our own; then from the hub, whatever it is past that.
    let mut next = match catch_up(&mut out, cluster, &view, &meta, None).await {
        Ok(n) => n,
        Err(e) => return out.fail(&e.to_string()).await,
    };
    let mut sub = hubs.subscribe(&view.topic, &meta).await.map_err(fail)?;
    let behind: BTreeMap<i32, i64> = sub
        .next
        .iter()
        .filter(|(p, h)| view.filter.wants_partition(**p) && next.get(p).is_some_and(|n| n < *h))
        .map(|(p, h)| (*p, *h))
        .collect();
    if !behind.is_empty() {
        let more = catch_up(&mut out, cluster, &view, &meta, Some((&next, &behind)))
            .await
            .map_err(fail)?;
        next.extend(more);
    }
    out.event("live", "{}").await?;
    let mut hub_at = sub.next.clone();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut ping = Instant::now();
    loop {
        tokio::select! {
            f = sub.rx.recv() => {
                let Some(f) = f else {
                    let why = if sub.dropped.load(Ordering::Relaxed) {
                        "this view fell too far behind the topic (the browser or the network is too slow for its rate); narrow the filter and reconnect"
                    } else {
                        "the live read of the topic stopped; reconnect"
                    };
                    out.flush(true).await?;
                    return out.event("bye", &crate::escape::json_quoted(why)).await;
                };
                sub.took(&f);
                if !view.filter.wants_partition(f.partition) {
                    continue;
                }
                let from = new_from(&mut next, &mut hub_at, f.partition, f.fetch_offset);
                let n = out.add_all(&f, from, i64::MAX, &view.filter).await?;
                next.insert(f.partition, n.max(from));
            }
            _ = tick.tick() => {
                out.flush(false).await?;
                if ping.elapsed() > Duration::from_secs(15) {
                    out.write(b": ping\n\n").await?;
                    ping = Instant::now();
                }
            }
        }
    }
}

/// The offset from which a hub response for `partition`, fetched at `fetch_offset`, is new to the
/// view (`next`: where the view stands; `hub_at`: where the hub's last response started). Records
/// below the view's position are ones it has shown (the hub may lag behind a catch-up), except when
/// the hub's read went back: the topic was deleted and re-created (or its records deleted) and the
/// hub was reset to the new start; the view follows it there, or the new records below its old
/// position would never show.
fn new_from(
    next: &mut BTreeMap<i32, i64>,
    hub_at: &mut BTreeMap<i32, i64>,
    partition: i32,
    fetch_offset: i64,
) -> i64 {
    if hub_at
        .insert(partition, fetch_offset)
        .is_some_and(|was| fetch_offset < was)
    {
        next.insert(partition, fetch_offset);
    }
    next.get(&partition).copied().unwrap_or(0)
}

/// Reads the view's partitions from their start (or from `range`'s starts) up to the end as of now
/// (or `range`'s ends); returns each partition's next offset.
async fn catch_up<S: AsyncWrite + Unpin>(
    out: &mut Out<'_, S>,
    cluster: &Arc<Cluster>,
    view: &View,
    meta: &Arc<TopicMeta>,
    range: Option<(&Offsets, &Offsets)>,
) -> crate::error::Result<BTreeMap<i32, i64>> {
    let parts: Vec<i32> = view
        .partitions(meta)
        .into_iter()
        .filter(|p| range.is_none_or(|(_, ends)| ends.contains_key(p)))
        .collect();
    // Smaller responses than the live read's: up to 32 views catch up at once, each at a browser's
    // pace, and each holds two responses (one decoded while the next arrives).
    let fetch = crate::consumer::FetchConfig {
        max_bytes: 1024 * 1024,
        partition_max_bytes: 512 * 1024,
        ..live_fetch()
    };
    let mut consumer = Consumer::new(cluster.clone(), fetch).quiet();
    let from: HashMap<i32, i64> = range
        .map(|(starts, _)| starts.iter().map(|(p, o)| (*p, *o)).collect())
        .unwrap_or_default();
    consumer
        .assign_from(meta.clone(), &parts, &from, view.start)
        .await?;
    let ends: BTreeMap<i32, i64> = match range {
        Some((_, ends)) => ends.clone(),
        None => list_offsets_as(cluster, &view.topic, &parts, LATEST, true)
            .await?
            .into_iter()
            .collect(),
    };
    let mut next: BTreeMap<i32, i64> = consumer
        .positions()
        .into_iter()
        .map(|(_, p, o)| (p, o))
        .collect();
    loop {
        let done: Vec<i32> = next
            .iter()
            .filter(|(p, o)| **o >= ends.get(p).copied().unwrap_or(0))
            .map(|(p, _)| *p)
            .collect();
        if !done.is_empty() {
            consumer.unassign(&view.topic, &done);
        }
        if !consumer.has_partitions() {
            break;
        }
        for f in consumer.poll().await? {
            let end = ends.get(&f.partition).copied().unwrap_or(0);
            let from = next.get(&f.partition).copied().unwrap_or(0);
            let n = out
                .add_all(&f, from, end, &view.filter)
                .await
                .map_err(|e| crate::error::Error::Incomplete {
                    api: "Fetch",
                    target: crate::error::Target::Topic(format!(
                        "{} (browser gone: {e})",
                        view.topic
                    )),
                    what: "the view",
                })?;
            next.insert(f.partition, n);
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};

    use crate::wire::compression::{Compression, Compressor};
    use crate::wire::records::{BatchBuilder, ProducerStamp};

    /// Appends one batch of `values` at offset `base`.
    fn batch(buf: &mut BytesMut, base: i64, values: &[&[u8]], codec: Compression) {
        let start = buf.len();
        let mut b = BatchBuilder::begin(buf, 1);
        for v in values {
            b.push(buf, 1, None, Some(v), &[]);
        }
        b.finish(
            buf,
            codec,
            None,
            ProducerStamp::NONE,
            &mut Compressor::default(),
        )
        .unwrap();
        // The base offset is outside the CRC: the broker sets it.
        buf[start..start + 8].copy_from_slice(&base.to_be_bytes());
    }

    /// What a view sends for `records` (partition 0, fetched at 0): the events' names and data, the
    /// offsets of the rows in order, the result, and the decompression memory the view kept.
    async fn view(
        records: Bytes,
    ) -> (Vec<(String, String)>, Vec<i64>, std::io::Result<i64>, usize) {
        let f = Fetched {
            topic: 0,
            partition: 0,
            fetch_offset: 0,
            records,
            high_watermark: 0,
            aborted: vec![],
        };
        let mut sent = Vec::new();
        let mut out = Out {
            s: &mut sent,
            batch: Vec::new(),
            rows: 0,
            last_flush: Instant::now(),
            scratch: Vec::new(),
            ended: false,
        };
        let res = out.add_all(&f, 0, i64::MAX, &Filter::default()).await;
        out.flush(true).await.unwrap();
        if res.is_err() {
            // A second failure is not told again.
            out.fail("again").await.unwrap();
        }
        let kept = out.scratch.capacity();
        let text = String::from_utf8(sent).unwrap();
        let (mut events, mut offsets) = (Vec::new(), Vec::new());
        for e in text.split("\n\n").filter(|e| !e.is_empty()) {
            let name = e.strip_prefix("event: ").and_then(|e| e.split_once('\n'));
            let (name, data) = match name {
                Some((n, rest)) => (n.to_string(), rest.strip_prefix("data: ").unwrap()),
                None => ("rows".to_string(), e.strip_prefix("data: ").unwrap()),
            };
            if name == "rows" {
                offsets.extend(
                    data.split("\"o\":")
                        .skip(1)
                        .map(|o| o.split(',').next().unwrap().parse::<i64>().unwrap()),
                );
            } else {
                events.push((name, data.to_string()));
            }
        }
        (events, offsets, res, kept)
    }

    fn three_batches() -> BytesMut {
        let mut b = BytesMut::new();
        batch(&mut b, 0, &[b"a0", b"a1", b"a2"], Compression::None);
        batch(&mut b, 3, &[b"b3", b"b4", b"b5"], Compression::None);
        batch(&mut b, 6, &[b"c6", b"c7", b"c8"], Compression::None);
        b
    }

    #[tokio::test]
    async fn a_batch_that_does_not_check_is_skipped_and_the_browser_told() {
        let mut b = three_batches();
        let at = b.windows(2).position(|w| w == b"b4").unwrap();
        b[at] = b'x';
        let (events, offsets, res, _) = view(b.freeze()).await;
        assert_eq!(offsets, [0, 1, 2, 6, 7, 8]);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, "skipped");
        assert!(
            events[0].1.contains("partition 0") && events[0].1.contains("offset 3"),
            "{events:?}"
        );
        assert_eq!(res.unwrap(), 9);
    }

    #[tokio::test]
    async fn a_batch_header_that_cannot_be_read_ends_the_view_once() {
        let mut b = three_batches();
        // The second batch in the old message format (magic 1).
        let second = 12 + i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
        b[second + 16] = 1;
        let (events, offsets, res, _) = view(b.freeze()).await;
        assert_eq!(offsets, [0, 1, 2]);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, "failed");
        assert!(events[0].1.contains("after offset 3"), "{events:?}");
        assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_large_compressed_batch_is_sent_in_pieces_each_row_once_and_its_memory_freed() {
        // 48 rows of 512 KiB: 24 MiB decompressed, sent in pieces of at most BATCH_CAP.
        let value = vec![b'x'; 512 * 1024];
        let values: Vec<&[u8]> = (0..48).map(|_| &value[..]).collect();
        let mut b = BytesMut::new();
        batch(&mut b, 0, &values[..10], Compression::Zstd);
        batch(&mut b, 10, &values[10..], Compression::Zstd);
        let (events, offsets, res, kept) = view(b.freeze()).await;
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(offsets, (0..48).collect::<Vec<i64>>());
        assert_eq!(res.unwrap(), 48);
        assert!(kept <= SCRATCH_KEEP, "kept {kept} bytes");
    }

    #[test]
    fn a_hub_read_that_goes_back_takes_the_view_back_with_it() {
        // The view caught up to 500 on partition 0; the hub stood at 480 (lagging).
        let mut next = BTreeMap::from([(0, 500), (1, 7)]);
        let mut hub_at = BTreeMap::from([(0, 480), (1, 7)]);
        // Lagging responses: what the view has shown is not shown again.
        assert_eq!(new_from(&mut next, &mut hub_at, 0, 480), 500);
        next.insert(0, 510);
        assert_eq!(new_from(&mut next, &mut hub_at, 0, 505), 510);
        // The topic is re-created: the hub is reset to 0; the new records are shown from there.
        assert_eq!(new_from(&mut next, &mut hub_at, 0, 0), 0);
        next.insert(0, 3);
        assert_eq!(new_from(&mut next, &mut hub_at, 0, 3), 3);
        // The other partition is untouched.
        assert_eq!(new_from(&mut next, &mut hub_at, 1, 7), 7);
    }
}

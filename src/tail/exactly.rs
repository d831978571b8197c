//! Exactly-once from file to Kafka across crashes (`tail --exactly-once`).
//!
//! Kafka is the record of what it holds. Each file's records go to one partition (its key's, else its
//! identity's), in order, through the idempotent producer — one batch in flight per partition, so what
//! a partition holds of a file is always a prefix of what was sent. A record whose position in its file
//! does not follow from the record before it in its batch (the first of a file in each batch, and any
//! record after skipped bytes) carries a [`POSITION_HEADER`] `<source>@<end>`; the records after it
//! continue at `end + len(value) + 1`. So reading a batch back tells, for each file in it, the byte
//! offset its last record ended at.
//!
//! On start, before any line of a topic is sent, each partition is read from the checkpoint's mark
//! (the base offset of the last batch acknowledged when the checkpoint was written; with no mark — the
//! checkpoint was lost — from the birth of the oldest file waiting for the topic, or the start of the
//! partition), to its end; the last position found for each file wins over the checkpoint's when it is
//! further (behind it, the lines between were acknowledged to another topic). A batch
//! the dead run had appended but that was not committed yet is invisible to that read, so each leader
//! is asked for the last run's producer (DescribeProducers) and reading goes on until every batch the
//! broker appended for it is visible (at most [`SETTLE_LIMIT`]). Each run takes a fresh producer id:
//! reusing one, a rolled-back checkpoint brings back an old epoch that the broker refuses.
//!
//! (Over 500 lines with its tests: the header format, its reading back and the fake-broker test of
//! the settle wait are one contract, tested next to the code.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{DescribeProducersRequest, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};
use tokio::time::Instant;

use crate::cluster::{Cluster, TopicMeta};
use crate::consumer::{Consumer, FetchConfig, StartOffset};
use crate::error::{code, Error, Target};
use crate::producer::POSITION_HEADER;
use crate::wire::records::{self, RecordError};

use super::checkpoint::{decode_path, encode_path};
use super::identity::FileId;

/// What the checkpoint keeps for exactly-once besides file offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EoState {
    /// The producer id and epoch of the run that wrote the checkpoint.
    pub producer: Option<(i64, i16)>,
    /// Per (topic, partition), where reading back starts: the base offset of the last batch
    /// acknowledged (or the end of the partition when this run started, before any).
    pub marks: BTreeMap<(String, i32), i64>,
}

impl EoState {
    /// Appends the checkpoint lines (`eo-producer`, `eo-mark`).
    pub fn render_into(&self, text: &mut String) {
        if let Some((id, epoch)) = self.producer {
            text.push_str(&format!("eo-producer {id} {epoch}\n"));
        }
        for ((topic, p), o) in &self.marks {
            text.push_str(&format!(
                "eo-mark {} {p} {o}\n",
                encode_path(std::path::Path::new(topic))
            ));
        }
    }

    /// Takes one checkpoint line starting with `eo-`; `false` when it is malformed.
    pub fn parse_line(&mut self, line: &str) -> bool {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["eo-producer", id, epoch] => match (id.parse::<i64>(), epoch.parse::<i16>()) {
                (Ok(id), Ok(epoch)) if id >= 0 && epoch >= 0 => {
                    self.producer = Some((id, epoch));
                    true
                }
                _ => false,
            },
            ["eo-mark", topic, p, o] => {
                let topic = decode_path(topic).map(|t| t.to_string_lossy().into_owned());
                match (topic, p.parse::<i32>(), o.parse::<i64>()) {
                    (Some(t), Ok(p), Ok(o)) if p >= 0 && o >= 0 => {
                        self.marks.insert((t, p), o);
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// Notes a batch acknowledged at `base_offset` of `topic`/`partition`.
    pub fn acked(&mut self, topic: &str, partition: i32, base_offset: i64) {
        if base_offset < 0 {
            return;
        }
        let m = self
            .marks
            .entry((topic.to_string(), partition))
            .or_insert(base_offset);
        *m = (*m).max(base_offset);
    }
}

/// The identity of a file as its position headers name it: `<host>:<dev>:<ino>:<birth ns or 0>`.
pub fn source_id(host: &str, id: &FileId) -> Arc<str> {
    Arc::from(format!(
        "{host}:{}:{}:{}",
        id.dev,
        id.ino,
        id.born.unwrap_or(0)
    ))
}

/// Parses a position header value: source, end, whether an over-long line's rest is skipped.
pub fn parse_position(v: &[u8]) -> Option<(&str, u64, bool)> {
    let v = std::str::from_utf8(v).ok()?;
    let (source, end) = v.rsplit_once('@')?;
    let (end, skipping) = match end.strip_suffix('+') {
        Some(e) => (e, true),
        None => (end, false),
    };
    Some((source, end.parse().ok()?, skipping))
}

/// Where each source stands in what was read back. Within a partition the last position wins (a file
/// truncated and shipped again from its start has a smaller position later); across partitions (a
/// file whose partition changed: more partitions, another key) the batch written last wins.
#[derive(Debug, Default)]
pub struct Positions {
    /// Per source: partition, batch timestamp, byte offset after its last record in Kafka, and
    /// whether an over-long line's rest is being skipped there.
    found: HashMap<String, (i32, i64, u64, bool)>,
    /// Only sources starting with this (this host's) are kept.
    prefix: String,
}

impl Positions {
    /// Positions of sources whose identity starts with `prefix` (`<host>:`).
    pub fn new(prefix: String) -> Self {
        Positions {
            found: HashMap::new(),
            prefix,
        }
    }

    /// Takes one batch of `partition` (with its largest timestamp), its records in order: each as its
    /// value length and position header, if any. Returns whether it held a position of ours.
    pub fn batch<'a>(
        &mut self,
        partition: i32,
        timestamp: i64,
        records: impl Iterator<Item = (usize, Option<&'a [u8]>)>,
    ) -> bool {
        let mut last: HashMap<String, (u64, bool)> = HashMap::new();
        let mut current: Option<(String, u64)> = None;
        for (len, header) in records {
            match header.and_then(parse_position) {
                Some((source, end, skipping)) => {
                    if source.starts_with(&self.prefix) {
                        last.insert(source.to_string(), (end, skipping));
                        current = Some((source.to_string(), end));
                    } else {
                        current = None;
                    }
                }
                None => {
                    if let Some((source, end)) = &mut current {
                        // A foreign end near u64::MAX would wrap to a small position: the source
                        // is known no further.
                        match end.checked_add(len as u64 + 1) {
                            Some(e) => {
                                *end = e;
                                last.insert(source.clone(), (e, false));
                            }
                            None => current = None,
                        }
                    }
                }
            }
        }
        let ours = !last.is_empty();
        for (source, (end, skipping)) in last {
            let replace = self
                .found
                .get(&source)
                .is_none_or(|&(p, ts, _, _)| p == partition || timestamp >= ts);
            if replace {
                self.found
                    .insert(source, (partition, timestamp, end, skipping));
            }
        }
        ours
    }

    /// How many sources were found.
    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Per source: byte offset after its last record in Kafka, and whether an over-long line's rest is
    /// being skipped there.
    pub fn into_ends(self) -> HashMap<String, (u64, bool)> {
        self.found
            .into_iter()
            .map(|(s, (_, _, end, skipping))| (s, (end, skipping)))
            .collect()
    }
}

/// What reading a topic back found.
#[derive(Debug)]
pub struct ReadBack {
    /// The topic.
    pub topic: String,
    /// Where each of this host's sources stands in Kafka.
    pub positions: Positions,
    /// Where each partition ended when read (the marks of this run until a batch is acknowledged).
    pub ends: Vec<(i32, i64)>,
    /// Records read.
    pub records: u64,
}

/// How long reading back waits for a batch of the last run that the broker has appended but not yet
/// committed (acks=all: waiting for followers) to become visible.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);

/// Reads `topic` back: each partition from its mark in `from`, else from the first record at or after
/// `since_ms` (else its start), to its end. With `previous` (the last run's producer id), it then asks
/// each leader for that producer's last sequence (DescribeProducers) and keeps reading until every
/// batch the broker appended for it is visible — a batch appended but not yet committed when the last
/// run died would otherwise be missed here and sent again.
pub async fn read_back(
    cluster: Arc<Cluster>,
    topic: String,
    from: HashMap<i32, i64>,
    since_ms: Option<i64>,
    host: String,
    previous: Option<i64>,
) -> Result<ReadBack, Error> {
    let mut meta = cluster.topic(&topic, true).await?;
    let start = since_ms.map_or(StartOffset::Beginning, StartOffset::Timestamp);
    let mut r = Reading {
        positions: Positions::new(format!("{host}:")),
        seen: HashMap::new(),
        previous,
        latest: None,
        scratch: Vec::new(),
        records: 0,
    };
    let mut at = from;
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        at = r.read_to_end(&cluster, &meta, &topic, &at, start).await?;
        // With no checkpoint, the producer of the latest batch holding our positions.
        let Some(pid) = previous.or(r.latest.map(|l| l.1)) else {
            break;
        };
        let pending = r.unsettled(&cluster, &topic, &meta, pid, since_ms).await;
        match &pending {
            Ok(p) if p.is_empty() => break,
            Err(e) if !e.is_retriable() => {
                // An old broker (DescribeProducers is Kafka 2.8+) or no permission: said, not waited on.
                crate::log::warn(format_args!(
                    "exactly-once: topic '{}': cannot ask the leaders for the last run's batches ({e}); a batch of it not yet committed could be sent twice",
                    crate::escape::Esc::str(&topic)
                ));
                break;
            }
            _ if Instant::now() >= deadline => {
                let why = match pending {
                    Ok(p) => format!("partitions {p:?} hold a batch of the last run that is appended but still not committed"),
                    Err(e) => format!("cannot ask the leaders for the last run's batches ({e})"),
                };
                crate::log::warn(format_args!(
                    "exactly-once: topic '{}': {why} after {}s; going on (those lines may be sent twice)",
                    crate::escape::Esc::str(&topic),
                    SETTLE_LIMIT.as_secs()
                ));
                break;
            }
            Ok(p) => crate::log::debug(format_args!(
                "exactly-once: waiting for the last run's batches in partitions {p:?} to be committed"
            )),
            Err(e) => {
                crate::log::debug(format_args!("exactly-once: DescribeProducers: {e}"));
                let g = cluster.generation();
                let _ = cluster
                    .refresh(&topic, g, Some(Instant::now() + Duration::from_secs(5)))
                    .await;
                meta = cluster.cached_topic(&topic).unwrap_or(meta);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(ReadBack {
        topic,
        positions: r.positions,
        ends: at.into_iter().collect(),
        records: r.records,
    })
}

/// The state of one read-back.
struct Reading {
    positions: Positions,
    /// Per (partition, producer id), the last sequence seen of batches holding our positions (and of
    /// every batch of the previous producer).
    seen: HashMap<(i32, i64), i32>,
    previous: Option<i64>,
    /// The producer of the latest batch holding our positions (timestamp, id): with no checkpoint, the
    /// last run's producer is this one.
    latest: Option<(i64, i64)>,
    scratch: Vec<u8>,
    records: u64,
}

impl Reading {
    /// Reads every partition from `at` (else `start`) to its end as of now; returns where each ended.
    async fn read_to_end(
        &mut self,
        cluster: &Arc<Cluster>,
        meta: &Arc<TopicMeta>,
        topic: &str,
        at: &HashMap<i32, i64>,
        start: StartOffset,
    ) -> Result<HashMap<i32, i64>, Error> {
        // No long polls: a fetch held at the end of a partition would hold up, for its whole wait, the
        // Produce requests queued behind it on the same broker connection.
        let fetch = FetchConfig {
            max_wait_ms: 0,
            ..FetchConfig::default()
        };
        let mut consumer = Consumer::new(cluster.clone(), fetch);
        consumer.assign_from(meta.clone(), &[], at, start).await?;
        while !consumer.at_end_of_start() {
            for f in consumer.poll().await? {
                self.take(topic, &f)?;
            }
        }
        Ok(consumer
            .positions()
            .into_iter()
            .map(|(_, p, o)| (p, o))
            .collect())
    }

    /// The partitions whose leader has appended a batch of producer `pid` that was not read back (not
    /// committed yet). With no checkpoint (`previous` unknown), a batch older than where reading
    /// began (`since_ms`) is not counted: it is simply before the window.
    async fn unsettled(
        &self,
        cluster: &Cluster,
        topic: &str,
        meta: &TopicMeta,
        pid: i64,
        since_ms: Option<i64>,
    ) -> Result<Vec<i32>, Error> {
        let broker = last_sequences(cluster, topic, meta, pid).await?;
        Ok(broker
            .into_iter()
            .filter(|(p, (seq, ts))| {
                let before = self.previous.is_none() && since_ms.is_some_and(|s| *ts < s);
                !before && self.seen.get(&(*p, pid)).is_none_or(|s| s < seq)
            })
            .map(|(p, _)| p)
            .collect())
    }

    fn take(&mut self, topic: &str, f: &crate::consumer::Fetched) -> Result<(), Error> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = f.for_each_batch(&mut scratch, 256 << 20, |h, section| {
            let last_seq = h.base_sequence.wrapping_add(h.record_count.wrapping_sub(1));
            if Some(h.producer_id) == self.previous && h.base_sequence >= 0 {
                self.seen.insert((f.partition, h.producer_id), last_seq);
            }
            // Whole batches: a position header opens the batch, before any fetch offset inside it.
            let mut rs = Vec::new();
            for r in records::records(h, section) {
                let r = r?;
                let pos = r
                    .headers()
                    .find(|(k, _)| *k == POSITION_HEADER.as_bytes())
                    .and_then(|(_, v)| v);
                rs.push((r.value.map_or(0, <[u8]>::len), pos));
            }
            self.records += rs.len() as u64;
            if self
                .positions
                .batch(f.partition, h.max_timestamp, rs.into_iter())
                && h.producer_id >= 0
                && h.base_sequence >= 0
            {
                self.seen.insert((f.partition, h.producer_id), last_seq);
                if self.latest.is_none_or(|(ts, _)| h.max_timestamp >= ts) {
                    self.latest = Some((h.max_timestamp, h.producer_id));
                }
            }
            Ok(())
        });
        self.scratch = scratch;
        r.map_err(|e| bad(topic, f.partition, e))
    }
}

/// DescribeProducers: the last sequence (and its batch's timestamp) each partition's leader has
/// appended for producer `pid` (partitions where it has none are left out).
async fn last_sequences(
    cluster: &Cluster,
    topic: &str,
    meta: &TopicMeta,
    pid: i64,
) -> Result<HashMap<i32, (i32, i64)>, Error> {
    let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in &meta.partitions {
        by_leader.entry(meta.leader(p.id)).or_default().push(p.id);
    }
    let deadline = cluster.options().deadline();
    let mut out = HashMap::new();
    for (leader, parts) in by_leader {
        if leader < 0 {
            return Err(Error::NoLeader {
                topic: topic.into(),
                partition: parts[0],
            });
        }
        let conn = cluster.broker(leader, deadline).await?;
        let version = conn.version::<DescribeProducersRequest>(VersionRange { min: 0, max: 0 })?;
        let mut t = TopicRequest::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.partition_indexes = parts.clone();
        let mut req = DescribeProducersRequest::default();
        req.topics = vec![t];
        let resp = conn
            .call(&req, version, conn.request_deadline(deadline))
            .await?;
        for t in resp.topics.iter().filter(|t| t.name.0.as_str() == topic) {
            for p in t
                .partitions
                .iter()
                .filter(|p| parts.contains(&p.partition_index))
            {
                if let Some(c) = code(p.error_code) {
                    return Err(Error::Kafka {
                        api: "DescribeProducers",
                        target: Target::Partition(topic.into(), p.partition_index),
                        code: c,
                    });
                }
                if let Some(s) = p.active_producers.iter().find(|s| s.producer_id.0 == pid) {
                    out.insert(p.partition_index, (s.last_sequence, s.last_timestamp));
                }
            }
        }
    }
    Ok(out)
}

fn bad(topic: &str, partition: i32, e: RecordError) -> Error {
    Error::Records {
        topic: topic.to_string(),
        partition,
        error: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_headers_and_continuations() {
        let mut p = Positions::new("h:".into());
        let a: &[u8] = b"h:1:2:3@10";
        let b: &[u8] = b"h:1:9:3@100+";
        let other: &[u8] = b"x:1:2:3@5000";
        // a: record ending at 10, then two continuing records (5 and 0 bytes), then b, then a record of
        // another host with one continuation that must not be counted for anyone.
        p.batch(
            0,
            1,
            [
                (9, Some(a)),
                (5, None),
                (0, None),
                (100, Some(b)),
                (3, Some(other)),
                (4, None),
            ]
            .into_iter(),
        );
        assert_eq!(p.len(), 2);
        // A later batch of a truncated file: its smaller position wins, it is later.
        let again: &[u8] = b"h:1:2:3@4";
        assert!(p.batch(0, 1, [(3, Some(again))].into_iter()));
        // Records without a header at the start of a batch belong to no one (another producer).
        assert!(!p.batch(0, 2, [(3, None)].into_iter()));
        // In another partition, an older batch does not win; a newer one does.
        let moved: &[u8] = b"h:1:9:3@50";
        p.batch(1, 0, [(3, Some(moved))].into_iter());
        let e = p.into_ends();
        assert_eq!(e["h:1:2:3"], (4, false));
        assert_eq!(e["h:1:9:3"], (100, true));
        let mut p = Positions::new("h:".into());
        p.batch(0, 5, [(3, Some(b))].into_iter());
        p.batch(1, 9, [(3, Some(moved))].into_iter());
        assert_eq!(p.into_ends()["h:1:9:3"], (50, false));
    }

    #[test]
    fn a_foreign_end_near_the_largest_position_does_not_wrap() {
        let mut p = Positions::new("h:".into());
        let near: &[u8] = b"h:1:2:3@18446744073709551610";
        p.batch(0, 1, [(9, Some(near)), (40, None), (5, None)].into_iter());
        // The continuation would pass u64::MAX: the source is known to its header's end only.
        assert_eq!(p.into_ends()["h:1:2:3"], (u64::MAX - 5, false));
    }

    #[test]
    fn position_headers_parse_and_refuse_garbage() {
        assert_eq!(parse_position(b"h:1:2:3@42"), Some(("h:1:2:3", 42, false)));
        assert_eq!(parse_position(b"a@b@7+"), Some(("a@b", 7, true)));
        for bad in [&b"h:1:2:3"[..], b"h@", b"h@-1", b"h@1x", b"\xff@1"] {
            assert_eq!(parse_position(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn checkpoint_lines_round_trip_and_damage_is_refused() {
        let mut s = EoState {
            producer: Some((4001, 7)),
            ..EoState::default()
        };
        s.acked("app logs", 3, 120);
        s.acked("app logs", 3, 90);
        s.acked("t", 0, -1);
        let mut text = String::new();
        s.render_into(&mut text);
        let mut back = EoState::default();
        for l in text.lines() {
            assert!(back.parse_line(l), "{l}");
        }
        assert_eq!(back, s);
        assert_eq!(back.marks[&("app logs".to_string(), 3)], 120);
        for bad in [
            "eo-producer 1",
            "eo-producer -1 0",
            "eo-mark t x 1",
            "eo-mark t 0 -5",
            "eo-x",
        ] {
            assert!(!EoState::default().parse_line(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod read_back_tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::ClientOptions;
    use crate::producer::{timestamp_now_ms, Producer, ProducerConfig, SourcePos};
    use crate::testkit::FakeBroker;

    async fn ship(p: &mut Producer, source: &Arc<str>, lines: &[(&[u8], u64)]) {
        for (i, (v, end)) in lines.iter().enumerate() {
            let pos = SourcePos {
                source,
                end: *end,
                skipping: false,
            };
            p.append_at(
                0,
                None,
                Some(v),
                &[],
                timestamp_now_ms(),
                i as u64,
                Some(&pos),
            )
            .unwrap();
        }
        let mut out = Vec::new();
        p.flush(&mut out).await.unwrap();
        assert!(out.iter().all(|d| d.error.is_none()), "{out:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn read_back_waits_for_the_last_runs_appended_but_uncommitted_batch() {
        let b = FakeBroker::new(1);
        b.create_topic("t", 1);
        let mut o = ClientOptions::new(&b.bootstrap());
        o.retry_limit = Some(Duration::from_secs(30));
        let c = Arc::new(Cluster::with_transport(o, Arc::new(b.transport())));
        let meta = c.topic("t", false).await.unwrap();
        let mut p = Producer::for_topic(c.clone(), meta, ProducerConfig::default());
        p.init().await.unwrap();
        let pid = p.producer_id().unwrap().0;
        let src: Arc<str> = Arc::from("h:1:2:3");
        ship(&mut p, &src, &[(b"aaaa", 5), (b"bbbb", 10)]).await;
        // The dead run's last batch: appended, not yet committed; committed 2 s later.
        b.hold_commits("t", 0);
        ship(&mut p, &src, &[(b"ccccccccc", 20)]).await;
        let b2 = b.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            b2.commit("t", 0);
        });
        let read = |previous| {
            read_back(
                c.clone(),
                "t".into(),
                HashMap::new(),
                None,
                "h".into(),
                previous,
            )
        };
        let started = Instant::now();
        let rb = read(Some(pid)).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(rb.positions.into_ends()["h:1:2:3"], (20, false));
        // Without the last run's id (checkpoint lost) it is the producer of our newest batch: same wait.
        b.hold_commits("t", 0);
        ship(&mut p, &src, &[(b"dddddddd", 29)]).await;
        let b3 = b.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            b3.commit("t", 0);
        });
        let rb = read(None).await.unwrap();
        assert_eq!(rb.positions.into_ends()["h:1:2:3"], (29, false));
        // Never committed: reading back gives up at the limit with what it can see.
        b.hold_commits("t", 0);
        ship(&mut p, &src, &[(b"e", 31)]).await;
        let started = Instant::now();
        let rb = read(Some(pid)).await.unwrap();
        assert!(started.elapsed() >= SETTLE_LIMIT, "{:?}", started.elapsed());
        assert_eq!(rb.positions.into_ends()["h:1:2:3"], (29, false));
        // A producer the broker does not know (another run's, committed everything): no wait.
        let started = Instant::now();
        read(Some(pid + 1000)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

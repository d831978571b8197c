//! The tail engine against a fake sink: no Kafka, no sleeps (tokio's paused clock). A model test
//! drives random writes, rename rotations, copytruncates, deletions, restarts and out-of-order acks,
//! and checks after every step that each file's checkpoint is the end of its contiguous acknowledged
//! prefix, and at the end that every line written was shipped (but for the documented copytruncate
//! window) and duplicated only by restarts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::producer::{Appended, RecordTooLarge, SourcePos, TopicState};
use crate::tail::discover::{FilePolicy, Pattern};
use crate::tail::follower::ReadLimits;
use crate::tail::route::{RouteSpec, Template};
use crate::tail::scan;
use crate::wire::records::Header;

/// Records what the engine ships; `full` stops it.
#[derive(Default)]
struct FakeSink {
    /// Appended and not yet acknowledged: token, value.
    pending: Vec<(u64, Vec<u8>)>,
    shipped: Vec<Vec<u8>>,
    full_at: Option<usize>,
    /// Positions given with records (exactly-once).
    ends: Vec<(u64, bool)>,
    /// Run once, at the next append but `on_append_skip` (a rotation in the middle of a read).
    on_append: Option<Box<dyn FnOnce()>>,
    on_append_skip: usize,
}

impl Sink for FakeSink {
    fn append(
        &mut self,
        _topic: usize,
        _key: Option<&[u8]>,
        value: &[u8],
        _headers: &[Header<'_>],
        _ts: i64,
        token: u64,
        pos: Option<&SourcePos<'_>>,
    ) -> Result<Appended, RecordTooLarge> {
        // Copied first: `value` may be in the file's mapped pages, which the hook may truncate.
        let value = value.to_vec();
        if self.on_append.is_some() {
            match self.on_append_skip {
                0 => {
                    if let Some(f) = self.on_append.take() {
                        f();
                    }
                }
                _ => self.on_append_skip -= 1,
            }
        }
        self.pending.push((token, value));
        if let Some(p) = pos {
            self.ends.push((p.end, p.skipping));
        }
        Ok(Appended {
            topic: 0,
            partition: 0,
        })
    }

    fn undo_last(&mut self, _a: Appended) {
        self.pending.pop();
    }

    fn is_full(&self) -> bool {
        self.full_at.is_some_and(|n| self.pending.len() >= n)
    }

    fn topic(&mut self, _name: &str) -> TopicState {
        TopicState::Ready(0)
    }
}

fn dir(name: &str) -> PathBuf {
    crate::testkit::scratch_dir(&format!("model-{name}"))
}

fn config(d: &Path) -> EngineConfig {
    EngineConfig {
        inputs: vec![Input {
            name: "model".into(),
            patterns: vec![Pattern::new(&format!("{}/*.log", d.display()), &[]).unwrap()],
            route: RouteSpec {
                topic: Template::literal("t"),
                key: None,
                headers: Vec::new(),
            },
            multiline: None,
            from_end: false,
        }],
        policy: Arc::new(FilePolicy::default()),
        limits: ReadLimits {
            max_line_bytes: 1000,
            chunk_bytes: 4096,
        },
        max_open_files: 1000,
        hostname: "test".into(),
        exactly_once: None,
    }
}

/// This process's descriptors open on files under `d`.
fn fds_under(d: &Path) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.starts_with(d))
        .count()
}

fn scan_now(e: &mut Engine) {
    let r = scan::run(e.scan_request(None));
    e.apply_scan(r, Instant::now(), false);
}

fn append(path: &Path, data: &[u8]) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}

/// Truncates `path` to nothing in place (the inode stays), as copytruncate does.
fn truncate(path: &Path) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// Acknowledges the pending records whose index `pick` chooses, out of order.
fn ack(e: &mut Engine, sink: &mut FakeSink, mut pick: impl FnMut(usize) -> bool) {
    let mut keep = Vec::new();
    for (i, (t, v)) in std::mem::take(&mut sink.pending).into_iter().enumerate() {
        if pick(i) {
            e.on_delivery(&[t], None, "t");
            sink.shipped.push(v);
        } else {
            keep.push((t, v));
        }
    }
    sink.pending = keep;
}

#[tokio::test(start_paused = true)]
async fn a_partial_line_waits_for_its_newline_and_crlf_is_stripped() {
    let d = dir("partial");
    let f = d.join("a.log");
    append(&f, b"one\r\ntwo\n\nthr");
    let mut e = Engine::new(config(&d), Vec::new());
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(
        sink.shipped,
        vec![b"one".to_vec(), b"two".to_vec(), b"".to_vec()]
    );
    assert_eq!(e.checkpoint_entries()[0].offset, 10);
    append(&f, b"ee\n");
    e.touch(&f);
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(sink.shipped.last().unwrap(), b"three");
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_checkpoint_moves_only_over_a_contiguous_acknowledged_prefix() {
    let d = dir("prefix");
    let f = d.join("a.log");
    append(&f, b"a\nb\nc\nd\n");
    let mut e = Engine::new(config(&d), Vec::new());
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |i| i == 1 || i == 3);
    assert_eq!(
        e.checkpoint_entries()[0].offset,
        0,
        "line a is not acknowledged yet"
    );
    ack(&mut e, &mut sink, |i| i == 0);
    assert_eq!(e.checkpoint_entries()[0].offset, 4, "a and b");
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(e.checkpoint_entries()[0].offset, 8);
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_small_file_replaced_with_its_inode_reused_is_read_from_its_start() {
    let d = dir("reuse");
    let f = d.join("a.log");
    append(&f, b"old\n");
    let mut e = Engine::new(config(&d), Vec::new());
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    let ckpt = e.checkpoint_entries();
    // Replace the file by another of the same size: same path, maybe the same inode, other bytes.
    fs::remove_file(&f).unwrap();
    append(&f, b"new\n");
    let mut e2 = Engine::new(config(&d), ckpt.clone());
    let mut sink2 = FakeSink::default();
    scan_now(&mut e2);
    e2.read_pass(&mut sink2, 1, Instant::now());
    ack(&mut e2, &mut sink2, |_| true);
    assert_eq!(sink2.shipped, vec![b"new".to_vec()], "checkpoint {ckpt:?}");
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_sink_stops_reading_and_nothing_is_skipped() {
    let d = dir("full");
    let f = d.join("a.log");
    let all: Vec<u8> = (0..100)
        .flat_map(|i| format!("l{i}\n").into_bytes())
        .collect();
    append(&f, &all);
    let mut e = Engine::new(config(&d), Vec::new());
    let mut sink = FakeSink {
        full_at: Some(7),
        ..FakeSink::default()
    };
    scan_now(&mut e);
    while sink.shipped.len() < 100 {
        e.read_pass(&mut sink, 1, Instant::now());
        assert!(sink.pending.len() <= 7);
        ack(&mut e, &mut sink, |_| true);
        e.touch(&f);
    }
    let want: Vec<Vec<u8>> = (0..100).map(|i| format!("l{i}").into_bytes()).collect();
    assert_eq!(sink.shipped, want);
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_lag_keeps_growing_while_kafka_holds_reading_back() {
    let d = dir("lag");
    let f = d.join("a.log");
    append(&f, b"0123456789\n");
    let mut e = Engine::new(config(&d), Vec::new());
    // Kafka away: nothing is acknowledged and the sink takes one line, then is full.
    let mut sink = FakeSink {
        full_at: Some(1),
        ..FakeSink::default()
    };
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    assert_eq!(e.bytes_behind(), 11);
    append(&f, &[b'x'; 1000]);
    e.touch(&f);
    e.read_pass(&mut sink, 1, Instant::now());
    assert_eq!(
        e.bytes_behind(),
        11,
        "not read: the full sink holds reading"
    );
    e.observe_sizes();
    assert_eq!(
        e.bytes_behind(),
        1011,
        "but the file grew, and the lag says so"
    );
    fs::remove_dir_all(&d).unwrap();
}

/// What the model knows of one file it wrote.
struct Written {
    /// Lines in write order: value.
    lines: Vec<Vec<u8>>,
    /// Lines destroyed by a copytruncate before they were read (the documented window).
    lost: BTreeSet<Vec<u8>>,
}

#[tokio::test(start_paused = true)]
async fn model_random_writes_rotations_truncations_and_restarts_lose_nothing() {
    // MODEL_SEED=N runs one seed (MODEL_TRACE=1 prints its steps); MODEL_SEEDS=N runs N of them.
    let many = std::env::var("MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12u64);
    let seeds = std::env::var("MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(0..many, |s: u64| s..s + 1);
    for seed in seeds {
        run_model(seed).await;
    }
}

/// The model: the files it wrote, what each line became, and the engine under test.
struct Model {
    d: PathBuf,
    rng: fastrand::Rng,
    gen: u64,
    written: BTreeMap<String, Written>,
    current: HashMap<&'static str, String>,
    e: Engine,
    sink: FakeSink,
    restarts: u32,
    rotated_n: u32,
    /// Lines read but unacknowledged when their file was copytruncated or deleted...
    at_risk: BTreeSet<Vec<u8>>,
    /// ...and those of them a crash took before they were acknowledged.
    died_with: BTreeSet<Vec<u8>>,
}

impl Model {
    fn acked(&self) -> BTreeSet<Vec<u8>> {
        self.sink.shipped.iter().cloned().collect()
    }

    fn write(&mut self, id: &str, path: &Path) {
        let w = self
            .written
            .entry(id.to_string())
            .or_insert_with(|| Written {
                lines: Vec::new(),
                lost: BTreeSet::new(),
            });
        let mut data = Vec::new();
        for _ in 0..self.rng.usize(1..5) {
            let v = format!("{id}:{}", w.lines.len()).into_bytes();
            data.extend_from_slice(&v);
            data.push(b'\n');
            w.lines.push(v);
        }
        let created = !path.exists();
        append(path, &data);
        self.e.touch(path);
        if created {
            // The watcher's create event asks for a rescan at once.
            scan_now(&mut self.e);
        }
    }

    /// copytruncate: what was not read yet is gone with the truncation; what was read and not yet
    /// acknowledged is gone too if the shipper dies before it is.
    fn copytruncate(&mut self, name: &'static str, id: &str, path: &Path) {
        let acked = self.acked();
        let pending: BTreeSet<Vec<u8>> = self.sink.pending.iter().map(|(_, v)| v.clone()).collect();
        fs::copy(path, self.d.join(format!("{name}.copy"))).unwrap();
        truncate(path);
        if let Some(w) = self.written.get_mut(id) {
            for l in &w.lines {
                if pending.contains(l) {
                    self.at_risk.insert(l.clone());
                } else if !acked.contains(l) {
                    w.lost.insert(l.clone());
                }
            }
        }
        // The same inode now holds new content: a new generation for the model.
        self.current.remove(name);
    }

    /// Deleted: the open file is still read to its end, unless the shipper dies first.
    fn delete(&mut self, name: &'static str, id: &str, path: &Path) {
        let acked = self.acked();
        if let Some(w) = self.written.get(id) {
            self.at_risk
                .extend(w.lines.iter().filter(|l| !acked.contains(*l)).cloned());
        }
        fs::remove_file(path).unwrap();
        self.current.remove(name);
    }

    /// A crash: what was in flight is gone, the engine restarts from its checkpoint and scans.
    fn crash(&mut self) {
        self.restarts += 1;
        let acked = self.acked();
        for l in std::mem::take(&mut self.at_risk) {
            if !acked.contains(&l) {
                self.died_with.insert(l);
            }
        }
        let ckpt = self.e.checkpoint_entries();
        self.sink.pending.clear();
        self.e = Engine::new(config(&self.d), ckpt);
        scan_now(&mut self.e);
    }

    async fn step(&mut self, step: usize) {
        let names = ["a.log", "b.log", "c.log"];
        let name = names[self.rng.usize(..names.len())];
        let path = self.d.join(name);
        let gen = &mut self.gen;
        let id = self
            .current
            .entry(name)
            .or_insert_with(|| {
                *gen += 1;
                format!("{name}#{gen}")
            })
            .clone();
        let op = self.rng.u32(..100);
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!(
                "step {step}: op {op} on {name} ({id}) exists={}",
                path.exists()
            );
        }
        match op {
            0..=49 => self.write(&id, &path),
            50..=59 if path.exists() => {
                self.rotated_n += 1;
                fs::rename(&path, self.d.join(format!("{name}.{}.old", self.rotated_n))).unwrap();
                self.current.remove(name);
            }
            60..=64 if path.exists() => self.copytruncate(name, &id, &path),
            65..=67 if path.exists() => self.delete(name, &id, &path),
            68..=70 => self.crash(),
            71..=85 => scan_now(&mut self.e),
            _ => tokio::time::advance(Duration::from_secs(self.rng.u64(1..4))).await,
        }
        self.e.read_pass(&mut self.sink, 1, Instant::now());
        let n = self.sink.pending.len();
        let rng = &mut self.rng;
        ack(&mut self.e, &mut self.sink, |i| {
            rng.bool() || i + 1 == n && step % 7 == 0
        });
        check_prefix(&self.e, &self.sink);
    }

    /// The writers stop; everything is read, rotated files finished, all acknowledged.
    async fn settle(&mut self) {
        for _ in 0..10 {
            scan_now(&mut self.e);
            tokio::time::advance(ROTATED_GRACE).await;
            self.e.read_pass(&mut self.sink, 1, Instant::now());
            ack(&mut self.e, &mut self.sink, |_| true);
        }
    }
}

async fn run_model(seed: u64) {
    let d = dir(&format!("model-{seed}"));
    let mut m = Model {
        e: Engine::new(config(&d), Vec::new()),
        d: d.clone(),
        rng: fastrand::Rng::with_seed(seed),
        gen: 0,
        written: BTreeMap::new(),
        current: HashMap::new(),
        sink: FakeSink::default(),
        restarts: 0,
        rotated_n: 0,
        at_risk: BTreeSet::new(),
        died_with: BTreeSet::new(),
    };
    for step in 0..400 {
        m.step(step).await;
    }
    m.settle().await;
    let shipped: BTreeMap<Vec<u8>, usize> =
        m.sink.shipped.iter().fold(BTreeMap::new(), |mut c, v| {
            *c.entry(v.clone()).or_default() += 1;
            c
        });
    for (id, w) in &m.written {
        for l in &w.lines {
            if w.lost.contains(l) || m.died_with.contains(l) {
                continue;
            }
            assert!(
                shipped.contains_key(l),
                "seed {seed}: {} of {id} was never shipped",
                String::from_utf8_lossy(l)
            );
        }
    }
    let dups: usize = shipped.values().map(|c| c - 1).sum();
    assert!(
        m.restarts > 0 || dups == 0,
        "seed {seed}: {dups} duplicates without a restart"
    );
    fs::remove_dir_all(&d).unwrap();
}

/// Every follower's acknowledged offset is a line end, and every line before it was acknowledged (is
/// in what the sink has shipped), read back from the file itself.
fn check_prefix(e: &Engine, sink: &FakeSink) {
    let shipped: BTreeSet<&[u8]> = sink.shipped.iter().map(|v| v.as_slice()).collect();
    for f in e.followers.values() {
        assert!(f.acked_pos <= f.read_pos, "{}", f.path.display());
        let Some(file) = &f.file else { continue };
        let Ok(bytes) = fs::read(format!(
            "/proc/self/fd/{}",
            std::os::unix::io::AsRawFd::as_raw_fd(&**file)
        )) else {
            continue;
        };
        let rewritten = !crate::tail::identity::starts_with(file, f.fingerprint).unwrap_or(false);
        if (bytes.len() as u64) < f.acked_pos || rewritten {
            continue; // truncated since: the engine finds out when it next reads the file
        }
        let prefix = &bytes[..f.acked_pos as usize];
        assert!(
            prefix.is_empty() || prefix.ends_with(b"\n"),
            "{}: checkpoint {} is not a line end",
            f.path.display(),
            f.acked_pos
        );
        for line in prefix.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                shipped.contains(line),
                "{}: {} is before the checkpoint {} but was never acknowledged",
                f.path.display(),
                String::from_utf8_lossy(line),
                f.acked_pos
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn exactly_once_reads_nothing_before_the_read_back_then_starts_where_kafka_has_the_file() {
    let d = dir("eo");
    let f = d.join("a.log");
    append(&f, b"one\ntwo\nthree\n");
    let mut cfg = config(&d);
    cfg.exactly_once = Some("h".into());
    let mut e = Engine::new(cfg, Vec::new());
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    assert!(
        sink.pending.is_empty(),
        "read before the topic was read back"
    );
    let asked = e.take_to_resume();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0, "t");
    assert!(e.take_to_resume().is_empty());
    let id = FileId::of(&fs::File::open(&f).unwrap()).unwrap();
    let source = crate::tail::exactly::source_id("h", &id).to_string();
    // Kafka holds "one" and "two" (8 bytes); another host's file of the same identity is not ours.
    e.resumed("t", HashMap::from([(source, (8, false))]));
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(sink.shipped, vec![b"three".to_vec()]);
    assert_eq!(sink.ends, vec![(14, false)]);
    assert_eq!(e.checkpoint_entries()[0].offset, 14);
    // A file Kafka holds more of than it has now was truncated while we were away: from 0.
    let g = d.join("b.log");
    append(&g, b"x\n");
    let gid = FileId::of(&fs::File::open(&g).unwrap()).unwrap();
    e.resumed(
        "t",
        HashMap::from([(
            crate::tail::exactly::source_id("h", &gid).to_string(),
            (500, false),
        )]),
    );
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(sink.shipped.last().unwrap(), b"x");
    fs::remove_dir_all(&d).unwrap();
}

/// The read-back finds the file behind the checkpoint's acknowledged position (its lines went to
/// another topic while the input's topic was changed, then changed back): not read again from there.
#[tokio::test(start_paused = true)]
async fn exactly_once_never_goes_back_behind_the_acknowledged_checkpoint() {
    let d = dir("eo-behind");
    let f = d.join("a.log");
    append(&f, b"one\ntwo\nthree\n");
    let mut cfg = config(&d);
    cfg.exactly_once = Some("h".into());
    let mut e = Engine::new(cfg.clone(), Vec::new());
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    let id = FileId::of(&fs::File::open(&f).unwrap()).unwrap();
    let source = crate::tail::exactly::source_id("h", &id).to_string();
    e.take_to_resume();
    e.resumed("t", HashMap::new());
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    let ckpt = e.checkpoint_entries();
    assert_eq!(ckpt[0].offset, 14);
    append(&f, b"four\n");
    let mut e2 = Engine::new(cfg, ckpt);
    let mut sink2 = FakeSink::default();
    scan_now(&mut e2);
    e2.take_to_resume();
    // This topic holds the file only up to "one\n".
    e2.resumed("t", HashMap::from([(source, (4, false))]));
    e2.read_pass(&mut sink2, 1, Instant::now());
    ack(&mut e2, &mut sink2, |_| true);
    assert_eq!(sink2.shipped, vec![b"four".to_vec()]);
    fs::remove_dir_all(&d).unwrap();
}

/// Exactly-once: a file Kafka holds more of than it has was truncated while shipper was away
/// (copytruncate), and starts as it did, so the start saw no truncation. Its copy is found and read
/// on from where Kafka has the original: its lines past that were never read.
#[tokio::test(start_paused = true)]
async fn exactly_once_reads_the_copy_of_a_file_truncated_while_away_from_kafkas_end() {
    let d = dir("eo-copy-found");
    let f = d.join("a.log");
    append(&f, b"AAAA\nBBBB\nCCCC\nDDDD\n");
    let id = FileId::of(&fs::File::open(&f).unwrap()).unwrap();
    // While shipper was away: one more line, then copytruncate, then the file began again alike.
    append(&f, b"EEEE\n");
    fs::copy(&f, d.join("a.log.1")).unwrap();
    truncate(&f);
    append(&f, b"AAAA\n");
    let mut cfg = config(&d);
    cfg.exactly_once = Some("h".into());
    let (mut e, mut sink) = (Engine::new(cfg, Vec::new()), FakeSink::default());
    scan_now(&mut e);
    e.take_to_resume();
    let source = crate::tail::exactly::source_id("h", &id).to_string();
    e.resumed("t", HashMap::from([(source, (20, false))]));
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    sink.shipped.sort();
    assert_eq!(sink.shipped, vec![b"AAAA".to_vec(), b"EEEE".to_vec()]);
    fs::remove_dir_all(&d).unwrap();
}

/// Exactly-once: the copy of a file truncated while shipper was away, found at the start from the
/// checkpoint's position, is moved on to where Kafka has the original (the checkpoint lags what was
/// acknowledged): what lies between is in Kafka, and was sent twice.
#[tokio::test(start_paused = true)]
async fn exactly_once_moves_a_copy_found_at_the_checkpoint_on_to_where_kafka_has_its_original() {
    let d = dir("eo-copy-moved");
    let f = d.join("a.log");
    append(&f, b"AAAA\n");
    let mut cfg = config(&d);
    cfg.exactly_once = Some("h".into());
    let (mut e, mut sink) = (Engine::new(cfg.clone(), Vec::new()), FakeSink::default());
    scan_now(&mut e);
    e.take_to_resume();
    e.resumed("t", HashMap::new());
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    let ckpt = e.checkpoint_entries();
    assert_eq!(ckpt[0].offset, 5);
    let id = FileId::of(&fs::File::open(&f).unwrap()).unwrap();
    // Shipped to byte 20 after the checkpoint was last written; then away, and copytruncate.
    append(&f, b"BBBB\nCCCC\nDDDD\nEEEE\n");
    fs::copy(&f, d.join("a.log.1")).unwrap();
    truncate(&f);
    let (mut e2, mut sink2) = (Engine::new(cfg, ckpt), FakeSink::default());
    scan_now(&mut e2);
    e2.take_to_resume();
    let source = crate::tail::exactly::source_id("h", &id).to_string();
    e2.resumed("t", HashMap::from([(source, (20, false))]));
    e2.read_pass(&mut sink2, 1, Instant::now());
    ack(&mut e2, &mut sink2, |_| true);
    assert_eq!(sink2.shipped, vec![b"EEEE".to_vec()]);
    fs::remove_dir_all(&d).unwrap();
}

/// Issue #17: a rescan reads only files whose size or modification time changed (10,000 idle files
/// cost one `lstat` each, no read); a closed file is re-opened by a small scan of its path alone.
#[tokio::test(start_paused = true)]
async fn a_rescan_reads_only_changed_files_and_a_closed_file_is_reopened_by_its_event() {
    let d = dir("idle");
    for i in 0..20 {
        append(
            &d.join(format!("f{i}.log")),
            format!("line {i}\n").as_bytes(),
        );
    }
    let mut e = Engine::new(config(&d), Vec::new());
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(sink.shipped.len(), 20);
    assert!(!e.has_hot());
    scan_now(&mut e);
    assert!(!e.has_hot(), "nothing changed: nothing to read");
    let f3 = d.join("f3.log");
    append(&f3, b"more\n");
    scan_now(&mut e);
    let hot: Vec<u64> = e.hot.iter().copied().collect();
    assert_eq!(hot.len(), 1, "only the changed file");
    assert_eq!(e.followers[&hot[0]].path, f3);
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(sink.shipped.last().unwrap(), b"more");
    // Closed while idle (as past the open-files target), then written: its event re-opens it.
    let key = hot[0];
    e.followers.get_mut(&key).unwrap().close();
    append(&f3, b"after close\n");
    let closed = e.closed_at(&f3);
    assert_eq!(closed, vec![key]);
    let r = scan::run(e.scan_request(Some(closed)));
    assert!(!r.full && r.opened.is_empty(), "no pattern expanded");
    e.apply_scan(r, Instant::now(), false);
    assert!(e.followers[&key].file.is_some());
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(sink.shipped.last().unwrap(), b"after close");
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn new_files_are_looked_at_alone_and_followed_paths_call_for_a_full_scan() {
    let d = dir("names");
    fs::create_dir_all(d.join("sub")).unwrap();
    append(&d.join("a.log"), b"x\n");
    let mut e = Engine::new(config(&d), Vec::new());
    let judge = |e: &mut Engine, names: &[&str]| {
        let names: Vec<PathBuf> = names.iter().map(|n| d.join(n)).collect();
        e.judge_names(&names)
    };
    assert_eq!(
        judge(&mut e, &["x"]),
        Names::Rescan,
        "before the first scan"
    );
    scan_now(&mut e);
    assert_eq!(e.counters.full_scans, 1);
    assert_eq!(
        judge(&mut e, &[".ckpt.tmp-1-2", "ckpt", "app.log.1.gz", "sub"]),
        Names::Nothing
    );
    assert_eq!(
        judge(&mut e, &["b.log", "ckpt"]),
        Names::New(vec![d.join("b.log")]),
        "a name the pattern finds"
    );
    assert_eq!(
        judge(&mut e, &["sub/c.log"]),
        Names::Nothing,
        "'*' does not cross a directory"
    );
    assert_eq!(
        judge(&mut e, &["b.log", "a.log"]),
        Names::Rescan,
        "a followed file's path"
    );
    // A new file, and a hard link to a followed one: looked at alone, the new one followed once.
    append(&d.join("b.log"), b"new\n");
    fs::hard_link(d.join("a.log"), d.join("link.log")).unwrap();
    let Names::New(names) = judge(&mut e, &["b.log", "link.log"]) else {
        panic!("new names")
    };
    let r = scan::run(e.partial_scan_request(Vec::new(), names));
    assert!(!r.full);
    e.apply_scan(r, Instant::now(), false);
    assert_eq!(e.counters.full_scans, 1, "no full scan");
    let mut paths: Vec<PathBuf> = e.followers.values().map(|f| f.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, vec![d.join("a.log"), d.join("b.log")]);
    assert_eq!(
        judge(&mut e, &["b.log"]),
        Names::Rescan,
        "followed now: the index kept up"
    );
    let mut sink = FakeSink::default();
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert!(
        sink.shipped.iter().any(|l| l == b"new"),
        "read from its start: {:?}",
        sink.shipped
    );
    // A directory above a followed file, renamed away (the pattern walks it only through `**`).
    let mut deep = config(&d);
    deep.inputs[0].patterns =
        vec![Pattern::new(&format!("{}/**/*.log", d.display()), &[]).unwrap()];
    append(&d.join("sub/deep.log"), b"y\n");
    let mut e = Engine::new(deep, Vec::new());
    scan_now(&mut e);
    assert_eq!(
        judge(&mut e, &["sub"]),
        Names::Rescan,
        "a directory holding a followed file"
    );
    assert_eq!(judge(&mut e, &["other"]), Names::Nothing);
    assert_eq!(
        judge(&mut e, &["sub/more/x.log"]),
        Names::New(vec![d.join("sub/more/x.log")])
    );
    let many: Vec<String> = (0..=MAX_NAMES_JUDGED).map(|i| format!("x{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        judge(&mut e, &many),
        Names::Rescan,
        "too many names to judge: scan"
    );
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_compressed_file_is_judged_once_and_again_only_when_it_changes() {
    let d = dir("compressed");
    let gz = d.join("old.log");
    let text = b"a line written later\n";
    let mut head = vec![0x1f, 0x8b, 0x08, 0x00];
    head.resize(text.len(), 0);
    fs::write(&gz, &head).unwrap();
    let mtime = fs::metadata(&gz).unwrap().modified().unwrap();
    let mut e = Engine::new(config(&d), Vec::new());
    scan_now(&mut e);
    assert!(e.followers.is_empty(), "a gzip file is not followed");
    assert_eq!(e.compressed.len(), 1);
    // Its bytes replaced behind the scan's back, size and modification time kept: taken as the same
    // compressed file, not opened again (which shows that the memory is used).
    fs::write(&gz, text).unwrap();
    fs::File::options()
        .write(true)
        .open(&gz)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    scan_now(&mut e);
    assert!(e.followers.is_empty(), "remembered, not judged again");
    // A change of its modification time: judged again, and now it holds lines.
    fs::File::options()
        .write(true)
        .open(&gz)
        .unwrap()
        .set_modified(mtime + Duration::from_secs(1))
        .unwrap();
    scan_now(&mut e);
    assert_eq!(e.followers.len(), 1, "judged again: lines");
    assert!(
        e.compressed.is_empty(),
        "a file that is not compressed is forgotten"
    );
    let mut sink = FakeSink::default();
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(sink.shipped, vec![b"a line written later".to_vec()]);
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_file_with_several_names_is_followed_once_and_not_read_again_at_a_restart() {
    let d = dir("aliases");
    append(&d.join("app-1.log"), b"one\ntwo\n");
    // `current.log` links to it (the usual layout), and a hard link is a third name.
    std::os::unix::fs::symlink(d.join("app-1.log"), d.join("current.log")).unwrap();
    fs::hard_link(d.join("app-1.log"), d.join("hard.log")).unwrap();
    // A link found before the file (in name order) does not win either.
    std::os::unix::fs::symlink(d.join("app-1.log"), d.join("a.log")).unwrap();
    let cfg = || {
        let mut c = config(&d);
        c.policy = Arc::new(FilePolicy {
            follow_symlinks: true,
            ..FilePolicy::default()
        });
        c
    };
    let mut e = Engine::new(cfg(), Vec::new());
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    let paths: Vec<PathBuf> = e.followers.values().map(|f| f.path.clone()).collect();
    assert_eq!(
        paths,
        vec![d.join("app-1.log")],
        "one follower, not the link"
    );
    assert!(
        e.scan_warned.iter().any(|w| w.ends_with("current.log")),
        "{:?}",
        e.scan_warned
    );
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(sink.shipped, vec![b"one".to_vec(), b"two".to_vec()]);
    // A second scan keeps the follower's name; a restart from the checkpoint reads nothing again,
    // and what is written later ships once.
    scan_now(&mut e);
    assert_eq!(e.followers.len(), 1);
    let mut e = Engine::new(cfg(), e.checkpoint_entries());
    scan_now(&mut e);
    append(&d.join("current.log"), b"three\n");
    let mut sink = FakeSink::default();
    for f in e.followers.keys().copied().collect::<Vec<_>>() {
        e.hot.insert(f);
    }
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(sink.shipped, vec![b"three".to_vec()]);
    fs::remove_dir_all(&d).unwrap();
}

fn lines_of(prefix: &str, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("{prefix} line {i:04} of a log with some words in it\n").into_bytes())
        .collect()
}

/// Reads and acknowledges until nothing is left to read.
fn drain(e: &mut Engine, sink: &mut FakeSink, now: Instant) {
    for _ in 0..100 {
        let more = e.read_pass(sink, 1, now);
        ack(e, sink, |_| true);
        if !more && !e.has_hot() {
            return;
        }
    }
    panic!("still reading after 100 passes");
}

/// An engine over `cfg` from checkpoint `ckpt` that has scanned and read (and acknowledged) all
/// there is.
fn following(cfg: EngineConfig, ckpt: Vec<Entry>) -> (Engine, FakeSink) {
    let mut e = Engine::new(cfg, ckpt);
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    (e, sink)
}

fn shipped_text(sink: &FakeSink) -> Vec<String> {
    sink.shipped
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// `--from-end` on a file a writer is in the middle of a line of: the line is shipped whole once its
/// newline comes, not its second half as a record of its own (t31 F5). One already longer than the
/// line limit at the start is skipped to its newline.
#[tokio::test(start_paused = true)]
async fn from_the_end_a_line_being_written_is_shipped_whole() {
    for (case, limit) in [("whole", 1000), ("over-long", 8)] {
        let d = dir(&format!("from-end-{case}"));
        let f = d.join("a.log");
        append(&f, b"old1\nold2\nhalf-writ");
        let mut cfg = config(&d);
        cfg.inputs[0].from_end = true;
        cfg.limits.max_line_bytes = limit;
        let (mut e, mut sink) = following(cfg, Vec::new());
        assert!(sink.shipped.is_empty(), "{case}");
        append(&f, b"ten line\nnext\n");
        scan_now(&mut e);
        drain(&mut e, &mut sink, Instant::now());
        let want: &[&str] = match case {
            "whole" => &["half-written line", "next"],
            _ => &["next"],
        };
        assert_eq!(shipped_text(&sink), want, "{case}");
        fs::remove_dir_all(&d).unwrap();
    }
}

/// Stopped while the rest of a line longer than the limit was being skipped (its newline not come):
/// the checkpoint's position is inside that line. The restart resumes there, still skipping; it took
/// the position for a rewrite and shipped the whole file again (t32 F1: 203 records for 102; with
/// `--from-end`, the 100,000 lines of history it was told to skip). A rewrite that leaves the position
/// inside a line of normal length is still read from the start.
#[tokio::test(start_paused = true)]
async fn a_restart_inside_a_long_line_being_skipped_resumes_skipping_it() {
    for (case, from_end, appended_while_down, legacy, grows) in [
        ("from-start", false, true, false, false),
        ("from-end", true, true, false, false),
        ("ends-there", false, false, false, false),
        ("ends-there-from-end", true, false, false, false),
        // The line grows while it is skipped: the acknowledged position moves past where skipping
        // began (from the end, inside the line: its start is not known, and the position was
        // marked with a start before it that is no line start, so the restart read the file again).
        ("grows", false, true, false, true),
        ("from-end-grows", true, true, false, true),
        ("from-end-grows-ends-there", true, false, false, true),
        // A checkpoint written before it marked such a position: judged by the bytes.
        ("legacy", false, true, true, false),
        ("legacy-ends-there", false, false, true, false),
    ] {
        let d = dir(&format!("restart-long-{case}"));
        let f = d.join("a.log");
        let mut data = lines_of("a", 20);
        data.extend(std::iter::repeat_n(b'P', 150));
        append(&f, &data);
        let mut cfg = config(&d);
        cfg.inputs[0].from_end = from_end;
        cfg.limits.max_line_bytes = 100;
        let (mut e, mut sink) = following(cfg.clone(), Vec::new());
        if grows {
            append(&f, &[b'P'; 300]);
            scan_now(&mut e);
            drain(&mut e, &mut sink, Instant::now());
        }
        let first = shipped_text(&sink).len();
        assert_eq!(first, if from_end { 0 } else { 21 }, "{case}");
        let mut ckpt = e.checkpoint_entries();
        if grows {
            assert_eq!(ckpt[0].offset, data.len() as u64 + 300, "{case}");
        }
        assert!(
            matches!(ckpt[0].long_line, LongLine::From(..)),
            "{case}: {:?}",
            ckpt[0].long_line
        );
        if legacy {
            ckpt[0].long_line = LongLine::Unknown;
        }
        drop(e);
        if appended_while_down {
            append(&f, b"QQQ\nnew\n");
        }
        let (mut e, mut sink) = following(cfg, ckpt);
        if !appended_while_down {
            // The file still ends inside the line at the restart (t33 F1).
            append(&f, b"QQQ\nnew\n");
            scan_now(&mut e);
            drain(&mut e, &mut sink, Instant::now());
        }
        assert_eq!(shipped_text(&sink), ["new"], "{case}");
        fs::remove_dir_all(&d).unwrap();
    }
}

/// The checkpoint marks a position inside a long line being skipped, so a restart with a higher line
/// limit goes on skipping it (t33 F2: judged by the bytes, the position was taken for a rewrite and
/// the whole file shipped again), and an unmarked position inside a line is a rewrite even when that
/// line is long (t33 F3: a file rewritten in place with the same first bytes and a long line across
/// the old position was resumed there, and its lines before it were lost).
#[tokio::test(start_paused = true)]
async fn the_checkpoint_says_whether_a_position_is_inside_a_long_line() {
    // Raised limit: 20 lines, then the head of a 150-byte line over a limit of 100.
    let d = dir("restart-long-raised");
    let f = d.join("a.log");
    let mut data = lines_of("a", 20);
    data.extend(std::iter::repeat_n(b'P', 150));
    append(&f, &data);
    let mut cfg = config(&d);
    cfg.limits.max_line_bytes = 100;
    let (e, sink) = following(cfg.clone(), Vec::new());
    assert_eq!(shipped_text(&sink).len(), 21);
    let ckpt = e.checkpoint_entries();
    drop(e);
    append(&f, b"QQQ\nnew\n");
    cfg.limits.max_line_bytes = 1000;
    let (_e, sink) = following(cfg, ckpt);
    assert_eq!(shipped_text(&sink), ["new"], "raised limit");
    fs::remove_dir_all(&d).unwrap();

    // Rewritten in place: the same first 300 bytes, other lines, and a long line across where the
    // first run stopped, at a line start.
    let d = dir("restart-rewritten-long");
    let f = d.join("a.log");
    append(&f, &lines_of("a", 20));
    let mut cfg = config(&d);
    cfg.limits.max_line_bytes = 100;
    let (e, sink) = following(cfg.clone(), Vec::new());
    assert_eq!(shipped_text(&sink).len(), 20);
    let ckpt = e.checkpoint_entries();
    assert_eq!(ckpt[0].long_line, LongLine::No);
    let stopped_at = ckpt[0].offset as usize;
    drop(e);
    let mut again = lines_of("a", 6);
    again.extend(lines_of("b", 8));
    let long_from = again.len();
    assert!(long_from + 100 < stopped_at && stopped_at < long_from + 400);
    again.extend(std::iter::repeat_n(b'L', 400));
    again.extend(b"\ntail\n");
    // In place: same inode, same birth time.
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .write_all(&again)
        .unwrap();
    let (_e, sink) = following(cfg, ckpt);
    let got = shipped_text(&sink);
    assert_eq!(got.len(), 16, "{got:?}");
    assert_eq!(got[14], "L".repeat(100));
    assert_eq!(got[15], "tail");
    fs::remove_dir_all(&d).unwrap();

    // Marked, then rewritten in place with the same first bytes and, across the mark, short lines
    // (t34 F1) or other lines and another long line (t34 F2): the mark is checked against the bytes
    // (a line start where the marked line started, no line end from there to the mark), and the
    // file read again from its start.
    for (case, rewritten) in [
        ("short-lines", {
            let mut v = lines_of("a", 5);
            v.extend(std::iter::repeat_n(b'X', 241));
            v.push(b'\n');
            for i in 0..1000 {
                v.extend(format!("c{i:04}\n").into_bytes());
            }
            v
        }),
        // A long line at the very place of the marked one: told by the bytes before the mark.
        ("the-same-place", {
            let mut v = lines_of("a", 5);
            v.extend(std::iter::repeat_n(b'X', 241));
            v.extend(std::iter::repeat_n(b'Z', 5000));
            v.push(b'\n');
            v.extend(lines_of("c", 10));
            v
        }),
        ("another-long-line", {
            let mut v = lines_of("a", 5);
            v.extend(lines_of("n", 20));
            v.extend(std::iter::repeat_n(b'Z', 5000));
            v.push(b'\n');
            v.extend(lines_of("c", 10));
            v
        }),
    ] {
        let d = dir(&format!("restart-marked-rewritten-{case}"));
        let f = d.join("a.log");
        let mut data = lines_of("a", 5);
        data.extend(std::iter::repeat_n(b'X', 3000));
        append(&f, &data);
        let mut cfg = config(&d);
        cfg.limits.max_line_bytes = 1000;
        let (e, sink) = following(cfg.clone(), Vec::new());
        assert_eq!(shipped_text(&sink).len(), 6, "{case}");
        let ckpt = e.checkpoint_entries();
        let start = lines_of("a", 5).len() as u64;
        assert!(
            matches!(ckpt[0].long_line, LongLine::From(s, Some(_)) if s == start),
            "{case}: {:?}",
            ckpt[0].long_line
        );
        drop(e);
        fs::write(&f, &rewritten).unwrap();
        let (_e, sink) = following(cfg, ckpt);
        let got = shipped_text(&sink);
        let want = rewritten.iter().filter(|&&b| b == b'\n').count();
        assert_eq!(got.len(), want, "{case}: {:?}", got.first());
        assert!(got[0].starts_with("a line 0000"), "{case}");
        fs::remove_dir_all(&d).unwrap();
    }
}

/// A `--from-end` start inside a long line does not know where that line starts: the checkpoint
/// marks the position itself with the 64 bytes before it, and a restart after the file was rewritten
/// in place with another long line across that position reads it again from its start (checked by
/// the position alone, the rewritten file's first lines were lost).
#[tokio::test(start_paused = true)]
async fn a_mark_with_an_unknown_line_start_is_checked_by_the_bytes_before_it() {
    for (case, rewritten) in [(true, "rewritten"), (false, "appended")].map(|(r, c)| (c, r)) {
        let d = dir(&format!("restart-from-end-mark-{case}"));
        let f = d.join("a.log");
        let mut data = lines_of("a", 5);
        data.extend(std::iter::repeat_n(b'X', 3000));
        append(&f, &data);
        let mut cfg = config(&d);
        cfg.inputs[0].from_end = true;
        cfg.limits.max_line_bytes = 1000;
        let (e, sink) = following(cfg.clone(), Vec::new());
        assert!(shipped_text(&sink).is_empty(), "{case}");
        let ckpt = e.checkpoint_entries();
        assert_eq!(ckpt[0].offset, data.len() as u64, "{case}");
        assert!(
            matches!(ckpt[0].long_line, LongLine::From(s, Some(_)) if s == data.len() as u64),
            "{case}: {:?}",
            ckpt[0].long_line
        );
        drop(e);
        let mut now = lines_of("a", 5);
        let want = if rewritten {
            now.extend(std::iter::repeat_n(b'X', 241));
            now.extend(std::iter::repeat_n(b'Z', 5000));
            now.push(b'\n');
            now.extend(lines_of("c", 10));
            // In place: the same inode and birth time.
            fs::OpenOptions::new()
                .write(true)
                .open(&f)
                .unwrap()
                .write_all(&now)
                .unwrap();
            now.iter().filter(|&&b| b == b'\n').count()
        } else {
            append(&f, b"XX\nnew\n");
            1
        };
        let (_e, sink) = following(cfg, ckpt);
        let got = shipped_text(&sink);
        assert_eq!(got.len(), want, "{case}: {:?}", got.first());
        if rewritten {
            assert!(got[0].starts_with("a line 0000"), "{case}");
        } else {
            assert_eq!(got, ["new"]);
        }
        fs::remove_dir_all(&d).unwrap();
    }
}

/// With multiline, a long line that starts right after the skipped rest of another is marked from
/// its own start (it was marked from where the region began, inside the other line: a restart took
/// the position for a rewrite and read the whole file again).
#[tokio::test(start_paused = true)]
async fn a_multiline_mark_names_the_start_of_the_line_after_a_skipped_rest() {
    let d = dir("restart-multiline-long");
    let f = d.join("m.log");
    let mut data = b"START a\n cont\nSTART ".to_vec();
    data.extend(std::iter::repeat_n(b'P', 150));
    append(&f, &data);
    let mut cfg = config(&d);
    cfg.limits.max_line_bytes = 100;
    cfg.inputs[0].multiline = multiline("^START", 500, 1000, 30);
    let (mut e, mut sink) = following(cfg.clone(), Vec::new());
    let mut more = vec![b'P'; 50];
    more.extend(b"\nSTART ");
    more.extend(std::iter::repeat_n(b'Q', 150));
    append(&f, &more);
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    // Its last event is complete once quiet for the timeout.
    e.touch_multiline();
    drain(&mut e, &mut sink, Instant::now() + Duration::from_secs(60));
    let first = shipped_text(&sink);
    assert_eq!(first.len(), 3, "{first:?}");
    let ckpt = e.checkpoint_entries();
    let q_start = (data.len() + 51) as u64;
    assert!(
        matches!(ckpt[0].long_line, LongLine::From(s, _) if s == q_start),
        "{:?}",
        ckpt[0].long_line
    );
    drop(e);
    let size = fs::metadata(&f).unwrap().len();
    append(&f, b"QQ\nSTART new\n");
    let (mut e, mut sink) = following(cfg, ckpt);
    // The rest of the line is passed over and acknowledged at once; the event waits from its start.
    assert!(shipped_text(&sink).is_empty());
    assert_eq!(e.checkpoint_entries()[0].offset, size + 3);
    assert_eq!(e.checkpoint_entries()[0].long_line, LongLine::No);
    e.touch_multiline();
    drain(&mut e, &mut sink, Instant::now() + Duration::from_secs(60));
    assert_eq!(shipped_text(&sink), ["START new"]);
    fs::remove_dir_all(&d).unwrap();
}

/// A multiline region of more lines than one pass takes (200,000 short lines) is grouped over
/// several passes, each event whole and in order, nothing lost or repeated at the pass boundaries
/// (a region of 2 MB of blank lines was 80 MB of line records at once).
#[tokio::test(start_paused = true)]
async fn a_multiline_region_of_many_short_lines_is_grouped_over_several_passes() {
    let d = dir("multiline-many");
    let f = d.join("m.log");
    let mut data = Vec::new();
    for i in 0..200_000 {
        match i % 1000 {
            0 => data.extend(format!("S{i}\n").as_bytes()),
            _ => data.push(b'\n'),
        }
    }
    data.extend(b"S-end\n");
    append(&f, &data);
    let mut cfg = config(&d);
    cfg.limits.chunk_bytes = 4 << 20;
    cfg.limits.max_line_bytes = 1 << 20;
    cfg.inputs[0].multiline = multiline("^S", 1000, 1 << 20, 1);
    let (mut e, mut sink) = following(cfg, Vec::new());
    e.touch_multiline();
    drain(&mut e, &mut sink, Instant::now() + Duration::from_secs(60));
    let got = shipped_text(&sink);
    assert_eq!(got.len(), 201, "200 events of 1000 lines, then the last");
    for (n, ev) in got.iter().take(200).enumerate() {
        assert_eq!(
            *ev,
            format!("S{}{}", n * 1000, "\n".repeat(999)),
            "event {n}"
        );
    }
    assert_eq!(got[200], "S-end");
    fs::remove_dir_all(&d).unwrap();
}

/// With multiline, a line longer than the region read (the event limit plus the line limit) is cut
/// and shipped, and the lines after it follow (t36 F5: its event waited for a next line the region
/// could never hold, and the file stalled for good, with nothing said).
#[tokio::test(start_paused = true)]
async fn a_multiline_line_longer_than_the_region_is_cut_and_the_file_goes_on() {
    for (case, head) in [("continuation", &b"S1\n"[..]), ("start-line", &b"S"[..])] {
        let d = dir(&format!("multiline-huge-{case}"));
        let f = d.join("m.log");
        let mut data = head.to_vec();
        data.extend(std::iter::repeat_n(b'y', 20_000));
        data.extend(b"\nS2\n x\nS3\n");
        append(&f, &data);
        let mut cfg = config(&d);
        cfg.limits.max_line_bytes = 1000;
        cfg.inputs[0].multiline = multiline("^S", 500, 1000, 1);
        let (mut e, mut sink) = following(cfg, Vec::new());
        e.touch_multiline();
        drain(&mut e, &mut sink, Instant::now() + Duration::from_secs(60));
        let got = shipped_text(&sink);
        let mut want = Vec::new();
        if case == "continuation" {
            want.push("S1".to_string());
            want.push("y".repeat(1000));
        } else {
            want.push(format!("S{}", "y".repeat(999)));
        }
        want.extend(["S2\n x".to_string(), "S3".to_string()]);
        assert_eq!(got, want, "{case}");
        fs::remove_dir_all(&d).unwrap();
    }
}

/// A file truncated in place (copytruncate) is read again from its start as it was read before:
/// with its input's multiline joining (t49: its follower was rebuilt without it, and every line of
/// a stack trace became a record of its own until a restart).
#[tokio::test(start_paused = true)]
async fn a_truncated_file_keeps_joining_its_multiline_events() {
    let d = dir("multiline-truncated");
    let f = d.join("m.log");
    append(&f, b"S1\n a\nS2\n");
    let mut cfg = config(&d);
    cfg.inputs[0].multiline = multiline("^S", 500, 1000, 1);
    let (mut e, mut sink) = following(cfg, Vec::new());
    assert_eq!(shipped_text(&sink), ["S1\n a"]);
    truncate(&f);
    append(&f, b"S3\n b\n c\nS4\n");
    e.touch(&f);
    drain(&mut e, &mut sink, Instant::now());
    e.touch_multiline();
    drain(&mut e, &mut sink, Instant::now() + Duration::from_secs(60));
    assert_eq!(shipped_text(&sink)[1..], ["S3\n b\n c", "S4"]);
    fs::remove_dir_all(&d).unwrap();
}

/// An event whose lines end in CRLF takes more bytes in the file than in its value (the `\r` is
/// dropped): one of nearly max_bytes left no room in the region for the whole next line, and the file
/// was read again from the event's start for ever (t49). It ships as it is; the file goes on.
#[tokio::test(start_paused = true)]
async fn a_crlf_multiline_event_that_fills_the_region_ships_and_the_file_goes_on() {
    let d = dir("multiline-crlf");
    let f = d.join("m.log");
    let mut data = b"S1\r\n".to_vec();
    data.extend(b"\r\n".repeat(2990));
    let next = format!("S2 {}\r\nS3\r\n", "y".repeat(500));
    data.extend(next.as_bytes());
    append(&f, &data);
    let mut cfg = config(&d);
    cfg.limits.max_line_bytes = 3000;
    cfg.inputs[0].multiline = multiline("^S", 10_000, 3000, 1);
    let (mut e, mut sink) = following(cfg, Vec::new());
    e.touch_multiline();
    drain(&mut e, &mut sink, Instant::now() + Duration::from_secs(60));
    let got = shipped_text(&sink);
    let want = [
        format!("S1{}", "\n".repeat(2990)),
        format!("S2 {}", "y".repeat(500)),
        "S3".to_string(),
    ];
    assert_eq!(got, want);
    fs::remove_dir_all(&d).unwrap();
}

/// The stop's summary names the files that end in something not shipped yet: a line without its
/// newline, and with multiline an event not complete yet (t32 F6: such a file was not named).
#[tokio::test(start_paused = true)]
async fn files_ending_in_a_line_or_an_event_not_complete_yet_are_counted() {
    let d = dir("unfinished");
    append(&d.join("a.log"), b"one\ntwo wai");
    append(&d.join("b.log"), b"three\n");
    let (e, sink) = following(config(&d), Vec::new());
    assert_eq!(shipped_text(&sink), ["one", "three"]);
    assert_eq!(e.unfinished_lines(), ((1, 7), (0, 0)));
    fs::remove_dir_all(&d).unwrap();

    let d = dir("unfinished-events");
    append(&d.join("m.log"), b"START a\n cont\nSTART b\n cont2\n");
    append(&d.join("m2.log"), b"START c\n partial");
    let mut cfg = config(&d);
    cfg.inputs[0].multiline = multiline("^START", 500, 1000, 30);
    let (e, sink) = following(cfg, Vec::new());
    assert_eq!(shipped_text(&sink), ["START a\n cont"]);
    // m2.log's event ends in a line without its newline: counted as such (t34 F5).
    assert_eq!(e.unfinished_lines(), ((1, 16), (1, 15)));
    fs::remove_dir_all(&d).unwrap();
}

/// copytruncate with a glob that matches the copy: the copy, found by a scan before the truncation,
/// waits and is then read on from where the original was read to: the lines written before the copy
/// that were not read yet arrive once, the others are not shipped again.
#[tokio::test(start_paused = true)]
async fn a_copy_matched_by_the_glob_is_read_on_from_where_its_original_was() {
    let d = dir("copy-judged");
    let f = d.join("a.log");
    append(&f, &lines_of("a", 100));
    let (mut e, mut sink) = following(config(&d), Vec::new());
    assert_eq!(sink.shipped.len(), 100);
    // Written, not read yet; then copied (named like logrotate's dateext, matched by *.log).
    let more = lines_of("b", 10);
    append(&f, &more);
    fs::copy(&f, d.join("a.log-1.log")).unwrap();
    scan_now(&mut e);
    // The copy is judged before the original is read again: it waits.
    let copy_key = key_at(&e, "a.log-1.log");
    assert!(!e.judge_copy(copy_key, Instant::now()), "a copy waits");
    drain(&mut e, &mut sink, Instant::now());
    // The original read its 10 new lines itself, then is truncated and written again.
    truncate(&f);
    append(&f, b"after\n");
    e.touch(&f);
    drain(&mut e, &mut sink, Instant::now());
    let got = shipped_text(&sink);
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got.len(), unique.len(), "no line twice: {got:?}");
    assert_eq!(got.len(), 111, "{got:?}");
    assert_eq!(got.last().unwrap(), "after");
    fs::remove_dir_all(&d).unwrap();
}

/// A new file that only starts like a followed one (the same banner) is read from its start: at
/// once when it differs before where the other was read to or is not named as its copy would be,
/// and as soon as it differs when it was the banner alone at first. A copy left unchanged while its original is not truncated (a `cp`
/// backup) is read from its start after COPY_PATIENCE, as any new file.
#[tokio::test(start_paused = true)]
async fn a_file_that_only_starts_like_another_or_a_backup_copy_is_read_from_its_start() {
    let d = dir("copy-not");
    let banner = lines_of("banner", 8);
    let a = d.join("a.log");
    append(&a, &banner);
    append(&a, &lines_of("a", 50));
    let (mut e, mut sink) = following(config(&d), Vec::new());
    sink.shipped.clear();
    // The same banner, then other lines: not a copy.
    let b = d.join("b.log");
    append(&b, &banner);
    append(&b, &lines_of("b", 5));
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    assert_eq!(sink.shipped.len(), 13, "{:?}", shipped_text(&sink));
    sink.shipped.clear();
    // The same bytes under a name that is not a copy's (another instance's log, a twin): read at
    // once, whole, and not credited with the other's lines when that one is truncated.
    fs::copy(&a, d.join("twin.log")).unwrap();
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    assert_eq!(sink.shipped.len(), 58, "{:?}", shipped_text(&sink));
    sink.shipped.clear();
    // The banner alone, named as a copy would be: it waits, then is read whole as soon as it
    // differs.
    let c = d.join("a.log-c.log");
    append(&c, &banner);
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    assert!(sink.pending.is_empty(), "the banner alone waits");
    append(&c, &lines_of("c", 3));
    e.touch(&c);
    drain(&mut e, &mut sink, Instant::now());
    assert_eq!(sink.shipped.len(), 11, "{:?}", shipped_text(&sink));
    sink.shipped.clear();
    // A backup copy that stays as it is: read from its start once COPY_PATIENCE has passed.
    fs::copy(&a, d.join("a.log.bak.log")).unwrap();
    scan_now(&mut e);
    let t0 = Instant::now();
    e.read_pass(&mut sink, 1, t0);
    assert!(sink.pending.is_empty(), "a copy waits");
    e.wake_copies();
    e.read_pass(&mut sink, 1, t0 + COPY_PATIENCE / 2);
    assert!(sink.pending.is_empty(), "still");
    e.wake_copies();
    drain(
        &mut e,
        &mut sink,
        t0 + COPY_PATIENCE + Duration::from_secs(1),
    );
    assert_eq!(sink.shipped.len(), 58, "the backup, whole");
    fs::remove_dir_all(&d).unwrap();
}

/// A file renamed away with a last line without its newline: that line is sent once the file has been
/// quiet for ROTATED_GRACE, by the next tick, with no event for it (it used to wait for the safety
/// rescan, a minute).
#[tokio::test(start_paused = true)]
async fn a_rotated_files_unfinished_last_line_is_sent_after_the_grace_without_an_event() {
    let d = dir("rotated-partial");
    let f = d.join("q.log");
    append(&f, b"q1\nq2-partial");
    let (mut e, mut sink) = following(config(&d), Vec::new());
    assert_eq!(shipped_text(&sink), ["q1"]);
    fs::rename(&f, d.join("q.old")).unwrap();
    scan_now(&mut e);
    let t0 = Instant::now();
    drain(&mut e, &mut sink, t0);
    e.close_idle(t0 + ROTATED_GRACE / 2, false);
    drain(&mut e, &mut sink, t0 + ROTATED_GRACE / 2);
    assert_eq!(shipped_text(&sink), ["q1"], "not quiet long enough yet");
    let later = t0 + ROTATED_GRACE + Duration::from_secs(1);
    e.close_idle(later, false);
    drain(&mut e, &mut sink, later);
    assert_eq!(shipped_text(&sink), ["q1", "q2-partial"]);
    fs::remove_dir_all(&d).unwrap();
}

/// A file rewritten in place with the same first bytes (a banner longer than the fingerprint) and
/// grown past our position before we look: read again from its start, while running (the bytes
/// before our position changed) and after a restart (our position is no line start). It used to go on
/// from the old position: the new lines before it lost, a fragment of one shipped.
#[tokio::test(start_paused = true)]
async fn a_file_rewritten_with_the_same_banner_past_our_position_is_read_from_its_start() {
    let d = dir("rewritten");
    let f = d.join("app.log");
    let banner = format!("{}\n", "#".repeat(300));
    let body = |c: char, n: usize, w: usize| -> String {
        (0..n)
            .map(|i| format!("{c} {i:06} {}\n", "y".repeat(w)))
            .collect()
    };
    fs::write(&f, format!("{banner}{}", body('A', 100, 40))).unwrap();
    let (mut e, mut sink) = following(config(&d), Vec::new());
    assert_eq!(sink.shipped.len(), 101);
    sink.shipped.clear();
    // Rewritten (lines of the same length: every line end where an old one was) and grown.
    fs::write(&f, format!("{banner}{}", body('B', 300, 40))).unwrap();
    e.touch(&f);
    drain(&mut e, &mut sink, Instant::now());
    let got = shipped_text(&sink);
    assert_eq!(
        got.len(),
        301,
        "every line of the new content: {:?}",
        &got[..3]
    );
    assert!(got
        .iter()
        .all(|l| l.starts_with('#') || l.starts_with("B ")));
    // Stopped, rewritten again (lines of another length), restarted from the checkpoint.
    let ckpt = e.checkpoint_entries();
    fs::write(&f, format!("{banner}{}", body('C', 400, 47))).unwrap();
    let (_e2, sink2) = following(config(&d), ckpt);
    let got = shipped_text(&sink2);
    assert_eq!(
        got.len(),
        401,
        "every line of the new content: {:?}",
        &got[..3]
    );
    assert!(got
        .iter()
        .all(|l| l.starts_with('#') || l.starts_with("C ")));
    fs::remove_dir_all(&d).unwrap();
}

/// A new file that reuses the inode of one read before, under another name (gzip writing the `.gz`
/// of a rotated log it then deletes: the inode freed is the next one handed out), is a new file:
/// read from its start, and no truncation counted (t8 saw `shipper_truncations_total` rise with
/// logrotate's `compress`). The same name with other bytes is still a truncation.
#[tokio::test(start_paused = true)]
async fn a_new_file_reusing_an_inode_under_another_name_is_no_truncation() {
    let d = dir("reused-name");
    let text = |b: Vec<u8>| -> Vec<String> {
        String::from_utf8(b)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let old = d.join("app-1.log");
    append(&old, &lines_of("old", 20));
    let (e, sink) = following(config(&d), Vec::new());
    assert_eq!(sink.shipped.len(), 20);
    let ckpt = e.checkpoint_entries();
    // The inode under a new name with other bytes: what reuse looks like from here.
    let new = d.join("app-1.gz.log");
    fs::rename(&old, &new).unwrap();
    fs::write(&new, b"\x1f\x8b\x08\x00compressed bytes").unwrap();
    let (e2, sink2) = following(config(&d), ckpt.clone());
    assert!(sink2.shipped.is_empty(), "{:?}", shipped_text(&sink2));
    assert_eq!(e2.counters.truncations, 0);
    // Text this time: every line of the new file, still no truncation.
    fs::write(&new, lines_of("new", 5)).unwrap();
    let (e3, sink3) = following(config(&d), ckpt);
    assert_eq!(shipped_text(&sink3), text(lines_of("new", 5)));
    assert_eq!(e3.counters.truncations, 0);
    // Under its own name, other bytes: truncated (and rewritten) while we were away.
    let ckpt = e3.checkpoint_entries();
    fs::write(&new, lines_of("newer", 3)).unwrap();
    let (e4, sink4) = following(config(&d), ckpt);
    assert_eq!(shipped_text(&sink4), text(lines_of("newer", 3)));
    assert_eq!(e4.counters.truncations, 1);
    fs::remove_dir_all(&d).unwrap();
}

/// A compressed file is said once, whether a read or a scan tells it first, and as a warning for the
/// first one only: each rotation under logrotate's `compress` makes a new one (t27: the same `.1.gz`
/// warned twice, by a read and by the next scan, and 75 warnings in 10 s in all).
#[tokio::test(start_paused = true)]
async fn compressed_files_are_warned_about_once_and_only_the_first_of_them() {
    let d = dir("compressed-said");
    append(&d.join("a.log"), &lines_of("a", 3));
    let (mut e, mut sink) = following(config(&d), Vec::new());
    // gzip creates its file empty, then writes it: followed first, then told by a read.
    let gz = d.join("a-1.log");
    append(&gz, b"");
    scan_now(&mut e);
    append(&gz, b"\x1f\x8b\x08\x00compressed bytes");
    e.hot.insert(key_at(&e, "a-1.log"));
    drain(&mut e, &mut sink, Instant::now());
    assert_eq!(
        e.warnings.said, 1,
        "the first compressed file is warned about"
    );
    // The next scan judges it again (it is not followed): not said again.
    scan_now(&mut e);
    assert_eq!(e.warnings.said, 1, "said once per file");
    // The next rotation's: at debug level.
    fs::write(d.join("a-2.log"), b"\x1f\x8b\x08\x00other compressed bytes").unwrap();
    scan_now(&mut e);
    assert_eq!(e.warnings.said, 1, "only the first is a warning");
    assert_eq!(sink.shipped.len(), 3, "the text lines only");
    fs::remove_dir_all(&d).unwrap();
}

/// logrotate with a glob that matches the rotated names (`*.log` here, `app.log*` in life): the
/// rename of the followed file is a rotation once a new file takes its name, counted once (not
/// again when that generation is renamed on or deleted); a rename with no new file under the old
/// name (an older generation moving down) is none. They went uncounted.
#[tokio::test(start_paused = true)]
async fn a_rename_within_the_patterns_is_a_rotation_once_a_new_file_takes_the_name() {
    let d = dir("rename-rotation");
    let live = d.join("app.log");
    append(&live, &lines_of("first", 3));
    let (mut e, mut sink) = following(config(&d), Vec::new());
    assert_eq!(e.counters.rotations, 0);
    // Rotation: app.log -> app.1.log, a new app.log.
    fs::rename(&live, d.join("app.1.log")).unwrap();
    append(&live, &lines_of("second", 2));
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    assert_eq!(e.counters.rotations, 1);
    // The next rotation: app.1.log -> app.2.log (no new app.1.log of its own), app.log -> app.1.log,
    // a new app.log: one more.
    fs::rename(d.join("app.1.log"), d.join("app.2.log")).unwrap();
    fs::rename(&live, d.join("app.1.log")).unwrap();
    append(&live, &lines_of("third", 1));
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    assert_eq!(e.counters.rotations, 2);
    // The oldest generation deleted while still followed: already counted.
    fs::remove_file(d.join("app.2.log")).unwrap();
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    assert_eq!(e.counters.rotations, 2);
    assert_eq!(sink.shipped.len(), 6);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn routine_lines_past_ten_a_window_are_held_and_counted() {
    let mut r = RoutineLines::new(false, "files truncated");
    for i in 0..15 {
        r.say(format_args!("file {i} truncated"));
    }
    assert_eq!((r.said, r.held), (10, 5));
    r.tick();
    assert_eq!(r.held, 5, "the window is not over");
    r.window = Some(std::time::Instant::now() - Duration::from_secs(11));
    r.tick();
    assert_eq!(
        (r.said, r.held, r.window),
        (0, 0, None),
        "counted, then a new window"
    );
}

/// copytruncate while shipper was stopped, with a glob that matches the copy (`a.log*`): the copy is
/// read on from where its original was read to, and not also followed as a new file from byte 0
/// (t15: `a0 a1 e0 b0 b1 a0 a1 b0 b1` after one copytruncate and a restart).
#[tokio::test(start_paused = true)]
async fn a_copy_made_while_stopped_is_read_on_once_when_the_glob_matches_it() {
    let d = dir("copy-stopped");
    let f = d.join("a.log");
    let mut cfg = config(&d);
    cfg.inputs[0].patterns = vec![Pattern::new(&format!("{}/a.log*", d.display()), &[]).unwrap()];
    append(&f, b"a0\na1\n");
    let (e, _sink) = following(cfg.clone(), Vec::new());
    let ckpt = e.checkpoint_entries();
    drop(e);
    // While stopped: more lines, then copytruncate, then a line in the truncated file.
    append(&f, b"b0\nb1\n");
    fs::copy(&f, d.join("a.log.1")).unwrap();
    truncate(&f);
    append(&f, b"e0\n");
    let (_e, sink) = following(cfg, ckpt);
    let mut got = shipped_text(&sink);
    got.sort();
    assert_eq!(got, vec!["b0", "b1", "e0"]);
    fs::remove_dir_all(&d).unwrap();
}

/// The key of the follower whose path ends with `name`.
fn key_at(e: &Engine, name: &str) -> u64 {
    e.followers
        .values()
        .find(|x| x.path.ends_with(name))
        .unwrap()
        .key
}

/// A copy judged while its original has just been truncated, before the read that tells it: it
/// waits for that read and is then read on from where the original was read to. Judged against the
/// truncated file, it was taken for another file and read from its start (CI, under load: 2,100
/// lines twice).
#[tokio::test(start_paused = true)]
async fn a_copy_judged_after_its_original_was_truncated_still_waits_for_it() {
    let d = dir("copy-late");
    let f = d.join("a.log");
    append(&f, &lines_of("a", 100));
    let (mut e, mut sink) = following(config(&d), Vec::new());
    let more = lines_of("b", 10);
    append(&f, &more);
    fs::copy(&f, d.join("a.log-1.log")).unwrap();
    scan_now(&mut e);
    let copy_key = key_at(&e, "a.log-1.log");
    assert!(!e.judge_copy(copy_key, Instant::now()), "a copy waits");
    // Truncated and written again past where it was read, before any read of it.
    truncate(&f);
    append(&f, &lines_of("c", 200));
    assert!(
        !e.judge_copy(copy_key, Instant::now()),
        "still a copy: its original was truncated"
    );
    drain(&mut e, &mut sink, Instant::now());
    let got = shipped_text(&sink);
    let unique: BTreeSet<&String> = got.iter().collect();
    let mut seen = std::collections::BTreeMap::new();
    for g in &got {
        *seen.entry(g[..1].to_string()).or_insert(0) += 1;
    }
    assert_eq!(got.len(), unique.len(), "no line twice: {seen:?}");
    assert_eq!(got.len(), 100 + 10 + 200, "every line once");
    fs::remove_dir_all(&d).unwrap();
}

/// A copy compared with its original just as logrotate truncates it: the comparison fails on the
/// emptied original, and a truncation looked for after it (not before, where it was not there yet)
/// tells the copy from another file. With the look first, the whole copy was read from its start
/// in one run in three of real logrotate `copytruncate` + `compress` at 1,000 lines/s (300 to 500
/// lines twice).
#[tokio::test(start_paused = true)]
async fn a_copy_compared_with_its_original_as_it_is_truncated_is_still_its_copy() {
    let d = dir("copy-against");
    let f = d.join("a.log");
    append(&f, &lines_of("a", 100));
    let (e, _sink) = following(config(&d), Vec::new());
    fs::copy(&f, d.join("a.log-1.log")).unwrap();
    let copy = fs::File::open(d.join("a.log-1.log")).unwrap();
    let other = d.join("other");
    let mut bytes = fs::read(&f).unwrap();
    let n = bytes.len() as u64;
    let o = &e.followers[&key_at(&e, "a.log")];
    assert_eq!(o.read_pos, n, "read to its end");
    let of = fs::File::open(&f).unwrap();
    assert_eq!(against(&copy, &of, o, n), Against::Same);
    // Other bytes just before where it was read to, the first ones the same: another file.
    let at = bytes.len() - 5;
    bytes[at] = b'#';
    fs::write(&other, &bytes).unwrap();
    let look_alike = fs::File::open(&other).unwrap();
    assert_eq!(against(&look_alike, &of, o, n), Against::Other);
    // Emptied: the comparison cannot be made, and the truncation decides.
    truncate(&f);
    assert_eq!(against(&copy, &of, o, n), Against::Truncated);
    // Written again past where it was read, with other first bytes.
    append(&f, &lines_of("c", 200));
    assert_eq!(against(&copy, &of, o, n), Against::Truncated);
    drop(e);
    fs::remove_dir_all(&d).unwrap();
}

/// A copy first seen after its original was truncated and written again past where it was read
/// (other first bytes, not shorter): it waits for the read that tells the truncation, as one judged
/// before it. Only a shorter original counted as truncated here, so the copy was compared with the
/// new bytes, taken for another file and read from its start (a full broker run: 2,301 lines twice,
/// "3 truncations (2 read on from their copy)").
#[tokio::test(start_paused = true)]
async fn a_copy_first_seen_after_its_original_was_truncated_and_grew_again_waits_for_it() {
    let d = dir("copy-regrown");
    let f = d.join("a.log");
    append(&f, &lines_of("a", 100));
    let (mut e, mut sink) = following(config(&d), Vec::new());
    append(&f, &lines_of("b", 10));
    fs::copy(&f, d.join("a.log-1.log")).unwrap();
    scan_now(&mut e);
    let copy_key = key_at(&e, "a.log-1.log");
    assert_eq!(e.followers[&copy_key].copy, CopyOf::Unjudged);
    // Truncated and written again past where it was read, before the copy's first judgement and
    // before any read of the original.
    truncate(&f);
    append(&f, &lines_of("c", 200));
    assert!(
        !e.judge_copy(copy_key, Instant::now()),
        "a copy of a truncated original waits"
    );
    drain(&mut e, &mut sink, Instant::now());
    let got = shipped_text(&sink);
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got.len(), unique.len(), "no line twice");
    assert_eq!(got.len(), 100 + 10 + 200, "every line once");
    fs::remove_dir_all(&d).unwrap();
}

/// copytruncate in the middle of a read: the read stops at the truncation having moved on, and the
/// bytes before the new position are what the copy is checked against. They were those before the
/// old position, so the copy was taken for truncated too and read again from its start (t29 F5: 220
/// lines twice, the whole copy). Truncated after the first line of the read (the next one faults)
/// and after its last (the file's first bytes then tell).
#[tokio::test(start_paused = true)]
async fn a_copy_made_in_the_middle_of_a_read_is_read_on_from_where_the_read_stopped() {
    for (case, skip) in [("fault", 0), ("first-bytes", 1)] {
        let d = dir(&format!("copy-mid-read-{case}"));
        let f = d.join("a.log");
        append(&f, b"");
        let (mut e, mut sink) = following(config(&d), Vec::new());
        append(&f, &lines_of("a", 3));
        scan_now(&mut e);
        drain(&mut e, &mut sink, Instant::now());
        append(&f, &lines_of("b", 2));
        scan_now(&mut e);
        let (from, copy) = (f.clone(), d.join("a.log.1"));
        sink.on_append_skip = skip;
        sink.on_append = Some(Box::new(move || {
            // The writer adds a line, then logrotate copies and truncates.
            append(&from, &lines_of("c", 1));
            fs::copy(&from, &copy).unwrap();
            truncate(&from);
        }));
        drain(&mut e, &mut sink, Instant::now());
        append(&f, &lines_of("d", 2));
        scan_now(&mut e);
        drain(&mut e, &mut sink, Instant::now());
        let got = shipped_text(&sink);
        let unique: BTreeSet<&String> = got.iter().collect();
        assert_eq!(got.len(), unique.len(), "{case}: no line twice: {got:?}");
        assert_eq!(got.len(), 3 + 2 + 1 + 2, "{case}: every line once: {got:?}");
        assert_eq!(e.counters.copies_read, 1, "{case}");
        fs::remove_dir_all(&d).unwrap();
    }
}

/// A copy that appears only after its original's truncation was handled (moved in later, or seen
/// after it in a race with logrotate `copytruncate` + `compress`) is read on from where the original
/// was read to, also when the original was written again meanwhile; it was read from its start
/// (t27: every line of the copy twice, by hand 5 of 5, with logrotate 4 runs of 8). A file named
/// like a copy that does not hold what was read is read from its start.
#[tokio::test(start_paused = true)]
async fn a_copy_seen_after_its_originals_truncation_was_handled_is_read_on() {
    for (case, rewrite) in [("late", 0), ("late-rewritten", 150)] {
        let d = dir(&format!("copy-{case}"));
        let f = d.join("a.log");
        append(&f, &lines_of("a", 100));
        let (mut e, mut sink) = following(config(&d), Vec::new());
        append(&f, &lines_of("b", 10));
        fs::copy(&f, d.join("aside")).unwrap();
        truncate(&f);
        if rewrite > 0 {
            append(&f, &lines_of("c", rewrite));
        }
        scan_now(&mut e);
        drain(&mut e, &mut sink, Instant::now());
        assert_eq!(e.counters.truncations, 1, "{case}");
        fs::rename(d.join("aside"), d.join("a.log-1.log")).unwrap();
        // Another file named like a copy, which does not hold what was read: its own lines.
        append(&d.join("a.log-2.log"), &lines_of("z", 5));
        scan_now(&mut e);
        drain(&mut e, &mut sink, Instant::now());
        let got = shipped_text(&sink);
        let unique: BTreeSet<&String> = got.iter().collect();
        assert_eq!(got.len(), unique.len(), "{case}: no line twice");
        assert_eq!(got.len(), 100 + 10 + rewrite + 5, "{case}: every line once");
        assert_eq!(e.counters.copies_read, 1, "{case}");
        fs::remove_dir_all(&d).unwrap();
    }
}

/// A copy shorter than where its original was read to (the writer added lines between logrotate's
/// copy and its truncation, and they were read), seen only after the truncation was handled: with
/// `compress`, gzip unlinks the copy before the truncation is handled, so no copy is found then, while
/// a scan already holds it open and brings it in after. All of it was read from the original: it was
/// read again from its start (t29 F5 under logrotate every 100-300 ms, about one run in six: 306
/// lines twice, the whole copy). One made after the truncation was handled is not that copy (the next
/// generation's, with the same first bytes): its lines are read.
#[tokio::test(start_paused = true)]
async fn a_copy_shorter_than_its_original_was_read_seen_after_the_truncation_is_not_read_again() {
    for case in ["copy", "next-generation"] {
        let d = dir(&format!("copy-late-shorter-{case}"));
        let f = d.join("a.log");
        append(&f, &lines_of("a", 100));
        let (mut e, mut sink) = following(config(&d), Vec::new());
        fs::copy(&f, d.join("aside")).unwrap();
        // Lines between the copy and the truncation, read before it.
        append(&f, &lines_of("b", 10));
        scan_now(&mut e);
        drain(&mut e, &mut sink, Instant::now());
        truncate(&f);
        scan_now(&mut e);
        drain(&mut e, &mut sink, Instant::now());
        assert_eq!(e.counters.truncations, 1, "{case}");
        let new_lines = if case == "copy" {
            fs::rename(d.join("aside"), d.join("a.log-1.log")).unwrap();
            0
        } else {
            // Named like a copy and starting with the same bytes, but written after the
            // truncation was handled: lines never read.
            std::thread::sleep(Duration::from_millis(20));
            append(&d.join("a.log-2.log"), &lines_of("a", 50));
            50
        };
        scan_now(&mut e);
        drain(&mut e, &mut sink, Instant::now());
        let got = shipped_text(&sink);
        let unique: BTreeSet<String> = got[..110].iter().cloned().collect();
        assert_eq!(unique.len(), 110, "{case}: no line twice");
        assert_eq!(
            got.len(),
            110 + new_lines,
            "{case}: every line once: {got:?}"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}

/// copytruncate over every followed file when the descriptor budget is spent: each copy taken up
/// is closed again until a descriptor is free, and read as scans re-open them. t15: 500 files under
/// `ulimit -n 256` opened a copy per truncation beyond the budget; scans and the checkpoint then
/// failed with EMFILE, and lines waited unshipped until a restart.
#[tokio::test(start_paused = true)]
async fn copies_taken_up_at_truncations_stay_within_the_descriptor_budget() {
    let d = dir("copy-budget");
    let mut cfg = config(&d);
    cfg.max_open_files = 8;
    let names: Vec<PathBuf> = (0..8).map(|i| d.join(format!("f{i}.log"))).collect();
    for (i, f) in names.iter().enumerate() {
        append(f, &lines_of(&format!("a{i}"), 20));
    }
    let (mut e, mut sink) = following(cfg, Vec::new());
    assert_eq!((sink.shipped.len(), e.open_files()), (160, 8));
    // Lines not read yet, then copytruncate of every file (copies `.1`, not matched by `*.log`).
    for (i, f) in names.iter().enumerate() {
        append(f, &lines_of(&format!("b{i}"), 5));
        fs::copy(f, f.with_extension("log.1")).unwrap();
        truncate(f);
    }
    scan_now(&mut e);
    assert!(e.open_files() <= 8, "{} open", e.open_files());
    assert!(e.starved(), "copies wait for a descriptor");
    let mut now = Instant::now();
    for _ in 0..20 {
        drain(&mut e, &mut sink, now);
        assert!(e.open_files() <= 8, "{} open", e.open_files());
        if sink.shipped.len() >= 200 {
            break;
        }
        now += Duration::from_secs(6);
        e.close_idle(now, false);
        scan_now(&mut e);
        assert!(e.open_files() <= 8, "{} open", e.open_files());
    }
    let got = shipped_text(&sink);
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got.len(), unique.len(), "no line twice");
    assert_eq!(got.len(), 200, "every line once");
    assert!(!e.starved());
    fs::remove_dir_all(&d).unwrap();
}

/// A copy taken up while a scan is under way keeps its descriptor when there are plenty: the scan
/// is lent all but a few of the free ones. Lent all of them, the copy was closed "until a
/// descriptor is free" with thousands to spare (t27, at -v under copytruncate), its lines waiting
/// for the next scan, and lost if logrotate's `compress` removed it first.
#[tokio::test(start_paused = true)]
async fn a_copy_taken_up_during_a_scan_stays_open_when_descriptors_are_plenty() {
    let d = dir("copy-during-scan");
    let f = d.join("a.log");
    append(&f, &lines_of("a", 20));
    let (mut e, mut sink) = following(config(&d), Vec::new());
    assert_eq!(sink.shipped.len(), 20);
    let pending = e.scan_request(None);
    append(&f, &lines_of("b", 5));
    fs::copy(&f, d.join("a.log.1")).unwrap();
    truncate(&f);
    // As an inotify event would.
    e.hot.insert(key_at(&e, "a.log"));
    drain(&mut e, &mut sink, Instant::now());
    assert!(
        !e.starved(),
        "the copy is not closed for want of a descriptor"
    );
    assert_eq!(
        sink.shipped.len(),
        25,
        "its unread lines are shipped at once"
    );
    assert!(e.open_files() <= 3, "{} open", e.open_files());
    e.apply_scan(scan::run(pending), Instant::now(), false);
    fs::remove_dir_all(&d).unwrap();
}

/// More busy files than descriptors: at each rescan every file read to its end gives its
/// descriptor back, files never opened go first, and a closed file truncated below where it was
/// read is re-opened (its new lines did not wait for it to grow past that point). Kept until quiet,
/// the first files held their descriptors while the others' lines waited, and were rotated away by
/// copytruncate unread.
#[tokio::test(start_paused = true)]
async fn busy_files_take_turns_for_descriptors_and_files_never_opened_go_first() {
    let d = dir("turns");
    let mut cfg = config(&d);
    cfg.max_open_files = 2;
    let names: Vec<PathBuf> = (0..4).map(|i| d.join(format!("f{i}.log"))).collect();
    for (i, f) in names.iter().enumerate() {
        append(f, &lines_of(&format!("a{i}"), 3));
    }
    let (mut e, mut sink) = following(cfg, Vec::new());
    assert_eq!((sink.shipped.len(), e.open_files()), (6, 2));
    // The two left out are said, with their bytes (the stats line: "N waiting for a descriptor").
    let one = lines_of("a0", 3).len() as u64;
    assert_eq!(e.waiting_bytes(), (2, 2 * one));
    assert_eq!(e.bytes_behind(), 2 * one, "what waits is behind");
    let now = Instant::now();
    // Every file is written again: the two open ones are busy, never quiet.
    for (i, f) in names.iter().enumerate() {
        append(f, &lines_of(&format!("b{i}"), 2));
        e.touch(f);
    }
    drain(&mut e, &mut sink, now);
    assert_eq!(sink.shipped.len(), 10);
    // A scan under way does not keep the closed files' descriptors (t16: 192 open, stats said 0).
    let req = e.scan_request(None);
    e.close_idle(now, true);
    assert_eq!(e.open_files(), 0, "read to their end, busy or not: closed");
    assert_eq!(
        fds_under(&d),
        0,
        "closed while a scan was asked for: given back"
    );
    e.apply_scan(scan::run(req), Instant::now(), false);
    // Written again: the closed files grew, yet the two never opened have their turn first.
    append(&names[0], b"c0\n");
    append(&names[1], b"c1\n");
    scan_now(&mut e);
    assert_eq!(
        e.waiting_bytes(),
        (2, 6),
        "closed files that grew and wait for their turn are counted with their new bytes"
    );
    assert_eq!(e.open_files(), 2);
    drain(&mut e, &mut sink, now);
    assert_eq!(
        sink.shipped.len(),
        20,
        "the files never opened had their turn first: {:#?}",
        shipped_text(&sink)
    );
    e.close_idle(now, true);
    scan_now(&mut e);
    drain(&mut e, &mut sink, now);
    assert_eq!(sink.shipped.len(), 22, "then the closed ones that grew");
    assert_eq!(e.waiting_bytes(), (0, 0), "every file has had a descriptor");
    // A closed file truncated and written again, shorter than it was read: re-opened in its turn.
    e.close_idle(now, true);
    truncate(&names[0]);
    append(&names[0], b"d0\n");
    for _ in 0..3 {
        e.close_idle(now, true);
        scan_now(&mut e);
        drain(&mut e, &mut sink, now);
    }
    let got = shipped_text(&sink);
    assert_eq!(got.len(), 23, "{got:?}");
    assert_eq!(got.last().unwrap(), "d0");
    fs::remove_dir_all(&d).unwrap();
}

/// A copy matched by the glob, judged while its original is closed waiting for its turn for a
/// descriptor: the original is opened again by path for the comparison, and the copy is read on
/// from where the original was read to. Compared only while open, it was taken for another file
/// and read from its start (t16: 40% duplicates under `ulimit -n 128` with `*.log*`).
#[tokio::test(start_paused = true)]
async fn a_copy_of_a_closed_original_is_read_on_from_where_it_was() {
    let d = dir("copy-closed");
    let f = d.join("a.log");
    append(&f, &lines_of("a", 100));
    let mut cfg = config(&d);
    cfg.max_open_files = 1;
    let (mut e, mut sink) = following(cfg, Vec::new());
    assert_eq!(sink.shipped.len(), 100);
    let now = Instant::now();
    e.close_idle(now, true);
    assert_eq!(e.open_files(), 0);
    // Written while closed, copied (named as dateext names it, matched by *.log), truncated.
    append(&f, &lines_of("b", 10));
    fs::copy(&f, d.join("a.log-1.log")).unwrap();
    truncate(&f);
    append(&f, b"after\n");
    for _ in 0..6 {
        scan_now(&mut e);
        drain(&mut e, &mut sink, now);
        e.close_idle(now, true);
    }
    let got = shipped_text(&sink);
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(
        got.len(),
        unique.len(),
        "no line twice: {} lines",
        got.len()
    );
    assert_eq!(got.len(), 111, "{got:?}");
    fs::remove_dir_all(&d).unwrap();
}

/// A closed file truncated and written again to the very size it was read to (lines of one width)
/// is re-opened by the next scan and read from its start: by its size alone it looked unchanged,
/// and its new lines were never read (t16: whole current generations under a low descriptor
/// limit, while the stats said 0 bytes behind).
#[tokio::test(start_paused = true)]
async fn a_closed_file_rewritten_to_the_size_it_was_read_to_is_read_again() {
    let d = dir("same-size");
    let f = d.join("a.log");
    append(&f, b"old 1\nold 2\n");
    let (mut e, mut sink) = following(config(&d), Vec::new());
    assert_eq!(shipped_text(&sink), ["old 1", "old 2"]);
    let now = Instant::now();
    e.close_idle(now, true);
    assert_eq!(e.open_files(), 0);
    // The kernel's timestamps are coarse (a tick): a later write gets a later one.
    std::thread::sleep(Duration::from_millis(30));
    truncate(&f);
    append(&f, b"new 1\nnew 2\n");
    scan_now(&mut e);
    drain(&mut e, &mut sink, now);
    assert_eq!(shipped_text(&sink), ["old 1", "old 2", "new 1", "new 2"]);
    fs::remove_dir_all(&d).unwrap();
}

/// logrotate's `copytruncate` + `delaycompress`: the copy followed at the last stop is compressed
/// away while shipper is stopped and the next copy gets its inode. That is another file, not the
/// old copy rewritten: its lines were all read from the original, so nothing is read again (t20 F2:
/// the whole generation was read from its start, every line twice).
#[tokio::test(start_paused = true)]
async fn a_new_copy_in_an_old_copys_inode_is_not_read_again_after_a_restart() {
    let d = dir("copy-reused");
    let f = d.join("a.log");
    let copy = d.join("a.log.1");
    append(&f, &lines_of("a", 50));
    let (mut e, mut sink) = following(config(&d), Vec::new());
    // copytruncate seen live: the copy gets a checkpoint entry of its own.
    fs::copy(&f, &copy).unwrap();
    truncate(&f);
    append(&f, &lines_of("b", 10));
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    append(&f, &lines_of("c", 50));
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    assert_eq!(sink.shipped.len(), 110);
    let ckpt = e.checkpoint_entries();
    assert!(ckpt.iter().any(|x| x.path == copy), "{ckpt:?}");
    drop(e);
    // While stopped, the next rotation: the new copy is written into the old copy's inode.
    fs::write(&copy, fs::read(&f).unwrap()).unwrap();
    truncate(&f);
    append(&f, b"d0\n");
    let (_e, sink) = following(config(&d), ckpt);
    assert_eq!(shipped_text(&sink), vec!["d0"]);
    fs::remove_dir_all(&d).unwrap();
}

/// copytruncate while shipper was stopped, of a file that was empty at the last stop: nothing in the
/// file tells (no first bytes, nothing it is shorter than); the copy next to it, newer than the
/// checkpoint, is read from its start, and an older generation is not (t20 F1: the copy's lines were
/// lost).
#[tokio::test(start_paused = true)]
async fn a_copy_of_a_file_empty_at_the_last_stop_is_read_when_newer_than_the_checkpoint() {
    let d = dir("copy-empty");
    let f = d.join("a.log");
    append(&f, b"");
    append(&d.join("a.log.2"), b"an older generation\n");
    let (e, _sink) = following(config(&d), Vec::new());
    let ckpt = e.checkpoint_entries();
    drop(e);
    std::thread::sleep(Duration::from_millis(20));
    let written = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    // While stopped: lines, copytruncate, a line.
    append(&f, b"a0\na1\n");
    fs::copy(&f, d.join("a.log.1")).unwrap();
    truncate(&f);
    append(&f, b"e0\n");
    let mut e = Engine::new(config(&d), ckpt);
    e.set_checkpoint_written(Some(written));
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    let mut got = shipped_text(&sink);
    got.sort();
    assert_eq!(got, vec!["a0", "a1", "e0"]);
    fs::remove_dir_all(&d).unwrap();
}

/// A file copied and truncated before any of it was read (its reading waited: behind its copy, a
/// topic, a descriptor): the generation that was seen is read from its copy, then the new one —
/// running, and at a restart from a checkpoint written then (helper-67: a kill -9 loop under
/// copytruncate lost whole generations; a read from byte 0 took the new bytes for the file's).
#[tokio::test(start_paused = true)]
async fn a_file_copytruncated_before_any_of_it_was_read_is_read_from_its_copy() {
    for restart in [false, true] {
        let d = dir(&format!("copy-unread-{restart}"));
        let f = d.join("a.log");
        append(&f, b"a0\na1\n");
        let mut e = Engine::new(config(&d), Vec::new());
        scan_now(&mut e);
        let ckpt = e.checkpoint_entries();
        assert_eq!(ckpt.len(), 1, "followed, nothing read");
        assert_eq!(ckpt[0].offset, 0);
        fs::copy(&f, d.join("a.log.1")).unwrap();
        truncate(&f);
        append(&f, b"b0\n");
        let mut sink = FakeSink::default();
        if restart {
            drop(e);
            e = Engine::new(config(&d), ckpt);
            scan_now(&mut e);
        }
        drain(&mut e, &mut sink, Instant::now());
        let mut got = shipped_text(&sink);
        got.sort();
        assert_eq!(got, ["a0", "a1", "b0"], "restart: {restart}");
        fs::remove_dir_all(&d).unwrap();
    }
}

/// A sibling named like a copy (`a.log.json`) that existed before the checkpoint was written and was
/// written to since is no copy of a file empty then: it is not read under that file (t49: it was,
/// from its start, and followed for good though no pattern matches it). Needs birth times.
#[tokio::test(start_paused = true)]
async fn a_busy_sibling_of_a_file_empty_at_the_last_stop_is_no_copy_of_it() {
    let d = dir("copy-empty-sibling");
    let f = d.join("a.log");
    let sibling = d.join("a.log.json");
    append(&f, b"");
    append(&sibling, b"{\"j\":0}\n");
    let born = fs::File::open(&sibling)
        .unwrap()
        .metadata()
        .unwrap()
        .created();
    let (e, _sink) = following(config(&d), Vec::new());
    let ckpt = e.checkpoint_entries();
    drop(e);
    std::thread::sleep(Duration::from_millis(20));
    let written = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    append(&sibling, b"{\"j\":1}\n");
    append(&f, b"e0\n");
    let mut e = Engine::new(config(&d), ckpt);
    e.set_checkpoint_written(Some(written));
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    drain(&mut e, &mut sink, Instant::now());
    fs::remove_dir_all(&d).unwrap();
    // Without birth times a file modified since is taken for the copy (README).
    if born.is_ok() {
        assert_eq!(shipped_text(&sink), ["e0"]);
    }
}

/// Names a scan passes over (links, FIFOs) are forgotten once gone, and their warnings are limited
/// like routine lines: a user making and removing link names cannot grow shipper's memory or fill
/// its log (t23 F1: 100,000 names, 31 MB RssAnon and 35 MB of warnings, never freed).
#[tokio::test(start_paused = true)]
async fn names_passed_over_are_forgotten_once_gone_and_their_warnings_limited() {
    let d = dir("passed-over");
    fs::write(d.join("app.log"), b"a\n").unwrap();
    let mut e = Engine::new(config(&d), Vec::new());
    for round in 0..3 {
        let names: Vec<PathBuf> = (0..50)
            .map(|i| d.join(format!("link-{round}-{i}.log")))
            .collect();
        for n in &names {
            std::os::unix::fs::symlink("/etc/passwd", n).unwrap();
        }
        scan_now(&mut e);
        scan_now(&mut e);
        assert_eq!(e.scan_warned.len(), 50, "round {round}");
        for n in &names {
            fs::remove_file(n).unwrap();
        }
    }
    scan_now(&mut e);
    assert!(e.scan_warned.is_empty(), "{:?}", e.scan_warned);
    assert_eq!(e.warnings.said, 10, "ten said in the window");
    assert_eq!(e.warnings.held, 140, "the rest counted");
    fs::remove_dir_all(&d).unwrap();
}

/// Deleted files being finished are read after a scan only when their descriptor shows they grew:
/// every one was read after every full scan, and under a create-and-delete churn (1,400 of them
/// held) the other files' lines waited seconds (t23 F2). One that grows is still read.
#[tokio::test(start_paused = true)]
async fn rotated_files_are_read_after_a_scan_only_when_they_grew() {
    let d = dir("rotated-quiet");
    let paths: Vec<PathBuf> = (0..20).map(|i| d.join(format!("f{i}.log"))).collect();
    let mut held = Vec::new();
    for p in &paths {
        append(p, b"one\n");
        held.push(OpenOptions::new().append(true).open(p).unwrap());
    }
    let mut e = Engine::new(config(&d), Vec::new());
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    for p in &paths {
        fs::remove_file(p).unwrap();
    }
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    assert_eq!(sink.shipped.len(), 20);
    scan_now(&mut e);
    assert!(e.hot.is_empty(), "{} rotated files read again", e.hot.len());
    // A writer still holding one appends: read.
    held[3].write_all(b"late\n").unwrap();
    scan_now(&mut e);
    assert_eq!(e.hot.len(), 1);
    e.read_pass(&mut sink, 1, Instant::now());
    ack(&mut e, &mut sink, |_| true);
    assert_eq!(sink.shipped.len(), 21);
    fs::remove_dir_all(&d).unwrap();
}

/// A reload that hands a file to another input (the input renamed) while lines it read are in
/// flight counts their acknowledgements under the input that read them, and the lines read after
/// under the new one (t36 F1: acked{input="b"} grew by lines "a" read, and read minus acked never
/// came back to 0 for either).
#[tokio::test(start_paused = true)]
async fn lines_in_flight_at_a_handover_are_counted_under_the_input_that_read_them() {
    let d = dir("handover");
    let f = d.join("app.log");
    append(&f, &lines_of("a", 3));
    let mut e = Engine::new(config(&d), Vec::new());
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    assert_eq!(sink.pending.len(), 3);
    // One of them acknowledged before the reload, two after.
    ack(&mut e, &mut sink, |i| i == 0);
    let mut renamed = config(&d);
    renamed.inputs[0].name = "renamed".into();
    e.reconfigure(renamed.clone());
    append(&f, &lines_of("b", 2));
    e.touch(&f);
    e.read_pass(&mut sink, 1, Instant::now());
    assert_eq!(sink.pending.len(), 4);
    // Handed back and forth again while the last line read is in flight.
    ack(&mut e, &mut sink, |i| i < 3);
    let mut back = config(&d);
    back.inputs[0].name = "back".into();
    e.reconfigure(back);
    ack(&mut e, &mut sink, |_| true);
    let counts = |input: &str| {
        e.route_counters()
            .get(&(input.to_string(), "t".to_string()))
            .map(|c| (c.lines_read, c.lines_acked))
    };
    assert_eq!(counts("model"), Some((3, 3)));
    assert_eq!(counts("renamed"), Some((2, 2)));
    assert_eq!(counts("back"), None);
    fs::remove_dir_all(&d).unwrap();
}

/// Multiline joining for tests: events start at lines matching `start`.
fn multiline(
    start: &str,
    max_lines: usize,
    max_bytes: usize,
    timeout_s: u64,
) -> Option<Arc<crate::tail::multiline::MultilineConfig>> {
    Some(Arc::new(crate::tail::multiline::MultilineConfig {
        pattern: crate::tail::multiline::StartPattern::new(start).unwrap(),
        rule: crate::tail::multiline::Rule::Start,
        max_lines,
        max_bytes,
        timeout: Duration::from_secs(timeout_s),
    }))
}

/// A deleted file (no name left) whose every line is acknowledged leaves the checkpoint at the stop,
/// so the next start does not warn that it is "neither there nor renamed"; one with lines still
/// unacknowledged stays, and so does a file that is still there.
#[tokio::test(start_paused = true)]
async fn a_deleted_file_with_every_line_acknowledged_leaves_the_checkpoint() {
    let d = dir("deleted-acked");
    let (a, b, c) = (d.join("a.log"), d.join("b.log"), d.join("c.log"));
    append(&a, b"a1\na2\n");
    append(&b, b"b1\n");
    append(&c, b"c1\nc2\n");
    let mut e = Engine::new(config(&d), Vec::new());
    let mut sink = FakeSink::default();
    scan_now(&mut e);
    e.read_pass(&mut sink, 1, Instant::now());
    // Everything acknowledged but c's second line.
    let c2 = sink.pending.iter().position(|(_, v)| v == b"c2").unwrap();
    ack(&mut e, &mut sink, |i| i != c2);
    fs::remove_file(&a).unwrap();
    fs::remove_file(&c).unwrap();
    scan_now(&mut e);
    // Already left out of the checkpoints written in their grace (a crash then does not warn).
    let paths: Vec<PathBuf> = e.checkpoint_entries().into_iter().map(|x| x.path).collect();
    assert!(!paths.contains(&a) && paths.contains(&c), "{paths:?}");
    assert_eq!(e.counters.rotations, 0, "a deletion is no rotation");
    assert_eq!(e.forget_deleted(), 1);
    let paths: Vec<PathBuf> = e.checkpoint_entries().into_iter().map(|x| x.path).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(
        paths.contains(&b) && paths.contains(&c) && !paths.contains(&a),
        "{paths:?}"
    );
    fs::remove_dir_all(&d).unwrap();
}

/// copytruncate under a writer without O_APPEND: the writer writes on at its old offset, and the file
/// read again from the start begins with a hole of NUL bytes. They are passed over (a 10,000-byte
/// hole takes several regions), not shipped as the head of the next line; NUL bytes met later, past
/// the first other byte, are data and ship.
#[tokio::test(start_paused = true)]
async fn the_hole_a_writer_without_append_leaves_after_copytruncate_is_not_shipped() {
    use std::os::unix::fs::FileExt;
    for old in [32usize, 10_000] {
        let d = dir("nul-hole");
        let f = d.join("a.log");
        let first: Vec<u8> = b"0123456789abcde\n".repeat(old.div_ceil(16));
        append(&f, &first[..old - old % 16]);
        let before = old - old % 16;
        let (mut e, mut sink) = following(config(&d), Vec::new());
        assert_eq!(shipped_text(&sink).len(), before / 16);
        truncate(&f);
        e.touch(&f);
        drain(&mut e, &mut sink, Instant::now());
        let w = OpenOptions::new().write(true).open(&f).unwrap();
        w.write_at(b"next line\nand on\n", before as u64).unwrap();
        e.touch(&f);
        drain(&mut e, &mut sink, Instant::now());
        append(&f, b"\0\0 later NULs are data\n");
        e.touch(&f);
        drain(&mut e, &mut sink, Instant::now());
        let got = shipped_text(&sink);
        assert_eq!(
            got[before / 16..],
            ["next line", "and on", "\0\0 later NULs are data"],
            "hole of {before} bytes"
        );
        fs::remove_dir_all(&d).unwrap();
    }
}

/// A generation renamed out of the glob and closed once quiet, then written to late by a writer
/// still holding it: the late lines are shipped, and the rotation stays counted once (opened again
/// and finished again, it was counted as a second rotation).
#[tokio::test(start_paused = true)]
async fn late_lines_in_a_closed_rotated_file_are_shipped_and_not_counted_as_another_rotation() {
    let d = dir("late-rotated");
    let live = d.join("app.log");
    append(&live, &lines_of("first", 3));
    let (mut e, mut sink) = following(config(&d), Vec::new());
    let mut writer = OpenOptions::new().append(true).open(&live).unwrap();
    fs::rename(&live, d.join("app.log.1")).unwrap();
    append(&live, &lines_of("second", 2));
    scan_now(&mut e);
    let t0 = Instant::now();
    drain(&mut e, &mut sink, t0);
    assert_eq!(e.counters.rotations, 1);
    // Quiet past the grace: finished and closed.
    let mut now = t0;
    for _ in 0..2 {
        now += ROTATED_GRACE * 3;
        e.close_idle(now, false);
        drain(&mut e, &mut sink, now);
    }
    // The new app.log's descriptor, and the writer's: the generation's own is closed.
    assert_eq!(fds_under(&d), 2, "the rotated generation is closed");
    writer.write_all(b"late\n").unwrap();
    scan_now(&mut e);
    drain(&mut e, &mut sink, now);
    assert_eq!(shipped_text(&sink).last().map(String::as_str), Some("late"));
    for _ in 0..2 {
        now += ROTATED_GRACE * 3;
        e.close_idle(now, false);
        drain(&mut e, &mut sink, now);
        scan_now(&mut e);
    }
    assert_eq!(e.counters.rotations, 1, "one rotation");
    assert_eq!(sink.shipped.len(), 6);
    fs::remove_dir_all(&d).unwrap();
}

/// A file a scan listed holding bytes and lost before its open is warned about and counted.
#[tokio::test(start_paused = true)]
async fn a_file_deleted_before_its_open_is_warned_about_and_counted() {
    let d = dir("gone-unread");
    let (mut e, _sink) = following(config(&d), Vec::new());
    let r = scan::ScanResult {
        generation: e.generation,
        gone_unread: vec![(d.join("brief.log"), 120)],
        ..Default::default()
    };
    e.apply_scan(r, Instant::now(), false);
    assert_eq!(e.counters.gone_unread, 1);
    assert_eq!(e.warnings.said, 1);
    fs::remove_dir_all(&d).unwrap();
}

//! The fault scenarios of issue #7, on the three-broker cluster (replication 3, min.insync.replicas 2),
//! while `shipper tail` ships a growing file. Each ends by consuming the topic and comparing with what
//! was written: lines lost, lines duplicated. `scripts/fault-test` runs the long variants
//! (SHIPPER_FAULT_LINES=1000000 ...) and prints the table; scripts/test runs short ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::{node, rss_anon_kib};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How the writer rotates its file while it writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rotation {
    None,
    /// logrotate `create`: rename, new file.
    Rename,
    /// logrotate `copytruncate`.
    CopyTruncate,
}

struct Plan {
    lines: usize,
    rate: u64,
    rotation: Rotation,
    /// Every Nth line is this long (bytes), if set.
    big_every: Option<(usize, usize)>,
}

/// What the writer wrote: each line, and whether a copytruncate may have destroyed it unread.
struct Written {
    lines: Vec<String>,
    lossy: Vec<bool>,
}

fn line_text(scenario: &str, i: usize, big: Option<(usize, usize)>) -> String {
    match big {
        Some((every, len)) if i % every == every - 1 => {
            let head = format!("{scenario} {i} big ");
            format!("{head}{}", "B".repeat(len.saturating_sub(head.len())))
        }
        _ => format!("{scenario} {i} {}", "l".repeat(60)),
    }
}

fn start_writer(
    dir: PathBuf,
    scenario: &'static str,
    plan: Plan,
    progress: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Written> {
    std::thread::spawn(move || {
        let path = dir.join("app.log");
        let conf = dir.join("logrotate.conf");
        let mode = if plan.rotation == Rotation::CopyTruncate {
            "copytruncate"
        } else {
            "create"
        };
        std::fs::write(
            &conf,
            format!(
                "{} {{\n  rotate 1000\n  {mode}\n  missingok\n  nocompress\n}}\n",
                path.display()
            ),
        )
        .unwrap();
        let mut w = Written {
            lines: Vec::with_capacity(plan.lines),
            lossy: Vec::with_capacity(plan.lines),
        };
        let mut generation_start = 0;
        let start = Instant::now();
        let chunk = (plan.rate / 100).max(1) as usize;
        let rotate_every = (plan.lines / 6).max(1);
        let mut i = 0;
        while i < plan.lines {
            let n = chunk.min(plan.lines - i);
            let mut data = String::new();
            for k in i..i + n {
                let l = line_text(scenario, k, plan.big_every);
                data.push_str(&l);
                data.push('\n');
                w.lines.push(l);
                w.lossy.push(false);
            }
            append(&path, data.as_bytes());
            i += n;
            progress.store(i, Ordering::Relaxed);
            if plan.rotation != Rotation::None && i / rotate_every != (i - n) / rotate_every {
                let out = std::process::Command::new("logrotate")
                    .args(["-f", "-s"])
                    .arg(dir.join("state"))
                    .arg(&conf)
                    .output()
                    .expect("logrotate");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if plan.rotation == Rotation::CopyTruncate {
                    for l in &mut w.lossy[generation_start..i] {
                        *l = true;
                    }
                }
                generation_start = i;
            }
            let due = Duration::from_secs_f64(i as f64 / plan.rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        w
    })
}

/// One row of the table.
struct Row {
    scenario: &'static str,
    written: usize,
    lost: usize,
    lost_in_window: usize,
    failed_big: usize,
    dups: usize,
    note: String,
}

fn report(row: &Row) {
    let line = format!(
        "| {} | {} | {} | {} | {} | {} | {} |",
        row.scenario, row.written, row.lost, row.lost_in_window, row.failed_big, row.dups, row.note
    );
    eprintln!("{line}");
    if let Ok(p) = std::env::var("SHIPPER_FAULT_REPORT") {
        append(Path::new(&p), format!("{line}\n").as_bytes());
    }
}

/// For the lines of the copytruncate window that did not arrive: how many are still in a file of
/// `dir` (the log or a copy logrotate left), and which (line numbers, as ranges), so a run that lost
/// lines still on disk leaves the evidence in its report.
fn on_disk_note(dir: &Path, lines: &[String], missing: impl Fn(usize) -> bool) -> String {
    let mut on_disk: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("app.log") {
            for l in std::fs::read(e.path())
                .unwrap_or_default()
                .split(|&b| b == b'\n')
            {
                on_disk.insert(l.to_vec());
            }
        }
    }
    let idx: Vec<usize> = (0..lines.len())
        .filter(|&i| missing(i) && on_disk.contains(lines[i].as_bytes()))
        .collect();
    let mut ranges: Vec<String> = Vec::new();
    let mut k = 0;
    while k < idx.len() {
        let start = idx[k];
        while k + 1 < idx.len() && idx[k + 1] == idx[k] + 1 {
            k += 1;
        }
        ranges.push(if idx[k] == start {
            start.to_string()
        } else {
            format!("{start}-{}", idx[k])
        });
        k += 1;
    }
    format!(
        "; of the window's missing lines {} are still on disk{}{}",
        idx.len(),
        if ranges.is_empty() { "" } else { ": lines " },
        ranges.join(", ")
    )
}

/// Waits until the topic stops growing and holds at least `min` records; returns every value.
fn settle(c: &str, t: &str, min: usize, limit: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut last = 0;
    let mut stable_since = Instant::now();
    loop {
        let v = topic_values(c, t);
        if v.len() != last {
            last = v.len();
            stable_since = Instant::now();
        }
        if (v.len() >= min && stable_since.elapsed() > Duration::from_secs(3))
            || Instant::now() > deadline
        {
            return v;
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
}

fn leader_of(c: &str, t: &str) -> i32 {
    let out = shipper_ok(c, &["metadata", t, "-J"], b"");
    let s = String::from_utf8(out).unwrap();
    let i = s.find("\"leader\":").expect("leader in metadata") + 9;
    s[i..]
        .split(|ch: char| !ch.is_ascii_digit() && ch != '-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs one scenario: tail ships while the writer writes and `fault` does its damage.
fn scenario(
    name: &'static str,
    rotation: Rotation,
    big_every: Option<(usize, usize)>,
    topic_configs: &[&str],
    fault: impl FnOnce(&Ctx),
) -> Row {
    scenario_with(name, rotation, big_every, topic_configs, None, fault)
}

/// Like [`scenario`]; with `tail` (a path pattern and flags), `shipper tail` follows that pattern
/// (relative to the scenario's directory) with those flags instead of `app.log`.
fn scenario_with(
    name: &'static str,
    rotation: Rotation,
    big_every: Option<(usize, usize)>,
    topic_configs: &[&str],
    tail: Option<(&str, &[&str])>,
    fault: impl FnOnce(&Ctx),
) -> Row {
    let c = cluster().expect("the cluster is up");
    let lines = env_num("SHIPPER_FAULT_LINES", 30_000) as usize;
    let rate = env_num("SHIPPER_FAULT_RATE", 5_000);
    let dir = scratch_dir(&format!("fault-{name}"));
    let t = topic(&format!("fault-{name}"));
    create_topic(&c, &t, 3, 3, topic_configs);
    append(&dir.join("app.log"), b"");
    let progress = Arc::new(AtomicUsize::new(0));
    let ctx = Ctx {
        c: c.clone(),
        t: t.clone(),
        dir: dir.clone(),
        lines,
        progress: progress.clone(),
        tail: std::sync::Mutex::new(None),
        note: std::sync::Mutex::new(String::new()),
        started: AtomicUsize::new(0),
        pattern: tail.map_or("app.log".to_string(), |t| t.0.to_string()),
        flags: tail.map_or(Vec::new(), |t| t.1.iter().map(|s| s.to_string()).collect()),
    };
    ctx.start_tail();
    let writer = start_writer(
        dir.clone(),
        name,
        Plan {
            lines,
            rate,
            rotation,
            big_every,
        },
        progress,
    );
    fault(&ctx);
    let written = writer.join().unwrap();
    // Lines the topic must hold: neither in a rotation's lossy window nor too large for it (those
    // fail; counting them made this wait its whole limit, 300 s, for records that never come).
    let is_big = |i: usize| big_every.is_some_and(|(every, _)| i % every == every - 1);
    let must = (0..written.lines.len())
        .filter(|&i| !written.lossy[i] && !is_big(i))
        .count();
    let got = settle(&c, &t, must, Duration::from_secs(300));
    let stderr = ctx.stop_tail();
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for v in &got {
        *counts.entry(v.as_slice()).or_default() += 1;
    }
    let (mut lost, mut lost_in_window, mut failed_big) = (0, 0, 0);
    for (i, l) in written.lines.iter().enumerate() {
        if counts.contains_key(l.as_bytes()) {
            continue;
        }
        if is_big(i) {
            failed_big += 1;
        } else if written.lossy[i] {
            lost_in_window += 1;
        } else {
            lost += 1;
        }
    }
    let dups: usize = counts.values().map(|n| n - 1).sum();
    let mut note = ctx.note.lock().unwrap().clone();
    if lost_in_window > 0 {
        note.push_str(&on_disk_note(&dir, &written.lines, |i| {
            written.lossy[i] && !counts.contains_key(written.lines[i].as_bytes())
        }));
    }
    if tail.is_some() {
        // Counted again by an independent client: every line once in kcat's view too.
        let out = kcat(&c, &["-C", "-t", &t, "-e", "-q", "-f", "%s\\n"], b"");
        let seen = crate::harness::lines(&out);
        let mut kc: HashMap<&[u8], usize> = HashMap::new();
        for v in &seen {
            *kc.entry(v.as_slice()).or_default() += 1;
        }
        let kcat_dups: usize = kc.values().map(|n| n - 1).sum();
        let kcat_lost = written
            .lines
            .iter()
            .filter(|l| !kc.contains_key(l.as_bytes()))
            .count();
        note.push_str(&format!(
            "; kcat: {} records, {kcat_lost} lost, {kcat_dups} duplicated",
            seen.len()
        ));
        assert_eq!(
            (kcat_lost, kcat_dups),
            (0, 0),
            "{name}: kcat's count\n{note}"
        );
    }
    let row = Row {
        scenario: name,
        written: written.lines.len(),
        lost,
        lost_in_window,
        failed_big,
        dups,
        note,
    };
    report(&row);
    assert_eq!(lost, 0, "{name}: lost {lost} lines\n{stderr}");
    if name == "cluster-outage" {
        // The operator is told once when delivery stops and once when it resumes.
        assert!(stderr.contains("cannot deliver to Kafka"), "{stderr}");
        assert!(
            stderr.contains("delivering to Kafka again after"),
            "{stderr}"
        );
    }
    row
}

/// What a fault can touch.
struct Ctx {
    c: String,
    t: String,
    dir: PathBuf,
    lines: usize,
    progress: Arc<AtomicUsize>,
    tail: std::sync::Mutex<Option<Tail>>,
    note: std::sync::Mutex<String>,
    started: AtomicUsize,
    /// What `shipper tail` follows (relative to `dir`), and its extra flags.
    pattern: String,
    flags: Vec<String>,
}

impl Ctx {
    fn start_tail(&self) {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let file = self.dir.join(&self.pattern);
        let ck = self.checkpoint().display().to_string();
        let mut args = vec![
            file.to_str().unwrap(),
            &self.t,
            "--checkpoint",
            &ck,
            "--buffer-bytes",
            "4000000",
        ];
        args.extend(self.flags.iter().map(String::as_str));
        let tail = Tail::start(&self.c, &args, &self.dir.join(format!("tail-{n}.err")));
        *self.tail.lock().unwrap() = Some(tail);
    }

    fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    fn kill_tail(&self) {
        if let Some(mut t) = self.tail.lock().unwrap().take() {
            t.stop("KILL");
        }
    }

    fn stop_tail(&self) -> String {
        match self.tail.lock().unwrap().take() {
            Some(mut t) => {
                t.stop("INT");
                t.stderr()
            }
            None => String::new(),
        }
    }

    /// Waits until the writer has written this fraction of its lines.
    fn at(&self, fraction: f64) {
        let target = (self.lines as f64 * fraction) as usize;
        while self.progress.load(Ordering::Relaxed) < target {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn note(&self, s: String) {
        *self.note.lock().unwrap() = s;
    }
}

pub fn leader_killed_and_restarted() {
    scenario("leader-kill", Rotation::Rename, None, &[], |ctx| {
        ctx.at(0.3);
        let leader = leader_of(&ctx.c, &ctx.t);
        node("kill", leader);
        ctx.at(0.6);
        node("start", leader);
        ctx.note(format!(
            "kill -9 broker {leader} (leader of partition 0), restarted; rename rotation"
        ));
    });
}

pub fn rolling_restart() {
    scenario("rolling-restart", Rotation::Rename, None, &[], |ctx| {
        ctx.at(0.2);
        for id in 1..=3 {
            node("stop", id);
            node("start", id);
        }
        ctx.note("each broker stopped and started in turn; rename rotation".into());
    });
}

pub fn shipper_killed_ten_times() {
    scenario("shipper-kill", Rotation::CopyTruncate, None, &[], |ctx| {
        let mut rng = 0x9e37_79b9_u64;
        for k in 0..10 {
            ctx.at(0.08 * k as f64 + 0.05);
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            std::thread::sleep(Duration::from_millis(200 + rng % 800));
            ctx.kill_tail();
            ctx.start_tail();
        }
        ctx.note("kill -9 shipper 10 times, restarted each time; copytruncate rotation".into());
    });
}

pub fn whole_cluster_down() {
    let outage = Duration::from_secs(env_num("SHIPPER_FAULT_OUTAGE_S", 10));
    // Beside tail: `shipper produce` fed from a pipe at 1,000 lines/s, and `shipper consume` following
    // its topic, both through the outage; their memory is watched too. Started first and measured
    // "before" once at work (consume printed a line produce delivered), so that their start does not
    // delay the outage past the writer's end.
    let side = side_clients(&cluster().expect("the cluster is up"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while side.seen.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let side_before = [side.produce.id(), side.consume.id()].map(rss_anon_kib);
    scenario("cluster-outage", Rotation::None, None, &[], move |ctx| {
        ctx.at(0.2);
        let pid = ctx
            .tail
            .lock()
            .unwrap()
            .as_ref()
            .map(|t| t.pid())
            .unwrap_or(0);
        let pids = [pid, side.produce.id(), side.consume.id()];
        let before = [rss_anon_kib(pid), side_before[0], side_before[1]];
        for id in 1..=3 {
            node("kill", id);
        }
        let end = Instant::now() + outage;
        let mut peak = before;
        while Instant::now() < end {
            for (p, pid) in peak.iter_mut().zip(pids) {
                *p = (*p).max(rss_anon_kib(pid));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        for id in 1..=3 {
            node("start", id);
        }
        let (produced, consumed) = side.finish(&ctx.c);
        ctx.note(format!(
            "all brokers down {}s; RssAnon KiB before / peak during: tail {} / {}, produce {} / {}, consume {} / {}; produce {produced} lines all delivered, consume saw {consumed} of them",
            outage.as_secs(),
            before[0],
            peak[0],
            before[1],
            peak[1],
            before[2],
            peak[2],
        ));
        for (i, what) in ["tail", "produce", "consume"].iter().enumerate() {
            assert!(
                peak[i] < before[i] + 16 * 1024,
                "{what}: memory grew from {} to {} KiB",
                before[i],
                peak[i]
            );
        }
    });
}

/// `shipper produce` and `shipper consume` (following) on a topic of their own, running through a fault.
struct SideClients {
    topic: String,
    produce: std::process::Child,
    consume: std::process::Child,
    feeder: std::thread::JoinHandle<usize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Lines consume has printed so far.
    seen: Arc<AtomicUsize>,
}

fn side_clients(c: &str) -> SideClients {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let topic = topic("fault-side");
    create_topic(c, &topic, 3, 3, &[]);
    let spawn = |args: &[&str], stdin: Stdio| {
        Command::new(shipper_bin())
            .args(["-b", c, "-q", "--timeout", "0"])
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut produce = spawn(&["produce", &topic, "--acks", "all"], Stdio::piped());
    let mut consume = spawn(&["consume", &topic, "--from-beginning"], Stdio::null());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut input = produce.stdin.take().unwrap();
    let feeding = stop.clone();
    let feeder = std::thread::spawn(move || {
        let mut n = 0;
        while !feeding.load(Ordering::Relaxed) {
            // 1,000 lines/s in 10 ms steps; a full pipe (produce holding back) just waits.
            let chunk: String = (n..n + 10).map(|i| format!("side-{i}\n")).collect();
            if input.write_all(chunk.as_bytes()).is_err() {
                break;
            }
            n += 10;
            std::thread::sleep(Duration::from_millis(10));
        }
        n
    });
    let out = consume.stdout.take().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counting = seen.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("side-") {
                counting.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    SideClients {
        topic,
        produce,
        consume,
        feeder,
        stop,
        seen,
    }
}

impl SideClients {
    /// Stops feeding, waits for produce to deliver everything and exit 0, checks the topic holds every
    /// line (kcat), and that consume kept following (it saw lines written after the fault ended).
    /// Returns (lines produced, lines consume printed).
    fn finish(mut self, c: &str) -> (usize, usize) {
        std::thread::sleep(Duration::from_secs(3));
        self.stop.store(true, Ordering::Relaxed);
        let n = self.feeder.join().unwrap();
        let status = self.produce.wait().unwrap();
        assert!(status.success(), "produce exited with {status}");
        let got = wait_for_records(c, &self.topic, n, Duration::from_secs(60));
        let distinct: std::collections::HashSet<&Vec<u8>> = got.iter().collect();
        assert_eq!(distinct.len(), n, "produce lost lines through the outage");
        // consume follows forever: stopped once it has caught up (or given a minute).
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.seen.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.consume.kill();
        let _ = self.consume.wait();
        let seen = self.seen.load(Ordering::Relaxed);
        assert!(seen >= n, "consume printed {seen} of {n} lines");
        (n, seen)
    }
}

pub fn lines_over_max_message_bytes() {
    let row = scenario(
        "max-message-bytes",
        Rotation::None,
        Some((500, 3000)),
        &["max.message.bytes=2000"],
        |ctx| {
            ctx.note(
                "topic max.message.bytes=2000, every 500th line 3000 bytes: those fail, counted"
                    .into(),
            );
        },
    );
    assert_eq!(
        row.failed_big,
        row.written / 500,
        "exactly the oversized lines fail"
    );
}

/// Issue #16: `tail --exactly-once` killed with -9 many times at random moments — some right at a
/// rotation, some followed by deleting the checkpoint or putting back an older copy — with a
/// partition leader killed and restarted in between: every line once, by shipper's count and kcat's.
pub fn exactly_once_under_kills() {
    let kills = env_num("SHIPPER_FAULT_KILLS", 10) as usize;
    let row = scenario_with(
        "exactly-once",
        Rotation::Rename,
        None,
        &[],
        Some(("app.log*", &["--exactly-once"])),
        |ctx| {
            let mut rng = 0x2545_f491_4f6c_dd1d_u64;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let rotate_every = (ctx.lines / 6).max(1);
            let (mut deleted, mut rolled_back, mut at_rotation) = (0, 0, 0);
            let mut older: Option<Vec<u8>> = None;
            let mut leader = None;
            for k in 0..kills {
                let fraction = 0.05 + 0.85 * k as f64 / kills as f64;
                // Every fourth kill lands just after a rotation (logrotate runs at these counts).
                let target = if k % 4 == 1 {
                    at_rotation += 1;
                    ((ctx.lines as f64 * fraction) as usize / rotate_every + 1) * rotate_every
                } else {
                    (ctx.lines as f64 * fraction) as usize
                };
                ctx.at(target.min(ctx.lines) as f64 / ctx.lines as f64);
                if k % 4 != 1 {
                    std::thread::sleep(Duration::from_millis(next() % 300));
                }
                if k == kills / 2 {
                    let l = leader_of(&ctx.c, &ctx.t);
                    node("kill", l);
                    leader = Some(l);
                }
                if k == kills / 2 + kills / 5 + 1 {
                    if let Some(l) = leader {
                        node("start", l);
                    }
                }
                ctx.kill_tail();
                let ck = ctx.checkpoint();
                match k % 5 {
                    2 => {
                        let _ = std::fs::remove_file(&ck);
                        deleted += 1;
                    }
                    4 => {
                        if let Some(old) = &older {
                            std::fs::write(&ck, old).unwrap();
                            rolled_back += 1;
                        }
                    }
                    _ => older = std::fs::read(&ck).ok(),
                }
                ctx.start_tail();
            }
            if let Some(l) = leader {
                node("start", l);
            }
            ctx.note(format!(
                "--exactly-once; kill -9 shipper {kills} times ({at_rotation} right after a rotation, checkpoint then deleted {deleted} times, an older copy put back {rolled_back} times), partition leader {} killed and restarted midway; rename rotation",
                leader.map_or("?".to_string(), |l| l.to_string())
            ));
        },
    );
    assert_eq!(row.dups, 0, "exactly-once: {} duplicates", row.dups);
}

//! The engine with several inputs: routes per input, reloads (inputs added, removed, changed), files
//! finished from the checkpoint under their input, topics not known yet, multiline events.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::tail::multiline::StartPattern;
use tokio::time::Instant;

use super::*;
use crate::producer::{Appended, RecordTooLarge, SourcePos, TopicState};
use crate::tail::discover::{FilePolicy, Pattern};
use crate::tail::follower::ReadLimits;
use crate::tail::route::{RouteSpec, Template};
use crate::tail::scan;
use crate::wire::records::Header;

/// A sink that knows topics by name: those in `pending` are not known yet.
#[derive(Default)]
struct Topics {
    names: Vec<String>,
    pending: BTreeSet<String>,
    /// Appended and not yet acknowledged: token, topic, value.
    unacked: Vec<(u64, String, Vec<u8>)>,
    /// Acknowledged: topic, value.
    acked: Vec<(String, String)>,
}

impl Sink for Topics {
    fn append(
        &mut self,
        topic: usize,
        _key: Option<&[u8]>,
        value: &[u8],
        _headers: &[Header<'_>],
        _ts: i64,
        token: u64,
        _pos: Option<&SourcePos<'_>>,
    ) -> Result<Appended, RecordTooLarge> {
        self.unacked
            .push((token, self.names[topic].clone(), value.to_vec()));
        Ok(Appended {
            topic,
            partition: 0,
        })
    }

    fn undo_last(&mut self, _a: Appended) {
        self.unacked.pop();
    }

    fn is_full(&self) -> bool {
        false
    }

    fn topic(&mut self, name: &str) -> TopicState {
        if self.pending.contains(name) {
            return TopicState::Pending(None);
        }
        match self.names.iter().position(|n| n == name) {
            Some(i) => TopicState::Ready(i),
            None => {
                self.names.push(name.to_string());
                TopicState::Ready(self.names.len() - 1)
            }
        }
    }
}

impl Topics {
    /// Acknowledges everything appended.
    fn ack_all(&mut self, e: &mut Engine) {
        for (t, topic, v) in std::mem::take(&mut self.unacked) {
            e.on_delivery(&[t], None, &topic);
            self.acked.push((topic, String::from_utf8(v).unwrap()));
        }
    }

    /// Takes what was acknowledged so far, as "topic:value".
    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.acked)
            .into_iter()
            .map(|(t, v)| format!("{t}:{v}"))
            .collect()
    }
}

fn dir(name: &str) -> PathBuf {
    crate::testkit::scratch_dir(&format!("reload-{name}"))
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

/// An input named `name` following `d/<name>.log` into `topic`.
fn input(d: &Path, name: &str, topic: &str) -> Input {
    Input {
        name: name.into(),
        patterns: vec![Pattern::new(&format!("{}/{name}.log", d.display()), &[]).unwrap()],
        route: RouteSpec {
            topic: Template::parse(topic).unwrap(),
            key: None,
            headers: Vec::new(),
        },
        multiline: None,
        from_end: false,
    }
}

fn config(inputs: Vec<Input>) -> EngineConfig {
    EngineConfig {
        inputs,
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

/// Scans, reads everything and acknowledges it.
fn cycle(e: &mut Engine, sink: &mut Topics) -> Vec<String> {
    let r = scan::run(e.scan_request(None));
    assert!(e.apply_scan(r, Instant::now(), false));
    while e.read_pass(sink, 1, Instant::now()) {}
    sink.ack_all(e);
    sink.take()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_reload_retires_removed_inputs_reroutes_kept_ones_and_starts_new_ones() {
    let d = dir("reload");
    let (a, b, c) = (d.join("a.log"), d.join("b.log"), d.join("c.log"));
    append(&a, b"a1\n");
    append(&b, b"b1\n");
    append(&c, b"c1\n");
    let mut e = Engine::new(
        config(vec![input(&d, "a", "ta"), input(&d, "b", "tb")]),
        Vec::new(),
    );
    let mut sink = Topics::default();
    let mut got = cycle(&mut e, &mut sink);
    got.sort();
    assert_eq!(got, strings(&["ta:a1", "tb:b1"]));
    append(&a, b"a2\n");
    append(&b, b"b2\n");
    // a's topic changes, b goes, c comes; lines written before the reload but not read yet take the
    // new configuration (they are read after it).
    let summary = e.reconfigure(config(vec![
        input(&d, "a", "ta-{file_stem}"),
        input(&d, "c", "tc"),
    ]));
    assert_eq!(
        summary,
        "2 inputs (1 added: 'c'; 1 removed: 'b'; 1 changed: 'a')"
    );
    let mut got = cycle(&mut e, &mut sink);
    got.sort();
    assert_eq!(got, strings(&["ta-a:a2", "tc:c1"]));
    // b is retired: closed once acknowledged, never read again, its offset kept.
    e.close_idle(Instant::now(), false);
    append(&b, b"b3\n");
    for _ in 0..3 {
        assert_eq!(cycle(&mut e, &mut sink), Vec::<String>::new());
    }
    let kept = e
        .checkpoint_entries()
        .into_iter()
        .find(|x| x.path == b)
        .expect("b's checkpoint entry is kept");
    assert_eq!(kept.offset, 3, "b1 acknowledged, b2 and b3 never read");
    // b comes back: it resumes after b1.
    e.reconfigure(config(vec![input(&d, "a", "ta"), input(&d, "b", "tb")]));
    assert_eq!(cycle(&mut e, &mut sink), strings(&["tb:b2", "tb:b3"]));
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_scan_asked_for_before_a_reload_is_dropped() {
    let d = dir("stale");
    append(&d.join("b.log"), b"b1\n");
    let mut e = Engine::new(
        config(vec![input(&d, "a", "ta"), input(&d, "b", "tb")]),
        Vec::new(),
    );
    let old = scan::run(e.scan_request(None));
    e.reconfigure(config(vec![input(&d, "a", "ta"), input(&d, "c", "tc")]));
    // The old scan opened b.log under pattern 1, which is now c's.
    assert!(!e.apply_scan(old, Instant::now(), false));
    assert_eq!(e.file_count(), 0);
    let mut sink = Topics::default();
    assert_eq!(cycle(&mut e, &mut sink), Vec::<String>::new());
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rotated_file_finished_after_a_restart_keeps_its_inputs_route() {
    let d = dir("origin");
    let b = d.join("b.log");
    append(&b, b"b1\n");
    let cfg = || config(vec![input(&d, "a", "ta"), input(&d, "b", "tb")]);
    let mut e = Engine::new(cfg(), Vec::new());
    let mut sink = Topics::default();
    assert_eq!(cycle(&mut e, &mut sink), strings(&["tb:b1"]));
    // Rotated; the engine sees it, then the writer adds a line to the rotated file just before the
    // agent stops, unread.
    fs::rename(&b, d.join("b.log.1")).unwrap();
    assert_eq!(cycle(&mut e, &mut sink), Vec::<String>::new());
    append(&d.join("b.log.1"), b"b2\n");
    let ckpt = e.checkpoint_entries();
    assert_eq!(ckpt[0].path, d.join("b.log.1"));
    assert_eq!(ckpt[0].origin, b);
    let text = crate::tail::checkpoint::render(ckpt.iter());
    let (loaded, dropped) = crate::tail::checkpoint::parse(text.as_bytes());
    assert_eq!((loaded.clone(), dropped), (ckpt, 0));
    // Restart: b.log.1 matches no pattern, but its origin is input b's.
    let mut e = Engine::new(cfg(), loaded.clone());
    assert_eq!(cycle(&mut e, &mut sink), strings(&["tb:b2"]));
    // With input b gone from the config, nothing of it is read.
    let mut e = Engine::new(config(vec![input(&d, "a", "ta")]), loaded);
    assert_eq!(cycle(&mut e, &mut sink), Vec::<String>::new());
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn lines_for_a_topic_not_known_yet_wait_in_their_file() {
    let d = dir("pending");
    let a = d.join("a.log");
    append(&a, b"a1\na2\n");
    let mut e = Engine::new(config(vec![input(&d, "a", "ta")]), Vec::new());
    let mut sink = Topics::default();
    sink.pending.insert("ta".into());
    assert_eq!(cycle(&mut e, &mut sink), Vec::<String>::new());
    assert_eq!(e.checkpoint_entries()[0].offset, 0);
    sink.pending.clear();
    e.topic_ready("ta");
    while e.read_pass(&mut sink, 1, Instant::now()) {}
    sink.ack_all(&mut e);
    assert_eq!(sink.take(), strings(&["ta:a1", "ta:a2"]));
    assert_eq!(e.checkpoint_entries()[0].offset, 6);
    fs::remove_dir_all(&d).unwrap();
}

/// A renamed input keeps its files (they waited for the minute's rescan, unread), and an exclude
/// added by a reload lets a followed file go.
#[tokio::test(start_paused = true)]
async fn a_renamed_input_keeps_its_files_and_a_new_exclude_lets_one_go() {
    let d = dir("rename");
    let a = d.join("a.log");
    append(&a, b"a1\n");
    let mut e = Engine::new(config(vec![input(&d, "a", "ta")]), Vec::new());
    let mut sink = Topics::default();
    assert_eq!(cycle(&mut e, &mut sink), strings(&["ta:a1"]));
    let renamed = |topic: &str, exclude: &[String]| Input {
        name: "renamed".into(),
        patterns: vec![Pattern::new(&format!("{}/*.log", d.display()), exclude).unwrap()],
        ..input(&d, "a", topic)
    };
    let summary = e.reconfigure(config(vec![renamed("tb", &[])]));
    assert_eq!(
        summary,
        "1 input (1 added: 'renamed'; 1 removed: 'a'; 0 changed)"
    );
    append(&a, b"a2\n");
    e.touch(&a);
    while e.read_pass(&mut sink, 1, Instant::now()) {}
    sink.ack_all(&mut e);
    assert_eq!(
        sink.take(),
        strings(&["tb:a2"]),
        "read at once by the renamed input"
    );
    let summary = e.reconfigure(config(vec![renamed("tb", &["a.log".to_string()])]));
    assert_eq!(
        summary,
        "1 input (0 added; 0 removed; 1 changed: 'renamed')"
    );
    append(&a, b"a3\n");
    assert_eq!(
        cycle(&mut e, &mut sink),
        Vec::<String>::new(),
        "excluded now"
    );
    fs::remove_dir_all(&d).unwrap();
}

/// Acknowledged lines are counted under their own file's input and the topic they went to: in a
/// batch holding lines of two inputs, and for a file whose input a reload removed while its lines
/// were in flight (the inputs after it move up a place).
#[tokio::test(start_paused = true)]
async fn acks_are_counted_under_each_lines_own_input_and_topic() {
    let d = dir("ack-count");
    append(&d.join("a.log"), b"a1\n");
    append(&d.join("b.log"), b"b1\n");
    let mut e = Engine::new(
        config(vec![input(&d, "a", "t"), input(&d, "b", "t")]),
        Vec::new(),
    );
    let mut sink = Topics::default();
    let r = scan::run(e.scan_request(None));
    assert!(e.apply_scan(r, Instant::now(), false));
    while e.read_pass(&mut sink, 1, Instant::now()) {}
    // One batch with both lines.
    let tokens: Vec<u64> = sink.unacked.drain(..).map(|(t, _, _)| t).collect();
    e.on_delivery(&tokens, None, "t");
    let acked = |e: &Engine, input: &str, topic: &str| {
        e.route_counters()
            .get(&(input.to_string(), topic.to_string()))
            .map_or(0, |c| c.lines_acked)
    };
    assert_eq!((acked(&e, "a", "t"), acked(&e, "b", "t")), (1, 1));
    // a removed while its next line is in flight; b moves up to the first place.
    append(&d.join("a.log"), b"a2\n");
    append(&d.join("b.log"), b"b2\n");
    e.touch(&d.join("a.log"));
    e.touch(&d.join("b.log"));
    while e.read_pass(&mut sink, 1, Instant::now()) {}
    e.reconfigure(config(vec![input(&d, "b", "t")]));
    // Its lag too stays a's (t17 F2: counted under b, now at a's index).
    let behind = |e: &Engine, name: &str| -> Vec<(String, u64)> {
        e.behind_by_file()
            .into_iter()
            .filter(|(_, p, b)| p.ends_with(name) && *b > 0)
            .map(|(i, _, b)| (i.to_string(), b))
            .collect()
    };
    assert_eq!(behind(&e, "a.log"), [("a".to_string(), 3)]);
    assert_eq!(behind(&e, "b.log"), [("b".to_string(), 3)]);
    sink.ack_all(&mut e);
    assert_eq!((acked(&e, "a", "t"), acked(&e, "b", "t")), (2, 2));
    fs::remove_dir_all(&d).unwrap();
}

/// A reload that removes or re-routes the input whose topic is missing leaves no file waiting for
/// that topic: it is no longer looked up, nor reported as waited for (health stayed 503).
#[tokio::test(start_paused = true)]
async fn a_topic_no_file_waits_for_after_a_reload_is_no_longer_waited_for() {
    let d = dir("waited");
    append(&d.join("a.log"), b"a1\n");
    append(&d.join("b.log"), b"b1\n");
    let mut e = Engine::new(
        config(vec![input(&d, "a", "missing"), input(&d, "b", "gone")]),
        Vec::new(),
    );
    let mut sink = Topics::default();
    sink.pending
        .extend(["missing".to_string(), "gone".to_string()]);
    assert_eq!(cycle(&mut e, &mut sink), Vec::<String>::new());
    assert_eq!(
        e.waited_topics(),
        ["missing", "gone"].map(String::from).into()
    );
    // a re-routed to a topic that exists, b removed.
    e.reconfigure(config(vec![input(&d, "a", "ta")]));
    assert!(
        !e.waited_topics().contains("missing") && !e.waited_topics().contains("gone"),
        "{:?}",
        e.waited_topics()
    );
    assert_eq!(cycle(&mut e, &mut sink), strings(&["ta:a1"]));
    assert!(e.waited_topics().is_empty());
    fs::remove_dir_all(&d).unwrap();
}

/// Lets `ms` of quiet pass, then reads what the multiline inputs completed meanwhile.
async fn quiet_for(e: &mut Engine, sink: &mut Topics, ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
    e.touch_multiline();
    while e.read_pass(sink, 1, Instant::now()) {}
}

fn multiline(max_bytes: usize) -> Arc<crate::tail::multiline::MultilineConfig> {
    Arc::new(crate::tail::multiline::MultilineConfig {
        pattern: StartPattern::new(r"^\d{4}-").unwrap(),
        rule: crate::tail::multiline::Rule::Start,
        max_lines: 10_000,
        max_bytes,
        timeout: Duration::from_millis(500),
    })
}

#[tokio::test(start_paused = true)]
async fn the_last_multiline_event_ships_after_the_quiet_time_and_the_checkpoint_waits_for_it() {
    let d = dir("multiline");
    let a = d.join("a.log");
    append(&a, b"2026- one\n  at x\n2026- two\n  at y\n");
    let mut i = input(&d, "a", "ta");
    i.multiline = Some(multiline(1_000_000));
    let mut e = Engine::new(config(vec![i]), Vec::new());
    let mut sink = Topics::default();
    assert_eq!(cycle(&mut e, &mut sink), strings(&["ta:2026- one\n  at x"]));
    assert_eq!(
        e.checkpoint_entries()[0].offset,
        17,
        "the second event may still grow"
    );
    append(&a, b"  at z\n");
    quiet_for(&mut e, &mut sink, 200).await;
    assert!(sink.unacked.is_empty(), "not quiet long enough yet");
    quiet_for(&mut e, &mut sink, 600).await;
    sink.ack_all(&mut e);
    assert_eq!(sink.take(), strings(&["ta:2026- two\n  at y\n  at z"]));
    assert_eq!(e.checkpoint_entries()[0].offset, 41);
    fs::remove_dir_all(&d).unwrap();
}

/// Quiet time ends an event, never a line: a line written in two pieces with a pause longer than
/// the timeout between them is one line (t14: it became two records, the first without its end).
#[tokio::test(start_paused = true)]
async fn quiet_time_does_not_cut_a_line_whose_newline_has_not_come() {
    let d = dir("multiline-split");
    let a = d.join("a.log");
    append(&a, b"2026- one\n2026- two, in two pie");
    let mut i = input(&d, "a", "ta");
    i.multiline = Some(multiline(1_000_000));
    let mut e = Engine::new(config(vec![i]), Vec::new());
    let mut sink = Topics::default();
    assert_eq!(cycle(&mut e, &mut sink), Vec::<String>::new());
    quiet_for(&mut e, &mut sink, 600).await;
    sink.ack_all(&mut e);
    assert_eq!(
        sink.take(),
        strings(&["ta:2026- one"]),
        "only the complete event"
    );
    assert_eq!(e.checkpoint_entries()[0].offset, 10);
    append(&a, b"ces\n  at x\n2026- three\n");
    quiet_for(&mut e, &mut sink, 600).await;
    quiet_for(&mut e, &mut sink, 600).await;
    sink.ack_all(&mut e);
    assert_eq!(
        sink.take(),
        strings(&["ta:2026- two, in two pieces\n  at x", "ta:2026- three"])
    );
    fs::remove_dir_all(&d).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_multiline_event_longer_than_a_read_chunk_still_ships() {
    let d = dir("multiline-long");
    let a = d.join("a.log");
    // One event of ~20 KiB (the read chunk here is 4 KiB), then the next event's start.
    let mut text = b"2026- big\n".to_vec();
    for n in 0..2000 {
        text.extend_from_slice(format!("  at {n:04}\n").as_bytes());
    }
    text.extend_from_slice(b"2026- next\n");
    append(&a, &text);
    let mut i = input(&d, "a", "ta");
    i.multiline = Some(multiline(1_000_000));
    let mut cfg = config(vec![i]);
    cfg.limits.max_line_bytes = 100_000;
    let mut e = Engine::new(cfg, Vec::new());
    let mut sink = Topics::default();
    let got = cycle(&mut e, &mut sink);
    assert_eq!(
        got.len(),
        1,
        "{:?}",
        got.iter().map(|g| g.len()).collect::<Vec<_>>()
    );
    assert_eq!(got[0].lines().count(), 2001);
    // Events are capped at the line limit (the largest record the topic takes): cut, not lost.
    let mut cfg = config(vec![input(&d, "a", "ta")]);
    cfg.inputs[0].multiline = Some(multiline(1_000_000));
    let mut e = Engine::new(cfg, Vec::new());
    let got = cycle(&mut e, &mut sink);
    assert!(got.iter().all(|g| g.len() <= "ta:".len() + 1000));
    let joined: String = got.iter().map(|g| &g[3..]).collect::<Vec<_>>().join("\n");
    assert!(
        format!("{joined}\n").as_bytes() == &text[..text.len() - b"2026- next\n".len()],
        "the pieces of the event are not the event"
    );
    fs::remove_dir_all(&d).unwrap();
}

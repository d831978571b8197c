//! `shipper tail` against the real broker: new lines, partial lines, rotation, truncation, restarts,
//! many files, bad input, and a model test of random file operations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(30);

fn numbered(prefix: &str, from: usize, to: usize) -> Vec<u8> {
    (from..to)
        .flat_map(|i| format!("{prefix} {i}\n").into_bytes())
        .collect()
}

fn ckpt_arg(dir: &Path) -> String {
    dir.join("checkpoint").display().to_string()
}

#[test]
fn relative_paths_and_globs_ship_appended_lines_at_once() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-relative");
    let t = topic("tail-relative");
    std::fs::create_dir_all(dir.join("b1")).unwrap();
    std::fs::create_dir_all(dir.join("g")).unwrap();
    append(&dir.join("b1/app.log"), b"first\n");
    append(&dir.join("here.log"), b"here first\n");
    append(&dir.join("g/x.log"), b"glob first\n");
    let mut c = std::process::Command::new(shipper_bin());
    c.current_dir(&dir)
        .args(["-b", &b, "tail", "b1/app.log", "./here.log", "g/*.log", &t])
        .args(["--checkpoint", "ck"]);
    let mut tail = Tail::spawn(c, &dir.join("err"));
    assert_eq!(
        wait_for_records(&b, &t, 3, WAIT).len(),
        3,
        "{}",
        tail.stderr()
    );
    // Events name absolute paths: a relative one must still be found by them, not by the 60 s
    // safety rescan.
    append(&dir.join("b1/app.log"), b"second\n");
    append(&dir.join("here.log"), b"here second\n");
    append(&dir.join("g/x.log"), b"glob second\n");
    let got = wait_for_records(&b, &t, 6, Duration::from_secs(15));
    tail.stop("INT");
    assert_eq!(got.len(), 6, "{:?} {}", got, tail.stderr());
    // The checkpoint names absolute paths: it means the same files from any directory.
    let ck = std::fs::read_to_string(dir.join("ck")).unwrap();
    assert!(
        ck.contains(&format!("{}/b1/app.log", dir.display())),
        "{ck}"
    );
}

/// `-H` on tail's command line puts a header on every line, its value a template as in a config.
#[test]
fn tail_headers_from_flags_are_templates() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-hflag");
    let t = topic("tail-hflag");
    append(&dir.join("app.log"), b"one\n");
    let mut c = std::process::Command::new(shipper_bin());
    c.args([
        "-b",
        &b,
        "tail",
        &dir.join("*.log").display().to_string(),
        &t,
    ])
    .args(["-H", "env=prod", "-H", "file={file_name}"])
    .args(["--checkpoint", &ckpt_arg(&dir)]);
    let mut tail = Tail::spawn(c, &dir.join("err"));
    let got = wait_for_records(&b, &t, 1, WAIT);
    tail.stop("INT");
    assert_eq!(got.len(), 1, "{}", tail.stderr());
    let hs = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "%h|%s\n"], b"");
    assert_eq!(String::from_utf8_lossy(&hs), "env=prod,file=app.log|one\n");
    // A null value has no meaning for a log line's header: refused, exit 2.
    let out = shipper(&b, &["tail", "/nonexistent/*.log", &t, "-H", "bare"], b"");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tail_ships_existing_and_appended_lines_and_holds_a_partial_line_until_its_newline() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-basic");
    let t = topic("tail-basic");
    let f = dir.join("app.log");
    append(&f, b"one\r\ntwo\n\nthree");
    let ck = ckpt_arg(&dir);
    let mut tail = Tail::start(
        &b,
        &[f.to_str().unwrap(), &t, "--checkpoint", &ck],
        &dir.join("err"),
    );
    let got = wait_for_records(&b, &t, 3, WAIT);
    assert_eq!(
        got,
        vec![b"one".to_vec(), b"two".to_vec(), b"".to_vec()],
        "{}",
        tail.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(topic_values(&b, &t).len(), 3, "the partial line is held");
    append(&f, b" and more\nfour\nfive, unfinished");
    let got = wait_for_records(&b, &t, 5, WAIT);
    assert_eq!(&got[3..], &[b"three and more".to_vec(), b"four".to_vec()]);
    let size = std::fs::metadata(&f).unwrap().len();
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
    let err = tail.stderr();
    assert!(err.contains("read 5 lines"), "{err}");
    // The line still waiting for its newline is said (t31 F6: a stop said nothing of it).
    assert!(
        err.contains(
            "; 1 file ends in a line without its newline yet (16 bytes), shipped when it comes"
        ),
        "{err}"
    );
    let size = size - "five, unfinished".len() as u64;
    let ck = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    assert!(
        ck.lines()
            .any(|l| l.split(' ').nth(5) == Some(&size.to_string())),
        "{ck}"
    );
}

/// `--key '{file_name}'`: each file's lines carry its name as key, so they sit in one partition, in
/// order (without a key the sticky partitioner spreads a file over every partition).
#[test]
fn tail_key_template_keeps_each_file_in_one_partition_in_order() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-key");
    let t = topic("tail-key");
    create_topic(&b, &t, 3, 1, &[]);
    for name in ["a.log", "b.log", "c.log"] {
        append(&dir.join(name), &numbered(name, 0, 300));
    }
    let ck = ckpt_arg(&dir);
    let glob = format!("{}/*.log", dir.display());
    let mut tail = Tail::start(
        &b,
        &[&glob, &t, "--checkpoint", &ck, "--key", "{file_name}"],
        &dir.join("err"),
    );
    wait_for_records(&b, &t, 900, WAIT);
    assert_eq!(tail.stop("INT"), Some(0), "{}", tail.stderr());
    let got = shipper_ok(
        &b,
        &["consume", &t, "--from-beginning", "-e", "-f", "%p %k %s\n"],
        b"",
    );
    let mut by_key: BTreeMap<String, (BTreeSet<String>, Vec<String>)> = BTreeMap::new();
    for l in String::from_utf8(got).unwrap().lines() {
        let mut it = l.splitn(3, ' ');
        let (p, k, v) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let e = by_key.entry(k.to_string()).or_default();
        e.0.insert(p.to_string());
        e.1.push(v.to_string());
    }
    assert_eq!(by_key.len(), 3, "{by_key:?}");
    for (k, (parts, values)) in by_key {
        assert_eq!(parts.len(), 1, "{k}: one partition");
        let want: Vec<String> = lines(&numbered(&k, 0, 300))
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        assert_eq!(values, want, "{k}: every line, in order");
    }
    // A template with an unknown placeholder is a usage error naming the flag.
    let out = shipper(&b, &["tail", &glob, &t, "--key", "{nope}"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--key: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tail_resumes_from_the_checkpoint_without_resending() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-resume");
    let t = topic("tail-resume");
    let f = dir.join("app.log");
    append(&f, &numbered("a", 0, 100));
    let ck = ckpt_arg(&dir);
    let args = [f.to_str().unwrap(), &t, "--checkpoint", &ck];
    let mut tail = Tail::start(&b, &args, &dir.join("err1"));
    wait_for_records(&b, &t, 100, WAIT);
    assert_eq!(tail.stop("TERM"), Some(0));
    append(&f, &numbered("a", 100, 150));
    let mut tail = Tail::start(&b, &args, &dir.join("err2"));
    let got = wait_for_records(&b, &t, 150, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    tail.stop("INT");
    assert_eq!(topic_values(&b, &t), lines(&numbered("a", 0, 150)));
    let _ = got;
}

/// Stopped while the rest of a long line is being skipped, restarted with a higher line limit: the
/// checkpoint says the position is inside that line, so the restart goes on skipping it (t33 F2:
/// the position was taken for a file rewritten in place, and the whole file was shipped again).
#[test]
fn a_restart_with_a_raised_line_limit_goes_on_skipping_the_long_line() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-raised-limit");
    let t = topic("tail-raised-limit");
    let f = dir.join("app.log");
    let mut data = numbered("a", 0, 10);
    data.extend(std::iter::repeat_n(b'P', 300));
    append(&f, &data);
    let ck = ckpt_arg(&dir);
    let args = |limit: &'static str| {
        vec![
            f.to_str().unwrap().to_string(),
            t.clone(),
            "--checkpoint".into(),
            ck.clone(),
            "--max-line-bytes".into(),
            limit.into(),
        ]
    };
    let first = args("100");
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let mut tail = Tail::start(&b, &first, &dir.join("err1"));
    wait_for_records(&b, &t, 11, WAIT);
    assert_eq!(tail.stop("TERM"), Some(0));
    let saved = std::fs::read_to_string(&ck).unwrap();
    assert!(saved.contains("+skip:"), "{saved}");
    append(&f, b"PPP\nnew\n");
    let second = args("1000");
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let mut tail = Tail::start(&b, &second, &dir.join("err2"));
    wait_for_records(&b, &t, 12, WAIT);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(tail.stop("INT"), Some(0));
    let mut want = lines(&numbered("a", 0, 10));
    want.push(vec![b'P'; 100]);
    want.push(b"new".to_vec());
    assert_eq!(topic_values(&b, &t), want, "{}", tail.stderr());
}

#[test]
fn tail_from_end_skips_existing_content() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-from-end");
    let t = topic("tail-from-end");
    let f = dir.join("app.log");
    append(&f, &numbered("old", 0, 50));
    let ck = ckpt_arg(&dir);
    let mut tail = Tail::start(
        &b,
        &[f.to_str().unwrap(), &t, "--checkpoint", &ck, "--from-end"],
        &dir.join("err"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    append(&f, b"new line\n");
    let got = wait_for_records(&b, &t, 1, WAIT);
    tail.stop("INT");
    assert_eq!(got, vec![b"new line".to_vec()]);
}

#[test]
fn from_end_ends_are_taken_at_the_start_and_kept_by_a_run_killed_at_once() {
    // The ends are recorded in the checkpoint before anything waits for Kafka: a run killed before
    // it shipped anything, then restarted, ships what was appended while it was down (it was
    // skipped: the second run took the file's end again). A file created while it was down is read
    // whole (it was skipped too), and one whose end was inside a long line goes on skipping that
    // line (it was taken for a rewrite and shipped again from its start).
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-from-end-kill");
    let t = topic("tail-from-end-kill");
    let f = dir.join("app.log");
    append(&f, &numbered("old", 0, 50));
    let long = dir.join("long.log");
    append(&long, &numbered("old-long", 0, 5));
    append(&long, &vec![b'x'; 2_000_000]);
    let ck = ckpt_arg(&dir);
    let pattern = dir.join("*.log").display().to_string();
    let args = [pattern.as_str(), &t, "--checkpoint", &ck, "--from-end"];
    // The first run never reaches Kafka (nothing listens there): killed before its first
    // acknowledgement, as a run killed at once is.
    let nobody = format!("127.0.0.1:{}", crate::agent::free_port());
    let mut first = Tail::start(&nobody, &args, &dir.join("err1"));
    let ckpt = std::path::PathBuf::from(&ck);
    first.until(
        30,
        || {
            std::fs::read_to_string(&ckpt)
                .is_ok_and(|c| c.contains("app.log") && c.contains("long.log"))
        },
        "the ends recorded",
    );
    first.stop("KILL");
    std::thread::sleep(Duration::from_millis(20));
    append(&f, &numbered("down", 0, 5));
    append(&long, b"\nafter-long\n");
    append(&dir.join("created.log"), &numbered("created", 0, 3));
    let mut second = Tail::start(&b, &args, &dir.join("err2"));
    let got = wait_for_records(&b, &t, 9, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let mut want = lines(&numbered("down", 0, 5));
    want.push(b"after-long".to_vec());
    want.extend(lines(&numbered("created", 0, 3)));
    want.sort();
    let mut all = topic_values(&b, &t);
    all.sort();
    assert_eq!(all, want, "{}", second.stderr());
    second.stop("INT");
    assert_eq!(got.len(), 9);
}

#[test]
fn tail_follows_rename_rotation_and_files_created_later_that_match_the_glob() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-rotate");
    let t = topic("tail-rotate");
    let f = dir.join("app.log");
    append(&f, &numbered("gen1", 0, 100));
    let pattern = dir.join("*.log").display().to_string();
    let ck = ckpt_arg(&dir);
    let mut tail = Tail::start(&b, &[&pattern, &t, "--checkpoint", &ck], &dir.join("err"));
    wait_for_records(&b, &t, 100, WAIT);
    // Written just before the rename: must still be read from the renamed file.
    append(&f, &numbered("gen1", 100, 120));
    std::fs::rename(&f, dir.join("app.log.1")).unwrap();
    append(&f, &numbered("gen2", 0, 30));
    append(&dir.join("later.log"), &numbered("later", 0, 10));
    let got = wait_for_records(&b, &t, 160, WAIT);
    tail.stop("INT");
    let mut want = lines(&numbered("gen1", 0, 120));
    want.extend(lines(&numbered("gen2", 0, 30)));
    want.extend(lines(&numbered("later", 0, 10)));
    let (mut g, mut w) = (got.clone(), want);
    g.sort();
    w.sort();
    assert_eq!(g, w, "{}", tail.stderr());
}

#[test]
fn tail_restarts_a_truncated_file_from_its_start() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-trunc");
    let t = topic("tail-trunc");
    let f = dir.join("app.log");
    append(&f, &numbered("before", 0, 50));
    let ck = ckpt_arg(&dir);
    let mut tail = Tail::start(
        &b,
        &[f.to_str().unwrap(), &t, "--checkpoint", &ck],
        &dir.join("err"),
    );
    wait_for_records(&b, &t, 50, WAIT);
    truncate_in_place(&f);
    std::thread::sleep(Duration::from_millis(1500));
    append(&f, &numbered("after", 0, 20));
    let got = wait_for_records(&b, &t, 70, WAIT);
    tail.stop("INT");
    assert_eq!(
        &got[50..],
        &lines(&numbered("after", 0, 20))[..],
        "{}",
        tail.stderr()
    );
    assert!(
        tail.stderr().contains("1 truncation ("),
        "{}",
        tail.stderr()
    );
}

/// shipper is paused (SIGSTOP, like a starved process) while lines are written and logrotate's
/// copytruncate runs: the lines it had not read are only in the copy, and they arrive — once each —
/// as do the lines written after the truncation.
#[test]
fn tail_reads_what_it_missed_from_the_copytruncate_copy() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-ct-copy");
    let t = topic("tail-ct-copy");
    let f = dir.join("app.log");
    append(&f, &numbered("a", 0, 100));
    let ck = ckpt_arg(&dir);
    let mut tail = Tail::start(
        &b,
        &[f.to_str().unwrap(), &t, "--checkpoint", &ck],
        &dir.join("err"),
    );
    wait_for_records(&b, &t, 100, WAIT);
    tail.signal("STOP");
    append(&f, &numbered("b", 0, 100));
    // An older rotated file with other content, and a link named like a copy: neither is read.
    append(&dir.join("app.log.2"), &numbered("old", 0, 500));
    std::os::unix::fs::symlink(dir.join("app.log.2"), dir.join("app.log-link")).unwrap();
    std::fs::copy(&f, dir.join("app.log.1")).unwrap();
    truncate_in_place(&f);
    append(&f, &numbered("c", 0, 30));
    tail.signal("CONT");
    let got = wait_for_records(&b, &t, 230, WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    let got_all = topic_values(&b, &t);
    tail.stop("INT");
    let mut want = lines(&numbered("a", 0, 100));
    want.extend(lines(&numbered("b", 0, 100)));
    want.extend(lines(&numbered("c", 0, 30)));
    let mut sorted = got_all.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want, "{}", tail.stderr());
    assert_eq!(got.len(), 230);
    assert!(
        tail.stderr().contains("(1 read on from their copy)"),
        "{}",
        tail.stderr()
    );
    // Stopped, then lines written and copytruncate run while it is down: the restart finds the copy.
    append(&f, &numbered("d", 0, 100));
    tail.stop("INT");
    std::fs::rename(dir.join("app.log.1"), dir.join("app.log.3")).unwrap();
    std::fs::copy(&f, dir.join("app.log.1")).unwrap();
    truncate_in_place(&f);
    append(&f, &numbered("e", 0, 20));
    let mut tail = Tail::start(
        &b,
        &[f.to_str().unwrap(), &t, "--checkpoint", &ck],
        &dir.join("err2"),
    );
    wait_for_records(&b, &t, 350, WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    let mut got = topic_values(&b, &t);
    tail.stop("INT");
    for (p, n) in [("d", 100), ("e", 20)] {
        want.extend(lines(&numbered(p, 0, n)));
    }
    want.sort();
    got.sort();
    assert_eq!(got, want, "{}", tail.stderr());
}

#[test]
fn tail_survives_kill_9_and_loses_nothing_on_restart() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-kill");
    let t = topic("tail-kill");
    let f = dir.join("app.log");
    let ck = ckpt_arg(&dir);
    let args = [f.to_str().unwrap(), &t, "--checkpoint", &ck];
    let writer_path = f.clone();
    let writer = std::thread::spawn(move || {
        for chunk in 0..40 {
            append(&writer_path, &numbered("k", chunk * 500, chunk * 500 + 500));
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    for round in 0..3 {
        let mut tail = Tail::start(&b, &args, &dir.join(format!("err{round}")));
        // Past the first checkpoint write (every second), so a restart resumes rather than rereads.
        std::thread::sleep(Duration::from_millis(1600));
        tail.stop("KILL");
    }
    writer.join().unwrap();
    let mut tail = Tail::start(&b, &args, &dir.join("err-final"));
    wait_for_records(&b, &t, 20_000, WAIT);
    std::thread::sleep(Duration::from_millis(1000));
    tail.stop("INT");
    let values = topic_values(&b, &t);
    let got = values.len();
    let mut counts: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for v in &values {
        *counts.entry(v.clone()).or_default() += 1;
    }
    for l in lines(&numbered("k", 0, 20_000)) {
        assert!(
            counts.contains_key(&l),
            "lost {}",
            String::from_utf8_lossy(&l)
        );
    }
    let dups = got - 20_000;
    eprintln!("kill -9 x3: 20000 lines, {got} records, {dups} duplicates");
    // Each kill may resend at most what was acknowledged after the last checkpoint (1 s) plus what was
    // in flight: far less than the whole file each time.
    assert!(
        dups < 20_000,
        "{dups} duplicates: restarts did not resume from the checkpoint"
    );
}

#[test]
fn tail_follows_a_hundred_files_at_once() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-100");
    let t = topic("tail-100");
    for i in 0..100 {
        append(
            &dir.join(format!("f{i:03}.log")),
            &numbered(&format!("f{i}"), 0, 20),
        );
    }
    let pattern = dir.join("*.log").display().to_string();
    let ck = ckpt_arg(&dir);
    let mut tail = Tail::start(&b, &[&pattern, &t, "--checkpoint", &ck], &dir.join("err"));
    wait_for_records(&b, &t, 2000, WAIT);
    for i in 0..100 {
        append(
            &dir.join(format!("f{i:03}.log")),
            &numbered(&format!("f{i}"), 20, 30),
        );
    }
    let got = wait_for_records(&b, &t, 3000, WAIT);
    tail.stop("INT");
    let mut want: Vec<Vec<u8>> = (0..100)
        .flat_map(|i| lines(&numbered(&format!("f{i}"), 0, 30)))
        .collect();
    let mut got = got;
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn tail_keeps_bytes_as_they_are_and_truncates_a_10_mb_line() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-bytes");
    let t = topic("tail-bytes");
    let f = dir.join("bin.log");
    let mut data = b"nul\x00inside\n\xff\xfe not utf-8\ncrlf\r\n\n".to_vec();
    data.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    data.extend_from_slice(b"\nafter the long line\n");
    append(&f, &data);
    let missing = dir.join("not-yet.log");
    let ck = ckpt_arg(&dir);
    let args = [
        f.to_str().unwrap(),
        missing.to_str().unwrap(),
        &t,
        "--checkpoint",
        &ck,
        "--max-line-bytes",
        "1000",
    ];
    // A directory named among the files is a mistake said at once (exit 2), not followed (t14).
    let out = std::process::Command::new(shipper_bin())
        .args([
            "-b",
            &b,
            "tail",
            f.to_str().unwrap(),
            dir.to_str().unwrap(),
            &t,
        ])
        .args(["--checkpoint", &ck])
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{refused}");
    assert!(refused.contains("is a directory, not a file"), "{refused}");
    let mut tail = Tail::start(&b, &args, &dir.join("err"));
    let got = wait_for_records(&b, &t, 6, WAIT);
    append(&missing, b"appeared later\n");
    let got2 = wait_for_records(&b, &t, 7, WAIT);
    tail.stop("INT");
    let err = tail.stderr();
    assert_eq!(got[0], b"nul\x00inside");
    assert_eq!(got[1], b"\xff\xfe not utf-8");
    assert_eq!(got[2], b"crlf");
    assert_eq!(got[3], b"");
    assert_eq!(got[4], vec![b'x'; 1000]);
    assert_eq!(got[5], b"after the long line");
    assert_eq!(
        got2.get(6).map(|v| v.as_slice()),
        Some(&b"appeared later"[..]),
        "{err}"
    );
    assert!(err.contains("does not exist yet"), "{err}");
    assert!(err.contains("1 long line truncated"), "{err}");
    // Named, not only counted (t31 F6).
    assert!(
        err.contains("bin.log: 1 long line cut to fit (--max-line-bytes 1000"),
        "{err}"
    );
}

/// A small deterministic PRNG so the model test replays the same way for a given seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random writes, rename rotations, copytruncates, truncations, deletions and creations on three files
/// while shipper tails them; afterwards every line must be in the topic, except lines that copytruncate
/// or truncation destroyed before shipper could read them (the documented window), which are counted.
/// `--max-line-bytes` raised past what `--max-message-bytes` lets through: the line limit is the
/// largest value a batch holds (1,048,516 bytes by default, as `produce` sends), and a line under it
/// whose key and headers take its record over is cut to fit and counted, not skipped. t31: lines under
/// the announced limit were skipped with a warning, in no topic and no dead letter, the checkpoint past
/// them; and the limit was 29 bytes short of what fits.
#[test]
fn a_line_whose_headers_take_it_past_the_largest_batch_is_cut_to_fit_not_lost() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-fit");
    let t = topic("tail-fit");
    let f = dir.join("app.log");
    let mut data = vec![b'a'; 1_048_480];
    data.push(b'\n');
    data.extend_from_slice(b"ok\n");
    append(&f, &data);
    let ck = ckpt_arg(&dir);
    let args = [
        f.to_str().unwrap(),
        &t,
        "--checkpoint",
        &ck,
        "--path-header",
        "src",
        "--max-line-bytes",
        "2000000",
    ];
    let mut tail = Tail::start(&b, &args, &dir.join("err"));
    let got = wait_for_records(&b, &t, 2, WAIT);
    tail.stop("INT");
    let err = tail.stderr();
    assert!(
        err.contains("lines longer than 1048516 bytes will be truncated"),
        "{err}"
    );
    assert_eq!(got.len(), 2, "{err}");
    let path = f.to_str().unwrap().len();
    assert!(
        got[0].len() < 1_048_480 && got[0].len() + path + 16 >= 1_048_480,
        "cut by about its header: {} ({err})",
        got[0].len()
    );
    assert!(got[0].iter().all(|&c| c == b'a'));
    assert_eq!(got[1], b"ok");
    assert!(err.contains("1 long line truncated"), "{err}");
    assert!(!err.contains("line skipped"), "{err}");
    assert!(err.contains("0 failed and skipped"), "{err}");
}

/// A file whose record key and headers alone take more than `--max-message-bytes` allows: no line of
/// it can be sent, whatever is cut, so its lines wait in the file, said once; each was skipped, in no
/// topic and no dead letter (t32 F2). Restarted with room, they are shipped.
#[test]
fn lines_whose_key_and_headers_alone_do_not_fit_wait_in_their_file() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-nofit");
    let deep = dir.join("d".repeat(250)).join("e".repeat(250));
    std::fs::create_dir_all(&deep).unwrap();
    let t = topic("tail-nofit");
    let f = deep.join("app.log");
    append(&f, b"hello\nworld\n");
    let ck = ckpt_arg(&dir);
    let args = [
        f.to_str().unwrap(),
        &t,
        "--checkpoint",
        &ck,
        "--key",
        "{path}",
        "--path-header",
        "src",
    ];
    let small = [&args[..], &["--max-message-bytes", "1024"]].concat();
    let mut tail = Tail::start(&b, &small, &dir.join("err"));
    std::thread::sleep(Duration::from_millis(1500));
    append(&f, b"more\n");
    std::thread::sleep(Duration::from_millis(500));
    tail.stop("INT");
    let err = tail.stderr();
    assert!(err.contains("its record key and headers alone take more than --max-message-bytes allows; its lines wait in the file"), "{err}");
    assert_eq!(
        err.matches("cannot ship the lines of").count(),
        1,
        "said once: {err}"
    );
    assert!(!err.contains("line skipped"), "{err}");
    assert!(topic_values(&b, &t).is_empty());
    let mut tail = Tail::start(&b, &args, &dir.join("err2"));
    let got = wait_for_records(&b, &t, 3, WAIT);
    tail.stop("INT");
    assert_eq!(got, [&b"hello"[..], b"world", b"more"], "{}", tail.stderr());
}

#[test]
fn model_random_file_operations_lose_nothing_outside_the_truncation_window() {
    let Some(b) = broker() else { return };
    let seed: u64 = std::env::var("SHIPPER_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    let dir = scratch_dir("tail-model");
    let t = topic("tail-model");
    let pattern = dir.join("*.log").display().to_string();
    let ck = ckpt_arg(&dir);
    let mut tail = Tail::start(&b, &[&pattern, &t, "--checkpoint", &ck], &dir.join("err"));
    std::thread::sleep(Duration::from_millis(500));
    let mut rng = Rng(seed);
    let mut seq = 0usize;
    // Lines per file generation; a generation ends at a rename, a delete or a truncation.
    let mut written: Vec<(String, bool)> = Vec::new(); // (line, may be lost by a truncation)
    let mut current: BTreeMap<usize, Vec<usize>> = BTreeMap::new(); // file -> indexes into `written`
    let mut ops: BTreeMap<&str, u32> = BTreeMap::new();
    for _ in 0..120 {
        let file = rng.below(3) as usize;
        let path = dir.join(format!("m{file}.log"));
        let op = match rng.below(20) {
            0 => "rename",
            1 => "copytruncate",
            2 => "delete",
            _ => "write",
        };
        *ops.entry(op).or_default() += 1;
        match op {
            "write" => {
                let n = 1 + rng.below(50) as usize;
                let mut data = Vec::new();
                for _ in 0..n {
                    let line =
                        format!("m{file} line {seq} {}", "z".repeat(rng.below(200) as usize));
                    data.extend_from_slice(line.as_bytes());
                    data.push(b'\n');
                    current.entry(file).or_default().push(written.len());
                    written.push((line, false));
                    seq += 1;
                }
                append(&path, &data);
            }
            "rename" if path.exists() => {
                std::fs::rename(&path, dir.join(format!("m{file}.log.{seq}"))).unwrap();
                current.remove(&file);
            }
            "copytruncate" if path.exists() => {
                // As logrotate does it: copy away (not followed: no .log suffix), then truncate in place.
                std::fs::copy(&path, dir.join(format!("m{file}.{seq}.old"))).unwrap();
                truncate_in_place(&path);
                for i in current.remove(&file).unwrap_or_default() {
                    written[i].1 = true;
                }
            }
            "delete" if path.exists() => {
                std::fs::remove_file(&path).unwrap();
                current.remove(&file);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(rng.below(40)));
    }
    let must: usize = written.iter().filter(|(_, lossy)| !lossy).count();
    wait_for_records(&b, &t, written.len(), Duration::from_secs(20));
    // Partial lines do not occur here (every write ends in a newline), so nothing waits for a grace period.
    let got = topic_values(&b, &t);
    tail.stop("INT");
    let mut counts: BTreeMap<&[u8], u32> = BTreeMap::new();
    for v in &got {
        *counts.entry(v.as_slice()).or_default() += 1;
    }
    let mut lost_in_window = 0;
    for (line, lossy) in &written {
        if !counts.contains_key(line.as_bytes()) {
            assert!(
                lossy,
                "lost a line outside any truncation window: {line}\n{}",
                tail.stderr()
            );
            lost_in_window += 1;
        }
    }
    eprintln!(
        "model seed {seed:#x}: ops {ops:?}; {} lines written, {must} outside truncation windows, {lost_in_window} lost to copytruncate",
        written.len()
    );
}

/// With `compress`, logrotate gzips each rotated file and shipper follows the glob `app.log*`, which
/// matches the compressed files too (and one left from before it started).
/// Appends to `path` once it exists, as an application whose log is created by logrotate.
fn append_to_existing(path: &std::path::Path, data: &[u8]) {
    use std::io::Write as _;
    for _ in 0..2000 {
        match std::fs::OpenOptions::new().append(true).open(path) {
            Ok(mut f) => return f.write_all(data).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("cannot append to {}: {e}", path.display()),
        }
    }
    panic!("{} was not created again within 2 s", path.display());
}

fn logrotate_while_writing(mode: &str, compress: bool, glob: bool) -> (usize, usize, usize) {
    let b = broker().expect("checked by caller");
    let name = format!(
        "tail-logrotate-{mode}{}{}",
        if compress { "-gz" } else { "" },
        if glob { "-glob" } else { "" }
    );
    let dir = scratch_dir(&name);
    let t = topic(&name);
    let f = dir.join("app.log");
    append(&f, b"");
    let conf = dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 5\n  {mode}\n  missingok\n  {}\n}}\n",
            f.display(),
            if compress { "compress" } else { "nocompress" }
        ),
    )
    .unwrap();
    let followed = if glob && !compress {
        format!("{}/app.log*", dir.display())
    } else if compress {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"old line 1\nold line 2\n").unwrap();
        std::fs::write(dir.join("app.log.9.gz"), gz.finish().unwrap()).unwrap();
        format!("{}/app.log*", dir.display())
    } else {
        f.display().to_string()
    };
    let ck = ckpt_arg(&dir);
    let mut tail = Tail::start(&b, &[&followed, &t, "--checkpoint", &ck], &dir.join("err"));
    std::thread::sleep(Duration::from_millis(500));
    let total = 6000;
    let writer_path = f.clone();
    let writer = std::thread::spawn(move || {
        // Like an application that reopens its log by path for each write (as after a SIGHUP),
        // but never creates it: logrotate's `create` fails if the file is back before it makes
        // the new one ("error creating output file ... File exists"), so the writer waits.
        for i in 0..total {
            append_to_existing(&writer_path, format!("rot {i}\n").as_bytes());
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(250));
        let out = std::process::Command::new("logrotate")
            .args(["-f", "-s"])
            .arg(dir.join("state"))
            .arg(&conf)
            .output()
            .expect("logrotate is installed by scripts/install-deps");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    writer.join().unwrap();
    let got = wait_for_records(&b, &t, total, WAIT);
    tail.stop("INT");
    // Lines only: no compressed bytes, no line of a file compressed before the start.
    let strays: Vec<&Vec<u8>> = got.iter().filter(|r| !r.starts_with(b"rot ")).collect();
    assert!(
        strays.is_empty(),
        "{} records are no written line, e.g. {:?}: {}",
        strays.len(),
        String::from_utf8_lossy(strays[0]),
        tail.stderr()
    );
    if compress {
        // The first compressed file is warned about, once; the others (one per rotation) are
        // said at -v only.
        let err = tail.stderr();
        let said = err.matches("-compressed (a rotated log?)").count();
        assert_eq!(
            said, 1,
            "only the first compressed file is warned about: {err}"
        );
        assert_eq!(
            err.matches("app.log.9.gz is gzip-compressed").count(),
            1,
            "{err}"
        );
    }
    let records = got.len();
    let have: std::collections::BTreeSet<Vec<u8>> = got.into_iter().collect();
    let duplicates = records - have.len();
    // What is on disk after the rotations: the file and its rotated copies.
    // A writer that creates the file by itself between logrotate's rename and its create (as this one,
    // opening by path with O_CREAT for each line) has its file moved aside by logrotate, as
    // `app.log-DATE.backup`, before the new one is created: a name the followed path does not match,
    // and a file shipper may never have seen open (it lives for microseconds under the path).
    let mut on_disk = std::collections::BTreeSet::new();
    let mut set_aside = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("app.log") {
            let text = std::fs::read(e.path()).unwrap();
            let lines = text
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec);
            if name.ends_with(".backup") && !glob {
                set_aside.extend(lines);
            } else {
                on_disk.extend(lines);
            }
        }
    }
    let lost: Vec<usize> = (0..total)
        .filter(|i| !have.contains(format!("rot {i}").as_bytes()))
        .filter(|i| !set_aside.contains(format!("rot {i}").as_bytes()))
        .collect();
    if !set_aside.is_empty() {
        eprintln!(
            "logrotate {mode}: {} lines set aside by logrotate in a .backup file",
            set_aside.len()
        );
    }
    let kept_by_logrotate = lost
        .iter()
        .filter(|i| on_disk.contains(format!("rot {i}").as_bytes()))
        .count();
    eprintln!(
        "logrotate {mode}: {total} lines written, {} not in Kafka, {kept_by_logrotate} of them on disk, {duplicates} duplicates; {}",
        lost.len(),
        tail.stderr().lines().last().unwrap_or("")
    );
    (lost.len(), kept_by_logrotate, duplicates)
}

/// `--exclude` on the command line, by file name and by path; and shipper's own files (checkpoint, its
/// lock and temporary files, the dead-letter file) in the same directory are never followed, though
/// the glob matches them: every line of the other files arrives, nothing else.
#[test]
fn exclude_leaves_out_files_by_name_and_by_path_and_shippers_own_files_are_never_followed() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-exclude");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let t = topic("tail-exclude");
    append(&logs.join("app.log"), b"app-1\n");
    append(&logs.join("app.log.1"), b"rotated-1\n");
    append(&logs.join("debug.log"), b"debug-1\n");
    let all = format!("{}/*", logs.display());
    let debug = format!("{}/debug*", logs.display());
    let ck = logs.join("state").display().to_string();
    let dead = logs.join("dead.jsonl").display().to_string();
    let args = [
        &all[..],
        &t,
        "--checkpoint",
        &ck,
        "--dead-letter",
        &dead,
        "--checkpoint-ms",
        "20",
        "--exclude",
        "*.1",
        "--exclude",
        &debug,
    ];
    let mut tail = Tail::start(&b, &args, &dir.join("err"));
    wait_for_records(&b, &t, 1, WAIT);
    append(&logs.join("app.log"), b"app-2\n");
    append(&logs.join("other.log"), b"other-1\n");
    append(&logs.join("debug.log"), b"debug-2\n");
    wait_for_records(&b, &t, 3, WAIT);
    // Checkpoint writes (every 20 ms) and rescans meanwhile: none of them may bring a record.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
    let mut got = topic_values(&b, &t);
    got.sort();
    assert_eq!(got, lines(b"app-1\napp-2\nother-1\n"), "{}", tail.stderr());
    // Named on the command line, the checkpoint is refused with a reason.
    let mut named = Tail::start(&b, &[&ck, &t, "--checkpoint", &ck], &dir.join("err2"));
    std::thread::sleep(Duration::from_millis(1000));
    named.stop("TERM");
    let err = named.stderr();
    assert!(err.contains("a file shipper writes itself"), "{err}");
}

#[test]
fn real_logrotate_create_mode_loses_nothing() {
    if broker().is_none() {
        return;
    }
    let (lost, _, duplicates) = logrotate_while_writing("create", false, false);
    assert_eq!((lost, duplicates), (0, 0));
}

/// logrotate's `compress` under a glob that matches the compressed files too (`app.log*`): every line
/// once, and no record of compressed bytes (gzip writes each .gz after creating it empty).
#[test]
fn real_logrotate_with_compress_under_a_glob_ships_lines_not_compressed_bytes() {
    if broker().is_none() {
        return;
    }
    let (lost, _, duplicates) = logrotate_while_writing("create", true, true);
    assert_eq!((lost, duplicates), (0, 0));
}

/// Lines written between logrotate's copy and its truncation are in no file (logrotate's own window);
/// every line that is on disk afterwards — in the file or in a copy — must be in Kafka: what shipper
/// had not read when the file was truncated is read from the copy.
#[test]
fn real_logrotate_copytruncate_mode_loses_only_what_logrotate_lost() {
    if broker().is_none() {
        return;
    }
    let (lost, on_disk, duplicates) = logrotate_while_writing("copytruncate", false, false);
    assert_eq!(
        on_disk, 0,
        "{on_disk} lines on disk never reached Kafka ({lost} missing in all)"
    );
    assert_eq!(duplicates, 0);
}

/// copytruncate under a glob that matches the copies too (`app.log*`): each copy is read on from where
/// its original was read to, not from its start; it used to ship every line twice.
#[test]
fn real_logrotate_copytruncate_under_a_glob_matching_the_copies_ships_no_line_twice() {
    if broker().is_none() {
        return;
    }
    let (lost, on_disk, duplicates) = logrotate_while_writing("copytruncate", false, true);
    assert_eq!(
        on_disk, 0,
        "{on_disk} lines on disk never reached Kafka ({lost} missing in all)"
    );
    assert_eq!(duplicates, 0);
}

/// Issue #16 on the single broker: `--exactly-once` killed twice (once with the checkpoint deleted
/// after) while three files grow: every line once for shipper, kcat and Kafka's console consumer with
/// read_committed; position headers only where a batch needs them.
#[test]
fn tail_exactly_once_survives_kill_9_and_a_deleted_checkpoint_without_duplicates() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-eo");
    let t = topic("tail-eo");
    create_topic(&b, &t, 3, 1, &[]);
    let pattern = dir.join("*.log");
    let ck = ckpt_arg(&dir);
    let args = [
        pattern.to_str().unwrap(),
        &t,
        "--checkpoint",
        &ck,
        "--exactly-once",
    ];
    let d = dir.clone();
    let writer = std::thread::spawn(move || {
        for chunk in 0..40 {
            for f in 0..3 {
                let name = format!("f{f}");
                append(
                    &d.join(format!("{name}.log")),
                    &numbered(&name, chunk * 250, chunk * 250 + 250),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    for round in 0..2 {
        let mut tail = Tail::start(&b, &args, &dir.join(format!("err{round}")));
        std::thread::sleep(Duration::from_millis(1200));
        tail.stop("KILL");
        if round == 1 {
            std::fs::remove_file(dir.join("checkpoint")).unwrap();
        }
    }
    writer.join().unwrap();
    let mut tail = Tail::start(&b, &args, &dir.join("err-final"));
    wait_for_records(&b, &t, 30_000, WAIT);
    std::thread::sleep(Duration::from_millis(1000));
    tail.stop("INT");
    let mut want: Vec<Vec<u8>> = (0..3)
        .flat_map(|f| lines(&numbered(&format!("f{f}"), 0, 10_000)))
        .collect();
    want.sort();
    let mut got = topic_values(&b, &t);
    got.sort();
    assert_eq!(got.len(), want.len(), "shipper's count");
    assert!(got == want, "shipper: every line exactly once");
    let mut kc = lines(&kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "%s\\n"], b""));
    kc.sort();
    assert!(
        kc == want,
        "kcat: every line exactly once ({} records)",
        kc.len()
    );
    let java = kafka_tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        &[
            "--bootstrap-server",
            &b,
            "--topic",
            &t,
            "--from-beginning",
            "--isolation-level",
            "read_committed",
            "--max-messages",
            "30000",
            "--timeout-ms",
            "20000",
        ],
        b"",
    );
    let mut jv = lines(&java);
    jv.sort();
    assert!(
        jv == want,
        "read_committed: every line exactly once ({} records)",
        jv.len()
    );
    // One file per partition; a header on few records (one per file per batch, plus after restarts).
    let hs = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "%p %h\\n"], b"");
    let text = String::from_utf8_lossy(&hs);
    let with = text.lines().filter(|l| l.contains("shipper.pos=")).count();
    assert!(with > 0 && with < 1_000, "{with} records carry a position");
    let per_record = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "%p %s\\n"], b"");
    let mut partition_of: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for l in String::from_utf8_lossy(&per_record).lines() {
        let mut it = l.splitn(3, ' ');
        let (p, file) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        partition_of
            .entry(file.to_string())
            .or_default()
            .insert(p.to_string());
    }
    for (file, ps) in &partition_of {
        assert_eq!(ps.len(), 1, "{file} went to partitions {ps:?}");
    }
}

#[test]
fn tail_exactly_once_refuses_settings_that_cannot_keep_it() {
    let dir = scratch_dir("tail-eo-usage");
    let p = dir.join("a.log");
    for flags in [
        &["--acks", "1"][..],
        &["--no-idempotence"],
        &["--partitioner", "random"],
        // It spreads a file's batches too (t28 F5: accepted and silently not applied).
        &["--partitioner", "sticky"],
    ] {
        let out = std::process::Command::new(shipper_bin())
            .args([
                "-b",
                "127.0.0.1:1",
                "tail",
                p.to_str().unwrap(),
                "t",
                "--exactly-once",
            ])
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains("exactly-once"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "brokers = [\"127.0.0.1:1\"]\nacks = \"1\"\nexactly_once = true\n[[input]]\npaths = [\"{}\"]\ntopic = \"t\"\n",
            p.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(shipper_bin())
        .args(["check-config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("agent.toml:3:") && err.contains("acks=all"),
        "{err}"
    );
}

/// A file empty at the last stop, written and copytruncated while shipper was down: the copy newer
/// than the checkpoint is read at the restart (t20 F1: 1,000 of 1,010 lines were lost, unsaid).
#[test]
fn a_copy_made_while_down_of_a_file_then_empty_is_shipped() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-copy-empty");
    let t = topic("tail-copy-empty");
    let f = dir.join("a.log");
    std::fs::write(&f, b"").unwrap();
    let run = |what: &str| {
        let mut c = std::process::Command::new(shipper_bin());
        c.args([
            "-b",
            &b,
            "tail",
            &dir.join("*.log").display().to_string(),
            &t,
        ])
        .args(["--checkpoint", &ckpt_arg(&dir)]);
        Tail::spawn(c, &dir.join(format!("err-{what}")))
    };
    let mut first = run("first");
    std::thread::sleep(Duration::from_secs(2));
    first.stop("TERM");
    append(&f, &numbered("before", 0, 500));
    std::fs::copy(&f, dir.join("a.log.1")).unwrap();
    truncate_in_place(&f);
    append(&f, &numbered("after", 0, 5));
    let mut second = run("second");
    let got = wait_for_records(&b, &t, 505, WAIT);
    second.stop("TERM");
    assert_eq!(got.len(), 505, "{}", second.stderr());
}

/// The checkpoint records each file's birth time where the filesystem keeps one, so an inode a new
/// file reuses is not taken for the old file; the static (musl) build too, whose standard library
/// does not ask for it (t20: its checkpoints said `-`). Run against the static binary in the suite.
#[test]
fn the_checkpoint_records_birth_times() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("tail-born");
    let t = topic("tail-born");
    let f = dir.join("a.log");
    append(&f, b"one\n");
    let Ok(born) = std::fs::metadata(&f).unwrap().created() else {
        return; // this filesystem keeps no birth time: nothing to record
    };
    let born = born
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut c = std::process::Command::new(shipper_bin());
    c.args(["-b", &b, "tail", &f.display().to_string(), &t])
        .args(["--checkpoint", &ckpt_arg(&dir)]);
    let mut tail = Tail::spawn(c, &dir.join("err"));
    assert_eq!(wait_for_records(&b, &t, 1, WAIT).len(), 1);
    tail.stop("TERM");
    let ck = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    // After the header and the skip-marks line.
    let entry = ck.lines().nth(2).unwrap_or_default();
    assert_eq!(
        entry.split(' ').nth(2),
        Some(born.to_string().as_str()),
        "{ck}"
    );
}

//! `shipper tail` and `produce` against hostile files and an unlucky operator, with the real broker:
//! planted symbolic links, FIFOs, file names with newlines and terminal escapes, two tails on one
//! checkpoint, a damaged or unwritable checkpoint, a small open-files limit, a stray SIGBUS, an ACL
//! that refuses writes for a while, and input without newlines.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(30);

fn numbered(prefix: &str, from: usize, to: usize) -> Vec<u8> {
    (from..to)
        .flat_map(|i| format!("{prefix} {i}\n").into_bytes())
        .collect()
}

fn ck(dir: &Path) -> String {
    dir.join("checkpoint").display().to_string()
}

fn glob(dir: &Path) -> String {
    dir.join("*.log").display().to_string()
}

/// Waits until `tail`'s stderr contains `what`.
fn wait_for_log(tail: &Tail, what: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if tail.stderr().contains(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn tail_never_follows_a_planted_link_and_follows_links_only_inside_with_follow_symlinks() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("links");
    let secret_dir = scratch_dir("links-secret");
    std::fs::write(secret_dir.join("shadow"), "root:SECRET\n").unwrap();
    append(&dir.join("ok.log"), b"ok line\n");
    std::os::unix::fs::symlink(secret_dir.join("shadow"), dir.join("x.log")).unwrap();
    std::fs::write(dir.join("inside.txt"), "inside line\n").unwrap();
    std::os::unix::fs::symlink(dir.join("inside.txt"), dir.join("in.log")).unwrap();
    for (follow, want) in [
        (false, vec!["ok line"]),
        (true, vec!["inside line", "ok line"]),
    ] {
        let t = topic("links");
        let ckpt = dir.join(format!("ck-{follow}"));
        let mut args = vec![
            glob(&dir),
            t.clone(),
            "--checkpoint".into(),
            ckpt.display().to_string(),
        ];
        if follow {
            args.push("--follow-symlinks".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut tail = Tail::start(&b, &args, &dir.join(format!("err-{follow}")));
        let mut got = wait_for_records(&b, &t, want.len(), WAIT);
        std::thread::sleep(Duration::from_millis(1500));
        got.extend(topic_values(&b, &t).into_iter().skip(got.len()));
        assert_eq!(tail.stop("TERM"), Some(0));
        got.sort();
        let want: Vec<Vec<u8>> = want.iter().map(|s| s.as_bytes().to_vec()).collect();
        assert_eq!(got, want, "follow_symlinks={follow}: {}", tail.stderr());
        let err = tail.stderr();
        assert!(
            !got.iter().any(|v| v.starts_with(b"root:")),
            "the secret was shipped"
        );
        if follow {
            assert!(err.contains("outside"), "{err}");
        } else {
            assert!(err.contains("symbolic link"), "{err}");
        }
    }
}

#[test]
fn a_fifo_among_the_files_blocks_nothing_and_sigterm_still_stops_tail() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("fifo");
    let t = topic("fifo");
    let fifo = std::ffi::CString::new(dir.join("pipe.log").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    append(&dir.join("ok.log"), &numbered("ok", 0, 10));
    let c = ck(&dir);
    let mut tail = Tail::start(&b, &[&glob(&dir), &t, "--checkpoint", &c], &dir.join("err"));
    let got = wait_for_records(&b, &t, 10, WAIT);
    assert_eq!(got.len(), 10, "{}", tail.stderr());
    let start = std::time::Instant::now();
    assert_eq!(tail.stop("TERM"), Some(0));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(tail.stderr().contains("a FIFO"), "{}", tail.stderr());
}

/// shipper run as a user that other users' files and directories shut out (`nobody`, through
/// setpriv, when the tests run as root; the test's own user otherwise): an unreadable file and an
/// unreadable directory are each said once, the rest ships, and both are followed once readable.
#[test]
fn unreadable_files_and_directories_are_said_once_and_followed_once_readable() {
    use std::os::unix::fs::PermissionsExt;
    let Some(b) = broker() else { return };
    let dir = scratch_dir("perm");
    let t = topic("perm");
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    let logs = dir.join("logs");
    let private = logs.join("private");
    std::fs::create_dir_all(&private).unwrap();
    for d in [&dir, &logs] {
        mode(d, 0o755);
    }
    append(&logs.join("open.log"), b"open-1\n");
    append(&logs.join("closed.log"), b"closed-1\n");
    append(&private.join("inner.log"), b"inner-1\n");
    mode(&logs.join("open.log"), 0o644);
    mode(&logs.join("closed.log"), 0o600);
    mode(&private.join("inner.log"), 0o644);
    mode(&private, 0o700);
    // The binary and the checkpoint where the other user can reach them.
    let bin = dir.join("shipper");
    std::fs::copy(shipper_bin(), &bin).unwrap();
    mode(&bin, 0o755);
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    mode(&state, 0o777);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut c = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let pattern = format!("{}/**/*.log", logs.display());
    let ckpt = state.join("ck");
    let port = crate::agent::free_port();
    let listen = format!("127.0.0.1:{port}");
    c.args([
        "-b",
        &b,
        "tail",
        &pattern,
        &t,
        "--metrics-listen",
        &listen,
        "--checkpoint",
    ])
    .arg(&ckpt);
    let mut tail = Tail::spawn(c, &dir.join("err"));
    let got = wait_for_records(&b, &t, 1, WAIT);
    assert_eq!(got, lines(b"open-1\n"), "{}", tail.stderr());
    std::thread::sleep(Duration::from_millis(1500));
    let err = tail.stderr();
    let file_said = format!(
        "cannot follow {}: Permission denied",
        logs.join("closed.log").display()
    );
    let dir_said = format!(
        "cannot read directory {}: Permission denied",
        private.display()
    );
    assert_eq!(err.matches(&file_said).count(), 1, "{err}");
    assert_eq!(err.matches(&dir_said).count(), 1, "{err}");
    // Counted where an alert can see it (t22 F8: only said).
    let unreadable = || {
        let (_, text) = crate::agent::http_get(port, "/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("shipper_files_unreadable "))
            .map(|v| v.trim().to_string())
    };
    assert_eq!(unreadable().as_deref(), Some("1"));
    // Readable now: both are followed from their start.
    mode(&logs.join("closed.log"), 0o644);
    mode(&private, 0o755);
    append(&logs.join("closed.log"), b"closed-2\n");
    wait_for_records(&b, &t, 4, WAIT);
    assert_eq!(unreadable().as_deref(), Some("0"));
    // A directory unreadable for a moment: its followed file is not taken for rotated or deleted,
    // and its next line comes at once (t23 F3: up to a minute, at the safety scan).
    mode(&private, 0o000);
    std::thread::sleep(Duration::from_secs(3));
    mode(&private, 0o755);
    std::thread::sleep(Duration::from_millis(500));
    append(&private.join("inner.log"), b"inner-2\n");
    let mut got = wait_for_records(&b, &t, 5, Duration::from_secs(10));
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
    got.sort();
    assert_eq!(
        got,
        lines(b"closed-1\nclosed-2\ninner-1\ninner-2\nopen-1\n"),
        "{}",
        tail.stderr()
    );
    // Said again when it was unreadable again, not at every scan meanwhile.
    assert_eq!(
        tail.stderr().matches(&dir_said).count(),
        2,
        "{}",
        tail.stderr()
    );
}

#[test]
fn a_file_named_with_a_newline_and_escapes_is_shipped_resumed_and_printed_escaped() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("names");
    let t = topic("names");
    let name = std::ffi::OsStr::from_bytes(b"evil\nname \x1b[31mred\xff.log");
    let f = dir.join(name);
    append(&f, &numbered("n", 0, 20));
    let c = ck(&dir);
    let args = [
        glob(&dir),
        t.clone(),
        "--checkpoint".into(),
        c.clone(),
        "-v".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut tail = Tail::start(&b, &args, &dir.join("err1"));
    wait_for_records(&b, &t, 20, WAIT);
    assert_eq!(tail.stop("TERM"), Some(0));
    let err = tail.stderr();
    assert!(
        !err.contains('\x1b'),
        "a raw escape reached the log: {err:?}"
    );
    assert!(err.contains("evil\\nname \\u{1b}[31mred\\xff.log"), "{err}");
    append(&f, &numbered("n", 20, 30));
    let mut tail = Tail::start(&b, &args, &dir.join("err2"));
    let got = wait_for_records(&b, &t, 30, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
    assert_eq!(
        topic_values(&b, &t),
        lines(&numbered("n", 0, 30)),
        "exactly once after the restart"
    );
    let _ = got;
}

#[test]
fn a_second_tail_on_the_same_checkpoint_is_refused() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("twotails");
    let t = topic("twotails");
    append(&dir.join("a.log"), &numbered("a", 0, 100));
    let c = ck(&dir);
    let mut first = Tail::start(
        &b,
        &[&glob(&dir), &t, "--checkpoint", &c],
        &dir.join("err1"),
    );
    wait_for_records(&b, &t, 100, WAIT);
    let second = shipper(&b, &["tail", &glob(&dir), &t, "--checkpoint", &c], b"");
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another shipper tail"), "{err}");
    assert_eq!(first.stop("TERM"), Some(0));
    assert_eq!(topic_values(&b, &t).len(), 100, "shipped once, not twice");
}

#[test]
fn a_damaged_checkpoint_never_stops_tail() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("damaged");
    let t = topic("damaged");
    append(&dir.join("a.log"), &numbered("a", 0, 10));
    std::fs::write(
        dir.join("checkpoint"),
        "shipper-checkpoint 2\ngarbage\n\x00\x01\n",
    )
    .unwrap();
    let c = ck(&dir);
    let mut tail = Tail::start(&b, &[&glob(&dir), &t, "--checkpoint", &c], &dir.join("err"));
    let got = wait_for_records(&b, &t, 10, WAIT);
    assert_eq!(tail.stop("TERM"), Some(0));
    assert_eq!(got.len(), 10);
    let err = tail.stderr();
    assert!(
        err.contains("damaged lines dropped") && err.contains(".damaged-"),
        "{err}"
    );
}

/// A checkpoint path naming something else (a log given by mistake, a FIFO, a device like
/// /dev/null) is refused at once, and left as it is: it used to be moved aside and replaced by a
/// checkpoint (as root, /dev/null became a 0600 file), and a FIFO blocked the start for ever.
#[test]
fn a_checkpoint_path_naming_something_else_is_refused_and_left_alone() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("ck-other");
    let t = topic("ck-other");
    append(&dir.join("a.log"), b"x\n");
    let log = dir.join("app.log");
    std::fs::write(&log, "important line 1\nline 2\n").unwrap();
    let fifo = dir.join("fifo");
    let dev = dir.join("null");
    for (p, kind) in [(&fifo, "p"), (&dev, "c")] {
        let mut c = Command::new("mknod");
        c.arg(p).arg(kind);
        if kind == "c" {
            c.args(["1", "3"]);
        }
        assert!(c.status().unwrap().success());
    }
    for (path, why) in [
        (&log, "it exists and is no shipper checkpoint"),
        (&fifo, "it is a FIFO, not a checkpoint file"),
        (&dev, "it is a device, not a checkpoint file"),
    ] {
        let started = std::time::Instant::now();
        let out = shipper(
            &b,
            &[
                "tail",
                &glob(&dir),
                &t,
                "--checkpoint",
                path.to_str().unwrap(),
            ],
            b"",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(why), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "important line 1\nline 2\n"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&dev)
        .unwrap()
        .file_type()
        .is_char_device());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".damaged-") || n.ends_with(".lock"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn a_checkpoint_that_cannot_be_written_refuses_to_start() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("unwritable");
    let t = topic("unwritable");
    append(&dir.join("a.log"), b"x\n");
    // An immutable directory: even root cannot create the checkpoint's temp file in it.
    let ckdir = dir.join("ro");
    std::fs::create_dir(&ckdir).unwrap();
    std::fs::write(ckdir.join("checkpoint.lock"), "").unwrap();
    let immutable = Command::new("chattr")
        .arg("+i")
        .arg(&ckdir)
        .status()
        .is_ok_and(|s| s.success());
    let c = if immutable {
        ckdir.join("checkpoint")
    } else {
        // No chattr here: a checkpoint path that is a directory cannot be read or replaced either.
        std::fs::create_dir(dir.join("ckdir")).unwrap();
        dir.join("ckdir")
    };
    let out = shipper(
        &b,
        &["tail", &glob(&dir), &t, "--checkpoint", c.to_str().unwrap()],
        b"",
    );
    if immutable {
        let _ = Command::new("chattr").arg("-i").arg(&ckdir).status();
    }
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = if immutable {
        "cannot write checkpoint"
    } else {
        "it is a directory, not a checkpoint file"
    };
    assert!(err.contains(want), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
}

#[test]
fn tail_started_while_kafka_is_unreachable_says_so() {
    let dir = scratch_dir("unreachable");
    append(&dir.join("a.log"), b"x\n");
    let c = ck(&dir);
    let mut cmd = Command::new(shipper_bin());
    cmd.args([
        "-b",
        "127.0.0.1:1",
        "tail",
        &glob(&dir),
        "t",
        "--checkpoint",
        &c,
    ]);
    let mut tail = Tail::spawn(cmd, &dir.join("err"));
    std::thread::sleep(Duration::from_secs(7));
    tail.stop("KILL");
    let err = tail.stderr();
    assert!(
        err.contains("no answer from Kafka (127.0.0.1:1) after 5 s (last: cannot connect to broker 127.0.0.1:1"),
        "{err}"
    );
}

/// A port that accepts and never answers (an HTTP server waits for a request of its own): the
/// first warning, at 5 s, already asks whether it is a Kafka listener (t15: only at 65 s).
#[test]
fn tail_at_a_port_that_never_answers_asks_at_once_whether_it_is_kafka() {
    let dir = scratch_dir("silent-port");
    append(&dir.join("a.log"), b"x\n");
    let c = ck(&dir);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accepted connections are held open, unanswered, until the test ends.
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    let mut cmd = Command::new(shipper_bin());
    cmd.args(["-b", &addr, "tail", &glob(&dir), "t", "--checkpoint", &c]);
    let mut tail = Tail::spawn(cmd, &dir.join("err"));
    std::thread::sleep(Duration::from_secs(7));
    tail.stop("KILL");
    let err = tail.stderr();
    assert!(
        err.contains(&format!(
            "no answer from Kafka ({addr}) after 5 s (nothing failed yet"
        )) && err.contains("is this a Kafka listener?"),
        "{err}"
    );
}

/// With `--timeout 5s` the give-up is said, without a "still trying" in the same second before it.
#[test]
fn tail_giving_up_at_its_timeout_does_not_say_it_is_still_trying() {
    let dir = scratch_dir("unreachable-timeout");
    append(&dir.join("a.log"), b"x\n");
    let c = ck(&dir);
    let mut cmd = Command::new(shipper_bin());
    cmd.args(["-b", "127.0.0.1:1", "tail", &glob(&dir), "t"])
        .args(["--checkpoint", &c, "--timeout", "5s"]);
    let out = run_with_input(cmd, b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("gave up after "), "{err}");
    assert!(!err.contains("still trying"), "{err}");
}

#[test]
fn a_checkpoint_that_cannot_be_written_at_the_end_makes_tail_exit_1() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("unwritable-end");
    let t = topic("unwritable-end");
    append(&dir.join("a.log"), &numbered("a", 0, 10));
    let ckdir = dir.join("state");
    std::fs::create_dir(&ckdir).unwrap();
    let c = ckdir.join("checkpoint");
    let mut tail = Tail::start(
        &b,
        &[&glob(&dir), &t, "--checkpoint", c.to_str().unwrap()],
        &dir.join("err"),
    );
    assert_eq!(wait_for_records(&b, &t, 10, WAIT).len(), 10);
    // Its directory gone (as root, the one sure way to make every write fail): lines still ship,
    // and the stop that cannot record them says so with exit 1, for systemd to see.
    // (Retried: shipper may write its next checkpoint's temporary file there while it is removed.)
    let mut tries = 0;
    while let Err(e) = std::fs::remove_dir_all(&ckdir) {
        tries += 1;
        assert!(tries < 50, "cannot remove {}: {e}", ckdir.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    append(&dir.join("a.log"), &numbered("a", 10, 20));
    assert_eq!(wait_for_records(&b, &t, 20, WAIT).len(), 20);
    assert_eq!(tail.stop("TERM"), Some(1));
    let err = tail.stderr();
    assert!(
        err.contains("cannot write checkpoint") && err.contains("the next start sends again"),
        "{err}"
    );
}

#[test]
fn more_files_than_the_open_files_limit_all_ship_and_the_checkpoint_is_written() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("fdlimit");
    let t = topic("fdlimit");
    create_topic(&b, &t, 1, 1, &[]);
    for i in 0..400 {
        append(
            &dir.join(format!("f{i:03}.log")),
            format!("file {i} line\n").as_bytes(),
        );
    }
    let c = ck(&dir);
    let log = std::fs::File::create(dir.join("err")).unwrap();
    let mut child = Command::new("prlimit")
        .arg("--nofile=128:128")
        .arg(shipper_bin())
        .args([
            "-b",
            &b,
            "tail",
            &glob(&dir),
            &t,
            "--checkpoint",
            &c,
            "--scan-ms",
            "200",
            "--stats",
            "1",
        ])
        .stderr(log)
        .spawn()
        .unwrap();
    let got = wait_for_records(&b, &t, 400, Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(1000));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(dir.join("err")).unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(got.len(), 400, "{err}");
    let ckpt = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    // The header and the skip-marks line, then one line per file.
    assert_eq!(ckpt.lines().count(), 402, "every file checkpointed: {err}");
    // The shortage is said. How many files wait is on the stats line only while some do: with
    // turns five times a second, 400 one-line files may all have had theirs before the first
    // stats line (CI saw "400 files (16 open)" at 1 s); the engine's unit test
    // `busy_files_take_turns...` checks the count and bytes of those waiting (t13).
    assert!(
        err.contains("more files match than may be open at once"),
        "{err}"
    );
}

#[test]
fn a_stray_sigbus_does_not_disarm_the_truncation_guard() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("sigbus");
    let t = topic("sigbus");
    let f = dir.join("a.log");
    append(&f, &numbered("before", 0, 1000));
    let c = ck(&dir);
    let mut tail = Tail::start(
        &b,
        &[f.to_str().unwrap(), &t, "--checkpoint", &c],
        &dir.join("err"),
    );
    wait_for_records(&b, &t, 1000, WAIT);
    for _ in 0..3 {
        let _ = Command::new("kill")
            .args(["-BUS", &tail.pid().to_string()])
            .status();
    }
    std::thread::sleep(Duration::from_millis(300));
    // Copytruncate under a busy writer, many times: the map faults, the guard must still be there.
    for round in 0..20 {
        append(&f, &vec![b'x'; 64 * 1024]);
        append(&f, b"\n");
        truncate_in_place(&f);
        append(&f, format!("after {round}\n").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(tail.stop("TERM"), Some(0), "tail died: {}", tail.stderr());
    let values = topic_values(&b, &t);
    assert!(
        values.iter().any(|v| v.starts_with(b"after")),
        "{}",
        tail.stderr()
    );
    assert!(
        !values.iter().any(|v| v.contains(&0)),
        "zeros from a vanished page were shipped"
    );
}

#[test]
fn an_acl_refusal_holds_lines_in_the_file_until_it_is_lifted_and_loses_none() {
    let Some(b) = broker() else { return };
    if !acl_capable() {
        return;
    }
    let dir = scratch_dir("acl");
    let t = topic("acl");
    create_topic(&b, &t, 2, 1, &[]);
    acl("deny-write", &t);
    let f = dir.join("a.log");
    append(&f, &numbered("acl", 0, 500));
    let c = ck(&dir);
    let mut tail = Tail::start(
        &b,
        &[f.to_str().unwrap(), &t, "--checkpoint", &c],
        &dir.join("err"),
    );
    assert!(
        wait_for_log(&tail, "TOPIC_AUTHORIZATION_FAILED", WAIT),
        "{}",
        tail.stderr()
    );
    // A one-shot produce fails at once with the reason.
    let out = shipper(&b, &["produce", &t], b"x\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOPIC_AUTHORIZATION_FAILED"));
    append(&f, &numbered("acl", 500, 1000));
    std::thread::sleep(Duration::from_secs(3));
    acl("allow-write", &t);
    let got = wait_for_records(&b, &t, 1000, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
    let mut got = got;
    got.sort();
    let mut want = lines(&numbered("acl", 0, 1000));
    want.sort();
    assert_eq!(got, want, "{}", tail.stderr());
    assert!(
        tail.stderr().contains("delivering to Kafka again"),
        "{}",
        tail.stderr()
    );
    let ckpt = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    let size = std::fs::metadata(&f).unwrap().len().to_string();
    assert!(
        ckpt.lines()
            .any(|l| l.split(' ').nth(5) == Some(size.as_str())),
        "{ckpt}"
    );
}

/// One topic the ACLs refuse writes to does not stop the files of the others, even of a topic that
/// comes later: its lines (more than the whole buffer) used to fill the buffer while they were
/// retried, and every other file stopped with them. Lifted, the refused file's lines all arrive too.
#[test]
fn a_topic_refused_by_acl_does_not_stop_the_files_of_other_topics() {
    let Some(b) = broker() else { return };
    if !acl_capable() {
        return;
    }
    let dir = scratch_dir("acl-others");
    let refused = topic("acl-refused");
    let open = topic("acl-open");
    create_topic(&b, &refused, 1, 1, &[]);
    create_topic(&b, &open, 1, 1, &[]);
    acl("deny-write", &refused);
    // 100,000 lines of ~100 bytes: 10 MB, more than the 4 MiB buffer.
    let pad = "x".repeat(90);
    let big: Vec<u8> = (0..100_000)
        .flat_map(|i| format!("{i:08} {pad}\n").into_bytes())
        .collect();
    append(&dir.join(format!("{refused}.log")), &big);
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "checkpoint = \"{d}/ckpt\"\n[[input]]\npaths = [\"{d}/*.log\"]\ntopic = \"{{file_stem}}\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut tail = Tail::start(&b, &["--config", cfg.to_str().unwrap()], &dir.join("err"));
    assert!(
        wait_for_log(&tail, "TOPIC_AUTHORIZATION_FAILED", WAIT),
        "{}",
        tail.stderr()
    );
    // The other topic's file comes after the refused one has taken what it may: a topic not known
    // yet still finds room.
    std::thread::sleep(Duration::from_secs(1));
    for round in 0..6 {
        append(
            &dir.join(format!("{open}.log")),
            &numbered("open", round * 10, 10 + round * 10),
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let text = |v: Vec<Vec<u8>>| {
        let mut v: Vec<String> = v
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        v.sort();
        v
    };
    let got = text(wait_for_records(&b, &open, 60, Duration::from_secs(60)));
    let want = text(lines(&numbered("open", 0, 60)));
    assert_eq!(got, want, "{}", tail.stderr());
    acl("allow-write", &refused);
    let got = wait_for_records(&b, &refused, 100_000, Duration::from_secs(120));
    assert_eq!(got.len(), 100_000, "{}", tail.stderr());
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
}

/// A second SIGINT while the stop waits for acknowledgements that cannot come (an ACL refusal)
/// ends the wait: the first stop would wait the whole --shutdown-timeout-ms (t17 F9).
#[test]
fn a_second_signal_ends_the_wait_for_acknowledgements() {
    let Some(b) = broker() else { return };
    if !acl_capable() {
        return;
    }
    let dir = scratch_dir("second-signal");
    let t = topic("second-signal");
    create_topic(&b, &t, 1, 1, &[]);
    acl("deny-write", &t);
    let f = dir.join("a.log");
    append(&f, &numbered("held", 0, 10));
    let c = ck(&dir);
    let mut tail = Tail::start(
        &b,
        &[
            f.to_str().unwrap(),
            &t,
            "--checkpoint",
            &c,
            "--shutdown-timeout-ms",
            "600000",
        ],
        &dir.join("err"),
    );
    assert!(
        wait_for_log(&tail, "TOPIC_AUTHORIZATION_FAILED", WAIT),
        "{}",
        tail.stderr()
    );
    tail.signal("INT");
    assert!(wait_for_log(&tail, "stopping", WAIT), "{}", tail.stderr());
    // The harness kills it after 60 s (no exit code): well short of the 600 s timeout.
    let code = tail.stop("INT");
    acl("allow-write", &t);
    assert_eq!(code, Some(0), "{}", tail.stderr());
    let err = tail.stderr();
    assert!(err.contains("a second signal"), "{err}");
    assert!(err.contains("10 lines not acknowledged yet"), "{err}");
}

/// Whether the broker has an authorizer (scripts/kafka-up --secure).
pub fn acl_capable() -> bool {
    let ok = Path::new("/tmp/shipper-kafka/secure/ca.pem").exists();
    if !ok && std::env::var_os("CI").is_some() {
        panic!("CI is set but the broker was not started with --secure (scripts/test does)");
    }
    ok
}

pub fn acl(action: &str, topic: &str) {
    let out = Command::new(root().join("scripts/kafka-acl"))
        .args([action, topic])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-acl {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn produce_bounds_a_line_without_newline_and_counts_it_truncated() {
    let Some(b) = broker() else { return };
    let t = topic("endless");
    // GNU time reports the peak resident set of shipper alone (%M, KiB).
    let script = format!(
        "head -c 200000000 /dev/zero | /usr/bin/time -f 'peak %M' {} -b {b} produce {t} --max-line-bytes 1000",
        shipper_bin().display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // The record is not the line given: said with its line number, and the run fails.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("1 record sent, 1 acked, 0 failed, 1 truncated to 1000 bytes (line 1; "),
        "{err}"
    );
    let peak: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("peak "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in {err}"));
    assert!(peak < 64 * 1024, "200 MB without a newline took {peak} KiB");
    assert_eq!(topic_values(&b, &t), vec![vec![0u8; 1000]]);
}

#[test]
fn a_dead_letter_file_keeps_what_the_topic_refuses() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("dead");
    let t = topic("dead");
    create_topic(&b, &t, 1, 1, &["max.message.bytes=2000"]);
    let f = dir.join("a.log");
    // 30 lines the topic refuses, each alone between two it takes.
    let big = format!("{}\n", "B".repeat(3000));
    let mut data = Vec::new();
    for i in 0..30 {
        data.extend(numbered("small", i, i + 1));
        data.extend_from_slice(big.as_bytes());
    }
    append(&f, &data);
    let c = ck(&dir);
    let dl = dir.join("dead.jsonl");
    let mut tail = Tail::start(
        &b,
        &[
            f.to_str().unwrap(),
            &t,
            "--checkpoint",
            &c,
            "--dead-letter",
            dl.to_str().unwrap(),
        ],
        &dir.join("err"),
    );
    let got = wait_for_records(&b, &t, 30, WAIT);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        tail.stop("TERM"),
        Some(1),
        "a refused line makes the exit code 1"
    );
    assert_eq!(got, lines(&numbered("small", 0, 30)));
    let dead = std::fs::read_to_string(&dl).unwrap();
    assert_eq!(dead.lines().count(), 30, "{dead}");
    // Said, but not once per line: the first ten, then counted.
    let err = tail.stderr();
    let said = err
        .lines()
        .filter(|l| l.contains("refused by Kafka"))
        .count();
    assert!((10..=12).contains(&said), "{said} lines: {err}");
    assert!(err.contains("further refused lines are counted"), "{err}");
    // Which line: the byte after it (t10: the message did not say).
    let first_end = numbered("small", 0, 1).len() + big.len();
    assert!(
        err.contains(&format!(
            "1 line of {} (ending at byte {first_end})",
            f.display()
        )),
        "{err}"
    );
    assert!(err.contains("20 more lines refused by Kafka"), "{err}");
    assert!(err.contains("30 failed and skipped"), "{err}");
    assert!(
        dead.contains("MESSAGE_TOO_LARGE") && dead.contains(&"B".repeat(3000)),
        "{dead}"
    );
    assert!(
        dead.contains(&format!("\"path\":\"{}\"", f.display())),
        "{dead}"
    );
}

#[test]
fn a_followed_link_ships_its_targets_lines_as_they_are_written_across_switches() {
    // `current.log -> logs/app-1.log`: writes are seen under the target's name, in another directory.
    // With --scan-ms 10000 the safety rescan comes only after 10 minutes, so every line below reaching
    // Kafka in time came from a file event.
    let Some(b) = broker() else { return };
    let dir = scratch_dir("link-switch");
    let t = topic("link-switch");
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let (one, two, link) = (
        dir.join("logs/app-1.log"),
        dir.join("logs/app-2.log"),
        dir.join("current.log"),
    );
    append(&one, b"one 0\n");
    append(&two, b"two 0\n");
    std::os::unix::fs::symlink("logs/app-1.log", &link).unwrap();
    let switch = |to: &str| {
        let tmp = dir.join("current.tmp");
        std::os::unix::fs::symlink(to, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
    };
    let c = ck(&dir);
    let args = [
        link.to_str().unwrap(),
        &t,
        "--checkpoint",
        &c,
        "--follow-symlinks",
        "--scan-ms",
        "10000",
    ];
    let mut tail = Tail::start(&b, &args, &dir.join("err"));
    assert_eq!(
        wait_for_records(&b, &t, 1, WAIT).len(),
        1,
        "{}",
        tail.stderr()
    );
    append(&one, b"one 1\n");
    assert_eq!(
        wait_for_records(&b, &t, 2, WAIT).len(),
        2,
        "{}",
        tail.stderr()
    );
    switch("logs/app-2.log");
    assert_eq!(
        wait_for_records(&b, &t, 3, WAIT).len(),
        3,
        "{}",
        tail.stderr()
    );
    append(&two, b"two 1\n");
    assert_eq!(
        wait_for_records(&b, &t, 4, WAIT).len(),
        4,
        "{}",
        tail.stderr()
    );
    switch("logs/app-1.log");
    std::thread::sleep(Duration::from_millis(500));
    append(&one, b"one 2\n");
    let mut got = wait_for_records(&b, &t, 5, WAIT);
    assert_eq!(tail.stop("TERM"), Some(0));
    got.sort();
    let want: Vec<&[u8]> = vec![b"one 0", b"one 1", b"one 2", b"two 0", b"two 1"];
    assert_eq!(got, want, "{}", tail.stderr());
}

/// stderr turning into a pipe nobody reads (a `| logger` restarted, a closed terminal) does not stop
/// the agent: the next stats or warning line used to abort it ("failed printing to stderr", SIGABRT).
#[test]
fn stderr_closed_under_the_agent_does_not_stop_it() {
    use std::io::Read;
    let Some(b) = broker() else { return };
    let dir = scratch_dir("stderr-closed");
    let t = topic("stderr-closed");
    append(&dir.join("a.log"), &numbered("a", 0, 5));
    let mut child = Command::new(shipper_bin())
        .args(["-b", &b, "tail", &glob(&dir), &t, "--checkpoint", &ck(&dir)])
        .args(["--stats", "1", "--checkpoint-ms", "100"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut first = [0u8; 10];
    err.read_exact(&mut first).unwrap();
    drop(err);
    wait_for_records(&b, &t, 5, Duration::from_secs(30));
    // Two stats lines into the closed pipe, then a new line to ship.
    std::thread::sleep(Duration::from_millis(2500));
    append(&dir.join("a.log"), &numbered("a", 5, 6));
    let got = wait_for_records(&b, &t, 6, Duration::from_secs(30));
    assert_eq!(got.len(), 6);
    assert!(child.try_wait().unwrap().is_none(), "the agent died");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let ckpt = std::fs::read_to_string(ck(&dir)).unwrap();
    assert!(ckpt.contains("a.log"), "{ckpt}");
}

/// A topic deleted under a running tail and created again by the broker at its next write, with
/// fewer partitions (the broker's default, 1 here): every line written after the deletion reaches
/// the new topic once (t10: lines for the vanished partitions waited until a restart).
#[test]
fn a_topic_deleted_under_tail_is_created_again_and_gets_every_later_line() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("recreated-tail");
    let t = topic("recreated-tail");
    create_topic(&b, &t, 4, 1, &[]);
    let f = dir.join("a.log");
    append(&f, &numbered("old", 0, 400));
    let c = ck(&dir);
    let mut tail = Tail::start(
        &b,
        &[f.to_str().unwrap(), &t, "--checkpoint", &c],
        &dir.join("err"),
    );
    wait_for_records(&b, &t, 400, WAIT);
    kafka_topic(&b, "delete", &t, &[]);
    for i in 0..20 {
        append(&f, &numbered("new", i * 50, (i + 1) * 50));
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = wait_for_records(&b, &t, 1000, WAIT);
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
    let mut got: Vec<_> = got.into_iter().filter(|v| v.starts_with(b"new")).collect();
    got.sort();
    let mut want = lines(&numbered("new", 0, 1000));
    want.sort();
    assert_eq!(got, want, "{}", tail.stderr());
    assert!(
        tail.stderr().contains("has 1 partition now, 4 before"),
        "{}",
        tail.stderr()
    );
}

/// A file-size limit reached by the checkpoint write is an error said and retried, not a SIGXFSZ
/// death that left no position (every restart sent everything again: t20 F3).
#[test]
fn a_file_size_limit_on_the_checkpoint_is_said_not_fatal() {
    let Some(b) = broker() else { return };
    let dir = scratch_dir("fsize");
    let t = topic("fsize");
    std::fs::create_dir_all(dir.join("d")).unwrap();
    for f in 0..100 {
        let body: String = (0..3).map(|i| format!("f{f}:{i}\n")).collect();
        std::fs::write(dir.join(format!("d/a-rather-long-file-name-{f}.log")), body).unwrap();
    }
    let script = format!(
        "ulimit -f 4; timeout --preserve-status -s TERM 5 {} -b {b} tail '{}/d/*.log' {t} --checkpoint {}/ck",
        shipper_bin().display(),
        dir.display(),
        dir.display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write checkpoint") && err.contains("File too large"),
        "{err}"
    );
    assert!(err.contains("300 acked"), "{err}");
}

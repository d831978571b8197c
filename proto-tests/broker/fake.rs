//! The `shipper` binary against the fake broker over loopback TCP: what a misbehaving broker gets
//! from the command line (a clear error, an exit code, bounded time and memory — never a panic).

use std::process::Command;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use shipper::testkit::{FakeBroker, Misbehave};

use crate::harness::*;

fn run(bootstrap: &str, args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String, Duration) {
    let start = Instant::now();
    let mut c = Command::new(shipper_bin());
    c.arg("-b").arg(bootstrap).args(args);
    let out = run_with_input(c, stdin);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

/// Spawns `cmd` with its standard input and error piped; returns it and its standard input.
fn spawn_with_stdin(cmd: &mut Command) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// A fake broker with one topic `t`, and `shipper produce t EXTRA...` writing to it, its first line
/// ("one") given; its standard input stays open.
fn produce_to_fake(extra: &[&str]) -> (FakeBroker, std::process::Child, std::process::ChildStdin) {
    use std::io::Write;
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    let (child, mut stdin) = spawn_with_stdin(
        Command::new(shipper_bin())
            .args(["-b", &boot, "produce", "t"])
            .args(extra),
    );
    stdin.write_all(b"one\n").unwrap();
    (b, child, stdin)
}

/// Waits up to `limit` for `child` to exit, calling `each` between looks; kills it at the limit
/// (`None`).
fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
    mut each: impl FnMut(),
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return None;
        }
        each();
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn consume_from_an_offset_when_the_broker_says_earliest_is_past_latest_does_not_panic() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a", b"b", b"c"]);
    b.misbehave_times(
        Misbehave::Offsets {
            earliest: 10,
            latest: 2,
        },
        2,
    );
    let (code, out, err, _) = run(&boot, &["consume", "t", "-o", "1", "-e"], b"");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("starts at 10 but ends at 2"), "{err}");
}

#[test]
fn produce_against_a_silent_broker_gives_up_within_its_timeout() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::Silent);
    let (code, _, err, took) = run(&boot, &["produce", "t", "--timeout", "5s"], b"x\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        took < Duration::from_secs(8),
        "--timeout 5s took {took:?}: {err}"
    );
    assert!(err.contains("gave up after"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn metadata_describing_a_million_partitions_is_refused_with_a_reason() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::HugeMetadata(600_000));
    let (code, _, err, _) = run(&boot, &["metadata", "t", "--timeout", "60s"], b"");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("MiB") && err.contains("fewer topics"), "{err}");
}

#[test]
fn consume_prints_only_the_partitions_it_asked_for() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"mine"]);
    b.misbehave_times(Misbehave::FetchForeignPartition, 1);
    let (code, out, err, _) = run(&boot, &["consume", "t", "--from-beginning", "-e"], b"");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "mine\n");
}

#[test]
fn a_topic_refused_by_acl_fails_produce_at_once_with_the_reason() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::ProduceError {
        code: 29,
        leader_hint: None,
    });
    let (code, _, err, took) = run(&boot, &["produce", "t"], b"x\ny\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(took < Duration::from_secs(5));
    assert!(
        err.contains("TOPIC_AUTHORIZATION_FAILED")
            && err.contains("2 records sent, 0 acked, 2 failed"),
        "{err}"
    );
}

/// An input that does not end (`tail -F app.log | shipper produce t`): an ACL refusal stops the
/// reading and the run at once, instead of dropping every line while the refusal lasts.
#[test]
fn an_acl_refusal_stops_produce_reading_an_endless_input() {
    use std::io::Write;
    let (b, mut child, mut stdin) = produce_to_fake(&[]);
    std::thread::sleep(Duration::from_millis(1000));
    b.misbehave(Misbehave::ProduceError {
        code: 29,
        leader_hint: None,
    });
    stdin.write_all(b"two\n").unwrap();
    // More input keeps coming; none of it is read after the refusal.
    let status = wait_exit(&mut child, Duration::from_secs(10), || {
        let _ = stdin.write_all(b"more\n");
    });
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "still reading: {err}"
    );
    assert!(
        err.contains("TOPIC_AUTHORIZATION_FAILED")
            && err.contains("records sent, 1 acked,")
            && err.contains("stopped at a refusal no retry fixes")
            && err.contains("the rest of the input was not read"),
        "{err}"
    );
}

/// A stream whose deliveries start failing in mid-run (every Produce answered NOT_LEADER) says so
/// after 5 s, and says when they work again; it was silent through minutes of outage (t10).
#[test]
fn produce_says_when_deliveries_fail_in_mid_stream_and_when_they_work_again() {
    use std::io::{Read, Write};
    let (b, mut child, mut stdin) = produce_to_fake(&["--timeout", "0"]);
    std::thread::sleep(Duration::from_millis(500));
    b.misbehave(Misbehave::ProduceError {
        code: 6,
        leader_hint: None,
    });
    for _ in 0..70 {
        stdin.write_all(b"more\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    b.behave();
    std::thread::sleep(Duration::from_secs(3));
    drop(stdin);
    let status = wait_exit(&mut child, Duration::from_secs(20), || {});
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    assert!(
        err.contains("cannot deliver to Kafka for 5s")
            && err.contains("NOT_LEADER")
            && err.contains("still trying, until it works (--timeout 0)"),
        "{err}"
    );
    assert!(err.contains("delivering to Kafka again after"), "{err}");
    assert!(err.contains("71 records sent, 71 acked, 0 failed"), "{err}");
}

/// Records that never reached a broker (the password was rotated: every connection since was
/// refused at authentication) are "not written", not "Kafka may hold them": resending them cannot
/// duplicate.
#[test]
fn records_no_broker_ever_received_are_told_not_written() {
    use std::io::Write;
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.require_sasl("u", "old-password", 1500);
    let (child, mut stdin) = spawn_with_stdin(
        Command::new(shipper_bin())
            .args([
                "-b",
                &boot,
                "--security-protocol",
                "sasl_plaintext",
                "--sasl-mechanism",
                "PLAIN",
                "--sasl-username",
                "u",
                "produce",
                "t",
                "--timeout",
                "3s",
            ])
            .env("SHIPPER_SASL_PASSWORD", "old-password"),
    );
    stdin.write_all(b"one\n").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // The password is rotated: the session ends, and re-authenticating is refused.
    b.require_sasl("u", "new-password", 1500);
    std::thread::sleep(Duration::from_millis(2000));
    stdin.write_all(b"two\nthree\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("lines not written: 2..3") && !err.contains("may hold"),
        "{err}"
    );
}

#[test]
fn produce_names_every_failed_line_and_tells_unanswered_from_refused() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::ProduceError {
        code: 29,
        leader_hint: None,
    });
    let input: String = (1..=1000).map(|i| format!("line {i}\n")).collect();
    let (code, _, err, _) = run(
        &boot,
        &["produce", "t", "--batch-bytes", "1024"],
        input.as_bytes(),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("more records failed; their lines are listed at the end")
            && err.contains("lines not written: 1..1000\n")
            && !err.contains("may hold them"),
        "{err}"
    );
    // Sent, written, and the answer lost: not "not written".
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::DropAfter(
        kafka_protocol::messages::ApiKey::Produce,
    ));
    let (code, _, err, _) = run(&boot, &["produce", "t", "--timeout", "3s"], b"a\nb\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("lines sent but not acknowledged (Kafka may hold them): 1..2")
            && !err.contains("lines not written"),
        "{err}"
    );
}

#[test]
fn a_second_signal_stops_produce_without_waiting_for_a_silent_broker() {
    use std::io::Write;
    let (b, child, mut stdin) = produce_to_fake(&["--timeout", "0"]);
    std::thread::sleep(Duration::from_millis(1000));
    // The broker goes silent: the next line can never be acknowledged, and --timeout 0 waits for
    // ever; a first SIGTERM waits for it, a second does not.
    b.misbehave(Misbehave::Silent);
    stdin.write_all(b"two\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let kill = || {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
    };
    kill();
    std::thread::sleep(Duration::from_millis(1000));
    let second = Instant::now();
    kill();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(second.elapsed() < Duration::from_secs(5), "{err}");
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(
        err.contains("a second signal")
            && err.contains("2 records sent, 1 acked, 0 failed, 1 abandoned in flight (not acknowledged: Kafka may hold some of them)"),
        "{err}"
    );
}

#[test]
fn consume_survives_a_broker_that_keeps_saying_out_of_range() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a"]);
    b.misbehave(Misbehave::FetchError(1));
    let (code, out, err, _) = run(
        &boot,
        &["consume", "t", "--from-beginning", "--timeout-ms", "3000"],
        b"",
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "");
    assert!(
        err.lines().count() < 5,
        "one warning, not one per retry: {err}"
    );
}

#[test]
fn tail_waits_through_a_broker_answering_garbage_and_ships_everything_after() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::Garbage(
        kafka_protocol::messages::ApiKey::Produce,
    ));
    let dir = scratch_dir("fake-garbage");
    let f = dir.join("a.log");
    append(&f, b"one\ntwo\n");
    let ck = dir.join("ck");
    let mut tail = Tail::start(
        &boot,
        &[
            f.to_str().unwrap(),
            "t",
            "--checkpoint",
            ck.to_str().unwrap(),
        ],
        &dir.join("err"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        tail.stderr().contains("malformed response"),
        "{}",
        tail.stderr()
    );
    b.behave();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.values("t").len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
    // The fake broker stored the batch before answering garbage: the retry is a duplicate it
    // recognises (idempotence), so each line is there once.
    assert_eq!(b.values("t"), vec![b"one".to_vec(), b"two".to_vec()]);
}

/// `consume -G` stopped by an error (its reads refused) commits what it printed before it exits,
/// so the group's next reader does not print it again; it committed nothing.
#[test]
fn consume_in_a_group_stopped_by_an_error_commits_what_it_printed() {
    use std::io::BufRead;
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"one", b"two", b"three"]);
    let mut child = Command::new(shipper_bin())
        .args(["-b", &boot, "consume", "t", "-G", "g", "-o", "beginning"])
        .args(["--commit-interval-ms", "600000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for want in ["one", "two", "three"] {
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), want);
    }
    // Topic authorization failed: reading stops; nothing was committed yet (a 10-minute interval).
    b.misbehave(Misbehave::FetchError(29));
    let status = wait_exit(&mut child, Duration::from_secs(20), || {});
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert_eq!(b.committed_offset("g", "t", 0), Some(3), "{err}");
}

/// A commit refused for the same cause as the error that ended the read is said after it, and the
/// error once (t30 O2: the commit's warning came first).
#[test]
fn consume_in_a_group_says_the_error_before_the_commit_it_spoiled() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"one"]);
    let mut child = consume_from_fake(
        &boot,
        &[
            "-G",
            "g",
            "-o",
            "beginning",
            "--commit-interval-ms",
            "600000",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.committed_offset("g", "t", 0).is_none() && b.requests(ApiKey::Fetch) < 2 {
        assert!(Instant::now() < deadline, "no fetch");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.misbehave(Misbehave::GroupError {
        api: ApiKey::OffsetCommit,
        code: 29,
    });
    b.misbehave(Misbehave::FetchError(29));
    let status = wait_exit(&mut child, Duration::from_secs(20), || {});
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    let error = err.find("error: topic 't' partition 0: Fetch");
    let commit = err.find("offsets not committed");
    assert!(
        error.is_some() && commit.is_some() && error < commit,
        "the error first: {err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

/// Spawns `shipper consume t EXTRA...` against `boot`, standard output and error piped.
fn consume_from_fake(boot: &str, extra: &[&str]) -> std::process::Child {
    Command::new(shipper_bin())
        .args(["-b", boot, "consume", "t"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The standard error of a child that has exited.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

/// The standard output and error of a child that has exited.
fn outputs(child: &mut std::process::Child) -> (String, String) {
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    (out, stderr_of(child))
}

/// A consume whose fetches start failing in mid-run says so after 5 s and when it reads again; it
/// was silent through minutes of outage (t10).
#[test]
fn consume_says_when_fetches_fail_in_mid_stream_and_when_they_work_again() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"before"]);
    let mut child = consume_from_fake(&boot, &["-o", "beginning", "--timeout", "0"]);
    std::thread::sleep(Duration::from_secs(1));
    b.misbehave(Misbehave::FetchError(6));
    std::thread::sleep(Duration::from_secs(7));
    b.behave();
    b.append("t", 0, &[b"after"]);
    std::thread::sleep(Duration::from_secs(3));
    let _ = child.kill();
    let _ = child.wait();
    let (out, err) = outputs(&mut child);
    assert_eq!(out, "before\nafter\n", "{err}");
    assert!(
        err.contains("cannot read from Kafka for 5s (topic 't' partition 0")
            && err.contains("NOT_LEADER")
            && err.contains("--timeout 0: until it answers"),
        "{err}"
    );
    assert!(err.contains("reading from Kafka again after"), "{err}");
}

/// A partition whose ListOffsets is refused (OFFSET_NOT_AVAILABLE: a new leader's high watermark
/// not caught up) waits for its start while the others are printed; t10: nothing was printed, then
/// "gave up" naming a connect timeout, while kcat read the topic.
#[test]
fn consume_prints_the_other_partitions_while_one_has_no_offsets_yet() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 2);
    b.append("t", 0, &[b"zero"]);
    b.append("t", 1, &[b"one"]);
    b.misbehave(Misbehave::OffsetsError {
        partition: 1,
        code: 78,
    });
    let mut child = consume_from_fake(&boot, &["-o", "beginning", "-e", "--timeout", "30s"]);
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 5];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(&first, b"zero\n", "partition 0 is printed while 1 waits");
    std::thread::sleep(Duration::from_secs(6));
    b.behave();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let err = stderr_of(&mut child);
    assert_eq!(rest, "one\n", "{err}");
    assert!(status.success(), "{err}");
    assert!(
        err.contains("OFFSET_NOT_AVAILABLE"),
        "said while it waits: {err}"
    );
}

/// Reading to an end (`-e`), `--timeout` bounds how long one partition may stay unreadable, even
/// while the others are read (t10: a consumer went on through a 2.5-minute outage of two brokers):
/// its end cannot be reached without it. The error names the partition.
#[test]
fn consume_to_the_end_gives_up_on_a_partition_unreadable_for_its_timeout() {
    let (b, boot) = FakeBroker::start_tcp(2);
    b.create_topic("t", 2);
    b.append("t", 0, &[b"zero"]);
    b.append("t", 1, &[b"one"]);
    b.misbehave(Misbehave::OffsetsError {
        partition: 1,
        code: 6,
    });
    let mut child = consume_from_fake(&boot, &["-o", "beginning", "-e", "--timeout", "4s"]);
    let status = wait_exit(&mut child, Duration::from_secs(20), || {});
    let (out, err) = outputs(&mut child);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert_eq!(out, "zero\n", "out {out:?} {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains("gave up after") && last.contains("topic 't' partition 1"),
        "{err}"
    );
}

/// Following, a partition unreadable for longer than `--timeout` is said and read on once it can
/// be, while the others are printed (t21 F5: `consume -G` ended, and its member left the group,
/// over one partition whose only broker was down; kcat and Kafka's console consumer read on).
#[test]
fn consume_following_reads_on_past_its_timeout_while_one_partition_is_unreadable() {
    let (b, boot) = FakeBroker::start_tcp(2);
    b.create_topic("t", 2);
    b.append("t", 0, &[b"zero"]);
    b.append("t", 1, &[b"one"]);
    let mut child = consume_from_fake(&boot, &["-o", "beginning", "--timeout", "3s"]);
    std::thread::sleep(Duration::from_secs(1));
    b.stop(2);
    for n in 1..=80 {
        std::thread::sleep(Duration::from_millis(100));
        if n % 10 == 0 {
            b.append("t", 0, &[format!("more-{n}").as_bytes()]);
        }
    }
    assert!(child.try_wait().unwrap().is_none(), "ended past --timeout");
    b.start(2);
    b.append("t", 1, &[b"one-later"]);
    std::thread::sleep(Duration::from_secs(4));
    let _ = child.kill();
    let _ = child.wait();
    let (out, err) = outputs(&mut child);
    assert!(out.contains("zero\n") && out.contains("one\n"), "{out}");
    assert!(
        out.contains("more-80\n"),
        "partition 0 read meanwhile: {out}"
    );
    assert!(
        out.contains("one-later\n"),
        "partition 1 read on: {out}\n{err}"
    );
    assert!(
        err.contains("cannot read topic 't' partition 1 for 5s") && !err.contains("gave up"),
        "{err}"
    );
}

/// A broker that holds a fetch (a paused process) is given up at --timeout, not at the request
/// timeout (t10: 40 s with the default 30 s).
#[test]
fn consume_from_a_broker_that_stops_answering_gives_up_within_its_timeout() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a"]);
    let mut child = consume_from_fake(&boot, &["-o", "beginning", "--timeout", "4s"]);
    std::thread::sleep(Duration::from_secs(1));
    b.misbehave(Misbehave::Silent);
    let start = Instant::now();
    let status = wait_exit(&mut child, Duration::from_secs(30), || {});
    let took = start.elapsed();
    let (out, err) = outputs(&mut child);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert_eq!(out, "a\n");
    assert!(took < Duration::from_secs(8), "took {took:?}: {err}");
    assert!(err.contains("no response to Fetch"), "{err}");
}

/// A tail started in an outage says its "no answer" line once, not once per thing it waits for
/// (t10: the 5-s line twice, for the metadata and then for the producer id).
#[test]
fn tail_started_in_an_outage_says_it_waits_once() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.stop(1);
    let dir = scratch_dir("fake-outage-start");
    let f = dir.join("a.log");
    std::fs::write(&f, "x\n").unwrap();
    let c = dir.join("ck");
    let mut cmd = Command::new(shipper_bin());
    cmd.args([
        "-b",
        &boot,
        "tail",
        f.to_str().unwrap(),
        "t",
        "--checkpoint",
    ])
    .arg(&c);
    let mut tail = Tail::spawn(cmd, &dir.join("err"));
    std::thread::sleep(Duration::from_millis(6500));
    b.misbehave(Misbehave::InitProducerIdError(14));
    b.start(1);
    std::thread::sleep(Duration::from_secs(7));
    b.behave();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.values("t").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    tail.stop("TERM");
    let err = tail.stderr();
    assert_eq!(b.values("t"), vec![b"x".to_vec()], "{err}");
    assert_eq!(err.matches("no answer from Kafka").count(), 1, "{err}");
}

/// An unanswered ListOffsets at a consumer's start is said after 5 s, as other requests are, and
/// asked again on a new connection (t19 F2: 30 s of silence, even with -v).
#[test]
fn consume_says_an_unanswered_list_offsets_and_asks_again() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    // Twice: the start's first ask is held to 2 s (t24 F1), then asked again as one read that
    // cannot start otherwise.
    b.misbehave_times(Misbehave::SilentOn(ApiKey::ListOffsets), 2);
    let start = Instant::now();
    let out = Command::new(shipper_bin())
        .args(["-b", &boot, "consume", "t", "-e", "--timeout", "21s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("no answer from Kafka for 5 s"), "{err}");
    // One attempt waits a third of --timeout: asked again after 7 s, not at the end.
    assert!(start.elapsed() < Duration::from_secs(15), "{err}");
}

/// A classic join answered with garbage gives up at --timeout: the 30 s a coordinator may hold a
/// join is the wait of one held attempt, not more time for failures (t19 F8: 45 s for 15 s).
#[test]
fn a_classic_join_answered_with_garbage_gives_up_at_the_timeout() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::Garbage(ApiKey::JoinGroup));
    let start = Instant::now();
    let out = Command::new(shipper_bin())
        .args([
            "-b",
            &boot,
            "consume",
            "t",
            "-G",
            "g",
            "-e",
            "--timeout",
            "8s",
        ])
        .args(["--group-protocol", "classic"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("JoinGroup"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(15), "{err}");
    // The warnings count down from the 8 s of --timeout, not from 38.
    for left in err.split("still trying for up to ").skip(1) {
        let n: u64 = left.split(' ').next().unwrap().parse().unwrap();
        assert!(n <= 8, "{err}");
    }
}

/// A corrupt length prefix (2 GiB) is a broken answer, retried on a new connection: a tail (which
/// waits for ever) starts anyway (t11: it exited 1 at start), and a produce stream whose answer
/// it was loses nor duplicates anything (t11: the batch was failed and the next one lost).
#[test]
fn a_corrupt_frame_length_is_retried_by_tail_at_start_and_by_produce() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave_times(Misbehave::FrameSizeOn(ApiKey::Metadata, i32::MAX), 2);
    let dir = scratch_dir("fake-frame-size");
    let f = dir.join("a.log");
    std::fs::write(&f, "x\n").unwrap();
    let mut cmd = Command::new(shipper_bin());
    cmd.args([
        "-b",
        &boot,
        "tail",
        f.to_str().unwrap(),
        "t",
        "--checkpoint",
    ])
    .arg(dir.join("ck"));
    let mut tail = Tail::spawn(cmd, &dir.join("err"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.values("t").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(tail.stop("TERM"), Some(0), "{}", tail.stderr());
    assert_eq!(b.values("t"), vec![b"x".to_vec()], "{}", tail.stderr());

    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let mut child = Command::new(shipper_bin())
        .args(["-b", &boot, "produce", "t", "--batch-bytes", "2000"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    stdin.write_all(&input.as_bytes()[..5000]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    b.misbehave_times(Misbehave::FrameSizeOn(ApiKey::Produce, i32::MAX), 1);
    stdin.write_all(&input.as_bytes()[5000..]).unwrap();
    drop(stdin);
    let status = wait_exit(&mut child, Duration::from_secs(30), || {});
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
    let want: Vec<Vec<u8>> = (0..2000)
        .map(|i| format!("line {i}").into_bytes())
        .collect();
    assert_eq!(b.values("t"), want, "each line once, in order: {err}");
}

/// A broker that stops answering in mid-stream (a paused process) is said while it hangs, not
/// once a request times out, and giving up is not followed by "delivering again" (t11: the first
/// word came at 22 s or never, and a give-up was followed by "delivering to Kafka again").
#[test]
fn produce_says_a_hung_broker_while_it_hangs() {
    use std::io::Write;
    let (b, mut child, mut stdin) = produce_to_fake(&["--timeout", "9s"]);
    std::thread::sleep(Duration::from_millis(500));
    b.misbehave(Misbehave::Silent);
    let start = Instant::now();
    for _ in 0..70 {
        let _ = stdin.write_all(b"more\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stdin);
    let status = wait_exit(&mut child, Duration::from_secs(30), || {});
    let err = stderr_of(&mut child);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert!(start.elapsed() < Duration::from_secs(15), "{err}");
    assert!(
        err.contains("cannot deliver to Kafka for 5s")
            && (err.contains("has not answered a Produce for 5 s")
                || err.contains("no response to Produce")),
        "{err}"
    );
    assert!(!err.contains("delivering to Kafka again"), "{err}");
}

/// One partition's records given up while the other partition's are delivered: the give-up is not
/// followed by "delivering to Kafka again" (t21 F4: it came in the millisecond of the first "gave
/// up" error, counting the other partition's acknowledgements).
#[test]
fn produce_giving_up_one_partition_is_not_called_delivering_again() {
    use std::io::Write;
    let (b, boot) = FakeBroker::start_tcp(2);
    b.create_topic("t", 2);
    let (mut child, mut stdin) = spawn_with_stdin(
        Command::new(shipper_bin())
            .args(["-b", &boot, "produce", "t", "--timeout", "6s"])
            .args(["--partitioner", "random"]),
    );
    stdin.write_all(b"one\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    b.stop(2);
    for i in 0..100 {
        let _ = stdin.write_all(format!("more-{i}\n").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stdin);
    let status = wait_exit(&mut child, Duration::from_secs(30), || {});
    let err = stderr_of(&mut child);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{err}");
    assert!(err.contains("gave up"), "{err}");
    assert!(err.contains("cannot deliver to Kafka for"), "{err}");
    assert!(!err.contains("delivering to Kafka again"), "{err}");
}

/// A refusal that comes after the whole input was read does not say the rest was not read (t11:
/// "the rest of the input was not read" after all 20,000 lines were).
#[test]
fn a_refusal_after_the_end_of_the_input_does_not_claim_input_left_unread() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::ProduceError {
        code: 29,
        leader_hint: None,
    });
    let (code, _, err, _) = run(&boot, &["produce", "t"], b"one\ntwo\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("TOPIC_AUTHORIZATION_FAILED"), "{err}");
    assert!(!err.contains("the rest of the input was not read"), "{err}");
    assert!(err.contains("2 records sent, 0 acked, 2 failed"), "{err}");
}

/// With `--sync` each line waits for its answer, so a refusal stops the run at the refused line:
/// the lines after it in the same chunk of input are neither sent nor counted as failed.
#[test]
fn an_acl_refusal_with_sync_stops_at_the_refused_line() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::ProduceError {
        code: 29,
        leader_hint: None,
    });
    let (code, _, err, _) = run(&boot, &["produce", "t", "--sync"], b"one\ntwo\nthree\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("TOPIC_AUTHORIZATION_FAILED"), "{err}");
    assert!(
        err.contains("1 record sent, 0 acked, 1 failed")
            && err.contains("after 1 line: the rest of the input was not read"),
        "{err}"
    );
}

/// A signal while produce waits for Kafka after the end of its input stops it at once, with its
/// summary (t12: ignored, even repeated; only SIGKILL ended a `--timeout 0` run).
#[test]
fn produce_stops_at_a_signal_while_waiting_after_the_end_of_its_input() {
    use std::io::Write;
    let (b, mut child, mut stdin) = produce_to_fake(&["--timeout", "0"]);
    std::thread::sleep(Duration::from_millis(500));
    b.misbehave(Misbehave::Silent);
    stdin.write_all(b"two\n").unwrap();
    drop(stdin);
    std::thread::sleep(Duration::from_secs(1));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_exit(&mut child, Duration::from_secs(10), || {});
    let err = stderr_of(&mut child);
    assert_eq!(status.and_then(|s| s.code()), Some(143), "{err}");
    assert!(
        err.contains("stopped by SIGTERM while waiting for Kafka"),
        "{err}"
    );
}

/// With --sync, a signal stops the lines of a chunk while one of them waits for its answer (stop 49:
/// only SIGKILL ended a `--timeout 0` run whose Kafka hung mid-chunk): the first signal stops
/// reading, the second gives up the line in flight; the lines after it are never sent.
#[test]
fn produce_sync_stops_at_signals_while_a_line_of_a_chunk_waits_for_its_answer() {
    use std::io::Write;
    let (b, mut child, mut stdin) = produce_to_fake(&["--timeout", "0", "--sync"]);
    std::thread::sleep(Duration::from_millis(1000));
    b.misbehave(Misbehave::Silent);
    stdin.write_all(b"two\nthree\nfour\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id().to_string();
    let kill = || Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    kill();
    std::thread::sleep(Duration::from_millis(1000));
    kill();
    let status = wait_exit(&mut child, Duration::from_secs(5), || {});
    drop(stdin);
    let err = stderr_of(&mut child);
    assert_eq!(status.and_then(|s| s.code()), Some(143), "{err}");
    assert!(
        err.contains("2 records sent, 1 acked, 0 failed, 1 abandoned in flight"),
        "{err}"
    );
}

/// REQUEST_TIMED_OUT under acks=all: the leader wrote the batch and its followers were slow; the
/// lines are "sent but not acknowledged", not "not written" (t12: Kafka held them).
#[test]
fn a_request_timed_out_answer_is_reported_as_maybe_written() {
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.misbehave(Misbehave::ProduceError {
        code: 7,
        leader_hint: None,
    });
    let (code, _, err, _) = run(&boot, &["produce", "t", "--timeout", "3s"], b"one\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("lines sent but not acknowledged (Kafka may hold them): 1"),
        "{err}"
    );
    assert!(!err.contains("lines not written"), "{err}");
}

/// `consume -G` reads on while its periodic commit cannot get through (the coordinator away): the
/// commit used to be awaited between polls, stopping the reading for its whole 10 s limit every
/// commit interval (t12: the fetch warnings came late). The commit's own limit is named, not
/// `--timeout`.
#[test]
fn consume_in_a_group_reads_on_while_its_commits_fail() {
    use std::io::BufRead;
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"one"]);
    let mut child = consume_from_fake(
        &boot,
        &[
            "-G",
            "g",
            "-o",
            "beginning",
            "--commit-interval-ms",
            "500",
            "--timeout",
            "0",
        ],
    );
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    b.misbehave(Misbehave::DropOn(ApiKey::OffsetCommit));
    std::thread::sleep(Duration::from_secs(3));
    b.append("t", 0, &[b"two"]);
    std::thread::sleep(Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let err = stderr_of(&mut child);
    assert_eq!(rest, "two\n", "{err}");
    assert!(err.contains("(offset commit)"), "{err}");
    assert!(!err.contains("(--timeout)"), "{err}");
}

/// Periodic commits that fail are said (not only a "still trying" line while one retries), and so
/// is the first that lands again (t36 F4: a paused coordinator left no line after "still trying for
/// up to 5 s (offset commit)", neither that commits failed nor that they worked again).
#[test]
fn consume_in_a_group_says_when_commits_fail_and_when_they_land_again() {
    use std::io::BufRead;
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"one"]);
    let mut child = consume_from_fake(
        &boot,
        &["-G", "g", "-o", "beginning", "--commit-interval-ms", "300"],
    );
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.committed_offset("g", "t", 0) != Some(1) {
        assert!(Instant::now() < deadline, "no commit");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Group authorization failed: refused, not retried, not a rebalance.
    b.misbehave(Misbehave::GroupError {
        api: ApiKey::OffsetCommit,
        code: 30,
    });
    b.append("t", 0, &[b"two"]);
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "two\n");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(b.committed_offset("g", "t", 0), Some(1));
    b.behave();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.committed_offset("g", "t", 0) != Some(2) {
        assert!(
            Instant::now() < deadline,
            "no commit after the refusals ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    let err = stderr_of(&mut child);
    let failing = err.find("group 'g': offsets not committed (");
    let again = err.find("group 'g': offsets committed again after");
    assert!(
        failing.is_some() && again.is_some() && failing < again,
        "{err}"
    );
    // Said once while failing (every 300 ms a commit fails): not a line per commit.
    assert_eq!(err.matches("offsets not committed").count(), 1, "{err}");
}

/// `-b` naming a port whose server waits for a request of its own protocol (an HTTP server) is said
/// to be perhaps not a Kafka listener; it was only "no response to ApiVersions" (t14).
#[test]
fn a_port_that_never_answers_the_first_request_is_asked_about() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let boot = l.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = l.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(8));
        drop(conns);
    });
    let (code, _, err, _) = run(&boot, &["--timeout", "3s", "metadata"], b"");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is this a Kafka listener?"), "{err}");
    drop(held);
}

/// A classic group leader with older metadata (another client, or a topic created again with fewer
/// partitions since it looked) may assign a partition the topic no longer has: the member says so
/// and reads the others, rather than ending with "has no partition 5".
#[test]
fn a_group_member_assigned_a_partition_the_topic_does_not_have_reads_the_others() {
    use std::io::BufRead;
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 2);
    b.append("t", 0, &[b"zero"]);
    b.append("t", 1, &[b"one"]);
    let stale = shipper::group::Assignment::from([(
        "t".to_string(),
        std::collections::BTreeSet::from([1, 5]),
    )]);
    let bytes = shipper::group::assign::encode_assignment(&stale).to_vec();
    b.misbehave_times(Misbehave::SyncAssignment(bytes), 1);
    let mut child = consume_from_fake(
        &boot,
        &["-G", "g", "--group-protocol", "classic", "-o", "beginning"],
    );
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if line != "one\n" {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{line:?}: {}", stderr_of(&mut child));
    }
    std::thread::sleep(Duration::from_secs(1));
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let err = stderr_of(&mut child);
    assert!(alive, "it ended: {err}");
    assert!(
        err.contains("assigned partition(s) 5 of 't', which has 2 partition(s) now"),
        "{err}"
    );
}

/// A group member whose topic is deleted and created again, written past where it had read, then a
/// rebalance: the member neither commits its position in the old topic nor resumes from it, and
/// reads the new topic from its start (t29 F1: the new topic's first 1 to 81 records were skipped,
/// a commit of the old position standing for the new topic by name). The new topic's records are
/// refused while it is created, as during a real deletion, so that the re-creation is met through
/// the metadata (a read by name at the old position would read the new log there).
#[test]
fn a_group_member_carries_no_position_into_a_topic_created_again() {
    use std::io::BufRead;
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    b.append("t", 0, &[b"a0", b"a1", b"a2"]);
    let mut child = consume_from_fake(
        &boot,
        &["-G", "g", "--group-protocol", "classic", "-o", "beginning"],
    );
    // Lines through a channel, so that a wait for one is bounded.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let child = Reaped(child);
    let next = || rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    assert_eq!([next(), next(), next()], ["a0", "a1", "a2"]);
    // Past the periodic commit (every 5 s) of where it read: a commit sent after the re-creation
    // would stand for the new topic (Kafka cannot tell, commits name topics).
    std::thread::sleep(Duration::from_secs(6));
    b.misbehave(Misbehave::FetchError(3));
    b.create_topic("t", 1);
    b.append("t", 0, &[b"n0", b"n1", b"n2", b"n3", b"n4"]);
    std::thread::sleep(Duration::from_secs(2));
    let joins = b.requests(ApiKey::JoinGroup);
    b.misbehave_times(
        Misbehave::GroupError {
            api: ApiKey::Heartbeat,
            code: 27,
        },
        1,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.requests(ApiKey::JoinGroup) == joins {
        assert!(Instant::now() < deadline, "no rebalance");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    b.behave();
    let first = next();
    let mut child = child;
    let _ = child.0.kill();
    let _ = child.0.wait();
    let err = stderr_of(&mut child.0);
    assert_eq!(first, "n0", "{err}");
}

/// This process's anonymous memory (heap), in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A reader that does not read standard output holds the fetching, and the answer in hand is not
/// formatted all at once into memory: it stops where standard output filled up and is fetched
/// again from there. An answer of compressed logs (here 100 MB of text in under 1 MB) was all
/// formatted and queued for stdout at once. Every record is printed once, in order, in the end.
#[test]
fn consume_with_standard_output_unread_keeps_little_memory_for_compressible_records() {
    use std::io::BufRead;
    let (b, boot) = FakeBroker::start_tcp(1);
    b.create_topic("t", 1);
    for batch in 0..50 {
        let values: Vec<String> = (0..2000)
            .map(|i| format!("{:0>999}", batch * 2000 + i))
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        b.append_compressed("t", 0, &refs, shipper::wire::compression::Compression::Zstd);
    }
    let mut child = Command::new(shipper_bin())
        .args(["-b", &boot, "consume", "t", "-o", "beginning", "-e"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Nobody reads its standard output for 4 s.
    let mut peak = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        peak = peak.max(rss_anon_kib(child.id()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut n = 0;
    for line in out.lines() {
        let line = line.unwrap();
        assert_eq!(line, format!("{n:0>999}"), "record {n}");
        n += 1;
    }
    let status = wait_exit(&mut child, Duration::from_secs(60), || {});
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert_eq!(n, 100_000);
    assert!(peak > 0, "RssAnon was read");
    assert!(
        peak < 32 * 1024,
        "RssAnon peaked at {peak} KiB while stdout was not read"
    );
}

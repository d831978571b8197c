//! Consumer groups against the real cluster: members share partitions (every line printed by exactly
//! one member), a killed member's partitions move to the others, committed offsets are where a restart
//! goes on, kcat members share a group with shipper ones, and `shipper groups` agrees with Kafka's own
//! ConsumerGroupCommand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A `shipper consume -G` (or kcat -G) process writing `PARTITION VALUE` lines to a file.
struct Member {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Member {
    fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Member {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Member {
            child: Some(child),
            out,
            err,
        }
    }

    fn shipper(
        brokers: &str,
        topic: &str,
        group: &str,
        extra: &[&str],
        dir: &Path,
        name: &str,
    ) -> Member {
        let mut c = Command::new(shipper_bin());
        c.args([
            "-b", brokers, "consume", topic, "-G", group, "-f", "%p %s\\n",
        ])
        .args(extra);
        Member::spawn(c, dir, name)
    }

    fn kcat(brokers: &str, topic: &str, group: &str, dir: &Path, name: &str) -> Member {
        let mut c = Command::new("kcat");
        c.args(["-b", brokers, "-G", group, "-q", "-u", "-f", "%p %s\\n"])
            .args(["-X", "auto.offset.reset=earliest", topic]);
        Member::spawn(c, dir, name)
    }

    /// The values printed so far.
    fn values(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(_, v)| v.to_string()))
            .collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Sends a signal and waits for the exit; the exit code.
    fn stop(&mut self, signal: &str) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIG{signal}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `shipper groups GROUP` rows: (topic, partition) -> (current, end, lag, consumer id).
fn describe(brokers: &str, group: &str) -> BTreeMap<(String, i32), [String; 4]> {
    let out = shipper(brokers, &["groups", group], b"");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut rows = BTreeMap::new();
    for l in text.lines().skip(2) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 6 && f[0] != "-" {
            rows.insert(
                (f[0].to_string(), f[1].parse().unwrap()),
                [f[2], f[3], f[4], f[5]].map(String::from),
            );
        }
    }
    rows
}

/// Waits until the group has `members` members sharing every one of `partitions` partitions.
fn wait_for_members(brokers: &str, group: &str, who: &[&Member], partitions: usize) {
    let members = who.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = describe(brokers, group);
        let owners: BTreeSet<&String> =
            rows.values().map(|r| &r[3]).filter(|c| *c != "-").collect();
        let assigned = rows.values().filter(|r| r[3] != "-").count();
        if owners.len() == members && assigned == partitions {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = who.iter().map(|m| m.stderr()).collect();
            panic!("group {group} never had {members} members over {partitions} partitions: {rows:?}\nmembers' stderr: {logs:#?}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until every broker of `brokers` knows `topic` (a broker's metadata may lag the controller's
/// for a moment after a create; kcat gives up on a group topic it cannot see).
fn wait_visible(brokers: &str, topic: &str) {
    for addr in brokers.split(',') {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("kcat")
                .args(["-L", "-b", addr, "-t", topic])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("partition 0,") {
                break;
            }
            assert!(Instant::now() < deadline, "{addr} never knew {topic}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn numbered(from: usize, to: usize) -> Vec<u8> {
    (from..to)
        .map(|i| format!("line-{i:07}\n"))
        .collect::<String>()
        .into_bytes()
}

fn produce(brokers: &str, topic: &str, from: usize, to: usize) {
    shipper_ok(
        brokers,
        &["produce", topic, "--partitioner", "random"],
        &numbered(from, to),
    );
}

/// Waits until the members together printed every line in `from..to`; returns how often each
/// value of that range was printed.
fn wait_for_lines(
    members: &[&Member],
    from: usize,
    to: usize,
    limit: Duration,
) -> BTreeMap<String, usize> {
    let want: BTreeSet<String> = (from..to).map(|i| format!("line-{i:07}")).collect();
    let deadline = Instant::now() + limit;
    loop {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for m in members {
            for v in m.values() {
                if want.contains(&v) {
                    *seen.entry(v).or_default() += 1;
                }
            }
        }
        if seen.len() == want.len() || Instant::now() > deadline {
            let errs: Vec<String> = members.iter().map(|m| m.stderr()).collect();
            assert_eq!(
                seen.len(),
                want.len(),
                "lines {from}..{to} missing; stderr: {errs:?}"
            );
            return seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_once(seen: &BTreeMap<String, usize>, what: &str) {
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "{what}: printed more than once: {twice:?}"
    );
}

#[test]
fn three_members_share_a_topic_and_a_killed_one_is_taken_over_and_commits_hold() {
    let Some(b) = cluster() else { return };
    let dir = scratch_dir("groups-three");
    let t = topic("groups-three");
    create_topic(&b, &t, 12, 3, &[]);
    let g = topic("g");
    let mut ms: Vec<Member> = (0..3)
        .map(|i| Member::shipper(&b, &t, &g, &["--from-beginning"], &dir, &format!("m{i}")))
        .collect();
    wait_for_members(&b, &g, &ms.iter().collect::<Vec<_>>(), 12);
    produce(&b, &t, 0, 200_000);
    let refs: Vec<&Member> = ms.iter().collect();
    let seen = wait_for_lines(&refs, 0, 200_000, Duration::from_secs(120));
    assert_once(&seen, "three members");
    for m in &ms {
        assert!(
            !m.values().is_empty(),
            "a member read nothing: {}",
            m.stderr()
        );
    }

    // kill -9 one member: the other two take its partitions once the session times out (10 s).
    let victim = ms.remove(0);
    let mut victim = victim;
    let killed = Instant::now();
    victim.stop("KILL");
    produce(&b, &t, 200_000, 220_000);
    let refs: Vec<&Member> = ms.iter().collect();
    let seen = wait_for_lines(&refs, 200_000, 220_000, Duration::from_secs(60));
    assert_once(&seen, "after the kill");
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(40), "takeover took {took:?}");

    // Stopped cleanly (commit, leave), a new member goes on from the committed offsets: nothing
    // committed is read again.
    for m in &mut ms {
        assert_eq!(m.stop("TERM"), Some(0), "{}", m.stderr());
    }
    let fresh = Member::shipper(&b, &t, &g, &["--from-beginning"], &dir, "fresh");
    wait_for_members(&b, &g, &[&fresh], 12);
    produce(&b, &t, 220_000, 221_000);
    let seen = wait_for_lines(&[&fresh], 220_000, 221_000, Duration::from_secs(60));
    assert_once(&seen, "after the restart");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        fresh.values().len(),
        1000,
        "a committed line was read again: {}",
        fresh.stderr()
    );
}

/// A member that joins while a killed member still holds the partitions waits for its session to
/// time out: it says why after 3 s (it was silent for 10-33 s before "reading"), on either protocol
/// (auto: the consumer protocol where the broker offers it, as on Kafka 4; classic on 3.9).
#[test]
fn a_member_waiting_behind_a_killed_one_says_why() {
    let Some(b) = cluster() else { return };
    for protocol in ["classic", "auto"] {
        let dir = scratch_dir(&format!("groups-wait-{protocol}"));
        let t = topic("groups-wait");
        create_topic(&b, &t, 2, 3, &[]);
        let g = topic("gw");
        let args = ["--group-protocol", protocol];
        let mut first = Member::shipper(&b, &t, &g, &args, &dir, "first");
        wait_for_members(&b, &g, &[&first], 2);
        first.stop("KILL");
        let mut second = Member::shipper(&b, &t, &g, &args, &dir, "second");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !second.stderr().contains("reading") {
            assert!(Instant::now() < deadline, "{}", second.stderr());
            std::thread::sleep(Duration::from_millis(200));
        }
        let err = second.stderr();
        let said = err
            .find(&format!(
                "group '{g}': waiting for partitions: a rebalance waits"
            ))
            .unwrap_or_else(|| panic!("{protocol}: {err}"));
        assert!(said < err.find("reading").unwrap(), "{err}");
        assert_eq!(second.stop("TERM"), Some(0), "{}", second.stderr());
    }
    // Behind a stopped kcat member (classic), a shipper member on Kafka 4 joins by the consumer
    // protocol: told "nothing" at once, then its partitions once kcat's session expires. The wait
    // was silent after "reading nothing"; on Kafka 3.9 (classic) the rebalance waits, as above.
    let dir = scratch_dir("groups-wait-kcat");
    let t = topic("groups-wait-kcat");
    create_topic(&b, &t, 1, 3, &[]);
    wait_visible(&b, &t);
    let g = topic("gwk");
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            &b,
            "-G",
            &g,
            "-q",
            "-X",
            "session.timeout.ms=10000",
            &t,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while describe(&b, &g).values().all(|r| r[3] == "-") {
        assert!(Instant::now() < deadline, "kcat never joined");
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = Command::new("kill")
        .args(["-STOP", &kcat.id().to_string()])
        .status();
    let mut second = Member::shipper(&b, &t, &g, &[], &dir, "second");
    let reading = format!("reading {t}[0]");
    while !second.stderr().contains(&reading) {
        assert!(Instant::now() < deadline, "{}", second.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = kcat.kill();
    let _ = kcat.wait();
    let err = second.stderr();
    let said = err
        .find("holds its partitions until its session times out")
        .unwrap_or_else(|| panic!("not said why it waited: {err}"));
    assert!(said < err.find(&reading).unwrap(), "{err}");
    assert_eq!(second.stop("TERM"), Some(0), "{}", second.stderr());
}

#[test]
fn kcat_and_shipper_share_one_group_on_either_protocol() {
    let Some(b) = cluster() else { return };
    for protocol in ["classic", "auto"] {
        let dir = scratch_dir(&format!("groups-mixed-{protocol}"));
        let t = topic("groups-mixed");
        create_topic(&b, &t, 12, 3, &[]);
        let g = topic("gm");
        wait_visible(&b, &t);
        // kcat's group first, settled; then shipper joins it (with "auto", the classic group is
        // upgraded to the consumer protocol under kcat). Started together, Kafka 4.1.1 can fail
        // shipper's first heartbeat while kcat's join is pending ("unexpected exception: No value
        // present" in the broker log), drop kcat's join with REBALANCE_IN_PROGRESS, and kcat 1.7.1
        // (librdkafka 2.0.2) then never joins again: a minute without a second member, in CI.
        let k = Member::kcat(&b, &t, &g, &dir, "kcat");
        wait_for_members(&b, &g, &[&k], 12);
        let s = Member::shipper(
            &b,
            &t,
            &g,
            &["--from-beginning", "--group-protocol", protocol],
            &dir,
            "shipper",
        );
        wait_for_members(&b, &g, &[&s, &k], 12);
        produce(&b, &t, 0, 20_000);
        let seen = wait_for_lines(&[&s, &k], 0, 20_000, Duration::from_secs(60));
        assert_once(&seen, protocol);
        assert!(
            !s.values().is_empty() && !k.values().is_empty(),
            "{protocol}: one member read nothing"
        );
    }
}

#[test]
fn groups_agrees_with_kafkas_consumer_group_command() {
    let Some(b) = cluster() else { return };
    let t = topic("groups-describe");
    create_topic(&b, &t, 4, 3, &[]);
    let g = topic("gd");
    produce(&b, &t, 0, 1000);
    // Read 600 of them as the group and commit: lag remains on some partitions.
    let out = shipper_ok(
        &b,
        &["consume", &t, "-G", &g, "--from-beginning", "-c", "600"],
        b"",
    );
    assert_eq!(lines(&out).len(), 600);
    let ours = describe(&b, &g);
    let theirs = String::from_utf8_lossy(&kafka_tool(
        "ConsumerGroupCommand",
        &["--bootstrap-server", &b, "--describe", "--group", &g],
        b"",
    ))
    .to_string();
    let mut rows = BTreeMap::new();
    for l in theirs.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 6 && f[0] == g {
            rows.insert(
                (f[1].to_string(), f[2].parse::<i32>().unwrap()),
                [f[3], f[4], f[5]].map(String::from),
            );
        }
    }
    assert_eq!(rows.len(), 4, "{theirs}");
    let ours3: BTreeMap<_, _> = ours
        .iter()
        .map(|(k, v)| (k.clone(), [v[0].clone(), v[1].clone(), v[2].clone()]))
        .collect();
    assert_eq!(
        ours3, rows,
        "shipper groups vs kafka-consumer-groups --describe"
    );
    let committed: i64 = ours.values().map(|r| r[0].parse::<i64>().unwrap()).sum();
    assert_eq!(committed, 600, "the commit is exactly what was printed");
    // The listing shows the group; -J is JSON.
    let list = shipper_ok(&b, &["groups"], b"");
    assert!(String::from_utf8_lossy(&list).contains(&g));
    for args in [vec!["groups", "-J"], vec!["groups", &g, "-J"]] {
        let out = shipper_ok(&b, &args, b"");
        let check = run_with_input(
            {
                let mut c = Command::new("/usr/bin/python3");
                c.args(["-c", "import json,sys; json.load(sys.stdin)"]);
                c
            },
            &out,
        );
        assert!(
            check.status.success(),
            "not JSON: {}",
            String::from_utf8_lossy(&out)
        );
    }
    let missing = shipper(&b, &["groups", "no-such-group-anywhere"], b"");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

#[test]
fn commits_are_exactly_what_was_printed_and_no_commit_commits_nothing() {
    let Some(b) = cluster() else { return };
    let t = topic("groups-commit");
    create_topic(&b, &t, 3, 3, &[]);
    produce(&b, &t, 0, 3000);
    for mode in ["async", "sync"] {
        let g = topic(&format!("gc-{mode}"));
        let first = lines(&shipper_ok(
            &b,
            &[
                "consume",
                &t,
                "-G",
                &g,
                "--from-beginning",
                "-c",
                "1234",
                "--commit",
                mode,
            ],
            b"",
        ));
        assert_eq!(first.len(), 1234);
        let rest = lines(&shipper_ok(&b, &["consume", &t, "-G", &g, "-e"], b""));
        let all: BTreeSet<Vec<u8>> = first.iter().chain(rest.iter()).cloned().collect();
        assert_eq!(
            first.len() + rest.len(),
            3000,
            "{mode}: a record twice or missing"
        );
        assert_eq!(all.len(), 3000, "{mode}");
    }
    // One partition, so that "the first 10" is the same set on every run.
    let t = topic("groups-nocommit");
    create_topic(&b, &t, 1, 3, &[]);
    produce(&b, &t, 0, 100);
    let g = topic("gc-none");
    let a = shipper_ok(
        &b,
        &[
            "consume",
            &t,
            "-G",
            &g,
            "--from-beginning",
            "-c",
            "10",
            "--no-commit",
        ],
        b"",
    );
    let again = shipper_ok(
        &b,
        &[
            "consume",
            &t,
            "-G",
            &g,
            "--from-beginning",
            "-c",
            "10",
            "--no-commit",
        ],
        b"",
    );
    assert_eq!(lines(&a).len(), 10);
    let (a, again): (BTreeSet<_>, BTreeSet<_>) = (
        lines(&a).into_iter().collect(),
        lines(&again).into_iter().collect(),
    );
    assert_eq!(
        a, again,
        "--no-commit: the second run starts where the first did"
    );
}

#[test]
fn a_group_refused_by_an_acl_is_one_clear_line_on_either_protocol() {
    let Some(b) = broker() else { return };
    if !crate::hostile::acl_capable() {
        return;
    }
    let t = topic("groups-acl");
    create_topic(&b, &t, 1, 1, &[]);
    let g = topic("gacl");
    crate::hostile::acl("deny-group", &g);
    for protocol in ["classic", "auto"] {
        let started = Instant::now();
        let out = shipper(
            &b,
            &["consume", &t, "-G", &g, "--group-protocol", protocol],
            b"",
        );
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{protocol}: {err}");
        assert_eq!(err.lines().count(), 1, "{protocol}: one line: {err}");
        assert!(
            err.contains(&format!("group '{g}'")) && err.contains("GROUP_AUTHORIZATION_FAILED"),
            "{protocol}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{protocol}: not retried"
        );
    }
}

/// Partitions added to a topic while a member reads it: the coordinator (KIP-848) assigns them at
/// once, and the member reads them too. It used to exit at once ("topic has no partition 2 (it has
/// 2)"), its metadata cached from before. On the classic protocol (Kafka 3.9) the member keeps
/// reading the partitions it has (the new ones once it restarts, as documented).
#[test]
fn a_member_reads_partitions_added_to_its_topic() {
    let Some(b) = cluster() else { return };
    let dir = scratch_dir("groups-grow");
    let t = topic("groups-grow");
    create_topic(&b, &t, 2, 3, &[]);
    wait_visible(&b, &t);
    let g = topic("gg");
    let mut m = Member::shipper(&b, &t, &g, &["--from-beginning", "-v"], &dir, "m");
    wait_for_members(&b, &g, &[&m], 2);
    produce(&b, &t, 0, 1000);
    wait_for_lines(&[&m], 0, 1000, Duration::from_secs(60));
    kafka_tool(
        "org.apache.kafka.tools.TopicCommand",
        &[
            "--bootstrap-server",
            &b,
            "--alter",
            "--topic",
            &t,
            "--partitions",
            "4",
        ],
        b"",
    );
    // Kafka 3.9 offers the consumer protocol's API with the protocol off: shipper falls back.
    let err = m.stderr();
    if err.contains("the classic protocol") || err.contains("using the classic one") {
        std::thread::sleep(Duration::from_secs(3));
        shipper_ok(&b, &["produce", &t, "-p", "0"], &numbered(1000, 2000));
        let seen = wait_for_lines(&[&m], 1000, 2000, Duration::from_secs(60));
        assert_once(&seen, "classic, after the partitions were added");
        assert_eq!(m.stop("TERM"), Some(0), "{}", m.stderr());
        return;
    }
    assert!(
        m.stderr().contains("the consumer protocol"),
        "{}",
        m.stderr()
    );
    wait_for_members(&b, &g, &[&m], 4);
    for (p, from) in [("2", 1000), ("3", 2000)] {
        shipper_ok(&b, &["produce", &t, "-p", p], &numbered(from, from + 1000));
    }
    let seen = wait_for_lines(&[&m], 1000, 3000, Duration::from_secs(60));
    assert_once(&seen, "after the partitions were added");
    assert_eq!(m.stop("TERM"), Some(0), "{}", m.stderr());
}

/// `consume -G -e` into a pipe nobody reads for longer than the group's session (10 s on the test
/// broker): every record is printed once and the run ends at the end of the topic. A consumer
/// fenced during the stall gave its partition back, and with none left -e took every partition to
/// be at its end: exit 0 after 142,508 of 400,000 records. Standard output is now written by a
/// thread of its own, so the stall does not stop the heartbeats: the member is not fenced at all.
#[test]
fn a_group_reader_whose_output_is_read_late_prints_everything_once() {
    let Some(b) = broker() else { return };
    let t = topic("late-group");
    let g = topic("late-group-g");
    let n = 300_000;
    shipper_ok(&b, &["produce", &t], &numbered(0, n));
    let child = Command::new(shipper_bin())
        .args(["-b", &b, "consume", &t, "-G", &g, "--from-beginning", "-e"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(16));
    let done = child.wait_with_output().unwrap();
    let (status, out) = (done.status, String::from_utf8_lossy(&done.stdout));
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(status.success(), "{err}");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for l in out.lines() {
        *seen.entry(l.to_string()).or_default() += 1;
    }
    assert_eq!(seen.len(), n, "{err}");
    assert_once(&seen, "late reader");
    assert!(
        !err.contains("rejoining") && !err.contains("giving back"),
        "the membership held while stdout was blocked: {err}"
    );
}

/// `consume -G` stopped (Ctrl-C twice) while its stdout is blocked: it exits at once, says how much
/// its stdout did not take, and commits only what stdout took, so the group's next reader starts
/// within what was printed: no record is skipped.
#[test]
fn a_group_reader_stopped_with_its_stdout_blocked_commits_only_what_was_printed() {
    use std::io::{BufRead, BufReader, Read};
    let Some(b) = broker() else { return };
    let t = topic("blocked-stop");
    let g = topic("blocked-stop-g");
    let n = 300_000;
    shipper_ok(&b, &["produce", &t], &numbered(0, n));
    let mut child = Command::new(shipper_bin())
        .args(["-b", &b, "consume", &t, "-G", &g, "--from-beginning"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = Vec::new();
    for _ in 0..1000 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        first.push(l.trim_end().to_string());
    }
    // Its stdout is not read any more: it stops within what it queued.
    std::thread::sleep(Duration::from_secs(3));
    let kill = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    kill("-INT");
    std::thread::sleep(Duration::from_secs(1));
    kill("-INT");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 20 s after the second signal, its stdout blocked");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("did not take the last"), "{err}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    first.extend(rest.lines().map(str::to_string));
    // A pipe may take part of the last write: a record cut there was not printed whole, and is not
    // committed (the next reader prints it); its start is not a line of its own.
    if !rest.is_empty() && !rest.ends_with('\n') {
        first.pop();
    }
    assert!(first.len() < n, "it stopped early: {} lines", first.len());
    // The group's next reader goes on from the commit: together, every line, none skipped.
    let next = shipper_ok(&b, &["consume", &t, "-G", &g, "-e"], b"");
    let next = String::from_utf8_lossy(&next);
    let seen: BTreeSet<&str> = first
        .iter()
        .map(String::as_str)
        .chain(next.lines())
        .collect();
    assert_eq!(seen.len(), n, "a record was skipped: {err}");
    let resumed = next.lines().next().unwrap_or_default();
    assert!(
        first.iter().any(|l| l == resumed),
        "the next reader starts within what was printed ({resumed})"
    );
}

/// A member whose stdout is blocked (a pager) while a second member joins: it keeps its membership
/// (heartbeats go on), gives back partitions at once, and drops what it queued for them unprinted,
/// so the second member prints those. t18 F1: the blocked member was fenced, then printed every
/// record it had fetched of partitions it no longer owned (504,344 of 600,000 printed twice).
/// The one chunk of output being written when a partition goes may be printed twice (kcat printed
/// 10,093 twice in the same scenario).
#[test]
fn a_member_whose_stdout_is_blocked_gives_partitions_back_without_printing_them_twice() {
    use std::io::Read;
    let Some(b) = broker() else { return };
    let t = topic("blocked-share");
    create_topic(&b, &t, 6, 1, &[]);
    let n = 300_000;
    shipper_ok(
        &b,
        &[
            "produce",
            &t,
            "--partitioner",
            "random",
            "--compression",
            "lz4",
        ],
        &numbered(0, n),
    );
    for protocol in ["classic", "consumer"] {
        let g = topic(&format!("blocked-share-{protocol}"));
        let args = [
            "-b",
            &b,
            "consume",
            &t,
            "-G",
            &g,
            "--group-protocol",
            protocol,
            "-o",
            "beginning",
            "-e",
        ];
        let mut slow = Command::new(shipper_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let fast = Command::new(shipper_bin()).args(args).output().unwrap();
        let fast_err = String::from_utf8_lossy(&fast.stderr);
        assert!(fast.status.success(), "{fast_err}");
        // Only now is the slow member's stdout read.
        let mut slow_out = Vec::new();
        slow.stdout
            .take()
            .unwrap()
            .read_to_end(&mut slow_out)
            .unwrap();
        let slow = slow.wait_with_output().unwrap();
        let slow_err = String::from_utf8_lossy(&slow.stderr);
        assert!(slow.status.success(), "{slow_err}");
        // With -e each member ends at the end of what it had: partitions the group moved to the
        // slow one while it was stopping are left to the group's next reader, from their commits.
        let rest = shipper_ok(&b, &["consume", &t, "-G", &g, "-e"], b"");
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for l in String::from_utf8_lossy(&slow_out)
            .lines()
            .chain(String::from_utf8_lossy(&fast.stdout).lines())
            .chain(String::from_utf8_lossy(&rest).lines())
        {
            *seen.entry(l.to_string()).or_default() += 1;
        }
        assert_eq!(seen.len(), n, "{protocol}: slow {slow_err} fast {fast_err}");
        let twice = seen.values().filter(|c| **c > 1).count();
        assert!(
            twice <= 10_000,
            "{protocol}: {twice} records printed by both members: slow {slow_err} fast {fast_err}"
        );
        assert!(
            !slow_err.contains("rejoining"),
            "{protocol}: the slow member kept its membership: {slow_err}"
        );
    }
}

/// A member the group gives nothing (more members than partitions) ends at once with -e on either
/// protocol, reading nothing; under KIP-848 it waited for ever (an empty assignment was not told).
#[test]
fn a_member_given_nothing_ends_at_once_with_exit_at_end() {
    let Some(b) = broker() else { return };
    for protocol in ["classic", "consumer"] {
        let dir = scratch_dir(&format!("groups-nothing-{protocol}"));
        let t = topic("groups-nothing");
        create_topic(&b, &t, 1, 1, &[]);
        shipper_ok(&b, &["produce", &t], b"1\n2\n3\n");
        let g = topic("g");
        let proto = ["--group-protocol", protocol, "--from-beginning"];
        let first = Member::shipper(&b, &t, &g, &proto, &dir, "first");
        wait_for_members(&b, &g, &[&first], 1);
        let start = Instant::now();
        let mut c = Command::new(shipper_bin());
        c.args(["-b", &b, "consume", &t, "-G", &g, "-e"])
            .args(proto);
        let out = run_with_input(c, b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{protocol}: {err}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{protocol}: {err}"
        );
        drop(first);
    }
}

/// Two `-e` members of a new group started together print every record between them, on either
/// protocol. Under KIP-848 a new member owns nothing until the first one lets its partitions go:
/// that empty first assignment was taken as final, and both ended having printed nothing.
#[test]
fn two_exit_at_end_members_started_together_print_every_record_between_them() {
    let Some(b) = broker() else { return };
    for protocol in ["classic", "consumer"] {
        let t = topic("groups-two-e");
        create_topic(&b, &t, 4, 1, &[]);
        produce(&b, &t, 0, 4000);
        let g = topic("g-two-e");
        let spawn = || {
            Command::new(shipper_bin())
                .args(["-b", &b, "consume", &t, "-G", &g, "-e", "--from-beginning"])
                .args(["--group-protocol", protocol])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (one, two) = (spawn(), spawn());
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut said = String::new();
        for c in [one, two] {
            let out = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(0), "{protocol}: {err}");
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                *seen.entry(l.to_string()).or_default() += 1;
            }
            said.push_str(&err);
        }
        let missing: Vec<String> = (0..4000)
            .map(|i| format!("line-{i:07}"))
            .filter(|l| !seen.contains_key(l))
            .collect();
        assert!(
            missing.is_empty(),
            "{protocol}: {} of 4000 records printed by neither member ({:?}...): {said}",
            missing.len(),
            missing.first()
        );
    }
}

/// A topic deleted and created again with fewer partitions under a group: the member that read only
/// partitions now gone reads on (it is assigned again), rather than ending with "has no partition 1"
/// as a read of named partitions does; the new topic's records are printed (from the group's
/// committed offset: Kafka keeps offsets by topic name, so a commit of the old topic may still stand).
#[test]
fn group_members_read_on_when_their_topic_is_created_again_with_fewer_partitions() {
    let Some(b) = cluster() else { return };
    let t = topic("g-shrink");
    let g = topic("g-shrink-g");
    create_topic(&b, &t, 2, 3, &[]);
    for p in 0..2 {
        let lines: String = (0..20).map(|i| format!("old-{p}-{i}\n")).collect();
        shipper_ok(&b, &["produce", &t, "-p", &p.to_string()], lines.as_bytes());
    }
    let dir = scratch_dir("g-shrink");
    let one = Member::shipper(&b, &t, &g, &["-o", "beginning"], &dir, "one");
    let two = Member::shipper(&b, &t, &g, &["-o", "beginning"], &dir, "two");
    wait_for_members(&b, &g, &[&one, &two], 2);
    let printed = || {
        let mut all = one.values();
        all.extend(two.values());
        all
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while printed().iter().filter(|v| v.starts_with("old-")).count() < 40 {
        assert!(Instant::now() < deadline, "old records not all printed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The members are stopped through the change, so that each meets the new topic through a fetch
    // for its old partitions, not through the coordinator's new assignment first.
    let signal = |sig: &str| {
        for m in [&one, &two] {
            let pid = m.child.as_ref().map(|c| c.id().to_string()).unwrap();
            let _ = Command::new("kill").args([sig, &pid]).status();
        }
    };
    // Stopped longer than the classic session (10 s), as CI's slower topic tools once made it on
    // Kafka 3.9.1: there the members are dropped and join again, and the leader's plan must not
    // assign the gone partition from the topic's older metadata (it did; the member waited for its
    // leader). On the consumer protocol (a 45 s session) they stay members and meet it by a fetch.
    let stopped = Instant::now();
    signal("-STOP");
    kafka_topic(&b, "delete", &t, &[]);
    std::thread::sleep(Duration::from_secs(2));
    kafka_topic(&b, "create", &t, &["--partitions", "1", "--rf", "3"]);
    let new: String = (0..30).map(|i| format!("new-{i}\n")).collect();
    shipper_ok(&b, &["produce", &t, "-p", "0"], new.as_bytes());
    std::thread::sleep(Duration::from_secs(14).saturating_sub(stopped.elapsed()));
    signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: BTreeSet<String> = printed()
            .into_iter()
            .filter(|v| v.starts_with("new-"))
            .collect();
        if seen.contains("new-29") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new topic's records not printed ({} of 30)\none: {}\ntwo: {}",
            seen.len(),
            one.stderr(),
            two.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Both members still read: neither ended on the partition that is gone.
    std::thread::sleep(Duration::from_secs(3));
    for (name, m) in [("one", &one), ("two", &two)] {
        let err = m.stderr();
        assert!(!err.contains("has no partition"), "{name}: {err}");
        assert!(!err.contains("error:"), "{name}: {err}");
    }
    // Created again with more partitions: the group is assigned anew and every one is read (t27,
    // classic protocol: a member's partitions that were gone and came back were never read, and
    // partitions added were read only after a restart).
    kafka_topic(&b, "delete", &t, &[]);
    std::thread::sleep(Duration::from_secs(2));
    kafka_topic(&b, "create", &t, &["--partitions", "3", "--rf", "3"]);
    for p in 0..3 {
        let lines: String = (0..10).map(|i| format!("grown-{p}-{i}\n")).collect();
        shipper_ok(&b, &["produce", &t, "-p", &p.to_string()], lines.as_bytes());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: BTreeSet<String> = printed()
            .into_iter()
            .filter(|v| v.starts_with("grown-"))
            .collect();
        if seen.len() == 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the grown topic's records not all printed ({} of 30: {seen:?})\none: {}\ntwo: {}",
            seen.len(),
            one.stderr(),
            two.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The lines of `out`, sorted.
fn sorted_lines(out: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(out)
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// `--group-protocol consumer` asked for by name: on Kafka 4 the member reads every record; on
/// Kafka 3 (no KIP-848 protocol to offer) it is one line saying so and naming the way out, not
/// "the broker is too old for shipper". `scripts/test` runs the groups tests on Kafka 3.9.1 too,
/// and says so in SHIPPER_TEST_CLUSTER_KAFKA.
#[test]
fn the_consumer_protocol_by_name_reads_on_kafka_4_and_is_refused_clearly_on_3() {
    let Some(b) = cluster() else { return };
    let kafka3 = std::env::var("SHIPPER_TEST_CLUSTER_KAFKA").is_ok_and(|v| v.starts_with("3."));
    let t = topic("groups-by-name");
    create_topic(&b, &t, 2, 1, &[]);
    wait_visible(&b, &t);
    produce(&b, &t, 0, 50);
    let g = topic("g");
    let out = shipper(
        &b,
        &[
            "consume",
            &t,
            "-G",
            &g,
            "--group-protocol",
            "consumer",
            "--from-beginning",
            "-e",
            "-f",
            "%s\\n",
        ],
        b"",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    if kafka3 {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("does not offer the consumer group protocol")
                && err.contains("--group-protocol classic"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(out.stdout.is_empty());
    } else {
        assert!(out.status.success(), "{err}");
        let want: Vec<String> = (0..50).map(|i| format!("line-{i:07}")).collect();
        assert_eq!(sorted_lines(&out.stdout), want, "{err}");
    }
}

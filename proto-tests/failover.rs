//! Fault tests on the three-broker cluster: a leader stops mid-stream and the client follows the new
//! leader without losing records. They stop and restart cluster nodes, so scripts/test runs them alone,
//! after the other targets.

#[path = "broker/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use harness::*;

mod faults;
use shipper::cluster::{ClientOptions, Cluster};
use shipper::producer::{Producer, ProducerConfig};

pub(crate) fn node(action: &str, id: i32) {
    let out = Command::new(root().join("scripts/kafka-node"))
        .args([action, &id.to_string(), "--brokers", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-node {action} {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Restarts the node even if the test fails, so later tests find the whole cluster.
struct Restart(i32);
impl Drop for Restart {
    fn drop(&mut self) {
        node("start", self.0);
    }
}

fn leader_move(action: &'static str) {
    let Some(c) = cluster() else { return };
    let t = topic(&format!("failover-{action}"));
    create_topic(&c, &t, 1, 3, &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sent = 6000u64;
    let leader = rt.block_on(async {
        let mut opts = ClientOptions::new(&c);
        opts.connection.request_timeout = Duration::from_secs(10);
        let cluster = Arc::new(Cluster::new(opts));
        let meta = cluster.topic(&t, false).await.unwrap();
        let leader = meta.partitions[0].leader;
        let cfg = ProducerConfig {
            batch_bytes: 4096,
            ..ProducerConfig::default()
        };
        let mut p = Producer::for_topic(cluster.clone(), meta, cfg);
        p.init().await.unwrap();
        let mut deliveries = Vec::new();
        let mut stopped = false;
        for i in 0..sent {
            let v = format!("record {i}");
            p.append(
                0,
                None,
                Some(v.as_bytes()),
                &[],
                shipper::producer::timestamp_now_ms(),
                i,
            )
            .unwrap();
            if i % 200 == 0 {
                // Pace the stream so the stop lands in the middle of it.
                p.drive(&mut deliveries).await.unwrap();
            }
            if i == sent / 2 && !stopped {
                let b = tokio::task::spawn_blocking(move || node(action, leader));
                p.flush(&mut deliveries).await.unwrap();
                b.await.unwrap();
                stopped = true;
            }
        }
        p.flush(&mut deliveries).await.unwrap();
        for d in &deliveries {
            assert!(d.error.is_none(), "delivery failed: {:?}", d.error);
        }
        assert_eq!(
            deliveries
                .iter()
                .map(|d| d.tokens.len() as u64)
                .sum::<u64>(),
            sent
        );
        let after = cluster.topic(&t, false).await.unwrap();
        assert_ne!(after.partitions[0].leader, leader, "leadership moved");
        leader
    });
    let _restart = Restart(leader);
    let out = shipper_ok(&c, &["consume", &t, "--from-beginning", "-e"], b"");
    let mut counts: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for l in lines(&out) {
        *counts.entry(l).or_default() += 1;
    }
    let missing: Vec<u64> = (0..sent)
        .filter(|i| !counts.contains_key(format!("record {i}").as_bytes()))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} records, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let dups: u32 = counts.values().map(|n| n - 1).sum();
    eprintln!("{action}: {sent} records, 0 lost, {dups} duplicated by retries");
    assert_eq!(
        dups, 0,
        "the idempotent producer's retries must not duplicate"
    );
}

#[test]
fn producer_follows_the_new_leader_when_the_leader_is_stopped() {
    leader_move("stop");
}

#[test]
fn producer_follows_the_new_leader_when_the_leader_is_killed() {
    leader_move("kill");
}

/// Resumes a paused node even if the test fails.
struct Resume(i32);
impl Drop for Resume {
    fn drop(&mut self) {
        node("resume", self.0);
    }
}

/// `shipper produce` (default --timeout, 30 s) while the partition leader hangs (SIGSTOP) for 30 s:
/// Kafka elects another leader within ~10 s, and each attempt waits only its share of the timeout,
/// so the records reach the new leader in time instead of failing on the hung one.
#[test]
fn produce_delivers_everything_through_a_leader_that_hangs_for_30_s() {
    use std::io::Write;
    let Some(c) = cluster() else { return };
    let t = topic("failover-hang");
    create_topic(&c, &t, 1, 3, &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let leader = rt.block_on(async {
        let cluster = Cluster::new(ClientOptions::new(&c));
        cluster.topic(&t, false).await.unwrap().partitions[0].leader
    });
    let mut child = Command::new(shipper_bin())
        .args(["-b", &c, "produce", &t])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let sent = 40_000u64;
    let start = std::time::Instant::now();
    let mut resume = None;
    for i in 0..sent {
        writeln!(stdin, "hang {i}").unwrap();
        if i % 100 == 99 {
            // 1,000 lines a second: 40 s of input.
            let due = start + Duration::from_millis(i);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
        if i == 5_000 {
            node("pause", leader);
            resume = Some((Resume(leader), std::time::Instant::now()));
        }
        if resume
            .as_ref()
            .is_some_and(|r| r.1.elapsed() >= Duration::from_secs(30))
        {
            resume = None;
        }
    }
    drop(resume);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let got = shipper_ok(&c, &["consume", &t, "--from-beginning", "-e"], b"");
    let mut counts: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for l in lines(&got) {
        *counts.entry(l).or_default() += 1;
    }
    assert_eq!(counts.len() as u64, sent, "{err}");
    assert!(counts.values().all(|&n| n == 1), "duplicates");
}

/// `groups` while one broker hangs (t24 F2, F3): the list shows what the other brokers answered
/// (and exits 1, naming the one that did not), and a group's description shows the end offsets and
/// lag of the partitions whose leaders answer, "-" only for the hung leader's, within seconds.
/// Before, the list printed nothing, and one leaderless partition hid every end offset after 30 s.
#[test]
fn groups_show_what_the_brokers_that_answer_know_while_one_hangs() {
    let Some(c) = cluster() else { return };
    let t = topic("failover-groups");
    create_topic(&c, &t, 3, 1, &[]);
    for p in 0..3 {
        let lines: String = (0..10).map(|i| format!("p{p} {i}\n")).collect();
        shipper_ok(&c, &["produce", &t, "-p", &p.to_string()], lines.as_bytes());
    }
    // The group's offsets first: they also make the offsets topic on a fresh cluster (its
    // coordinator is not available until then).
    let group = format!("{t}-g");
    shipper_ok(
        &c,
        &["consume", &t, "-G", &group, "--from-beginning", "-e"],
        b"",
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A group, and a broker to hang that leads one partition and does not coordinate the group
    // (after the other fault tests, __consumer_offsets may be led by one broker alone: CI saw 50
    // group names all coordinated by the leader chosen first).
    let (dead, hung, hung_addr) = rt.block_on(async {
        let cluster = Arc::new(Cluster::new(ClientOptions::new(&c)));
        let meta = cluster.topic(&t, false).await.unwrap();
        let leaders: BTreeSet<i32> = meta.partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders.len(), 3, "one partition per broker: {meta:?}");
        let co = shipper::group::coordinator::Coordinator::new(cluster.clone(), &group);
        let co_addr = co.connection(None).await.unwrap().addr().to_string();
        let dead = meta
            .partitions
            .iter()
            .find(|p| cluster.broker_addr(p.leader).as_deref() != Some(co_addr.as_str()))
            .unwrap();
        let addr = cluster.broker_addr(dead.leader).unwrap();
        (dead.id, dead.leader, addr)
    });
    node("pause", hung);
    let _resume = Resume(hung);
    let started = std::time::Instant::now();
    let list = shipper(&c, &["groups"], b"");
    let took = started.elapsed();
    let (out, err) = (
        String::from_utf8_lossy(&list.stdout),
        String::from_utf8_lossy(&list.stderr),
    );
    assert_eq!(list.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains(&group),
        "the others' groups are listed: {out}{err}"
    );
    assert!(
        err.contains(&hung_addr) && err.contains("not listed") && err.contains("incomplete"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    let started = std::time::Instant::now();
    let d = shipper(&c, &["groups", &group], b"");
    let took = started.elapsed();
    let (out, err) = (
        String::from_utf8_lossy(&d.stdout),
        String::from_utf8_lossy(&d.stderr),
    );
    // Shown, and said incomplete by the exit code, as the list is.
    assert_eq!(d.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("the lag is incomplete"), "{err}");
    let row = |p: i32| {
        out.lines()
            .find(|l| {
                l.split_whitespace()
                    .take(2)
                    .eq([t.as_str(), &p.to_string()])
            })
            .map(|l| l.split_whitespace().skip(2).take(3).collect::<Vec<_>>())
    };
    for p in 0..3 {
        let want = if p == dead {
            vec!["10", "-", "-"]
        } else {
            vec!["10", "10", "0"]
        };
        assert_eq!(row(p), Some(want), "partition {p}: {out}{err}");
    }
    assert!(
        err.contains(&format!("partition(s) {dead} unknown")),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}

pub(crate) fn rss_anon_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

#[test]
fn fault_leader_killed_and_restarted() {
    if cluster().is_some() {
        faults::leader_killed_and_restarted();
    }
}

#[test]
fn fault_rolling_restart() {
    if cluster().is_some() {
        faults::rolling_restart();
    }
}

#[test]
fn fault_shipper_killed_ten_times() {
    if cluster().is_some() {
        faults::shipper_killed_ten_times();
    }
}

#[test]
fn fault_whole_cluster_down() {
    if cluster().is_some() {
        faults::whole_cluster_down();
    }
}

#[test]
fn fault_lines_over_max_message_bytes() {
    if cluster().is_some() {
        faults::lines_over_max_message_bytes();
    }
}

#[test]
fn fault_exactly_once_under_kills() {
    if cluster().is_some() {
        faults::exactly_once_under_kills();
    }
}

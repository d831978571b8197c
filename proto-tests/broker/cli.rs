//! The console commands against real brokers, checked with independent clients: kcat (librdkafka) and
//! Kafka's own console tools.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

fn sample_lines(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        v.extend_from_slice(
            format!("line {i} with some text {}\n", "abc".repeat(i % 9)).as_bytes(),
        );
    }
    v
}

#[test]
fn shipper_produce_is_read_identically_by_kcat_and_kafka_console_consumer_for_every_codec() {
    let Some(b) = broker() else { return };
    let input = sample_lines(300);
    for codec in CODECS {
        let t = topic(&format!("p-{codec}"));
        shipper_ok(
            &b,
            &[
                "produce",
                &t,
                "--compression",
                codec,
                "--key",
                "k1",
                "-H",
                "src=test",
            ],
            &input,
        );
        let got = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "%k|%h|%s\n"], b"");
        let want: Vec<u8> = lines(&input)
            .iter()
            .flat_map(|l| [b"k1|src=test|".to_vec(), l.clone(), b"\n".to_vec()].concat())
            .collect();
        assert_eq!(got, want, "kcat reading {codec}");
        let java = kafka_tool(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            &[
                "--bootstrap-server",
                &b,
                "--topic",
                &t,
                "--from-beginning",
                "--max-messages",
                "300",
                "--timeout-ms",
                "20000",
            ],
            b"",
        );
        assert_eq!(java, input, "Kafka console consumer reading {codec}");
    }
}

#[test]
fn kcat_produce_with_every_codec_is_read_identically_by_shipper() {
    let Some(b) = broker() else { return };
    let input = sample_lines(500);
    for codec in CODECS {
        let t = topic(&format!("kc-{codec}"));
        kcat(
            &b,
            &["-P", "-t", &t, "-z", codec, "-K", ":", "-H", "a=1"],
            &sample_keyed(&input),
        );
        let got = shipper_ok(
            &b,
            &["consume", &t, "--from-beginning", "-e", "-f", "%k %h %s\\n"],
            b"",
        );
        let want: Vec<u8> = lines(&input)
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                [
                    format!("k{} a=1 ", i % 5).into_bytes(),
                    l.clone(),
                    b"\n".to_vec(),
                ]
                .concat()
            })
            .collect();
        assert_eq!(got, want, "{codec}");
    }
}

#[test]
fn null_headers_hex_escapes_and_c_0_read_as_kcat_reads_them() {
    let Some(b) = broker() else { return };
    let t = topic("kc-fmt");
    // `-H h2` (no '='): a header whose value is null.
    kcat(&b, &["-P", "-t", &t, "-H", "h1=v1", "-H", "h2"], b"a\nb\n");
    let fmt = "%h|\\x41|%R%s\\x4\\n";
    let theirs = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-c", "0", "-f", fmt], b"");
    let ours = shipper_ok(
        &b,
        &["consume", &t, "-o", "beginning", "-e", "-c", "0", "-f", fmt],
        b"",
    );
    assert_eq!(
        theirs,
        b"h1=v1,h2=NULL|A|\0\0\0\x01a\x04\nh1=v1,h2=NULL|A|\0\0\0\x01b\x04\n"
    );
    assert_eq!(ours, theirs);
}

#[test]
fn key_separator_takes_kcats_escapes() {
    let Some(b) = broker() else { return };
    let (ours, theirs) = (topic("ksep-shipper"), topic("ksep-kcat"));
    let input = b"k1\tv1\nk2\tv:2\nno-key\n";
    shipper_ok(&b, &["produce", &ours, "--key-separator", "\\t"], input);
    kcat(&b, &["-P", "-t", &theirs, "-K", "\\t"], input);
    let read = |t: &str| kcat(&b, &["-C", "-t", t, "-e", "-q", "-f", "%K:%k|%s\\n"], b"");
    assert_eq!(read(&ours), b"2:k1|v1\n2:k2|v:2\n-1:|no-key\n");
    assert_eq!(read(&ours), read(&theirs));
}

/// `--key` takes bytes that are not UTF-8, as kcat's `-k` does (it was refused by the argument parser).
#[test]
fn a_key_that_is_not_utf8_is_sent_as_given() {
    use std::os::unix::ffi::OsStrExt;
    let Some(b) = broker() else { return };
    let t = topic("key-bytes");
    let mut c = std::process::Command::new(shipper_bin());
    c.args(["-b", &b, "produce", &t, "--key"])
        .arg(std::ffi::OsStr::from_bytes(b"\xff\x01k"));
    let out = run_with_input(c, b"v\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "%k|%s\n"], b"");
    assert_eq!(got, b"\xff\x01k|v\n");
}

fn sample_keyed(input: &[u8]) -> Vec<u8> {
    lines(input)
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            [
                format!("k{}:", i % 5).into_bytes(),
                l.clone(),
                b"\n".to_vec(),
            ]
            .concat()
        })
        .collect()
}

#[test]
fn kafka_console_producer_records_are_read_by_shipper() {
    let Some(b) = broker() else { return };
    let t = topic("jprod");
    let input = sample_lines(200);
    kafka_tool(
        "ConsoleProducer",
        &[
            "--bootstrap-server",
            &b,
            "--topic",
            &t,
            "--compression-codec",
            "zstd",
        ],
        &input,
    );
    let got = shipper_ok(&b, &["consume", &t, "--from-beginning", "-e"], b"");
    assert_eq!(got, input);
}

#[test]
fn keys_land_on_the_same_partitions_as_with_kafkas_console_producer() {
    let Some(b) = broker() else { return };
    let (tj, ts) = (topic("keys-java"), topic("keys-shipper"));
    create_topic(&b, &tj, 7, 1, &[]);
    create_topic(&b, &ts, 7, 1, &[]);
    let input: Vec<u8> = (0..300)
        .flat_map(|i| format!("user-{i}:payload {i}\n").into_bytes())
        .collect();
    kafka_tool(
        "ConsoleProducer",
        &[
            "--bootstrap-server",
            &b,
            "--topic",
            &tj,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ],
        &input,
    );
    shipper_ok(&b, &["produce", &ts, "--key-separator", ":"], &input);
    let placement = |t: &str| -> BTreeMap<Vec<u8>, Vec<u8>> {
        let out = shipper_ok(
            &b,
            &["consume", t, "--from-beginning", "-e", "-f", "%k %p\\n"],
            b"",
        );
        lines(&out)
            .into_iter()
            .map(|l| {
                let i = l.iter().position(|&c| c == b' ').unwrap();
                (l[..i].to_vec(), l[i + 1..].to_vec())
            })
            .collect()
    };
    let (java, ours) = (placement(&tj), placement(&ts));
    assert_eq!(java.len(), 300);
    assert_eq!(java, ours);
}

#[test]
fn the_seeds_flow_keyed_acks_all_prints_partition_and_offset_per_line() {
    let Some(b) = broker() else { return };
    let t = topic("seed");
    let out = shipper_ok(
        &b,
        &[
            "produce",
            &t,
            "--key",
            "key",
            "--acks",
            "all",
            "--print-offsets",
        ],
        b"first\nsecond\nthird",
    );
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows,
        vec![
            "partition 0 offset 0 line 1",
            "partition 0 offset 1 line 2",
            "partition 0 offset 2 line 3"
        ]
    );
    let got = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "%k=%s\n"], b"");
    assert_eq!(got, b"key=first\nkey=second\nkey=third\n");
}

#[test]
fn empty_lines_and_crlf_and_a_last_line_without_newline_are_records() {
    let Some(b) = broker() else { return };
    let t = topic("lines");
    shipper_ok(&b, &["produce", &t], b"a\r\n\nb\r\nlast");
    let got = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "[%s]"], b"");
    assert_eq!(got, b"[a][][b][last]");
}

#[test]
fn binary_values_survive_and_json_output_is_lossless() {
    let Some(b) = broker() else { return };
    let t = topic("binary");
    let value: &[u8] = b"nul\x00byte \xff\xfe invalid";
    let mut input = value.to_vec();
    input.push(b'\n');
    shipper_ok(&b, &["produce", &t], &input);
    let raw = kcat(&b, &["-C", "-t", &t, "-e", "-q"], b"");
    assert_eq!(raw, input);
    let json = String::from_utf8(shipper_ok(
        &b,
        &["consume", &t, "--from-beginning", "-e", "-J"],
        b"",
    ))
    .unwrap();
    assert!(json.contains("\"value_encoding\":\"base64\""), "{json}");
    assert!(json.contains(&shipper::output::base64(value)), "{json}");
}

#[test]
fn offsets_relative_absolute_and_by_timestamp() {
    let Some(b) = broker() else { return };
    let t = topic("offsets");
    shipper_ok(&b, &["produce", &t], &sample_lines(10));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mid = shipper::producer::timestamp_now_ms();
    std::thread::sleep(std::time::Duration::from_millis(50));
    shipper_ok(&b, &["produce", &t], b"after-1\nafter-2\n");
    let c = |args: &[&str]| {
        let mut a = vec!["consume", &t[..], "-e", "-f", "%o \\n"];
        a.extend_from_slice(args);
        String::from_utf8(shipper_ok(&b, &a, b"")).unwrap()
    };
    assert_eq!(c(&["-o", "-3"]), "9 \n10 \n11 \n");
    assert_eq!(c(&["-o", "10"]), "10 \n11 \n");
    assert_eq!(c(&["-o", &format!("s@{mid}")]), "10 \n11 \n");
    assert_eq!(c(&["-o", "end"]), "");
    assert_eq!(c(&["--from-beginning", "-c", "2"]), "0 \n1 \n");
    // A partition named twice is read once (a ListOffsets asking for it twice is refused by Kafka).
    assert_eq!(c(&["-o", "-2", "-p", "0", "-p", "0"]), "10 \n11 \n");
    // The summary names the topic even when nothing was read.
    for offset in ["end", "99999"] {
        let out = shipper(&b, &["consume", &t, "-e", "-o", offset], b"");
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("consumed 0 records from '{t}'")),
            "{err}"
        );
        // An offset that is not there is said, as kcat says it.
        assert_eq!(
            offset == "99999",
            err.contains("offset 99999 is past the end; starting at the end, offset 12"),
            "{err}"
        );
    }
}

#[test]
fn exit_at_end_on_an_empty_topic_returns_at_once() {
    let Some(b) = broker() else { return };
    let t = topic("empty");
    create_topic(&b, &t, 2, 1, &[]);
    let start = std::time::Instant::now();
    let out = shipper_ok(&b, &["consume", &t, "--from-beginning", "-e"], b"");
    assert!(out.is_empty());
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn exit_at_end_on_a_topic_being_written_reads_at_least_what_existed_at_start() {
    let Some(b) = broker() else { return };
    let t = topic("busy");
    shipper_ok(&b, &["produce", &t], &sample_lines(1000));
    let b2 = b.clone();
    let t2 = t.clone();
    let writer = std::thread::spawn(move || {
        for _ in 0..5 {
            shipper_ok(&b2, &["produce", &t2], &sample_lines(200));
        }
    });
    let out = shipper_ok(&b, &["consume", &t, "--from-beginning", "-e"], b"");
    writer.join().unwrap();
    let n = lines(&out).len();
    assert!((1000..=2000).contains(&n), "read {n}");
    assert_eq!(&lines(&out)[..1000], &lines(&sample_lines(1000))[..]);
}

#[test]
fn multi_partition_consume_reads_every_partition() {
    let Some(b) = broker() else { return };
    let t = topic("multi");
    create_topic(&b, &t, 4, 1, &[]);
    shipper_ok(
        &b,
        &["produce", &t, "--partitioner", "random"],
        &sample_lines(2000),
    );
    let out = shipper_ok(
        &b,
        &["consume", &t, "--from-beginning", "-e", "-f", "%p\\n"],
        b"",
    );
    let mut per: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for l in lines(&out) {
        *per.entry(l).or_default() += 1;
    }
    assert_eq!(per.values().sum::<usize>(), 2000);
    assert_eq!(per.len(), 4, "{per:?}");
    let only = shipper_ok(
        &b,
        &[
            "consume",
            &t,
            "--from-beginning",
            "-e",
            "-p",
            "2",
            "-f",
            "%p\\n",
        ],
        b"",
    );
    assert!(lines(&only).iter().all(|l| l == b"2"));
    assert_eq!(lines(&only).len(), per[&b"2".to_vec()]);
}

#[test]
fn unknown_topic_fails_with_its_name_when_auto_creation_is_off() {
    let Some(c) = cluster() else { return };
    let t = topic("absent");
    // tail from the command line too (a typo is said at once; from a config file it is waited for).
    let dir = scratch_dir("absent");
    append(&dir.join("a.log"), b"x\n");
    let (log, ck) = (
        dir.join("a.log").display().to_string(),
        dir.join("ck").display().to_string(),
    );
    let tail = vec!["tail", &log[..], &t[..], "--checkpoint", &ck[..]];
    for args in [vec!["produce", &t[..]], vec!["consume", &t[..], "-e"], tail] {
        let out = shipper(&c, &args, b"x\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("topic '{t}' does not exist")),
            "{err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.contains("error")).count(),
            1,
            "one line: {err}"
        );
    }
}

/// A topic Kafka refuses to create, its name colliding with an existing topic's (`x.a` and `x_a`:
/// their metrics' names would be the same), is said with Kafka's reason, by produce and by tail from
/// the command line; it was "does not exist (create it ...)", which cannot be done (t36 F3).
#[test]
fn a_topic_colliding_with_an_existing_one_is_said_with_kafkas_reason() {
    let Some(b) = broker() else { return };
    let dotted = topic("collide.a");
    create_topic(&b, &dotted, 1, 1, &[]);
    let t = dotted.replace('.', "_");
    let dir = scratch_dir("collide");
    append(&dir.join("a.log"), b"x\n");
    let (log, ck) = (
        dir.join("a.log").display().to_string(),
        dir.join("ck").display().to_string(),
    );
    let tail = vec!["tail", &log[..], &t[..], "--checkpoint", &ck[..]];
    for args in [vec!["produce", &t[..]], tail] {
        let out = shipper(&b, &args, b"x\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "topic '{t}' does not exist, and Kafka refuses to create it: Topic '{t}' collides with existing topic: {dotted}"
            )),
            "{err}"
        );
    }
    assert!(topic_values(&b, &dotted).is_empty());
}

#[test]
fn unreachable_broker_fails_with_the_address_and_says_it_is_still_trying_meanwhile() {
    let out = shipper("127.0.0.1:1", &["--timeout", "9s", "produce", "t"], b"x\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "a warning after 5 s, then the error: {err}");
    assert!(
        lines[0].starts_with("shipper: warning: cannot connect to broker 127.0.0.1:1")
            && lines[0].contains("; still trying for up to ")
            && lines[0].ends_with(" s (--timeout)"),
        "{err}"
    );
    assert!(
        lines[1].starts_with(
            "shipper: error: gave up after 9.0s: cannot connect to broker 127.0.0.1:1"
        ),
        "{err}"
    );
}

#[test]
fn a_port_that_is_not_kafka_fails_at_once_saying_what_answered() {
    use std::io::{Read, Write};
    for (banner, want) in [
        (
            &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"[..],
            "is not a Kafka broker: it answered in HTTP (\"HTTP/1.1 400 Bad Request\")",
        ),
        (
            &b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"[..],
            "its first answer begins \"SSH-2.0-OpenSSH_9.2p1 Debian-2\"",
        ),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            // Every connection the client makes gets the banner (it should make one).
            listener.set_nonblocking(false).unwrap();
            let (mut c, _) = listener.accept().unwrap();
            let mut req = [0u8; 64];
            let _ = c.read(&mut req);
            c.write_all(banner).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(500));
        });
        let start = std::time::Instant::now();
        let out = shipper(&addr, &["produce", "t"], b"x\n");
        server.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&addr) && err.contains(want), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        // Not retried until the 30 s timeout: it is no broker.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{err}"
        );
    }
}

#[test]
fn partition_out_of_range_fails() {
    let Some(b) = broker() else { return };
    let t = topic("range");
    create_topic(&b, &t, 2, 1, &[]);
    for args in [
        vec!["produce", &t[..], "-p", "5"],
        vec!["consume", &t[..], "-p", "5", "-e"],
    ] {
        let out = shipper(&b, &args, b"x\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("has no partition 5 (it has 2)"), "{err}");
    }
}

#[test]
fn a_record_larger_than_the_topics_max_message_bytes_fails_and_is_not_reported_sent() {
    let Some(b) = broker() else { return };
    let t = topic("toolarge");
    create_topic(&b, &t, 1, 1, &["max.message.bytes=2000"]);
    let mut input = b"small one\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 5000));
    input.extend_from_slice(b"\nsmall two\n");
    let out = shipper(&b, &["produce", &t], &input);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 records sent, 2 acked, 1 failed"), "{err}");
    assert!(
        err.contains("MESSAGE_TOO_LARGE") && err.contains("max.message.bytes"),
        "{err}"
    );
    let got = kcat(&b, &["-C", "-t", &t, "-e", "-q"], b"");
    assert_eq!(got, b"small one\nsmall two\n");
}

#[test]
fn consume_into_a_closed_pipe_exits_quietly() {
    let Some(b) = broker() else { return };
    let t = topic("pipe");
    shipper_ok(&b, &["produce", &t], &sample_lines(20000));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' -b {b} consume {t} --from-beginning -e | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
            shipper_bin().display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("line 0 with some text"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("error"), "{err}");
}

/// `consume t | head -2` of a topic that has gone quiet ends once `head` has its lines, alone and
/// in a group (kcat and the console consumer wait for the next record: a closed pipe is seen only by
/// a write). It used to wait for ever.
#[test]
fn consume_of_an_idle_topic_ends_when_the_reader_of_its_output_goes_away() {
    let Some(b) = broker() else { return };
    let t = topic("idle-pipe");
    shipper_ok(&b, &["produce", &t], b"one\ntwo\nthree\n");
    let g = format!("{t}-g");
    for group in [vec![], vec!["-G", g.as_str()]] {
        let start = std::time::Instant::now();
        let mut child = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "'{}' -b {b} consume {t} --from-beginning {} | head -2; echo \"status=${{PIPESTATUS[0]}}\"",
                shipper_bin().display(),
                group.join(" ")
            ))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded here, so a regression fails rather than hangs the suite.
        let deadline = start + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = std::process::Command::new("pkill")
                    .args(["-f", &format!("consume {t} ")])
                    .status();
                panic!("{group:?}: still waiting a minute after head left");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(text, "one\ntwo\nstatus=0\n", "{group:?}: {err}");
        assert!(!err.contains("error"), "{group:?}: {err}");
    }
    // In the group, what reached the pipe was committed: all three (the pipe took them).
    let next = shipper(&b, &["consume", &t, "-G", &g, "-e"], b"");
    assert!(
        next.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&next.stdout)
    );
}

/// `consume -G ... | head -1`: what stayed in shipper's buffer when the pipe closed was not written,
/// so it is not committed; the group's next reader gets it (it skipped a whole fetch, ~4,500 records).
#[test]
fn consume_in_a_group_into_a_closed_pipe_commits_only_what_was_written() {
    let Some(b) = broker() else { return };
    let t = topic("pipe-group");
    let g = format!("{t}-g");
    let input: Vec<u8> = (0..20000)
        .flat_map(|i| format!("{i:06} {}\n", "x".repeat(200)).into_bytes())
        .collect();
    shipper_ok(&b, &["produce", &t], &input);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' -b {b} consume {t} -G {g} --from-beginning | head -1",
            shipper_bin().display()
        ))
        .output()
        .unwrap();
    assert!(out.stdout.starts_with(b"000000 x"));
    // The next reader of the group starts at most where a pipe (64 KiB) and head's read could have
    // taken the records to (~300 and a few hundred more of these 208-byte lines), not past them.
    let next = shipper_ok(
        &b,
        &["consume", &t, "-G", &g, "--from-beginning", "-c", "1"],
        b"",
    );
    let first: usize = String::from_utf8_lossy(&next[..6]).parse().unwrap();
    assert!(first < 2500, "the group skipped to record {first}");
}

#[test]
fn consume_into_a_full_device_says_standard_output_is_what_failed() {
    let Some(b) = broker() else { return };
    let t = topic("full");
    shipper_ok(&b, &["produce", &t], &sample_lines(10));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(shipper_bin())
        .args(["-b", &b, "consume", &t, "--from-beginning", "-e"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: cannot write to standard output: No space left on device"),
        "{err}"
    );
    // produce --print-offsets: the records still go; the run fails, since offsets went missing.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let input = scratch_dir("full-offsets").join("in");
    std::fs::write(&input, sample_lines(5)).unwrap();
    let out = std::process::Command::new(shipper_bin())
        .args(["-b", &b, "produce", &t, "--print-offsets"])
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write to standard output: No space left on device")
            && err.contains("some offsets were not printed"),
        "{err}"
    );
    let got = shipper_ok(&b, &["consume", &t, "--from-beginning", "-e"], b"");
    assert_eq!(lines(&got).len(), 15);
}

/// `produce --print-offsets` into a pipe nobody reads for longer than `--timeout` (a pager left
/// alone): the input waits, nothing expires. Printing from the event loop blocked it, and the
/// records queued meanwhile failed with "not written ... no available leader" at the timeout.
#[test]
fn offsets_printed_to_a_pipe_read_late_cost_no_record() {
    use std::io::Write;
    let Some(b) = broker() else { return };
    let t = topic("late-reader");
    let n = 200_000;
    let mut child = std::process::Command::new(shipper_bin())
        .args([
            "-b",
            &b,
            "produce",
            &t,
            "--print-offsets",
            "--timeout",
            "3s",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let text: String = (1..=n).map(|i| format!("line {i}\n")).collect();
        stdin.write_all(text.as_bytes()).unwrap();
    });
    // Nobody reads the offsets for twice the timeout.
    std::thread::sleep(Duration::from_secs(6));
    let done = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let (status, out) = (done.status, String::from_utf8_lossy(&done.stdout));
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(status.success(), "{err}");
    assert_eq!(out.lines().count(), n, "{err}");
    assert!(
        err.contains(&format!("{n} records sent, {n} acked, 0 failed")),
        "{err}"
    );
}

/// `consume -G` with standard output closed (`>&-`) refuses to start: Rust reopens a closed standard
/// descriptor on /dev/null before main, so the records went nowhere and were committed (exit 0).
/// `>/dev/null` stays a way to discard, committing. The same for produce's closed standard input.
#[test]
fn closed_standard_output_or_input_is_refused_and_nothing_committed() {
    let Some(b) = broker() else { return };
    let t = topic("closed-out");
    shipper_ok(&b, &["produce", &t], &sample_lines(3));
    let g = topic("closed-out-g");
    let run = |redirect: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec \"$0\" \"$@\" {redirect}"))
            .arg(shipper_bin())
            .args(["-b", &b, "consume", &t, "-G", &g, "--from-beginning", "-e"])
            .output()
            .unwrap()
    };
    let out = run(">&-");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("standard output is closed"), "{err}");
    let out = std::process::Command::new(shipper_bin())
        .args(["-b", &b, "groups", &g])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&t),
        "offsets committed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(">/dev/null");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let desc = shipper_ok(&b, &["groups", &g], b"");
    assert!(String::from_utf8_lossy(&desc).contains(&t));
    // produce with standard input closed says so (it sent 0 records, exit 0, as if given nothing).
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" \"$@\" <&-")
        .arg(shipper_bin())
        .args(["-b", &b, "produce", &t])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("standard input is closed"), "{err}");
}

/// A directory on standard input: a usage error saying so, at once (t28 F5: "cannot read input:
/// Is a directory"; `--file DIR` is in the test of mapped input). No broker needed.
#[test]
fn produce_refuses_a_directory_on_standard_input() {
    let dir = scratch_dir("produce-dir-input");
    let out = std::process::Command::new(shipper_bin())
        .args(["-b", "127.0.0.1:1", "produce", "t"])
        .stdin(std::fs::File::open(&dir).unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("standard input is a directory"), "{err}");
}

/// `produce -Z` (kcat's -Z): an empty value or key is null, so `key:` is a tombstone; kcat reads
/// -1 as their sizes. Without it they are empty, as before.
#[test]
fn produce_z_sends_empty_values_and_keys_as_null() {
    let Some(b) = broker() else { return };
    let t = topic("null-empty");
    shipper_ok(
        &b,
        &["produce", &t, "-p", "0", "-Z", "--key-separator", ":"],
        b"a:1\nb:\n:3\n",
    );
    shipper_ok(
        &b,
        &["produce", &t, "-p", "0", "--key-separator", ":"],
        b"c:\n",
    );
    let got = kcat(
        &b,
        &["-C", "-t", &t, "-e", "-q", "-f", "%k|%K|%s|%S\n"],
        b"",
    );
    assert_eq!(
        String::from_utf8_lossy(&got),
        "a|1|1|1\nb|1||-1\n|-1|3|1\nc|1||0\n"
    );
}

/// A topic deleted and created again under a running `consume` whose position is past the new
/// log's end: the new topic is read from its start (it was reset to the new end, skipping it).
#[test]
fn consume_reads_a_topic_created_again_from_its_start() {
    recreated("recreated", 1, 1);
}

/// As above, created again with fewer partitions: the ones gone are said and dropped, and the others
/// read from their start (t25 F4: the gone partition was asked for as leaderless for 30 s, and the
/// whole read then ended with "partition 1 has no available leader", the new records never shown).
#[test]
fn consume_reads_a_topic_created_again_with_fewer_partitions() {
    recreated("recreated-fewer", 2, 1);
}

fn recreated(name: &str, before: u32, after: u32) {
    let Some(b) = cluster() else { return };
    let t = topic(name);
    create_topic(&b, &t, before, 3, &[]);
    let old: Vec<u8> = (0..1000)
        .flat_map(|i| format!("old-{i}\n").into_bytes())
        .collect();
    shipper_ok(&b, &["produce", &t], &old);
    let dir = scratch_dir(name);
    let out = dir.join("out");
    let err_file = dir.join("err");
    let c = Reaped(
        std::process::Command::new(shipper_bin())
            .args(["-b", &b, "consume", &t, "-o", "beginning"])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .spawn()
            .unwrap(),
    );
    let read = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
            < n
        {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} records printed: {}",
                std::fs::read_to_string(&err_file).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    read(1000);
    // Stopped while the topic is deleted, created again and written: its next fetch is past the end.
    let signal = |s: &str| {
        std::process::Command::new("kill")
            .args([s, &c.0.id().to_string()])
            .status()
            .unwrap()
    };
    signal("-STOP");
    let kt = |verb: &str, extra: &[&str]| kafka_topic(&b, verb, &t, extra);
    kt("delete", &[]);
    std::thread::sleep(Duration::from_secs(2));
    kt("create", &["--partitions", &after.to_string(), "--rf", "3"]);
    let new: Vec<u8> = (0..50)
        .flat_map(|i| format!("new-{i}\n").into_bytes())
        .collect();
    shipper_ok(&b, &["produce", &t], &new);
    signal("-CONT");
    read(1050);
    drop(c);
    let err = std::fs::read(&err_file).unwrap();
    let printed = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        printed.lines().filter(|l| l.starts_with("new-")).count(),
        50
    );
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("was deleted and created again"), "{err}");
    if after < before {
        assert!(
            err.contains(&format!(
                "was created again with {after} partition(s): partition(s) {after} no longer exist"
            )),
            "{err}"
        );
    }
}

#[test]
fn help_of_every_command_shows_an_example() {
    for cmd in ["produce", "consume", "metadata"] {
        let out = std::process::Command::new(shipper_bin())
            .args([cmd, "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(
            text.contains("Examples:") && text.contains(&format!("shipper {cmd}")),
            "{text}"
        );
    }
}

#[test]
fn metadata_lists_brokers_topics_and_replicas_like_kcat() {
    let Some(c) = cluster() else { return };
    let t = topic("md");
    create_topic(&c, &t, 3, 3, &[]);
    let out = String::from_utf8(shipper_ok(&c, &["metadata", &t], b"")).unwrap();
    assert!(out.contains(" 3 brokers:"), "{out}");
    assert!(
        out.contains(&format!("topic \"{t}\" with 3 partitions:")),
        "{out}"
    );
    assert_eq!(out.matches("replicas: ").count(), 3, "{out}");
    let json = String::from_utf8(shipper_ok(&c, &["metadata", &t, "-J"], b"")).unwrap();
    assert!(json.starts_with("{\"cluster_id\":"), "{json}");
    assert_eq!(json.matches("\"partition\":").count(), 3, "{json}");
}

#[test]
fn produce_without_idempotence_and_with_acks_1_and_0_writes_every_line() {
    let Some(b) = broker() else { return };
    for extra in [
        &["--no-idempotence"][..],
        &["--acks", "1"],
        &["--acks", "0"],
    ] {
        let t = topic("acks");
        let mut args = vec!["produce", &t[..]];
        args.extend_from_slice(extra);
        let out = shipper(&b, &args, &sample_lines(500));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        // Nothing is acknowledged with acks=0, and the summary does not claim it.
        assert_eq!(
            extra == ["--acks", "0"],
            err.contains("500 records sent, 0 failed (--acks 0: Kafka does not answer"),
            "{err}"
        );
        let got = kcat(&b, &["-C", "-t", &t, "-e", "-q"], b"");
        assert_eq!(got, sample_lines(500), "{extra:?}");
    }
}

#[test]
fn timestamps_survive_and_kcat_sees_the_same_ones() {
    let Some(b) = broker() else { return };
    let t = topic("ts");
    let before = shipper::producer::timestamp_now_ms();
    shipper_ok(&b, &["produce", &t], b"a\nb\n");
    let after = shipper::producer::timestamp_now_ms();
    let ours = shipper_ok(
        &b,
        &["consume", &t, "--from-beginning", "-e", "-f", "%T\\n"],
        b"",
    );
    let theirs = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "%T\n"], b"");
    assert_eq!(ours, theirs);
    for l in lines(&ours) {
        let ts: i64 = String::from_utf8(l).unwrap().parse().unwrap();
        assert!(
            (before..=after).contains(&ts),
            "{ts} not in {before}..{after}"
        );
    }
}

#[test]
fn a_broker_given_by_host_name_resolves() {
    let Some(b) = broker() else { return };
    let port = b.rsplit(':').next().unwrap();
    let t = topic("hostname");
    let named = format!("localhost:{port}");
    shipper_ok(&named, &["produce", &t], b"via localhost\n");
    assert_eq!(
        shipper_ok(&named, &["consume", &t, "--from-beginning", "-e"], b""),
        b"via localhost\n"
    );
}

/// Lines of many lengths (some longer than 1,000 bytes, some empty, some CRLF) across several 4 MiB map
/// regions, ending without a newline.
fn uneven_lines(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let len = if i == n / 2 { 5000 } else { (i * 37) % 1500 };
        let c = b'a' + (i % 26) as u8;
        v.extend(std::iter::repeat_n(c, len));
        v.extend_from_slice(format!(" #{i}").as_bytes());
        v.extend_from_slice(if i % 7 == 0 { b"\r\n" } else { b"\n" });
        if i % 50 == 0 {
            v.push(b'\n');
        }
    }
    v.extend_from_slice(b"last line without a newline");
    v
}

#[test]
fn many_lines_too_large_to_send_are_said_five_times_and_listed_once() {
    let Some(b) = broker() else { return };
    let t = topic("produce-many-big");
    create_topic(&b, &t, 1, 1, &[]);
    // 20 lines too large for a 2000-byte batch, each between two that fit.
    let mut input = String::new();
    for i in 0..20 {
        input.push_str(&format!("small {i}\n{}\n", "y".repeat(3000)));
    }
    input.push_str("small 20\n");
    let out = shipper(
        &b,
        &[
            "produce",
            &t,
            "--max-line-bytes",
            "5000",
            "--max-message-bytes",
            "2000",
        ],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // Each failure used to print its own line, unbounded: five are said, then one line for the rest.
    assert_eq!(err.matches("; not sent").count(), 5, "{err}");
    assert_eq!(err.matches("more records failed").count(), 1, "{err}");
    assert!(err.contains("20 failed (20 too large to send)"), "{err}");
    assert!(err.contains("lines not written: 2, 4, 6, 8, "), "{err}");
    let got = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "%s\n"], b"");
    assert_eq!(String::from_utf8_lossy(&got).lines().count(), 21);
}

#[test]
fn records_over_a_megabyte_go_to_a_topic_that_takes_them_with_max_message_bytes() {
    let Some(b) = broker() else { return };
    let t = topic("produce-big");
    create_topic(&b, &t, 1, 1, &["max.message.bytes=6000000"]);
    let line = format!("{}\n", "x".repeat(2_000_000));
    let out = shipper(
        &b,
        &["produce", &t, "--max-line-bytes", "3000000"],
        line.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raise --max-message-bytes"), "{err}");
    // Not sent, so not counted as sent, and named (t31: "1 records sent", no line named).
    assert!(
        err.contains("0 records sent, 0 acked, 1 failed (1 too large to send)"),
        "{err}"
    );
    assert!(err.contains("lines not written: 1\n"), "{err}");
    shipper_ok(
        &b,
        &[
            "produce",
            &t,
            "--max-line-bytes",
            "3000000",
            "--max-message-bytes",
            "5000000",
        ],
        line.as_bytes(),
    );
    let got = kcat(
        &b,
        &[
            "-C",
            "-t",
            &t,
            "-e",
            "-q",
            "-X",
            "fetch.message.max.bytes=10000000",
        ],
        b"",
    );
    assert_eq!(got.len(), line.len(), "kcat reads the 2 MB record");
    let got = shipper_ok(&b, &["consume", &t, "--from-beginning", "-e"], b"");
    assert_eq!(got, line.as_bytes());
}

#[test]
fn sigterm_or_sigint_stops_produce_after_what_was_read_is_delivered() {
    use std::io::Write;
    let Some(b) = broker() else { return };
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let t = topic(&format!("produce-sig{sig}"));
        // A long linger: without the flush at the signal, the lines would still wait in the batch.
        let mut child = Command::new(shipper_bin())
            .args(["-b", &b, "produce", &t, "--linger-ms", "10000"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"1\n2\n3\nunfinished").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert!(
            err.contains(&format!("stopped by SIG{sig} after 3 lines")),
            "{err}"
        );
        // A stop asked for, with every line read delivered, is not called an error.
        assert!(!err.contains("error"), "{err}");
        assert_eq!(
            topic_values(&b, &t),
            vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
        );
    }
}

/// `-H key` alone is a header with a null value, as kcat writes it; `key=` an empty one.
#[test]
fn produce_writes_null_and_empty_header_values_as_kcat_does() {
    let Some(b) = broker() else { return };
    let t = topic("produce-nullhdr");
    shipper_ok(
        &b,
        &["produce", &t, "-H", "h1=v1", "-H", "h2", "-H", "h3="],
        b"a\n",
    );
    let got = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-f", "%h|%s\n"], b"");
    assert_eq!(String::from_utf8_lossy(&got), "h1=v1,h2=NULL,h3=|a\n");
    // A value is bytes as the command line gave them, as kcat takes them; a key that is not UTF-8
    // is refused (exit 2), naming it escaped.
    use std::os::unix::ffi::OsStrExt;
    let raw = |arg: &[u8]| {
        let mut c = Command::new(shipper_bin());
        c.args(["-b", &b, "produce", &t, "-H"])
            .arg(std::ffi::OsStr::from_bytes(arg));
        run_with_input(c, b"b\n")
    };
    let out = raw(b"bin=\xff\xfe\x01");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = kcat(
        &b,
        &["-C", "-t", &t, "-o", "1", "-e", "-q", "-f", "%h|%s\n"],
        b"",
    );
    assert_eq!(got, b"bin=\xff\xfe\x01|b\n");
    let out = raw(b"k\xff=v");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid header key 'k\\xff': not UTF-8"),
        "{err}"
    );
}

/// `-o s@T1 -o e@T2` prints a time window and exits, as kcat does; e@ alone reads from the beginning
/// and stops each partition at its first record of that time.
#[test]
fn an_end_timestamp_stops_each_partition_as_kcat_does() {
    let Some(b) = broker() else { return };
    let t = topic("consume-etime");
    // One partition: as in kcat, a partition with no record that late waits for one (unless -e).
    create_topic(&b, &t, 1, 1, &[]);
    for x in ["a", "b", "c"] {
        let input: String = (0..20).map(|i| format!("{x}-{i}\n")).collect();
        shipper_ok(&b, &["produce", &t], input.as_bytes());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let stamped = shipper_ok(
        &b,
        &["consume", &t, "-o", "beginning", "-e", "-f", "%T %s\n"],
        b"",
    );
    let stamped = String::from_utf8_lossy(&stamped);
    let ts_of = |v: &str| -> i64 {
        let l = stamped.lines().find(|l| l.ends_with(v)).unwrap();
        l.split(' ').next().unwrap().parse().unwrap()
    };
    let (tb, tc) = (ts_of(" b-0"), ts_of(" c-0"));
    let sorted = |out: Vec<u8>| {
        let mut v = lines(&out);
        v.sort();
        v
    };
    let window = [
        "-o".to_string(),
        format!("s@{tb}"),
        "-o".into(),
        format!("e@{tc}"),
    ];
    let mut ours_args = vec!["consume".to_string(), t.clone()];
    ours_args.extend(window.iter().cloned());
    let ours_args: Vec<&str> = ours_args.iter().map(String::as_str).collect();
    let ours = sorted(shipper_ok(&b, &ours_args, b""));
    let mut kc_args = vec!["-C", "-t", &t, "-q", "-f", "%s\n"];
    kc_args.extend(window.iter().map(String::as_str));
    let theirs = sorted(kcat(&b, &kc_args, b""));
    let want: Vec<Vec<u8>> = {
        let mut v: Vec<Vec<u8>> = (0..20).map(|i| format!("b-{i}").into_bytes()).collect();
        v.sort();
        v
    };
    assert_eq!(ours, want);
    assert_eq!(theirs, want);
    // e@ alone, from the beginning: only the a's.
    let e = format!("e@{tb}");
    let first = sorted(shipper_ok(
        &b,
        &["consume", &t, "-o", "beginning", "-o", &e],
        b"",
    ));
    assert_eq!(first.len(), 20);
    assert!(first.iter().all(|l| l.starts_with(b"a-")));
    // With no start, as kcat (whose start is the beginning): the same, not a wait at the end.
    let alone = sorted(shipper_ok(&b, &["consume", &t, "-o", &e], b""));
    assert_eq!(alone, first);
    let theirs = sorted(kcat(
        &b,
        &["-C", "-t", &t, "-q", "-f", "%s\n", "-o", &e],
        b"",
    ));
    assert_eq!(theirs, first);
    // Misuse: two stops, two starts, a stop with a group.
    for args in [
        &["consume", &t, "-o", &e, "-o", &e][..],
        &["consume", &t, "-o", "1", "-o", "2"],
        &["consume", &t, "-G", "g", "-o", &e],
        &["consume", &t, "-o", "e@soon"],
    ] {
        let out = shipper(&b, args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// Usage errors found by the argument parser read like every other error (`shipper: error: ...`,
/// exit 2); help still goes to standard output with exit 0.
#[test]
fn usage_errors_carry_the_shipper_prefix() {
    for args in [
        &["produce"][..],
        &["consume", "t", "-G", "g", "-p", "1"],
        &["consume", "t", "--no-such-flag"],
    ] {
        let out = Command::new(shipper_bin()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("shipper: error: "), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    }
    // A name Kafka could not hold, said before any broker is asked, by every command that takes one
    // (metadata printed the broker's INVALID_TOPIC_EXCEPTION with exit 0, web its bare code).
    for args in [
        &["metadata", ""][..],
        &["metadata", "bad name!"],
        &["web", ""],
        &["consume", "^logs-.*"],
    ] {
        let out = Command::new(shipper_bin())
            .args(["-b", "127.0.0.1:1"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("is not a topic name"), "{args:?}: {err}");
    }
    // A negative count is said to be one (helper-66: "unexpected argument '-1' found").
    let out = Command::new(shipper_bin())
        .args(["consume", "t", "-c", "-1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid value '-1'"), "{err}");
    let help = Command::new(shipper_bin())
        .args(["produce", "--help"])
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("Send lines"));
}

#[test]
fn consume_timeout_ms_counts_from_the_first_answer_and_says_why_it_stopped() {
    // helper-66: `--timeout-ms 1` printed nothing of a topic that had records (the lookups before the
    // first fetch used up the time), and `--timeout-ms 0` did the same; both with exit 0, silently.
    let Some(b) = broker() else { return };
    let t = topic("timeout-ms");
    create_topic(&b, &t, 2, 1, &[]);
    let input = sample_lines(20);
    shipper_ok(&b, &["produce", &t], &input);
    for _ in 0..3 {
        let out = shipper(
            &b,
            &["consume", &t, "--from-beginning", "--timeout-ms", "1"],
            b"",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("no record for 1 ms (--timeout-ms)"), "{err}");
        assert!(!out.stdout.is_empty(), "nothing printed: {err}");
    }
    let out = shipper(&b, &["consume", &t, "--timeout-ms", "0"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--timeout-ms"), "{err}");
}

#[test]
fn a_file_is_produced_through_its_map_exactly_as_through_a_pipe() {
    let Some(b) = broker() else { return };
    let input = uneven_lines(12_000);
    assert!(input.len() > 8 << 20, "several map regions");
    let d = scratch_dir("mapped");
    let path = d.join("in.log");
    std::fs::write(&path, &input).unwrap();
    let read = |t: &str| kcat(&b, &["-C", "-t", t, "-e", "-q", "-f", "%s\n"], b"");
    // Lines over --max-line-bytes are cut, named and fail the run, the same whichever way it reads.
    let cut = |out: &std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("4042 truncated to 1000 bytes (lines 29..42, 71..84, "),
            "{err}"
        );
    };
    let piped = topic("mapped-pipe");
    create_topic(&b, &piped, 1, 1, &[]);
    cut(&shipper(
        &b,
        &["produce", &piped, "--max-line-bytes", "1000"],
        &input,
    ));
    let want = read(&piped);
    assert_eq!(lines(&want).len(), 12_000 + 12_000 / 50 + 1);
    let file = topic("mapped-file");
    create_topic(&b, &file, 1, 1, &[]);
    let p = path.to_str().unwrap();
    cut(&shipper(
        &b,
        &["produce", &file, "--file", p, "--max-line-bytes", "1000"],
        b"",
    ));
    assert!(read(&file) == want, "--file differs from the pipe");
    // stdin redirected from the file is mapped too.
    let redirected = topic("mapped-stdin");
    create_topic(&b, &redirected, 1, 1, &[]);
    let out = std::process::Command::new(shipper_bin())
        .args(["-b", &b, "produce", &redirected, "--max-line-bytes", "1000"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    cut(&out);
    assert!(
        read(&redirected) == want,
        "stdin from a file differs from the pipe"
    );
    // Mapped from where stdin stands (a script read its first line), and left at its end.
    let from_second = topic("mapped-offset");
    create_topic(&b, &from_second, 1, 1, &[]);
    let script = format!(
        "read -r first; {} -b {b} produce {from_second} --max-line-bytes 1000; echo rc=$? >&2; cat",
        shipper_bin().display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rc=1") && err.contains("truncated to 1000 bytes"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "stdin's offset left at its end");
    let all = lines(&want);
    assert!(
        lines(&read(&from_second)) == all[1..],
        "from the second line"
    );
    // Not mapped: a file whose size says 0 but reads hold content (/proc), and a directory.
    let proc_topic = topic("mapped-proc");
    create_topic(&b, &proc_topic, 1, 1, &[]);
    shipper_ok(
        &b,
        &["produce", &proc_topic, "--file", "/proc/version"],
        b"",
    );
    let version = std::fs::read("/proc/version").unwrap();
    assert_eq!(
        lines(&read(&proc_topic)),
        lines(&version),
        "/proc read, not mapped"
    );
    let out = shipper(
        &b,
        &["produce", &proc_topic, "--file", d.to_str().unwrap()],
        b"",
    );
    // A usage error naming it, at once (t28 F5: "cannot read input: Is a directory", exit 1).
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("--file {} is a directory", d.display())) && err.lines().count() == 1,
        "{err}"
    );
    // So is one that does not exist (t29 F8: exit 1).
    let missing = d.join("missing.log");
    let out = shipper(
        &b,
        &["produce", &proc_topic, "--file", missing.to_str().unwrap()],
        b"",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("shipper: error: --file {}: no such file", missing.display())
    );
    // `--file -` is standard input, as for cat and kcat (it was "--file -: no such file").
    let dash = topic("mapped-dash");
    create_topic(&b, &dash, 1, 1, &[]);
    shipper_ok(&b, &["produce", &dash, "--file", "-"], b"from\nstdin\n");
    assert_eq!(lines(&read(&dash)), [b"from".to_vec(), b"stdin".to_vec()]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_file_that_shrinks_while_produced_stops_the_run_and_no_zeros_are_sent() {
    let Some(b) = broker() else { return };
    let d = scratch_dir("shrinks");
    let path = d.join("in.log");
    let input = sample_lines(20_000);
    std::fs::write(&path, &input).unwrap();
    let t = topic("shrinks");
    create_topic(&b, &t, 1, 1, &[]);
    // --sync: one line at a time, so the truncation lands while the file is being read.
    let child = std::process::Command::new(shipper_bin())
        .args(["-b", &b, "produce", &t, "--sync", "--file"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    truncate_in_place(&path);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("shrank while it was read"), "{err}");
    let got = topic_values(&b, &t);
    let all = lines(&input);
    assert!(
        !got.is_empty() && got.len() < all.len(),
        "{} lines",
        got.len()
    );
    assert_eq!(got, all[..got.len()], "a prefix of the file, no zeros");
    assert!(
        err.contains(&format!("{} records sent, {} acked", got.len(), got.len())),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// What consume shows of a topic a transactional Java producer wrote, by default (read_committed, as
/// kcat) and with --isolation-level read_uncommitted (as the Java console consumer), while a
/// transaction is open and after it was aborted; kcat reads the same each time.
#[test]
fn aborted_and_open_transactions_are_shown_as_kcat_shows_them() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let Some(b) = broker() else { return };
    let t = topic("txn");
    create_topic(&b, &t, 1, 1, &[]);
    shipper_ok(&b, &["produce", &t], b"plain-1\n");
    let mut java = Command::new(root().join("scripts/kafka-tool"))
        .arg(root().join("fixtures/java/TxnProducer.java"))
        .args([&b, &t])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(java.stdout.take().unwrap()).lines();
    assert_eq!(said.next().unwrap().unwrap(), "OPEN");
    // A plain record after the open transaction: past the last stable offset until it ends.
    shipper_ok(&b, &["produce", &t], b"plain-2\n");
    let read = |level: &str| {
        let ours = shipper_ok(
            &b,
            &[
                "consume",
                &t,
                "-e",
                "-o",
                "beginning",
                "--isolation-level",
                level,
            ],
            b"",
        );
        let kcats = kcat(
            &b,
            &[
                "-C",
                "-t",
                &t,
                "-e",
                "-o",
                "beginning",
                "-q",
                "-X",
                &format!("isolation.level={level}"),
            ],
            b"",
        );
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&kcats),
            "{level}: shipper vs kcat"
        );
        // The same by kcat's own words.
        let prop = format!("isolation.level={level}");
        let by_x = shipper_ok(
            &b,
            &["consume", &t, "-e", "-o", "beginning", "-X", &prop],
            b"",
        );
        assert_eq!(by_x, ours, "-X {prop}");
        String::from_utf8(ours).unwrap()
    };
    let committed = "plain-1\ncommitted-1\ncommitted-2\ncommitted-3\nafter-abort-1\n";
    assert_eq!(read("read_committed"), committed);
    let all = "plain-1\ncommitted-1\ncommitted-2\ncommitted-3\naborted-1\naborted-2\nafter-abort-1\nopen-1\nplain-2\n";
    assert_eq!(read("read_uncommitted"), all);
    // The default is read_committed.
    let default = shipper_ok(&b, &["consume", &t, "-e", "-o", "beginning"], b"");
    assert_eq!(String::from_utf8(default).unwrap(), committed);
    // shipper web shows what consume shows by default.
    let (mut web, port) = crate::web::start_web(&["-b", &b], &[&t, "--no-auth"]);
    let (code, body) = crate::agent::http_get(port, &format!("/api/records?topic={t}"));
    let _ = web.kill();
    let _ = web.wait();
    assert_eq!(code, 200, "{body}");
    let shown: Vec<&str> = body
        .split("\"value\":\"")
        .skip(1)
        .map(|v| &v[..v.find('"').unwrap()])
        .collect();
    assert_eq!(shown, committed.lines().collect::<Vec<_>>(), "{body}");

    drop(java.stdin.take());
    assert_eq!(said.next().unwrap().unwrap(), "DONE");
    assert!(java.wait().unwrap().success());
    assert_eq!(read("read_committed"), format!("{committed}plain-2\n"));
    assert_eq!(read("read_uncommitted"), all);
}

/// `-e` after its topic was deleted and created again under it: it ends at the new log's end (it
/// waited for ever for the old log's end).
#[test]
fn consume_e_ends_at_the_end_of_a_topic_created_again() {
    use std::io::Read;
    let Some(b) = cluster() else { return };
    let t = topic("recreated-e");
    create_topic(&b, &t, 1, 3, &[]);
    // 20 MB: far more than the pipe and the 1 MiB the consumer queues for its stdout.
    let old: Vec<u8> = (0..200_000)
        .flat_map(|i| format!("old-{i:0>95}\n").into_bytes())
        .collect();
    shipper_ok(&b, &["produce", &t], &old);
    // Its output is not read: it stops, blocked, well inside the old log.
    let mut c = std::process::Command::new(shipper_bin())
        .args(["-b", &b, "consume", &t, "-o", "beginning", "-e"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let kt = |verb: &str, extra: &[&str]| kafka_topic(&b, verb, &t, extra);
    kt("delete", &[]);
    std::thread::sleep(Duration::from_secs(2));
    kt("create", &["--partitions", "1", "--rf", "3"]);
    let new: Vec<u8> = (0..50)
        .flat_map(|i| format!("new-{i}\n").into_bytes())
        .collect();
    shipper_ok(&b, &["produce", &t], &new);
    let mut out = String::new();
    let mut stdout = c.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = c.try_wait().unwrap();
    let _ = c.kill();
    let out = reader.join().unwrap();
    let mut err = String::new();
    let _ = c.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "-e ended: {err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("new-")).count(),
        50,
        "{err}"
    );
    // Its output blocked, not the broker: no broker is said to hang.
    assert!(!err.contains("cannot read"), "{err}");
}

/// Standard input that fails mid-stream (a terminal hung up: EIO): the lines read before it are
/// delivered and summed up, and the run fails saying why (t49: it ended at once with only "cannot
/// read input", the lines in the buffer dropped without a word).
#[test]
fn a_read_error_on_standard_input_delivers_what_was_read_and_says_so() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let Some(b) = broker() else { return };
    let t = topic("readerr");
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the ints given; no name, termios or size.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0);
    // Not inherited: a child holding the master would keep the terminal from hanging up.
    // SAFETY: F_SETFD on the two descriptors openpty just returned; no memory is passed.
    unsafe {
        assert_eq!(libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC), 0);
        assert_eq!(libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC), 0);
    }
    // SAFETY: both descriptors were just opened by openpty and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // Raw: no echo, no line editing; the lines pass as written.
    // SAFETY: tcgetattr/tcsetattr on the open slave with a termios struct owned here.
    unsafe {
        let mut tio: libc::termios = std::mem::zeroed();
        assert_eq!(
            libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(&slave), &mut tio),
            0
        );
        libc::cfmakeraw(&mut tio);
        assert_eq!(
            libc::tcsetattr(std::os::fd::AsRawFd::as_raw_fd(&slave), libc::TCSANOW, &tio),
            0
        );
    }
    let child = Command::new(shipper_bin())
        .args(["produce", "-b", &b, &t])
        .stdin(Stdio::from(slave))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut m = std::fs::File::from(master);
    std::io::Write::write_all(&mut m, b"one\ntwo\nthree\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    drop(m);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("3 records sent, 3 acked")
            && err.contains("cannot read input: ")
            // (glibc says "Input/output error", musl "I/O error".)
            && err.contains("(os error 5); the rest was not read"),
        "{err}"
    );
    assert_eq!(
        topic_values(&b, &t),
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

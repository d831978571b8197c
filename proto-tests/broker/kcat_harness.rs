//! The harness itself, proven with kcat (librdkafka) before our own client is involved.

use crate::harness::*;

#[test]
fn kcat_round_trips_on_the_single_broker() {
    let Some(b) = broker() else { return };
    let t = topic("kcat-rt");
    kcat(&b, &["-P", "-t", &t], b"one\ntwo\nthree\n");
    let out = kcat(&b, &["-C", "-t", &t, "-e", "-q", "-o", "beginning"], b"");
    assert_eq!(
        lines(&out),
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

#[test]
fn kcat_lists_three_brokers_on_the_cluster() {
    let Some(c) = cluster() else { return };
    let out = String::from_utf8(kcat(&c, &["-L"], b"")).unwrap();
    assert!(out.contains(" 3 brokers:"), "{out}");
    for port in [9192, 9193, 9194] {
        assert!(out.contains(&format!("127.0.0.1:{port}")), "{out}");
    }
}

//! Connection behaviour against the fake broker.

use kafka_protocol::messages::ApiKey;

use super::*;
use crate::testkit::{FakeBroker, Misbehave};

fn opts() -> ConnectionOptions {
    ConnectionOptions {
        request_timeout: Duration::from_secs(5),
        ..ConnectionOptions::default()
    }
}

async fn connected(t: &crate::testkit::FakeTransport, broker: &FakeBroker) -> Connection {
    let until = Instant::now() + Duration::from_secs(5);
    Connection::connect(t, &broker.addr(1), &opts(), until)
        .await
        .unwrap()
}

/// Connects to `broker` as alice with SASL `mechanism` and `password`.
async fn sasl_connect(
    broker: &FakeBroker,
    mechanism: Mechanism,
    password: &str,
) -> std::result::Result<Connection, ConnError> {
    let o = ConnectionOptions {
        sasl: Some(Arc::new(SaslSettings {
            mechanism,
            username: "alice".into(),
            password: crate::secret::Secret::new(password),
        })),
        ..opts()
    };
    let until = Instant::now() + Duration::from_secs(5);
    Connection::connect(&broker.transport(), &broker.addr(1), &o, until).await
}

/// A request whose deadline has passed is not sent: the connection stays open for the others, and
/// the error says no time was left (t30 F1: "no response to FindCoordinator within 0 ms", and the
/// connection closed).
#[tokio::test(start_paused = true)]
async fn a_request_past_its_deadline_is_not_sent_and_closes_nothing() {
    let broker = FakeBroker::new(1);
    let t = broker.transport();
    let conn = connected(&t, &broker).await;
    let before = broker.requests(ApiKey::Metadata);
    let req = kafka_protocol::messages::MetadataRequest::default();
    let until = Instant::now();
    tokio::time::advance(Duration::from_millis(1)).await;
    let e = conn.call(&req, 12, until).await.unwrap_err();
    assert!(matches!(e, ConnError::Timeout { ms: 0, .. }), "{e}");
    assert!(
        e.to_string().contains("no time was left to send Metadata"),
        "{e}"
    );
    assert!(!conn.is_closed());
    let later = conn.request_deadline(None);
    assert!(conn.call(&req, 12, later).await.is_ok());
    assert_eq!(broker.requests(ApiKey::Metadata) - before, 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_broker_times_out_and_the_connection_is_closed_not_leaked() {
    let broker = FakeBroker::new(1);
    let t = broker.transport();
    let conn = connected(&t, &broker).await;
    broker.misbehave(Misbehave::Silent);
    let req = kafka_protocol::messages::MetadataRequest::default();
    let until = conn.request_deadline(None);
    let e = conn.call(&req, 12, until).await.unwrap_err();
    assert!(matches!(e, ConnError::Timeout { .. }), "{e}");
    assert!(conn.is_closed());
    // The fake broker sees the stream closed: nothing of the connection is left.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(broker.open_streams(), 0);
}

#[tokio::test]
async fn a_response_to_another_request_closes_the_connection() {
    let broker = FakeBroker::new(1);
    let t = broker.transport();
    let conn = connected(&t, &broker).await;
    broker.misbehave(Misbehave::WrongCorrelationId);
    let req = kafka_protocol::messages::MetadataRequest::default();
    let e = conn
        .call(&req, 12, conn.request_deadline(None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("correlation id"), "{e}");
    assert!(conn.is_closed());
}

#[tokio::test]
async fn an_oversized_metadata_frame_is_refused_before_it_is_buffered() {
    let broker = FakeBroker::new(1);
    let t = broker.transport();
    let conn = connected(&t, &broker).await;
    broker.misbehave(Misbehave::FrameSize(200 * 1024 * 1024));
    let req = kafka_protocol::messages::MetadataRequest::default();
    let e = conn
        .call(&req, 12, conn.request_deadline(None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn sessions_are_renewed_in_line_without_dropping_requests_in_flight() {
    let broker = FakeBroker::new(1);
    broker.require_sasl("alice", "wonder", 1000);
    let conn = sasl_connect(&broker, Mechanism::Plain, "wonder")
        .await
        .unwrap();
    let req = kafka_protocol::messages::MetadataRequest::default();
    // Keep requests in flight while sessions expire under them, for 10 sessions.
    let mut pending = std::collections::VecDeque::new();
    for _ in 0..100 {
        let until = conn.request_deadline(None);
        pending.push_back(conn.send(&req, 12, true, until).await.unwrap());
        if pending.len() > 3 {
            let p = pending.pop_front().unwrap();
            conn.wait(p, conn.request_deadline(None)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while let Some(p) = pending.pop_front() {
        conn.wait(p, conn.request_deadline(None)).await.unwrap();
    }
    assert!(!conn.is_closed());
    let auths = broker.requests(ApiKey::SaslAuthenticate);
    assert!(
        (9..=13).contains(&auths),
        "{auths} authentications for 10 s of 1 s sessions"
    );
}

/// A renewal the broker refuses (the password was changed since the connection authenticated)
/// closes the connection: requests fail with the reason instead of going out unauthenticated, and
/// the refused renewal is not tried again on it.
#[tokio::test(start_paused = true)]
async fn a_failed_renewal_closes_the_connection_and_is_not_tried_again_on_it() {
    let broker = FakeBroker::new(1);
    broker.require_sasl("alice", "wonder", 1000);
    let conn = sasl_connect(&broker, Mechanism::Plain, "wonder")
        .await
        .unwrap();
    let req = kafka_protocol::messages::MetadataRequest::default();
    let p = conn
        .send(&req, 12, true, conn.request_deadline(None))
        .await
        .unwrap();
    conn.wait(p, conn.request_deadline(None)).await.unwrap();
    broker.require_sasl("alice", "changed", 1000);
    let mut failed = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let until = conn.request_deadline(None);
        let r = match conn.send(&req, 12, true, until).await {
            Ok(p) => conn.wait(p, until).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            failed = Some(e);
            break;
        }
    }
    assert!(failed.is_some(), "requests went on after a refused renewal");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(conn.is_closed());
    assert_eq!(
        broker.requests(ApiKey::SaslAuthenticate),
        2,
        "the first authentication and one refused renewal"
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_error_naming_the_user() {
    let broker = FakeBroker::new(1);
    broker.require_sasl("alice", "wonder", 0);
    let e = sasl_connect(&broker, Mechanism::Plain, "guess")
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, ConnError::Auth { .. }) && !e.is_retriable(),
        "{e}"
    );
    assert!(
        text.contains("'alice'") && !text.contains("guess"),
        "{text}"
    );
}

#[tokio::test]
async fn a_mechanism_the_broker_does_not_offer_is_named_with_what_it_offers() {
    let broker = FakeBroker::new(1);
    broker.require_sasl("alice", "wonder", 0);
    let e = sasl_connect(&broker, Mechanism::ScramSha256, "wonder")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("not enabled on the broker (it offers: PLAIN)"),
        "{e}"
    );
}

#[test]
fn a_large_frame_s_memory_carries_a_later_frame_once_its_reader_dropped_it() {
    use bytes::{Bytes, BytesMut};
    let mut spent = super::SpentFrames::default();
    let mut buf = BytesMut::from(&[0u8, 8, 0, 0, 1, 2][..]);
    spent.make_room(&mut buf, 1 << 19);
    assert_eq!(buf.capacity(), 1 << 20, "new memory in whole MiB");
    buf.resize(4 + (1 << 19), 7);
    let frame: Bytes = buf.split_to(4 + (1 << 19)).freeze().slice(4..);
    let at = frame.as_ptr();
    spent.keep(&frame);
    // Still held by its reader: the next frame gets memory of its own.
    let mut next = BytesMut::from(&[0u8, 8, 0, 0, 3][..]);
    spent.make_room(&mut next, 1 << 19);
    assert_ne!(next.as_ptr(), at);
    // The reader's buffer moved on to other memory (as `next` did); the frame's reader is done.
    drop(buf);
    drop(frame);
    let mut third = BytesMut::from(&[0u8, 8, 0, 0, 5][..]);
    spent.make_room(&mut third, 1 << 19);
    assert_eq!(third.as_ptr(), at, "the dropped frame's memory is reused");
    assert_eq!(
        &third[..],
        &[0u8, 8, 0, 0, 5],
        "with the bytes read so far moved over"
    );
    assert!(third.capacity() >= 5 + (1 << 19));
}

/// A first answer's size is not trusted for memory before it was judged (4-7 bytes of it had up to
/// 2 GiB reserved); once judged, or on a later frame (whose size next_frame checked), it is.
#[test]
fn no_room_is_made_for_a_first_answer_whose_size_was_not_judged_yet() {
    assert_eq!(room_needed(&[0x7f, 0xff, 0xff, 0xff, 0], true), None);
    assert_eq!(room_needed(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0], true), None);
    assert_eq!(room_needed(&[0, 0, 1, 0, 0, 0, 0, 1], true), Some(252));
    assert_eq!(room_needed(&[0, 0, 1, 0, 0], false), Some(255));
}

#[test]
fn first_bytes_that_cannot_begin_a_kafka_response_are_named() {
    let http = not_kafka(b"HTTP/1.1 400 Bad Request\r\nServer: x\r\n").unwrap();
    assert!(
        http.contains("in HTTP (\"HTTP/1.1 400 Bad Request\")"),
        "{http}"
    );
    let ssh = not_kafka(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    assert!(ssh.contains("begins \"SSH-2.0-OpenSSH_9.2\""), "{ssh}");
    // Binary bytes are shown as the size they announce and in hex, on one line.
    let odd = not_kafka(&[0x7f, 0xff, 0x1b, b'[', 0, 0, 0, 1]).unwrap();
    assert!(
        odd.contains("announces a frame of 2147425115 bytes (it begins 7f ff 1b 5b 00 00 00 01)"),
        "{odd}"
    );
    assert!(!odd.contains('\u{1b}'), "{odd}");
    let huge = not_kafka(&[6, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert!(huge.contains("a frame of 104857600 bytes"), "{huge}");
    assert!(!huge.contains("\\u"), "{huge}");
    // A real first answer: a small size, then a correlation id.
    assert_eq!(not_kafka(&[0, 0, 1, 44, 0, 0, 0, 1, 0, 0]), None);
    assert_eq!(not_kafka(&[3, 255, 255, 255, 0, 0, 0, 1]), None);
    assert!(not_kafka(&[4, 0, 0, 0, 0, 0, 0, 1]).is_some());
    assert!(not_kafka(&[0x80, 0, 0, 0, 0, 0, 0, 1]).is_some());
}

/// A negative size is judged as soon as its four bytes are in; any other first answer waits for
/// its correlation id too.
#[test]
fn a_negative_first_size_is_judged_without_waiting_for_more_bytes() {
    assert!(judgeable(&[0xff, 0xff, 0xff, 0xff]));
    assert!(judgeable(&[0x80, 0, 0, 0, 1]));
    assert!(!judgeable(&[0xff, 0xff, 0xff]));
    assert!(!judgeable(&[0, 0, 1, 44]));
    assert!(!judgeable(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0]));
    assert!(judgeable(&[0, 0, 1, 44, 0, 0, 0, 1]));
    let said = not_kafka(&[0xff, 0xff, 0xff, 0xfe]).unwrap();
    assert!(
        said.contains("a frame of -2 bytes (it begins ff ff ff fe)"),
        "{said}"
    );
}

#[tokio::test]
async fn a_broker_without_an_api_is_named_and_a_listener_without_metadata_is_no_broker() {
    let broker = FakeBroker::new(1);
    let t = broker.transport();
    let mut conn = connected(&t, &broker).await;
    conn.versions.remove(&(ApiKey::DescribeProducers as i16));
    let e = conn
        .version::<kafka_protocol::messages::DescribeProducersRequest>(VersionRange {
            min: 0,
            max: 0,
        })
        .unwrap_err();
    assert!(matches!(e, ConnError::MissingApi { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("does not offer the DescribeProducers API"),
        "{e}"
    );
    conn.versions.remove(&(ApiKey::Metadata as i16));
    let e = conn
        .version::<kafka_protocol::messages::MetadataRequest>(VersionRange { min: 9, max: 12 })
        .unwrap_err();
    assert!(matches!(e, ConnError::NotKafka { .. }), "{e}");
    assert!(!e.is_retriable());
}

#[tokio::test]
async fn a_listener_that_closes_at_the_first_request_after_api_versions_says_sasl() {
    let broker = FakeBroker::new(1);
    let t = broker.transport();
    let conn = connected(&t, &broker).await;
    broker.misbehave(Misbehave::DropOn(ApiKey::Metadata));
    let req = kafka_protocol::messages::MetadataRequest::default();
    let e = conn
        .call(&req, 12, conn.request_deadline(None))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnError::ClosedAfterVersions { .. }), "{e}");
    assert!(e.to_string().contains("a SASL listener?"), "{e}");
}

/// A broker that answered a request after ApiVersions before, and now closes a new connection at
/// its first request after ApiVersions, is no SASL listener (t19 F6: a fetch connection cut by a
/// proxy was blamed on SASL).
#[tokio::test]
async fn a_close_after_api_versions_from_a_broker_that_served_before_is_no_sasl_hint() {
    let broker = FakeBroker::new(1);
    let t = broker.transport();
    let first = connected(&t, &broker).await;
    let req = kafka_protocol::messages::MetadataRequest::default();
    first
        .call(&req, 12, first.request_deadline(None))
        .await
        .unwrap();
    drop(first);
    let conn = connected(&t, &broker).await;
    broker.misbehave(Misbehave::DropOn(ApiKey::Metadata));
    let e = conn
        .call(&req, 12, conn.request_deadline(None))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnError::Closed { .. }), "{e}");
    assert!(!e.to_string().contains("SASL"), "{e}");
}

/// A broker that answered before and now closes connections before answering (a proxy cut off, a
/// broker restarting) is not asked whether it wants TLS or SASL (t17: said in 3 outages of 5).
#[tokio::test]
async fn a_close_before_the_first_answer_from_a_broker_that_answered_before_is_no_tls_hint() {
    let broker = FakeBroker::new(1);
    let t = broker.transport();
    let first = connected(&t, &broker).await;
    drop(first);
    broker.misbehave(Misbehave::DropOn(ApiKey::ApiVersions));
    let until = Instant::now() + Duration::from_secs(5);
    let e = match Connection::connect(&t, &broker.addr(1), &opts(), until).await {
        Err(e) => e,
        Ok(_) => panic!("connected"),
    };
    assert!(matches!(e, ConnError::Closed { .. }), "{e}");
    assert!(!e.to_string().contains("TLS or SASL"), "{e}");
}

/// A refused connection to an address that answered before is a broker restarting or down, not a
/// wrong -b (t21: "check -b/--brokers" at every restart of a cluster's node).
#[test]
fn a_refused_connection_to_a_broker_that_answered_says_so() {
    let refused = |addr: &str| {
        ConnError::Connect {
            addr: addr.into(),
            detail: "Connection refused".into(),
        }
        .to_string()
    };
    let e = refused("10.9.9.9:9092");
    assert!(e.contains("check -b/--brokers"), "{e}");
    note_answered("10.9.9.9:9092");
    let e = refused("10.9.9.9:9092");
    assert!(
        e.contains("a broker of the cluster: restarting, or down?"),
        "{e}"
    );
    assert!(!e.contains("check -b"), "{e}");
}

/// A request waiting for its answer when another request's timeout closes the connection may have
/// been written: a Produce waiting behind a Metadata that timed out was told it was never sent (the
/// Metadata's timeout named another API than its own), and its sequence numbers were given again.
#[tokio::test(start_paused = true)]
async fn a_request_waiting_when_another_one_times_out_may_have_been_sent() {
    let broker = FakeBroker::new(1);
    let t = broker.transport();
    let conn = Arc::new(connected(&t, &broker).await);
    broker.misbehave_times(Misbehave::Silent, 2);
    // The first waits long, the second times out first and closes the connection.
    let long = conn.clone();
    let first = tokio::spawn(async move {
        let req = kafka_protocol::messages::ListOffsetsRequest::default();
        let until = Instant::now() + Duration::from_secs(60);
        let pending = long.send(&req, 7, true, until).await.unwrap();
        long.wait(pending, until).await.unwrap_err()
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let req = kafka_protocol::messages::MetadataRequest::default();
    let until = Instant::now() + Duration::from_secs(5);
    let e = conn.call(&req, 12, until).await.unwrap_err();
    assert!(matches!(e, ConnError::Timeout { .. }), "{e}");
    let other = first.await.unwrap();
    assert!(other.may_have_sent("ListOffsets"), "{other}");
    assert!(other.is_retriable(), "{other}");
    assert!(
        other
            .to_string()
            .contains("closed while ListOffsets waited"),
        "{other}"
    );
    // The request that timed out keeps its own error.
    assert!(e.may_have_sent("Metadata"));
}

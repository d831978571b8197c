//! Connection behaviour against the fake broker.

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

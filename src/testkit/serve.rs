//! Serving one stream: frames in, the request header and body decoded, the rules in force applied,
//! the answer (or silence, or a closed stream) out.
//!
//! (`handle` is ~100 lines: one arm per API the fake answers, read as a table of what the fake does.)

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::handlers::{decode, fetch_is_empty, Body, Reply, HOLD_MAX, HOLD_STEP};
use super::{FakeBroker, Misbehave};
use crate::connection::BoxIo;

impl FakeBroker {
    pub(super) fn serve(&self, node: i32, io: BoxIo) {
        let b = self.clone();
        b.lock().open_streams += 1;
        let task = tokio::spawn(async move {
            // Counts the stream closed however the task ends (done, or aborted by `stop`).
            struct Gone(FakeBroker);
            impl Drop for Gone {
                fn drop(&mut self) {
                    self.0.lock().open_streams -= 1;
                }
            }
            let _gone = Gone(b.clone());
            let _ = b.serve_stream(node, io).await;
        });
        if let Some(n) = self.lock().nodes.get_mut(&node) {
            n.tasks.retain(|t| !t.is_finished());
            n.tasks.push(task.abort_handle());
        }
    }

    async fn serve_stream(&self, node: i32, mut io: BoxIo) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        let mut session = Session::default();
        loop {
            while buf.len() < 4 || buf.len() < 4 + (&buf[..4]).get_i32() as usize {
                if io.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
            let size = (&buf[..4]).get_i32() as usize;
            buf.advance(4);
            let frame = buf.split_to(size).freeze();
            let mut held = std::time::Duration::ZERO;
            let reply = loop {
                match self.handle(node, frame.clone(), &mut session, held) {
                    Reply::Wait => {
                        tokio::time::sleep(HOLD_STEP).await;
                        held += HOLD_STEP;
                    }
                    r => break r,
                }
            };
            match reply {
                Reply::Bytes(out) => io.write_all(&out).await?,
                Reply::Later(out, wait) => {
                    tokio::time::sleep(wait).await;
                    io.write_all(&out).await?;
                }
                Reply::Nothing => {}
                Reply::Hang => {
                    // Silent, but notice when the client closes its end.
                    let mut sink = [0u8; 4096];
                    while io.read(&mut sink).await? > 0 {}
                    return Ok(());
                }
                Reply::Close | Reply::Wait => return Ok(()),
            }
        }
    }

    /// Answers one request; `held` is how long it has been held already (counted once, not per look).
    fn handle(
        &self,
        node: i32,
        mut frame: Bytes,
        session: &mut Session,
        held: std::time::Duration,
    ) -> Reply {
        if frame.len() < 8 {
            return Reply::Close;
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        if held.is_zero() {
            *self.lock().requests.entry(key).or_default() += 1;
        }
        let Ok(api) = ApiKey::try_from(key) else {
            return Reply::Close;
        };
        let header_version = api.request_header_version(version);
        let Ok(header) = RequestHeader::decode(&mut frame, header_version) else {
            return Reply::Close;
        };
        if !self.sasl_allows(api, session) {
            return Reply::Close;
        }
        if api == ApiKey::SyncGroup && held < HOLD_MAX {
            let req = decode::<SyncGroupRequest>(&mut frame.clone(), version);
            if req.is_some_and(|r| self.sync_must_wait(&r)) {
                return Reply::Wait;
            }
        }
        if self
            .take_rule(|m| *m == Misbehave::Silent || *m == Misbehave::SilentOn(api))
            .is_some()
        {
            return Reply::Hang;
        }
        if self.take_rule(|m| *m == Misbehave::DropOn(api)).is_some() {
            return Reply::Close;
        }
        if let Some(Misbehave::FrameSize(n) | Misbehave::FrameSizeOn(_, n)) = self.take_rule(|m| {
            matches!(m, Misbehave::FrameSize(_))
                || matches!(m, Misbehave::FrameSizeOn(a, _) if *a == api)
        }) {
            let mut out = BytesMut::new();
            out.put_i32(n);
            out.put_i32(header.correlation_id);
            return Reply::Bytes(out.freeze());
        }
        let mut correlation_id = header.correlation_id;
        if self
            .take_rule(|m| *m == Misbehave::WrongCorrelationId)
            .is_some()
        {
            correlation_id = correlation_id.wrapping_add(1000);
        }
        let drop_after = self
            .take_rule(|m| *m == Misbehave::DropAfter(api))
            .is_some();
        let mut long_poll = None;
        let body = match api {
            ApiKey::ApiVersions => self.api_versions(),
            ApiKey::Metadata => decode(&mut frame, version).map(|r| self.metadata(r)),
            ApiKey::InitProducerId => Some(self.init_producer_id()),
            ApiKey::CreateTopics => decode(&mut frame, version).map(|r| self.create_topics(r)),
            ApiKey::SaslHandshake => decode::<SaslHandshakeRequest>(&mut frame, version).map(|r| {
                let mut resp = SaslHandshakeResponse::default();
                resp.mechanisms =
                    vec![kafka_protocol::protocol::StrBytes::from_static_str("PLAIN")];
                if r.mechanism.as_str() != "PLAIN" {
                    resp.error_code = 33;
                }
                Body::SaslHandshake(resp)
            }),
            ApiKey::SaslAuthenticate => decode::<SaslAuthenticateRequest>(&mut frame, version)
                .map(|r| self.sasl_authenticate(r, session)),
            ApiKey::Produce => match decode::<ProduceRequest>(&mut frame, version) {
                Some(r) if r.acks == 0 => {
                    self.produce(node, r);
                    return Reply::Nothing;
                }
                Some(r) => Some(self.produce(node, r)),
                None => None,
            },
            ApiKey::ListOffsets => decode(&mut frame, version).map(|r| self.list_offsets(node, r)),
            ApiKey::DescribeProducers => {
                decode(&mut frame, version).map(|r| self.describe_producers(node, r))
            }
            ApiKey::FindCoordinator => {
                decode(&mut frame, version).map(|r| self.find_coordinator(r))
            }
            ApiKey::JoinGroup => decode(&mut frame, version).map(|r| self.join_group(r)),
            ApiKey::SyncGroup => decode(&mut frame, version).map(|r| self.sync_group(r)),
            ApiKey::Heartbeat => decode(&mut frame, version).map(|r| self.heartbeat(r)),
            ApiKey::LeaveGroup => decode(&mut frame, version).map(|r| self.leave_group(r)),
            ApiKey::OffsetCommit => decode(&mut frame, version).map(|r| self.offset_commit(r)),
            ApiKey::OffsetFetch => decode(&mut frame, version).map(|r| self.offset_fetch(r)),
            ApiKey::ConsumerGroupHeartbeat if self.lock().consumer_protocol => {
                decode(&mut frame, version).map(|r| self.consumer_group_heartbeat(r))
            }
            ApiKey::Fetch => match decode::<FetchRequest>(&mut frame, version) {
                Some(r) => {
                    long_poll = Some(std::time::Duration::from_millis(r.max_wait_ms.max(0) as u64));
                    Some(self.fetch(node, r))
                }
                None => None,
            },
            _ => None,
        };
        let Some(body) = body else {
            return Reply::Close;
        };
        if drop_after {
            return Reply::Close;
        }
        let mut out = BytesMut::new();
        out.put_i32(0);
        let hv = api.response_header_version(version);
        let mut rh = ResponseHeader::default();
        rh.correlation_id = correlation_id;
        if rh.encode(&mut out, hv).is_err() {
            return Reply::Close;
        }
        if self.take_rule(|m| *m == Misbehave::Garbage(api)).is_some() {
            out.put_slice(&[0xff; 7]);
        } else if body.encode(&mut out, version).is_err() {
            return Reply::Close;
        }
        let size = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        match (long_poll, &body) {
            (Some(wait), Body::Fetch(r)) if fetch_is_empty(r) => Reply::Later(out.freeze(), wait),
            _ => Reply::Bytes(out.freeze()),
        }
    }

    /// Whether a request of `api` may be served on this stream: SASL first when required, and
    /// nothing but SASL once the session ended.
    fn sasl_allows(&self, api: ApiKey, session: &Session) -> bool {
        if self.lock().sasl.is_none()
            || matches!(
                api,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            )
        {
            return true;
        }
        session.authenticated && session.ends.is_none_or(|t| tokio::time::Instant::now() < t)
    }

    fn sasl_authenticate(&self, r: SaslAuthenticateRequest, session: &mut Session) -> Body {
        let mut resp = SaslAuthenticateResponse::default();
        let Some((user, pass, ms)) = self.lock().sasl.clone() else {
            resp.error_code = 34;
            return Body::SaslAuthenticate(resp);
        };
        if r.auth_bytes.as_ref() != format!("\0{user}\0{pass}").as_bytes() {
            resp.error_code = 58;
            resp.error_message = Some(kafka_protocol::protocol::StrBytes::from_static_str(
                "Authentication failed: Invalid username or password",
            ));
            return Body::SaslAuthenticate(resp);
        }
        session.authenticated = true;
        session.ends = (ms > 0)
            .then(|| tokio::time::Instant::now() + std::time::Duration::from_millis(ms as u64));
        resp.session_lifetime_ms = ms;
        Body::SaslAuthenticate(resp)
    }
}

/// One stream's SASL state.
#[derive(Debug, Default)]
pub(super) struct Session {
    authenticated: bool,
    ends: Option<tokio::time::Instant>,
}

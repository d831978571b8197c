//! The one place that calls kafka-protocol's message codecs; its `anyhow` errors become [`CodecError`].
//!
//! Requests are written with their size prefix straight into the connection's output buffer; responses
//! are decoded from one frame. See <https://kafka.apache.org/protocol#protocol_messages>.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::validate;

/// A message that kafka-protocol could not encode or decode.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{api} v{version}: cannot {action}: {detail}")]
pub struct CodecError {
    /// Which API's message.
    pub api: &'static str,
    /// The API version used.
    pub version: i16,
    /// "encode the request" or "decode the response".
    pub action: &'static str,
    /// What went wrong, from the codec.
    pub detail: String,
    /// The response is well formed but larger than shipper accepts (retrying will not help).
    pub too_large: bool,
}

/// The printable name of an API key, for errors and logs.
pub fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::Fetch) => "Fetch",
        Ok(ApiKey::ListOffsets) => "ListOffsets",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::ApiVersions) => "ApiVersions",
        Ok(ApiKey::InitProducerId) => "InitProducerId",
        Ok(ApiKey::SaslHandshake) => "SaslHandshake",
        Ok(ApiKey::SaslAuthenticate) => "SaslAuthenticate",
        Ok(ApiKey::FindCoordinator) => "FindCoordinator",
        Ok(ApiKey::JoinGroup) => "JoinGroup",
        Ok(ApiKey::SyncGroup) => "SyncGroup",
        Ok(ApiKey::Heartbeat) => "Heartbeat",
        Ok(ApiKey::LeaveGroup) => "LeaveGroup",
        Ok(ApiKey::OffsetCommit) => "OffsetCommit",
        Ok(ApiKey::OffsetFetch) => "OffsetFetch",
        Ok(ApiKey::DescribeGroups) => "DescribeGroups",
        Ok(ApiKey::ListGroups) => "ListGroups",
        Ok(ApiKey::ConsumerGroupHeartbeat) => "ConsumerGroupHeartbeat",
        Ok(ApiKey::ConsumerGroupDescribe) => "ConsumerGroupDescribe",
        Ok(ApiKey::DescribeProducers) => "DescribeProducers",
        _ => "request",
    }
}

/// Largest response frame accepted for a request of API `key`: what a sane broker can send for the
/// requests shipper makes, so a corrupt or hostile size never makes us buffer more. Fetch is bounded by
/// the consumer's `max_bytes` (at most 64 MiB) plus one oversized batch (KIP-74).
pub fn max_response_bytes(key: i16) -> usize {
    const MIB: usize = 1024 * 1024;
    match ApiKey::try_from(key) {
        Ok(ApiKey::Fetch) => 128 * MIB,
        Ok(ApiKey::Metadata) => 32 * MIB,
        Ok(ApiKey::Produce | ApiKey::ListOffsets | ApiKey::OffsetFetch | ApiKey::OffsetCommit) => {
            16 * MIB
        }
        Ok(ApiKey::DescribeGroups | ApiKey::ListGroups | ApiKey::ConsumerGroupDescribe) => 16 * MIB,
        Ok(ApiKey::JoinGroup | ApiKey::SyncGroup | ApiKey::ConsumerGroupHeartbeat) => 16 * MIB,
        _ => MIB,
    }
}

/// Largest memory kafka-protocol may take to decode a response of API `key` (an estimate from the
/// structure walk, see [`validate::check_body`]): a response small on the wire can still describe a
/// million partitions, each a struct with vectors.
pub fn max_decoded_bytes(key: i16) -> usize {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Metadata) => 64 * 1024 * 1024,
        _ => 256 * 1024 * 1024,
    }
}

/// Appends `req` as one size-prefixed frame (request header, then body) to `out`.
pub fn encode_request<R: Request>(
    out: &mut BytesMut,
    req: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> Result<(), CodecError> {
    let err = |e: anyhow::Error| CodecError {
        api: api_name(R::KEY),
        version,
        action: "encode the request",
        detail: format!("{e:#}"),
        too_large: false,
    };
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(client_id.clone());
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version).map_err(err)?
        + req.compute_size(version).map_err(err)?;
    let size = i32::try_from(size).map_err(|_| err(anyhow::anyhow!("request of {size} bytes")))?;
    out.reserve(4 + size as usize);
    out.put_i32(size);
    header.encode(out, header_version).map_err(err)?;
    req.encode(out, version).map_err(err)?;
    Ok(())
}

/// Reads the correlation id at the front of a response frame, without decoding anything else.
pub fn peek_correlation_id(frame: &[u8]) -> Option<i32> {
    let b = frame.get(..4)?;
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a response frame (header and body) for request type `R` at `version`.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
) -> Result<R::Response, CodecError> {
    let err = |e: anyhow::Error| CodecError {
        api: api_name(R::KEY),
        version,
        action: "decode the response",
        detail: format!("{e:#}"),
        too_large: false,
    };
    let header_version = <R::Response as HeaderVersion>::header_version(version);
    let header_len = match header_version {
        0 => 4,
        _ => validate::check_header_v1(&frame).map_err(|e| err(anyhow::anyhow!(e)))?,
    };
    let api = ApiKey::try_from(R::KEY).map_err(|_| err(anyhow::anyhow!("unknown API key")))?;
    let decoded = validate::check_body(api, version, frame.get(header_len..).unwrap_or_default())
        .map_err(|e| err(anyhow::anyhow!(e)))?;
    let limit = max_decoded_bytes(R::KEY);
    if decoded > limit {
        return Err(CodecError {
            too_large: true,
            ..err(anyhow::anyhow!(
                "decoding it would take about {} MiB (limit {} MiB): ask for fewer topics",
                decoded >> 20,
                limit >> 20
            ))
        });
    }
    ResponseHeader::decode(&mut frame, header_version).map_err(err)?;
    let body = <R::Response as Decodable>::decode(&mut frame, version).map_err(err)?;
    Ok(body)
}

/// Decodes an ApiVersions response body (its header is always v0: 4 bytes, already removed).
pub fn decode_api_versions(
    mut body: Bytes,
    version: i16,
) -> Result<kafka_protocol::messages::ApiVersionsResponse, CodecError> {
    let err = |detail: String| CodecError {
        api: "ApiVersions",
        version,
        action: "decode the response",
        detail,
        too_large: false,
    };
    let decoded = validate::check_body(ApiKey::ApiVersions, version, &body).map_err(err)?;
    if decoded > max_decoded_bytes(ApiKey::ApiVersions as i16) {
        return Err(err(format!("decoding it would take {} MiB", decoded >> 20)));
    }
    kafka_protocol::messages::ApiVersionsResponse::decode(&mut body, version)
        .map_err(|e| err(format!("{e:#}")))
}

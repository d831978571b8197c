//! Errors of the client layers, classified once (see DESIGN-NOTES: retriable, fatal for a batch, fatal
//! for the run).

use std::io;

use kafka_protocol::error::ResponseError;

use crate::wire::codec::CodecError;
use crate::wire::compression::CompressionError;
use crate::wire::frame::FrameError;
use crate::wire::records::RecordError;

/// Result alias for the client layers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the client layers can fail with. Each variant names the broker, topic or partition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No TCP connection could be made.
    #[error(
        "cannot connect to broker {addr}: {source} (is Kafka running there? check -b/--brokers)"
    )]
    Connect {
        /// The address tried.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// A host name did not resolve.
    #[error("cannot resolve broker address {addr}: {detail}")]
    Resolve {
        /// The address.
        addr: String,
        /// The resolver's message.
        detail: String,
    },
    /// Reading or writing the socket failed.
    #[error("broker {addr}: connection error: {source}")]
    Io {
        /// The broker address.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// The broker closed the connection.
    #[error("broker {addr} closed the connection")]
    Closed {
        /// The broker address.
        addr: String,
    },
    /// No response came in time.
    #[error("broker {addr}: no response to {api} within {ms} ms")]
    Timeout {
        /// The broker address.
        addr: String,
        /// The request's API.
        api: &'static str,
        /// The timeout.
        ms: u64,
    },
    /// The response could not be framed.
    #[error("broker {addr}: malformed response: {source}")]
    Frame {
        /// The broker address.
        addr: String,
        /// The frame error.
        source: FrameError,
    },
    /// The response could not be decoded.
    #[error("broker {addr}: malformed response: {source}")]
    Codec {
        /// The broker address.
        addr: String,
        /// The codec error.
        source: CodecError,
    },
    /// The response did not answer the request it should have.
    #[error("broker {addr}: response correlation id {got} does not match request {expected}")]
    Correlation {
        /// The broker address.
        addr: String,
        /// The id we sent.
        expected: i32,
        /// The id we got.
        got: i32,
    },
    /// The broker and shipper share no version of an API.
    #[error("broker {addr} supports {api} versions {broker_min}..{broker_max}, shipper needs {ours_min}..{ours_max}: upgrade the broker (Kafka 3.x or newer)")]
    UnsupportedVersion {
        /// The broker address.
        addr: String,
        /// The API.
        api: &'static str,
        /// Broker's lowest.
        broker_min: i16,
        /// Broker's highest.
        broker_max: i16,
        /// Our lowest.
        ours_min: i16,
        /// Our highest.
        ours_max: i16,
    },
    /// The broker answered with an error code.
    #[error("{context}: broker error {code} {name}{hint}", name = kafka_error_name(*.code), hint = kafka_error_hint(*.code))]
    Kafka {
        /// Which request and target (topic, partition, broker).
        context: String,
        /// Kafka's error code.
        code: i16,
    },
    /// The topic does not exist (and was not created).
    #[error("topic '{topic}' does not exist (create it, or enable auto.create.topics.enable on the broker)")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The partition does not exist.
    #[error("topic '{topic}' has no partition {partition} (it has {count})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many it has.
        count: usize,
    },
    /// A topic partition has no leader for longer than we waited.
    #[error("topic '{topic}' partition {partition} has no available leader")]
    NoLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The broker list was empty or unusable.
    #[error("no broker could be reached: {0}")]
    NoBroker(String),
    /// A fetched record batch is corrupt.
    #[error("topic '{topic}' partition {partition}: {source}")]
    Records {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The decoding error.
        source: RecordError,
    },
    /// Compression of a batch failed.
    #[error("compression failed: {0}")]
    Compression(#[from] CompressionError),
    /// A failure already described, carried to a second place (errors are not `Clone`).
    #[error("{0}")]
    Failed(String),
    /// The overall deadline passed while retrying.
    #[error("gave up after {ms} ms: {last}")]
    Deadline {
        /// How long we tried.
        ms: u64,
        /// The last error seen.
        last: Box<Error>,
    },
}

/// Kafka's name for an error code, e.g. `UNKNOWN_TOPIC_OR_PARTITION`-like `UnknownTopicOrPartition`.
pub fn kafka_error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "None".to_string(),
        Some(e) => e.to_string(),
    }
}

fn kafka_error_hint(code: i16) -> &'static str {
    match code {
        10 => " (the batch is larger than the topic's max.message.bytes)",
        29..=31 => " (check the ACLs for this client)",
        _ => "",
    }
}

/// Whether Kafka says a request failing with `code` may succeed when retried (after a metadata refresh).
pub fn is_retriable_code(code: i16) -> bool {
    matches!(
        code,
        3 | 5 | 6 | 7 | 13 | 14 | 15 | 19 | 20 | 56 | 74 | 75 | 100 | 103
    ) || ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}

/// Whether `code` means our idea of the partition leader is stale.
pub fn is_stale_metadata_code(code: i16) -> bool {
    matches!(code, 3 | 5 | 6 | 13 | 56 | 74 | 75 | 100 | 103)
}

impl Error {
    /// Whether the operation may succeed if retried: network trouble and retriable broker codes.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Io { .. }
            | Error::Closed { .. }
            | Error::Timeout { .. }
            | Error::NoLeader { .. }
            | Error::Resolve { .. }
            | Error::NoBroker(_) => true,
            Error::Kafka { code, .. } => is_retriable_code(*code),
            _ => false,
        }
    }
}

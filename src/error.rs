//! Errors of the client layers (cluster, producer, consumer) and the one classification of Kafka's
//! error codes that every retry decision reads (DESIGN-NOTES invariant 6).
//!
//! Layers below have their own errors: [`crate::wire`] (frames, codecs, batches, compression) and
//! [`crate::connection::ConnError`] (one socket). Every error here carries its context as fields (API,
//! broker, topic, partition), not as a pre-formatted string, and is `Clone`, so one failure can be
//! reported for each batch it touched.

use kafka_protocol::error::ResponseError;

use crate::connection::ConnError;
use crate::escape::Esc;
use crate::wire::compression::CompressionError;
use crate::wire::records::RecordError;

/// Kafka's error codes by name (`Code::NotLeaderOrFollower`), from kafka-protocol.
pub use kafka_protocol::error::ResponseError as Code;

/// Result alias for the client layers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a request was about, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A broker, by address.
    Broker(String),
    /// A topic.
    Topic(String),
    /// One partition of a topic.
    Partition(String, i32),
    /// A consumer group.
    Group(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Broker(a) => write!(f, "broker {}", Esc::str(a)),
            Target::Topic(t) => write!(f, "topic '{}'", Esc::str(t)),
            Target::Partition(t, p) => write!(f, "topic '{}' partition {p}", Esc::str(t)),
            Target::Group(g) => write!(f, "group '{}'", Esc::str(g)),
        }
    }
}

/// Everything the client layers can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The connection to a broker failed (network, timeout, malformed response, TLS, SASL).
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The broker answered with an error code.
    #[error("{target}: {api}: broker error {} {}{}", .code.code(), name(*.code), hint(*.code))]
    Kafka {
        /// The request's API.
        api: &'static str,
        /// What it was about.
        target: Target,
        /// Kafka's error code.
        code: Code,
    },
    /// The broker's answer left out something it had to contain.
    #[error("{target}: {api}: the response does not answer the request ({what})")]
    Incomplete {
        /// The request's API.
        api: &'static str,
        /// What was missing.
        target: Target,
        /// Which part.
        what: &'static str,
    },
    /// The topic does not exist (and was not created).
    #[error("topic '{}' does not exist (create it; a broker creates topics at a producer's first write only with auto.create.topics.enable, never for a reader)", Esc::str(.topic))]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The topic does not exist, and the config's `auto_create_topics = false` keeps shipper from
    /// asking for it (the broker's `auto.create.topics.enable` is not the cause: t14).
    #[error("topic '{}' does not exist (create it; auto_create_topics = false in the config keeps shipper from asking Kafka to create it)", Esc::str(.topic))]
    NotCreated {
        /// The topic.
        topic: String,
    },
    /// The topic does not exist, and Kafka says it would refuse to create it (asked without creating
    /// anything): a name that collides with an existing topic's (`a.b` and `a_b`), a replication
    /// factor the cluster cannot reach, a creation policy. Auto-creation fails the same way, silently.
    #[error("topic '{}' does not exist, and Kafka refuses to create it: {}", Esc::str(.topic), Esc::str(.reason))]
    CannotCreate {
        /// The topic.
        topic: String,
        /// Kafka's reason (its error message, bounded), or the error code's.
        reason: String,
    },
    /// `--group-protocol consumer` against a coordinator without KIP-848's protocol.
    #[error("group '{}': the broker does not offer the consumer group protocol (KIP-848: Kafka 4.0 or newer); use --group-protocol classic, or auto to take what the broker offers", Esc::str(.group))]
    NoConsumerProtocol {
        /// The group.
        group: String,
    },
    /// The broker said it does not know the topic, but it may be being created (auto-creation asked
    /// for, or created a moment ago and not known to every broker yet): retried a few times before
    /// it is called unknown. Seen when the time runs out meanwhile.
    #[error("topic '{}' is not known to the broker yet (being created?)", Esc::str(.topic))]
    NotYetKnown {
        /// The topic.
        topic: String,
    },
    /// One of Kafka's internal topics (`__consumer_offsets`, `__transaction_state`): a broker
    /// refuses every client's writes to it, so lines routed there can never be delivered.
    #[error("topic '{}' is one of Kafka's internal topics: brokers refuse clients' writes to it", Esc::str(.topic))]
    InternalTopic {
        /// The topic.
        topic: String,
    },
    /// The partition does not exist.
    #[error("topic '{}' has no partition {partition} (it has {count})", Esc::str(.topic))]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many it has.
        count: usize,
    },
    /// A topic partition has no leader.
    #[error("topic '{}' partition {partition} has no available leader (are its replicas' brokers down?)", Esc::str(.topic))]
    NoLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A batch waited for its turn with a leader known and nothing failed: the leader had not
    /// answered the requests before it (or shipper itself was held up).
    #[error("topic '{}' partition {partition}: not sent in time: its leader, broker {leader}, had not answered the requests before it", Esc::str(.topic))]
    NotSent {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Its leader.
        leader: i32,
    },
    /// The broker list was empty.
    #[error("no broker to connect to: the broker list is empty (-b/--brokers)")]
    NoBrokers,
    /// The broker listed a topic's partitions with gaps, duplicates or negative ids.
    #[error("topic '{}': the broker lists its partitions as {ids}, where Kafka numbers them from 0 without gaps: an answer no Kafka broker gives, so the topic cannot be used", Esc::str(.topic))]
    BadPartitionIds {
        /// The topic.
        topic: String,
        /// The ids as listed (sorted; the first eight).
        ids: String,
    },
    /// A broker id that metadata does not know.
    #[error("broker id {0} is not in the cluster metadata")]
    UnknownBroker(i32),
    /// A fetched record batch is corrupt. (The decoding error is shown in the message, and so not
    /// also a `source`: `{:#}` printed it twice, t-helper-69 F6.)
    #[error("topic '{}' partition {partition}: {error}", Esc::str(.topic))]
    Records {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The decoding error.
        error: RecordError,
    },
    /// Exactly-once cannot go on in this process: the broker lost or fenced the producer's state, and
    /// a batch whose first attempt may have been written would be resent under a new producer id.
    #[error("exactly-once: {0}; stopping so that a restart reads back what Kafka holds and goes on exactly once (run under a supervisor that restarts it)")]
    ProducerStateLost(Box<Error>),
    /// Compression of a batch failed.
    /// (Not `#[from]`: that makes it the source as well, and `{:#}` printed it twice.)
    #[error("compression failed: {0}")]
    Compression(CompressionError),
    /// Partitions that could not be read, and why.
    #[error("cannot read {which}: {error}")]
    Unreadable {
        /// The partitions, named ("topic 't' partition 1").
        which: String,
        /// The last failure (in the message, so not a `source` as well).
        error: Box<Error>,
    },
    /// The overall deadline (`--timeout`) passed while retrying.
    #[error("gave up after {:.1}s: {last}", *.ms as f64 / 1000.0)]
    Deadline {
        /// How long we tried.
        ms: u64,
        /// The last error seen.
        last: Box<Error>,
    },
}

impl From<CompressionError> for Error {
    fn from(e: CompressionError) -> Self {
        Error::Compression(e)
    }
}

/// Whether `e` comes from a closed pipe (`shipper consume t | head`): an end, not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Kafka's name for a code, e.g. `NOT_LEADER_OR_FOLLOWER`.
pub fn name(code: Code) -> String {
    let camel = match code {
        Code::Unknown(c) => return format!("UNKNOWN_CODE_{c}"),
        c => c.to_string(),
    };
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

fn hint(code: Code) -> &'static str {
    match code {
        Code::MessageTooLarge => " (larger than the topic's max.message.bytes)",
        Code::TopicAuthorizationFailed
        | Code::GroupAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::TransactionalIdAuthorizationFailed => " (check the ACLs for this client)",
        Code::InvalidTimestamp => " (is this machine's clock right?)",
        Code::UnsupportedVersion => " (the broker is too old for shipper: Kafka 3.x or newer)",
        _ => "",
    }
}

/// How a failed request should be handled, decided once for every code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// May succeed later; `refresh` when our idea of the leader is probably stale.
    Retriable {
        /// Refresh metadata before retrying.
        refresh: bool,
    },
    /// The broker refuses these records themselves (too large even alone, invalid): retrying the same
    /// bytes can never succeed. Only these may be skipped.
    RecordRefused,
    /// The idempotent producer's state on the broker is gone or fenced: take a new producer id.
    ProducerState,
    /// Nothing retrying soon will fix (authorization, unknown server error, a response that makes no
    /// sense): a one-shot command fails, `tail` waits and retries with backoff and says so.
    Permanent,
}

/// The class of a Kafka error code.
pub fn classify(code: Code) -> Class {
    use Code::*;
    match code {
        UnknownTopicOrPartition
        | LeaderNotAvailable
        | NotLeaderOrFollower
        | ReplicaNotAvailable
        | NetworkException
        | KafkaStorageError
        | FencedLeaderEpoch
        | UnknownLeaderEpoch
        | UnknownTopicId
        | InconsistentTopicId
        | OffsetNotAvailable => Class::Retriable { refresh: true },
        MessageTooLarge | InvalidRecord | RecordListTooLarge => Class::RecordRefused,
        OutOfOrderSequenceNumber | InvalidProducerEpoch | UnknownProducerId | ProducerFenced => {
            Class::ProducerState
        }
        c if c.is_retriable() => Class::Retriable { refresh: false },
        CorruptMessage | NotEnoughReplicas | NotEnoughReplicasAfterAppend | RequestTimedOut => {
            Class::Retriable { refresh: false }
        }
        _ => Class::Permanent,
    }
}

impl Error {
    /// The class of this error: connection trouble is retriable (refreshing metadata), except what
    /// retrying cannot fix (no common API version, a certificate or password refused).
    pub fn class(&self) -> Class {
        match self {
            Error::Conn(c) if c.is_retriable() => Class::Retriable { refresh: true },
            Error::Conn(_) => Class::Permanent,
            Error::Kafka { code, .. } => classify(*code),
            Error::NoLeader { .. }
            | Error::NotYetKnown { .. }
            | Error::UnknownBroker(_)
            | Error::NotSent { .. } => Class::Retriable { refresh: true },
            Error::Deadline { last, .. } => last.class(),
            _ => Class::Permanent,
        }
    }

    /// Whether retrying (after a metadata refresh, with backoff) may help.
    pub fn is_retriable(&self) -> bool {
        matches!(self.class(), Class::Retriable { .. })
    }

    /// Whether this is a timeout (of a connection or a request), which a deadline may cause.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Conn(ConnError::Timeout { .. }) => true,
            Error::Conn(ConnError::Connect { detail, .. })
            | Error::Conn(ConnError::Resolve { detail, .. }) => detail.contains("timed out"),
            Error::Deadline { last, .. } => last.is_timeout(),
            _ => false,
        }
    }

    /// The Kafka error code, if the broker sent one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            Error::Deadline { last, .. } => last.code(),
            _ => None,
        }
    }
}

/// A Kafka error code as an `Option`: `None` for 0.
pub fn code(c: i16) -> Option<Code> {
    ResponseError::try_from_code(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kafkas_upper_snake_case() {
        assert_eq!(name(Code::NotLeaderOrFollower), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(
            name(Code::TopicAuthorizationFailed),
            "TOPIC_AUTHORIZATION_FAILED"
        );
        assert_eq!(name(Code::Unknown(999)), "UNKNOWN_CODE_999");
    }

    #[test]
    fn authorization_and_unknown_server_errors_are_never_record_refusals() {
        for c in [
            Code::TopicAuthorizationFailed,
            Code::UnknownServerError,
            Code::ClusterAuthorizationFailed,
            Code::InvalidTimestamp,
            Code::Unknown(4242),
        ] {
            assert_eq!(classify(c), Class::Permanent, "{c:?}");
        }
        assert_eq!(classify(Code::MessageTooLarge), Class::RecordRefused);
        assert_eq!(
            classify(Code::NotLeaderOrFollower),
            Class::Retriable { refresh: true }
        );
        assert_eq!(
            classify(Code::NotEnoughReplicas),
            Class::Retriable { refresh: false }
        );
        assert_eq!(classify(Code::UnknownProducerId), Class::ProducerState);
    }

    #[test]
    fn kafka_error_message_names_target_code_and_hint() {
        let e = Error::Kafka {
            api: "Produce",
            target: Target::Partition("logs".into(), 2),
            code: Code::TopicAuthorizationFailed,
        };
        assert_eq!(
            e.to_string(),
            "topic 'logs' partition 2: Produce: broker error 29 TOPIC_AUTHORIZATION_FAILED (check the ACLs for this client)"
        );
    }

    /// As main prints errors (`{:#}`, the chain joined): each cause once (a corrupt batch's CRC
    /// text was said two or three times in one line).
    #[test]
    fn a_corrupt_batch_is_said_once_in_the_printed_chain() {
        let crc = RecordError::Crc {
            offset: 3,
            stored: 1,
            computed: 2,
        };
        let inner = Error::Records {
            topic: "t".into(),
            partition: 0,
            error: crc,
        };
        let e = anyhow::Error::from(Error::Unreadable {
            which: "topic 't' partition 0".into(),
            error: Box::new(inner),
        });
        let shown = format!("{e:#}");
        assert_eq!(shown.matches("CRC mismatch").count(), 1, "{shown}");
        let z = anyhow::Error::from(Error::Compression(CompressionError::Corrupt {
            codec: crate::wire::compression::Compression::Zstd,
            detail: "bad frame".into(),
        }));
        let shown = format!("{z:#}");
        assert_eq!(shown.matches("bad frame").count(), 1, "{shown}");
    }
}

//! What can go wrong with one connection, classified for retrying.

use std::io;

use crate::escape::Esc;

/// What can go wrong with one connection. Cloneable: one failure is reported to every waiter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnError {
    /// A host name did not resolve.
    #[error("cannot resolve broker address {}: {detail}", Esc::str(.addr))]
    Resolve {
        /// The address.
        addr: String,
        /// The resolver's message.
        detail: String,
    },
    /// No TCP connection could be made.
    #[error("cannot connect to broker {}: {detail} ({})", Esc::str(.addr), connect_hint(.addr))]
    Connect {
        /// The address tried.
        addr: String,
        /// The OS error.
        detail: String,
    },
    /// Reading or writing the socket failed.
    #[error("broker {}: connection error: {detail}", Esc::str(.addr))]
    Io {
        /// The broker address.
        addr: String,
        /// The OS error.
        detail: String,
    },
    /// The broker closed the connection.
    #[error("broker {} closed the connection", Esc::str(.addr))]
    Closed {
        /// The broker address.
        addr: String,
    },
    /// The broker closed the connection before answering the first request.
    #[error("broker {} closed the connection before answering (does this listener want TLS or SASL? check --security-protocol)", Esc::str(.addr))]
    ClosedEarly {
        /// The broker address.
        addr: String,
    },
    /// The broker answered ApiVersions, then closed the connection at the next request.
    #[error("broker {} closed the connection at the first request after ApiVersions (a SASL listener? check --security-protocol and the SASL settings)", Esc::str(.addr))]
    ClosedAfterVersions {
        /// The broker address.
        addr: String,
    },
    /// No response came in time.
    #[error("broker {}: {}{}", Esc::str(.addr), timeout_text(.api, *.ms), first_request_hint(.addr, .api))]
    Timeout {
        /// The broker address.
        addr: String,
        /// The request's API.
        api: &'static str,
        /// How long we waited.
        ms: u64,
    },
    /// The response could not be framed or decoded, or answered another request.
    #[error("broker {}: malformed response to {api}: {detail}", Esc::str(.addr))]
    Malformed {
        /// The broker address.
        addr: String,
        /// The request's API.
        api: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A response that would take too much memory to decode (a Metadata answer describing a
    /// million partitions): a broker bug or an attack; retrying will not help.
    #[error("broker {}: response to {api} too large: {detail}", Esc::str(.addr))]
    TooLarge {
        /// The broker address.
        addr: String,
        /// The request's API.
        api: &'static str,
        /// How large, and the limit.
        detail: String,
    },
    /// The broker and shipper share no version of an API.
    #[error("broker {} supports {api} versions {broker_min}..{broker_max}, shipper needs {ours_min}..{ours_max}: upgrade the broker (Kafka 3.x or newer)", Esc::str(.addr))]
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
    /// What answered is no Kafka broker: an HTTP server, an SSH daemon, a KRaft controller's
    /// listener... Retrying will not help.
    #[error("{} is not a Kafka broker: {detail}", Esc::str(.addr))]
    NotKafka {
        /// The address.
        addr: String,
        /// What it answered.
        detail: String,
    },
    /// The broker does not offer an API at all.
    #[error("broker {} does not offer the {api} API: upgrade the broker (Kafka 3.x or newer)", Esc::str(.addr))]
    MissingApi {
        /// The broker address.
        addr: String,
        /// The API.
        api: &'static str,
    },
    /// The TLS handshake failed (certificate not trusted, wrong host name, not TLS at all...).
    #[error("broker {}: TLS: {detail}", Esc::str(.addr))]
    Tls {
        /// The broker address.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// SASL authentication failed.
    #[error("broker {}: authentication failed: {detail}", Esc::str(.addr))]
    Auth {
        /// The broker address.
        addr: String,
        /// What failed.
        detail: String,
    },
}

impl ConnError {
    /// Whether a new connection may succeed: network trouble and protocol errors (which reset the
    /// connection) are; a missing API version, a refused certificate or password are not.
    pub fn is_retriable(&self) -> bool {
        !matches!(
            self,
            ConnError::UnsupportedVersion { .. }
                | ConnError::NotKafka { .. }
                | ConnError::MissingApi { .. }
                | ConnError::Tls { .. }
                | ConnError::Auth { .. }
                | ConnError::TooLarge { .. }
        )
    }

    /// Whether a request that failed with this may still have reached the broker and been written
    /// (no answer came after it was sent), as opposed to failing before it was sent: while
    /// connecting, at TLS or SASL, or waiting for a setup request (ApiVersions, SaslHandshake).
    pub fn may_have_sent(&self, api: &str) -> bool {
        match self {
            ConnError::Io { .. } | ConnError::Closed { .. } => true,
            // The first request after ApiVersions may be the Produce itself, cut before its answer.
            ConnError::ClosedAfterVersions { .. } => true,
            ConnError::Timeout { api: a, .. }
            | ConnError::Malformed { api: a, .. }
            | ConnError::TooLarge { api: a, .. } => *a == api,
            _ => false,
        }
    }

    /// The error a request waiting for its answer (`api`) gets when the connection closed for this
    /// one: another request's timeout, bad or too large answer, or a failed reauthentication, does
    /// not mean this request was not sent. Passed on as is, a Produce waiting behind a Metadata that timed out was taken for never
    /// sent, and its sequence numbers went to the next batch, which an idempotent broker then took
    /// for a resend and dropped.
    pub(crate) fn for_waiter(&self, api: &str) -> ConnError {
        match self {
            ConnError::Timeout { addr, api: a, .. }
            | ConnError::Malformed { addr, api: a, .. }
            | ConnError::TooLarge { addr, api: a, .. }
                if *a != api =>
            {
                self.closed_while(addr, api)
            }
            // Only a reauthentication closes a connection with this (the first one is not shared
            // before it succeeds).
            ConnError::Auth { addr, .. } => self.closed_while(addr, api),
            _ => self.clone(),
        }
    }

    fn closed_while(&self, addr: &str, api: &str) -> ConnError {
        ConnError::Io {
            addr: addr.to_string(),
            detail: format!("closed while {api} waited for its answer ({self})"),
        }
    }

    pub(crate) fn io(addr: &str, e: &io::Error) -> ConnError {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => ConnError::Closed {
                addr: addr.to_string(),
            },
            _ => ConnError::Io {
                addr: addr.to_string(),
                detail: e.to_string(),
            },
        }
    }
}

/// What an unanswered first request of a connection may mean: a port that is not Kafka's (an HTTP
/// server waits for a request of its own and never answers; t14 took 30 s of "no answer" for it).
/// What a refused connection suggests: a wrong address, unless this one answered before (a broker
/// restarting or down: t21 saw "check -b/--brokers" at every restart of a cluster's node).
fn connect_hint(addr: &str) -> &'static str {
    if super::known_broker(addr) {
        "a broker of the cluster: restarting, or down?"
    } else {
        "is Kafka running there? check -b/--brokers (or the config file's brokers)"
    }
}

/// "no response to Fetch within 30000 ms"; with no time at all (the operation's deadline had passed
/// before the request could be sent), that (t30 F1: "within 0 ms").
fn timeout_text(api: &str, ms: u64) -> String {
    match ms {
        0 => format!("no time was left to send {api} (the operation's deadline had passed)"),
        ms => format!("no response to {api} within {ms} ms"),
    }
}

fn first_request_hint(addr: &str, api: &str) -> &'static str {
    if api != "ApiVersions" {
        ""
    } else if super::known_broker(addr) {
        " (the connection's first request, to a broker of the cluster: hung, paused or overloaded?)"
    } else {
        " (the connection's first request: is this a Kafka listener? a server of another protocol, such as HTTP, waits without answering, as does a hung broker)"
    }
}

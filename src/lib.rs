//! shipper: a Kafka-native log shipper and command-line Kafka client, with no librdkafka.
//!
//! Layers, bottom up:
//! - [`wire`]: frames, kafka-protocol message codecs, our own record batches, compression (no I/O).
//! - [`connection`]: one broker stream (through a [`connection::Transport`]) with version negotiation
//!   and pipelined requests.
//! - [`cluster`]: bootstrap, metadata cache, leaders, a connection per broker.
//! - [`backoff`]: jittered exponential retry timing and the one retry loop.
//! - [`error`]: the client error type and the one classification of Kafka error codes.
//! - [`partitioner`]: murmur2 for keys, sticky random for keyless records.
//! - [`producer`]: batching, Produce per leader, retries, idempotence, deliveries.
//! - [`consumer`]: ListOffsets and the Fetch loop.
//! - [`tail`]: following log files through rotation and truncation, with an acknowledged checkpoint.
//! - [`escape`]: making untrusted text safe to print; [`log`]: leveled stderr logging;
//!   [`output`]: how records and metadata are printed (raw, kcat format, JSON).
//! - [`cli`] (flags), [`settings`] (what they mean) and [`cmd`] (one module per subcommand).
//! - [`secret`]: passwords that never print; [`metrics`]: Prometheus text and the `/metrics` server.
//! - [`tasks`]: helpers for background tasks; [`testkit`]: a fake broker for tests.

pub mod backoff;
pub mod cli;
pub mod cluster;
pub mod cmd;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod escape;
pub mod fastcopy;
pub mod group;
pub mod http;
pub mod log;
pub mod metrics;
pub mod output;
pub mod partitioner;
pub mod producer;
pub mod secret;
pub mod settings;
pub mod tail;
pub mod tasks;
#[doc(hidden)]
pub mod testkit;
pub mod web;
pub mod wire;

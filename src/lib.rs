//! shipper: a Kafka-native log shipper and command-line Kafka client, with no librdkafka.
//!
//! Layers, bottom up:
//! - [`wire`]: frames, kafka-protocol message codecs, our own record batches, compression (no I/O).
//! - [`connection`]: one broker socket with version negotiation and pipelined requests.
//! - [`cluster`]: bootstrap, metadata cache, leaders, a connection per broker.
//! - [`backoff`]: jittered exponential retry timing.
//! - [`partitioner`]: murmur2 for keys, sticky random for keyless records.
//! - [`producer`]: batching, Produce per leader, retries, deliveries.
//! - [`consumer`]: ListOffsets and the Fetch loop.
//! - [`tail`]: following log files through rotation and truncation, with an acknowledged checkpoint.
//! - [`error`]: the client error type and the classification of Kafka error codes.
//! - [`log`]: leveled stderr logging.
//! - [`output`]: how consumed records are printed (raw, kcat format, JSON).
//! - [`cli`] and [`cmd`]: flags, and one module per subcommand wiring them to the layers above.

pub mod backoff;
pub mod cli;
pub mod cluster;
pub mod cmd;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod log;
pub mod output;
pub mod partitioner;
pub mod producer;
pub mod tail;
pub mod wire;

//! The wire layer: bytes in, bytes out, no I/O.
//!
//! - [`frame`]: the 4-byte size prefix around every request and response, with size limits.
//! - [`codec`]: the one place that calls kafka-protocol's message codecs and wraps their errors.
//! - [`produce`]: the Produce request encoded around its batches (no copy of them).
//! - [`records`]: our own RecordBatch v2 encoder and decoder (crc32c), the hot path.
//! - [`compression`]: the four codecs Kafka batches may use.
//! - [`validate`]: a structural check of responses before kafka-protocol allocates for them.

pub mod codec;
pub mod compression;
pub mod frame;
pub mod produce;
pub mod records;
pub mod validate;

//! Size-prefixed frames: every Kafka request and response is an `i32` length followed by that many bytes.
//!
//! Parsing does no I/O: [`parse`] looks at a buffer and either takes one whole frame out of it, says
//! "not yet" (`Ok(None)`) when more bytes are needed, or rejects a size no sane broker would send.
//! See <https://kafka.apache.org/protocol#protocol_common>.

use bytes::{Buf, Bytes, BytesMut};

/// Default largest response we accept: well above a fetch's `max_bytes`, far below what a corrupt length
/// could make us allocate.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// A frame whose size prefix cannot be right.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The size prefix is negative.
    #[error("frame size {0} is negative")]
    Negative(i32),
    /// The size prefix is larger than we are willing to buffer.
    #[error("frame size {size} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// How many more bytes `buf` needs to hold the frame that starts it, when known and not all there.
pub fn missing(buf: &[u8]) -> Option<usize> {
    let size = buf.first_chunk::<4>().map(|b| i32::from_be_bytes(*b))?;
    let want = 4 + usize::try_from(size).ok()?;
    want.checked_sub(buf.len()).filter(|&n| n > 0)
}

/// Takes one whole frame (without its size prefix) off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame; the buffer is left untouched then
/// (the caller makes room for the rest: [`missing`] says how much).
pub fn parse(buf: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(FrameError::Negative(size));
    }
    let size = size as usize;
    if size > max_frame_bytes {
        return Err(FrameError::TooLarge {
            size,
            limit: max_frame_bytes,
        });
    }
    if buf.len() < 4 + size {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_counts_what_the_front_frame_still_needs() {
        assert_eq!(missing(b""), None);
        assert_eq!(missing(&[0, 0, 0]), None);
        assert_eq!(missing(&[0, 0, 0, 5, 1, 2]), Some(3));
        assert_eq!(missing(&[0, 0, 0, 2, 1, 2]), None);
        assert_eq!(missing(&[0, 0, 0, 2, 1, 2, 9]), None);
        assert_eq!(missing(&[0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn frame_waits_for_the_whole_body() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 2][..]);
        assert_eq!(parse(&mut buf, 100), Ok(None));
        buf.extend_from_slice(&[3, 9]);
        assert_eq!(parse(&mut buf, 100).unwrap().unwrap().as_ref(), &[1, 2, 3]);
        assert_eq!(buf.as_ref(), &[9]);
    }

    #[test]
    fn frame_rejects_negative_length() {
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xfe][..]);
        assert_eq!(parse(&mut buf, 100), Err(FrameError::Negative(-2)));
    }

    #[test]
    fn frame_rejects_absurd_length_without_allocating() {
        let mut buf = BytesMut::from(&[0x7fu8, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            parse(&mut buf, 1024),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn frame_of_size_zero_is_empty() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(parse(&mut buf, 100).unwrap().unwrap().len(), 0);
    }
}

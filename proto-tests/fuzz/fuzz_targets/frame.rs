//! The frame reader on arbitrary bytes arriving in arbitrary pieces: frames or typed errors, never a
//! panic, never a buffer beyond the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shipper::wire::frame;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let step = (step as usize % 64) + 1;
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match frame::parse(&mut buf, 1 << 20) {
                Ok(Some(f)) => assert!(f.len() <= 1 << 20),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.capacity() <= (1 << 20) + 4 + rest.len() + 64 * 1024);
    }
});

//! The record batch decoder on arbitrary bytes, with and without the CRC check (so the fuzzer reaches
//! the record parser), and every codec's decompressor under a 1 MiB bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipper::wire::records;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut scratch = Vec::new();
    for b in records::split_batches(rest) {
        let Ok((h, batch)) = b else { return };
        if mode & 1 == 0 && records::verify_crc(&h, batch).is_err() {
            return;
        }
        let Ok(sec) = records::records_section(&h, batch, &mut scratch, 1 << 20) else { return };
        assert!(sec.len() <= (1 << 20).max(batch.len()));
        for r in records::records(&h, sec) {
            let Ok(r) = r else { break };
            let _ = r.headers().count();
        }
    }
});

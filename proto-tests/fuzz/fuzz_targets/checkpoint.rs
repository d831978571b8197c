//! Fuzz target: the checkpoint parser must never panic, whatever the bytes, and what it keeps must
//! render and parse back unchanged (an entry of a checkpoint without skip marks comes back marked
//! as not skipping: that is what rendering it says).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipper::tail::checkpoint;

fuzz_target!(|data: &[u8]| {
    let (entries, _dropped) = checkpoint::parse(data);
    let text = checkpoint::render(entries.iter());
    let (again, dropped) = checkpoint::parse(text.as_bytes());
    assert_eq!(dropped, 0);
    let marked: Vec<_> = entries
        .into_iter()
        .map(|e| checkpoint::Entry {
            long_line: match e.long_line {
                checkpoint::LongLine::Unknown => checkpoint::LongLine::No,
                l => l,
            },
            ..e
        })
        .collect();
    assert_eq!(again, marked);
});

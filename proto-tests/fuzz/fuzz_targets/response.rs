//! Response decoding (structural check, then kafka-protocol) for every API and version shipper
//! negotiates, on arbitrary bytes: a value or a typed error, never a panic or an absurd allocation.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest};
use libfuzzer_sys::fuzz_target;
use shipper::wire::codec;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let frame = Bytes::copy_from_slice(rest);
    let _ = match sel % 8 {
        0 => codec::decode_response::<FetchRequest>(frame, 12).map(|_| ()),
        1 => codec::decode_response::<MetadataRequest>(frame, 9 + (sel / 8 % 4) as i16).map(|_| ()),
        2 => codec::decode_response::<ProduceRequest>(frame, 9 + (sel / 8 % 4) as i16).map(|_| ()),
        3 => codec::decode_response::<ListOffsetsRequest>(frame, 6 + (sel / 8 % 2) as i16).map(|_| ()),
        4 => codec::decode_api_versions(frame, 3).map(|_| ()),
        _ => codec::decode_api_versions(frame, 0).map(|_| ()),
    };
});

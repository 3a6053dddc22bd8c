//! Arbitrary bytes as a message-stream envelope body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = atoll_wire::decode::<atoll_wire::Data>(data) {
        // Whatever decodes must encode again.
        atoll_wire::encode_frame(&envelope).expect("a decoded envelope re-encodes");
    }
});

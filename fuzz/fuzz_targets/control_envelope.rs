//! Arbitrary bytes as a control-stream envelope body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = atoll_wire::decode::<atoll_wire::Control>(data) {
        atoll_wire::encode_frame(&envelope).expect("a decoded envelope re-encodes");
    }
});

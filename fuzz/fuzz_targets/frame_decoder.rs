//! Arbitrary bytes through the frame decoder, in arbitrary chunks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut decoder = atoll_wire::FrameDecoder::new(4096);
    let cut = (split as usize).min(rest.len());
    for chunk in [&rest[..cut], &rest[cut..]] {
        decoder.push(chunk);
        while let Ok(Some(body)) = decoder.next_frame() {
            assert!(body.len() < 4096);
            let _ = atoll_wire::decode::<atoll_wire::Data>(&body);
        }
    }
});

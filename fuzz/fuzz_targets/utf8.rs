//! The incremental UTF-8 validator against `std::str::from_utf8`, for any
//! input cut anywhere.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_websockets::internals::Utf8Validator;

fuzz_target!(|data: &[u8]| {
    let Some((&cut_seed, text)) = data.split_first() else {
        return;
    };
    let expected = std::str::from_utf8(text).is_ok();
    let step = usize::from(cut_seed % 16) + 1;
    let mut validator = Utf8Validator::new();
    let mut ok = true;
    for piece in text.chunks(step) {
        if !validator.feed(piece) {
            ok = false;
            break;
        }
    }
    let ok = ok && validator.finish();
    assert_eq!(ok, expected, "step {step}");
});

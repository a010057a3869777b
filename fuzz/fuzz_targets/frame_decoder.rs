//! The receive state machine fed an arbitrary byte stream in arbitrary
//! pieces: it must never panic, and the result must not depend on how the
//! stream was cut. Fed whole, every complete single-frame message takes
//! the fast path (`Decoder::whole_frame`); in pieces of 1..=8 bytes almost
//! none does, so the comparison also checks the fast path against the
//! general one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_websockets::internals::decode_stream;

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, stream)) = data.split_first() else {
        return;
    };
    // Small limits so the limit paths are reached too.
    let (max_message, max_frame) = (4096, 1024);
    let whole = decode_stream(&[stream], max_message, max_frame);
    // Cut the stream into pieces of 1..=8 bytes, driven by `cuts`.
    let step = usize::from(cuts % 8) + 1;
    let pieces: Vec<&[u8]> = stream.chunks(step).collect();
    let chunked = decode_stream(&pieces, max_message, max_frame);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => {
            // A stream cut short may end earlier in one run only if it is
            // incomplete; complete events must agree.
            assert_eq!(a, b, "events depend on chunking");
        }
        (Err(a), Err(b)) => assert_eq!(a.close_code(), b.close_code(), "{a} vs {b}"),
        // UTF-8 fails fast: a cut stream may fail where the whole stream
        // fails too, and the same violation is found either way.
        (a, b) => panic!("whole {a:?} vs chunked {b:?}"),
    }
});

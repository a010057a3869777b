//! The fuzz bytes sent to the real socket as one text message, cut into
//! fragments (continuation frames) at input-chosen points, then a Close:
//! the socket must deliver the message and the Close iff
//! `std::str::from_utf8` accepts the bytes, and fail with 1007 otherwise,
//! through `receive_message` and through `receive_buffer` into small and
//! large buffers, read whole and in pieces. The input's layout is at
//! `utf8_case`; every run is also checked as in the `socket` target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_websockets_fuzz::{check_case, utf8_case, utf8_expected};

fuzz_target!(|data: &[u8]| {
    let (case, text) = utf8_case(data);
    let expected = check_case(&case);
    // Every run agreed with the model; the model must agree with std.
    assert_eq!(expected.outcome, utf8_expected(text));
});

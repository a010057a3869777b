//! The real socket (`WebSocket::from_raw_socket` over an in-memory
//! transport) fed a client stream: raw fuzz bytes, or a script of frames
//! (any opcode, FIN, RSV, mask and length form; payloads up to 100 KiB
//! made from a pattern; pings, pongs, closes with any code and reason;
//! garbage). The stream runs in four configurations: read whole and in
//! pieces (with `Pending` now and then), written freely and blocked,
//! `receive_message` and `receive_buffer` into buffers of 1 byte ..
//! 128 KiB, with and without echo. The input's layout is at
//! `socket_case`, what is checked at the top of `fuzz/src/lib.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_websockets_fuzz::{check_case, socket_case};

fuzz_target!(|data: &[u8]| {
    check_case(&socket_case(data));
});

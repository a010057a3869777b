//! The RFC 6455 conformance matrix for the server side, driven by the raw
//! client in `common`, so every byte on the wire is chosen by the test.
//!
//! One module per area, in this order: `framing` (payload lengths and their
//! 7/16/64-bit forms, non-minimal lengths, chopped and batched writes),
//! `masking`, `reserved_bits`, `opcodes`, `control_frames`,
//! `fragmentation`, `utf8` (valid text split at every offset, invalid text
//! and failing fast), `close` (codes, reasons, the closing handshake) and
//! `limits` (`max_message_size`, `max_frame_size`). The handshake has its
//! own file, `tests/handshake.rs`.
//!
//! How to read a case: the test name says what the client sends; the body
//! asserts exactly what the server must answer, which is one of
//! - the echo: the server is the ASP.NET buffer echo loop with a 4 KiB
//!   buffer (`common::echo_server`), so one client frame may come back as
//!   several server frames; cases compare whole messages and their order,
//!   not the server's frame count, except where the client controls it (a
//!   small payload sent in one write);
//! - a pong with the ping's payload;
//! - exactly one Close frame with a given code (1002 protocol error, 1007
//!   invalid UTF-8, 1009 too big), after the echoes of what came complete
//!   before the violation, and then the server closing the TCP connection;
//! - the TCP connection closing.
//!
//! Every read is bounded by `common::TIMEOUT`; longer exchanges are wrapped
//! in one `tokio::time::timeout`. Every server frame read through
//! [`exchange`] is also checked: unmasked, no RSV bits, the minimal length
//! encoding, control frames whole, continuations only inside a message.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_websockets::WebSocketOptions;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A message as the client reassembled it: opcode and payload. Control
/// frames are messages of their own.
type Received = (u8, Vec<u8>);

/// A fresh echo server with default options and a client connected to it.
async fn connect() -> RawClient {
    connect_with(WebSocketOptions::default()).await
}

async fn connect_with(options: WebSocketOptions) -> RawClient {
    let addr = echo_server(options).await;
    raw_connect(addr, "/ws").await
}

/// Sends `bytes` on a fresh echo connection and returns the close code the
/// server answers with, checking that nothing but that Close frame (after
/// the echoes in `expect_echoes`) is sent and that the TCP connection is
/// then closed.
async fn close_code_for(
    options: WebSocketOptions,
    bytes: &[u8],
    expect_echoes: &[(u8, &[u8])],
) -> Option<u16> {
    let mut client = connect_with(options).await;
    client.send(bytes).await;
    close_code_after(&mut client, expect_echoes).await
}

/// Reads the echoes in `expect_echoes`, then expects exactly one Close
/// frame and the server closing the TCP connection; returns its code.
async fn close_code_after(client: &mut RawClient, expect_echoes: &[(u8, &[u8])]) -> Option<u16> {
    for (opcode, payload) in expect_echoes {
        assert_eq!(client.read_message().await, (*opcode, payload.to_vec()));
    }
    let frames = client.read_to_end().await;
    assert_eq!(
        frames.len(),
        1,
        "expected exactly one close frame, got {frames:?}"
    );
    frames[0].close_code()
}

/// Ends a healthy connection: sends Close 1000 and expects exactly its echo
/// and then the server closing TCP, so nothing unexpected was sent before.
async fn close_cleanly(mut client: RawClient) {
    let payload = close_payload(1000, "done");
    client.send(&frame(true, CLOSE, &payload, Some(MASK))).await;
    let frames = client.read_to_end().await;
    assert_eq!(frames.len(), 1, "expected only the close echo: {frames:?}");
    assert_eq!((frames[0].opcode, &frames[0].payload), (CLOSE, &payload));
}

/// Writes `bytes` and, at the same time (so that neither side's socket
/// buffers can fill up and stall the other), reads until `count` messages
/// have arrived or a Close frame has. Every server frame is checked on the
/// way (see [`take_frame`]).
async fn exchange(client: &mut RawClient, bytes: &[u8], count: usize) -> Vec<Received> {
    let RawClient { stream, buf } = client;
    let (mut reader, mut writer) = stream.split();
    let write = async {
        // A server that fails the connection may stop reading; the test
        // then sees its Close frame rather than a write error.
        let _ = writer.write_all(bytes).await;
    };
    let read = async {
        let mut received = Vec::with_capacity(count);
        let mut open: Option<Received> = None;
        let mut chunk = vec![0u8; 64 * 1024];
        while received.len() < count {
            let Some(frame) = take_frame(buf) else {
                let n = reader.read(&mut chunk).await.unwrap_or(0);
                assert!(
                    n > 0,
                    "the server closed the connection after {} of {count} messages: {}",
                    received.len(),
                    summary(&received)
                );
                buf.extend_from_slice(&chunk[..n]);
                continue;
            };
            match frame.opcode {
                CLOSE => {
                    received.push((CLOSE, frame.payload));
                    break;
                }
                PING | PONG => received.push((frame.opcode, frame.payload)),
                CONTINUATION => {
                    let message = open
                        .as_mut()
                        .expect("a continuation frame outside a message");
                    message.1.extend(frame.payload);
                    if frame.fin {
                        received.extend(open.take());
                    }
                }
                opcode => {
                    assert!(open.is_none(), "a new data frame inside a message");
                    if frame.fin {
                        received.push((opcode, frame.payload));
                    } else {
                        open = Some((opcode, frame.payload));
                    }
                }
            }
        }
        received
    };
    tokio::time::timeout(TIMEOUT, async { tokio::join!(write, read).1 })
        .await
        .expect("the server answered in time")
}

/// Takes one server frame off the front of `buf`, checking what RFC 6455
/// requires of the server's frames: no mask (`parse_server_frame`), no RSV
/// bits without an extension, the minimal length encoding (§5.2), control
/// frames unfragmented and at most 125 bytes (§5.5).
fn take_frame(buf: &mut Vec<u8>) -> Option<ServerFrame> {
    let (frame, used) = parse_server_frame(buf)?;
    let minimal = match buf[1] & 0x7F {
        126 => frame.payload.len() >= 126,
        127 => frame.payload.len() > 0xFFFF,
        _ => true,
    };
    assert!(
        minimal,
        "the server must use the minimal length encoding: header {:02x?}",
        &buf[..used.min(10)]
    );
    assert_eq!(frame.rsv, 0, "server frame with RSV bits set");
    assert!(
        !matches!(frame.opcode, 3..=7 | 0xB..=0xF),
        "server frame with reserved opcode {:#x}",
        frame.opcode
    );
    if frame.opcode >= 8 {
        assert!(
            frame.fin && frame.payload.len() <= 125,
            "bad server control frame"
        );
    }
    buf.drain(..used);
    Some(frame)
}

/// Compares received and expected messages without printing megabytes.
fn assert_received(actual: &[Received], expected: &[Received]) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "message count; received {}",
        summary(actual)
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(a.0, e.0, "opcode of message {i}");
        assert_eq!(a.1.len(), e.1.len(), "length of message {i}");
        if let Some(at) = a.1.iter().zip(&e.1).position(|(x, y)| x != y) {
            panic!(
                "message {i} differs at byte {at}: {:#04x} instead of {:#04x}",
                a.1[at], e.1[at]
            );
        }
    }
}

fn summary(received: &[Received]) -> String {
    let parts: Vec<String> = received
        .iter()
        .map(|(opcode, payload)| format!("{opcode:#x}:{}B", payload.len()))
        .collect();
    format!("[{}]", parts.join(" "))
}

/// `len` pseudo-random bytes (xorshift), different per `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Valid UTF-8 of exactly `len` bytes mixing 1-, 2-, 3- and 4-byte
/// characters.
fn utf8_text(len: usize) -> String {
    const CHARS: [char; 6] = ['a', 'é', '€', '𝄞', 'Z', 'ß'];
    let mut text = String::with_capacity(len);
    for c in CHARS.iter().cycle() {
        if text.len() == len {
            break;
        }
        if text.len() + c.len_utf8() <= len {
            text.push(*c);
        } else {
            text.push('x');
        }
    }
    text
}

/// A payload of `len` bytes fit for `opcode`: UTF-8 for text.
fn payload_for(opcode: u8, len: usize) -> Vec<u8> {
    if opcode == TEXT {
        utf8_text(len).into_bytes()
    } else {
        pattern(len, len as u64)
    }
}

/// The payload length encodings of RFC 6455 §5.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Length {
    Bits7,
    Bits16,
    Bits64,
}

/// The length form a client frame uses.
fn length_form(frame: &[u8]) -> Length {
    match frame[1] & 0x7F {
        126 => Length::Bits16,
        127 => Length::Bits64,
        _ => Length::Bits7,
    }
}

/// A masked client frame whose length uses `form`, minimal or not.
fn frame_with_length(
    fin: bool,
    opcode: u8,
    payload: &[u8],
    mask: [u8; 4],
    form: Length,
) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    match form {
        Length::Bits7 => out.push(0x80 | u8::try_from(len).ok().filter(|&n| n < 126).unwrap()),
        Length::Bits16 => {
            out.push(0x80 | 126);
            out.extend(u16::try_from(len).unwrap().to_be_bytes());
        }
        Length::Bits64 => {
            out.push(0x80 | 127);
            out.extend((len as u64).to_be_bytes());
        }
    }
    out.extend(mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The frames of one message cut at `cuts` (ascending byte offsets): the
/// first frame carries `opcode`, the rest are continuations.
fn fragments(opcode: u8, payload: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(payload.len());
    let mut out = Vec::new();
    for (i, pair) in bounds.windows(2).enumerate() {
        let op = if i == 0 { opcode } else { CONTINUATION };
        let last = i == bounds.len() - 2;
        out.extend(frame(last, op, &payload[pair[0]..pair[1]], Some(MASK)));
    }
    out
}

/// Sends `bytes` on a fresh connection and expects exactly `first` (one
/// echoed frame: fin, opcode, payload), then one Close frame with `code`
/// and the TCP connection closing.
async fn first_frame_then_close(bytes: &[u8], first: (bool, u8, &[u8]), code: u16) {
    let mut client = connect().await;
    client.send(bytes).await;
    let echoed = client.read_frame().await.unwrap();
    assert_eq!(
        (echoed.fin, echoed.opcode, echoed.payload.as_slice()),
        first
    );
    let frames = client.read_to_end().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].close_code(), Some(code));
}

mod framing {
    //! Payload lengths at every boundary of the 7/16/64-bit length forms,
    //! non-minimal lengths, frames chopped into 1-byte writes and many
    //! frames in one write.

    use super::*;

    /// Sends one masked frame of `len` bytes, checks that the client frame
    /// uses `form`, and that the message comes back identical.
    async fn echo_of_length(opcode: u8, len: usize, form: Length) {
        let payload = payload_for(opcode, len);
        let bytes = frame(true, opcode, &payload, Some(MASK));
        assert_eq!(length_form(&bytes), form, "the client frame's length form");
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, 1).await;
        assert_received(&received, &[(opcode, payload)]);
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn text_payload_0_bytes_uses_7_bit_length() {
        echo_of_length(TEXT, 0, Length::Bits7).await;
    }

    #[tokio::test]
    async fn binary_payload_0_bytes_uses_7_bit_length() {
        echo_of_length(BINARY, 0, Length::Bits7).await;
    }

    #[tokio::test]
    async fn text_payload_1_byte_uses_7_bit_length() {
        echo_of_length(TEXT, 1, Length::Bits7).await;
    }

    #[tokio::test]
    async fn binary_payload_1_byte_uses_7_bit_length() {
        echo_of_length(BINARY, 1, Length::Bits7).await;
    }

    #[tokio::test]
    async fn text_payload_125_bytes_uses_7_bit_length() {
        echo_of_length(TEXT, 125, Length::Bits7).await;
    }

    #[tokio::test]
    async fn binary_payload_125_bytes_uses_7_bit_length() {
        echo_of_length(BINARY, 125, Length::Bits7).await;
    }

    #[tokio::test]
    async fn text_payload_126_bytes_uses_16_bit_length() {
        echo_of_length(TEXT, 126, Length::Bits16).await;
    }

    #[tokio::test]
    async fn binary_payload_126_bytes_uses_16_bit_length() {
        echo_of_length(BINARY, 126, Length::Bits16).await;
    }

    #[tokio::test]
    async fn text_payload_127_bytes_uses_16_bit_length() {
        echo_of_length(TEXT, 127, Length::Bits16).await;
    }

    #[tokio::test]
    async fn binary_payload_127_bytes_uses_16_bit_length() {
        echo_of_length(BINARY, 127, Length::Bits16).await;
    }

    #[tokio::test]
    async fn text_payload_128_bytes_uses_16_bit_length() {
        echo_of_length(TEXT, 128, Length::Bits16).await;
    }

    #[tokio::test]
    async fn binary_payload_128_bytes_uses_16_bit_length() {
        echo_of_length(BINARY, 128, Length::Bits16).await;
    }

    #[tokio::test]
    async fn text_payload_65535_bytes_uses_16_bit_length() {
        echo_of_length(TEXT, 65535, Length::Bits16).await;
    }

    #[tokio::test]
    async fn binary_payload_65535_bytes_uses_16_bit_length() {
        echo_of_length(BINARY, 65535, Length::Bits16).await;
    }

    #[tokio::test]
    async fn text_payload_65536_bytes_uses_64_bit_length() {
        echo_of_length(TEXT, 65536, Length::Bits64).await;
    }

    #[tokio::test]
    async fn binary_payload_65536_bytes_uses_64_bit_length() {
        echo_of_length(BINARY, 65536, Length::Bits64).await;
    }

    #[tokio::test]
    async fn text_payload_4_mib_uses_64_bit_length() {
        echo_of_length(TEXT, 4 << 20, Length::Bits64).await;
    }

    #[tokio::test]
    async fn binary_payload_4_mib_uses_64_bit_length() {
        echo_of_length(BINARY, 4 << 20, Length::Bits64).await;
    }

    // Non-minimal length encodings. RFC 6455 §5.2 says "the minimal number
    // of bytes MUST be used to encode the length", a rule for the sender.
    // This server ACCEPTS non-minimal lengths from clients (be liberal in
    // what you accept: the length is unambiguous either way), while its own
    // frames always use the minimal form, which `exchange` checks on every
    // frame it reads.

    async fn non_minimal_echo(opcode: u8, len: usize, form: Length) {
        let payload = payload_for(opcode, len);
        let bytes = frame_with_length(true, opcode, &payload, MASK, form);
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, 1).await;
        assert_received(&received, &[(opcode, payload)]);
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn text_5_bytes_with_16_bit_length_is_accepted() {
        non_minimal_echo(TEXT, 5, Length::Bits16).await;
    }

    #[tokio::test]
    async fn text_5_bytes_with_64_bit_length_is_accepted() {
        non_minimal_echo(TEXT, 5, Length::Bits64).await;
    }

    #[tokio::test]
    async fn binary_0_bytes_with_64_bit_length_is_accepted() {
        non_minimal_echo(BINARY, 0, Length::Bits64).await;
    }

    #[tokio::test]
    async fn binary_300_bytes_with_64_bit_length_is_accepted() {
        non_minimal_echo(BINARY, 300, Length::Bits64).await;
    }

    #[tokio::test]
    async fn length_with_most_significant_bit_set_closes_1002() {
        // §5.2: "the most significant bit MUST be 0".
        let mut bytes = vec![0x82, 0x80 | 127];
        bytes.extend((1u64 << 63 | 5).to_be_bytes());
        bytes.extend(MASK);
        bytes.extend(b"hello");
        let code = close_code_for(Default::default(), &bytes, &[]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn frame_split_byte_by_byte_is_reassembled() {
        let addr = echo_server(Default::default()).await;
        let mut client = raw_connect(addr, "/ws").await;
        let text = "héllo wörld €𝄞";
        for byte in frame(true, 1, text.as_bytes(), Some(MASK)) {
            client.send(&[byte]).await;
            tokio::task::yield_now().await;
        }
        let (opcode, data) = client.read_message().await;
        assert_eq!(
            (opcode, String::from_utf8(data).unwrap().as_str()),
            (1, text)
        );
    }

    #[tokio::test]
    async fn ping_and_frames_of_every_length_form_split_byte_by_byte_are_reassembled() {
        let binary = pattern(300, 1);
        let text = utf8_text(40);
        let mut bytes = frame(true, PING, b"abc", Some(MASK));
        bytes.extend(frame(true, BINARY, &binary, Some(MASK)));
        bytes.extend(frame_with_length(
            true,
            TEXT,
            text.as_bytes(),
            [1, 2, 3, 4],
            Length::Bits64,
        ));
        bytes.extend(fragments(TEXT, "fragmented €".as_bytes(), &[4, 12]));
        let mut client = connect().await;
        let dribble = async {
            for byte in bytes {
                client.send(&[byte]).await;
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(TIMEOUT, dribble)
            .await
            .expect("sent in time");
        let received = exchange(&mut client, &[], 4).await;
        assert_received(
            &received,
            &[
                (PONG, b"abc".to_vec()),
                (BINARY, binary),
                (TEXT, text.into_bytes()),
                (TEXT, "fragmented €".as_bytes().to_vec()),
            ],
        );
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn hundred_messages_in_one_write_are_echoed_in_order() {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for i in 0..100 {
            let opcode = if i % 2 == 0 { TEXT } else { BINARY };
            let payload = payload_for(opcode, i * 3);
            bytes.extend(frame(true, opcode, &payload, Some(MASK)));
            expected.push((opcode, payload));
        }
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, expected.len()).await;
        assert_received(&received, &expected);
        close_cleanly(client).await;
    }
}

mod masking {
    //! Client frames must be masked (§5.1), and every mask must unmask.

    use super::*;

    #[tokio::test]
    async fn unmasked_client_frame_closes_1002() {
        let code = close_code_for(Default::default(), &frame(true, 1, b"hi", None), &[]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn unmasked_ping_closes_1002_without_a_pong() {
        let code = close_code_for(Default::default(), &frame(true, PING, b"p", None), &[]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn unmasked_frame_after_a_complete_message_closes_1002_after_the_echo() {
        let mut bytes = frame(true, TEXT, b"masked", Some(MASK));
        bytes.extend(frame(true, TEXT, b"unmasked", None));
        let code = close_code_for(Default::default(), &bytes, &[(TEXT, b"masked")]).await;
        assert_eq!(code, Some(1002));
    }

    /// For every byte value b, the mask [b, b^0x55, b^0xAA, 255-b] over
    /// payloads of 1, 7, 8, 63, 64, 65 and 1000 bytes: lengths below,
    /// at and past the 8-byte words and 64-byte blocks of the fast path.
    /// The frames follow each other in one write, so their payloads start
    /// at many different offsets (alignments) in the server's buffer and
    /// its reads cut them at different mask phases.
    #[tokio::test]
    async fn masks_with_every_byte_value_unmask_payloads_of_1_to_1000_bytes() {
        const LENGTHS: [usize; 7] = [1, 7, 8, 63, 64, 65, 1000];
        let mut client = connect().await;
        let bytes: Vec<u8> = (0..=255).collect();
        for batch in bytes.chunks(32) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for &b in batch {
                let mask = [b, b ^ 0x55, b ^ 0xAA, 255 - b];
                for len in LENGTHS {
                    // The 1000-byte payload is text, so the unmasked bytes
                    // also go through the UTF-8 validator.
                    let (opcode, payload) = if len == 1000 {
                        (TEXT, utf8_text(len).into_bytes())
                    } else {
                        (BINARY, pattern(len, u64::from(b) << 16 | len as u64))
                    };
                    wire.extend(frame(true, opcode, &payload, Some(mask)));
                    expected.push((opcode, payload));
                }
            }
            let received = exchange(&mut client, &wire, expected.len()).await;
            assert_received(&received, &expected);
        }
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn all_zero_mask_is_accepted() {
        let mut client = connect().await;
        let bytes = frame(true, TEXT, b"zero mask", Some([0; 4]));
        let received = exchange(&mut client, &bytes, 1).await;
        assert_received(&received, &[(TEXT, b"zero mask".to_vec())]);
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn fragments_with_their_own_masks_and_odd_lengths_are_each_unmasked_from_mask_byte_0() {
        // Each frame's mask starts again at its first payload byte (§5.3);
        // odd lengths make a carried-over phase visible.
        let text = utf8_text(31);
        let binary = pattern(31, 7);
        let mut client = connect().await;
        let mut wire = Vec::new();
        for (opcode, payload) in [(TEXT, text.as_bytes()), (BINARY, &binary[..])] {
            let cuts = [3, 8, 9, 16, 31];
            let mut start = 0;
            for (i, &end) in cuts.iter().enumerate() {
                let op = if i == 0 { opcode } else { CONTINUATION };
                let mask = [i as u8 * 40 + 1, 0x80, 0xFF, i as u8];
                wire.extend(frame(
                    end == payload.len(),
                    op,
                    &payload[start..end],
                    Some(mask),
                ));
                start = end;
            }
        }
        let received = exchange(&mut client, &wire, 2).await;
        assert_received(
            &received,
            &[(TEXT, text.clone().into_bytes()), (BINARY, binary.clone())],
        );
        close_cleanly(client).await;
    }
}

mod reserved_bits {
    //! RSV1–3 without a negotiated extension (§5.2).

    use super::*;

    async fn rsv_closes_1002(rsv: u8) {
        let code = close_code_for(
            Default::default(),
            &frame_rsv(true, rsv, 1, b"hi", Some(MASK)),
            &[],
        )
        .await;
        assert_eq!(code, Some(1002), "rsv {rsv:03b}");
    }

    #[tokio::test]
    async fn rsv1_without_extension_closes_1002() {
        rsv_closes_1002(0b100).await;
    }

    #[tokio::test]
    async fn rsv2_without_extension_closes_1002() {
        rsv_closes_1002(0b010).await;
    }

    #[tokio::test]
    async fn rsv3_without_extension_closes_1002() {
        rsv_closes_1002(0b001).await;
    }

    #[tokio::test]
    async fn all_rsv_bits_on_a_ping_close_1002_without_a_pong() {
        let bytes = frame_rsv(true, 0b111, PING, b"p", Some(MASK));
        let code = close_code_for(Default::default(), &bytes, &[]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn complete_message_before_a_rsv1_frame_is_echoed_then_1002() {
        let mut bytes = frame(true, TEXT, b"first", Some(MASK));
        bytes.extend(frame_rsv(true, 0b100, TEXT, b"second", Some(MASK)));
        let code = close_code_for(Default::default(), &bytes, &[(TEXT, b"first")]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn rsv2_on_a_continuation_closes_1002_after_the_first_fragment() {
        let mut bytes = frame(false, BINARY, b"part", Some(MASK));
        bytes.extend(frame_rsv(true, 0b010, CONTINUATION, b"rest", Some(MASK)));
        first_frame_then_close(&bytes, (false, BINARY, b"part"), 1002).await;
    }
}

mod opcodes {
    //! Reserved data opcodes 3–7 and control opcodes 0xB–0xF (§5.2).

    use super::*;

    async fn opcode_closes_1002(opcode: u8) {
        let code = close_code_for(
            Default::default(),
            &frame(true, opcode, b"reserved", Some(MASK)),
            &[],
        )
        .await;
        assert_eq!(code, Some(1002), "opcode {opcode:#x}");
    }

    macro_rules! reserved_opcodes {
        ($($name:ident = $opcode:literal,)*) => {$(
            #[tokio::test]
            async fn $name() {
                opcode_closes_1002($opcode).await;
            }
        )*};
    }

    reserved_opcodes! {
        data_opcode_3_closes_1002 = 0x3,
        data_opcode_4_closes_1002 = 0x4,
        data_opcode_5_closes_1002 = 0x5,
        data_opcode_6_closes_1002 = 0x6,
        data_opcode_7_closes_1002 = 0x7,
        control_opcode_0xb_closes_1002 = 0xB,
        control_opcode_0xc_closes_1002 = 0xC,
        control_opcode_0xd_closes_1002 = 0xD,
        control_opcode_0xe_closes_1002 = 0xE,
        control_opcode_0xf_closes_1002 = 0xF,
    }

    #[tokio::test]
    async fn reserved_opcode_after_a_complete_message_closes_1002_after_the_echo() {
        let mut bytes = frame(true, TEXT, b"first", Some(MASK));
        bytes.extend(frame(true, 0x5, b"", Some(MASK)));
        let code = close_code_for(Default::default(), &bytes, &[(TEXT, b"first")]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn reserved_opcode_inside_a_fragmented_message_closes_1002() {
        let mut bytes = frame(false, TEXT, b"part", Some(MASK));
        bytes.extend(frame(true, 0xC, b"", Some(MASK)));
        first_frame_then_close(&bytes, (false, TEXT, b"part"), 1002).await;
    }
}

mod control_frames {
    //! Ping, pong and their limits (§5.5).

    use super::*;

    #[tokio::test]
    async fn ping_with_every_payload_length_0_to_125_is_answered_with_the_same_payload() {
        let addr = echo_server(Default::default()).await;
        let mut client = raw_connect(addr, "/ws").await;
        for len in 0..=125 {
            let payload = pattern(len, len as u64);
            client.send(&frame(true, 9, &payload, Some(MASK))).await;
            let pong = client.read_frame().await.unwrap();
            assert_eq!((pong.opcode, pong.payload), (0xA, payload), "length {len}");
        }
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn ten_pings_in_one_write_are_all_answered_in_order() {
        // RFC 6455 §5.5.3 allows answering only the latest of several
        // pings; this server answers each one it reads (what Autobahn 2.10
        // checks for a strict result).
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for i in 0..10u8 {
            let payload = vec![i; usize::from(i) * 12];
            bytes.extend(frame(true, PING, &payload, Some(MASK)));
            expected.push((PONG, payload));
        }
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, expected.len()).await;
        assert_received(&received, &expected);
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn ping_before_a_message_is_answered_before_its_echo() {
        let mut bytes = frame(true, PING, b"first", Some(MASK));
        bytes.extend(frame(true, BINARY, b"second", Some(MASK)));
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, 2).await;
        assert_received(
            &received,
            &[(PONG, b"first".to_vec()), (BINARY, b"second".to_vec())],
        );
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn ping_with_126_bytes_closes_1002() {
        let code = close_code_for(
            Default::default(),
            &frame(true, 9, &[b'p'; 126], Some(MASK)),
            &[],
        )
        .await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn pong_with_126_bytes_closes_1002() {
        let bytes = frame(true, PONG, &[b'p'; 126], Some(MASK));
        let code = close_code_for(Default::default(), &bytes, &[]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn fragmented_ping_closes_1002() {
        let code =
            close_code_for(Default::default(), &frame(false, 9, b"p", Some(MASK)), &[]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn fragmented_pong_closes_1002() {
        let bytes = frame(false, PONG, b"p", Some(MASK));
        let code = close_code_for(Default::default(), &bytes, &[]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn fragmented_close_closes_1002() {
        let bytes = frame(false, CLOSE, &close_payload(1000, ""), Some(MASK));
        let code = close_code_for(Default::default(), &bytes, &[]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn unsolicited_pong_is_ignored() {
        let addr = echo_server(Default::default()).await;
        let mut client = raw_connect(addr, "/ws").await;
        let mut bytes = frame(true, 0xA, b"unsolicited", Some(MASK));
        bytes.extend(frame(true, 1, b"after", Some(MASK)));
        client.send(&bytes).await;
        assert_eq!(client.read_message().await, (1, b"after".to_vec()));
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn unsolicited_125_byte_pongs_inside_a_fragmented_message_are_ignored() {
        let mut bytes = frame(false, TEXT, b"frag", Some(MASK));
        bytes.extend(frame(true, PONG, &[0xEE; 125], Some(MASK)));
        bytes.extend(frame(false, CONTINUATION, b"men", Some(MASK)));
        bytes.extend(frame(true, PONG, b"", Some(MASK)));
        bytes.extend(frame(true, CONTINUATION, b"ted", Some(MASK)));
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, 1).await;
        assert_received(&received, &[(TEXT, b"fragmented".to_vec())]);
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn ping_between_fragments_is_answered_without_breaking_the_message() {
        let addr = echo_server(Default::default()).await;
        let mut client = raw_connect(addr, "/ws").await;
        let mut bytes = frame(false, 1, b"hel", Some(MASK));
        bytes.extend(frame(true, 9, b"ping!", Some(MASK)));
        bytes.extend(frame(true, 0, b"lo", Some(MASK)));
        client.send(&bytes).await;
        let mut frames = Vec::new();
        for _ in 0..3 {
            frames.push(client.read_frame().await.unwrap());
        }
        let pong = frames.iter().find(|f| f.opcode == 0xA).expect("a pong");
        assert_eq!(pong.payload, b"ping!");
        let data: Vec<u8> = frames
            .iter()
            .filter(|f| f.opcode != 0xA)
            .flat_map(|f| f.payload.clone())
            .collect();
        assert_eq!(data, b"hello");
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn pings_between_all_ten_fragments_of_a_binary_message_are_all_answered() {
        let payload = pattern(1000, 3);
        let cuts: Vec<usize> = (1..10).map(|i| i * 100).collect();
        let mut bytes = Vec::new();
        let mut start = 0;
        for (i, &end) in cuts.iter().chain([&1000]).enumerate() {
            let op = if i == 0 { BINARY } else { CONTINUATION };
            bytes.extend(frame(end == 1000, op, &payload[start..end], Some(MASK)));
            if end < 1000 {
                bytes.extend(frame(true, PING, &[i as u8; 3], Some(MASK)));
            }
            start = end;
        }
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, 10).await;
        let pongs: Vec<&Received> = received.iter().filter(|m| m.0 == PONG).collect();
        let expected_pongs: Vec<Received> = (0..9u8).map(|i| (PONG, vec![i; 3])).collect();
        assert_eq!(pongs, expected_pongs.iter().collect::<Vec<_>>());
        let data: Vec<Received> = received.into_iter().filter(|m| m.0 != PONG).collect();
        assert_received(&data, &[(BINARY, payload)]);
        close_cleanly(client).await;
    }
}

mod fragmentation {
    //! Messages in fragments (§5.4).

    use super::*;

    /// The message cut into 1 to 10 fragments, all in one write.
    async fn in_1_to_10_fragments(opcode: u8) {
        let payload = payload_for(opcode, 100);
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for n in 1..=10 {
            // n fragments of unequal size, cut anywhere (inside code
            // points for text, which fragments may do).
            let cuts: Vec<usize> = (1..n).map(|i| i * 100 / n + i % 3).collect();
            bytes.extend(fragments(opcode, &payload, &cuts));
            expected.push((opcode, payload.clone()));
        }
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, expected.len()).await;
        assert_received(&received, &expected);
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn text_message_in_1_to_10_fragments_is_echoed_whole() {
        in_1_to_10_fragments(TEXT).await;
    }

    #[tokio::test]
    async fn binary_message_in_1_to_10_fragments_is_echoed_whole() {
        in_1_to_10_fragments(BINARY).await;
    }

    #[tokio::test]
    async fn empty_first_middle_and_last_fragments_are_echoed_whole() {
        let cases: [&[&[u8]]; 5] = [
            &[b"", b"abc", b"def"],
            &[b"abc", b"", b"def"],
            &[b"abc", b"def", b""],
            &[b"", b"abc", b"", b"", b"def", b""],
            &[b"", b"", b"", b"", b"", b"", b"", b"", b"", b"x"],
        ];
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for opcode in [TEXT, BINARY] {
            for parts in cases {
                for (i, part) in parts.iter().enumerate() {
                    let op = if i == 0 { opcode } else { CONTINUATION };
                    bytes.extend(frame(i == parts.len() - 1, op, part, Some(MASK)));
                }
                expected.push((opcode, parts.concat()));
            }
        }
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, expected.len()).await;
        assert_received(&received, &expected);
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn message_of_only_empty_fragments_is_echoed_as_an_empty_message() {
        let mut bytes = Vec::new();
        for opcode in [TEXT, BINARY] {
            bytes.extend(frame(false, opcode, b"", Some(MASK)));
            bytes.extend(frame(false, CONTINUATION, b"", Some(MASK)));
            bytes.extend(frame(true, CONTINUATION, b"", Some(MASK)));
        }
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, 2).await;
        assert_received(&received, &[(TEXT, vec![]), (BINARY, vec![])]);
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn stray_continuation_closes_1002() {
        let code = close_code_for(Default::default(), &frame(true, 0, b"x", Some(MASK)), &[]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn continuation_after_a_complete_fragmented_message_closes_1002_after_the_echo() {
        let mut bytes = fragments(TEXT, b"whole", &[2]);
        bytes.extend(frame(true, CONTINUATION, b"more", Some(MASK)));
        let code = close_code_for(Default::default(), &bytes, &[(TEXT, b"whole")]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn new_message_inside_fragmented_message_closes_1002() {
        let mut bytes = frame(false, 1, b"part", Some(MASK));
        bytes.extend(frame(true, 1, b"new", Some(MASK)));
        // The first fragment is echoed as it arrived (buffer API), then the
        // violation is answered.
        let addr = echo_server(Default::default()).await;
        let mut client = raw_connect(addr, "/ws").await;
        client.send(&bytes).await;
        let first = client.read_frame().await.unwrap();
        assert_eq!(
            (first.fin, first.opcode, first.payload.as_slice()),
            (false, 1, &b"part"[..])
        );
        let frames = client.read_to_end().await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].close_code(), Some(1002));
    }

    #[tokio::test]
    async fn binary_frame_inside_fragmented_binary_message_closes_1002() {
        let mut bytes = frame(false, BINARY, b"part", Some(MASK));
        bytes.extend(frame(true, BINARY, b"new", Some(MASK)));
        first_frame_then_close(&bytes, (false, BINARY, b"part"), 1002).await;
    }

    #[tokio::test]
    async fn text_frame_inside_fragmented_binary_message_closes_1002() {
        let mut bytes = frame(false, BINARY, b"part", Some(MASK));
        bytes.extend(frame(false, TEXT, b"new", Some(MASK)));
        first_frame_then_close(&bytes, (false, BINARY, b"part"), 1002).await;
    }
}

mod utf8 {
    //! Text must be UTF-8 (§5.6, §8.1), checked as it arrives.

    use super::*;

    /// Code points at the edges of every sequence length: 1 byte (a,
    /// U+007F), 2 bytes (U+0080, é, U+07FF), 3 bytes (U+0800, €, U+D7FF,
    /// U+E000, U+FFFD, U+FFFF), 4 bytes (U+10000, 𝄞, U+10FFFF).
    const EDGES: &str = "a\u{7F}\u{80}\u{E9}\u{7FF}\u{800}\u{20AC}\u{D7FF}\u{E000}\u{FFFD}\u{FFFF}\u{10000}\u{1D11E}\u{10FFFF}z";

    #[tokio::test]
    async fn valid_1_to_4_byte_sequences_split_into_two_fragments_at_every_offset() {
        let text = EDGES.as_bytes();
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for cut in 0..=text.len() {
            bytes.extend(fragments(TEXT, text, &[cut]));
            expected.push((TEXT, text.to_vec()));
        }
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, expected.len()).await;
        assert_received(&received, &expected);
        close_cleanly(client).await;
    }

    #[tokio::test]
    async fn valid_1_to_4_byte_sequences_split_into_three_fragments_at_every_pair_of_offsets() {
        let text = EDGES.as_bytes();
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for first in 0..=text.len() {
            for second in first..=text.len() {
                bytes.extend(fragments(TEXT, text, &[first, second]));
                expected.push((TEXT, text.to_vec()));
            }
        }
        let mut client = connect().await;
        let received = exchange(&mut client, &bytes, expected.len()).await;
        assert_received(&received, &expected);
        close_cleanly(client).await;
    }

    /// One text frame: answered with exactly one Close 1007 and no echo.
    async fn text_closes_1007(payload: &[u8]) {
        let bytes = frame(true, TEXT, payload, Some(MASK));
        let code = close_code_for(Default::default(), &bytes, &[]).await;
        assert_eq!(code, Some(1007), "payload {payload:02x?}");
    }

    #[tokio::test]
    async fn overlong_2_byte_c0_af_closes_1007() {
        text_closes_1007(b"ok \xC0\xAF").await;
    }

    #[tokio::test]
    async fn overlong_3_byte_e0_80_af_closes_1007() {
        text_closes_1007(b"ok \xE0\x80\xAF").await;
    }

    #[tokio::test]
    async fn overlong_4_byte_f0_80_80_af_closes_1007() {
        text_closes_1007(b"ok \xF0\x80\x80\xAF").await;
    }

    #[tokio::test]
    async fn surrogate_ed_a0_80_closes_1007() {
        text_closes_1007(b"ok \xED\xA0\x80").await;
    }

    #[tokio::test]
    async fn surrogate_ed_bf_bf_closes_1007() {
        text_closes_1007(b"ok \xED\xBF\xBF").await;
    }

    #[tokio::test]
    async fn above_u10ffff_f4_90_80_80_closes_1007() {
        text_closes_1007(b"ok \xF4\x90\x80\x80").await;
    }

    #[tokio::test]
    async fn truncated_ce_at_message_end_closes_1007() {
        text_closes_1007(&["κόσμε".as_bytes(), b"\xCE"].concat()).await;
    }

    #[tokio::test]
    async fn ff_byte_mid_frame_closes_1007() {
        text_closes_1007(b"hello \xFF world").await;
    }

    #[tokio::test]
    async fn invalid_utf8_text_closes_1007() {
        let code = close_code_for(
            Default::default(),
            &frame(true, 1, b"ok\xFF", Some(MASK)),
            &[],
        )
        .await;
        assert_eq!(code, Some(1007));
    }

    #[tokio::test]
    async fn truncated_ce_at_the_end_of_a_fragmented_message_closes_1007() {
        // The first fragment ends inside a code point, which a fragment
        // may: it is echoed; the empty last fragment ends the message there.
        let mut bytes = frame(false, TEXT, b"a\xCE", Some(MASK));
        bytes.extend(frame(true, CONTINUATION, b"", Some(MASK)));
        first_frame_then_close(&bytes, (false, TEXT, b"a\xCE"), 1007).await;
    }

    #[tokio::test]
    async fn surrogate_split_across_fragments_closes_1007() {
        let mut bytes = frame(false, TEXT, b"a\xED", Some(MASK));
        bytes.extend(frame(true, CONTINUATION, b"\xA0\x80", Some(MASK)));
        first_frame_then_close(&bytes, (false, TEXT, b"a\xED"), 1007).await;
    }

    #[tokio::test]
    async fn complete_message_is_echoed_before_a_later_violation() {
        let mut bytes = frame(true, 1, b"first", Some(MASK));
        bytes.extend(frame(true, 1, b"\xED\xA0\x80", Some(MASK))); // U+D800
        let code = close_code_for(Default::default(), &bytes, &[(1, b"first")]).await;
        assert_eq!(code, Some(1007));
    }

    // Fail fast: the server answers invalid text as soon as it has read
    // the first byte that cannot be UTF-8, not at the end of the frame or
    // message (Autobahn 6.4.x).

    #[tokio::test]
    async fn invalid_first_fragment_closes_1007_before_the_next_fragment_is_sent() {
        let mut client = connect().await;
        // κόσμε, then U+D800.
        let first = b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80";
        client.send(&frame(false, TEXT, first, Some(MASK))).await;
        let close = client
            .read_frame()
            .await
            .expect("a close before the next fragment");
        assert_eq!(close.close_code(), Some(1007));
        // Only now the rest; the server may already be gone (broken pipe).
        let _ = client
            .stream
            .write_all(&frame(true, CONTINUATION, b"edited", Some(MASK)))
            .await;
        let rest = client.read_to_end().await;
        assert!(rest.is_empty(), "nothing after the close: {rest:?}");
    }

    #[tokio::test]
    async fn invalid_second_fragment_closes_1007_before_the_third_is_sent() {
        let mut client = connect().await;
        let mut bytes = frame(false, TEXT, "κόσμε".as_bytes(), Some(MASK));
        bytes.extend(frame(false, CONTINUATION, b"\xF4\x90\x80\x80", Some(MASK)));
        client.send(&bytes).await;
        let echoed = client.read_frame().await.unwrap();
        assert_eq!(
            (echoed.fin, echoed.opcode, echoed.payload.as_slice()),
            (false, TEXT, "κόσμε".as_bytes())
        );
        let close = client
            .read_frame()
            .await
            .expect("a close before the last fragment");
        assert_eq!(close.close_code(), Some(1007));
        let _ = client
            .stream
            .write_all(&frame(true, CONTINUATION, b"edited", Some(MASK)))
            .await;
        let rest = client.read_to_end().await;
        assert!(rest.is_empty(), "nothing after the close: {rest:?}");
    }

    #[tokio::test]
    async fn invalid_utf8_fails_fast_before_the_frame_ends() {
        // The frame announces 1000 bytes but only an invalid prefix is sent:
        // the server must not wait for the rest.
        let full = frame(true, 1, &[0xF4, 0x90, 0x80, 0x80].repeat(250), Some(MASK));
        let header_and_prefix = &full[..8 + 4];
        let addr = echo_server(Default::default()).await;
        let mut client = raw_connect(addr, "/ws").await;
        client.send(header_and_prefix).await;
        let close = client
            .read_frame()
            .await
            .expect("close before the frame ended");
        assert_eq!(close.close_code(), Some(1007));
    }

    #[tokio::test]
    async fn ff_after_a_2000_byte_valid_prefix_fails_before_the_frame_ends() {
        // A 100 000-byte frame of which only a valid prefix and one 0xFF
        // are sent: the prefix may be echoed, then the Close comes without
        // the rest of the frame.
        let valid = utf8_text(2000).into_bytes();
        let mut payload = valid.clone();
        payload.push(0xFF);
        payload.resize(100_000, b'x');
        let full = frame(true, TEXT, &payload, Some(MASK));
        let mut client = connect().await;
        client.send(&full[..14 + 2001]).await;
        let mut echoed = Vec::new();
        let close = loop {
            let frame = client
                .read_frame()
                .await
                .expect("a close before the frame ended");
            if frame.opcode == CLOSE {
                break frame;
            }
            assert!(!frame.fin, "the invalid message cannot end: {frame:?}");
            echoed.extend(frame.payload);
        };
        assert!(
            valid.starts_with(&echoed),
            "only the valid prefix is echoed"
        );
        assert_eq!(close.close_code(), Some(1007));
        let rest = client.read_to_end().await;
        assert!(rest.is_empty(), "nothing after the close: {rest:?}");
    }
}

mod close {
    //! Close codes and reasons (§5.5.1, §7.4) and the closing handshake
    //! (§7.1): the server echoes the code, then closes TCP first.

    use super::*;

    /// 1000–1003, 1007–1014 and 3000–4999 (both ends of the registered
    /// and private-use ranges).
    #[tokio::test]
    async fn allowed_close_codes_are_echoed_with_their_code_and_reason() {
        let addr = echo_server(Default::default()).await;
        let codes = (1000..=1003)
            .chain(1007..=1014)
            .chain([3000, 3999, 4000, 4999]);
        for code in codes {
            let mut client = raw_connect(addr, "/ws").await;
            let payload = close_payload(code, &format!("reason {code}"));
            client.send(&frame(true, CLOSE, &payload, Some(MASK))).await;
            let frames = client.read_to_end().await;
            assert_eq!(frames.len(), 1, "code {code}: {frames:?}");
            assert_eq!((frames[0].opcode, &frames[0].payload), (CLOSE, &payload));
        }
    }

    #[tokio::test]
    async fn invalid_close_codes_close_1002() {
        let addr = echo_server(Default::default()).await;
        let codes = [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for bad in codes {
            let mut client = raw_connect(addr, "/ws").await;
            let bytes = frame(true, 8, &close_payload(bad, ""), Some(MASK));
            client.send(&bytes).await;
            let code = close_code_after(&mut client, &[]).await;
            assert_eq!(code, Some(1002), "close code {bad}");
        }
    }

    #[tokio::test]
    async fn one_byte_close_payload_closes_1002() {
        let code = close_code_for(Default::default(), &frame(true, 8, &[3], Some(MASK)), &[]).await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn empty_close_payload_is_answered_with_an_empty_close() {
        let mut client = connect().await;
        client.send(&frame(true, CLOSE, b"", Some(MASK))).await;
        let frames = client.read_to_end().await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!((frames[0].opcode, frames[0].close_code()), (CLOSE, None));
        assert!(frames[0].payload.is_empty(), "{frames:?}");
    }

    #[tokio::test]
    async fn invalid_utf8_close_reason_closes_1007() {
        // RFC 6455 allows 1002 or 1007 here; this server answers 1007
        // (invalid payload data), as for invalid UTF-8 in a text message.
        let mut payload = close_payload(1000, "");
        payload.extend_from_slice(b"\xC0\xAF");
        let code = close_code_for(
            Default::default(),
            &frame(true, 8, &payload, Some(MASK)),
            &[],
        )
        .await;
        assert_eq!(code, Some(1007));
    }

    #[tokio::test]
    async fn close_with_123_byte_reason_is_echoed_and_tcp_closed_by_the_server() {
        let addr = echo_server(Default::default()).await;
        let mut client = raw_connect(addr, "/ws").await;
        let reason = "r".repeat(123);
        client
            .send(&frame(true, 8, &close_payload(4999, &reason), Some(MASK)))
            .await;
        let frames = client.read_to_end().await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].payload, close_payload(4999, &reason));
    }

    #[tokio::test]
    async fn close_with_123_byte_multibyte_reason_is_echoed() {
        let reason = format!("{}a", "é".repeat(61));
        assert_eq!(reason.len(), 123);
        let payload = close_payload(1000, &reason);
        let mut client = connect().await;
        client.send(&frame(true, CLOSE, &payload, Some(MASK))).await;
        let frames = client.read_to_end().await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!((frames[0].opcode, &frames[0].payload), (CLOSE, &payload));
    }

    #[tokio::test]
    async fn close_with_124_byte_reason_closes_1002() {
        // 126 bytes of payload: over the 125-byte control frame limit.
        let payload = close_payload(1000, &"r".repeat(124));
        let code = close_code_for(
            Default::default(),
            &frame(true, CLOSE, &payload, Some(MASK)),
            &[],
        )
        .await;
        assert_eq!(code, Some(1002));
    }

    #[tokio::test]
    async fn messages_before_close_in_the_same_write_are_echoed_first() {
        let mut bytes = frame(true, TEXT, b"one", Some(MASK));
        bytes.extend(frame(true, BINARY, b"two", Some(MASK)));
        bytes.extend(frame(true, CLOSE, &close_payload(1001, "away"), Some(MASK)));
        let mut client = connect().await;
        client.send(&bytes).await;
        let frames = client.read_to_end().await;
        let got: Vec<(u8, &[u8])> = frames
            .iter()
            .map(|f| (f.opcode, f.payload.as_slice()))
            .collect();
        let close = close_payload(1001, "away");
        assert_eq!(
            got,
            [(TEXT, &b"one"[..]), (BINARY, b"two"), (CLOSE, &close)]
        );
    }

    #[tokio::test]
    async fn frames_after_close_in_the_same_write_are_ignored() {
        // After the client's Close nothing it sends is processed (§5.5.1):
        // no echo, no pong; only the Close is answered, then TCP closes.
        let mut bytes = frame(true, CLOSE, &close_payload(1000, "bye"), Some(MASK));
        bytes.extend(frame(true, TEXT, b"after", Some(MASK)));
        bytes.extend(frame(true, PING, b"ping", Some(MASK)));
        bytes.extend(frame(true, BINARY, &[1, 2, 3], Some(MASK)));
        let mut client = connect().await;
        client.send(&bytes).await;
        let frames = client.read_to_end().await;
        assert_eq!(frames.len(), 1, "only the close echo: {frames:?}");
        assert_eq!(frames[0].payload, close_payload(1000, "bye"));
    }

    #[tokio::test]
    async fn close_in_the_middle_of_a_fragmented_message_is_echoed() {
        // Control frames may come between fragments (§5.4), Close too.
        let mut bytes = frame(false, TEXT, b"part", Some(MASK));
        bytes.extend(frame(true, CLOSE, &close_payload(1000, ""), Some(MASK)));
        let mut client = connect().await;
        client.send(&bytes).await;
        let frames = client.read_to_end().await;
        let got: Vec<(bool, u8, &[u8])> = frames
            .iter()
            .map(|f| (f.fin, f.opcode, f.payload.as_slice()))
            .collect();
        let close = close_payload(1000, "");
        assert_eq!(got, [(false, TEXT, &b"part"[..]), (true, CLOSE, &close)]);
    }
}

mod limits {
    //! `max_message_size` and `max_frame_size`: refused with 1009 from the
    //! frame header, without reading (let alone buffering) the payload.

    use super::*;

    #[tokio::test]
    async fn message_over_max_size_closes_1009_from_the_header() {
        let options = WebSocketOptions::default().max_message_size(1024);
        // Only the header of a 2000-byte frame: refused without the payload.
        let full = frame(true, 2, &[0u8; 2000], Some(MASK));
        let code = close_code_for(options, &full[..8], &[]).await;
        assert_eq!(code, Some(1009));
    }

    #[tokio::test]
    async fn frame_header_announcing_1_gib_closes_1009_at_once_with_a_1_mib_limit() {
        // Only the header and 1 KiB of the payload are ever sent: the
        // answer cannot wait for (or buffer) the rest.
        let options = WebSocketOptions::default().max_message_size(1 << 20);
        let mut bytes = vec![0x82, 0x80 | 127];
        bytes.extend((1u64 << 30).to_be_bytes());
        bytes.extend(MASK);
        bytes.extend([0u8; 1024]);
        let code = close_code_for(options, &bytes, &[]).await;
        assert_eq!(code, Some(1009));
    }

    #[tokio::test]
    async fn message_over_max_size_by_fragments_closes_1009() {
        let options = WebSocketOptions::default()
            .max_message_size(1024)
            .max_frame_size(600);
        let mut bytes = frame(false, 2, &[1u8; 600], Some(MASK));
        bytes.extend(frame(true, 0, &[2u8; 600], Some(MASK)));
        let addr = echo_server(options).await;
        let mut client = raw_connect(addr, "/ws").await;
        client.send(&bytes).await;
        // The first fragment is echoed; the second's header overflows.
        let first = client.read_frame().await.unwrap();
        assert_eq!(first.payload.len(), 600);
        let frames = client.read_to_end().await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].close_code(), Some(1009));
    }

    #[tokio::test]
    async fn frame_over_max_frame_size_closes_1009_from_the_header() {
        let options = WebSocketOptions::default().max_frame_size(100);
        // Only the header of a 101-byte frame (the message limit is the
        // default 64 MiB, so the frame limit is what refuses it).
        let full = frame(true, 2, &[0u8; 101], Some(MASK));
        let code = close_code_for(options, &full[..8], &[]).await;
        assert_eq!(code, Some(1009));
    }

    #[tokio::test]
    async fn message_and_frame_of_exactly_the_limits_are_echoed() {
        let options = WebSocketOptions::default()
            .max_message_size(1024)
            .max_frame_size(600);
        let text = utf8_text(1024).into_bytes();
        let binary = pattern(600, 9);
        let mut bytes = fragments(TEXT, &text, &[600]);
        bytes.extend(frame(true, BINARY, &binary, Some(MASK)));
        let mut client = connect_with(options).await;
        let received = exchange(&mut client, &bytes, 2).await;
        assert_received(&received, &[(TEXT, text), (BINARY, binary)]);
        close_cleanly(client).await;
    }
}

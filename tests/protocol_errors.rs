//! Raw-frame tests: each protocol violation is answered with the RFC 6455
//! close code, and the server then closes the TCP connection.

mod common;

use common::*;
use tower_websockets::WebSocketOptions;

/// Sends `bytes` on a fresh echo connection and returns the close code the
/// server answers with, checking that nothing but that Close frame (after
/// the echoes in `expect_echoes`) is sent and that the TCP connection is
/// then closed.
async fn close_code_for(
    options: WebSocketOptions,
    bytes: &[u8],
    expect_echoes: &[(u8, &[u8])],
) -> Option<u16> {
    let addr = echo_server(options).await;
    let mut client = raw_connect(addr, "/ws").await;
    client.send(bytes).await;
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

#[tokio::test]
async fn unmasked_client_frame_closes_1002() {
    let code = close_code_for(Default::default(), &frame(true, 1, b"hi", None), &[]).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn rsv_bits_without_extension_close_1002() {
    for rsv in [0b100, 0b010, 0b001] {
        let code = close_code_for(
            Default::default(),
            &frame_rsv(true, rsv, 1, b"hi", Some(MASK)),
            &[],
        )
        .await;
        assert_eq!(code, Some(1002), "rsv {rsv:03b}");
    }
}

#[tokio::test]
async fn reserved_opcodes_close_1002() {
    for opcode in [3u8, 7, 0xB, 0xF] {
        let code = close_code_for(
            Default::default(),
            &frame(true, opcode, b"", Some(MASK)),
            &[],
        )
        .await;
        assert_eq!(code, Some(1002), "opcode {opcode:#x}");
    }
}

#[tokio::test]
async fn control_frame_over_125_bytes_closes_1002() {
    let code = close_code_for(
        Default::default(),
        &frame(true, 9, &[b'p'; 126], Some(MASK)),
        &[],
    )
    .await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn fragmented_ping_closes_1002() {
    let code = close_code_for(Default::default(), &frame(false, 9, b"p", Some(MASK)), &[]).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn stray_continuation_closes_1002() {
    let code = close_code_for(Default::default(), &frame(true, 0, b"x", Some(MASK)), &[]).await;
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
async fn one_byte_close_payload_closes_1002() {
    let code = close_code_for(Default::default(), &frame(true, 8, &[3], Some(MASK)), &[]).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn invalid_close_codes_close_1002() {
    for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        let code = close_code_for(
            Default::default(),
            &frame(true, 8, &close_payload(bad, ""), Some(MASK)),
            &[],
        )
        .await;
        assert_eq!(code, Some(1002), "close code {bad}");
    }
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
async fn invalid_utf8_close_reason_closes_1007() {
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
async fn complete_message_is_echoed_before_a_later_violation() {
    let mut bytes = frame(true, 1, b"first", Some(MASK));
    bytes.extend(frame(true, 1, b"\xED\xA0\x80", Some(MASK))); // U+D800
    let code = close_code_for(Default::default(), &bytes, &[(1, b"first")]).await;
    assert_eq!(code, Some(1007));
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
async fn message_over_max_size_closes_1009_from_the_header() {
    let options = WebSocketOptions::default().max_message_size(1024);
    // Only the header of a 2000-byte frame: refused without the payload.
    let full = frame(true, 2, &[0u8; 2000], Some(MASK));
    let code = close_code_for(options, &full[..8], &[]).await;
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
async fn frame_over_max_frame_size_closes_1009() {
    let options = WebSocketOptions::default().max_frame_size(100);
    let full = frame(true, 2, &[0u8; 101], Some(MASK));
    let code = close_code_for(options, &full, &[]).await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn ping_is_answered_with_the_same_payload() {
    let addr = echo_server(Default::default()).await;
    let mut client = raw_connect(addr, "/ws").await;
    for len in [0usize, 1, 125] {
        let payload: Vec<u8> = (0..len as u8).collect();
        client.send(&frame(true, 9, &payload, Some(MASK))).await;
        let pong = client.read_frame().await.unwrap();
        assert_eq!((pong.opcode, pong.payload), (0xA, payload));
    }
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
}

#[tokio::test]
async fn unsolicited_pong_is_ignored() {
    let addr = echo_server(Default::default()).await;
    let mut client = raw_connect(addr, "/ws").await;
    let mut bytes = frame(true, 0xA, b"unsolicited", Some(MASK));
    bytes.extend(frame(true, 1, b"after", Some(MASK)));
    client.send(&bytes).await;
    assert_eq!(client.read_message().await, (1, b"after".to_vec()));
}

#[tokio::test]
async fn close_is_echoed_and_tcp_closed_by_the_server() {
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

//! Cancel safety: dropping receive and send futures part-way loses and
//! corrupts nothing. The peer is a scripted in-memory stream that dribbles
//! bytes, and the socket runs over it with `WebSocket::from_raw_socket`.

mod common;

use std::time::Duration;

use common::{MASK, frame, parse_server_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
use tower_websockets::{Message, MessageType, WebSocket, WebSocketOptions};

fn options() -> WebSocketOptions {
    WebSocketOptions::default().keep_alive_interval(None)
}

#[tokio::test]
async fn cancelled_receives_continue_the_same_message() {
    let (server_io, mut peer) = duplex(64);
    let mut socket = WebSocket::from_raw_socket(server_io, options()).unwrap();
    let text = "fragmented ünïcödé message €𝄞 ".repeat(20);
    let bytes = text.as_bytes();
    let mut wire = frame(false, 1, &bytes[..bytes.len() / 2], Some(MASK));
    wire.extend(frame(true, 9, b"ping", Some(MASK)));
    wire.extend(frame(true, 0, &bytes[bytes.len() / 2..], Some(MASK)));

    // The peer dribbles the frames 7 bytes at a time, slowly.
    let writer = tokio::spawn(async move {
        for chunk in wire.chunks(7) {
            peer.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        peer
    });

    // Receive with a timer that often fires first, dropping the receive.
    let mut received = Vec::new();
    let mut cancelled = 0;
    let mut buf = [0u8; 16];
    loop {
        tokio::select! {
            result = socket.receive_buffer(&mut buf) => {
                let result = result.unwrap();
                assert_eq!(result.message_type(), MessageType::Text);
                received.extend_from_slice(&buf[..result.count()]);
                if result.end_of_message() { break; }
            }
            _ = tokio::time::sleep(Duration::from_micros(300)) => cancelled += 1,
        }
    }
    assert!(cancelled > 0, "the timer never cancelled a receive");
    assert_eq!(String::from_utf8(received).unwrap(), text);

    // The ping in the middle was answered.
    let mut peer = writer.await.unwrap();
    let mut out = vec![0u8; 64];
    let n = tokio::time::timeout(common::TIMEOUT, peer.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    let (pong, _) = parse_server_frame(&out[..n]).expect("a pong");
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"ping"[..]));
}

#[tokio::test]
async fn cancelled_receive_message_keeps_the_partial_message() {
    let (server_io, mut peer) = duplex(64);
    let mut socket = WebSocket::from_raw_socket(server_io, options()).unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let wire = frame(true, 2, &data, Some(MASK));
    tokio::spawn(async move {
        for chunk in wire.chunks(100) {
            peer.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Keep the stream open until the test ends.
        tokio::time::sleep(common::TIMEOUT).await;
        drop(peer);
    });
    let mut cancelled = 0;
    let message = loop {
        tokio::select! {
            message = socket.receive_message() => break message.unwrap(),
            _ = tokio::time::sleep(Duration::from_micros(500)) => cancelled += 1,
        }
    };
    assert!(cancelled > 0);
    assert_eq!(message, Message::binary(data));
}

#[tokio::test]
async fn cancelled_send_never_leaves_half_a_frame() {
    // A small pipe and a slow reader: a large send cannot finish at once.
    let (server_io, mut peer) = duplex(1024);
    let mut socket = WebSocket::from_raw_socket(server_io, options()).unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();

    let reader = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let n = peer.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        bytes
    });

    // Start the big send and drop it part-way.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(5),
        socket.send_buffer(&big, MessageType::Binary, true),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the send finished before it could be cancelled"
    );
    // The next send must come after the whole first frame.
    socket
        .send_buffer(b"after", MessageType::Text, true)
        .await
        .unwrap();
    socket
        .close_output(tower_websockets::CloseCode::NORMAL, "")
        .await
        .unwrap();
    drop(socket);

    let bytes = tokio::time::timeout(common::TIMEOUT, reader)
        .await
        .unwrap()
        .unwrap();
    let mut frames = Vec::new();
    let mut pos = 0;
    while let Some((frame, used)) = parse_server_frame(&bytes[pos..]) {
        frames.push(frame);
        pos += used;
    }
    assert_eq!(pos, bytes.len(), "trailing partial frame");
    assert_eq!(
        frames.len(),
        3,
        "{:?}",
        frames
            .iter()
            .map(|f| (f.opcode, f.payload.len()))
            .collect::<Vec<_>>()
    );
    assert_eq!((frames[0].opcode, &frames[0].payload), (2, &big));
    assert_eq!(
        (frames[1].opcode, frames[1].payload.as_slice()),
        (1, &b"after"[..])
    );
    assert_eq!(frames[2].close_code(), Some(1000));
}

#[tokio::test]
async fn misuse_gives_errors_not_panics() {
    let (server_io, mut peer) = duplex(4096);
    let mut socket = WebSocket::from_raw_socket(server_io, options()).unwrap();
    // Close as a data type, an empty receive buffer, a type change mid-message.
    assert!(
        socket
            .send_buffer(b"x", MessageType::Close, true)
            .await
            .is_err()
    );
    assert!(socket.receive_buffer(&mut []).await.is_err());
    socket
        .send_buffer(b"part", MessageType::Text, false)
        .await
        .unwrap();
    assert!(
        socket
            .send_buffer(b"x", MessageType::Binary, true)
            .await
            .is_err()
    );
    socket
        .send_buffer(b"end", MessageType::Text, true)
        .await
        .unwrap();
    // After our close: no more sends.
    socket
        .close_output(tower_websockets::CloseCode::NORMAL, "done")
        .await
        .unwrap();
    let err = socket
        .send_buffer(b"late", MessageType::Text, true)
        .await
        .unwrap_err();
    assert!(
        matches!(err, tower_websockets::Error::SendAfterClose),
        "{err}"
    );
    // The peer answers; the handshake completes; then receive reports Closed.
    peer.write_all(&frame(
        true,
        8,
        &common::close_payload(1000, ""),
        Some(MASK),
    ))
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let result = socket.receive_buffer(&mut buf).await.unwrap();
    assert_eq!(result.message_type(), MessageType::Close);
    assert_eq!(socket.state(), tower_websockets::WebSocketState::Closed);
    assert!(matches!(
        socket.receive_buffer(&mut buf).await,
        Err(tower_websockets::Error::Closed)
    ));
    // Closing again is a no-op; aborting a closed socket leaves it closed.
    socket
        .close_with(tower_websockets::CloseCode::NORMAL, "")
        .await
        .unwrap();
    socket.abort();
    assert_eq!(socket.state(), tower_websockets::WebSocketState::Closed);
}

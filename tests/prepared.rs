//! Prepared messages and sends from handles on real sockets: one frame to
//! many sockets over HTTP/1.1 and HTTP/2, compressed once per variant
//! (checked on the wire), never inside the owner's fragmented message, and
//! bounded for a subscriber that does not read. Allocations are counted in
//! `tests/prepared_allocations.rs`, a binary of its own.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::deflate::*;
use common::h2::*;
use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tower::ServiceBuilder;
use tower_websockets::{
    DeflateOptions, Error, MessageType, PreparedMessage, TrySendError, WebSocket, WebSocketHandle,
    WebSocketLayer, WebSocketOptions, WebSocketUpgrade,
};

type Room = Arc<Mutex<Vec<WebSocketHandle>>>;

/// A server whose every socket joins `room` and then runs `owner` (by
/// default: receive until the socket is finished).
async fn room_server(options: WebSocketOptions) -> (std::net::SocketAddr, Room) {
    owner_server(options, |mut socket| async move {
        while socket.recv().await.is_some() {}
    })
    .await
}

async fn owner_server<F, Fut>(options: WebSocketOptions, owner: F) -> (std::net::SocketAddr, Room)
where
    F: Fn(WebSocket) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let room: Room = Arc::default();
    let members = room.clone();
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(move |mut req: Request<Incoming>| {
            let members = members.clone();
            let owner = owner.clone();
            async move {
                if let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) {
                    drop(req);
                    if let Ok(socket) = upgrade.accept().await {
                        members.lock().unwrap().push(socket.handle());
                        owner(socket).await;
                    }
                }
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    (serve(service).await, room)
}

/// Waits until `n` sockets joined.
async fn members(room: &Room, n: usize) -> Vec<WebSocketHandle> {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if room.lock().unwrap().len() >= n {
                return room.lock().unwrap().clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every socket joined")
}

/// Reads the next server frame from any stream (an HTTP/2 one here).
async fn read_frame(io: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> ServerFrame {
    loop {
        if let Some((frame, used)) = parse_server_frame(buf) {
            buf.drain(..used);
            return frame;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(TIMEOUT, io.read(&mut chunk))
            .await
            .expect("a frame in time")
            .unwrap();
        assert!(n > 0, "the stream ended inside a frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn data(frame: &ServerFrame) -> (u8, &[u8]) {
    assert!(frame.fin, "{frame:?}");
    (frame.opcode, &frame.payload)
}

#[tokio::test]
async fn every_socket_gets_the_same_frames_over_http1_and_http2() {
    // Room for all three at once: the queue's bound is tested below.
    let options = WebSocketOptions::default().max_buffered_amount(1 << 20);
    let (addr, room) = room_server(options).await;
    let mut tcp_clients = Vec::new();
    for _ in 0..8 {
        tcp_clients.push(raw_connect(addr, "/ws").await);
    }
    let mut sender = h2_connect(addr).await;
    let mut h2_clients = Vec::new();
    for _ in 0..4 {
        h2_clients.push(open_stream(&mut sender, "/ws", &[]).await.0);
    }
    let handles = members(&room, 12).await;

    let large: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let messages = [
        PreparedMessage::text("to everyone"),
        PreparedMessage::binary(&large),
        PreparedMessage::text(""),
    ];
    for message in &messages {
        for handle in &handles {
            handle.try_send_prepared(message).unwrap();
        }
    }
    let expected = [
        (0x1, &b"to everyone"[..]),
        (0x2, &large[..]),
        (0x1, &b""[..]),
    ];
    for client in &mut tcp_clients {
        for want in expected {
            assert_eq!(data(&client.read_frame().await.unwrap()), want);
        }
    }
    for stream in &mut h2_clients {
        let mut buf = Vec::new();
        for want in expected {
            assert_eq!(data(&read_frame(stream, &mut buf).await), want);
        }
    }
}

#[tokio::test]
async fn compressed_once_per_variant_and_with_its_own_window_under_takeover() {
    let options = WebSocketOptions::default().permessage_deflate(Some(DeflateOptions::default()));
    let (addr, room) = room_server(options).await;
    let offers = [
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
        "permessage-deflate",
    ];
    let mut clients = Vec::new();
    for offer in offers {
        let (client, head) = connect_offering(addr, offer).await;
        assert!(extensions_header(&head).is_some(), "{head}");
        clients.push(client);
        // Join in order, so handles and clients line up.
        members(&room, clients.len()).await;
    }
    let handles = members(&room, offers.len()).await;
    let text = "the same words for every member of the room ".repeat(40);
    let message = PreparedMessage::text(&text);
    for _ in 0..2 {
        for handle in &handles {
            handle.try_send_prepared(&message).unwrap();
        }
    }
    let mut wire = Vec::new();
    for client in &mut clients {
        let first = client.read_frame().await.unwrap();
        let second = client.read_frame().await.unwrap();
        assert!(first.rsv == 0b100 && second.rsv == 0b100, "{first:?}");
        assert!(first.payload.len() < text.len() / 4, "compressed");
        wire.push((first.payload, second.payload));
    }
    // Without context takeover a message compresses to the same bytes
    // every time; one variant's sockets share them.
    for (first, second) in &wire[..4] {
        assert_eq!(first, second);
    }
    assert_eq!(wire[0], wire[1], "one variant: the same frame");
    assert_eq!(wire[2], wire[3], "one variant: the same frame");
    assert_ne!(wire[0].0, wire[2].0, "another window, another frame");
    // With takeover the second refers back to the first.
    let (first, second) = &wire[4];
    assert!(
        second.len() < first.len(),
        "{} {}",
        first.len(),
        second.len()
    );
    let mut inflate = flate2::Decompress::new(false);
    for payload in [first, second] {
        let mut data = payload.clone();
        data.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(text.len() + 64);
        inflate
            .decompress_vec(&data, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, text.as_bytes());
    }
    for (bits, (payload, _)) in [(15, &wire[0]), (10, &wire[2])] {
        let mut inflate = flate2::Decompress::new_with_window_bits(false, bits);
        let mut data = payload.clone();
        data.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(text.len() + 64);
        inflate
            .decompress_vec(&data, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, text.as_bytes());
    }
}

/// What the owner's task is told to send.
enum Step {
    Fragment(&'static [u8], bool),
}

#[tokio::test]
async fn a_handle_never_sends_inside_the_owners_fragmented_message() {
    let (steps_tx, steps_rx) = mpsc::unbounded_channel::<Step>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let steps = Arc::new(tokio::sync::Mutex::new(steps_rx));
    let (addr, room) = owner_server(WebSocketOptions::default(), move |mut socket| {
        let steps = steps.clone();
        let done = done_tx.clone();
        async move {
            let mut steps = steps.lock().await;
            while let Some(Step::Fragment(bytes, end)) = steps.recv().await {
                socket
                    .send_buffer(bytes, MessageType::Text, end)
                    .await
                    .unwrap();
                done.send(()).unwrap();
            }
        }
    })
    .await;
    let mut client = raw_connect(addr, "/ws").await;
    let handle = members(&room, 1).await.remove(0);
    let message = PreparedMessage::binary(b"shared");

    steps_tx.send(Step::Fragment(b"frag", false)).unwrap();
    done_rx.recv().await.unwrap();
    assert!(matches!(
        handle.try_send_prepared(&message),
        Err(TrySendError::Full(()))
    ));
    assert!(matches!(
        handle.try_send(tower_websockets::Message::text("mine")),
        Err(TrySendError::Full(_))
    ));
    // A ping may go between fragments.
    handle
        .try_send(tower_websockets::Message::Ping("p".into()))
        .unwrap();
    steps_tx.send(Step::Fragment(b"ment", true)).unwrap();
    done_rx.recv().await.unwrap();
    handle.try_send_prepared(&message).unwrap();

    let mut frames = Vec::new();
    for _ in 0..4 {
        let frame = client.read_frame().await.unwrap();
        frames.push((frame.opcode, frame.fin, frame.payload));
    }
    assert_eq!(
        frames,
        [
            (0x1, false, b"frag".to_vec()),
            (0x9, true, b"p".to_vec()),
            (0x0, true, b"ment".to_vec()),
            (0x2, true, b"shared".to_vec()),
        ]
    );
}

#[tokio::test]
async fn a_subscriber_that_never_reads_fills_its_bound_while_the_others_flow() {
    let options = WebSocketOptions::default().close_timeout(Duration::from_millis(300));
    let (addr, room) = room_server(options).await;
    // Connects, then never reads a byte.
    let _slow = raw_connect(addr, "/ws").await;
    let handles = members(&room, 1).await;
    let mut fast = raw_connect(addr, "/ws").await;
    let handles = [handles[0].clone(), members(&room, 2).await[1].clone()];

    const SIZE: usize = 64 * 1024;
    let reader = tokio::spawn(async move {
        let mut got = 0usize;
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            let n = fast.stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                return got;
            }
            got += n;
        }
    });
    let message = PreparedMessage::binary(vec![7u8; SIZE]);
    let frame = SIZE + 4;
    let mut sent_to_fast = 0usize;
    let mut full_after = None;
    for i in 0..2_000 {
        // The fast one reads: wait until its queue is written.
        tokio::time::timeout(TIMEOUT, async {
            while handles[1].buffered_amount() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the fast subscriber reads");
        handles[1].try_send_prepared(&message).unwrap();
        sent_to_fast += 1;
        match handles[0].try_send_prepared(&message) {
            Ok(()) => {}
            Err(TrySendError::Full(())) => {
                full_after = Some(i);
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let full_after = full_after.expect("the slow subscriber's queue filled up");
    assert!(
        handles[0].buffered_amount() <= 64 * 1024 + frame,
        "bounded: {}",
        handles[0].buffered_amount()
    );
    // The slow one is closed; it does not answer, so it is aborted at the
    // close timeout.
    let closed = handles[0].close(tower_websockets::CloseCode::TRY_AGAIN_LATER, "too slow");
    assert!(matches!(closed.await, Err(Error::CloseTimeout)));
    assert!(matches!(
        handles[0].try_send_prepared(&message),
        Err(TrySendError::Failed(_))
    ));
    // The fast one got every message, the ones after the slow one's bound
    // included.
    handles[1]
        .close(tower_websockets::CloseCode::NORMAL, "")
        .await
        .ok();
    let got = tokio::time::timeout(TIMEOUT, reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        got >= sent_to_fast * frame,
        "{got} of {} ({full_after} sent to the slow one)",
        sent_to_fast * frame
    );
}

/// A handle's sends leave the writing to the socket's background task,
/// which cannot run during a burst from this (single-threaded) task; at
/// the bound the send writes what waits before it reports `Full`, so a
/// burst past the bound to a member whose connection takes it is not a
/// slow member.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_past_the_bound_to_a_reading_member_is_not_full() {
    let (addr, room) = room_server(WebSocketOptions::default()).await;
    let mut client = raw_connect(addr, "/ws").await;
    let handle = members(&room, 1).await.remove(0);
    let message = PreparedMessage::binary(vec![9u8; 16 * 1024]);
    for i in 0..6 {
        assert!(
            handle.try_send_prepared(&message).is_ok(),
            "message {i} of a 96 KiB burst"
        );
    }
    for _ in 0..6 {
        let frame = client.read_frame().await.unwrap();
        assert_eq!(frame.payload.len(), 16 * 1024);
    }
}

#[tokio::test]
async fn tiny_shared_frames_are_bounded_in_number_too() {
    let (addr, room) = room_server(WebSocketOptions::default()).await;
    let _slow = raw_connect(addr, "/ws").await;
    let handle = members(&room, 1).await.remove(0);
    let message = PreparedMessage::binary(b"x");
    let mut full = false;
    for _ in 0..3_000_000 {
        match handle.try_send_prepared(&message) {
            Ok(()) => {}
            Err(TrySendError::Full(())) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
        if handle.buffered_amount() > 1024 * 3 / 2 {
            tokio::task::yield_now().await;
        }
    }
    assert!(full, "the queue filled up");
    // Full long before 64 KiB of 3-byte frames: the number of queued
    // frames is bounded as well as their bytes.
    assert!(
        handle.buffered_amount() <= 1024 * 3,
        "{}",
        handle.buffered_amount()
    );
}

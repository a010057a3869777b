//! `WebSocketLayer::stats`: accepts, rejections by reason, requests that
//! did not become sockets, closes by outcome, and traffic both ways
//! (visible while a socket lives, kept once it finished).

mod common;

use std::time::Duration;

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use tower::ServiceBuilder;
use tower_websockets::{WebSocketLayer, WebSocketOptions, WebSocketStats, WebSocketUpgrade};

/// An echo server on `/ws`; `/drop` accepts and drops the socket at once;
/// `/decline` answers without accepting.
async fn counted_server(options: WebSocketOptions) -> (std::net::SocketAddr, WebSocketLayer) {
    let layer = WebSocketLayer::new(options).unwrap();
    let service = ServiceBuilder::new().layer(layer.clone()).service_fn(
        |mut req: Request<Incoming>| async move {
            match req.uri().path() {
                "/drop" => {
                    let upgrade = WebSocketUpgrade::from_request(&mut req).unwrap();
                    drop(upgrade.accept().await);
                    Ok(Response::<Body>::default())
                }
                "/decline" => Ok(Response::default()),
                _ => echo_handler(req).await,
            }
        },
    );
    (serve(service).await, layer)
}

/// A server frame's size on the wire: 2 header bytes, 2 more past 125
/// payload bytes, 8 more (not 2) past 65,535.
fn wire_len(payload: usize) -> usize {
    payload
        + match payload {
            0..=125 => 2,
            126..=65535 => 4,
            _ => 10,
        }
}

/// Waits (bounded) until the layer's stats satisfy `done`.
async fn stats_until(
    layer: &WebSocketLayer,
    done: impl Fn(&WebSocketStats) -> bool,
) -> WebSocketStats {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let stats = layer.stats();
            if done(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("stats never got there: {:?}", layer.stats()))
}

#[tokio::test]
async fn traffic_is_counted_while_a_socket_lives_and_kept_after() {
    let (addr, layer) = counted_server(WebSocketOptions::default()).await;
    let mut client = raw_connect(addr, "/ws").await;
    let mut sent = 0;
    let mut echoed = 0;
    for payload in [&b"one"[..], &[7u8; 200][..], &[1u8; 70_000][..]] {
        let out = frame(true, 2, payload, Some(MASK));
        sent += out.len();
        client.send(&out).await;
        // The echo loop sends back the pieces it received (4 KiB at most):
        // count the bytes of every frame that comes back.
        let mut back = Vec::new();
        loop {
            let piece = client.read_frame().await.expect("an echo");
            echoed += wire_len(piece.payload.len());
            back.extend_from_slice(&piece.payload);
            if piece.fin {
                break;
            }
        }
        assert_eq!(back, payload);
    }
    let live = layer.stats();
    assert_eq!(live.live, 1);
    assert_eq!(live.accepted, 1);
    assert_eq!(
        (live.traffic.messages_in, live.traffic.messages_out),
        (3, 3)
    );
    assert_eq!(live.traffic.bytes_in, sent as u64);
    assert_eq!(live.traffic.bytes_out, echoed as u64);

    let close = frame(true, 8, &close_payload(1000, "bye"), Some(MASK));
    client.send(&close).await;
    let frames = client.read_to_end().await;
    assert_eq!(frames.last().and_then(ServerFrame::close_code), Some(1000));
    let done = stats_until(&layer, |s| s.live == 0).await;
    assert_eq!(done.closed.clean, 1);
    assert_eq!(
        (done.traffic.messages_in, done.traffic.messages_out),
        (3, 3)
    );
    assert_eq!(done.traffic.bytes_in, (sent + close.len()) as u64);
    // And the answering Close: 1000 "bye".
    assert_eq!(done.traffic.bytes_out, (echoed + wire_len(5)) as u64);
}

#[tokio::test]
async fn closes_are_counted_by_outcome() {
    let options = WebSocketOptions::default()
        .keep_alive_interval(Some(Duration::from_millis(50)))
        .keep_alive_timeout(Some(Duration::from_millis(100)));
    let (addr, layer) = counted_server(options).await;

    // Protocol error: an unmasked client frame (1002).
    let mut bad = raw_connect(addr, "/ws").await;
    bad.send(&frame(true, 1, b"unmasked", None)).await;
    let frames = bad.read_to_end().await;
    assert_eq!(frames.last().and_then(ServerFrame::close_code), Some(1002));
    stats_until(&layer, |s| s.closed.protocol_error == 1).await;

    // Connection lost: the client goes away without a Close.
    let gone = raw_connect(addr, "/ws").await;
    drop(gone);
    stats_until(&layer, |s| s.closed.connection_lost == 1).await;

    // Keep-alive timeout: a client that never answers the pings.
    let mut silent = raw_connect(addr, "/ws").await;
    let frames = silent.read_to_end().await;
    assert!(frames.iter().all(|f| f.opcode == 0x9), "{frames:?}");
    stats_until(&layer, |s| s.closed.keep_alive_timeout == 1).await;

    // Left open: the handler drops its open socket (1011).
    let mut left = raw_connect(addr, "/drop").await;
    let frames = left.read_to_end().await;
    assert_eq!(frames.last().and_then(ServerFrame::close_code), Some(1011));

    let stats = stats_until(&layer, |s| s.closed.left_open == 1 && s.live == 0).await;
    assert_eq!(stats.accepted, 4);
    assert_eq!(
        (
            stats.closed.clean,
            stats.closed.aborted,
            stats.closed.close_timeout
        ),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn rejections_and_requests_that_never_became_sockets_are_counted() {
    let options = WebSocketOptions::default()
        .allowed_origins(["https://good.example"])
        .max_sockets(Some(1));
    let (addr, layer) = counted_server(options).await;

    let (_, head, _) = raw_request(
        addr,
        &handshake_request("/ws", &["Origin: https://evil.example"]),
        &[],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    let (_, head, _) = raw_request(addr, &handshake_request("/decline", &[]), &[]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let _held = raw_connect(addr, "/ws").await;
    let (_, head, _) = raw_request(addr, &handshake_request("/ws", &[]), &[]).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");

    let stats = stats_until(&layer, |s| s.not_accepted == 1).await;
    assert_eq!(
        (
            stats.rejected.origin,
            stats.rejected.capacity,
            stats.rejected.draining
        ),
        (1, 1, 0)
    );
    assert_eq!((stats.accepted, stats.live), (1, 1));
}

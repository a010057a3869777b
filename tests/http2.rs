//! WebSockets over HTTP/2 (RFC 8441): hyper's own HTTP/2 client opens
//! several WebSocket streams with extended CONNECT on one h2c connection;
//! each echoes on its own, and closing one leaves the others working.

mod common;

use common::h2::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Client;
use tokio_tungstenite::tungstenite::protocol::Role;
use tower_websockets::WebSocketOptions;

/// Opens a WebSocket stream over the h2 connection and wraps it in
/// tokio-tungstenite's client.
async fn open_ws(
    sender: &mut Sender,
    path: &str,
    extra: &[(&str, &str)],
) -> (
    WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    http::response::Parts,
) {
    let (stream, parts) = open_stream(sender, path, extra).await;
    let ws = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    (ws, parts)
}

#[tokio::test]
async fn multiplexed_websocket_streams_echo_independently() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut sender = h2_connect(addr).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(open_ws(&mut sender, "/ws", &[]).await.0);
    }
    // Interleave messages across the streams.
    for round in 0..3 {
        for (i, ws) in sockets.iter_mut().enumerate() {
            ws.send(Client::text(format!("stream {i} round {round}")))
                .await
                .unwrap();
        }
        for (i, ws) in sockets.iter_mut().enumerate() {
            let echoed = tokio::time::timeout(TIMEOUT, ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(echoed, Client::text(format!("stream {i} round {round}")));
        }
    }
    let big = vec![7u8; 300_000];
    sockets[2].send(Client::binary(big.clone())).await.unwrap();
    let echoed = tokio::time::timeout(TIMEOUT, sockets[2].next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Client::binary(big));

    // Close the middle one; the others are undisturbed.
    let mut closed = sockets.remove(1);
    closed.close(None).await.unwrap();
    while let Some(Ok(message)) = tokio::time::timeout(TIMEOUT, closed.next()).await.unwrap() {
        assert!(message.is_close(), "{message:?}");
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        ws.send(Client::text(format!("after close {i}")))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Client::text(format!("after close {i}")));
    }
    // And a new stream can still be opened on the same connection.
    let (mut fresh, _) = open_ws(&mut sender, "/ws", &[]).await;
    fresh.send(Client::text("fresh")).await.unwrap();
    assert_eq!(fresh.next().await.unwrap().unwrap(), Client::text("fresh"));
}

#[tokio::test]
async fn h2_subprotocol_is_negotiated() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut sender = h2_connect(addr).await;
    let (mut ws, parts) = open_ws(
        &mut sender,
        "/ws?protocol=superchat",
        &[("sec-websocket-protocol", "chat, superchat")],
    )
    .await;
    assert_eq!(parts.headers["sec-websocket-protocol"], "superchat");
    ws.send(Client::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Client::text("hi"));
}

#[tokio::test]
async fn h2_disallowed_origin_is_forbidden() {
    let addr =
        echo_server(WebSocketOptions::default().allowed_origins(["https://good.example"])).await;
    let mut sender = h2_connect(addr).await;
    sender.ready().await.unwrap();
    let response = sender
        .send_request(connect_request(
            "/ws",
            &[("origin", "https://evil.example")],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (mut ws, _) = open_ws(&mut sender, "/ws", &[("origin", "https://GOOD.example")]).await;
    ws.send(Client::text("ok")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Client::text("ok"));
}

#[tokio::test]
async fn h2_connect_with_wrong_version_passes_through() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut sender = h2_connect(addr).await;
    sender.ready().await.unwrap();
    let mut request = connect_request("/ws", &[]);
    request
        .headers_mut()
        .insert("sec-websocket-version", http::HeaderValue::from_static("8"));
    let response = sender.send_request(request).await.unwrap();
    // The echo handler answers a non-WebSocket request to /ws with 400.
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

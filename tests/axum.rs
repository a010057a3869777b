//! The `axum` feature: `WebSocketUpgrade` as an extractor under an axum 0.8
//! `Router`, with the layer on one route or around the whole router; an
//! axum-style handler ported by its imports; axum's rejections.
#![cfg(feature = "axum")]

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Client;
use tower_websockets::{CloseFrame, Message, WebSocketLayer, WebSocketUpgrade, close_code};

/// An axum WebSocket handler as axum's docs write it; only the imports
/// changed (`axum::extract::ws` → `tower_websockets`).
async fn ported(upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .protocols(["echo"])
        .on_upgrade(|mut socket| async move {
            while let Some(msg) = socket.recv().await {
                let Ok(msg) = msg else { return };
                match msg {
                    Message::Text(text) if text == "bye" => {
                        let frame = CloseFrame {
                            code: close_code::NORMAL,
                            reason: "see you".into(),
                        };
                        let _ = socket.send(Message::Close(Some(frame))).await;
                    }
                    Message::Text(_) | Message::Binary(_) => {
                        if socket.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Message::Ping(_) | Message::Pong(_) => {}
                    Message::Close(_) => return,
                }
            }
        })
}

/// A handler that keeps the socket in its own future (the lifetime rule).
async fn held(upgrade: WebSocketUpgrade) -> Response {
    if let Ok(mut socket) = upgrade.accept().await {
        while let Some(Ok(message)) = socket.recv().await {
            if message.is_text() && socket.send(message).await.is_err() {
                break;
            }
        }
    }
    Response::default()
}

/// Two extractors of one upgrade: the second is refused.
async fn twice(_first: WebSocketUpgrade, _second: WebSocketUpgrade) -> Response {
    Response::default()
}

/// `Option<WebSocketUpgrade>`: a page for plain GETs, a socket otherwise.
async fn either(upgrade: Option<WebSocketUpgrade>) -> Response {
    match upgrade {
        Some(upgrade) => held(upgrade).await,
        None => "a plain page".into_response(),
    }
}

async fn serve_router(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn echoes(addr: SocketAddr, path: &str) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap();
    ws.send(Client::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Client::text("hi"));
}

/// The head and body of the answer to `request` (raw HTTP/1.1, one
/// request; the body as long as its `Content-Length`).
async fn answer(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let (mut tcp, head, mut body) = raw_request(addr, request, &[]).await;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut chunk = [0u8; 1024];
    while body.len() < length {
        let n = tokio::time::timeout(TIMEOUT, tokio::io::AsyncReadExt::read(&mut tcp, &mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the body ended early");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_layer_around_the_whole_router() {
    let router = Router::new()
        .route("/ws", get(ported))
        .route("/held", get(held))
        .route("/page", get(either))
        .layer(WebSocketLayer::default());
    let addr = serve_router(router).await;
    echoes(addr, "/ws").await;
    echoes(addr, "/held").await;
    echoes(addr, "/page").await;

    // The ported handler picks its subprotocol and closes as axum's does.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}/ws"
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "other, echo".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "echo");
    ws.send(Client::text("bye")).await.unwrap();
    match ws.next().await.unwrap().unwrap() {
        Client::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1000);
            assert_eq!(frame.reason.as_str(), "see you");
        }
        other => panic!("{other:?}"),
    }

    // A plain GET to the Option route gets its page.
    let (head, body) = answer(
        addr,
        b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "a plain page");
}

#[tokio::test]
async fn the_layer_on_one_route() {
    let router = Router::new()
        .route("/ws", get(ported).layer(WebSocketLayer::default()))
        .route("/unlayered", get(ported))
        .route("/twice", get(twice).layer(WebSocketLayer::default()));
    let addr = serve_router(router).await;
    echoes(addr, "/ws").await;

    // A second extractor of one upgrade: 500 that says so.
    let (head, body) = answer(addr, &handshake_request("/twice", &[])).await;
    assert!(head.starts_with("HTTP/1.1 500"), "{head}");
    assert!(body.contains("already extracted"), "{body}");

    // A valid handshake no layer saw: 500 that says so.
    let (head, body) = answer(addr, &handshake_request("/unlayered", &[])).await;
    assert!(head.starts_with("HTTP/1.1 500"), "{head}");
    assert!(body.contains("no WebSocketLayer"), "{body}");
}

#[tokio::test]
async fn rejections_are_axums() {
    let router = Router::new()
        .route("/ws", get(ported))
        .layer(WebSocketLayer::default());
    let addr = serve_router(router).await;

    // Not a WebSocket request: 400 (a plain Extension used to give 500).
    let (head, _) = answer(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    // A wrong version: 426 with the version we speak.
    let request = String::from_utf8(handshake_request("/ws", &[]))
        .unwrap()
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let (head, _) = answer(addr, request.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
}

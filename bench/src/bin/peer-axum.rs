//! `peer-axum`: the echo server on axum 0.8's `WebSocketUpgrade` extractor.
//!
//! Route `/ws`, `on_upgrade`, then `recv` each whole message and `send`
//! text and binary ones back. axum runs tokio-tungstenite underneath, which
//! answers pings and completes the close handshake on the next read, so the
//! loop reads until the socket ends.
//!
//! The broadcast scenario's roles are two more routes sharing the [`Room`]
//! as router state: `/pub` reads messages and hands a clone of each text or
//! binary one (`Message` holds `Bytes`/`Utf8Bytes`: a reference count) to
//! every subscriber's unbounded channel; `/sub` splits the socket
//! (`StreamExt::split`, as axum's chat example does), a writer task does
//! one `SinkExt::send` per message from its channel, and the read half is
//! read only to see the close, after which the subscriber leaves the room.
//!
//! ```text
//! peer-axum --addr 127.0.0.1:9001 --threads 1
//! ```

use std::io;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use tower_websockets_bench::Room;

/// The broadcast room, shared by the `/sub` and `/pub` routes.
type SharedRoom = Arc<Room<Message>>;

fn main() -> ExitCode {
    tower_websockets_bench::run_server("peer-axum", serve)
}

async fn serve(addr: String) -> io::Result<()> {
    // As every server in the suite: no Nagle delays.
    let listener = tower_websockets_bench::bind("peer-axum", &addr)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    let app = Router::new()
        .route("/ws", get(upgrade))
        .route("/sub", get(subscriber))
        .route("/pub", get(publisher))
        .with_state(SharedRoom::default());
    axum::serve(listener, app).await
}

async fn upgrade(ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && socket.send(message).await.is_err()
        {
            break;
        }
    }
}

async fn publisher(ws: WebSocketUpgrade, State(room): State<SharedRoom>) -> Response {
    ws.on_upgrade(move |socket| async move {
        room.publish_all(socket, |m| {
            matches!(m, Message::Text(_) | Message::Binary(_))
        })
        .await;
    })
}

async fn subscriber(ws: WebSocketUpgrade, State(room): State<SharedRoom>) -> Response {
    ws.on_upgrade(move |socket| async move { room.subscribe(socket).await })
}

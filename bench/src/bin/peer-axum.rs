//! `peer-axum`: the echo server on axum 0.8's `WebSocketUpgrade` extractor.
//!
//! Route `/ws`, `on_upgrade`, then `recv` each whole message and `send`
//! text and binary ones back. axum runs tokio-tungstenite underneath, which
//! answers pings and completes the close handshake on the next read, so the
//! loop reads until the socket ends.
//!
//! ```text
//! peer-axum --addr 127.0.0.1:9001 --threads 1
//! ```

use std::io;
use std::process::ExitCode;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt as _;

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
    let app = Router::new().route("/ws", get(upgrade));
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

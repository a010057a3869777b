//! tower-websockets under axum 0.8 (feature `axum`): the layer around the
//! router, `WebSocketUpgrade` as the extractor, an axum-style handler.
//!
//! ```text
//! cargo run --example axum --features axum
//! websocat ws://127.0.0.1:5002/ws
//! ```
//!
//! `/ws` is axum's echo handler with its imports changed (`on_upgrade`);
//! `/held` accepts in the handler itself, so everything inside the layer
//! lives as long as the socket; `/` is a page.

use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_websockets::{DrainOptions, Message, WebSocketLayer, WebSocketUpgrade};

/// axum's echo handler, ported by its imports.
async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            match message {
                Message::Text(_) | Message::Binary(_) => {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
                // Answered by the socket itself.
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Close(_) => return,
            }
        }
    })
}

/// The same echo with the socket kept in the handler's own future.
async fn held(upgrade: WebSocketUpgrade) -> Response {
    let Ok(mut socket) = upgrade.accept().await else {
        return Response::default();
    };
    while let Some(Ok(message)) = socket.recv().await {
        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
            break;
        }
    }
    Response::default() // discarded: the 101 was already sent
}

async fn page() -> impl IntoResponse {
    "WebSocket echo at /ws and /held\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let layer = WebSocketLayer::default();
    let drain = layer.drain_handle();
    let app = Router::new()
        .route("/", get(page))
        .route("/ws", get(ws))
        .route("/held", get(held))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:5002").await?;
    println!("Listening on http://{}", listener.local_addr()?);
    // axum's graceful shutdown finishes the HTTP requests; the drain closes
    // the sockets (axum cannot see them once upgraded). Both start on
    // Ctrl-C; the drain's report comes once axum is done.
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            let options = DrainOptions::new().deadline(Duration::from_secs(5));
            let _ = draining_tx.send(tokio::spawn(async move { drain.drain(options).await }));
        })
        .await?;
    if let Ok(draining) = draining_rx.await {
        let report = draining.await?;
        println!(
            "drained: {} closed, {} aborted",
            report.closed, report.aborted
        );
    }
    Ok(())
}

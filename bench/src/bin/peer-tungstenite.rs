//! `peer-tungstenite`: the echo server on tokio-tungstenite.
//!
//! `accept_hdr_async` over the accepted `TcpStream` (its callback only notes
//! the request path), then the idiomatic echo: `StreamExt::next` for each
//! whole message, `SinkExt::send` (write and flush) for text and binary
//! ones. Pings are answered and the close handshake completed by tungstenite
//! itself, on the next read, which is why the loop reads until the stream
//! ends.
//!
//! The broadcast scenario's roles, by path (any other path is the echo):
//! `/pub` reads messages and hands a clone of each text or binary one
//! (`Message` holds `Bytes`/`Utf8Bytes`: a reference count) to every
//! subscriber's unbounded channel in the [`Room`]; `/sub` splits the stream
//! (`StreamExt::split`), a writer task does one `SinkExt::send` per message
//! from its channel, and the read half is read only to see the close, after
//! which the subscriber leaves the room.
//!
//! ```text
//! peer-tungstenite --addr 127.0.0.1:9001 --threads 1
//! ```

use std::io;
use std::process::ExitCode;
use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tower_websockets_bench::{Role, Room};

fn main() -> ExitCode {
    tower_websockets_bench::run_server("peer-tungstenite", serve)
}

async fn serve(addr: String) -> io::Result<()> {
    let listener = tower_websockets_bench::bind("peer-tungstenite", &addr).await?;
    let room: Arc<Room<Message>> = Arc::default();
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                // As every server in the suite: no Nagle delays.
                let _ = tcp.set_nodelay(true);
                tokio::spawn(connection(tcp, room.clone()));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// The handshake, then the role its path asks for.
async fn connection(tcp: TcpStream, room: Arc<Room<Message>>) {
    let mut role = Role::Echo;
    // The signature is tungstenite's `Callback`, large error and all.
    #[allow(clippy::result_large_err)]
    let path = |request: &Request, response: Response| {
        role = Role::from_path(request.uri().path().as_bytes());
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, path).await else {
        return;
    };
    // The broadcast roles are boxed so that an echo socket's task is no
    // larger than before they existed (scenario g counts its bytes).
    match role {
        Role::Echo => echo(ws).await,
        Role::Subscriber => Box::pin(room.subscribe(ws)).await,
        Role::Publisher => {
            Box::pin(room.publish_all(ws, |m| m.is_text() || m.is_binary())).await;
        }
    }
}

async fn echo(mut ws: WebSocketStream<TcpStream>) {
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            break;
        }
    }
}

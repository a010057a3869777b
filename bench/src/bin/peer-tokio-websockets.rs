//! `peer-tokio-websockets`: the echo server on tokio-websockets.
//!
//! `ServerBuilder::accept` over the accepted `TcpStream` (features `server`
//! and `sha1_smol` for the handshake's SHA-1), default config and limits,
//! then the idiomatic echo: `StreamExt::next` for each whole message,
//! `SinkExt::send` for text and binary ones. The library answers pings and
//! the close handshake itself; the loop reads until the stream ends.
//!
//! The broadcast scenario's roles, by the path of the request `accept`
//! returns (any other path is the echo): `/pub` reads messages and hands a
//! clone of each text or binary one (`Message` holds a `Bytes` payload: a
//! reference count) to every subscriber's unbounded channel in the
//! [`Room`]; `/sub` splits the stream (`StreamExt::split`), a writer task
//! does one `SinkExt::send` per message from its channel, and the read half
//! is read only to see the close, after which the subscriber leaves the
//! room.
//!
//! ```text
//! peer-tokio-websockets --addr 127.0.0.1:9001 --threads 1
//! ```

use std::io;
use std::process::ExitCode;
use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_websockets::{Message, ServerBuilder, WebSocketStream};
use tower_websockets_bench::{Role, Room};

fn main() -> ExitCode {
    tower_websockets_bench::run_server("peer-tokio-websockets", serve)
}

async fn serve(addr: String) -> io::Result<()> {
    let listener = tower_websockets_bench::bind("peer-tokio-websockets", &addr).await?;
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
    let Ok((request, ws)) = ServerBuilder::new().accept(tcp).await else {
        return;
    };
    // The broadcast roles are boxed so that an echo socket's task is no
    // larger than before they existed (scenario g counts its bytes).
    match Role::from_path(request.uri().path().as_bytes()) {
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

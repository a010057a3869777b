//! `peer-tokio-websockets`: the echo server on tokio-websockets.
//!
//! `ServerBuilder::accept` over the accepted `TcpStream` (features `server`
//! and `sha1_smol` for the handshake's SHA-1), default config and limits,
//! then the idiomatic echo: `StreamExt::next` for each whole message,
//! `SinkExt::send` for text and binary ones. The library answers pings and
//! the close handshake itself; the loop reads until the stream ends.
//!
//! ```text
//! peer-tokio-websockets --addr 127.0.0.1:9001 --threads 1
//! ```

use std::io;
use std::process::ExitCode;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_websockets::ServerBuilder;

fn main() -> ExitCode {
    tower_websockets_bench::run_server("peer-tokio-websockets", serve)
}

async fn serve(addr: String) -> io::Result<()> {
    let listener = tower_websockets_bench::bind("peer-tokio-websockets", &addr).await?;
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                // As every server in the suite: no Nagle delays.
                let _ = tcp.set_nodelay(true);
                tokio::spawn(echo(tcp));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

async fn echo(tcp: TcpStream) {
    let Ok((_request, mut ws)) = ServerBuilder::new().accept(tcp).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            break;
        }
    }
}

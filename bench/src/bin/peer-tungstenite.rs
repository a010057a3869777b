//! `peer-tungstenite`: the echo server on tokio-tungstenite.
//!
//! `accept_async` over the accepted `TcpStream`, then the idiomatic echo:
//! `StreamExt::next` for each whole message, `SinkExt::send` (write and
//! flush) for text and binary ones. Pings are answered and the close
//! handshake completed by tungstenite itself, on the next read, which is why
//! the loop reads until the stream ends.
//!
//! ```text
//! peer-tungstenite --addr 127.0.0.1:9001 --threads 1
//! ```

use std::io;
use std::process::ExitCode;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;

fn main() -> ExitCode {
    tower_websockets_bench::run_server("peer-tungstenite", serve)
}

async fn serve(addr: String) -> io::Result<()> {
    let listener = tower_websockets_bench::bind("peer-tungstenite", &addr).await?;
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
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            break;
        }
    }
}

//! `peer-fastwebsockets`: the echo server on fastwebsockets.
//!
//! hyper 1's HTTP/1 connection with upgrades, fastwebsockets' `upgrade`
//! (its `upgrade` feature) answering the handshake, then a
//! `FragmentCollector` so that whole messages are echoed, with auto-pong
//! and auto-close on: a close is answered inside `read_frame`, after which
//! the loop ends.
//!
//! ```text
//! peer-fastwebsockets --addr 127.0.0.1:9001 --threads 1
//! ```

use std::io;
use std::process::ExitCode;

use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() -> ExitCode {
    tower_websockets_bench::run_server("peer-fastwebsockets", serve)
}

async fn serve(addr: String) -> io::Result<()> {
    let listener = tower_websockets_bench::bind("peer-fastwebsockets", &addr).await?;
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => {
                // As every server in the suite: no Nagle delays.
                let _ = tcp.set_nodelay(true);
                tcp
            }
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service_fn(handshake))
                .with_upgrades();
            let _ = connection.await;
        });
    }
}

async fn handshake(
    mut request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, socket) = upgrade::upgrade(&mut request)?;
    tokio::spawn(async move {
        let _ = echo(socket).await;
    });
    Ok(response)
}

async fn echo(socket: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = socket.await?;
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

//! `peer-fastwebsockets`: the echo server on fastwebsockets.
//!
//! hyper 1's HTTP/1 connection with upgrades, fastwebsockets' `upgrade`
//! (its `upgrade` feature) answering the handshake, then a
//! `FragmentCollector` so that whole messages are echoed, with auto-pong
//! and auto-close on: a close is answered inside `read_frame`, after which
//! the loop ends.
//!
//! The broadcast scenario's roles, by the hyper request's path (any other
//! path is the echo). fastwebsockets has no shared message type, so what a
//! subscriber's channel carries is `(OpCode, Bytes)`: `/pub` reads whole
//! messages as the echo does, turns each text or binary payload into one
//! `Bytes` (the `BytesMut` it was read into, frozen: no copy) and hands a
//! clone (a reference count) to every subscriber's unbounded channel in the
//! [`Room`]. `/sub` splits the socket (`WebSocket::split` with
//! `tokio::io::split`, the `unstable-split` feature); a writer task does one
//! `write_frame` per message from its channel, a frame borrowing the shared
//! payload; the read half is read only to see the close, and its obligated
//! answers (the close, pongs) go through the same channel, so the writer
//! stays the socket's only writer. Then the subscriber leaves the room.
//!
//! ```text
//! peer-fastwebsockets --addr 127.0.0.1:9001 --threads 1
//! ```

use std::io;
use std::process::ExitCode;
use std::sync::Arc;

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tower_websockets_bench::{Role, Room};

/// What a subscriber's writer is given to send: a frame's opcode and its
/// payload.
type Outgoing = (OpCode, Bytes);

fn main() -> ExitCode {
    tower_websockets_bench::run_server("peer-fastwebsockets", serve)
}

async fn serve(addr: String) -> io::Result<()> {
    let listener = tower_websockets_bench::bind("peer-fastwebsockets", &addr).await?;
    let room: Arc<Room<Outgoing>> = Arc::default();
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
        let room = room.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handshake(request, room.clone()));
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let _ = connection.await;
        });
    }
}

/// Answers the upgrade and starts the role the path asks for.
async fn handshake(
    mut request: Request<Incoming>,
    room: Arc<Room<Outgoing>>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let role = Role::from_path(request.uri().path().as_bytes());
    let (response, socket) = upgrade::upgrade(&mut request)?;
    match role {
        Role::Echo => {
            tokio::spawn(async move {
                let _ = echo(socket).await;
            });
        }
        Role::Subscriber => {
            tokio::spawn(async move {
                let _ = subscribe(socket, &room).await;
            });
        }
        Role::Publisher => {
            tokio::spawn(async move {
                let _ = publish(socket, &room).await;
            });
        }
    }
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

/// Every whole text or binary message read goes to every subscriber.
async fn publish(socket: upgrade::UpgradeFut, room: &Room<Outgoing>) -> Result<(), WebSocketError> {
    let mut ws = socket.await?;
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => {
                room.publish(&(frame.opcode, into_bytes(frame.payload)))
            }
            _ => {}
        }
    }
}

/// A writer task sends what the channel queues; the read half only sees
/// the close, its answer (and any pong) queued behind the broadcasts.
async fn subscribe(
    socket: upgrade::UpgradeFut,
    room: &Room<Outgoing>,
) -> Result<(), WebSocketError> {
    let ws = socket.await?;
    let (mut reader, mut writer) = ws.split(tokio::io::split);
    reader.set_auto_pong(true);
    reader.set_auto_close(true);
    let (sender, mut frames) = mpsc::unbounded_channel::<Outgoing>();
    let id = room.join(sender.clone());
    tokio::spawn(async move {
        while let Some((opcode, payload)) = frames.recv().await {
            let frame = Frame::new(true, opcode, None, Payload::Borrowed(&payload));
            if writer.write_frame(frame).await.is_err() || opcode == OpCode::Close {
                break;
            }
        }
    });
    let mut obligated = |frame: Frame<'_>| {
        let queued = sender.send((frame.opcode, Bytes::copy_from_slice(&frame.payload)));
        std::future::ready(queued.map_err(|_| WebSocketError::ConnectionClosed))
    };
    let result = loop {
        match reader.read_frame(&mut obligated).await {
            Ok(frame) if frame.opcode == OpCode::Close => break Ok(()),
            Ok(_) => {}
            Err(error) => break Err(error),
        }
    };
    room.leave(id);
    result
}

/// A payload as `Bytes`, without a copy when it was read into its own
/// buffer (the usual case) or collected from fragments.
fn into_bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        Payload::Bytes(bytes) => bytes.freeze(),
        Payload::Owned(vec) => Bytes::from(vec),
        borrowed => Bytes::copy_from_slice(&borrowed),
    }
}

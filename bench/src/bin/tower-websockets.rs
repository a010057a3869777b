//! `tower-websockets`: the echo server on tower-websockets, the one the
//! suite measures.
//!
//! The socket code of `examples/echo` without its page and Ctrl-C
//! registry: `WebSocketLayer::new(WebSocketOptions::default())` in front of
//! a service that accepts every WebSocket request, drops the request and
//! echoes. `--mode message` (the default) echoes whole messages with
//! `receive_message` / `send`, like every peer (pings and pongs, which the
//! socket answers by itself, are not echoed); `--mode aspnet` runs the
//! ASP.NET sample's loop (`receive_buffer` into a 4 KiB buffer,
//! `send_buffer` what came with the same type and end-of-message flag).
//! Either way the loop ends by answering the client's Close with the
//! client's status.
//!
//! The broadcast scenario (`loadgen --mode broadcast`) uses two more
//! paths: a socket on `/sub` joins the one room (its handle goes into the
//! room's list, and its own task receives until the socket ends); every
//! message a socket on `/pub` sends is made a [`PreparedMessage`] once and
//! queued on every member with `WebSocketHandle::try_send_prepared`, from
//! the publisher's task: no channel, no writer task, no copy per member.
//! Each member's background task writes what is queued for it in one
//! write. The send bound is raised to 1 MiB, so that the scenario's
//! messages in flight (10 publishers × 16 × 1 KiB) fit, as they do in the
//! peers' unbounded channels; a member past it would miss a message,
//! which loadgen reports as an error.
//!
//! A peek at the first bytes picks the protocol: HTTP/1.1 connections are
//! served by hyper's `http1` directly, h2c (prior knowledge) by hyper-util's
//! `auto` builder with extended CONNECT (RFC 8441) enabled. The suite ends
//! the server by killing it.
//!
//! ```text
//! tower-websockets --addr 127.0.0.1:9001 --threads 1 --mode message
//! ```

use std::cell::Cell;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_websockets::{
    DeflateOptions, Error, Message, MessageType, PreparedMessage, WebSocket, WebSocketHandle,
    WebSocketLayer, WebSocketOptions, WebSocketUpgrade,
};

const NAME: &str = "tower-websockets";

/// The ASP.NET loop's buffer, as in the sample (`new byte[1024 * 4]`).
const BUFFER_SIZE: usize = 4 * 1024;

type Body = Full<Bytes>;

/// The broadcast scenario's room: its members' handles, by id.
#[derive(Default)]
struct Room {
    members: Mutex<Vec<(u64, WebSocketHandle)>>,
    next_id: AtomicU64,
}

impl Room {
    fn join(&self, handle: WebSocketHandle) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().push((id, handle));
        id
    }

    fn leave(&self, id: u64) {
        self.lock().retain(|(member, _)| *member != id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, WebSocketHandle)>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `message` on every member, without waiting.
    fn broadcast(&self, message: &PreparedMessage) {
        for (_, member) in self.lock().iter() {
            // Full (past the raised bound) or closed: the member misses
            // it, and loadgen reports the gap.
            let _ = member.try_send_prepared(message);
        }
    }
}

/// How a socket echoes.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Whole messages, like every peer.
    Message,
    /// The ASP.NET sample's loop over a 4 KiB buffer.
    AspNet,
}

fn main() -> ExitCode {
    // Set while the command line is parsed, read once it has been.
    let mode = Cell::new(Mode::Message);
    let deflate = Cell::new(None);
    tower_websockets_bench::run_server_with(
        NAME,
        " [--mode message|aspnet] [--deflate | --deflate-no-takeover]",
        |flag, rest| {
            match flag {
                "--mode" => {
                    mode.set(match rest.next().as_deref() {
                        Some("message") => Mode::Message,
                        Some("aspnet") => Mode::AspNet,
                        _ => return Err("--mode needs a value: message or aspnet".to_owned()),
                    });
                }
                // permessage-deflate for clients that offer it, with
                // context takeover or without (both ways).
                "--deflate" => deflate.set(Some(DeflateOptions::default())),
                "--deflate-no-takeover" => deflate.set(Some(
                    DeflateOptions::default()
                        .server_no_context_takeover(true)
                        .client_no_context_takeover(true),
                )),
                _ => return Ok(false),
            }
            Ok(true)
        },
        |addr| serve(addr, mode.get(), deflate.get()),
    )
}

async fn serve(addr: String, mode: Mode, deflate: Option<DeflateOptions>) -> io::Result<()> {
    let listener = TcpListener::bind(&addr).await?;
    // As `examples/echo` prints it.
    println!("Listening on http://{}", listener.local_addr()?);
    let options = WebSocketOptions::default()
        .permessage_deflate(deflate)
        .max_buffered_amount(1 << 20);
    let room = Arc::new(Room::default());
    let app = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).map_err(io::Error::other)?)
        .service_fn(move |req| route(req, mode, room.clone()));
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                // As every server in the suite: no Nagle delays.
                let _ = tcp.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let _ = serve_connection(tcp, service).await;
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Serves one connection: HTTP/1.1 with upgrades, or h2c with extended
/// CONNECT.
async fn serve_connection<S>(
    tcp: TcpStream,
    service: S,
) -> Result<(), Box<dyn StdError + Send + Sync>>
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<tower_websockets::ResponseBody<Body>>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    if starts_http1(&tcp).await? {
        // hyper-util's `auto` builder would wrap the connection in a private
        // type that `accept` cannot see through to the `TcpStream`.
        http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades()
            .await?;
    } else {
        // h2c with prior knowledge (or a first read too short to tell).
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http2().enable_connect_protocol();
        builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .await?;
    }
    Ok(())
}

/// Whether the connection's first bytes rule out HTTP/2's connection
/// preface (`PRI * HTTP/2.0...`), looked at without consuming them.
async fn starts_http1(tcp: &TcpStream) -> io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut first = [0u8; PREFACE.len()];
    let n = tcp.peek(&mut first).await?;
    Ok(n > 0 && !PREFACE.starts_with(&first[..n]))
}

/// Every WebSocket request is accepted: on `/sub` it joins the room, on
/// `/pub` it publishes to it, on any other path it echoes; anything else
/// gets a 400.
async fn route(
    mut req: Request<Incoming>,
    mode: Mode,
    room: Arc<Room>,
) -> Result<Response<Body>, Infallible> {
    let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(response);
    };
    let path = req.uri().path().to_owned();
    // The request's headers share hyper's read buffer (8 KiB or more):
    // drop the request before the socket's long life.
    drop(req);
    if let Ok(mut socket) = upgrade.accept().await {
        let _ = match (path.as_str(), mode) {
            ("/sub", _) => subscribe(&mut socket, &room).await,
            ("/pub", _) => publish(&mut socket, &room).await,
            (_, Mode::Message) => echo_messages(&mut socket).await,
            (_, Mode::AspNet) => echo(&mut socket).await,
        };
    }
    // Discarded: the 101 was sent when the socket was accepted.
    Ok(Response::default())
}

/// Echoes whole messages; pings (answered by the socket itself) and
/// pongs are not echoed.
async fn echo_messages(socket: &mut WebSocket) -> Result<(), Error> {
    loop {
        match socket.receive_message().await? {
            Message::Close(frame) => {
                let (status, description) = match &frame {
                    Some(frame) => (Some(frame.code), frame.reason.as_str()),
                    None => (None, ""),
                };
                return socket.close_with(status, description).await;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            data => socket.send(data).await?,
        }
    }
}

/// A member of the room: joins, receives (nothing but the Close, in the
/// scenario) until the socket ends, leaves.
async fn subscribe(socket: &mut WebSocket, room: &Room) -> Result<(), Error> {
    let id = room.join(socket.handle());
    while socket.recv().await.is_some() {}
    room.leave(id);
    Ok(())
}

/// A publisher: every text or binary message it sends goes to every
/// member, framed once.
async fn publish(socket: &mut WebSocket, room: &Room) -> Result<(), Error> {
    while let Some(message) = socket.recv().await {
        match message? {
            Message::Text(text) => room.broadcast(&PreparedMessage::text(&text)),
            Message::Binary(data) => room.broadcast(&PreparedMessage::binary(&data)),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    Ok(())
}

/// The ASP.NET sample's `Echo` method.
async fn echo(socket: &mut WebSocket) -> Result<(), Error> {
    let mut buffer = vec![0; BUFFER_SIZE];
    loop {
        let result = socket.receive_buffer(&mut buffer).await?;
        if result.message_type() == MessageType::Close {
            let description = result.close_description().unwrap_or("");
            return socket.close_with(result.close_status(), description).await;
        }
        let received = &buffer[..result.count()];
        socket
            .send_buffer(received, result.message_type(), result.end_of_message())
            .await?;
    }
}

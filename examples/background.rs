//! Handing a socket to a background service: ASP.NET Core's "Startup2"
//! sample, where the request accepts a WebSocket, gives it to a
//! `BackgroundSocketProcessor` and awaits a `TaskCompletionSource` until
//! the processor is done with it.
//!
//! ```text
//! // ASP.NET                                      // here
//! var socket = await context.WebSockets           let socket = upgrade.accept().await?;
//!     .AcceptWebSocketAsync();
//! var tcs = new TaskCompletionSource<object>();   let finished = socket.finished();
//! Processor.AddSocket(socket, tcs);               ticker.add_socket(socket);
//! await tcs.Task;                                 finished.await;
//! ```
//!
//! The background service here, `Ticker`, splits each socket: a writer
//! sends `tick 1`, `tick 2`, ... once a second while a reader on another
//! task consumes (and logs) what the client sends. After ten ticks the
//! server closes the socket with 1000; the client can close it first.
//!
//! Run it (default address 127.0.0.1:5000):
//!
//! ```text
//! cargo run --example background
//! cargo run --example background -- --addr 127.0.0.1:8080
//! ```
//!
//! Connect with `websocat ws://127.0.0.1:5000/ws` (lines you type are
//! logged by the server), or from a browser's developer console:
//!
//! ```text
//! const ws = new WebSocket("ws://127.0.0.1:5000/ws");
//! ws.onmessage = (e) => console.log(e.data);
//! ws.onclose = (e) => console.log("closed", e.code, e.reason);
//! ws.send("hello");
//! ```

mod common;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tower::ServiceBuilder;
use tower_websockets::{
    CloseCode, CloseFrame, Error, Message, WebSocket, WebSocketLayer, WebSocketOptions,
    WebSocketReader, WebSocketUpgrade,
};
use tracing_subscriber::EnvFilter;

const DEFAULT_ADDR: &str = "127.0.0.1:5000";

type Body = Full<Bytes>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts connections until the process is stopped.
async fn serve() -> Result<(), Box<dyn StdError>> {
    let addr = parse_addr(std::env::args().skip(1))?;
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("Listening on http://{}", listener.local_addr()?);

    let layer = WebSocketLayer::new(WebSocketOptions::default())?;
    let ticker = Ticker {
        interval: Duration::from_secs(1),
        max_ticks: 10,
    };
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // WebSocket frames are written whole (and coalesced by the socket):
        // Nagle's algorithm would only delay them.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let ticker = ticker.clone();
        let service = ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(move |req| handler(req, peer, ticker.clone()));
        tokio::spawn(async move {
            // Deadlines for the first bytes and the request headers
            // (common/mod.rs): a silent client cannot hold the connection.
            match common::first_bytes(&tcp, common::HANDSHAKE_TIMEOUT).await {
                Ok(Some(_)) => {}
                _ => return,
            }
            let result = common::auto_builder(common::HANDSHAKE_TIMEOUT)
                .serve_connection_with_upgrades(
                    TokioIo::new(tcp),
                    TowerToHyperService::new(service),
                )
                .await;
            if let Err(error) = result {
                tracing::debug!(%peer, error, "connection error");
            }
        });
    }
}

async fn handler(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    ticker: Ticker,
) -> Result<Response<Body>, Infallible> {
    if req.uri().path() != "/ws" {
        return Ok(text(StatusCode::NOT_FOUND, "not found; try ws://HOST/ws\n"));
    }
    let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket request\n",
        ));
    };
    // The request's headers share hyper's read buffer (8 KiB or more): drop
    // the request before the socket's long life.
    drop(req);
    let socket = match upgrade.accept().await {
        Ok(socket) => socket,
        Err(error) => {
            tracing::debug!(%peer, error = &error as &dyn StdError, "websocket accept failed");
            return Ok(Response::default());
        }
    };
    tracing::info!(%peer, "socket accepted, handing it to the ticker");

    // The `TaskCompletionSource`. Take it *before* the socket is given away:
    // it resolves when the socket is finished (closed, aborted or dropped),
    // so the background owner signals "done" just by closing or dropping
    // the socket. There is no `SetResult` to forget, and a background task
    // that fails or panics drops the socket, which resolves it as well.
    let finished = socket.finished();
    ticker.add_socket(socket, peer);

    // Unlike ASP.NET, returning here would not break the socket: the layer
    // keeps the request pipeline alive until the socket is finished anyway.
    // Awaiting makes the handler (and any inner layer that acts when the
    // handler returns, such as a latency log) span the socket's whole life.
    finished.await;
    tracing::info!(%peer, "socket finished, request complete");

    // Discarded: the 101 was sent when the socket was accepted.
    Ok(Response::default())
}

/// The background service sockets are handed to: ASP.NET's
/// `BackgroundSocketProcessor`.
///
/// Each socket gets a task of its own, which owns it: the writer half ticks
/// on that task while the reader half runs on a second one.
#[derive(Clone, Debug)]
struct Ticker {
    interval: Duration,
    max_ticks: u32,
}

/// How long the ticker waits for the client to answer its Close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Ticker {
    /// ASP.NET `AddSocket(socket, tcs)`, without the `tcs`: the socket
    /// carries its own completion.
    fn add_socket(&self, socket: WebSocket, peer: SocketAddr) {
        tokio::spawn(self.clone().run(socket, peer));
    }

    async fn run(self, socket: WebSocket, peer: SocketAddr) {
        let (reader, mut writer) = socket.split();
        // The reader runs on a task of its own, answering pings by itself
        // while the writer is busy here. A `JoinSet` aborts its tasks when
        // dropped, so if this task ends in any way (even by a panic), the
        // reader goes too: both halves are dropped and the socket finished.
        let mut reading = JoinSet::new();
        reading.spawn(read_until_close(reader, peer));
        let mut ticks = tokio::time::interval_at(Instant::now() + self.interval, self.interval);

        for n in 1..=self.max_ticks {
            tokio::select! {
                read = reading.join_next() => {
                    // The client closed first: echo its Close, which completes
                    // the handshake and finishes the socket. (If reading
                    // failed, the socket is already aborted and finished.)
                    if let Some(Ok(Ok(frame))) = read {
                        tracing::info!(%peer, ?frame, "client closed");
                        if let Err(error) = writer.send(Message::Close(frame)).await {
                            tracing::debug!(%peer, error = &error as &dyn StdError, "close failed");
                        }
                    }
                    return;
                }
                _ = ticks.tick() => {}
            }
            let tick = Message::text(format!("tick {n}"));
            if let Err(error) = writer.send(tick).await {
                // A failed send aborts the socket: the reader stops too.
                tracing::debug!(%peer, error = &error as &dyn StdError, "send failed");
                return;
            }
        }

        // Done ticking: send our Close. The reader keeps reading until the
        // client's Close arrives, which finishes the socket.
        let description = format!("that's all {} ticks", self.max_ticks);
        if let Err(error) = writer.close_output(CloseCode::NORMAL, &description).await {
            tracing::debug!(%peer, error = &error as &dyn StdError, "close failed");
        }
        if timeout(CLOSE_WAIT, reading.join_next()).await.is_err() {
            // The client never answered. Returning drops the writer and
            // (through the `JoinSet`) the reader, which finishes the socket
            // at once; the connection is shut down in the background.
            tracing::info!(%peer, "client did not answer our Close");
        }
    }
}

/// Consumes what the client sends until its Close frame, which it returns
/// (`None`: a Close without a status code).
async fn read_until_close(
    mut reader: WebSocketReader,
    peer: SocketAddr,
) -> Result<Option<CloseFrame>, Error> {
    loop {
        match reader.receive_message().await {
            Ok(Message::Text(text)) => tracing::info!(%peer, %text, "client says"),
            Ok(Message::Binary(data)) => {
                tracing::info!(%peer, len = data.len(), "client sent bytes");
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {
                tracing::debug!(%peer, "client is alive");
            }
            Ok(Message::Close(frame)) => return Ok(frame),
            Err(error) => {
                tracing::debug!(%peer, error = &error as &dyn StdError, "receive failed");
                return Err(error);
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
}

/// `--addr HOST:PORT`, the only flag.
fn parse_addr(mut args: impl Iterator<Item = String>) -> Result<String, String> {
    let mut addr = DEFAULT_ADDR.to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                addr = args
                    .next()
                    .ok_or("--addr needs a value, such as 127.0.0.1:5000")?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: background [--addr HOST:PORT]"
                ));
            }
        }
    }
    Ok(addr)
}

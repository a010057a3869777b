//! `WebSocketLayer` inside a real tower stack, and the idiomatic
//! `Stream` + `Sink` surface of a socket.
//!
//! ```text
//! TraceLayer                 outside: sees the request and the 101, nothing later
//! └─ WebSocketLayer          detects WebSocket requests, checks Origin (403)
//!    └─ ConcurrencyLimit(2)  inside: holds its permit until the socket is finished
//!       └─ handler           echoes whole messages with StreamExt and send
//! ```
//!
//! Because the concurrency limit sits *inside* `WebSocketLayer`, it counts
//! live sockets, not handshakes: the layer keeps the inner pipeline (and
//! with it the limit's permit) alive until the socket is closed. With two
//! sockets open, a third client's handshake waits, with no `101` yet,
//! until one of the first two closes; the handler logs how many sockets
//! are live. The limit applies to every request below it, so while two
//! sockets are open a plain `GET /` waits too: a real server would use a
//! much larger limit, or apply it to the WebSocket route only.
//!
//! The options: a keep-alive ping every 30 seconds; messages up to 1 MiB
//! (a larger one is refused with close code 1009); and only this server's
//! own origins (`http://127.0.0.1:5000`, `http://localhost:5000`) allowed,
//! so a page from another site gets `403`. Clients that send no `Origin`
//! (websocat, scripts) are not browsers and are allowed, as by default.
//!
//! Run it (default address 127.0.0.1:5000; the default log filter is
//! `info,tower_http=debug` so that the `TraceLayer` lines show):
//!
//! ```text
//! cargo run --example stack
//! cargo run --example stack -- --addr 127.0.0.1:8080
//! ```
//!
//! Connect with `websocat ws://127.0.0.1:5000/ws` in three terminals: the
//! third connects only when one of the others quits. Or open
//! <http://127.0.0.1:5000/> and, in the browser's developer console:
//!
//! ```text
//! const ws = new WebSocket("ws://127.0.0.1:5000/ws");
//! ws.onmessage = (e) => console.log(e.data);
//! ws.onopen = () => ws.send("hello");
//! ```

mod common;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::trace::TraceLayer;
use tower_websockets::{Error, WebSocket, WebSocketLayer, WebSocketOptions, WebSocketUpgrade};
use tracing_subscriber::EnvFilter;

const DEFAULT_ADDR: &str = "127.0.0.1:5000";

/// How many requests, and so how many live sockets, the stack serves at once.
const MAX_SOCKETS: usize = 2;

type Body = Full<Bytes>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,tower_http=debug")),
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
    let local = listener.local_addr()?;
    println!("Listening on http://{local}");

    let options = WebSocketOptions::default()
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_message_size(1024 * 1024)
        // Browsers send the page's origin; only pages served from here may
        // connect. Requests without an Origin header are still allowed.
        .allowed_origins([
            format!("http://{local}"),
            format!("http://localhost:{}", local.port()),
        ]);

    let app = ServiceBuilder::new()
        // Outside: logs the request and the 101, then is done.
        .layer(TraceLayer::new_for_http())
        // Rejects bad options here, at startup, not per connection.
        .layer(WebSocketLayer::new(options)?)
        // Inside: a permit per request, held until its socket is finished.
        .layer(ConcurrencyLimitLayer::new(MAX_SOCKETS))
        .service_fn(handler);

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
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            // Deadlines for the first bytes and the request headers
            // (common/mod.rs): a silent client cannot hold the connection.
            match common::first_bytes(&tcp, common::HANDSHAKE_TIMEOUT).await {
                Ok(Some(_)) => {}
                _ => return,
            }
            let result = common::auto_builder(common::HANDSHAKE_TIMEOUT)
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
            if let Err(error) = result {
                tracing::debug!(%peer, error, "connection error");
            }
        });
    }
}

async fn handler(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let upgrade = WebSocketUpgrade::from_request(&mut req);
    let response = match (req.uri().path(), upgrade) {
        ("/ws", Some(upgrade)) => {
            // The request's headers share hyper's read buffer (8 KiB or
            // more): drop the request before the socket's long life.
            drop(req);
            match upgrade.accept().await {
                Ok(socket) => {
                    let live = LiveSocket::open();
                    if let Err(error) = echo(socket).await {
                        tracing::debug!(error = &error as &dyn StdError, "websocket failed");
                    }
                    drop(live);
                }
                Err(error) => {
                    tracing::debug!(error = &error as &dyn StdError, "websocket accept failed");
                }
            }
            // Discarded: the 101 was sent when the socket was accepted.
            Response::default()
        }
        ("/ws", None) => text(StatusCode::BAD_REQUEST, "expected a WebSocket request\n"),
        ("/", _) => text(StatusCode::OK, "WebSocket echo at /ws\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// Echoes whole messages: a socket is a `Stream` of the messages it
/// receives and a `Sink` of the messages it sends. (Split, the loop is
/// `reader.filter(..).forward(writer)`.)
async fn echo(mut socket: WebSocket) -> Result<(), Error> {
    // The stream ends after the client's Close; echoing that Close through
    // the sink completes the close handshake.
    while let Some(message) = socket.next().await {
        let message = message?;
        tracing::debug!(?message, "echo");
        // Pings are answered by the socket itself: not echoed.
        if message.is_ping() || message.is_pong() {
            continue;
        }
        socket.send(message).await?;
    }
    Ok(())
}

/// The number of live sockets, for the log. The limit itself is enforced by
/// `ConcurrencyLimitLayer`, whose permits this count mirrors.
static LIVE_SOCKETS: AtomicUsize = AtomicUsize::new(0);

/// Counts one live socket, from accept until dropped.
struct LiveSocket;

impl LiveSocket {
    fn open() -> LiveSocket {
        let live = LIVE_SOCKETS.fetch_add(1, Ordering::Relaxed) + 1;
        if live < MAX_SOCKETS {
            tracing::info!("socket opened: {live} of {MAX_SOCKETS} live");
        } else {
            tracing::info!("socket opened: {live} of {MAX_SOCKETS} live; new clients wait");
        }
        LiveSocket
    }
}

impl Drop for LiveSocket {
    fn drop(&mut self) {
        let live = LIVE_SOCKETS.fetch_sub(1, Ordering::Relaxed) - 1;
        tracing::info!("socket finished: {live} of {MAX_SOCKETS} live");
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
                    "unknown argument {other:?}; usage: stack [--addr HOST:PORT]"
                ));
            }
        }
    }
    Ok(addr)
}

//! The echo sample: a port of ASP.NET Core's WebSockets sample application.
//!
//! `/` serves the "WebSocket Sample Application" page; `/ws` accepts
//! WebSockets and echoes them with the ASP.NET echo loop: receive into a
//! 4 KiB buffer, send the same bytes back with the same message type and
//! end-of-message flag (so fragmented messages come back fragmented the
//! same way), until the client's Close arrives, then close with the
//! client's status.
//!
//! With `--mode message` it echoes whole messages instead
//! (`receive_message` / `send_message`), the way the benchmark suite's
//! peer servers do; fragmented messages then come back as one frame.
//!
//! Run it (defaults: `--addr 127.0.0.1:5000`, one worker thread per core,
//! `--mode aspnet`):
//!
//! ```text
//! cargo run --example echo
//! cargo run --example echo -- --addr 127.0.0.1:8080 --threads 2
//! cargo run --release --example echo -- --mode message
//! RUST_LOG=debug cargo run --example echo
//! ```
//!
//! Connect by opening <http://localhost:5000> in a browser and pressing
//! Connect, or with any WebSocket client, such as
//! `websocat ws://127.0.0.1:5000/ws`.
//!
//! The same port speaks HTTP/1.1 and HTTP/2 over cleartext (h2c with
//! prior knowledge); HTTP/2 clients open WebSockets with extended CONNECT
//! (RFC 8441), which the server advertises. A peek at the first bytes picks
//! the protocol, so HTTP/1.1 connections are served by hyper's `http1`
//! directly: hyper-util's `auto` builder would wrap every connection in a
//! private type that `accept` cannot see through to the `TcpStream`.
//!
//! Ctrl-C stops the server: it stops accepting, lets HTTP requests in
//! flight finish, closes open sockets with 1001 (going away), waits at most
//! 5 seconds for all of that and exits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_websockets::{
    CloseCode, Error, Message, MessageType, WebSocket, WebSocketHandle, WebSocketLayer,
    WebSocketOptions, WebSocketUpgrade,
};
use tracing_subscriber::EnvFilter;

const DEFAULT_ADDR: &str = "127.0.0.1:5000";

/// The echo loop's buffer, as in the ASP.NET sample (`new byte[1024 * 4]`).
const BUFFER_SIZE: usize = 4 * 1024;

/// The reason of the Close frame sockets get on shutdown.
const GOING_AWAY_REASON: &str = "server is shutting down";

/// How long Ctrl-C waits for connections and sockets to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const USAGE: &str = "\
usage: echo [--addr HOST:PORT] [--threads N] [--mode aspnet|message]

  --addr HOST:PORT  address to listen on (default 127.0.0.1:5000)
  --threads N       tokio worker threads (default: one per CPU core)
  --mode aspnet     echo with the ASP.NET loop: 4 KiB receives, each sent
                    back as it came (default)
  --mode message    echo whole messages (receive_message / send_message)";

type Body = Full<Bytes>;

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    let result = runtime
        .build()
        .map_err(Into::into)
        .and_then(|runtime| runtime.block_on(serve(&args.addr, args.mode)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts connections until Ctrl-C, then shuts down gracefully.
async fn serve(addr: &str, mode: Mode) -> Result<(), Box<dyn StdError>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("Listening on http://{}", listener.local_addr()?);

    let shutdown = Shutdown::new();
    let watcher = shutdown.watcher();
    // `app.UseWebSockets()` followed by the sample's request handling.
    let app = ServiceBuilder::new()
        .layer(WebSocketLayer::new(WebSocketOptions::default())?)
        .service_fn(move |req| route(req, mode, watcher.clone()));

    let ctrl_c = ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut ctrl_c => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: back off a little.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // WebSocket frames are written whole (and coalesced by the socket):
        // Nagle's algorithm would only delay them.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let stop = shutdown.watcher();
        tokio::spawn(async move {
            if let Err(error) = serve_connection(tcp, service, stop).await {
                tracing::debug!(%peer, error, "connection error");
            }
        });
    }

    tracing::info!("shutting down");
    drop(listener);
    // The service holds a watcher too: drop it, or we would wait for it.
    drop(app);
    match shutdown.shutdown(SHUTDOWN_GRACE).await {
        0 => tracing::info!("all connections closed"),
        left => tracing::warn!(
            left,
            "connections or sockets still open after {SHUTDOWN_GRACE:?}; exiting anyway"
        ),
    }
    Ok(())
}

/// Serves one connection: HTTP/1.1 with upgrades, or h2c with extended
/// CONNECT, until it ends or shutdown is requested (then the request in
/// flight finishes first).
async fn serve_connection<S>(
    tcp: TcpStream,
    service: S,
    mut stop: ShutdownWatch,
) -> Result<(), Box<dyn StdError + Send + Sync>>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let http1 = tokio::select! {
        http1 = starts_http1(&tcp) => http1?,
        // A client that never sent its first bytes.
        () = stop.requested() => return Ok(()),
    };
    if http1 {
        // Upgrades must be enabled for WebSockets over HTTP/1.1.
        let conn = http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => result?,
            () = stop.requested() => {
                conn.as_mut().graceful_shutdown();
                conn.await?;
            }
        }
    } else {
        // h2c with prior knowledge (or a first read too short to tell):
        // let the auto builder decide.
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // RFC 8441: advertise extended CONNECT so HTTP/2 clients can open
        // WebSockets on their streams.
        builder.http2().enable_connect_protocol();
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => result?,
            () = stop.requested() => {
                conn.as_mut().graceful_shutdown();
                conn.await?;
            }
        }
    }
    Ok(())
}

/// Whether the connection's first bytes rule out HTTP/2's connection
/// preface (`PRI * HTTP/2.0...`), looked at without consuming them.
async fn starts_http1(tcp: &TcpStream) -> std::io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut first = [0u8; PREFACE.len()];
    let n = tcp.peek(&mut first).await?;
    Ok(n > 0 && !PREFACE.starts_with(&first[..n]))
}

/// The sample's routes.
async fn route(
    mut req: Request<Incoming>,
    mode: Mode,
    shutdown: ShutdownWatch,
) -> Result<Response<Body>, Infallible> {
    // `if (context.WebSockets.IsWebSocketRequest)`
    if req.uri().path() == "/ws" {
        let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "expected a WebSocket request\n",
            ));
        };
        // The request's headers share hyper's read buffer (8 KiB or more):
        // drop the request before the socket's long life.
        drop(req);
        accept_and_echo(upgrade, mode, shutdown).await;
        // Discarded: the 101 was sent when the socket was accepted.
        return Ok(Response::default());
    }
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => {
            let mut page = Response::new(Body::from(INDEX_HTML));
            page.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            page
        }
        (_, "/") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// `AcceptWebSocketAsync`, then the echo loop until the client closes.
/// On shutdown the server closes the socket with 1001 (going away) through
/// its handle, from outside the loop; the loop then sees the client's
/// answering Close and ends as usual. Errors are only logged: the client
/// has already seen them as the socket closing or dropping.
async fn accept_and_echo(upgrade: WebSocketUpgrade, mode: Mode, shutdown: ShutdownWatch) {
    let result = match upgrade.accept().await {
        Ok(mut socket) => match shutdown.register(&socket) {
            Some(registered) => {
                let result = match mode {
                    Mode::AspNet => echo(&mut socket).await,
                    Mode::Message => echo_messages(&mut socket).await,
                };
                drop(registered);
                result
            }
            // Accepted while the server was stopping.
            None => socket.close(CloseCode::GOING_AWAY, GOING_AWAY_REASON).await,
        },
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => tracing::debug!("websocket closed"),
        Err(error) => tracing::debug!(error = &error as &dyn StdError, "websocket failed"),
    }
}

/// The ASP.NET sample's `Echo` method, line by line.
async fn echo(socket: &mut WebSocket) -> Result<(), Error> {
    let mut buffer = vec![0; BUFFER_SIZE];
    loop {
        let result = socket.receive(&mut buffer).await?;
        if result.message_type() == MessageType::Close {
            // Complete the close handshake with the client's own status.
            let description = result.close_description().unwrap_or("");
            return socket.close(result.close_status(), description).await;
        }
        let received = &buffer[..result.count()];
        socket
            .send(received, result.message_type(), result.end_of_message())
            .await?;
    }
}

/// Echoes whole messages: what the benchmark suite's peer servers do.
async fn echo_messages(socket: &mut WebSocket) -> Result<(), Error> {
    loop {
        match socket.receive_message().await? {
            Message::Close(frame) => {
                let (status, description) = match &frame {
                    Some(frame) => (Some(frame.code), frame.reason.as_str()),
                    None => (None, ""),
                };
                return socket.close(status, description).await;
            }
            data => socket.send_message(data).await?,
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Resolves on Ctrl-C; never, if the signal handler cannot be installed.
async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::warn!(%error, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

/// Graceful shutdown for HTTP connections *and* the sockets they were
/// upgraded to.
///
/// Every connection task and every socket holds a [`ShutdownWatch`];
/// [`shutdown`](Self::shutdown) tells them all to stop and waits until they
/// have all been dropped. hyper-util's `GracefulShutdown` works the same
/// way, but it only watches hyper connections, and a connection's future
/// completes as soon as it is upgraded: it cannot wait for WebSockets.
struct Shutdown {
    tx: watch::Sender<()>,
    running: Arc<Mutex<Running>>,
}

/// A [`Shutdown`]'s signal, held for as long as there is work to finish.
#[derive(Clone)]
struct ShutdownWatch {
    rx: watch::Receiver<()>,
    running: Arc<Mutex<Running>>,
}

/// The sockets [`ShutdownWatch::register`] registered, to close on
/// shutdown.
#[derive(Default)]
struct Running {
    stopping: bool,
    next_id: u64,
    sockets: HashMap<u64, WebSocketHandle>,
}

impl Shutdown {
    fn new() -> Self {
        Shutdown {
            tx: watch::Sender::new(()),
            running: Arc::default(),
        }
    }

    fn watcher(&self) -> ShutdownWatch {
        ShutdownWatch {
            rx: self.tx.subscribe(),
            running: self.running.clone(),
        }
    }

    /// Signals every watcher and waits at most `grace` for all of them to be
    /// dropped; returns how many are left.
    async fn shutdown(self, grace: Duration) -> usize {
        let sockets: Vec<WebSocketHandle> = {
            let mut running = lock(&self.running);
            running.stopping = true;
            running.sockets.drain().map(|(_, socket)| socket).collect()
        };
        // Each socket's own loop sees the client's answering Close and
        // ends; a client that does not answer is cut off after the close
        // timeout.
        for socket in sockets {
            tokio::spawn(async move {
                let _ = socket.close(CloseCode::GOING_AWAY, GOING_AWAY_REASON).await;
            });
        }
        self.tx.send_replace(());
        let _ = tokio::time::timeout(grace, self.tx.closed()).await;
        self.tx.receiver_count()
    }
}

impl ShutdownWatch {
    /// Resolves once shutdown is requested.
    async fn requested(&mut self) {
        // An error means the `Shutdown` is gone, which also means stop.
        let _ = self.rx.changed().await;
    }

    /// Registers `socket` to be closed on shutdown, for as long as the
    /// returned guard lives; `None` if shutdown has begun.
    ///
    /// The socket is closed through its [`WebSocketHandle`], so the echo
    /// loop needs no shutdown signal of its own: a `select!` against
    /// [`requested`](Self::requested) would poll the watch again whenever
    /// the loop waits, once per message, and an `Abortable` would register
    /// a waker each time.
    fn register(&self, socket: &WebSocket) -> Option<Registered<'_>> {
        let mut running = lock(&self.running);
        if running.stopping {
            return None;
        }
        let id = running.next_id;
        running.next_id += 1;
        running.sockets.insert(id, socket.handle());
        Some(Registered {
            running: &self.running,
            id,
        })
    }
}

/// Forgets a registered socket once its loop has ended.
struct Registered<'a> {
    running: &'a Mutex<Running>,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(self.running).sockets.remove(&self.id);
    }
}

fn lock(running: &Mutex<Running>) -> MutexGuard<'_, Running> {
    // Nothing panics while holding the lock; a poisoned one is still usable.
    running.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The command line.
struct Args {
    addr: String,
    threads: Option<usize>,
    mode: Mode,
}

/// How `/ws` echoes.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// The ASP.NET sample's loop over a 4 KiB buffer.
    AspNet,
    /// Whole messages.
    Message,
}

impl Args {
    /// `Ok(None)` for `--help`.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let mut parsed = Args {
            addr: DEFAULT_ADDR.to_owned(),
            threads: None,
            mode: Mode::AspNet,
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--addr" => {
                    parsed.addr = args
                        .next()
                        .ok_or("--addr needs a value, such as 127.0.0.1:5000")?;
                }
                "--threads" => {
                    let value = args.next().ok_or("--threads needs a value")?;
                    match value.parse() {
                        Ok(threads) if threads > 0 => parsed.threads = Some(threads),
                        _ => {
                            return Err(format!(
                                "--threads must be a positive number, not {value:?}"
                            ));
                        }
                    }
                }
                "--mode" => {
                    parsed.mode = match args.next().as_deref() {
                        Some("aspnet") => Mode::AspNet,
                        Some("message") => Mode::Message,
                        _ => return Err("--mode needs a value: aspnet or message".to_owned()),
                    };
                }
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Some(parsed))
    }
}

/// The ASP.NET sample page, with every value put into the page escaped.
const INDEX_HTML: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>WebSocket Sample Application</title>
<style>
  body { font-family: system-ui, sans-serif; color: #222; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; }
  #stateLabel { font-weight: 600; }
  .row { display: flex; gap: .5rem; align-items: center; margin: .75rem 0; }
  .row label { width: 12rem; }
  .row input { flex: 1; padding: .3rem .4rem; }
  button { padding: .3rem .9rem; }
  table { width: 100%; border-collapse: collapse; margin-top: .5rem; }
  th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #ddd; }
  th:nth-child(-n+2) { width: 5rem; }
  .data { font-family: ui-monospace, Consolas, monospace; white-space: pre-wrap; word-break: break-all; }
  .client { background: #2e7d32; color: #fff; }
  .server { background: #c62828; color: #fff; }
</style>
</head>
<body>
<h1>WebSocket Sample Application</h1>
<p id="stateLabel">Ready to connect...</p>
<div class="row">
  <label for="connectionUrl">WebSocket Server URL:</label>
  <input id="connectionUrl">
  <button id="connectButton" type="button">Connect</button>
</div>
<div class="row">
  <label for="sendMessage">Message to send:</label>
  <input id="sendMessage" disabled>
  <button id="sendButton" type="button" disabled>Send</button>
  <button id="closeButton" type="button" disabled>Close Socket</button>
</div>

<h2>Communication Log</h2>
<table>
  <thead><tr><th>From</th><th>To</th><th>Data</th></tr></thead>
  <tbody id="commsLog"></tbody>
</table>

<script>
"use strict";

const connectionUrl = document.getElementById("connectionUrl");
const connectButton = document.getElementById("connectButton");
const stateLabel = document.getElementById("stateLabel");
const sendMessage = document.getElementById("sendMessage");
const sendButton = document.getElementById("sendButton");
const closeButton = document.getElementById("closeButton");
const commsLog = document.getElementById("commsLog");

let socket = null;
let socketFailed = false;

connectionUrl.value = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";

function htmlEscape(value) {
  return String(value)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

function logMessage(from, to, data) {
  commsLog.insertAdjacentHTML("beforeend",
    '<tr><td class="' + htmlEscape(from.toLowerCase()) + '">' + htmlEscape(from) + "</td>" +
    '<td class="' + htmlEscape(to.toLowerCase()) + '">' + htmlEscape(to) + "</td>" +
    '<td class="data">' + htmlEscape(data) + "</td></tr>");
}

function logEvent(text) {
  commsLog.insertAdjacentHTML("beforeend",
    '<tr><td colspan="3" class="data">' + htmlEscape(text) + "</td></tr>");
}

function updateState() {
  const state = socket ? socket.readyState : WebSocket.CLOSED;
  const open = state === WebSocket.OPEN;
  const closed = state === WebSocket.CLOSED;
  connectionUrl.disabled = !closed;
  connectButton.disabled = !closed;
  sendMessage.disabled = !open;
  sendButton.disabled = !open;
  closeButton.disabled = !open;
  if (!socket) {
    return; // keep "Ready to connect..." or the last error
  }
  switch (state) {
    case WebSocket.CONNECTING: stateLabel.textContent = "Connecting"; break;
    case WebSocket.OPEN: stateLabel.textContent = "Open"; break;
    case WebSocket.CLOSING: stateLabel.textContent = "Closing..."; break;
    case WebSocket.CLOSED: stateLabel.textContent = "Closed"; break;
    default: stateLabel.textContent = "Unknown WebSocket state: " + state; break;
  }
  if (socketFailed) {
    // Browsers give no details; the close event's code tells more.
    stateLabel.textContent = closed ? "Closed (connection error)" : "Error: connection failed";
  }
}

connectButton.onclick = function () {
  socketFailed = false;
  try {
    socket = new WebSocket(connectionUrl.value);
  } catch (error) {
    socket = null;
    stateLabel.textContent = "Error: " + error.message;
    updateState();
    return;
  }
  socket.binaryType = "arraybuffer";
  socket.onopen = function () {
    updateState();
    logEvent("Connection opened");
  };
  socket.onclose = function (event) {
    updateState();
    logEvent("Connection closed. Code: " + event.code + ". Reason: " + event.reason);
  };
  socket.onerror = function () {
    socketFailed = true;
    updateState();
  };
  socket.onmessage = function (event) {
    const data = typeof event.data === "string"
      ? event.data
      : "(" + event.data.byteLength + " bytes of binary data)";
    logMessage("Server", "Client", data);
  };
  updateState();
};

function send() {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    stateLabel.textContent = "Error: socket not connected";
    return;
  }
  const data = sendMessage.value;
  socket.send(data);
  logMessage("Client", "Server", data);
}

sendButton.onclick = send;
sendMessage.addEventListener("keydown", function (event) {
  if (event.key === "Enter") {
    send();
  }
});

closeButton.onclick = function () {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    stateLabel.textContent = "Error: socket not connected";
    return;
  }
  socket.close(1000, "Closing from client");
  updateState();
};

updateState();
</script>
</body>
</html>
"#;

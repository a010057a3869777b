//! The echo sample: a port of ASP.NET Core's WebSockets sample application.
//!
//! `/` serves the "WebSocket Sample Application" page; `/ws` accepts
//! WebSockets and echoes them with the ASP.NET echo loop: receive into a
//! 4 KiB buffer, send the same bytes back with the same message type and
//! end-of-message flag (so fragmented messages come back fragmented the
//! same way), until the client's Close arrives, then close with the
//! client's status.
//!
//! With `--deflate` it accepts permessage-deflate (RFC 7692) from clients
//! that offer it, as browsers do; the page shows the negotiated extension.
//!
//! With `--mode message` it echoes whole messages instead
//! (`recv` / `send`), the way the benchmark suite's
//! peer servers do; fragmented messages then come back as one frame. (The
//! suite itself measures `bench/src/bin/tower-websockets.rs`: the same
//! socket code without the page and the Ctrl-C registry.)
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
//! Deadlines (`../common/mod.rs`): a connection has `--handshake-timeout`
//! seconds (default 10) to send its first request's headers (a first-bytes
//! deadline, then hyper's header-read timeout, which needs hyper's timer);
//! request heads are capped at 64 KiB; idle HTTP/2 connections are pinged
//! and closed when they do not answer. Sockets then have the keep-alive
//! and close timeouts of `WebSocketOptions`.
//!
//! Every socket is logged at info when it is accepted and when it ends
//! (code, reason, duration); `RUST_LOG=tower_websockets=debug` adds the
//! library's own events (protocol errors, timeouts, rejected handshakes).
//!
//! Ctrl-C or SIGTERM stops the server: it stops accepting, lets HTTP
//! requests in flight finish (hyper's graceful shutdown), drains the
//! sockets with the layer's [`DrainHandle`](tower_websockets::DrainHandle)
//! (1001, going away), waits at most 5 seconds for all of that and exits.

mod args;
#[path = "../common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_websockets::{
    DeflateOptions, DrainOptions, Error, Message, MessageType, ResponseBody, WebSocket,
    WebSocketLayer, WebSocketOptions, WebSocketUpgrade,
};
use tracing_subscriber::EnvFilter;

use args::{Args, Mode, USAGE};

/// The reason of the Close frame sockets get on shutdown.
const GOING_AWAY_REASON: &str = "server is shutting down";

/// The echo loop's buffer, as in the ASP.NET sample (`new byte[1024 * 4]`).
const BUFFER_SIZE: usize = 4 * 1024;

/// How long Ctrl-C waits for connections and sockets to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
        // Colours only on a terminal: logs collected from a pipe stay plain.
        .with_ansi(std::io::stdout().is_terminal())
        .init();

    common::run(args.threads, serve(&args))
}

/// Accepts connections until Ctrl-C, then shuts down gracefully.
async fn serve(args: &Args) -> Result<(), Box<dyn StdError>> {
    let (addr, mode, handshake) = (args.addr.as_str(), args.mode, args.handshake_timeout);
    let mut options = WebSocketOptions::default();
    if args.deflate {
        options = options.permessage_deflate(Some(DeflateOptions::default()));
    }
    let listener = common::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("Listening on http://{}", listener.local_addr()?);

    let layer = WebSocketLayer::new(options)?;
    let drain = layer.drain_handle();
    // `app.UseWebSockets()` followed by the sample's request handling.
    let app = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |req| route(req, mode));

    // Connections watch `stop`; `connections` tracks their tasks.
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let shutdown = common::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
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
        let stop = stop.clone();
        connections.spawn(async move {
            if let Err(error) = serve_connection(tcp, service, stop, handshake).await {
                tracing::debug!(%peer, error, "connection error");
            }
        });
    }

    tracing::info!("shutting down");
    drop(listener);
    // HTTP connections finish the request in flight and close (HTTP/2
    // ones once their WebSocket streams end); the drain closes the
    // sockets, those upgraded from HTTP/1.1 included, which hyper no
    // longer sees.
    stop.cancel();
    connections.close();
    let options = DrainOptions::new()
        .reason(GOING_AWAY_REASON)
        .deadline(SHUTDOWN_GRACE);
    let (report, connections) = tokio::join!(
        drain.drain(options),
        tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()),
    );
    if report.is_clean() && connections.is_ok() {
        tracing::info!(sockets = report.sockets, "all connections closed");
    } else {
        tracing::warn!(
            closed = report.closed,
            aborted = report.aborted,
            unfinished = report.unfinished,
            connections_left = connections.is_err(),
            "connections or sockets still open after {SHUTDOWN_GRACE:?}; exiting anyway"
        );
    }
    Ok(())
}

/// Serves one connection: HTTP/1.1 with upgrades, or h2c with extended
/// CONNECT, until it ends or shutdown is requested (then the request in
/// flight finishes first). The first request's headers must arrive within
/// `handshake`.
async fn serve_connection<S>(
    tcp: TcpStream,
    service: S,
    stop: CancellationToken,
    handshake: Duration,
) -> Result<(), Box<dyn StdError + Send + Sync>>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<ResponseBody<Body>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let started = tokio::time::Instant::now();
    let http1 = tokio::select! {
        http1 = common::first_bytes(&tcp, handshake) => http1?,
        // A client that never sent its first bytes.
        () = stop.cancelled() => return Ok(()),
    };
    let Some(http1) = http1 else {
        // Silent past the deadline, or gone.
        return Ok(());
    };
    // What is left of the deadline bounds the headers.
    let headers = handshake
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    if http1 {
        // Upgrades must be enabled for WebSockets over HTTP/1.1.
        let conn = common::http1_builder(headers)
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => result?,
            () = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await?;
            }
        }
    } else {
        // h2c with prior knowledge. The builder advertises extended
        // CONNECT (RFC 8441) so HTTP/2 clients can open WebSockets on
        // their streams.
        let builder = common::auto_builder(headers);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => result?,
            () = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await?;
            }
        }
    }
    Ok(())
}

/// The sample's routes.
async fn route(mut req: Request<Incoming>, mode: Mode) -> Result<Response<Body>, Infallible> {
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
        accept_and_echo(upgrade, mode).await;
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

/// `AcceptWebSocketAsync`, then the echo loop until the client closes,
/// logging the socket's start and end. On shutdown the layer's drain
/// closes the socket with 1001 (going away) from outside the loop; the
/// loop then sees the client's answering Close and ends as usual. Errors
/// are only logged: the client has already seen them as the socket
/// closing or dropping.
async fn accept_and_echo(upgrade: WebSocketUpgrade, mode: Mode) {
    let started = Instant::now();
    let mut socket = match upgrade.accept().await {
        Ok(socket) => socket,
        Err(error) => {
            tracing::info!(error = &error as &dyn StdError, "websocket accept failed");
            return;
        }
    };
    tracing::info!(
        subprotocol = socket.subprotocol(),
        extensions = socket.extensions(),
        "websocket accepted"
    );
    let result = match mode {
        Mode::AspNet => echo(&mut socket).await,
        Mode::Message => echo_messages(&mut socket).await,
    };
    let code = socket.close_status().map(|code| code.as_u16());
    let reason = socket.close_status_description();
    let reason = reason.as_deref();
    let duration = started.elapsed();
    match result {
        Ok(()) => tracing::info!(code, reason, ?duration, "websocket closed"),
        Err(error) => tracing::info!(
            code,
            reason,
            ?duration,
            error = &error as &dyn StdError,
            "websocket failed"
        ),
    }
}

/// The ASP.NET sample's `Echo` method, line by line.
async fn echo(socket: &mut WebSocket) -> Result<(), Error> {
    let mut buffer = vec![0; BUFFER_SIZE];
    loop {
        let result = socket.receive_buffer(&mut buffer).await?;
        if result.message_type() == MessageType::Close {
            // Complete the close handshake with the client's own status.
            let description = result.close_description().unwrap_or("");
            return socket.close_with(result.close_status(), description).await;
        }
        let received = &buffer[..result.count()];
        socket
            .send_buffer(received, result.message_type(), result.end_of_message())
            .await?;
    }
}

/// Echoes whole messages: what the benchmark suite's peer servers do.
async fn echo_messages(socket: &mut WebSocket) -> Result<(), Error> {
    while let Some(message) = socket.recv().await {
        match message? {
            Message::Close(frame) => {
                let (status, description) = match &frame {
                    Some(frame) => (Some(frame.code), frame.reason.as_str()),
                    None => (None, ""),
                };
                return socket.close_with(status, description).await;
            }
            // Answered by the socket itself.
            Message::Ping(_) | Message::Pong(_) => {}
            data => socket.send(data).await?,
        }
    }
    Ok(())
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

/// The ASP.NET sample page, with every value put into the page escaped.
const INDEX_HTML: &str = include_str!("index.html");

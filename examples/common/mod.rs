//! What every example's accept loop does before and while hyper serves a
//! connection: deadlines, so that a client that connects and sends
//! nothing, or never finishes its request headers, cannot hold a
//! connection (and its buffers) for ever.
//!
//! - the first bytes: a connection has [`HANDSHAKE_TIMEOUT`] to send
//!   enough to tell HTTP/1.1 from HTTP/2's preface ([`first_bytes`]);
//! - HTTP/1.1: hyper's header-read timeout (it needs hyper's timer, which
//!   hyper's builders do not set by themselves) bounds each request head,
//!   including the wait for the next request on a kept-alive connection;
//!   request heads are capped at 64 KiB (hyper's default is ~400 KiB);
//! - HTTP/2: hyper pings an idle connection and closes it when the pings
//!   go unanswered ([`H2_KEEP_ALIVE`]).
//!
//! Once a WebSocket is accepted, its own deadlines take over: the
//! keep-alive timeout and the close timeout of `WebSocketOptions`.

#![allow(dead_code, reason = "each example uses the parts it needs")]

use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

/// How long a new connection may take to send its first request's
/// headers.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often hyper pings an idle HTTP/2 connection, and how long it waits
/// for the answer.
pub(crate) const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// The largest request head hyper buffers on an HTTP/1.1 connection.
pub(crate) const MAX_REQUEST_HEAD: usize = 64 * 1024;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, at most `deadline`, until the connection's first bytes tell
/// HTTP/1.1 (`Some(true)`) from HTTP/2's preface (`Some(false)`), looking
/// without consuming them. `None`: the deadline passed, or the client
/// closed the connection first; drop it.
pub(crate) async fn first_bytes(
    tcp: &TcpStream,
    deadline: Duration,
) -> std::io::Result<Option<bool>> {
    let decide = async {
        let mut first = [0u8; PREFACE.len()];
        loop {
            let n = tcp.peek(&mut first).await?;
            if n == 0 {
                return Ok(None);
            }
            if !PREFACE.starts_with(&first[..n]) {
                return Ok(Some(true));
            }
            if n == PREFACE.len() {
                return Ok(Some(false));
            }
            // A prefix of the preface: wait for more.
            tcp.readable().await?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    match tokio::time::timeout(deadline, decide).await {
        Ok(result) => result,
        Err(_) => Ok(None),
    }
}

/// hyper's HTTP/1.1 builder with its timer, the header-read timeout and
/// the request-head cap.
pub(crate) fn http1_builder(header_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD);
    builder
}

/// hyper-util's auto builder (HTTP/1.1 and h2c) with the same HTTP/1.1
/// deadlines, HTTP/2 keep-alive, and extended CONNECT for WebSockets over
/// HTTP/2 (RFC 8441).
pub(crate) fn auto_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE)
        .enable_connect_protocol();
    builder
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what orchestrators
/// send); a signal whose handler cannot be installed is only logged.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The accept queue the examples ask the kernel for (Linux caps it at
/// `net.core.somaxconn`, 4096 by default). tokio's `TcpListener::bind`
/// asks for 128 (mio, as the standard library), and a burst of reconnecting
/// clients (a drained node's users coming back) overflows a short queue:
/// the kernel drops the SYNs and the clients retry a second later.
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (the first address it resolves to) with
/// [`LISTEN_BACKLOG`].
pub(crate) async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the address resolved to nothing")))
}

/// Accepts connections on `listener` until Ctrl-C or SIGTERM and serves
/// each with `app` (HTTP/1.1 or HTTP/2 with upgrades, the deadlines
/// above), watched by `graceful`; the listener is closed when it returns,
/// and the caller then drains the sockets and waits for the connections
/// together.
pub(crate) async fn serve_until_shutdown<S, B>(
    listener: tokio::net::TcpListener,
    app: S,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
) where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // Typically out of file descriptors: back off a little.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Frames are written whole and coalesced by the socket: Nagle's
        // algorithm could only delay them.
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A connection that sends nothing is dropped at the deadline;
            // then hyper's header-read timeout bounds the headers.
            if !matches!(first_bytes(&tcp, HANDSHAKE_TIMEOUT).await, Ok(Some(_))) {
                return;
            }
            let builder = auto_builder(HANDSHAKE_TIMEOUT);
            let conn =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tcp), service);
            if let Err(error) = watcher.watch(conn).await {
                tracing::debug!(error, "connection error");
            }
        });
    }
}

/// Runs `serve` on a multi-threaded runtime (`threads` workers, or one per
/// core) and turns its result into the process's exit status, printing
/// the error if there is one.
pub(crate) fn run(
    threads: Option<usize>,
    serve: impl std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
) -> std::process::ExitCode {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = threads {
        runtime.worker_threads(threads);
    }
    let result = runtime
        .build()
        .map_err(Into::into)
        .and_then(|runtime| runtime.block_on(serve));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

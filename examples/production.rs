//! A WebSocket server set up for production: a cap on live sockets,
//! handshake deadlines, counters at `/metrics` in the Prometheus text
//! format, `tracing` logs, and a graceful shutdown on SIGTERM or Ctrl-C
//! that drains the sockets (1001, going away) while hyper-util's
//! `GracefulShutdown` finishes the HTTP connections.
//!
//! ```text
//! cargo run --release --example production -- --addr 127.0.0.1:5001 --max-sockets 10000
//! curl http://127.0.0.1:5001/metrics
//! websocat ws://127.0.0.1:5001/ws
//! ```
//!
//! Options: `--addr HOST:PORT` (default `127.0.0.1:5001`), `--threads N`
//! (default: one per core), `--max-sockets N` (default 10000),
//! `--drain-seconds S` (default 10), `--keep-alive S` (the keep-alive
//! interval, default 30; 0 turns pings off). `RUST_LOG` picks the logs
//! (default `info,tower_websockets=debug`: one line per socket event).
//!
//! `/ws` echoes whole messages; `/metrics` serves the layer's
//! [`WebSocketStats`], with the runtime's live tasks and, on Linux, the
//! process's resident memory and CPU time; anything else is 404.
//!
//! hyper-util's auto builder serves HTTP/1.1 and h2c (with extended
//! CONNECT for WebSockets over HTTP/2) on one port, and its
//! `GracefulShutdown` watches every connection. It wraps the connection
//! in a type of its own, so accepted sockets use the generic I/O path
//! rather than the `TcpStream` one (`examples/echo` peeks at the first
//! bytes to keep the latter).

#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::server::graceful::GracefulShutdown;
use tower::ServiceBuilder;
use tower_websockets::{
    DrainOptions, Message, WebSocketLayer, WebSocketOptions, WebSocketStats, WebSocketUpgrade,
};
use tracing_subscriber::EnvFilter;

type Body = Full<Bytes>;

struct Args {
    addr: String,
    threads: Option<usize>,
    max_sockets: usize,
    drain: Duration,
    keep_alive: Option<Duration>,
}

const USAGE: &str = "usage: production [--addr HOST:PORT] [--threads N] [--max-sockets N] \
                     [--drain-seconds S] [--keep-alive S]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:5001".to_owned(),
        threads: None,
        max_sockets: 10_000,
        drain: Duration::from_secs(10),
        keep_alive: Some(tower_websockets::DEFAULT_KEEP_ALIVE_INTERVAL),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--threads" => args.threads = Some(number(&flag, &value()?)?),
            "--max-sockets" => args.max_sockets = number(&flag, &value()?)?,
            "--drain-seconds" => args.drain = seconds(&flag, &value()?)?,
            "--keep-alive" => {
                args.keep_alive = Some(seconds(&flag, &value()?)?).filter(|d| !d.is_zero());
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(args)
}

fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    value
        .parse()
        .ok()
        .and_then(|s: f64| Duration::try_from_secs_f64(s).ok())
        .ok_or(format!("{flag} takes seconds"))
}

fn number(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} takes a positive number")),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,tower_websockets=debug")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    common::run(args.threads, serve(args))
}

async fn serve(args: Args) -> Result<(), Box<dyn StdError>> {
    let options = WebSocketOptions::default()
        .max_sockets(Some(args.max_sockets))
        .keep_alive_interval(args.keep_alive);
    let layer = WebSocketLayer::new(options)?;
    let drain = layer.drain_handle();
    let metrics = layer.clone();
    let app = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |req| route(req, metrics.clone()));

    let listener = common::bind(&args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    println!("Listening on http://{}", listener.local_addr()?);

    let graceful = GracefulShutdown::new();
    common::serve_until_shutdown(listener, app, &graceful).await;

    // No longer accepting: drain the sockets and finish the HTTP connections
    // together, within the deadline (plus a second for the aborts).
    tracing::info!(live = drain.live_sockets(), "shutting down");
    let options = DrainOptions::new()
        .deadline(args.drain)
        .retry_after(Some(Duration::from_secs(5)));
    let (report, connections) = tokio::join!(
        drain.drain(options),
        tokio::time::timeout(args.drain + Duration::from_secs(1), graceful.shutdown()),
    );
    tracing::info!(
        sockets = report.sockets,
        closed = report.closed,
        aborted = report.aborted,
        unfinished = report.unfinished,
        elapsed = ?report.elapsed,
        connections_closed = connections.is_ok(),
        "drained"
    );
    Ok(())
}

async fn route(
    mut req: Request<Incoming>,
    layer: WebSocketLayer,
) -> Result<Response<Body>, Infallible> {
    match req.uri().path() {
        "/ws" => {
            let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
                return Ok(text(
                    StatusCode::BAD_REQUEST,
                    "expected a WebSocket request\n".into(),
                ));
            };
            drop(req);
            if let Ok(mut socket) = upgrade.accept().await {
                // Echo until the client's Close (or the drain's, answered
                // by the client) arrives.
                while let Some(Ok(message)) = socket.recv().await {
                    let reply = match message {
                        Message::Close(frame) => {
                            let (code, reason) = match &frame {
                                Some(frame) => (Some(frame.code), frame.reason.as_str()),
                                None => (None, ""),
                            };
                            let _ = socket.close_with(code, reason).await;
                            break;
                        }
                        // Answered by the socket itself.
                        Message::Ping(_) | Message::Pong(_) => continue,
                        data => socket.send(data).await,
                    };
                    if reply.is_err() {
                        break;
                    }
                }
            }
            Ok(Response::default())
        }
        "/metrics" => {
            let mut response = text(StatusCode::OK, prometheus(&layer.stats()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }
        _ => Ok(text(StatusCode::NOT_FOUND, "not found\n".into())),
    }
}

/// The counters in the Prometheus text exposition format.
fn prometheus(stats: &WebSocketStats) -> String {
    let mut out = String::new();
    write_metric(
        &mut out,
        "websocket_live_sockets",
        "gauge",
        "WebSocket requests seen and not yet finished.",
        &[("", stats.live as u64)],
    );
    write_metric(
        &mut out,
        "websocket_accepted_total",
        "counter",
        "Sockets accepted.",
        &[("", stats.accepted)],
    );
    let rejected = &stats.rejected;
    write_metric(
        &mut out,
        "websocket_rejected_total",
        "counter",
        "WebSocket requests the layer answered itself, by reason.",
        &[
            (r#"{reason="origin"}"#, rejected.origin),
            (r#"{reason="capacity"}"#, rejected.capacity),
            (r#"{reason="draining"}"#, rejected.draining),
        ],
    );
    write_metric(
        &mut out,
        "websocket_not_accepted_total",
        "counter",
        "WebSocket requests the handler did not turn into a socket.",
        &[("", stats.not_accepted)],
    );
    let closed = &stats.closed;
    write_metric(
        &mut out,
        "websocket_closed_total",
        "counter",
        "Finished sockets, by outcome.",
        &[
            (r#"{outcome="clean"}"#, closed.clean),
            (r#"{outcome="protocol_error"}"#, closed.protocol_error),
            (
                r#"{outcome="keep_alive_timeout"}"#,
                closed.keep_alive_timeout,
            ),
            (r#"{outcome="close_timeout"}"#, closed.close_timeout),
            (r#"{outcome="connection_lost"}"#, closed.connection_lost),
            (r#"{outcome="aborted"}"#, closed.aborted),
            (r#"{outcome="left_open"}"#, closed.left_open),
        ],
    );
    write_metric(
        &mut out,
        "tokio_alive_tasks",
        "gauge",
        "Tasks alive on the server's tokio runtime.",
        &[(
            "",
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
        )],
    );
    if let Some((rss, cpu)) = process_usage() {
        write_metric(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            &[("", rss)],
        );
        write_metric(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent in seconds.",
            &[("", cpu)],
        );
    }
    let traffic = &stats.traffic;
    write_metric(
        &mut out,
        "websocket_messages_total",
        "counter",
        "Data messages, by direction.",
        &[
            (r#"{direction="in"}"#, traffic.messages_in),
            (r#"{direction="out"}"#, traffic.messages_out),
        ],
    );
    write_metric(
        &mut out,
        "websocket_bytes_total",
        "counter",
        "Bytes on the sockets' connections, frame headers included, by direction.",
        &[
            (r#"{direction="in"}"#, traffic.bytes_in),
            (r#"{direction="out"}"#, traffic.bytes_out),
        ],
    );
    out
}

fn write_metric<T: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(&str, T)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The process's resident memory (bytes) and CPU time (seconds), from
/// `/proc/self` on Linux.
fn process_usage() -> Option<(u64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command's closing parenthesis: state is field 3, utime
    // and stime fields 14 and 15, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((rss_kib * 1024, ticks as f64 / 100.0))
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
}

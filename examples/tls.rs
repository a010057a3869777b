//! WebSockets over TLS, HTTP/1.1 and HTTP/2: rustls with ALPN `h2` and
//! `http/1.1`; an `h2` connection is served by hyper's HTTP/2 builder with
//! extended CONNECT enabled (RFC 8441), so a browser that loaded the page
//! over HTTP/2 opens its `wss://` socket as a stream of that connection.
//!
//! ```text
//! cargo run --example tls                                # a self-signed certificate for localhost
//! cargo run --example tls -- --cert cert.pem --key key.pem --addr 0.0.0.0:8443 --threads 2
//! ```
//!
//! Then open <https://localhost:5443> (accept the self-signed certificate):
//! the page opens `wss://…/ws`, the server greets it with the HTTP version
//! the socket arrived over, the page echoes a message and closes. The
//! server logs every socket with its version (`websocket accepted
//! version=HTTP/2.0`).
//!
//! Deadlines as in the other examples: 10 s for the TLS handshake and the
//! first request's headers, HTTP/2 keep-alive pings.

#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tower::ServiceBuilder;
use tower_websockets::{Message, WebSocketLayer, WebSocketUpgrade};

type Body = Full<Bytes>;

struct Args {
    addr: String,
    threads: Option<usize>,
    cert: Option<String>,
    key: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:5443".into(),
        threads: None,
        cert: None,
        key: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => args.addr = value,
            "--threads" => {
                args.threads = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or("--threads takes a positive number")?,
                );
            }
            "--cert" => args.cert = Some(value),
            "--key" => args.key = Some(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if args.cert.is_some() != args.key.is_some() {
        return Err("--cert and --key go together".into());
    }
    Ok(args)
}

/// The certificate chain and key: from PEM files, or a self-signed
/// certificate for `localhost` and `127.0.0.1` made now.
fn certificate(
    args: &Args,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Box<dyn StdError>> {
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(key)?;
        return Ok((chain, key));
    }
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let made = rcgen::generate_simple_self_signed(names)?;
    let key = PrivatePkcs8KeyDer::from(made.key_pair.serialize_der());
    println!("Self-signed certificate for localhost and 127.0.0.1 (made at start)");
    Ok((vec![made.cert.der().clone()], key.into()))
}

fn main() -> Result<(), Box<dyn StdError>> {
    let args = parse_args().map_err(|e| {
        format!("{e}\nusage: tls [--addr HOST:PORT] [--threads N] [--cert PEM --key PEM]")
    })?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    runtime.build()?.block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), Box<dyn StdError>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    let (chain, key) = certificate(&args)?;
    // The crypto provider is ring, the one rustls is built with here.
    let mut tls = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // HTTP/2 first: browsers then open WebSockets as HTTP/2 streams.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let app = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .service_fn(route);
    let listener = common::bind(&args.addr).await?;
    println!("Listening on https://{}", listener.local_addr()?);
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (acceptor, service) = (acceptor.clone(), TowerToHyperService::new(app.clone()));
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(common::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => return tracing::debug!(%peer, %error, "tls handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "tls handshake timed out"),
                };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = TokioIo::new(tls);
            let served = if h2 {
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .keep_alive_interval(common::H2_KEEP_ALIVE)
                    .keep_alive_timeout(common::H2_KEEP_ALIVE)
                    // RFC 8441: WebSockets as HTTP/2 streams.
                    .enable_connect_protocol();
                builder.serve_connection(io, service).await
            } else {
                common::http1_builder(common::HANDSHAKE_TIMEOUT)
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection error");
            }
        });
    }
}

async fn route(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/ws" {
        let version = req.version();
        let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "expected a WebSocket request\n",
            ));
        };
        drop(req);
        let Ok(mut socket) = upgrade.accept().await else {
            return Ok(Response::default());
        };
        tracing::info!(?version, "websocket accepted");
        if socket
            .send(Message::text(format!("hello over {version:?}")))
            .await
            .is_err()
        {
            return Ok(Response::default());
        }
        while let Some(Ok(message)) = socket.recv().await {
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                break;
            }
        }
        tracing::info!(
            code = socket.close_status().map(|c| c.as_u16()),
            "websocket closed"
        );
        return Ok(Response::default());
    }
    let mut page = Response::new(Body::from(PAGE));
    page.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(page)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
}

/// Opens `wss://…/ws`, logs the greeting, echoes one message, closes.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>tower-websockets over TLS</title>
<h1>tower-websockets over TLS</h1>
<pre id="log"></pre>
<script>
  const log = (line) => { document.getElementById("log").textContent += line + "\n"; };
  const ws = new WebSocket(`wss://${location.host}/ws`);
  ws.onopen = () => log("open");
  ws.onmessage = (event) => {
    log("received: " + event.data);
    if (event.data.startsWith("hello over")) {
      ws.send("echo me");
    } else if (event.data === "echo me") {
      log("echoed");
      ws.close(1000, "done");
    }
  };
  ws.onclose = (event) => log("closed " + event.code);
</script>
"#;

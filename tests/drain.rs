//! `DrainHandle`: upgrades refused with 503 during a drain, every open
//! socket sent 1001 (going away) and waited for, the ones that do not
//! answer aborted at the deadline; over HTTP/1.1 and HTTP/2.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::h2::*;
use common::*;
use futures_util::StreamExt;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as Client;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as ClientCode;
use tower::ServiceBuilder;
use tower_websockets::{DrainOptions, WebSocketLayer, WebSocketOptions};

/// An echo server whose layer the test keeps; counts the request
/// pipelines that completed.
async fn drained_server(
    options: WebSocketOptions,
) -> (SocketAddr, WebSocketLayer, Arc<AtomicUsize>) {
    let layer = WebSocketLayer::new(options).unwrap();
    let completed = Arc::new(AtomicUsize::new(0));
    let done = completed.clone();
    let service =
        ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(move |req: Request<Incoming>| {
                let done = done.clone();
                async move {
                    let response = echo_handler(req).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    response
                }
            });
    (serve(service).await, layer, completed)
}

/// Reads a tungstenite client until its stream ends (answering the
/// server's Close on the way), returning the Close it got.
async fn close_received<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
) -> Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut close = None;
    while let Some(Ok(message)) = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap() {
        if let Client::Close(frame) = message {
            close = frame;
        }
    }
    close
}

#[tokio::test]
async fn a_hundred_open_sockets_get_1001_and_every_pipeline_completes() {
    let (addr, layer, completed) = drained_server(WebSocketOptions::default()).await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        clients.push(tokio::spawn(close_received(ws)));
    }
    assert_eq!(layer.live_sockets(), 100);

    let report = layer
        .drain_handle()
        .drain(DrainOptions::new().reason("deploying"))
        .await;
    assert_eq!(report.sockets, 100);
    assert_eq!(report.closed, 100, "{report:?}");
    assert_eq!((report.aborted, report.unfinished), (0, 0));
    assert!(report.is_clean());
    for client in clients {
        let close = client.await.unwrap().expect("a Close frame");
        assert_eq!(close.code, ClientCode::Away);
        assert_eq!(close.reason.as_str(), "deploying");
    }
    // The lifetime rule: a socket counts until its pipeline completed.
    assert_eq!(completed.load(Ordering::SeqCst), 100);
    assert_eq!(layer.live_sockets(), 0);
    let stats = layer.stats();
    assert_eq!((stats.accepted, stats.closed.clean), (100, 100));
}

#[tokio::test]
async fn a_client_that_ignores_the_close_is_aborted_at_the_deadline() {
    let (addr, layer, completed) = drained_server(WebSocketOptions::default()).await;
    let mut deaf = raw_connect(addr, "/ws").await;
    let (polite, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let polite = tokio::spawn(close_received(polite));

    let deadline = Duration::from_millis(300);
    let report = layer
        .drain_handle()
        .drain(DrainOptions::new().deadline(deadline))
        .await;
    assert_eq!(
        (report.sockets, report.closed, report.aborted),
        (2, 1, 1),
        "{report:?}"
    );
    assert_eq!(report.unfinished, 0);
    assert!(report.elapsed >= deadline);
    assert!(!report.is_clean());
    assert_eq!(
        polite.await.unwrap().map(|close| close.code),
        Some(ClientCode::Away)
    );
    // The deaf client got the Close, then the connection dropped.
    let frames = deaf.read_to_end().await;
    assert_eq!(frames.last().and_then(ServerFrame::close_code), Some(1001));
    // Its handler saw the abort and returned.
    tokio::time::timeout(TIMEOUT, async {
        while completed.load(Ordering::SeqCst) < 2 || layer.live_sockets() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both pipelines complete");
    let stats = layer.stats();
    assert_eq!(
        (stats.closed.clean, stats.closed.aborted),
        (1, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn upgrades_during_the_drain_get_503_with_retry_after_and_plain_requests_pass() {
    let (addr, layer, _) = drained_server(WebSocketOptions::default()).await;
    // A socket that keeps the drain going while the test looks.
    let _deaf = raw_connect(addr, "/ws").await;
    let drain = layer.drain_handle();
    let draining = tokio::spawn({
        let drain = drain.clone();
        async move {
            drain
                .drain(
                    DrainOptions::new()
                        .deadline(Duration::from_secs(5))
                        .retry_after(Some(Duration::from_millis(2500))),
                )
                .await
        }
    });
    while !drain.is_draining() {
        tokio::task::yield_now().await;
    }

    let (_, head, _) = raw_request(addr, &handshake_request("/ws", &[]), &[]).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 3\r\n"),
        "{head}"
    );
    let (_, head, _) = raw_request(addr, b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n", &[]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(layer.stats().rejected.draining, 1);

    // Dropping the deaf client's connection ends the drain early.
    drop(_deaf);
    let report = tokio::time::timeout(TIMEOUT, draining)
        .await
        .unwrap()
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.elapsed < Duration::from_secs(5));
}

#[tokio::test]
async fn http2_sockets_drain_too() {
    let (addr, layer, completed) = drained_server(WebSocketOptions::default()).await;
    let mut sender = h2_connect(addr).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (stream, _) = open_stream(&mut sender, "/ws", &[]).await;
        let ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
        clients.push(tokio::spawn(close_received(ws)));
    }
    assert_eq!(layer.live_sockets(), 3);
    let report = layer.drain_handle().drain(DrainOptions::new()).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.sockets, 3);
    for client in clients {
        let close = client.await.unwrap().expect("a Close frame");
        assert_eq!(close.code, ClientCode::Away);
        assert_eq!(
            close.reason.as_str(),
            tower_websockets::DEFAULT_DRAIN_REASON
        );
    }
    assert_eq!(completed.load(Ordering::SeqCst), 3);
    // The HTTP/2 connection itself still serves ordinary requests.
    let page = Request::get("http://localhost/page")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender.send_request(page).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
}

#[tokio::test]
async fn a_socket_accepted_during_the_drain_is_closed_at_once() {
    let layer = WebSocketLayer::new(WebSocketOptions::default()).unwrap();
    let go = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    let service = ServiceBuilder::new().layer(layer.clone()).service_fn({
        let (go, arrived) = (go.clone(), arrived.clone());
        move |req: Request<Incoming>| {
            let (go, arrived) = (go.clone(), arrived.clone());
            async move {
                // Admitted before the drain, accepts during it.
                arrived.notify_one();
                go.notified().await;
                let response: Result<Response<Body>, Infallible> = echo_handler(req).await;
                response
            }
        }
    });
    let addr = serve(service).await;
    let client = tokio::spawn(async move {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        close_received(ws).await
    });
    tokio::time::timeout(TIMEOUT, arrived.notified())
        .await
        .unwrap();
    let drain = layer.drain_handle();
    let draining = tokio::spawn(async move { drain.drain(DrainOptions::new()).await });
    while !layer.drain_handle().is_draining() {
        tokio::task::yield_now().await;
    }
    go.notify_one();
    let close = tokio::time::timeout(TIMEOUT, client)
        .await
        .unwrap()
        .unwrap()
        .expect("a Close frame");
    assert_eq!(close.code, ClientCode::Away);
    let report = tokio::time::timeout(TIMEOUT, draining)
        .await
        .unwrap()
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.sockets, 1);
}

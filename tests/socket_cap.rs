//! `WebSocketOptions::max_sockets`: over the cap an upgrade gets 503
//! before the inner service runs, ordinary requests pass, and a socket's
//! place is given back once it is finished (or its handler declines).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use tower::ServiceBuilder;
use tower_websockets::{WebSocketLayer, WebSocketOptions, WebSocketUpgrade};

/// Waits (bounded) until the layer counts `n` live sockets.
async fn live_becomes(layer: &WebSocketLayer, n: usize) {
    tokio::time::timeout(TIMEOUT, async {
        while layer.live_sockets() != n {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("live sockets stayed {}, not {n}", layer.live_sockets()));
}

#[tokio::test]
async fn upgrades_over_the_cap_get_503_before_the_inner_service() {
    let layer = WebSocketLayer::new(WebSocketOptions::default().max_sockets(Some(2))).unwrap();
    let upgrades_seen = Arc::new(AtomicUsize::new(0));
    let seen = upgrades_seen.clone();
    let service =
        ServiceBuilder::new()
            .layer(layer.clone())
            .service_fn(move |req: Request<Incoming>| {
                if req.extensions().get::<WebSocketUpgrade>().is_some() {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                async move {
                    // "/decline" answers without accepting.
                    if req.uri().path() == "/decline" {
                        return Ok(Response::<Body>::default());
                    }
                    echo_handler(req).await
                }
            });
    let addr = serve(service).await;

    let mut first = raw_connect(addr, "/ws").await;
    let _second = raw_connect(addr, "/ws").await;
    assert_eq!(layer.live_sockets(), 2);
    // A third upgrade: 503, and the inner service never saw it.
    let (_, head, _) = raw_request(addr, &handshake_request("/ws", &[]), &[]).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(upgrades_seen.load(Ordering::SeqCst), 2);
    // An ordinary request passes.
    let (_, head, _) = raw_request(addr, b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n", &[]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // The first socket's close handshake gives its place back.
    first
        .send(&frame(true, 0x8, &close_payload(1000, ""), Some(MASK)))
        .await;
    let frames = first.read_to_end().await;
    assert_eq!(frames.last().and_then(ServerFrame::close_code), Some(1000));
    live_becomes(&layer, 1).await;
    let _third = raw_connect(addr, "/ws").await;
    assert_eq!(layer.live_sockets(), 2);

    // Dropping a client's connection ends its socket too.
    drop(_second);
    live_becomes(&layer, 1).await;
    // A handler that declines holds a place only while it runs.
    let (_, head, _) = raw_request(addr, &handshake_request("/decline", &[]), &[]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    live_becomes(&layer, 1).await;
}

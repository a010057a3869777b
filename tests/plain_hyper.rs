//! The layer under plain hyper (`http1::Builder::serve_connection(..)
//! .with_upgrades()`), not only hyper-util's auto server.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as Client;
use tower::ServiceBuilder;
use tower_websockets::WebSocketLayer;

#[tokio::test]
async fn echo_under_plain_hyper_http1_with_upgrades() {
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .service_fn(echo_handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades(),
            );
        }
    });

    let (mut client, response) = tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), 101);
    client.send(Client::text("plain hyper")).await.unwrap();
    let echoed = tokio::time::timeout(TIMEOUT, client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Client::text("plain hyper"));
    client.close(None).await.unwrap();
}

#[tokio::test]
async fn plain_hyper_without_upgrades_fails_accept_cleanly() {
    // Without `.with_upgrades()` hyper sends the 101 but cannot hand over
    // the connection, and nothing tells the layer beforehand. The accept
    // must fail with an error (not hang or panic) and the connection end.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let tx = tx.clone();
            async move {
                let upgrade = tower_websockets::WebSocketUpgrade::from_request(&mut req).unwrap();
                let _ = tx.send(upgrade.accept().await.map(drop));
                Ok::<_, std::convert::Infallible>(http::Response::<Body>::default())
            }
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let service = TowerToHyperService::new(service);
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .await;
    });
    let (stream, _head, rest) = raw_request(addr, &handshake_request("/ws", &[]), &[]).await;
    let accepted = tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(accepted, Err(tower_websockets::Error::Upgrade(_))),
        "{accepted:?}"
    );
    let mut client = RawClient { stream, buf: rest };
    assert!(
        client.read_frame().await.is_none(),
        "the connection should end"
    );
}

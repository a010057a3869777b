//! Any response body can sit inside `WebSocketLayer`: the layer wraps it
//! in its `ResponseBody` instead of asking for `B: Default`, so tower-http's
//! `TraceLayer` and `http_body_util::Either` need no `map_response`.

mod common;

use std::convert::Infallible;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Bytes, Incoming};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message as Client;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use tower_websockets::{WebSocketLayer, WebSocketUpgrade};

/// A socket echoes, and `GET /page` answers 200 with `body`.
async fn echoes_and_serves_pages(addr: std::net::SocketAddr, body: &str) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws.send(Client::text("through")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Client::text("through"));
    ws.close(None).await.unwrap();

    let (mut tcp, head, mut rest) = raw_request(
        addr,
        b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        &[],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rest), body);
}

#[tokio::test]
async fn tower_http_trace_layer_inside_the_layer() {
    // TraceLayer's response body (tower_http::trace::ResponseBody) has no
    // Default.
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .layer(TraceLayer::new_for_http())
        .service_fn(echo_handler);
    let addr = serve(service).await;
    echoes_and_serves_pages(addr, "plain").await;
}

#[tokio::test]
async fn an_either_body_inside_the_layer() {
    type Body = Either<Full<Bytes>, Empty<Bytes>>;
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .service_fn(|mut req: Request<Incoming>| async move {
            let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
                let page = Response::new(Either::Left(Full::from("either")));
                return Ok::<Response<Body>, Infallible>(page);
            };
            if let Ok(mut socket) = upgrade.accept().await {
                let _ = message_echo_loop(&mut socket).await;
            }
            Ok(Response::new(Either::Right(Empty::new())))
        });
    let addr = serve(service).await;
    echoes_and_serves_pages(addr, "either").await;
}

#[tokio::test]
async fn the_layers_own_responses_have_empty_bodies() {
    let layer = WebSocketLayer::new(
        tower_websockets::WebSocketOptions::default().allowed_origins(["https://ok.example"]),
    )
    .unwrap();
    let mut service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("inner")))
        });
    // A rejected upgrade, built by hand (the layer answers it itself).
    let request = Request::get("/ws")
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-key", KEY)
        .header("sec-websocket-version", "13")
        .header("origin", "https://evil.example")
        .body(())
        .unwrap();
    let response = tower::Service::call(&mut service, request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = response.into_body();
    assert!(hyper::body::Body::is_end_stream(&body));
    assert!(body.collect().await.unwrap().to_bytes().is_empty());
}

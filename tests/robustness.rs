//! Misuse and failure: the close timeout, accepting twice, a panicking
//! handler. Each ends with an error or a closed connection, never a hang,
//! a panic in the library or a leaked pipeline.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tower::ServiceBuilder;
use tower_websockets::{
    CloseCode, Error, WebSocketLayer, WebSocketOptions, WebSocketState, WebSocketUpgrade,
};

#[tokio::test]
async fn close_gives_up_on_a_peer_that_never_answers() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let options = WebSocketOptions::default().close_timeout(Duration::from_millis(200));
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(move |mut req: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let upgrade = WebSocketUpgrade::from_request(&mut req).unwrap();
                let mut socket = upgrade.accept().await.unwrap();
                let start = Instant::now();
                let result = socket.close_with(CloseCode::GOING_AWAY, "bye").await;
                tx.send((result, start.elapsed(), socket.state())).unwrap();
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    let addr = serve(service).await;
    let mut client = raw_connect(addr, "/ws").await;
    // The client reads the Close but never answers it.
    let close = client.read_frame().await.unwrap();
    assert_eq!(close.close_code(), Some(1001));
    let (result, elapsed, state) = tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(Error::CloseTimeout)), "{result:?}");
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert_eq!(state, WebSocketState::Aborted);
    // And the connection is gone.
    assert!(client.read_frame().await.is_none());
}

#[tokio::test]
async fn accepting_twice_is_an_error() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .service_fn(move |mut req: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let upgrade = WebSocketUpgrade::from_request(&mut req).unwrap();
                let again = upgrade.clone();
                let mut socket = upgrade.accept().await.unwrap();
                let second = again.accept().await;
                tx.send(second.map(drop)).unwrap();
                let _ = echo_loop(&mut socket, 1024).await;
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    let addr = serve(service).await;
    let mut client = raw_connect(addr, "/ws").await;
    let second = tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(second, Err(Error::AlreadyAccepted)), "{second:?}");
    // The first socket is unaffected.
    client.send(&frame(true, 1, b"fine", Some(MASK))).await;
    assert_eq!(client.read_message().await, (1, b"fine".to_vec()));
}

#[tokio::test]
async fn request_that_skipped_the_layer_has_no_upgrade_handle() {
    // A request that never went through the layer has no handle.
    let mut req = Request::get("/ws").body(()).unwrap();
    assert!(WebSocketUpgrade::from_request(&mut req).is_none());
    assert!(!WebSocketUpgrade::is_websocket_request(&req));
}

#[tokio::test]
async fn panicking_handler_after_accept_closes_the_connection_and_frees_the_pipeline() {
    let (count, mut count_rx) = tokio::sync::watch::channel(0usize);
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .service_fn(move |mut req: Request<Incoming>| {
            let count = count.clone();
            async move {
                struct Live(tokio::sync::watch::Sender<usize>);
                impl Drop for Live {
                    fn drop(&mut self) {
                        self.0.send_modify(|n| *n -= 1);
                    }
                }
                count.send_modify(|n| *n += 1);
                let _live = Live(count);
                let upgrade = WebSocketUpgrade::from_request(&mut req).unwrap();
                let mut socket = upgrade.accept().await.unwrap();
                let mut buf = [0u8; 64];
                let _ = socket.receive_buffer(&mut buf).await;
                panic!("handler bug after accept (expected by this test)");
                #[allow(unreachable_code)]
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    let addr = serve(service).await;
    let mut client = raw_connect(addr, "/ws").await;
    assert_eq!(*count_rx.borrow(), 1, "the handler is running");
    client.send(&frame(true, 1, b"boom", Some(MASK))).await;
    // The connection ends (aborted: no close handshake from a dead handler).
    let frames = client.read_to_end().await;
    assert!(frames.iter().all(|f| f.opcode == 0x8), "{frames:?}");
    let freed = tokio::time::timeout(TIMEOUT, count_rx.wait_for(|n| *n == 0)).await;
    assert!(freed.is_ok(), "the handler's state was never dropped");
}

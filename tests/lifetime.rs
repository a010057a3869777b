//! The lifetime rule: layers inside `WebSocketLayer` see the request in
//! flight until the socket is finished, even when the handler returns
//! early after handing the socket to a background task; and a pipeline
//! that completes (a timeout inside the layer) or panics while it waits on
//! its socket does not leave the socket frozen.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as Client;
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceBuilder};
use tower_websockets::{WebSocketLayer, WebSocketUpgrade};

/// A layer that counts requests in flight: +1 on call, -1 when the
/// response future is dropped (as a permit or a span guard would be).
#[derive(Clone)]
struct InFlightLayer(watch::Sender<usize>);

#[derive(Clone)]
struct InFlight<S> {
    inner: S,
    count: watch::Sender<usize>,
}

struct Guard(watch::Sender<usize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;
    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            count: self.0.clone(),
        }
    }
}

impl<S, R> Service<R> for InFlight<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InFlightFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.count.send_modify(|n| *n += 1);
        InFlightFuture {
            future: Box::pin(self.inner.call(req)),
            _guard: Guard(self.count.clone()),
        }
    }
}

/// Holds its guard as a field, as tower's `ConcurrencyLimit` future holds
/// its permit: released when the future is dropped, not when it completes.
struct InFlightFuture<F> {
    future: Pin<Box<F>>,
    _guard: Guard,
}

impl<F: Future> Future for InFlightFuture<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.future.as_mut().poll(cx)
    }
}

async fn wait_for_count(rx: &mut watch::Receiver<usize>, want: usize) {
    let reached = tokio::time::timeout(TIMEOUT, rx.wait_for(|n| *n == want))
        .await
        .is_ok();
    assert!(
        reached,
        "in-flight count never reached {want}, is {}",
        *rx.borrow()
    );
}

#[tokio::test]
async fn inner_layer_sees_request_in_flight_until_socket_closes() {
    let (count, mut count_rx) = watch::channel(0usize);
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .layer(InFlightLayer(count))
        .service_fn(echo_handler);
    let addr = serve(service).await;

    let (mut client, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    client.send(Client::text("hi")).await.unwrap();
    assert_eq!(client.next().await.unwrap().unwrap(), Client::text("hi"));
    // The 101 was sent long ago; the inner pipeline is still alive.
    assert_eq!(*count_rx.borrow(), 1);

    client.close(None).await.unwrap();
    wait_for_count(&mut count_rx, 0).await;
}

#[tokio::test]
async fn early_returning_handler_keeps_pipeline_alive_for_background_socket() {
    let (count, mut count_rx) = watch::channel(0usize);
    let (returned_tx, mut returned_rx) = mpsc::unbounded_channel();
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .layer(InFlightLayer(count))
        .service_fn(move |mut req: Request<Incoming>| {
            let returned_tx = returned_tx.clone();
            async move {
                let upgrade = WebSocketUpgrade::from_request(&mut req).expect("websocket request");
                let mut socket = upgrade.accept().await.expect("accept");
                // Hand the socket to a background owner and return at once.
                tokio::spawn(async move {
                    let _ = echo_loop(&mut socket, 1024).await;
                });
                returned_tx.send(()).unwrap();
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    let addr = serve(service).await;

    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    tokio::time::timeout(TIMEOUT, returned_rx.recv())
        .await
        .unwrap()
        .unwrap();
    // The handler has returned, yet the socket works and the pipeline is held.
    for i in 0..3 {
        client.send(Client::text(format!("m{i}"))).await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Client::text(format!("m{i}"))
        );
    }
    assert_eq!(*count_rx.borrow(), 1);

    client.close(None).await.unwrap();
    wait_for_count(&mut count_rx, 0).await;
}

#[tokio::test]
async fn dropped_socket_releases_pipeline() {
    let (count, mut count_rx) = watch::channel(0usize);
    let (drop_tx, drop_rx) = tokio::sync::oneshot::channel::<()>();
    let drop_rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(drop_rx)));
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .layer(InFlightLayer(count))
        .service_fn(move |mut req: Request<Incoming>| {
            let drop_rx = drop_rx.clone();
            async move {
                let upgrade = WebSocketUpgrade::from_request(&mut req).expect("websocket request");
                let socket = upgrade.accept().await.expect("accept");
                let finished = socket.finished();
                let rx = drop_rx.lock().await.take().unwrap();
                tokio::spawn(async move {
                    let _ = rx.await;
                    drop(socket);
                });
                finished.await;
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    let addr = serve(service).await;
    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    wait_for_count(&mut count_rx, 1).await;
    drop_tx.send(()).unwrap();
    wait_for_count(&mut count_rx, 0).await;
    // The dropped open socket is closed with 1011, then its connection.
    let end = tokio::time::timeout(TIMEOUT, client.next()).await.unwrap();
    match end {
        Some(Ok(Client::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1011),
        other => panic!("expected a Close with 1011, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrency_limit_inside_layer_counts_live_sockets() {
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .layer(ConcurrencyLimitLayer::new(1))
        .service_fn(echo_handler);
    let addr = serve(service).await;

    let (mut first, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    first.send(Client::text("one")).await.unwrap();
    assert_eq!(first.next().await.unwrap().unwrap(), Client::text("one"));

    // The second handshake waits for the permit the first socket holds.
    let mut second = tokio::spawn(tokio_tungstenite::connect_async(format!("ws://{addr}/ws")));
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(
        waited.is_err(),
        "second socket was accepted while the first was open"
    );

    first.close(None).await.unwrap();
    let (mut second, response) = tokio::time::timeout(TIMEOUT, second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 101);
    second.send(Client::text("two")).await.unwrap();
    assert_eq!(second.next().await.unwrap().unwrap(), Client::text("two"));
}

// ----- no frozen sockets -----

/// How long the timeouts placed inside the layer below allow.
const INNER_TIMEOUT: Duration = Duration::from_millis(300);

/// A timeout inside the layer fires while the handler waits in
/// `receive_buffer`: the socket is closed with 1011 and its connection
/// ends, and the guard of the layer between (the in-flight count) is
/// released only then.
async fn assert_timeout_closes_with_1011<S>(service: S, mut count_rx: watch::Receiver<usize>)
where
    S: Service<Request<Incoming>, Response = Response<tower_websockets::ResponseBody<Body>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let addr = serve(service).await;
    let mut client = raw_connect(addr, "/ws").await;
    client.send(&frame(true, 0x1, b"hi", Some(MASK))).await;
    assert_eq!(client.read_message().await, (0x1, b"hi".to_vec()));
    assert_eq!(
        *count_rx.borrow(),
        1,
        "the pipeline is held while the socket is open"
    );
    let start = tokio::time::Instant::now();
    let frames = client.read_to_end().await;
    let close = frames
        .last()
        .expect("a Close frame before the connection ended");
    assert_eq!(close.close_code(), Some(1011), "{frames:?}");
    assert!(
        start.elapsed() < TIMEOUT / 2,
        "closed after {:?}",
        start.elapsed()
    );
    wait_for_count(&mut count_rx, 0).await;
}

#[tokio::test]
async fn tower_timeout_inside_the_layer_closes_the_socket_with_1011() {
    let (count, count_rx) = watch::channel(0usize);
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .layer(InFlightLayer(count))
        .layer(tower::timeout::TimeoutLayer::new(INNER_TIMEOUT))
        .service_fn(echo_handler);
    assert_timeout_closes_with_1011(service, count_rx).await;
}

#[tokio::test]
async fn tower_http_timeout_inside_the_layer_closes_the_socket_with_1011() {
    let (count, count_rx) = watch::channel(0usize);
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .layer(InFlightLayer(count))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            INNER_TIMEOUT,
        ))
        .service_fn(echo_handler);
    assert_timeout_closes_with_1011(service, count_rx).await;
}

/// A timeout outside the layer bounds the handshake only: the socket
/// outlives it.
#[tokio::test]
async fn a_timeout_outside_the_layer_leaves_the_socket_alone() {
    let service = ServiceBuilder::new()
        .layer(tower::timeout::TimeoutLayer::new(INNER_TIMEOUT))
        .layer(WebSocketLayer::default())
        .service_fn(echo_handler);
    let addr = serve(service).await;
    let mut client = raw_connect(addr, "/ws").await;
    tokio::time::sleep(INNER_TIMEOUT * 2).await;
    client
        .send(&frame(true, 0x1, b"still here", Some(MASK)))
        .await;
    assert_eq!(client.read_message().await, (0x1, b"still here".to_vec()));
}

#[tokio::test]
async fn a_handler_that_panics_after_accept_closes_its_socket_with_1011() {
    let (count, mut count_rx) = watch::channel(0usize);
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .layer(InFlightLayer(count))
        .service_fn(|mut req: Request<Incoming>| async move {
            let upgrade = WebSocketUpgrade::from_request(&mut req).expect("websocket request");
            let mut socket = upgrade.accept().await.expect("accept");
            let _ = socket.receive_message().await;
            panic!("the handler fails after accepting (this panic is expected)");
            #[allow(unreachable_code)]
            Ok::<_, Infallible>(Response::<Body>::default())
        });
    let addr = serve(service).await;
    let mut client = raw_connect(addr, "/ws").await;
    client.send(&frame(true, 0x1, b"boom", Some(MASK))).await;
    let frames = client.read_to_end().await;
    let close = frames
        .last()
        .expect("a Close frame before the connection ended");
    assert_eq!(close.close_code(), Some(1011), "{frames:?}");
    wait_for_count(&mut count_rx, 0).await;
}

/// A handler whose receive waited (and was cancelled by its own timeout)
/// before it handed the socket to another task is not taken for a frozen
/// one when it returns, even though the new owner polls the socket only
/// much later.
#[tokio::test]
async fn a_socket_handed_off_after_a_cancelled_receive_keeps_working() {
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .service_fn(|mut req: Request<Incoming>| async move {
            let upgrade = WebSocketUpgrade::from_request(&mut req).expect("websocket request");
            let mut socket = upgrade.accept().await.expect("accept");
            let waited =
                tokio::time::timeout(Duration::from_millis(20), socket.receive_message()).await;
            assert!(waited.is_err(), "the client sends nothing yet");
            tokio::spawn(async move {
                tokio::time::sleep(INNER_TIMEOUT).await;
                let _ = echo_loop(&mut socket, 1024).await;
            });
            Ok::<_, Infallible>(Response::<Body>::default())
        });
    let addr = serve(service).await;
    let mut client = raw_connect(addr, "/ws").await;
    tokio::time::sleep(INNER_TIMEOUT / 2).await;
    client.send(&frame(true, 0x1, b"later", Some(MASK))).await;
    assert_eq!(client.read_message().await, (0x1, b"later".to_vec()));
}

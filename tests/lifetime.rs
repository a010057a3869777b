//! The lifetime rule: layers inside `WebSocketLayer` see the request in
//! flight until the socket is finished, even when the handler returns
//! early after handing the socket to a background task.

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
    // The dropped open socket is aborted: the client sees the connection end.
    let end = tokio::time::timeout(TIMEOUT, client.next()).await.unwrap();
    assert!(!matches!(end, Some(Ok(Client::Text(_)))), "{end:?}");
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

//! Either half of a split socket, and a handle, can start the close, and
//! the close completes within one round trip when the peer answers,
//! whether or not another task is receiving; `reunite` puts the halves
//! back together.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Client;
use tower::ServiceBuilder;
use tower_websockets::{
    CloseCode, CloseFrame, Message, WebSocket, WebSocketLayer, WebSocketOptions, WebSocketState,
    WebSocketUpgrade,
};

/// Well under the default close timeout (10 s): a close that had to wait
/// for it would fail this.
const ONE_ROUND_TRIP: Duration = Duration::from_secs(2);

/// Serves `/ws` with `handler(socket)`; reports what it sends.
async fn server<F, Fut, T>(
    options: WebSocketOptions,
    handler: F,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<T>)
where
    F: Fn(WebSocket, mpsc::UnboundedSender<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(move |mut req: Request<Incoming>| {
            let (handler, tx) = (handler.clone(), tx.clone());
            async move {
                if let Some(upgrade) = WebSocketUpgrade::from_request(&mut req)
                    && let Ok(socket) = upgrade.accept().await
                {
                    handler(socket, tx).await;
                }
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    (serve(service).await, rx)
}

/// A tungstenite client that reads (answering the server's Close) until
/// the connection ends; returns the Close it got.
async fn polite_client(addr: std::net::SocketAddr) -> Option<u16> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut code = None;
    while let Some(Ok(message)) = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap() {
        if let Client::Close(frame) = message {
            code = frame.map(|f| u16::from(f.code));
        }
    }
    code
}

#[tokio::test]
async fn a_handle_close_completes_in_one_round_trip_while_the_owner_is_not_receiving() {
    let (addr, mut report) = server(WebSocketOptions::default(), |socket, tx| async move {
        let handle = socket.handle();
        let closer = tokio::spawn(async move {
            let start = Instant::now();
            let result = handle.close(CloseCode::GOING_AWAY, "bye").await;
            (result.map_err(|e| e.to_string()), start.elapsed())
        });
        // The owner holds the socket and never receives.
        socket.finished().await;
        let (result, took) = closer.await.unwrap();
        let _ = tx.send((result, took, socket.state()));
    })
    .await;
    let client = tokio::spawn(polite_client(addr));
    let (result, took, state) = tokio::time::timeout(TIMEOUT, report.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result, Ok(()));
    assert!(took < ONE_ROUND_TRIP, "the close took {took:?}");
    assert_eq!(state, WebSocketState::Closed);
    assert_eq!(client.await.unwrap(), Some(1001));
}

#[tokio::test]
async fn the_writer_half_closes_while_the_reader_half_is_parked() {
    let (addr, mut report) = server(WebSocketOptions::default(), |socket, tx| async move {
        let (reader, mut writer) = socket.split();
        let start = Instant::now();
        let frame = CloseFrame {
            code: CloseCode::NORMAL,
            reason: "done".into(),
        };
        writer.send(Message::Close(Some(frame))).await.unwrap();
        // Nobody receives: the socket reads the answer itself.
        writer.finished().await;
        let _ = tx.send((start.elapsed(), reader.state()));
    })
    .await;
    let client = tokio::spawn(polite_client(addr));
    let (took, state) = tokio::time::timeout(TIMEOUT, report.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(took < ONE_ROUND_TRIP, "the close took {took:?}");
    assert_eq!(state, WebSocketState::Closed);
    assert_eq!(client.await.unwrap(), Some(1000));
}

#[tokio::test]
async fn the_reader_half_starts_the_close_and_receives_the_answer() {
    let (addr, mut report) = server(WebSocketOptions::default(), |socket, tx| async move {
        let (mut reader, writer) = socket.split();
        reader
            .close_output(CloseCode::NORMAL, "from the reader")
            .unwrap();
        let answer = reader.recv().await;
        let answered = matches!(
            &answer,
            Some(Ok(Message::Close(Some(frame)))) if frame.code == CloseCode::NORMAL
        );
        let _ = tx.send((answered, format!("{answer:?}"), reader.state()));
        drop(writer);
    })
    .await;
    let client = tokio::spawn(polite_client(addr));
    let (answered, answer, state) = tokio::time::timeout(TIMEOUT, report.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(answered, "the reader saw {answer}");
    assert_eq!(state, WebSocketState::Closed);
    assert_eq!(client.await.unwrap(), Some(1000));
}

#[tokio::test]
async fn a_peer_that_never_answers_our_close_is_cut_off_at_the_close_timeout() {
    let options = WebSocketOptions::default().close_timeout(Duration::from_millis(300));
    let (addr, mut report) = server(options, |socket, tx| async move {
        let (_reader, mut writer) = socket.split();
        let start = Instant::now();
        writer.close_output(CloseCode::NORMAL, "").await.unwrap();
        writer.finished().await;
        let _ = tx.send((start.elapsed(), writer.state()));
    })
    .await;
    // A raw client that reads but never answers.
    let mut deaf = raw_connect(addr, "/ws").await;
    let (took, state) = tokio::time::timeout(TIMEOUT, report.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(took >= Duration::from_millis(300), "cut off after {took:?}");
    assert!(took < ONE_ROUND_TRIP, "cut off only after {took:?}");
    assert_eq!(state, WebSocketState::Aborted);
    let frames = deaf.read_to_end().await;
    assert_eq!(frames.last().and_then(ServerFrame::close_code), Some(1000));
}

#[tokio::test]
async fn halves_reunite_only_with_their_own() {
    let (addr, mut report) = server(WebSocketOptions::default(), |socket, tx| async move {
        let (reader, writer) = socket.split();
        let mut socket = reader.reunite(writer).expect("the same socket's halves");
        // The reunited socket still echoes.
        if let Some(Ok(message)) = socket.recv().await {
            socket.send(message).await.unwrap();
        }
        let _ = tx.send(socket);
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        ws.send(Client::text("again")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Client::text("again"));
        clients.push(ws);
    }
    let a = report.recv().await.unwrap();
    let b = report.recv().await.unwrap();
    let (a_reader, _a_writer) = a.split();
    let (_b_reader, b_writer) = b.split();
    let error = a_reader.reunite(b_writer).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the halves are from different websockets"
    );
}

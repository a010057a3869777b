//! `WebSocketHandle`: closing and aborting a socket from another task while
//! its owner is receiving, against an independent client
//! (tokio-tungstenite) and a raw one that never answers.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message as ClientMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as ClientCloseCode;
use tower::ServiceBuilder;
use tower_websockets::{
    CloseCode, Error, Message, WebSocketHandle, WebSocketLayer, WebSocketOptions, WebSocketState,
};

/// What the server's owner task saw.
#[derive(Debug)]
enum Owner {
    /// The owner's receive returned this.
    Received(Result<Message, Error>),
    /// The owner's `close_with` after the peer's Close, and the final state.
    Closed(Result<(), Error>, WebSocketState),
}

/// Serves sockets whose owner receives once (after `busy` lets it, if
/// given), reports what it got, answers a Close with `close_with`, and
/// reports that; the socket's handle goes to the test first.
async fn serve_owner(
    options: WebSocketOptions,
    busy: Option<Arc<Notify>>,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<WebSocketHandle>,
    mpsc::UnboundedReceiver<Owner>,
) {
    let (handles_tx, handles) = mpsc::unbounded_channel();
    let (owner_tx, owner) = mpsc::unbounded_channel();
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(move |mut req: Request<Incoming>| {
            let handles_tx = handles_tx.clone();
            let owner_tx = owner_tx.clone();
            let busy = busy.clone();
            async move {
                let upgrade = tower_websockets::WebSocketUpgrade::from_request(&mut req).unwrap();
                drop(req);
                let mut socket = upgrade.accept().await.unwrap();
                handles_tx.send(socket.handle()).unwrap();
                if let Some(busy) = busy {
                    busy.notified().await;
                }
                let received = socket.receive_message().await;
                let close = matches!(received, Ok(Message::Close(_)));
                owner_tx.send(Owner::Received(received)).unwrap();
                if close {
                    let result = socket.close_with(None, "").await;
                    owner_tx
                        .send(Owner::Closed(result, socket.state()))
                        .unwrap();
                }
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    (serve(service).await, handles, owner)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("in time")
        .expect("a report")
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects the independent client; returns it with the socket's handle.
async fn connect(
    addr: std::net::SocketAddr,
    handles: &mut mpsc::UnboundedReceiver<WebSocketHandle>,
) -> (Client, WebSocketHandle) {
    let (client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    (client, next(handles).await)
}

/// The client reads the server's Close (1001 with `reason`) and answers it
/// (tungstenite does as it reads it).
async fn client_gets_going_away(client: &mut Client, reason: &str) {
    match client.next().await {
        Some(Ok(ClientMessage::Close(Some(frame)))) => {
            assert_eq!(frame.code, ClientCloseCode::Away);
            assert_eq!(frame.reason.as_str(), reason);
        }
        other => panic!("expected the server's Close, got {other:?}"),
    }
}

/// The client reads on until the server closes the connection, which it
/// does once the close handshake is complete.
async fn client_reads_to_the_end(client: &mut Client) {
    tokio::time::timeout(TIMEOUT, async {
        while let Some(Ok(_)) = client.next().await {}
    })
    .await
    .expect("the server closes the connection");
}

/// The owner's receive returned the client's answering Close, its own
/// `close_with` then completed at once, and the handle's `close` returned Ok.
async fn handshake_completed(
    owner: &mut mpsc::UnboundedReceiver<Owner>,
    closing: tokio::task::JoinHandle<Result<(), Error>>,
) {
    match next(owner).await {
        Owner::Received(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::GOING_AWAY);
        }
        other => panic!("owner: {other:?}"),
    }
    match next(owner).await {
        Owner::Closed(Ok(()), WebSocketState::Closed) => {}
        other => panic!("owner: {other:?}"),
    }
    let closed = tokio::time::timeout(TIMEOUT, closing)
        .await
        .unwrap()
        .unwrap();
    assert!(closed.is_ok(), "{closed:?}");
}

/// The owner is waiting in `receive_message`; another task closes with
/// 1001. The client gets the Close with its reason and answers; the
/// owner's receive returns that Close, its `close_with` completes at once, and
/// the handle's `close` returns once the socket is finished.
#[tokio::test]
async fn close_from_a_handle_while_the_owner_receives() {
    let (addr, mut handles, mut owner) = serve_owner(WebSocketOptions::default(), None).await;
    let (mut client, handle) = connect(addr, &mut handles).await;
    // Let the owner get to its pending receive.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let closing = tokio::spawn(async move {
        handle
            .close(CloseCode::GOING_AWAY, "server is shutting down")
            .await
    });
    client_gets_going_away(&mut client, "server is shutting down").await;
    client_reads_to_the_end(&mut client).await;
    handshake_completed(&mut owner, closing).await;
}

/// The owner is busy and not receiving: the socket's background task
/// writes the Close, which the client gets while the owner is still busy.
/// The owner's next receive sees the client's answer.
#[tokio::test]
async fn close_from_a_handle_while_the_owner_is_busy() {
    let busy = Arc::new(Notify::new());
    let (addr, mut handles, mut owner) =
        serve_owner(WebSocketOptions::default(), Some(busy.clone())).await;
    let (mut client, handle) = connect(addr, &mut handles).await;
    let closing = tokio::spawn(async move { handle.close(CloseCode::GOING_AWAY, "").await });
    client_gets_going_away(&mut client, "").await;
    // tungstenite sends its answer as it goes on reading.
    let client = tokio::spawn(async move { client_reads_to_the_end(&mut client).await });
    // Only now does the owner get to receive, and complete the handshake.
    busy.notify_one();
    handshake_completed(&mut owner, closing).await;
    client.await.unwrap();
}

/// A client that reads the Close and never answers: the handle's `close`
/// gives up after the close timeout and aborts, and the owner's pending
/// receive fails instead of hanging.
#[tokio::test]
async fn close_from_a_handle_gives_up_on_a_silent_peer() {
    let options = WebSocketOptions::default().close_timeout(Duration::from_millis(200));
    let (addr, mut handles, mut owner) = serve_owner(options, None).await;
    let mut client = raw_connect(addr, "/ws").await;
    let handle = next(&mut handles).await;
    let start = Instant::now();
    let closing = tokio::spawn(async move { handle.close(CloseCode::GOING_AWAY, "").await });
    let close = client.read_frame().await.unwrap();
    assert_eq!(close.close_code(), Some(1001));
    let closed = tokio::time::timeout(TIMEOUT, closing)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(closed, Err(Error::CloseTimeout)), "{closed:?}");
    assert!(start.elapsed() >= Duration::from_millis(200));
    match next(&mut owner).await {
        Owner::Received(Err(Error::CloseTimeout)) => {}
        other => panic!("owner: {other:?}"),
    }
    assert!(client.read_frame().await.is_none(), "connection dropped");
}

/// `abort` from a handle fails the owner's pending receive at once; a
/// handle of a dropped socket does nothing and its `finished` is ready.
#[tokio::test]
async fn abort_from_a_handle_and_a_handle_outliving_its_socket() {
    let (addr, mut handles, mut owner) = serve_owner(WebSocketOptions::default(), None).await;
    let (mut client, handle) = connect(addr, &mut handles).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.abort();
    match next(&mut owner).await {
        Owner::Received(Err(Error::Aborted)) => {}
        other => panic!("owner: {other:?}"),
    }
    // The owner returned and dropped the socket.
    tokio::time::timeout(TIMEOUT, handle.finished())
        .await
        .unwrap();
    assert!(handle.close(CloseCode::NORMAL, "").await.is_ok());
    handle.abort();
    // The client sees the connection end without a Close.
    let end = client.next().await;
    assert!(!matches!(end, Some(Ok(ClientMessage::Close(_)))), "{end:?}");
    let _ = client.send(ClientMessage::text("late")).await;
}

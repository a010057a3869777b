//! The seed's disconnect pattern: "the client pings every X seconds; the
//! server gives up after 2X without a message". Pings reach the
//! application as `Message::Ping` (already answered by the socket), so a
//! timeout around `recv` counts them: a client that only pings stays
//! connected, and one that falls silent is closed after 2X.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio_tungstenite::tungstenite::Message as Client;
use tower::ServiceBuilder;
use tower_websockets::{CloseCode, Message, WebSocketLayer, WebSocketOptions, WebSocketUpgrade};

/// X: how often the client pings.
const PING_EVERY: Duration = Duration::from_millis(250);
/// 2X: how long the server waits for any message, pings included.
const IDLE: Duration = Duration::from_secs(1);

/// The handler of the pattern, as the README shows it.
async fn idle_aware(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
        return Ok(Response::default());
    };
    let Ok(mut socket) = upgrade.accept().await else {
        return Ok(Response::default());
    };
    loop {
        match tokio::time::timeout(IDLE, socket.recv()).await {
            // Nothing at all for 2X, not even a ping: give up.
            Err(_) => {
                let _ = socket.close_with(CloseCode::NORMAL, "idle").await;
                break;
            }
            Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => break,
            // A ping (answered already), a pong or data: the client is alive.
            Ok(Some(Ok(_))) => {}
        }
    }
    Ok(Response::default())
}

#[tokio::test]
async fn a_client_that_only_pings_stays_and_a_silent_one_is_closed_after_2x() {
    // The server's own keep-alive is off: only the application's timeout
    // decides.
    let options = WebSocketOptions::default().keep_alive_interval(None);
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(idle_aware);
    let addr = serve(service).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();

    // Ping every X for 3 s (three times the idle timeout): every ping is
    // answered, and the server never closes.
    let start = Instant::now();
    let mut pongs = 0;
    while start.elapsed() < 3 * IDLE {
        ws.send(Client::Ping(b"alive".to_vec().into()))
            .await
            .unwrap();
        let deadline = tokio::time::sleep(PING_EVERY);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                message = ws.next() => match message {
                    Some(Ok(Client::Pong(payload))) => {
                        assert_eq!(&payload[..], b"alive");
                        pongs += 1;
                    }
                    other => panic!("the server gave up on a pinging client: {other:?}"),
                },
            }
        }
    }
    assert!(pongs >= 8, "only {pongs} pongs");

    // Silence: the server closes within 2X (plus scheduling).
    let silent = Instant::now();
    let close = tokio::time::timeout(TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(Client::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("no close: {other:?}"),
            }
        }
    })
    .await
    .expect("the server closes an idle client");
    let waited = silent.elapsed();
    assert_eq!(close.map(|f| f.reason.to_string()).as_deref(), Some("idle"));
    // The last ping went out up to X before the silence began here, so the
    // server's 2X ran out between X and 2X from now.
    assert!(waited >= IDLE / 2, "closed after only {waited:?}");
    assert!(waited < 3 * IDLE, "closed only after {waited:?}");
}

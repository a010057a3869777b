//! Keep-alive pings go out on the interval while the socket is open, even
//! while the application is not receiving, and can be set per socket.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use tower::ServiceBuilder;
use tower_websockets::{AcceptOptions, WebSocketLayer, WebSocketOptions, WebSocketUpgrade};

/// A server whose handler accepts (with `accept`) and then neither
/// receives nor sends for `idle`, before running the echo loop.
async fn idle_server(
    options: WebSocketOptions,
    accept: AcceptOptions,
    idle: Duration,
) -> std::net::SocketAddr {
    reporting_server(options, accept, idle).await.0
}

#[tokio::test]
async fn pings_are_sent_on_the_interval_while_the_app_is_busy() {
    let options = WebSocketOptions::default().keep_alive_interval(Some(Duration::from_millis(100)));
    let addr = idle_server(options, AcceptOptions::new(), Duration::from_millis(550)).await;
    let mut client = raw_connect(addr, "/ws").await;
    let start = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let frame = client.read_frame().await.expect("a ping");
        assert_eq!(frame.opcode, 0x9, "{frame:?}");
        // Answer like a browser would.
        client
            .send(&common::frame(true, 0xA, &frame.payload, Some(MASK)))
            .await;
        pings += 1;
    }
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "pings came too fast: {:?}",
        start.elapsed()
    );
    // Data sent while the app was idle is echoed once it receives again.
    client
        .send(&common::frame(true, 1, b"still here", Some(MASK)))
        .await;
    loop {
        let (opcode, payload) = client.read_message().await;
        if opcode == 0x9 {
            continue;
        }
        assert_eq!((opcode, payload.as_slice()), (1, &b"still here"[..]));
        break;
    }
}

#[tokio::test]
async fn accept_options_override_the_keep_alive_interval() {
    let options = WebSocketOptions::default().keep_alive_interval(None);
    let accept = AcceptOptions::new().keep_alive_interval(Some(Duration::from_millis(50)));
    let addr = idle_server(options, accept, Duration::from_millis(200)).await;
    let mut client = raw_connect(addr, "/ws").await;
    let frame = client.read_frame().await.expect("a ping");
    assert_eq!(frame.opcode, 0x9);
}

#[tokio::test]
async fn disabled_keep_alive_sends_no_pings() {
    let options = WebSocketOptions::default().keep_alive_interval(None);
    let addr = idle_server(options, AcceptOptions::new(), Duration::from_millis(300)).await;
    let mut client = raw_connect(addr, "/ws").await;
    client.send(&common::frame(true, 1, b"x", Some(MASK))).await;
    // The first frame is the echo, sent after the idle period: no ping.
    let frame = client.read_frame().await.unwrap();
    assert_eq!((frame.opcode, frame.payload.as_slice()), (1, &b"x"[..]));
}

/// A server whose handler accepts (with `accept`), idles for `idle`, runs
/// the echo loop and reports how it ended.
async fn reporting_server(
    options: WebSocketOptions,
    accept: AcceptOptions,
    idle: Duration,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<(), tower_websockets::Error>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(move |mut req: Request<Incoming>| {
            let accept = accept.clone();
            let tx = tx.clone();
            async move {
                let upgrade = WebSocketUpgrade::from_request(&mut req).expect("websocket request");
                let mut socket = upgrade.accept_with(accept).await.expect("accept");
                tokio::time::sleep(idle).await;
                let _ = tx.send(echo_loop(&mut socket, 4096).await);
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    (serve(service).await, rx)
}

#[tokio::test]
async fn silent_peer_is_aborted_after_interval_plus_timeout() {
    // A half-open peer (gone without a FIN) is silent as this one: the
    // default options reap it the same way, in 30 s + 30 s.
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_millis(250);
    let options = WebSocketOptions::default()
        .keep_alive_interval(Some(interval))
        .keep_alive_timeout(Some(timeout));
    let (addr, mut ended) = reporting_server(options, AcceptOptions::new(), Duration::ZERO).await;
    let mut client = raw_connect(addr, "/ws").await;
    let start = Instant::now();
    // Read (and never answer) until the server gives up on us.
    let frames = tokio::time::timeout(TIMEOUT, client.read_to_end())
        .await
        .expect("the silent peer was never cut off");
    let elapsed = start.elapsed();
    assert!(frames.iter().all(|f| f.opcode == 0x9), "{frames:?}");
    // A timeout longer than the interval does not space out the pings.
    assert!(frames.len() >= 2, "pings: {frames:?}");
    assert!(
        elapsed >= interval + timeout,
        "aborted too early: {elapsed:?}"
    );
    assert!(
        elapsed < interval + timeout + Duration::from_secs(2),
        "aborted too late: {elapsed:?}"
    );
    let result = tokio::time::timeout(TIMEOUT, ended.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(result, Err(tower_websockets::Error::KeepAliveTimeout)),
        "{result:?}"
    );
}

#[tokio::test]
async fn busy_app_does_not_time_out_a_healthy_peer() {
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_millis(200);
    let options = WebSocketOptions::default()
        .keep_alive_interval(Some(interval))
        .keep_alive_timeout(Some(timeout));
    // The app does not receive for five timeouts.
    let (addr, mut ended) =
        reporting_server(options, AcceptOptions::new(), Duration::from_millis(1000)).await;
    let mut client = raw_connect(addr, "/ws").await;
    let mut sent = Vec::new();
    let start = Instant::now();
    // Answer every ping, and send a message after each, while the app is busy.
    while start.elapsed() < Duration::from_millis(800) {
        let frame = client.read_frame().await.expect("socket still open");
        assert_eq!(frame.opcode, 0x9, "{frame:?}");
        client
            .send(&common::frame(true, 0xA, &frame.payload, Some(MASK)))
            .await;
        let message = format!("message {}", sent.len());
        client
            .send(&common::frame(true, 1, message.as_bytes(), Some(MASK)))
            .await;
        sent.push(message);
    }
    assert!(sent.len() >= 3, "too few pings: {}", sent.len());
    // Everything sent meanwhile is delivered afterwards, in order.
    let mut echoed = Vec::new();
    while echoed.len() < sent.len() {
        let frame = client.read_frame().await.expect("socket still open");
        match frame.opcode {
            0x9 => {
                client
                    .send(&common::frame(true, 0xA, &frame.payload, Some(MASK)))
                    .await
            }
            0x1 => echoed.push(String::from_utf8(frame.payload).unwrap()),
            other => panic!("unexpected opcode {other}"),
        }
    }
    assert_eq!(echoed, sent);
    let ended = ended.try_recv();
    assert!(ended.is_err(), "the socket ended: {ended:?}");
}

#[tokio::test]
async fn accept_options_override_the_keep_alive_timeout() {
    let options = WebSocketOptions::default()
        .keep_alive_interval(Some(Duration::from_millis(50)))
        .keep_alive_timeout(None);
    let accept = AcceptOptions::new().keep_alive_timeout(Some(Duration::from_millis(50)));
    let (addr, mut ended) = reporting_server(options, accept, Duration::ZERO).await;
    let mut client = raw_connect(addr, "/ws").await;
    let cut_off = tokio::time::timeout(TIMEOUT, client.read_to_end()).await;
    assert!(cut_off.is_ok(), "the silent peer was never cut off");
    let result = tokio::time::timeout(TIMEOUT, ended.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(result, Err(tower_websockets::Error::KeepAliveTimeout)),
        "{result:?}"
    );
}

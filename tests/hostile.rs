//! Hostile peers, written as an attacker would: raw sockets that flood,
//! stall and never read. Each must meet a bound (in bytes or time) that
//! the docs state, never grow the server's memory without limit.

mod common;

use std::convert::Infallible;

use common::h2::*;
use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tower::ServiceBuilder;
use tower_websockets::{
    CloseCode, Message, MessageType, WebSocketLayer, WebSocketOptions, WebSocketUpgrade,
};

/// The largest pong frame: a 125-byte payload behind a 2-byte header.
const PONG_FRAME: usize = 2 + 125;

/// A ping's payload: its index, then filler up to the 125 bytes allowed.
fn ping_payload(index: u64) -> [u8; 125] {
    let mut payload = [0x5a; 125];
    payload[..8].copy_from_slice(&index.to_le_bytes());
    payload
}

/// A client floods 1,000,000 pings of 125 bytes and never reads, then
/// sends a text. When the server's receive sees that text, every ping has
/// been read, and what the socket buffers must be at most one pong
/// waiting plus one partly written (RFC 6455 §5.5.3 lets it answer only
/// the latest ping). Before the bound, every ping queued its pong: 127 MB.
/// With whole messages every ping is also handed over, in order, before
/// the text.
async fn ping_flood_is_bounded(whole_messages: bool, http2: bool) {
    const PINGS: u64 = 1_000_000;
    const PER_WRITE: u64 = 1_000;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(WebSocketOptions::default().keep_alive_interval(None)).unwrap())
        .service_fn(move |mut req: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let upgrade = WebSocketUpgrade::from_request(&mut req).unwrap();
                drop(req);
                let mut socket = upgrade.accept().await.unwrap();
                let text = if whole_messages {
                    // Every ping arrives first (already answered), in order.
                    let mut pings = 0u64;
                    loop {
                        match socket.receive_message().await.unwrap() {
                            Message::Ping(data) => {
                                assert_eq!(data[..], ping_payload(pings)[..], "ping {pings}");
                                pings += 1;
                            }
                            message => {
                                assert!(matches!(message, Message::Text(_)), "{message:?}");
                                assert_eq!(pings, PINGS, "pings handed over");
                                break message;
                            }
                        }
                    }
                } else {
                    let mut buf = [0u8; 64];
                    let result = socket.receive_buffer(&mut buf).await.unwrap();
                    assert_eq!(result.message_type(), MessageType::Text);
                    Message::binary(buf[..result.count()].to_vec())
                };
                tx.send(socket.buffered_amount()).unwrap();
                socket.send(text).await.unwrap();
                socket
                    .close_output(Some(CloseCode::NORMAL), "")
                    .await
                    .unwrap();
                let mut buf = [0u8; 64];
                while socket.receive_buffer(&mut buf).await.is_ok() {}
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    let addr = serve(service).await;
    let mut client = if http2 {
        let mut sender = h2_connect(addr).await;
        let (stream, _) = open_stream(&mut sender, "/ws", &[]).await;
        // The connection task lives on; the sender may go.
        StreamClient::new(Box::new(stream), Vec::new())
    } else {
        let client = raw_connect(addr, "/ws").await;
        StreamClient::new(Box::new(client.stream), client.buf)
    };
    let mut chunk = Vec::with_capacity(PER_WRITE as usize * (6 + 125));
    for start in (0..PINGS).step_by(PER_WRITE as usize) {
        chunk.clear();
        for index in start..start + PER_WRITE {
            chunk.extend_from_slice(&frame(true, 0x9, &ping_payload(index), Some(MASK)));
        }
        client.send(&chunk).await;
    }
    client.send(&frame(true, 0x1, b"done", Some(MASK))).await;

    let buffered = tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("the server read every ping in time")
        .unwrap();
    assert!(
        buffered <= 2 * PONG_FRAME,
        "{buffered} bytes buffered after {PINGS} pings"
    );

    // Now read: the pongs the kernel's buffers held, the echo, the Close.
    let mut pongs = 0u64;
    let mut last_pong = None;
    loop {
        let frame = client.read_frame().await.expect("a frame before the close");
        match frame.opcode {
            0xA => {
                pongs += 1;
                last_pong = Some(frame.payload);
            }
            0x1 | 0x2 => assert_eq!(frame.payload, b"done"),
            0x8 => break,
            other => panic!("unexpected opcode {other}"),
        }
    }
    // The latest ping is always answered.
    assert_eq!(
        last_pong.as_deref(),
        Some(&ping_payload(PINGS - 1)[..]),
        "the last pong answers the last ping"
    );
    // The kernel's buffers hold a few MiB; every pong would be 127 MB.
    assert!(pongs < PINGS / 4, "{pongs} pongs for {PINGS} pings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_without_reading_is_bounded_with_the_buffer_api() {
    ping_flood_is_bounded(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_without_reading_is_bounded_with_whole_messages() {
    ping_flood_is_bounded(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_without_reading_is_bounded_over_http2() {
    ping_flood_is_bounded(true, true).await;
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The raw client's frame reading over any stream (an HTTP/1.1
/// connection or an HTTP/2 stream).
struct StreamClient {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl StreamClient {
    fn new(stream: Box<dyn Stream>, buf: Vec<u8>) -> Self {
        StreamClient { stream, buf }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next server frame; `None` at the end of the stream.
    async fn read_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
                .await
                .expect("server answered in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

// ----- a peer that does not read -----

/// What the server saw of a peer that never reads.
#[derive(Debug)]
struct Backpressure {
    /// Messages sent (completed) before one waited.
    sent: usize,
    /// The buffered amount while a send waited.
    buffered: usize,
    /// What `try_send` answered then.
    try_send: Result<(), String>,
    /// How the waiting send ended, and after how long.
    ended: Result<(), tower_websockets::Error>,
    waited: std::time::Duration,
}

/// The server sends 4 KiB messages to a client that never reads: once
/// the kernel's buffers are full, sends complete while the queue is
/// within `max_buffered_amount` (`bound`), then one waits; the fail-fast
/// `try_send` hands its message back; and the waiting send ends
/// with a keep-alive timeout (the peer read nothing since the ping), so
/// the wait has a deadline.
async fn never_reading_peer_meets_the_send_bound(bound: usize) {
    const MESSAGE: usize = 4096;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let options = WebSocketOptions::default()
        .max_buffered_amount(bound)
        .keep_alive_interval(Some(std::time::Duration::from_millis(200)))
        .keep_alive_timeout(Some(std::time::Duration::from_millis(300)));
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(move |mut req: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let upgrade = WebSocketUpgrade::from_request(&mut req).unwrap();
                drop(req);
                let mut socket = upgrade.accept().await.unwrap();
                let payload = bytes::Bytes::from(vec![0x42; MESSAGE]);
                let mut sent = 0;
                loop {
                    let send = socket.send(Message::Binary(payload.clone()));
                    match tokio::time::timeout(std::time::Duration::from_millis(100), send).await {
                        Ok(result) => {
                            result.unwrap();
                            sent += 1;
                            assert!(
                                socket.buffered_amount() <= bound,
                                "a send completed past the bound"
                            );
                        }
                        // Dropped while waiting: its frame stays queued whole.
                        Err(_) => break,
                    }
                }
                let buffered = socket.buffered_amount();
                let try_send = match socket.try_send(Message::Binary(payload.clone())) {
                    Ok(()) => Ok(()),
                    Err(tower_websockets::TrySendError::Full(Message::Binary(back))) => {
                        assert_eq!(back, payload, "the message handed back is the one given");
                        Err("full".to_owned())
                    }
                    Err(other) => Err(format!("{other:?}")),
                };
                let start = std::time::Instant::now();
                let ended = socket.send(Message::Binary(payload)).await;
                tx.send(Backpressure {
                    sent,
                    buffered,
                    try_send,
                    ended,
                    waited: start.elapsed(),
                })
                .unwrap();
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    let addr = serve(service).await;
    let client = raw_connect(addr, "/ws").await;
    let seen = tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    drop(client);
    assert!(seen.sent > bound / MESSAGE, "{seen:?}");
    assert!(
        seen.buffered > bound.saturating_sub(MESSAGE) && seen.buffered <= bound + MESSAGE + 4,
        "{seen:?}"
    );
    assert_eq!(seen.try_send, Err("full".to_owned()), "{seen:?}");
    assert!(
        matches!(seen.ended, Err(tower_websockets::Error::KeepAliveTimeout)),
        "{seen:?}"
    );
    assert!(seen.waited < std::time::Duration::from_secs(3), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_meets_the_send_bound_and_a_deadline() {
    never_reading_peer_meets_the_send_bound(tower_websockets::DEFAULT_MAX_BUFFERED_AMOUNT).await;
}

/// With a bound of 0 every send waits until its bytes are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_zero_bound_every_send_waits_until_written() {
    never_reading_peer_meets_the_send_bound(0).await;
}

/// The server echoes through a split socket: its reader hands each
/// message to its writer over an unbounded channel. The client sends
/// 64 MiB of 4 KiB messages and never reads. Once the socket's queue is
/// past its bound the reader reads no more, so TCP pushes back on the
/// client: its writes stall, and what the server took in stays near the
/// kernel's buffers instead of all 64 MiB queued in the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_stops_while_output_is_blocked_past_its_bound() {
    const MESSAGE: usize = 4 * 1024;
    const TOTAL: usize = 64 << 20;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = received.clone();
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(WebSocketOptions::default()).unwrap())
        .service_fn(move |mut req: Request<Incoming>| {
            let counted = counted.clone();
            async move {
                let upgrade = WebSocketUpgrade::from_request(&mut req).unwrap();
                drop(req);
                let socket = upgrade.accept().await.unwrap();
                let (mut reader, mut writer) = socket.split();
                let (tx, mut rx) = mpsc::unbounded_channel();
                tokio::spawn(async move {
                    while let Some(message) = rx.recv().await {
                        if writer.send(message).await.is_err() {
                            return;
                        }
                    }
                });
                while let Ok(message) = reader.receive_message().await {
                    // Pings are answered by the socket; pongs need no echo.
                    if message.is_ping() || message.is_pong() {
                        continue;
                    }
                    if let Message::Binary(data) = &message {
                        counted.fetch_add(data.len(), std::sync::atomic::Ordering::SeqCst);
                    }
                    if tx.send(message).is_err() {
                        break;
                    }
                }
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    let addr = serve(service).await;
    let mut client = raw_connect(addr, "/ws").await;
    let frame = frame(true, 0x2, &[0x17; MESSAGE], Some(MASK));
    let all = async {
        for _ in 0..TOTAL / MESSAGE {
            client.stream.write_all(&frame).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let finished = tokio::time::timeout(std::time::Duration::from_secs(2), all).await;
    let taken = received.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        finished.is_err(),
        "all 64 MiB were taken in ({taken} bytes received)"
    );
    assert!(taken < TOTAL / 2, "the server read {taken} bytes");
}

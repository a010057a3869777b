//! Interoperability with an independent client, tokio-tungstenite: echo of
//! every message kind and size, fragmentation, ping, both close handshakes,
//! subprotocols, origin checks, and the whole-message, Stream/Sink and
//! split server APIs.

mod common;
use common::*;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tower::ServiceBuilder;
use tower_websockets::{
    self as server, AcceptOptions, WebSocket, WebSocketLayer, WebSocketOptions, WebSocketState,
    WebSocketUpgrade,
};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ----- harness -----

/// Serves `handler` behind a default [`WebSocketLayer`] on 127.0.0.1:0.
async fn serve_handler<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(WebSocketOptions::default()).unwrap())
        .service_fn(handler);
    serve(service).await
}

/// A one-shot report from a server handler to the test, clonable so it can
/// live in a service closure; only the first report is delivered.
struct Report<T>(Arc<Mutex<Option<oneshot::Sender<T>>>>);

impl<T> Clone for Report<T> {
    fn clone(&self) -> Self {
        Report(self.0.clone())
    }
}

impl<T> Report<T> {
    fn new() -> (Report<T>, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        (Report(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    fn send(&self, value: T) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(value);
        }
    }
}

/// Waits (bounded) for a handler's report.
async fn reported<T>(rx: oneshot::Receiver<T>) -> T {
    tokio::time::timeout(TIMEOUT, rx)
        .await
        .expect("server reported in time")
        .expect("server handler reported")
}

/// Accepts a WebSocket request with `options`, or answers 400.
async fn accept(
    mut req: Request<Incoming>,
    options: AcceptOptions,
) -> Result<WebSocket, Response<Body>> {
    let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
        return Err(status(StatusCode::BAD_REQUEST, "not a websocket request"));
    };
    upgrade
        .accept_with(options)
        .await
        .map_err(|_| status(StatusCode::BAD_REQUEST, "accept failed"))
}

async fn connect(addr: SocketAddr, path: &str) -> Client {
    let (client, response) =
        tokio::time::timeout(TIMEOUT, connect_async(format!("ws://{addr}{path}")))
            .await
            .expect("handshake in time")
            .expect("handshake succeeds");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    client
}

/// The next message from the server; `None` once the stream ended.
async fn recv(client: &mut Client) -> Option<Message> {
    tokio::time::timeout(TIMEOUT, client.next())
        .await
        .expect("server answered in time")
        .map(|item| item.expect("client read succeeds"))
}

async fn send(client: &mut Client, message: Message) {
    tokio::time::timeout(TIMEOUT, client.send(message))
        .await
        .expect("client send in time")
        .expect("client send succeeds");
}

/// Sends `message` while reading the echo, so a large message cannot fill
/// both directions' buffers and deadlock; asserts the echo is identical.
async fn assert_echo(client: &mut Client, message: Message) {
    let (mut sink, mut stream) = client.split();
    let (sent, echoed) = tokio::time::timeout(TIMEOUT, async {
        tokio::join!(sink.send(message.clone()), stream.next())
    })
    .await
    .expect("echo in time");
    sent.expect("client send succeeds");
    let echoed = echoed.expect("an echo").expect("client read succeeds");
    assert_eq!(echoed, message);
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// Client-initiated close: sends `close`, expects `reply`, then the end of
/// the stream.
async fn assert_close(client: &mut Client, close: Message, reply: Message) {
    send(client, close).await;
    assert_eq!(recv(client).await, Some(reply));
    assert_eq!(recv(client).await, None, "stream ends after the close");
}

async fn close_normally(client: &mut Client) {
    assert_close(client, close_frame(1000, "done"), close_frame(1000, "done")).await;
}

// ----- echo through the buffer API -----

#[tokio::test]
async fn text_and_binary_messages_echo_identically() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = connect(addr, "/ws").await;
    assert_echo(&mut client, Message::text("hello, world")).await;
    assert_echo(&mut client, Message::binary(vec![0u8, 1, 2, 0xff, 0xfe])).await;
    assert_echo(&mut client, Message::text("héllo wörld ✓ 🦀")).await;
    close_normally(&mut client).await;
}

#[tokio::test]
async fn empty_text_and_empty_binary_messages_echo() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = connect(addr, "/ws").await;
    assert_echo(&mut client, Message::text("")).await;
    assert_echo(&mut client, Message::binary(Vec::new())).await;
    assert_echo(&mut client, Message::text("after the empty ones")).await;
    close_normally(&mut client).await;
}

#[tokio::test]
async fn one_mebibyte_binary_message_echoes_identically() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = connect(addr, "/ws").await;
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    assert_echo(&mut client, Message::binary(data)).await;
    close_normally(&mut client).await;
}

#[tokio::test]
async fn one_mebibyte_multibyte_utf8_text_echoes_identically() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = connect(addr, "/ws").await;
    // 1, 2, 3 and 4-byte characters, so the server's 4 KiB pieces end
    // inside characters.
    let unit = "aé€🦀";
    let text = unit.repeat((1 << 20) / unit.len());
    assert!(text.len() >= (1 << 20) - unit.len());
    assert_echo(&mut client, Message::text(text)).await;
    close_normally(&mut client).await;
}

// ----- fragmentation -----

/// The client's fragments, all sent in one write so each reaches the
/// server whole.
fn fragments(opcode: u8, pieces: &[&[u8]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let first = i == 0;
        let last = i == pieces.len() - 1;
        let op = if first { opcode } else { 0 };
        bytes.extend(frame(last, op, piece, Some(MASK)));
    }
    bytes
}

/// Reads the server's frames of one message and checks they carry the
/// message's fragmentation: first frame `opcode`, continuations after, FIN
/// only on the last, and a frame boundary wherever the client had one.
async fn assert_fragmentation_preserved(client: &mut RawClient, opcode: u8, pieces: &[&[u8]]) {
    let mut frames = Vec::new();
    loop {
        let frame = client.read_frame().await.expect("an echoed frame");
        let fin = frame.fin;
        frames.push(frame);
        if fin {
            break;
        }
    }
    assert_eq!(frames[0].opcode, opcode, "{frames:?}");
    assert!(frames[1..].iter().all(|f| f.opcode == 0), "{frames:?}");
    assert!(frames[..frames.len() - 1].iter().all(|f| !f.fin));
    assert!(frames.iter().all(|f| f.rsv == 0));

    let echoed: Vec<u8> = frames.iter().flat_map(|f| f.payload.clone()).collect();
    assert_eq!(echoed, pieces.concat());

    let ends = |lens: &mut dyn Iterator<Item = usize>| {
        lens.scan(0, |end, len| {
            *end += len;
            Some(*end)
        })
        .collect::<Vec<_>>()
    };
    let client_ends = ends(&mut pieces.iter().map(|p| p.len()));
    let server_ends = ends(&mut frames.iter().map(|f| f.payload.len()));
    assert!(
        client_ends.iter().all(|end| server_ends.contains(end)),
        "client fragments end at {client_ends:?}, server frames at {server_ends:?}"
    );
    // Small fragments in one write arrive whole, so each is echoed 1:1.
    let payloads: Vec<&[u8]> = frames.iter().map(|f| &f.payload[..]).collect();
    assert_eq!(payloads, pieces);
}

#[tokio::test]
async fn fragmented_text_is_echoed_with_its_fragmentation() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = raw_connect(addr, "/ws").await;
    let text = "héllo, fragmented wörld".as_bytes();
    // The first boundary splits the two bytes of 'é'.
    let pieces: [&[u8]; 4] = [&text[..2], &text[2..9], &text[9..20], &text[20..]];
    client.send(&fragments(1, &pieces)).await;
    assert_fragmentation_preserved(&mut client, 1, &pieces).await;

    client
        .send(&frame(true, 8, &close_payload(1000, ""), Some(MASK)))
        .await;
    assert_eq!(client.read_frame().await.unwrap().close_code(), Some(1000));
    assert!(client.read_frame().await.is_none());
}

#[tokio::test]
async fn fragmented_binary_is_echoed_with_its_fragmentation() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = raw_connect(addr, "/ws").await;
    let data: Vec<u8> = (0..900u32).map(|i| (i * 7) as u8).collect();
    let pieces: [&[u8]; 3] = [&data[..300], &data[300..301], &data[301..]];
    client.send(&fragments(2, &pieces)).await;
    assert_fragmentation_preserved(&mut client, 2, &pieces).await;

    // The socket is still in step: a whole message after it echoes.
    client.send(&frame(true, 1, b"next", Some(MASK))).await;
    assert_eq!(client.read_message().await, (1, b"next".to_vec()));
}

#[tokio::test]
async fn fragments_sent_by_tungstenite_echo_as_one_message() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = connect(addr, "/ws").await;
    let parts = ["frag", "ment", "ed ✓"];
    for (i, part) in parts.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let last = i == parts.len() - 1;
        send(
            &mut client,
            Message::Frame(Frame::message(part.as_bytes().to_vec(), opcode, last)),
        )
        .await;
    }
    assert_eq!(recv(&mut client).await, Some(Message::text("fragmented ✓")));
    close_normally(&mut client).await;
}

// ----- ping -----

#[tokio::test]
async fn ping_is_answered_with_pong_carrying_the_same_payload() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = connect(addr, "/ws").await;
    let payload = Bytes::from_static(b"are you there?");
    send(&mut client, Message::Ping(payload.clone())).await;
    assert_eq!(recv(&mut client).await, Some(Message::Pong(payload)));
    // An empty ping too, and the data path still works after.
    send(&mut client, Message::Ping(Bytes::new())).await;
    assert_eq!(recv(&mut client).await, Some(Message::Pong(Bytes::new())));
    assert_echo(&mut client, Message::text("still here")).await;
    close_normally(&mut client).await;
}

// ----- close handshake -----

#[tokio::test]
async fn client_close_with_code_and_reason_is_echoed() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = connect(addr, "/ws").await;
    assert_close(
        &mut client,
        close_frame(4001, "bye"),
        close_frame(4001, "bye"),
    )
    .await;
}

#[tokio::test]
async fn client_close_with_normal_code_and_no_reason_is_echoed() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = connect(addr, "/ws").await;
    assert_close(&mut client, close_frame(1000, ""), close_frame(1000, "")).await;
}

#[tokio::test]
async fn client_close_without_payload_is_answered_with_empty_close() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut client = connect(addr, "/ws").await;
    assert_close(&mut client, Message::Close(None), Message::Close(None)).await;
}

#[tokio::test]
async fn server_initiated_close_completes_with_tungstenite() {
    let (report, outcome) = Report::new();
    let addr = serve_handler(move |req| {
        let report = report.clone();
        async move {
            let mut socket = match accept(req, AcceptOptions::new()).await {
                Ok(socket) => socket,
                Err(response) => return Ok(response),
            };
            let closed = socket
                .close_with(server::CloseCode::GOING_AWAY, "server bye")
                .await;
            report.send((closed.map_err(|e| e.to_string()), socket.state()));
            Ok(Response::default())
        }
    })
    .await;

    let mut client = connect(addr, "/ws").await;
    assert_eq!(
        recv(&mut client).await,
        Some(close_frame(1001, "server bye"))
    );
    // Reading on lets tungstenite send its reply; then the server closes
    // the connection.
    assert_eq!(recv(&mut client).await, None);

    let (closed, state) = reported(outcome).await;
    assert_eq!(closed, Ok(()));
    assert_eq!(state, WebSocketState::Closed);
}

// ----- subprotocols -----

#[tokio::test]
async fn offered_subprotocol_is_chosen() {
    let (report, chosen) = Report::new();
    let addr = serve_handler(move |req| {
        let report = report.clone();
        async move {
            let options = AcceptOptions::new().subprotocol("superchat");
            let mut socket = match accept(req, options).await {
                Ok(socket) => socket,
                Err(response) => return Ok(response),
            };
            report.send(socket.subprotocol().map(str::to_owned));
            let _ = echo_loop(&mut socket, 4096).await;
            Ok(Response::default())
        }
    })
    .await;

    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat, superchat".parse().unwrap());
    let (mut client, response) = tokio::time::timeout(TIMEOUT, connect_async(request))
        .await
        .expect("handshake in time")
        .expect("handshake succeeds");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["sec-websocket-protocol"], "superchat");
    assert_eq!(reported(chosen).await.as_deref(), Some("superchat"));

    assert_echo(&mut client, Message::text("in superchat")).await;
    close_normally(&mut client).await;
}

#[tokio::test]
async fn subprotocol_not_offered_is_refused_before_anything_is_sent() {
    let addr = echo_server(WebSocketOptions::default()).await;
    // echo_handler chooses "superchat"; the client offered only "chat".
    let mut request = format!("ws://{addr}/ws?protocol=superchat")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat".parse().unwrap());
    let result = tokio::time::timeout(TIMEOUT, connect_async(request))
        .await
        .expect("handshake in time");
    match result {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            assert_eq!(
                response.body().as_deref(),
                Some(&b"subprotocol not offered"[..])
            );
        }
        Err(other) => panic!("expected an HTTP error, got {other:?}"),
        Ok((_, response)) => panic!("expected a refusal, got {response:?}"),
    }
}

// ----- origin -----

/// Opens a socket whose request carries these `Origin` headers, in order.
async fn connect_with_origins(
    addr: SocketAddr,
    origins: &[&str],
) -> Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    for origin in origins {
        request
            .headers_mut()
            .append("origin", origin.parse().unwrap());
    }
    tokio::time::timeout(TIMEOUT, connect_async(request))
        .await
        .expect("handshake in time")
}

#[tokio::test]
async fn allowed_origins_admit_listed_and_absent_origins_and_forbid_others() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let options = WebSocketOptions::default().allowed_origins(["https://good.example"]);
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(move |req| {
            counted.fetch_add(1, Ordering::SeqCst);
            echo_handler(req)
        });
    let addr = serve(service).await;

    // A second Origin header is refused whichever comes first: judging by
    // either one would let the other through.
    for origins in [
        &["https://evil.example"][..],
        &["https://good.example", "https://evil.example"],
        &["https://evil.example", "https://good.example"],
    ] {
        match connect_with_origins(addr, origins).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origins:?}");
            }
            Err(other) => panic!("expected an HTTP error for {origins:?}, got {other:?}"),
            Ok((_, response)) => panic!("expected 403 for {origins:?}, got {response:?}"),
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the inner service ran for a forbidden origin"
    );

    for (expected_calls, origin) in [
        (1, &["https://good.example"][..]),
        (2, &["HTTPS://GOOD.EXAMPLE"]),
        (3, &[]),
    ] {
        let (mut client, response) = connect_with_origins(addr, origin)
            .await
            .unwrap_or_else(|e| panic!("origin {origin:?} refused: {e:?}"));
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
        assert_echo(&mut client, Message::text("from an allowed origin")).await;
        close_normally(&mut client).await;
    }
}

// ----- the other server APIs -----

/// Echo over `receive_message` / `send` (pings and pongs not echoed).
async fn message_echo(mut socket: WebSocket) {
    let _ = message_echo_loop(&mut socket).await;
}

async fn serve_socket_handler<H, Fut>(handle: H) -> SocketAddr
where
    H: Fn(WebSocket) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve_handler(move |req| {
        let handle = handle.clone();
        async move {
            match accept(req, AcceptOptions::new()).await {
                Ok(socket) => {
                    handle(socket).await;
                    Ok(Response::default())
                }
                Err(response) => Ok(response),
            }
        }
    })
    .await
}

async fn assert_text_and_binary_echo(addr: SocketAddr) {
    let mut client = connect(addr, "/ws").await;
    assert_echo(&mut client, Message::text("whole message ✓")).await;
    assert_echo(&mut client, Message::binary(vec![9u8; 10_000])).await;
    assert_echo(&mut client, Message::text("")).await;
    assert_close(
        &mut client,
        close_frame(4001, "bye"),
        close_frame(4001, "bye"),
    )
    .await;
}

#[tokio::test]
async fn whole_message_api_echoes_text_and_binary() {
    let addr = serve_socket_handler(message_echo).await;
    assert_text_and_binary_echo(addr).await;
}

/// Large binary messages are handed over as slices of the read buffer:
/// ones the application keeps must stay intact while the buffer is reused
/// for the messages after them, by the same socket or another.
#[tokio::test]
async fn held_binary_messages_stay_intact_while_more_arrive() {
    const SIZES: [usize; 10] = [
        8192, 16_384, 9000, 65_536, 70_000, 20_000, 8191, 100, 30_000, 16_384,
    ];
    fn pattern(index: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|j| (index * 31 + j * 7 + j / 251) as u8)
            .collect()
    }
    let addr = serve_socket_handler(|mut socket: WebSocket| async move {
        // Receive everything first, holding every message, then echo.
        let mut held = Vec::new();
        while held.len() < SIZES.len() {
            match socket.receive_message().await {
                // Answered by the socket: not echoed.
                Ok(message) if message.is_ping() || message.is_pong() => {}
                Ok(message) => held.push(message),
                Err(_) => return,
            }
        }
        for message in held {
            if socket.send(message).await.is_err() {
                return;
            }
        }
        message_echo(socket).await;
    })
    .await;
    // Two sockets at once: on this single-threaded runtime a socket that
    // goes quiet hands its read buffer (or what is left of it after a
    // message was sliced off) to the other.
    let run_client = |seed: usize| async move {
        let mut client = connect(addr, "/ws").await;
        for (index, len) in SIZES.into_iter().enumerate() {
            client
                .feed(Message::binary(pattern(seed + index, len)))
                .await
                .expect("client send succeeds");
        }
        tokio::time::timeout(TIMEOUT, client.flush())
            .await
            .expect("client flush in time")
            .expect("client flush succeeds");
        for (index, len) in SIZES.into_iter().enumerate() {
            let Some(Message::Binary(echoed)) = recv(&mut client).await else {
                panic!("message {index} did not come back as binary");
            };
            assert!(
                echoed[..] == pattern(seed + index, len)[..],
                "message {index} ({len} bytes) changed while held"
            );
        }
        close_normally(&mut client).await;
    };
    tokio::join!(run_client(0), run_client(100));
}

/// Large messages are assembled in allocations reused from large messages
/// sent before. One the application still holds after sending it must not
/// be reused: every kept message stays intact, and every echo is right.
#[tokio::test]
async fn large_messages_reuse_only_allocations_no_one_holds() {
    const SIZES: [usize; 8] = [
        200_000, 65_536, 300_000, 70_000, 1_000_000, 100_000, 65_536, 250_000,
    ];
    fn pattern(index: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|j| (index * 17 + j * 3 + j / 509) as u8)
            .collect()
    }
    let (report, kept) = Report::new();
    let addr = serve_socket_handler(move |mut socket: WebSocket| {
        let report = report.clone();
        async move {
            // Every other message is kept after it is echoed; the others
            // are let go of, so their allocations become spares.
            let mut kept = Vec::new();
            let mut index = 0;
            while index < SIZES.len() {
                let Ok(message) = socket.receive_message().await else {
                    return;
                };
                // Answered by the socket: not echoed.
                if message.is_ping() || message.is_pong() {
                    continue;
                }
                if index % 2 == 0 {
                    kept.push(message.clone());
                }
                if socket.send(message).await.is_err() {
                    return;
                }
                index += 1;
            }
            report.send(kept);
            message_echo(socket).await;
        }
    })
    .await;
    let mut client = connect(addr, "/ws").await;
    for (index, len) in SIZES.into_iter().enumerate() {
        let message = if index % 3 == 2 {
            // Text too: its assembly buffer is recycled once copied out.
            Message::text(String::from_utf8(vec![b'a' + (index as u8); len]).unwrap())
        } else {
            Message::binary(pattern(index, len))
        };
        assert_echo(&mut client, message).await;
    }
    let kept = tokio::time::timeout(TIMEOUT, kept)
        .await
        .expect("the handler reports in time")
        .expect("the handler's report");
    for (slot, message) in kept.into_iter().enumerate() {
        let index = slot * 2;
        let len = SIZES[index];
        let intact = match message {
            server::Message::Binary(data) => data[..] == pattern(index, len)[..],
            server::Message::Text(text) => text.bytes().all(|b| b == b'a' + index as u8),
            server::Message::Ping(_) | server::Message::Pong(_) | server::Message::Close(_) => {
                false
            }
        };
        assert!(intact, "kept message {index} ({len} bytes) changed");
    }
    close_normally(&mut client).await;
}

/// `receive_message` validates a text message that arrives whole in one
/// piece separately from one assembled from pieces: both must echo valid
/// UTF-8 and answer invalid UTF-8 with 1007.
#[tokio::test]
async fn whole_message_api_validates_text_whole_and_in_pieces() {
    let addr = serve_socket_handler(message_echo).await;
    let valid = "héllo wörld ✓ 🦀".as_bytes();
    /// Name, what the client sends, the echo expected (`None`: 1007).
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a [u8]>);
    let cases: [Case<'_>; 6] = [
        (
            "valid, one frame",
            frame(true, 0x1, valid, Some(MASK)),
            Some(valid),
        ),
        (
            "valid, fragmented",
            [
                frame(false, 0x1, &valid[..7], Some(MASK)),
                frame(true, 0x0, &valid[7..], Some(MASK)),
            ]
            .concat(),
            Some(valid),
        ),
        (
            "invalid byte, one frame",
            frame(true, 0x1, b"ab\xffcd", Some(MASK)),
            None,
        ),
        (
            "truncated character, one frame",
            frame(true, 0x1, &valid[..2], Some(MASK)),
            None,
        ),
        (
            "surrogate, one frame",
            frame(true, 0x1, b"\xed\xa0\x80", Some(MASK)),
            None,
        ),
        (
            "invalid, fragmented",
            [
                frame(false, 0x1, b"ok", Some(MASK)),
                frame(true, 0x0, b"\xc3\x28", Some(MASK)),
            ]
            .concat(),
            None,
        ),
    ];
    for (name, bytes, echo) in cases {
        let mut client = raw_connect(addr, "/ws").await;
        client.send(&bytes).await;
        match echo {
            Some(expected) => {
                assert_eq!(
                    client.read_message().await,
                    (0x1, expected.to_vec()),
                    "{name}"
                );
            }
            None => {
                let frames = client.read_to_end().await;
                let close = frames
                    .last()
                    .unwrap_or_else(|| panic!("{name}: no close frame"));
                assert_eq!(close.close_code(), Some(1007), "{name}: {frames:?}");
            }
        }
    }
}

#[tokio::test]
async fn stream_and_sink_echo_text_and_binary() {
    let addr = serve_socket_handler(stream_sink_echo).await;
    assert_text_and_binary_echo(addr).await;
}

/// Reader and writer halves on different worker threads, with the
/// writer's output backing up (the client reads only after it sent
/// everything) and pings mixed in, so both halves wait on the I/O and wake
/// each other many times. A lost wakeup hangs a half: the test times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_halves_on_two_threads_never_lose_a_wakeup() {
    const MESSAGES: usize = 400;
    let addr = serve_socket_handler(split_echo).await;
    let client = connect(addr, "/ws").await;
    let (mut sink, mut stream) = client.split();
    let payload = |i: usize| vec![(i % 251) as u8; 1 + (i * 7919) % 40_000];
    let send_all = tokio::spawn(async move {
        for i in 0..MESSAGES {
            sink.send(Message::binary(payload(i)))
                .await
                .expect("client send");
            if i % 16 == 0 {
                sink.send(Message::Ping(Bytes::from(i.to_string())))
                    .await
                    .expect("client ping");
            }
        }
        sink
    });
    // Let the server's output back up before reading any of it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let receive_all = async {
        let mut echoes = 0;
        let mut pongs = 0;
        while echoes < MESSAGES {
            match stream.next().await.expect("an echo").expect("client read") {
                Message::Binary(data) => {
                    assert_eq!(data, payload(echoes), "echo {echoes}");
                    echoes += 1;
                }
                Message::Pong(data) => {
                    assert_eq!(data, (pongs * 16).to_string(), "pong {pongs}");
                    pongs += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (stream, pongs)
    };
    let (stream, pongs) = tokio::time::timeout(TIMEOUT, receive_all)
        .await
        .expect("every echo arrives: no half waits forever");
    assert_eq!(pongs, MESSAGES.div_ceil(16));
    let sink = send_all.await.expect("the sending task");
    let mut client = sink.reunite(stream).expect("the same client");
    close_normally(&mut client).await;
}

#[tokio::test]
async fn split_socket_echoes_and_answers_ping_while_writer_is_idle() {
    let addr = serve_socket_handler(split_echo).await;
    let mut client = connect(addr, "/ws").await;
    // The writer task waits on its channel; only the reader sees the ping.
    let payload = Bytes::from_static(b"split ping");
    send(&mut client, Message::Ping(payload.clone())).await;
    assert_eq!(recv(&mut client).await, Some(Message::Pong(payload)));

    assert_echo(&mut client, Message::text("through the channel")).await;
    assert_echo(&mut client, Message::binary(vec![1u8, 2, 3])).await;

    send(&mut client, Message::Ping(Bytes::from_static(b"again"))).await;
    assert_eq!(
        recv(&mut client).await,
        Some(Message::Pong(Bytes::from_static(b"again")))
    );
    assert_close(
        &mut client,
        close_frame(1000, "done"),
        close_frame(1000, "done"),
    )
    .await;
}

//! Shared test harness: a real hyper server on 127.0.0.1:0 and a raw
//! WebSocket client whose every byte is chosen by the test.
#![allow(dead_code, unreachable_pub)]

pub mod deflate;
pub mod echo_example;
pub mod h2;
pub mod process;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{BoxError, ServiceBuilder};
use tower_service::Service;
use tower_websockets::{
    MessageType, WebSocket, WebSocketLayer, WebSocketOptions, WebSocketUpgrade,
};

/// Every wait in the tests is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub type Body = Full<Bytes>;

/// Serves `service` with hyper-util's auto builder (HTTP/1.1 + h2c, with
/// upgrades) on 127.0.0.1:0 until the test's runtime ends.
pub async fn serve<S, B>(service: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            // As a server should: a message written in pieces is not held
            // back by Nagle's algorithm waiting for the peer's delayed ACK.
            let _ = tcp.set_nodelay(true);
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                // RFC 8441: WebSockets over HTTP/2 need extended CONNECT.
                builder.http2().enable_connect_protocol();
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// The ASP.NET echo loop over the buffer API: same type, same
/// end-of-message, then close with the status received.
pub async fn echo_loop(
    socket: &mut WebSocket,
    buffer_size: usize,
) -> Result<(), tower_websockets::Error> {
    let mut buf = vec![0u8; buffer_size];
    let mut result = socket.receive_buffer(&mut buf).await?;
    while result.message_type() != MessageType::Close {
        socket
            .send_buffer(
                &buf[..result.count()],
                result.message_type(),
                result.end_of_message(),
            )
            .await?;
        result = socket.receive_buffer(&mut buf).await?;
    }
    socket
        .close_with(
            result.close_status(),
            result.close_description().unwrap_or(""),
        )
        .await
}

/// An echo server on 127.0.0.1:0: `/ws` echoes (4 KiB buffer), accepting
/// the first offered subprotocol when `pick_subprotocol` names it; anything
/// else gets 400 for a non-WebSocket request and "plain" with 200 on other
/// paths.
pub async fn echo_server(options: WebSocketOptions) -> SocketAddr {
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(echo_handler);
    serve(service).await
}

/// An echo server over whole messages (`receive_message` / `send`) on
/// 127.0.0.1:0; pings and pongs are not echoed (the socket answers pings
/// itself); the peer's Close is answered with its own status.
pub async fn message_echo_server(options: WebSocketOptions) -> SocketAddr {
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(|mut req: Request<Incoming>| async move {
            if let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) {
                drop(req);
                if let Ok(mut socket) = upgrade.accept().await {
                    let _ = message_echo_loop(&mut socket).await;
                }
            }
            Ok::<_, Infallible>(Response::<Body>::default())
        });
    serve(service).await
}

/// Echoes whole messages (not pings and pongs, which the socket answers
/// by itself) until the peer's Close, then answers it.
pub async fn message_echo_loop(socket: &mut WebSocket) -> Result<(), tower_websockets::Error> {
    loop {
        match socket.receive_message().await? {
            tower_websockets::Message::Close(frame) => {
                let (code, reason) = match frame {
                    Some(frame) => (Some(frame.code), frame.reason),
                    None => (None, tower_websockets::Utf8Bytes::default()),
                };
                return socket.close_with(code, &reason).await;
            }
            tower_websockets::Message::Ping(_) | tower_websockets::Message::Pong(_) => {}
            message => socket.send(message).await?,
        }
    }
}

/// Echo over the `futures` Stream and Sink, the Close reply included;
/// pings and pongs (answered by the socket) are not echoed.
pub async fn stream_sink_echo(mut socket: WebSocket) {
    use futures_util::{SinkExt, StreamExt};
    while let Some(item) = socket.next().await {
        let Ok(message) = item else { return };
        if message.is_ping() || message.is_pong() {
            continue;
        }
        let is_close = matches!(message, tower_websockets::Message::Close(_));
        if SinkExt::send(&mut socket, message).await.is_err() || is_close {
            return;
        }
    }
}

/// Echo through split halves: the reader task forwards every message
/// (but pings and pongs, answered by the socket) over a channel to the
/// writer task.
pub async fn split_echo(socket: WebSocket) {
    let (mut reader, mut writer) = socket.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<tower_websockets::Message>(8);
    let read = tokio::spawn(async move {
        while let Ok(message) = reader.receive_message().await {
            if message.is_ping() || message.is_pong() {
                continue;
            }
            let is_close = matches!(message, tower_websockets::Message::Close(_));
            if tx.send(message).await.is_err() || is_close {
                return;
            }
        }
    });
    let write = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if writer.send(message).await.is_err() {
                return;
            }
        }
    });
    let _ = tokio::join!(read, write);
}

pub async fn echo_handler(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let upgrade = WebSocketUpgrade::from_request(&mut req);
    match (req.uri().path(), upgrade) {
        ("/ws", Some(upgrade)) => {
            let mut options = tower_websockets::AcceptOptions::new();
            // "?protocol=x" asks the server to choose x, offered or not.
            if let Some(query) = req.uri().query()
                && let Some(protocol) = query.strip_prefix("protocol=")
            {
                options = options.subprotocol(protocol);
            }
            match upgrade.accept_with(options).await {
                Ok(mut socket) => {
                    let _ = echo_loop(&mut socket, 4096).await;
                    Ok(Response::default())
                }
                Err(tower_websockets::Error::SubprotocolNotOffered) => {
                    Ok(status(StatusCode::BAD_REQUEST, "subprotocol not offered"))
                }
                Err(_) => Ok(Response::default()),
            }
        }
        ("/ws", None) => Ok(status(StatusCode::BAD_REQUEST, "not a websocket request")),
        _ => Ok(status(StatusCode::OK, "plain")),
    }
}

pub fn status(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::from(body));
    *response.status_mut() = code;
    response
}

// ----- raw client -----

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The handshake request for `path` with extra header lines.
pub fn handshake_request(path: &str, extra: &[&str]) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Sends `request` (plus `then`, in the same write) and reads the response
/// head. Returns the stream, the head, and any bytes read past the head.
pub async fn raw_request(
    addr: SocketAddr,
    request: &[u8],
    then: &[u8],
) -> (TcpStream, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut bytes = request.to_vec();
    bytes.extend_from_slice(then);
    stream.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    let head_end = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return pos + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed during the handshake: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("handshake response in time");
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    (stream, head, buf[head_end..].to_vec())
}

/// Opens a WebSocket to `addr` + `path` with the raw client.
pub async fn raw_connect(addr: SocketAddr, path: &str) -> RawClient {
    let (stream, head, rest) = raw_request(addr, &handshake_request(path, &[]), &[]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "sec-websocket-accept: {}",
            ACCEPT.to_ascii_lowercase()
        )),
        "{head}"
    );
    RawClient { stream, buf: rest }
}

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: masked with [`MASK`] unless `mask` is `None`.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    frame_rsv(fin, 0, opcode, payload, mask)
}

pub fn frame_rsv(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A server frame as read by the raw client.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The close code of a Close frame.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, 0x8, "expected a close frame, got {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

pub struct RawClient {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl RawClient {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("server answered in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads the next server frame; `None` if the server closed the TCP
    /// connection first.
    pub async fn read_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "connection closed inside a frame");
                return None;
            }
        }
    }

    /// Reads until the server closes the TCP connection; returns the
    /// frames read meanwhile.
    pub async fn read_to_end(&mut self) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        let all = async {
            while let Some(frame) = self.read_frame().await {
                frames.push(frame);
            }
        };
        tokio::time::timeout(TIMEOUT, all)
            .await
            .expect("the server closed the connection in time");
        frames
    }

    /// Reads the whole next message (concatenating continuation frames).
    pub async fn read_message(&mut self) -> (u8, Vec<u8>) {
        let first = self.read_frame().await.expect("a frame");
        let opcode = first.opcode;
        let mut payload = first.payload;
        let mut fin = first.fin;
        while !fin {
            let next = self.read_frame().await.expect("a continuation");
            assert_eq!(next.opcode, 0, "expected a continuation");
            payload.extend(next.payload);
            fin = next.fin;
        }
        (opcode, payload)
    }
}

/// Parses one unmasked server frame; server frames must never be masked.
pub fn parse_server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, mut pos) = match buf[1] & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(pos..pos + len)?.to_vec();
    pos += len;
    Some((
        ServerFrame {
            fin: buf[0] & 0x80 != 0,
            rsv: (buf[0] >> 4) & 7,
            opcode: buf[0] & 0x0F,
            payload,
        },
        pos,
    ))
}

/// A close frame payload.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

//! The `echo` example binary itself, as a user runs it: HTTP/1.1 WebSockets
//! and h2c (RFC 8441) WebSockets on the same port, the sample page, and
//! both echo modes (`--mode aspnet` keeps a fragmented message's frames,
//! `--mode message` answers with the whole message in one frame).

mod common;

use common::echo_example::{EchoServer, echo_example};
use common::*;

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::client::conn::http2;
use hyper::ext::Protocol;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::{WebSocketStream, connect_async};

async fn start(args: &[&str]) -> (EchoServer, SocketAddr) {
    let server = EchoServer::start(&echo_example().await, args).await;
    let addr = server.addr.parse().expect("a socket address");
    (server, addr)
}

/// A WebSocket over an HTTP/2 stream (extended CONNECT) on a new h2c
/// connection.
async fn h2_websocket(addr: SocketAddr) -> WebSocketStream<TokioIo<hyper::upgrade::Upgraded>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    // Wait for the server's SETTINGS (with ENABLE_CONNECT_PROTOCOL).
    sender.ready().await.unwrap();
    let mut request = Request::connect("http://localhost/ws")
        .version(Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(Protocol::from_static("websocket"));
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .expect("CONNECT answered in time")
        .expect("CONNECT answered");
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    let upgraded = hyper::upgrade::on(response).await.expect("h2 upgrade");
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
}

/// Sends `message` and expects the identical echo.
async fn assert_echo<S>(client: &mut WebSocketStream<S>, message: Message)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(TIMEOUT, client.send(message.clone()))
        .await
        .expect("sent in time")
        .expect("sent");
    let echoed = tokio::time::timeout(TIMEOUT, client.next())
        .await
        .expect("echo in time")
        .expect("an echo")
        .expect("a message");
    assert_eq!(echoed, message);
}

#[tokio::test]
async fn http1_and_h2c_websockets_and_the_page_share_one_port() {
    let (server, addr) = start(&[]).await;

    let (mut h1, response) = connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("HTTP/1.1 handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut h2 = h2_websocket(addr).await;

    assert_echo(&mut h1, Message::text("over HTTP/1.1 ✓")).await;
    assert_echo(&mut h2, Message::text("over HTTP/2 ✓")).await;
    assert_echo(&mut h1, Message::binary(vec![7u8; 100_000])).await;
    assert_echo(&mut h2, Message::binary(vec![8u8; 100_000])).await;
    h1.close(None).await.expect("HTTP/1.1 close");
    h2.close(None).await.expect("HTTP/2 close");

    let (_, head, _) = raw_request(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &[]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/html"), "{head}");

    // A first request split before the end of what could be the h2
    // preface ("PRI") still gets served (by the fallback path).
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"P").await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    tcp.write_all(b"OST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    server.stop().await;
}

/// The client's fragments, sent in one write.
fn fragmented(pieces: &[&[u8]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 { 0x2 } else { 0x0 };
        bytes.extend(frame(i == pieces.len() - 1, opcode, piece, Some(MASK)));
    }
    bytes
}

/// The payloads of the frames of the next message.
async fn message_frames(client: &mut RawClient) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    loop {
        let frame = client.read_frame().await.expect("an echoed frame");
        payloads.push(frame.payload);
        if frame.fin {
            return payloads;
        }
    }
}

#[tokio::test]
async fn aspnet_mode_keeps_fragments_and_message_mode_joins_them() {
    let pieces: [&[u8]; 3] = [b"one ", b"two ", b"three"];
    for (args, expected) in [
        (
            &[][..],
            pieces.iter().map(|p| p.to_vec()).collect::<Vec<_>>(),
        ),
        (
            &["--mode", "aspnet"][..],
            pieces.iter().map(|p| p.to_vec()).collect(),
        ),
        (&["--mode", "message"][..], vec![pieces.concat()]),
    ] {
        let (server, addr) = start(args).await;
        let mut client = raw_connect(addr, "/ws").await;
        client.send(&fragmented(&pieces)).await;
        assert_eq!(message_frames(&mut client).await, expected, "echo {args:?}");
        client
            .send(&frame(true, 0x8, &close_payload(4001, "bye"), Some(MASK)))
            .await;
        let close = client.read_frame().await.expect("the close reply");
        assert_eq!(close.close_code(), Some(4001), "echo {args:?}");
        server.stop().await;
    }
}

#[tokio::test]
async fn unknown_mode_is_refused() {
    let echo = echo_example().await;
    let output = tokio::process::Command::new(echo)
        .args(["--mode", "fast"])
        .output()
        .await
        .expect("the example runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--mode needs a value"));
}

#[tokio::test]
async fn ctrl_c_and_sigterm_drain_open_sockets_with_going_away_and_exit() {
    for (mode, signal) in [("aspnet", "-INT"), ("message", "-TERM")] {
        let (server, addr) = start(&["--mode", mode]).await;
        let mut clients = Vec::new();
        for i in 0..2u8 {
            let mut client = raw_connect(addr, "/ws").await;
            client.send(&frame(true, 0x2, &[i; 3], Some(MASK))).await;
            let echo = client.read_frame().await.expect("an echo");
            assert_eq!(echo.payload, [i; 3], "--mode {mode}");
            clients.push(client);
        }
        let pid = server.child.id().expect("the example is running");
        let kill = tokio::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(kill.success());
        for client in &mut clients {
            let close = client.read_frame().await.expect("the server's close");
            assert_eq!(close.opcode, 0x8, "--mode {mode}");
            assert_eq!(close.close_code(), Some(1001), "--mode {mode}");
            assert_eq!(&close.payload[2..], b"server is shutting down");
            client
                .send(&frame(true, 0x8, &close_payload(1001, ""), Some(MASK)))
                .await;
        }
        let (status, output) = server.exited().await;
        assert!(status.success(), "--mode {mode}: {status}\n{output}");
        assert!(
            output.contains("all connections closed sockets=2"),
            "--mode {mode}: sockets left open at exit:\n{output}"
        );
        // One line per socket when it is accepted and one when it ends.
        let lines = |what: &str| output.lines().filter(|l| l.contains(what)).count();
        assert_eq!(lines("websocket accepted"), 2, "{output}");
        assert_eq!(lines("websocket closed code=1001"), 2, "{output}");
    }
}

/// Reads until the server closes the connection; `Err` if it is still
/// open after `limit`. Returns how long that took.
async fn closed_within(
    tcp: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> Result<std::time::Duration, String> {
    let start = std::time::Instant::now();
    let mut scratch = [0u8; 4096];
    let ended = tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    match ended {
        Ok(()) => Ok(start.elapsed()),
        Err(_) => Err(format!("still open after {limit:?}")),
    }
}

/// With `--handshake-timeout 0.5`, a connection that sends nothing, one
/// that stops inside its request headers, and one that stops inside
/// HTTP/2's preface are all closed by the server within the deadline
/// (plus scheduling), while a well-behaved client still gets its socket.
#[tokio::test]
async fn silent_and_stalled_handshakes_are_closed_at_the_deadline() {
    let (_server, addr) = start(&["--handshake-timeout", "0.5"]).await;
    let deadline = std::time::Duration::from_millis(500);
    let limit = std::time::Duration::from_secs(3);
    let stalls: [(&str, &[u8]); 3] = [
        ("silent", b""),
        (
            "headers never finished",
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nX-Pad: ",
        ),
        ("HTTP/2 preface never finished", b"PRI * HTTP/2.0\r\n"),
    ];
    let mut clients = Vec::new();
    for (name, bytes) in stalls {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        clients.push((name, tcp));
    }
    // A well-behaved client is served meanwhile.
    let (mut client, _) = connect_async(format!("ws://{addr}/ws")).await.unwrap();
    assert_echo(&mut client, Message::text("on time")).await;
    for (name, mut tcp) in clients {
        let took = closed_within(&mut tcp, limit)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(took < limit, "{name}: closed after {took:?}");
    }
    // The socket opened in time outlives the handshake deadline.
    tokio::time::sleep(deadline).await;
    assert_echo(&mut client, Message::text("still here")).await;
}

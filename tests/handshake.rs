//! The opening handshake over raw HTTP/1.1: which requests are upgraded,
//! which pass through to the inner service untouched, the 426 an
//! application can answer with, and a first frame sent in the same write
//! as the upgrade request.

mod common;
use common::*;

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tower::ServiceBuilder;
use tower_websockets::{HandshakeRejection, WebSocketLayer, WebSocketOptions, WebSocketUpgrade};

/// The header lines of a valid upgrade request, by name.
const VALID: [(&str, &str); 5] = [
    ("Host", "localhost"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
];

/// A request to `path` with the valid upgrade headers, minus the header
/// named `without` (if any), plus the `extra` lines.
fn upgrade_request(method: &str, path: &str, without: &[&str], extra: &[&str]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in VALID {
        if !without.iter().any(|w| w.eq_ignore_ascii_case(name)) {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// The `Content-Length` of a response head.
fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no content-length in {head:?}"))
}

/// Whether the head has the header line `name: value` (name and value
/// compared as HTTP does: name case-insensitively, value exactly).
fn has_header(head: &str, name: &str, value: &str) -> bool {
    head.lines().any(|line| {
        line.split_once(':')
            .is_some_and(|(n, v)| n.eq_ignore_ascii_case(name) && v.trim() == value)
    })
}

/// Sends `request` and returns the response's head and body.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let (mut stream, head, mut body) = raw_request(addr, request, &[]).await;
    let len = content_length(&head);
    read_at_least(&mut stream, &mut body, len).await;
    assert_eq!(body.len(), len, "more than the body arrived: {body:?}");
    (head, String::from_utf8(body).unwrap())
}

async fn read_at_least(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) {
    tokio::time::timeout(TIMEOUT, async {
        while buf.len() < len {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("body in time");
}

/// Asserts `request` reached echo_handler as a plain request to `/ws`.
async fn assert_passes_through(addr: SocketAddr, request: &[u8]) {
    let (head, body) = exchange(addr, request).await;
    assert!(
        head.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "request {:?} got {head:?}",
        String::from_utf8_lossy(request)
    );
    assert_eq!(body, "not a websocket request");
}

/// Asserts `request` was upgraded with the RFC 6455 accept value for
/// [`KEY`].
async fn assert_upgraded(addr: SocketAddr, request: &[u8]) {
    let (_stream, head, _rest) = raw_request(addr, request, &[]).await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "request {:?} got {head:?}",
        String::from_utf8_lossy(request)
    );
    assert!(has_header(&head, "sec-websocket-accept", ACCEPT), "{head}");
    assert!(has_header(&head, "upgrade", "websocket"), "{head}");
}

// ----- pass-through -----

#[tokio::test]
async fn plain_get_to_ws_path_reaches_inner_service() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let request = b"GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_passes_through(addr, request).await;
}

#[tokio::test]
async fn plain_get_to_root_gets_plain_response() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let (head, body) = exchange(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "plain");
}

#[tokio::test]
async fn well_formed_upgrade_request_is_accepted() {
    // The control for the malformed variants below.
    let addr = echo_server(WebSocketOptions::default()).await;
    assert_upgraded(addr, &upgrade_request("GET", "/ws", &[], &[])).await;
}

#[tokio::test]
async fn version_8_passes_through() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let request = upgrade_request(
        "GET",
        "/ws",
        &["Sec-WebSocket-Version"],
        &["Sec-WebSocket-Version: 8"],
    );
    assert_passes_through(addr, &request).await;
}

#[tokio::test]
async fn missing_version_passes_through() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let request = upgrade_request("GET", "/ws", &["Sec-WebSocket-Version"], &[]);
    assert_passes_through(addr, &request).await;
}

#[tokio::test]
async fn key_of_15_bytes_passes_through() {
    let addr = echo_server(WebSocketOptions::default()).await;
    // base64 of 15 zero bytes.
    let request = upgrade_request(
        "GET",
        "/ws",
        &["Sec-WebSocket-Key"],
        &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"],
    );
    assert_passes_through(addr, &request).await;
}

#[tokio::test]
async fn key_of_17_bytes_passes_through() {
    let addr = echo_server(WebSocketOptions::default()).await;
    // base64 of 17 zero bytes.
    let request = upgrade_request(
        "GET",
        "/ws",
        &["Sec-WebSocket-Key"],
        &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA="],
    );
    assert_passes_through(addr, &request).await;
}

#[tokio::test]
async fn missing_key_passes_through() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let request = upgrade_request("GET", "/ws", &["Sec-WebSocket-Key"], &[]);
    assert_passes_through(addr, &request).await;
}

#[tokio::test]
async fn two_key_headers_pass_through() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let request = upgrade_request(
        "GET",
        "/ws",
        &[],
        &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="],
    );
    assert_passes_through(addr, &request).await;
}

#[tokio::test]
async fn post_upgrade_passes_through() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let request = upgrade_request("POST", "/ws", &[], &["Content-Length: 0"]);
    assert_passes_through(addr, &request).await;
}

#[tokio::test]
async fn connection_without_upgrade_token_passes_through() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let request = upgrade_request("GET", "/ws", &["Connection"], &["Connection: keep-alive"]);
    assert_passes_through(addr, &request).await;
    let request = upgrade_request("GET", "/ws", &["Connection"], &[]);
    assert_passes_through(addr, &request).await;
}

#[tokio::test]
async fn missing_upgrade_header_passes_through() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let request = upgrade_request("GET", "/ws", &["Upgrade"], &[]);
    assert_passes_through(addr, &request).await;
}

// ----- token parsing -----

#[tokio::test]
async fn connection_token_list_is_accepted() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let request = upgrade_request(
        "GET",
        "/ws",
        &["Connection"],
        &["Connection: keep-alive, Upgrade"],
    );
    assert_upgraded(addr, &request).await;
}

#[tokio::test]
async fn mixed_case_tokens_are_accepted() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let request = upgrade_request(
        "GET",
        "/ws",
        &["Connection", "Upgrade"],
        &["Connection: UPGRADE", "Upgrade: WebSocket"],
    );
    assert_upgraded(addr, &request).await;
}

// ----- an application's 426 -----

/// Accepts WebSocket requests (and echoes); answers any other request with
/// the RFC 6455 rejection for it.
async fn strict_handler(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
        return Ok(match HandshakeRejection::check(&req) {
            Err(rejection) => rejection.into_response(),
            Ok(()) => status(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "valid but not upgraded",
            ),
        });
    };
    if let Ok(mut socket) = upgrade.accept().await {
        let _ = echo_loop(&mut socket, 4096).await;
    }
    Ok(Response::default())
}

#[tokio::test]
async fn application_can_answer_wrong_version_with_426() {
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(WebSocketOptions::default()).unwrap())
        .service_fn(strict_handler);
    let addr = serve(service).await;

    let request = upgrade_request(
        "GET",
        "/ws",
        &["Sec-WebSocket-Version"],
        &["Sec-WebSocket-Version: 8"],
    );
    let (head, body) = exchange(addr, &request).await;
    assert!(
        head.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{head}"
    );
    assert!(has_header(&head, "sec-websocket-version", "13"), "{head}");
    assert_eq!(body, "");

    // A valid request to the same service is still upgraded.
    assert_upgraded(addr, &upgrade_request("GET", "/ws", &[], &[])).await;
}

// ----- hyper's read_buf leftover -----

#[tokio::test]
async fn first_frame_in_same_write_as_upgrade_request_is_not_lost() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let (stream, head, rest) = raw_request(
        addr,
        &handshake_request("/ws", &[]),
        &frame(true, 1, b"early", Some(MASK)),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(has_header(&head, "sec-websocket-accept", ACCEPT), "{head}");
    let mut client = RawClient { stream, buf: rest };
    assert_eq!(client.read_message().await, (1, b"early".to_vec()));

    client
        .send(&frame(true, 8, &close_payload(1000, ""), Some(MASK)))
        .await;
    assert_eq!(client.read_frame().await.unwrap().close_code(), Some(1000));
    assert!(client.read_frame().await.is_none());
}

#[tokio::test]
async fn several_frames_in_same_write_as_upgrade_request_are_not_lost() {
    let addr = echo_server(WebSocketOptions::default()).await;
    let mut early = frame(true, 1, b"one", Some(MASK));
    early.extend(frame(true, 2, &[0xde, 0xad], Some(MASK)));
    early.extend(frame(true, 8, &close_payload(4001, "done"), Some(MASK)));
    let (stream, head, rest) = raw_request(addr, &handshake_request("/ws", &[]), &early).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut client = RawClient { stream, buf: rest };
    assert_eq!(client.read_message().await, (1, b"one".to_vec()));
    assert_eq!(client.read_message().await, (2, vec![0xde, 0xad]));
    let close = client.read_frame().await.unwrap();
    assert_eq!(close.close_code(), Some(4001));
    assert_eq!(&close.payload[2..], b"done");
    assert!(client.read_frame().await.is_none());
}

/// `AcceptOptions::protocols`: the first of the server's subprotocols
/// that the client offered, in the server's order; none offered is still
/// accepted, without the header.
#[tokio::test]
async fn the_server_picks_its_first_subprotocol_the_client_offered() {
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(WebSocketOptions::default()).unwrap())
        .service_fn(|mut req: Request<Incoming>| async move {
            let upgrade = WebSocketUpgrade::from_request(&mut req).unwrap();
            let options = tower_websockets::AcceptOptions::new().protocols(["superchat", "chat"]);
            let socket = upgrade.accept_with(options).await.unwrap();
            // The choice is on the socket too: echo it as a text message.
            let chosen = socket.subprotocol().unwrap_or("none").to_owned();
            let mut socket = socket;
            socket.send(chosen.into()).await.unwrap();
            Ok::<_, Infallible>(Response::<Body>::default())
        });
    let addr = serve(service).await;
    for (offered, chosen) in [
        (Some("chat, superchat"), Some("superchat")),
        (Some("chat"), Some("chat")),
        (Some("other, chat"), Some("chat")),
        (Some("other"), None),
        (None, None),
    ] {
        let header = offered.map(|p| format!("Sec-WebSocket-Protocol: {p}"));
        let extra: Vec<&str> = header.iter().map(String::as_str).collect();
        let (stream, head, rest) = raw_request(addr, &handshake_request("/ws", &extra), &[]).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let answered = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-protocol")
                .then(|| value.trim().to_owned())
        });
        assert_eq!(answered.as_deref(), chosen, "offered {offered:?}");
        let mut client = RawClient { stream, buf: rest };
        let (_, text) = client.read_message().await;
        assert_eq!(
            text,
            chosen.unwrap_or("none").as_bytes(),
            "offered {offered:?}"
        );
    }
}

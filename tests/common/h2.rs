//! An HTTP/2 client for the RFC 8441 tests: hyper's own, over h2c.

use http::{Request, StatusCode, Version};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::client::conn::http2;
use hyper::ext::Protocol;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub type Sender = http2::SendRequest<Empty<Bytes>>;

/// An h2c (prior knowledge) connection to `addr`.
pub async fn h2_connect(addr: std::net::SocketAddr) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// An extended CONNECT request for a WebSocket at `path`.
pub fn connect_request(path: &str, extra: &[(&str, &str)]) -> Request<Empty<Bytes>> {
    let mut builder = Request::connect(format!("http://localhost{path}"))
        .version(Version::HTTP_2)
        .header("sec-websocket-version", "13");
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(Empty::new()).unwrap();
    request
        .extensions_mut()
        .insert(Protocol::from_static("websocket"));
    request
}

/// Opens a WebSocket stream over the h2 connection: the upgraded stream
/// and the response head.
pub async fn open_stream(
    sender: &mut Sender,
    path: &str,
    extra: &[(&str, &str)],
) -> (TokioIo<Upgraded>, http::response::Parts) {
    // Wait until the server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) arrived.
    sender.ready().await.unwrap();
    let response = sender
        .send_request(connect_request(path, extra))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    let (parts, body) = response.into_parts();
    let upgraded = hyper::upgrade::on(http::Response::from_parts(parts.clone(), body))
        .await
        .unwrap();
    (TokioIo::new(upgraded), parts)
}

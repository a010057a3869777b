//! The opening handshake (RFC 6455 §4.2): detecting a WebSocket request
//! and building the response.
//!
//! Detection is a pure function of the request head, so it is unit-tested
//! and fuzzed without a server. Two flavors: the HTTP/1.1 `GET` + `Upgrade`
//! of RFC 6455, and HTTP/2 extended `CONNECT` with `:protocol = websocket`
//! of RFC 8441 (which hyper exposes as the [`hyper::ext::Protocol`]
//! extension when `enable_connect_protocol()` is set on its HTTP/2
//! builder).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use sha1::{Digest, Sha1};

/// `Sec-WebSocket-Key`.
pub(crate) const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
/// `Sec-WebSocket-Accept`.
pub(crate) const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
/// `Sec-WebSocket-Version`.
pub(crate) const SEC_WEBSOCKET_VERSION: HeaderName =
    HeaderName::from_static("sec-websocket-version");
/// `Sec-WebSocket-Protocol`.
pub(crate) const SEC_WEBSOCKET_PROTOCOL: HeaderName =
    HeaderName::from_static("sec-websocket-protocol");
/// `Sec-WebSocket-Extensions`.
pub(crate) const SEC_WEBSOCKET_EXTENSIONS: HeaderName =
    HeaderName::from_static("sec-websocket-extensions");

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How the WebSocket was requested, and so how it is accepted.
#[derive(Clone, Debug)]
pub(crate) enum Flavor {
    /// HTTP/1.1 `GET` + `Upgrade: websocket`: accepted with `101` and this
    /// `Sec-WebSocket-Accept` value.
    Http11 { accept: HeaderValue },
    /// HTTP/2 extended `CONNECT` (RFC 8441): accepted with `200`; the
    /// stream becomes the WebSocket.
    Http2,
}

/// A request that passed detection.
#[derive(Clone, Debug)]
pub(crate) struct Handshake {
    pub(crate) flavor: Flavor,
    pub(crate) subprotocols: Vec<Box<str>>,
    pub(crate) extensions: Vec<Box<str>>,
    /// The `Sec-WebSocket-Extensions` header values as sent, for
    /// negotiation (their parameters may be quoted, with commas inside).
    pub(crate) extension_offers: Vec<HeaderValue>,
}

/// Why a request is not a valid WebSocket request, and the HTTP answer
/// RFC 6455 gives it.
///
/// [`WebSocketLayer`](crate::WebSocketLayer) passes every such request to
/// the inner service untouched, as ASP.NET Core does; an application that
/// wants to answer it can call [`HandshakeRejection::check`] and send
/// [`into_response`](HandshakeRejection::into_response), which for a wrong
/// version is `426 Upgrade Required` with `Sec-WebSocket-Version: 13`.
///
/// ```
/// use http::{Request, StatusCode};
/// use tower_websockets::HandshakeRejection;
///
/// let req = Request::get("/ws")
///     .header("connection", "Upgrade")
///     .header("upgrade", "websocket")
///     .header("sec-websocket-version", "8")
///     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .body(())
///     .unwrap();
/// let rejection = HandshakeRejection::check(&req).unwrap_err();
/// assert_eq!(rejection, HandshakeRejection::UnsupportedVersion);
/// assert_eq!(rejection.status(), StatusCode::UPGRADE_REQUIRED);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeRejection {
    /// No `Upgrade: websocket` token: an ordinary HTTP request.
    NotWebSocket,
    /// An upgrade over HTTP/1.0 (RFC 6455 requires HTTP/1.1 or later) or
    /// HTTP/3.
    UnsupportedHttpVersion,
    /// A WebSocket request with a method other than `GET` (HTTP/1.1) or
    /// `CONNECT` (HTTP/2).
    InvalidMethod,
    /// No `upgrade` token in `Connection`.
    ConnectionNotUpgrade,
    /// `Sec-WebSocket-Version` missing or not `13`.
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing or repeated.
    MissingKey,
    /// `Sec-WebSocket-Key` that is not the base64 form of 16 bytes.
    InvalidKey,
}

impl HandshakeRejection {
    /// Checks a request against RFC 6455 §4.2.1.
    ///
    /// # Errors
    ///
    /// The first requirement the request does not meet.
    pub fn check<B>(req: &Request<B>) -> Result<(), HandshakeRejection> {
        detect(req).map(drop)
    }

    /// The HTTP status RFC 6455 answers this rejection with.
    pub fn status(&self) -> StatusCode {
        match self {
            HandshakeRejection::InvalidMethod => StatusCode::METHOD_NOT_ALLOWED,
            HandshakeRejection::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// A bare response with [`status`](Self::status); for a wrong version
    /// it carries `Sec-WebSocket-Version: 13` (RFC 6455 §4.4), and for a
    /// wrong method `Allow: GET` (`Allow: CONNECT` cannot arise: HTTP/2
    /// only carries `:protocol` on `CONNECT`).
    pub fn into_response<B: Default>(self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = self.status();
        match self {
            HandshakeRejection::UnsupportedVersion => {
                response
                    .headers_mut()
                    .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
            HandshakeRejection::InvalidMethod => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            _ => {}
        }
        response
    }
}

impl fmt::Display for HandshakeRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeRejection::NotWebSocket => "not a websocket request",
            HandshakeRejection::UnsupportedHttpVersion => {
                "websocket request over an unsupported http version"
            }
            HandshakeRejection::InvalidMethod => "websocket request method is not GET or CONNECT",
            HandshakeRejection::ConnectionNotUpgrade => "connection header lacks the upgrade token",
            HandshakeRejection::UnsupportedVersion => "unsupported sec-websocket-version",
            HandshakeRejection::MissingKey => "missing or repeated sec-websocket-key",
            HandshakeRejection::InvalidKey => "invalid sec-websocket-key",
        })
    }
}

impl std::error::Error for HandshakeRejection {}

/// Whether any comma-separated token of any `name` header equals `token`
/// (ASCII case-insensitive).
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// All comma-separated tokens of all `name` headers, trimmed, non-empty.
fn tokens(headers: &HeaderMap, name: &HeaderName) -> Vec<Box<str>> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(Box::from)
        .collect()
}

/// The value of a header that must appear exactly once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Detects a WebSocket request: RFC 6455 §4.2.1 over HTTP/1.1, RFC 8441
/// §4 over HTTP/2.
pub(crate) fn detect<B>(req: &Request<B>) -> Result<Handshake, HandshakeRejection> {
    detect_parts(req.method(), req.version(), req.headers(), req.extensions())
}

/// [`detect`] on a request's head, as extractors see it.
pub(crate) fn detect_parts(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> Result<Handshake, HandshakeRejection> {
    if version == Version::HTTP_2 {
        return detect_h2(method, headers, extensions);
    }
    if !has_token(headers, &header::UPGRADE, "websocket") {
        return Err(HandshakeRejection::NotWebSocket);
    }
    if version < Version::HTTP_11 || version > Version::HTTP_2 {
        return Err(HandshakeRejection::UnsupportedHttpVersion);
    }
    if method != Method::GET {
        return Err(HandshakeRejection::InvalidMethod);
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(HandshakeRejection::ConnectionNotUpgrade);
    }
    check_version(headers)?;
    let key = single(headers, &SEC_WEBSOCKET_KEY).ok_or(HandshakeRejection::MissingKey)?;
    let key = key.as_bytes().trim_ascii();
    match BASE64.decode(key) {
        Ok(decoded) if decoded.len() == 16 => {}
        _ => return Err(HandshakeRejection::InvalidKey),
    }
    Ok(Handshake {
        flavor: Flavor::Http11 {
            accept: accept_key(key),
        },
        subprotocols: tokens(headers, &SEC_WEBSOCKET_PROTOCOL),
        extensions: tokens(headers, &SEC_WEBSOCKET_EXTENSIONS),
        extension_offers: headers
            .get_all(&SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .cloned()
            .collect(),
    })
}

/// RFC 8441 §4: `CONNECT` with `:protocol = websocket` and version 13; no
/// key, no `Upgrade` or `Connection` headers.
fn detect_h2(
    method: &Method,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> Result<Handshake, HandshakeRejection> {
    let is_websocket = extensions
        .get::<hyper::ext::Protocol>()
        .is_some_and(|p| p.as_ref().eq_ignore_ascii_case(b"websocket"));
    if !is_websocket {
        return Err(HandshakeRejection::NotWebSocket);
    }
    if method != Method::CONNECT {
        return Err(HandshakeRejection::InvalidMethod);
    }
    check_version(headers)?;
    Ok(Handshake {
        flavor: Flavor::Http2,
        subprotocols: tokens(headers, &SEC_WEBSOCKET_PROTOCOL),
        extensions: tokens(headers, &SEC_WEBSOCKET_EXTENSIONS),
        extension_offers: headers
            .get_all(&SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .cloned()
            .collect(),
    })
}

fn check_version(headers: &HeaderMap) -> Result<(), HandshakeRejection> {
    match single(headers, &SEC_WEBSOCKET_VERSION) {
        Some(v) if v.as_bytes().trim_ascii() == b"13" => Ok(()),
        _ => Err(HandshakeRejection::UnsupportedVersion),
    }
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub(crate) fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    let encoded = BASE64.encode(sha1.finalize());
    HeaderValue::try_from(encoded).expect("base64 is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> http::request::Builder {
        Request::get("/ws")
            .header("host", "example")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "WebSocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    }

    #[test]
    fn rfc_accept_key_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn valid_request_is_detected() {
        let req = request()
            .header("sec-websocket-protocol", "chat, superchat")
            .header("sec-websocket-protocol", "v3")
            .body(())
            .unwrap();
        let handshake = detect(&req).unwrap();
        let Flavor::Http11 { accept } = &handshake.flavor else {
            panic!("expected HTTP/1.1");
        };
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            handshake.subprotocols,
            vec!["chat".into(), "superchat".into(), "v3".into()] as Vec<Box<str>>
        );
    }

    #[test]
    fn connection_tokens_may_span_header_lines() {
        let req = Request::get("/ws")
            .header("connection", "keep-alive")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA==")
            .body(())
            .unwrap();
        assert!(detect(&req).is_ok());
    }

    #[test]
    fn each_requirement_is_checked() {
        let plain = Request::get("/").body(()).unwrap();
        assert_eq!(
            detect(&plain).unwrap_err(),
            HandshakeRejection::NotWebSocket
        );

        let post = request().method("POST").body(()).unwrap();
        assert_eq!(
            detect(&post).unwrap_err(),
            HandshakeRejection::InvalidMethod
        );

        let http10 = request().version(Version::HTTP_10).body(()).unwrap();
        assert_eq!(
            detect(&http10).unwrap_err(),
            HandshakeRejection::UnsupportedHttpVersion
        );

        let mut no_conn = request().body(()).unwrap();
        no_conn
            .headers_mut()
            .insert("connection", HeaderValue::from_static("keep-alive"));
        assert_eq!(
            detect(&no_conn).unwrap_err(),
            HandshakeRejection::ConnectionNotUpgrade
        );

        let mut v8 = request().body(()).unwrap();
        v8.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert_eq!(
            detect(&v8).unwrap_err(),
            HandshakeRejection::UnsupportedVersion
        );

        let mut no_key = request().body(()).unwrap();
        no_key.headers_mut().remove("sec-websocket-key");
        assert_eq!(detect(&no_key).unwrap_err(), HandshakeRejection::MissingKey);

        let two_keys = request()
            .header("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA==")
            .body(())
            .unwrap();
        assert_eq!(
            detect(&two_keys).unwrap_err(),
            HandshakeRejection::MissingKey
        );

        for bad in [
            "AAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAA=",
            "not base64 at all!!!!!==",
            "AAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let mut req = request().body(()).unwrap();
            req.headers_mut()
                .insert("sec-websocket-key", HeaderValue::from_static(bad));
            assert_eq!(
                detect(&req).unwrap_err(),
                HandshakeRejection::InvalidKey,
                "{bad}"
            );
        }
    }

    fn h2_request() -> http::request::Builder {
        let mut builder = Request::connect("https://example/ws")
            .version(Version::HTTP_2)
            .header("sec-websocket-version", "13")
            .header("sec-websocket-protocol", "chat");
        builder
            .extensions_mut()
            .unwrap()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        builder
    }

    #[test]
    fn h2_extended_connect_is_detected() {
        let handshake = detect(&h2_request().body(()).unwrap()).unwrap();
        assert!(matches!(handshake.flavor, Flavor::Http2));
        assert_eq!(handshake.subprotocols, vec![Box::from("chat")]);
    }

    #[test]
    fn h2_requirements_are_checked() {
        let plain_connect = Request::connect("https://example/")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(
            detect(&plain_connect).unwrap_err(),
            HandshakeRejection::NotWebSocket
        );

        let mut other = h2_request().body(()).unwrap();
        other
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("webtransport"));
        assert_eq!(
            detect(&other).unwrap_err(),
            HandshakeRejection::NotWebSocket
        );

        let mut v8 = h2_request().body(()).unwrap();
        v8.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert_eq!(
            detect(&v8).unwrap_err(),
            HandshakeRejection::UnsupportedVersion
        );

        let mut get = h2_request().body(()).unwrap();
        *get.method_mut() = Method::GET;
        assert_eq!(detect(&get).unwrap_err(), HandshakeRejection::InvalidMethod);
    }

    #[test]
    fn version_rejection_answers_426() {
        let response: Response<()> = HandshakeRejection::UnsupportedVersion.into_response();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()[SEC_WEBSOCKET_VERSION], "13");
    }
}

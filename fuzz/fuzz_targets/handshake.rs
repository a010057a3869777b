//! The opening-handshake check fed arbitrary request heads: it must never
//! panic, and an accepted request must meet RFC 6455 §4.2.1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_websockets::HandshakeRejection;

fuzz_target!(|data: &[u8]| {
    // Interpret the input as "METHOD\nname: value\nname: value...".
    let mut lines = data.split(|&b| b == b'\n');
    let method = lines.next().unwrap_or_default();
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let mut builder = http::Request::builder().method(method).uri("/ws");
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    if HandshakeRejection::check(&request).is_ok() {
        assert_eq!(request.method(), http::Method::GET);
        assert!(request.headers().get("sec-websocket-key").is_some());
        assert_eq!(
            request
                .headers()
                .get("sec-websocket-version")
                .map(|v| v.as_bytes().trim_ascii()),
            Some(&b"13"[..])
        );
    } else if let Err(rejection) = HandshakeRejection::check(&request) {
        let _ = rejection.into_response::<()>();
    }
});

//! The socket's `tracing` output: a `websocket` span per socket with the
//! request's path and version, an event when it finishes (outcome, code,
//! reason, who closed first, traffic), events for protocol errors and
//! rejected handshakes; and nothing at all when the level is off.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tower::ServiceBuilder;
use tower_websockets::{WebSocketLayer, WebSocketOptions};
use tracing_subscriber::fmt::MakeWriter;

/// Everything the subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// A subscriber for this thread (the tests run on a current-thread
/// runtime, so the server's tasks are on it too) at `filter`.
fn capture(filter: &str) -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// One clean socket (a message each way, closed by the client), one that
/// breaks the protocol, and one upgrade from a disallowed origin.
async fn exercise() -> WebSocketLayer {
    let layer =
        WebSocketLayer::new(WebSocketOptions::default().allowed_origins(["https://ok.example"]))
            .unwrap();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(echo_handler);
    let addr = serve(service).await;

    let mut client = raw_connect(addr, "/ws").await;
    client.send(&frame(true, 1, b"hello", Some(MASK))).await;
    assert_eq!(client.read_message().await, (1, b"hello".to_vec()));
    client
        .send(&frame(true, 8, &close_payload(1000, "bye"), Some(MASK)))
        .await;
    client.read_to_end().await;

    let mut bad = raw_connect(addr, "/ws").await;
    bad.send(&frame(true, 1, b"unmasked", None)).await;
    bad.read_to_end().await;

    let (_, head, _) = raw_request(
        addr,
        &handshake_request("/ws", &["Origin: https://evil.example"]),
        &[],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    tokio::time::timeout(TIMEOUT, async {
        while layer.live_sockets() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    layer
}

#[tokio::test]
async fn a_socket_has_a_span_and_an_event_at_its_end() {
    let (captured, _guard) = capture("tower_websockets=debug");
    let layer = exercise().await;
    assert_eq!(layer.stats().closed.clean, 1);
    let log = captured.text();

    let finished: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("websocket finished"))
        .collect();
    assert_eq!(finished.len(), 2, "{log}");
    let clean = finished
        .iter()
        .find(|line| line.contains(r#"outcome="clean""#))
        .unwrap_or_else(|| panic!("{log}"));
    for field in [
        r#"websocket{path="/ws" version=HTTP/1.1"#,
        "code=1000",
        r#"reason="bye""#,
        r#"initiator="client""#,
        "messages_in=1",
        "messages_out=1",
        // In: "hello" (6 + 5) and the Close (6 + 5); out: the echo (2 + 5)
        // and the answering Close (2 + 5), counted though the socket ends
        // before its last write.
        "bytes_in=22",
        "bytes_out=14",
        "duration=",
    ] {
        assert!(clean.contains(field), "{field} missing: {clean}");
    }
    let error = log
        .lines()
        .find(|line| line.contains("websocket protocol error"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(error.contains("code=1002"), "{error}");
    assert!(error.contains(r#"path="/ws""#), "{error}");
    assert!(
        finished
            .iter()
            .any(|line| line.contains(r#"outcome="protocol error""#)),
        "{log}"
    );
    assert!(log.contains("rejected (403): origin not allowed"), "{log}");
}

#[tokio::test]
async fn nothing_is_written_when_the_level_is_off() {
    let (captured, _guard) = capture("tower_websockets=info");
    exercise().await;
    assert_eq!(captured.text(), "");
}

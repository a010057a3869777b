//! `examples/production.rs` as a child process: sockets over HTTP/1.1
//! and HTTP/2 echo, `/metrics` counts them in the Prometheus format, and
//! SIGTERM drains them with 1001 before the process exits.

mod common;

use common::echo_example::{EchoServer, example};
use common::h2::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Client;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as ClientCode;

/// `GET /metrics` over a fresh HTTP/1.1 connection: the body.
async fn metrics(addr: std::net::SocketAddr) -> String {
    let (mut tcp, head, mut body) = raw_request(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        &[],
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    tokio::time::timeout(
        TIMEOUT,
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut body),
    )
    .await
    .unwrap()
    .unwrap();
    String::from_utf8(body).unwrap()
}

#[tokio::test]
async fn metrics_count_the_sockets_and_sigterm_drains_them() {
    let binary = example("production").await;
    let server = EchoServer::start(&binary, &["--drain-seconds", "5"]).await;
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();

    let mut clients = Vec::new();
    for i in 0..2 {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        ws.send(Client::text(format!("h1 {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Client::text(format!("h1 {i}"))
        );
        clients.push(tokio::spawn(async move {
            let mut close = None;
            while let Some(Ok(message)) = ws.next().await {
                if let Client::Close(frame) = message {
                    close = frame.map(|f| f.code);
                }
            }
            close
        }));
    }
    let mut sender = h2_connect(addr).await;
    let (stream, _) = open_stream(&mut sender, "/ws", &[]).await;
    let mut h2 =
        tokio_tungstenite::WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    h2.send(Client::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        h2.next().await.unwrap().unwrap(),
        Client::binary(vec![1, 2, 3])
    );
    clients.push(tokio::spawn(async move {
        let mut close = None;
        while let Some(Ok(message)) = h2.next().await {
            if let Client::Close(frame) = message {
                close = frame.map(|f| f.code);
            }
        }
        close
    }));

    let text = metrics(addr).await;
    for line in [
        "# TYPE websocket_live_sockets gauge",
        "websocket_live_sockets 3",
        "websocket_accepted_total 3",
        r#"websocket_messages_total{direction="in"} 3"#,
        r#"websocket_messages_total{direction="out"} 3"#,
        r#"websocket_closed_total{outcome="clean"} 0"#,
        r#"websocket_rejected_total{reason="capacity"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }

    let pid = server.child.id().expect("the example is running");
    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    for client in clients {
        let code = tokio::time::timeout(TIMEOUT, client)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, Some(ClientCode::Away));
    }
    let (status, output) = server.exited().await;
    assert!(status.success(), "{status}\n{output}");
    let drained = output
        .lines()
        .find(|line| line.contains("drained"))
        .unwrap_or_else(|| panic!("no drain report:\n{output}"));
    for field in [
        "sockets=3",
        "closed=3",
        "aborted=0",
        "connections_closed=true",
    ] {
        assert!(drained.contains(field), "{field}: {drained}");
    }
}

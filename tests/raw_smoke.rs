//! Smoke test of the raw client harness against the echo server.

mod common;
use common::*;

#[tokio::test]
async fn echo_text_over_raw_client() {
    let addr = echo_server(Default::default()).await;
    let mut client = raw_connect(addr, "/ws").await;
    client.send(&frame(true, 1, b"hello", Some(MASK))).await;
    assert_eq!(client.read_message().await, (1, b"hello".to_vec()));
    client
        .send(&frame(true, 8, &close_payload(1000, "bye"), Some(MASK)))
        .await;
    let close = client.read_frame().await.unwrap();
    assert_eq!(close.close_code(), Some(1000));
    assert!(client.read_frame().await.is_none());
}

//! One text sent to many sockets is shared, not copied per socket:
//! `Message::Text` holds a `Utf8Bytes`, whose clone is a reference count,
//! and a large payload is written from the message itself. Counted with a
//! counting global allocator (this binary has only this test, so nothing
//! else allocates meanwhile).

mod common;

use std::alloc::System;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use cap::Cap;
use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::AsyncReadExt;
use tower::ServiceBuilder;
use tower_websockets::{Message, Utf8Bytes, WebSocketLayer, WebSocketUpgrade, WebSocketWriter};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const SOCKETS: usize = 100;
const TEXT: usize = 16 * 1024;

/// Sends `make(i)` to every writer; returns the bytes allocated meanwhile.
async fn broadcast(writers: &mut [WebSocketWriter], make: impl Fn(usize) -> Message) -> usize {
    let before = ALLOCATOR.total_allocated();
    for (i, writer) in writers.iter_mut().enumerate() {
        writer.send(make(i)).await.unwrap();
    }
    ALLOCATOR.total_allocated() - before
}

#[tokio::test(flavor = "current_thread")]
async fn one_text_to_a_hundred_sockets_is_not_copied_per_socket() {
    let writers: Arc<Mutex<Vec<WebSocketWriter>>> = Arc::default();
    let registry = writers.clone();
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::default())
        .service_fn(move |mut req: Request<Incoming>| {
            let registry = registry.clone();
            async move {
                if let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) {
                    drop(req);
                    if let Ok(socket) = upgrade.accept().await {
                        let (_reader, writer) = socket.split();
                        registry.lock().unwrap().push(writer);
                        // Hold the reader until the test ends.
                        std::future::pending::<()>().await;
                    }
                }
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    let addr = serve(service).await;
    for _ in 0..SOCKETS {
        let client = raw_connect(addr, "/ws").await;
        // Read and drop everything, without allocating.
        tokio::spawn(async move {
            let mut tcp = client.stream;
            let mut scratch = [0u8; 4096];
            while matches!(tcp.read(&mut scratch).await, Ok(n) if n > 0) {}
        });
    }
    tokio::time::timeout(TIMEOUT, async {
        while writers.lock().unwrap().len() < SOCKETS {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let mut writers = std::mem::take(&mut *writers.lock().unwrap());

    let text = Utf8Bytes::from("é".repeat(TEXT / 2));
    // Warm up: each socket's first send sizes its output queue.
    broadcast(&mut writers, |_| Message::Text(text.clone())).await;

    let shared = broadcast(&mut writers, |_| Message::Text(text.clone())).await;
    assert!(
        shared < TEXT,
        "{shared} bytes allocated to send one {TEXT}-byte text to {SOCKETS} sockets"
    );

    // The same broadcast with a copy per socket, as a `String` clone made:
    // the count sees every copy.
    let copied = broadcast(&mut writers, |_| Message::text(text.as_str().to_owned())).await;
    assert!(
        copied >= SOCKETS * TEXT,
        "{copied} bytes for {SOCKETS} copies"
    );
    eprintln!("shared: {shared} bytes allocated; copied per socket: {copied}");
}

//! A prepared message costs one allocation whether it goes to ten sockets
//! or a hundred, and one more per compression variant: none per socket,
//! from the handle's send to the frames reaching every client. Counted
//! with a counting global allocator on a current-thread runtime (this
//! binary has only this test, so nothing else allocates meanwhile).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::deflate::connect_offering;
use common::*;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::AsyncReadExt;
use tower::ServiceBuilder;
use tower_websockets::{
    DeflateOptions, PreparedMessage, WebSocketHandle, WebSocketLayer, WebSocketOptions,
    WebSocketUpgrade,
};

/// Counts allocation calls (not bytes): `alloc`, `alloc_zeroed` and a
/// `realloc` that moves are each one.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SOCKETS: usize = 100;
const MESSAGES: usize = 20;
const SIZE: usize = 1024;

/// Counts whole frames in a byte stream without allocating: the header
/// bytes seen so far of the next frame, or the payload bytes still to skip.
#[derive(Default)]
struct FrameCounter {
    header: [u8; 10],
    have: usize,
    skip: u64,
    frames: usize,
}

impl FrameCounter {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.skip -= n as u64;
                bytes = &bytes[n..];
                if self.skip == 0 {
                    self.frames += 1;
                }
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            let need = match self.header.get(1).map(|b| b & 0x7f) {
                _ if self.have < 2 => continue,
                Some(126) => 4,
                Some(127) => 10,
                _ => 2,
            };
            if self.have < need {
                continue;
            }
            let len = match need {
                2 => u64::from(self.header[1] & 0x7f),
                4 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                _ => u64::from_be_bytes(self.header[2..10].try_into().unwrap()),
            };
            self.have = 0;
            if len == 0 {
                self.frames += 1;
            } else {
                self.skip = len;
            }
        }
    }
}

/// Prepares `MESSAGES` messages, sends each to every handle, and waits
/// until every client has read them all; returns the allocations made.
async fn broadcast(handles: &[WebSocketHandle], received: &AtomicUsize) -> usize {
    let before_frames = received.load(Ordering::Relaxed);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..MESSAGES {
        let message = PreparedMessage::binary([i as u8; SIZE]);
        for handle in handles {
            handle.try_send_prepared(&message).unwrap();
        }
    }
    let want = before_frames + handles.len() * MESSAGES;
    let mut polls = 0u64;
    while received.load(Ordering::Relaxed) < want {
        tokio::task::yield_now().await;
        polls += 1;
        assert!(polls < 50_000_000, "every client read every message");
    }
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[tokio::test(flavor = "current_thread")]
async fn a_prepared_message_allocates_nothing_per_socket() {
    let room: Arc<Mutex<Vec<WebSocketHandle>>> = Arc::default();
    let members = room.clone();
    let options = WebSocketOptions::default().permessage_deflate(Some(DeflateOptions::default()));
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(options).unwrap())
        .service_fn(move |mut req: Request<Incoming>| {
            let members = members.clone();
            async move {
                if let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) {
                    drop(req);
                    if let Ok(mut socket) = upgrade.accept().await {
                        members.lock().unwrap().push(socket.handle());
                        while socket.recv().await.is_some() {}
                    }
                }
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    let addr = serve(service).await;
    // Every client reads into its own buffer and counts frames, without
    // allocating. The first half compresses nothing; the second half
    // negotiated permessage-deflate without context takeover, so it
    // shares one compressed frame per message.
    let received = Arc::new(AtomicUsize::new(0));
    for i in 0..SOCKETS {
        let (tcp, rest) = if i < SOCKETS / 2 {
            let client = raw_connect(addr, "/ws").await;
            (client.stream, client.buf)
        } else {
            let (client, head) =
                connect_offering(addr, "permessage-deflate; server_no_context_takeover").await;
            assert!(head.contains("server_no_context_takeover"), "{head}");
            (client.stream, client.buf)
        };
        assert!(rest.is_empty());
        let received = received.clone();
        tokio::spawn(async move {
            let mut tcp = tcp;
            let mut counter = FrameCounter::default();
            let mut scratch = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = tcp.read(&mut scratch).await {
                let before = counter.frames;
                counter.feed(&scratch[..n]);
                received.fetch_add(counter.frames - before, Ordering::Relaxed);
            }
        });
    }
    tokio::time::timeout(TIMEOUT, async {
        while room.lock().unwrap().len() < SOCKETS {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let handles = room.lock().unwrap().clone();

    // Warm up: every socket's queue and every task reach their sizes.
    broadcast(&handles, &received).await;
    broadcast(&handles, &received).await;

    let plain = &handles[..SOCKETS / 2];
    let compressing = &handles[SOCKETS / 2..];
    let to_all = broadcast(&handles, &received).await;
    let to_five_plain = broadcast(&plain[..5], &received).await;
    let to_plain = broadcast(plain, &received).await;
    let to_five_compressing = broadcast(&compressing[..5], &received).await;
    let to_compressing = broadcast(compressing, &received).await;
    println!(
        "allocations for {MESSAGES} messages: {to_all} to all {SOCKETS} sockets; \
         {to_five_plain} to 5 and {to_plain} to {} uncompressed; \
         {to_five_compressing} to 5 and {to_compressing} to {} compressing",
        plain.len(),
        compressing.len()
    );
    // One for the frame; one more for the compressed variant.
    assert_eq!(to_plain, MESSAGES, "one per message");
    assert_eq!(to_five_plain, to_plain, "nothing per socket");
    assert_eq!(to_compressing, 2 * MESSAGES, "compressed once");
    assert_eq!(to_five_compressing, to_compressing, "nothing per socket");
    assert_eq!(to_all, 2 * MESSAGES);
}

//! permessage-deflate (RFC 7692) on real sockets, with raw clients whose
//! every byte the test chooses: negotiation on the wire, RSV1 rules, an
//! empty compressed frame, and every receive and send form over HTTP/1.1
//! and HTTP/2. The decompression bomb has a binary of its own
//! (`tests/deflate_bomb.rs`), which counts every allocation of its process.

mod common;

use common::deflate::*;
use common::*;
use flate2::{Compress, Compression, FlushCompress};
use tower_websockets::WebSocketOptions;

#[tokio::test]
async fn negotiation_on_the_wire_and_rsv1_rules() {
    let addr = echo_server(deflate_options()).await;
    // The first acceptable offer is answered; a compressed text echoes.
    let (mut client, head) = connect_offering(
        addr,
        "permessage-deflate; server_max_window_bits=7, permessage-deflate; client_max_window_bits",
    )
    .await;
    assert_eq!(
        extensions_header(&head).as_deref(),
        Some("permessage-deflate"),
        "{head}"
    );
    let text = "compressed ".repeat(100);
    client
        .send(&frame_rsv(
            true,
            0b100,
            0x1,
            &deflate(text.as_bytes()),
            Some(MASK),
        ))
        .await;
    let echoed = client.read_frame().await.expect("the echo");
    // The ASP.NET loop answers in 4 KiB pieces; this one fits in one.
    assert_eq!(echoed.rsv, 0b100, "{echoed:?}");
    let mut inflate = flate2::Decompress::new(false);
    let mut data = echoed.payload.clone();
    data.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(text.len() + 64);
    inflate
        .decompress_vec(&data, &mut out, flate2::FlushDecompress::Sync)
        .unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), text);

    // RSV1 on a continuation frame: 1002.
    let (mut client, _) = connect_offering(addr, "permessage-deflate").await;
    let data = deflate(b"two frames, two frames");
    let mut wire = frame_rsv(false, 0b100, 0x1, &data[..3], Some(MASK));
    wire.extend(frame_rsv(true, 0b100, 0x0, &data[3..], Some(MASK)));
    client.send(&wire).await;
    let frames = client.read_to_end().await;
    assert_eq!(
        frames.last().and_then(ServerFrame::close_code),
        Some(1002),
        "{frames:?}"
    );

    // Offered nothing: no extension, and RSV1 is a violation.
    let mut client = raw_connect(addr, "/ws").await;
    client
        .send(&frame_rsv(true, 0b100, 0x1, &deflate(b"x"), Some(MASK)))
        .await;
    let frames = client.read_to_end().await;
    assert_eq!(
        frames.last().and_then(ServerFrame::close_code),
        Some(1002),
        "{frames:?}"
    );

    // Compression off on the server: an offer is declined.
    let plain = echo_server(WebSocketOptions::default()).await;
    let (_, head) = connect_offering(plain, "permessage-deflate").await;
    assert_eq!(extensions_header(&head), None, "{head}");
}

/// A compressed message whose only frame is empty (RSV1, FIN, no payload):
/// RFC 7692 §7.2.3.6 has an empty message compressed to one 0x00 byte,
/// but a client that strips the flush's tail from an empty flush sends
/// nothing. It is received as an empty message, and the client's context
/// carries on around it: the next message may refer back across it.
#[tokio::test]
async fn an_empty_compressed_frame_is_an_empty_message_and_keeps_the_context() {
    let addr = echo_server(deflate_options()).await;
    let (mut client, head) = connect_offering(addr, "permessage-deflate").await;
    assert_eq!(
        extensions_header(&head).as_deref(),
        Some("permessage-deflate")
    );
    // One compressor for the whole connection: context takeover.
    let mut compress = Compress::new(Compression::default(), false);
    let mut message = |data: &[u8]| {
        let mut out = Vec::with_capacity(data.len() + 64);
        compress
            .compress_vec(data, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    };
    let text = "context taken over, ".repeat(20);
    let first = message(text.as_bytes());
    let second = message(text.as_bytes());
    // The second copy is a back-reference into the first message.
    assert!(second.len() < 16, "{} bytes", second.len());
    let mut wire = frame_rsv(true, 0b100, 0x1, &first, Some(MASK));
    wire.extend(frame_rsv(true, 0b100, 0x1, &[], Some(MASK)));
    wire.extend(frame_rsv(true, 0b100, 0x1, &second, Some(MASK)));
    client.send(&wire).await;

    // The server's messages, inflated with one context of its own.
    let mut inflate = flate2::Decompress::new(false);
    let mut received = Vec::new();
    for _ in 0..3 {
        let frame = client.read_frame().await.expect("an echo");
        assert!(frame.fin && frame.opcode == 0x1, "{frame:?}");
        let payload = if frame.rsv == 0b100 {
            let mut data = frame.payload.clone();
            data.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut out = Vec::with_capacity(text.len() + 64);
            inflate
                .decompress_vec(&data, &mut out, flate2::FlushDecompress::Sync)
                .unwrap();
            out
        } else {
            frame.payload
        };
        received.push(String::from_utf8(payload).unwrap());
    }
    assert_eq!(received, [text.as_str(), "", text.as_str()]);
    client
        .send(&frame(true, 0x8, &close_payload(1000, ""), Some(MASK)))
        .await;
    let frames = client.read_to_end().await;
    assert_eq!(
        frames.last().and_then(ServerFrame::close_code),
        Some(1000),
        "{frames:?}"
    );
}

// ----- every receive and send form, over HTTP/1.1 and HTTP/2 -----

use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tower::ServiceBuilder;
use tower_websockets::{WebSocket, WebSocketLayer, WebSocketUpgrade};

/// A client with permessage-deflate, context takeover both ways, over any
/// stream.
struct DeflateClient<S> {
    io: S,
    buf: Vec<u8>,
    compress: Compress,
    inflate: flate2::Decompress,
}

impl<S: AsyncRead + AsyncWrite + Unpin> DeflateClient<S> {
    fn new(io: S, buf: Vec<u8>) -> Self {
        DeflateClient {
            io,
            buf,
            compress: Compress::new(Compression::default(), false),
            inflate: flate2::Decompress::new(false),
        }
    }

    /// Sends `payload` compressed (in `pieces` frames), reads the echo and
    /// returns its opcode and inflated payload.
    async fn echo(&mut self, opcode: u8, payload: &[u8], pieces: usize) -> (u8, Vec<u8>) {
        let mut data = Vec::with_capacity(payload.len() + 64);
        let start = self.compress.total_in();
        loop {
            data.reserve(64 * 1024);
            let consumed = (self.compress.total_in() - start) as usize;
            self.compress
                .compress_vec(&payload[consumed..], &mut data, FlushCompress::Sync)
                .unwrap();
            let all_in = self.compress.total_in() - start == payload.len() as u64;
            if all_in && data.capacity() > data.len() {
                break;
            }
        }
        if data.ends_with(&[0, 0, 0xff, 0xff]) {
            data.truncate(data.len() - 4);
        } else {
            // Nothing new to flush (an empty message after a flushed one):
            // the empty stored block's header byte, as a fresh one has.
            assert!(data.is_empty());
            data.push(0x00);
        }
        let step = data.len().div_ceil(pieces).max(1);
        let chunks: Vec<&[u8]> = data.chunks(step).collect();
        let mut wire = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let (rsv, op) = if i == 0 { (0b100, opcode) } else { (0, 0x0) };
            wire.extend(frame_rsv(i + 1 == chunks.len(), rsv, op, chunk, Some(MASK)));
        }
        self.io.write_all(&wire).await.unwrap();
        // The echo: one message, in one frame or many.
        let mut first: Option<(u8, bool)> = None;
        let mut message = Vec::new();
        loop {
            let frame = loop {
                if let Some((frame, used)) = parse_server_frame(&self.buf) {
                    self.buf.drain(..used);
                    break frame;
                }
                let mut chunk = vec![0u8; 64 * 1024];
                let n = tokio::time::timeout(TIMEOUT, self.io.read(&mut chunk))
                    .await
                    .expect("the echo in time")
                    .unwrap();
                assert!(n > 0, "the server closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
            };
            first.get_or_insert((frame.opcode, frame.rsv == 0b100));
            message.extend_from_slice(&frame.payload);
            if frame.fin {
                break;
            }
        }
        let (opcode, compressed) = first.unwrap();
        if !compressed {
            return (opcode, message);
        }
        message.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(payload.len() + 1024);
        let before = self.inflate.total_in();
        self.inflate
            .decompress_vec(&message, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!((self.inflate.total_in() - before) as usize, message.len());
        (opcode, out)
    }

    async fn exercise(&mut self, what: &str) {
        for round in 0..2 {
            for len in [0usize, 1, 125, 5000, 64 * 1024, 300_000] {
                let text: String = "compressible text, ".chars().cycle().take(len).collect();
                let binary: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
                for (opcode, payload) in [(0x1, text.as_bytes()), (0x2, &binary[..])] {
                    for pieces in [1, 3] {
                        let (got_opcode, got) = self.echo(opcode, payload, pieces).await;
                        assert_eq!(got_opcode, opcode, "{what}: {len} bytes, round {round}");
                        assert!(
                            got == payload,
                            "{what}: {len} bytes in {pieces} frames, round {round}"
                        );
                    }
                }
            }
        }
    }
}

/// An echo server running `echo` on every accepted socket.
async fn serve_echo<F, Fut>(echo: F) -> std::net::SocketAddr
where
    F: Fn(WebSocket) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let service = ServiceBuilder::new()
        .layer(WebSocketLayer::new(deflate_options()).unwrap())
        .service_fn(move |mut req: Request<Incoming>| {
            let echo = echo.clone();
            async move {
                if let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) {
                    drop(req);
                    if let Ok(socket) = upgrade.accept().await {
                        echo(socket).await;
                    }
                }
                Ok::<_, Infallible>(Response::<Body>::default())
            }
        });
    serve(service).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receive_and_send_form_over_http1_and_http2() {
    let servers = [
        (
            "the buffer API (4 KiB pieces)",
            echo_server(deflate_options()).await,
        ),
        (
            "whole messages",
            message_echo_server(deflate_options()).await,
        ),
        ("Stream and Sink", serve_echo(stream_sink_echo).await),
        ("split halves", serve_echo(split_echo).await),
    ];
    for (what, addr) in servers {
        let (client, head) = connect_offering(addr, "permessage-deflate").await;
        assert_eq!(
            extensions_header(&head).as_deref(),
            Some("permessage-deflate")
        );
        let RawClient { stream, buf } = client;
        DeflateClient::new(stream, buf)
            .exercise(&format!("{what} over HTTP/1.1"))
            .await;

        let mut sender = common::h2::h2_connect(addr).await;
        let (stream, parts) = common::h2::open_stream(
            &mut sender,
            "/ws",
            &[("sec-websocket-extensions", "permessage-deflate")],
        )
        .await;
        let answered = parts
            .headers
            .get("sec-websocket-extensions")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            answered.as_deref(),
            Some("permessage-deflate"),
            "{what} over HTTP/2"
        );
        DeflateClient::new(stream, Vec::new())
            .exercise(&format!("{what} over HTTP/2"))
            .await;
    }
}

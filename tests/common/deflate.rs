//! permessage-deflate helpers for raw clients: messages compressed as a
//! client would, and a socket opened with an offer.

use flate2::{Compress, Compression, FlushCompress};
use tower_websockets::{DeflateOptions, WebSocketOptions};

use super::{RawClient, handshake_request, raw_request};

/// `payload` repeated `times`, compressed as one permessage-deflate
/// message: raw DEFLATE, sync-flushed, without the flush's `00 00 ff ff`.
/// (Repeated, so that a large bomb is made without allocating it.)
pub fn deflate_repeated(payload: &[u8], times: usize) -> Vec<u8> {
    let mut compress = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(64 * 1024);
    for round in 0..times {
        let flush = if round + 1 == times {
            FlushCompress::Sync
        } else {
            FlushCompress::None
        };
        let mut consumed = 0;
        loop {
            out.reserve(64 * 1024);
            let before = compress.total_in();
            compress
                .compress_vec(&payload[consumed..], &mut out, flush)
                .unwrap();
            consumed += (compress.total_in() - before) as usize;
            if consumed == payload.len() && out.capacity() > out.len() {
                break;
            }
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

pub fn deflate(payload: &[u8]) -> Vec<u8> {
    deflate_repeated(payload, 1)
}

pub fn deflate_options() -> WebSocketOptions {
    WebSocketOptions::default()
        .max_message_size(1 << 20)
        .permessage_deflate(Some(DeflateOptions::default()))
}

/// Opens a socket offering `offer`; returns the client and the response
/// head.
pub async fn connect_offering(addr: std::net::SocketAddr, offer: &str) -> (RawClient, String) {
    let header = format!("Sec-WebSocket-Extensions: {offer}");
    let (stream, head, rest) = raw_request(addr, &handshake_request("/ws", &[&header]), &[]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (RawClient { stream, buf: rest }, head)
}

pub fn extensions_header(head: &str) -> Option<String> {
    head.lines().find_map(|line| {
        line.to_ascii_lowercase()
            .strip_prefix("sec-websocket-extensions:")
            .map(|v| v.trim().to_owned())
    })
}

//! `floor`: the measuring stick, not a product.
//!
//! A bare-minimum WebSocket echo on tokio with no WebSocket library: the
//! HTTP upgrade is parsed by hand (only `Sec-WebSocket-Key` is read), then
//! each connection loops over one read into a buffer, unmasks every
//! complete frame in it, appends each echo frame (server header + payload,
//! same opcode and FIN bit) to one output buffer and writes that buffer with
//! one `write_all`. Pings get pongs, pongs are dropped, a close is echoed
//! and ends the connection. No UTF-8 check, no limits, no validation: what
//! is left is the cost of the runtime and the syscalls, which is what the
//! libraries are compared against.
//!
//! ```text
//! floor --addr 127.0.0.1:9001 --threads 1
//! ```

use std::io;
use std::process::ExitCode;

use base64::Engine as _;
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// RFC 6455's GUID for `Sec-WebSocket-Accept`.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Read buffer capacity; grown to hold a whole frame when one is larger.
const READ_CHUNK: usize = 64 * 1024;

fn main() -> ExitCode {
    tower_websockets_bench::run_server("floor", serve)
}

async fn serve(addr: String) -> io::Result<()> {
    let listener = tower_websockets_bench::bind("floor", &addr).await?;
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                // As every server in the suite: no Nagle delays.
                let _ = tcp.set_nodelay(true);
                tokio::spawn(connection(tcp));
            }
            // Out of descriptors, typically: back off a little.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

async fn connection(mut tcp: TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let head_len = loop {
        if tcp.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 8192 {
            return Ok(());
        }
    };
    let Some(key) = header(&buf[..head_len], b"sec-websocket-key") else {
        return tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    };
    let accept = base64::engine::general_purpose::STANDARD
        .encode(Sha1::new().chain_update(key).chain_update(GUID).finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    tcp.write_all(response.as_bytes()).await?;
    // Frames sent right behind the request stay in the buffer.
    buf.drain(..head_len);

    let mut out = Vec::with_capacity(READ_CHUNK);
    loop {
        let mut pos = 0;
        let mut closed = false;
        while let Some((header_len, mask, len)) = frame_head(&buf[pos..]) {
            let end = pos + header_len + len;
            if buf.len() < end {
                break;
            }
            let first = buf[pos];
            let payload = &mut buf[pos + header_len..end];
            unmask(payload, mask);
            match first & 0x0f {
                0x9 => push_frame(&mut out, 0x8A, payload),
                0xA => {}
                0x8 => {
                    push_frame(&mut out, first, payload);
                    closed = true;
                }
                _ => push_frame(&mut out, first, payload),
            }
            pos = end;
            if closed {
                break;
            }
        }
        if !out.is_empty() {
            tcp.write_all(&out).await?;
            out.clear();
        }
        if closed {
            return Ok(());
        }
        buf.drain(..pos);
        // Room for the rest of a large frame, so it arrives in few reads.
        let want = frame_head(&buf).map_or(0, |(h, _, len)| h + len);
        buf.reserve(want.max(READ_CHUNK).saturating_sub(buf.len()));
        if tcp.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// A header line's value, name compared case-insensitively.
fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// Header length, mask and payload length of the frame `buf` starts with,
/// once the whole header is there.
fn frame_head(buf: &[u8]) -> Option<(usize, [u8; 4], usize)> {
    let (&b1, rest) = buf.get(1).zip(buf.get(2..))?;
    let (len, ext) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            2,
        ),
        127 => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?), 8),
        n => (u64::from(n), 0),
    };
    let mut mask = [0; 4];
    let mut header_len = 2 + ext;
    if b1 & 0x80 != 0 {
        mask.copy_from_slice(rest.get(ext..ext + 4)?);
        header_len += 4;
    }
    Some((header_len, mask, usize::try_from(len).ok()?))
}

/// XORs `payload` with `mask`, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let word = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Appends an unmasked frame with first byte `first`.
fn push_frame(out: &mut Vec<u8>, first: u8, payload: &[u8]) {
    out.push(first);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

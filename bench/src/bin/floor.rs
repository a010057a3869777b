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
//! The broadcast scenario's roles, chosen by the request path (any other
//! path is the echo above):
//!
//! - `/pub`, a publisher: the same read loop, but each data frame is framed
//!   once, unmasked, into one `Bytes` (same first byte, so fragments are
//!   forwarded as they came: the floor does not reassemble) and that
//!   `Bytes` is pushed into every subscriber's channel ([`Room`]).
//! - `/sub`, a subscriber: the socket is split; a writer task waits for a
//!   frame, takes whatever else is queued (up to [`BATCH`] frames) and writes
//!   them all with vectored writes, so several queued messages cost one
//!   send; the reader only answers pings and the close, through the same
//!   channel, and leaves the room when the socket ends.
//!
//! That is the floor the broadcast figures are stated against: one encoding
//! per message, one send per socket per wake-up.
//!
//! ```text
//! floor --addr 127.0.0.1:9001 --threads 1
//! ```

use std::io::{self, IoSlice};
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tower_websockets_bench::{Role, Room};

/// RFC 6455's GUID for `Sec-WebSocket-Accept`.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Read buffer capacity; grown to hold a whole frame when one is larger.
const READ_CHUNK: usize = 64 * 1024;
/// Most frames a subscriber's writer sends in one vectored write.
const BATCH: usize = 64;
/// Largest frame a publisher or subscriber may send (the echo has no limit).
const MAX_FRAME: usize = 64 << 20;

fn main() -> ExitCode {
    tower_websockets_bench::run_server("floor", serve)
}

async fn serve(addr: String) -> io::Result<()> {
    let listener = tower_websockets_bench::bind("floor", &addr).await?;
    // The broadcast scenario's one room: each subscriber's channel of frames.
    let room: Arc<Room<Bytes>> = Arc::default();
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                // As every server in the suite: no Nagle delays.
                let _ = tcp.set_nodelay(true);
                tokio::spawn(connection(tcp, room.clone()));
            }
            // Out of descriptors, typically: back off a little.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// The upgrade, then the role the request path asks for.
async fn connection(mut tcp: TcpStream, room: Arc<Room<Bytes>>) -> io::Result<()> {
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
    let role = Role::from_path(request_path(&buf[..head_len]));
    tcp.write_all(response.as_bytes()).await?;
    // Frames sent right behind the request stay in the buffer.
    buf.drain(..head_len);
    // The broadcast roles are boxed so that an echo socket's task is no
    // larger than before they existed (scenario g counts its bytes).
    match role {
        Role::Echo => echo(tcp, buf).await,
        Role::Subscriber => Box::pin(subscribe(tcp, buf, &room)).await,
        Role::Publisher => Box::pin(publish(tcp, buf, &room)).await,
    }
}

/// The echo: one read, every complete frame's echo into one buffer, one
/// `write_all`.
async fn echo(mut tcp: TcpStream, mut buf: Vec<u8>) -> io::Result<()> {
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

/// A publisher: each data frame is encoded once and pushed to every
/// subscriber; pings get pongs, a close is echoed and ends the connection.
async fn publish(mut tcp: TcpStream, mut buf: Vec<u8>, room: &Room<Bytes>) -> io::Result<()> {
    let mut out = Vec::new();
    loop {
        let (consumed, closed) = each_frame(&mut buf, |first, payload| match first & 0x0f {
            0x9 => {
                push_frame(&mut out, 0x8A, payload);
                false
            }
            0xA => false,
            0x8 => {
                push_frame(&mut out, first, payload);
                true
            }
            _ => {
                room.publish(&server_frame(first, payload));
                false
            }
        });
        if !out.is_empty() {
            tcp.write_all(&out).await?;
            out.clear();
        }
        if closed || !read_more(&mut tcp, &mut buf, consumed).await? {
            return Ok(());
        }
    }
}

/// A subscriber: joins the room with its channel, which a writer task
/// empties into the socket; this task only reads, answering pings and the
/// close through the same channel, and leaves the room when the socket
/// ends. The writer ends once the channel is empty and every sender gone.
async fn subscribe(tcp: TcpStream, mut buf: Vec<u8>, room: &Room<Bytes>) -> io::Result<()> {
    let (mut reader, writer) = tcp.into_split();
    let (sender, frames) = mpsc::unbounded_channel();
    let id = room.join(sender.clone());
    tokio::spawn(write_frames(writer, frames));
    let read = async {
        loop {
            let (consumed, closed) = each_frame(&mut buf, |first, payload| match first & 0x0f {
                0x9 => {
                    let _ = sender.send(server_frame(0x8A, payload));
                    false
                }
                0x8 => {
                    let _ = sender.send(server_frame(first, payload));
                    true
                }
                // A subscriber sends nothing else; what it does send is ignored.
                _ => false,
            });
            if closed || !read_more(&mut reader, &mut buf, consumed).await? {
                return Ok(());
            }
        }
    };
    let result = read.await;
    room.leave(id);
    result
}

/// A subscriber's writer: waits for a frame, takes every other one already
/// queued (up to [`BATCH`]) and writes them all with vectored writes.
async fn write_frames(
    mut writer: OwnedWriteHalf,
    mut frames: UnboundedReceiver<Bytes>,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(frame) = frames.recv().await {
        batch.push(frame);
        while batch.len() < BATCH {
            match frames.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        write_all_vectored(&mut writer, &batch).await?;
        batch.clear();
    }
    Ok(())
}

/// Writes every frame of `frames` (at most [`BATCH`]), as few `writev`s as
/// the socket takes.
async fn write_all_vectored(writer: &mut OwnedWriteHalf, frames: &[Bytes]) -> io::Result<()> {
    let mut slices = [IoSlice::new(&[]); BATCH];
    for (slice, frame) in slices.iter_mut().zip(frames) {
        *slice = IoSlice::new(frame);
    }
    let mut unwritten = &mut slices[..frames.len().min(BATCH)];
    while !unwritten.is_empty() {
        let n = writer.write_vectored(unwritten).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut unwritten, n);
    }
    Ok(())
}

/// Unmasks every complete frame at the start of `buf` and hands it to
/// `frame` (first byte, payload) until `frame` returns `true`; returns the
/// bytes consumed and whether it stopped.
fn each_frame(buf: &mut [u8], mut frame: impl FnMut(u8, &[u8]) -> bool) -> (usize, bool) {
    let mut pos = 0;
    while let Some((header_len, mask, len)) = frame_head(&buf[pos..]) {
        let end = pos + header_len + len.min(MAX_FRAME);
        if len > MAX_FRAME || buf.len() < end {
            break;
        }
        let first = buf[pos];
        let payload = &mut buf[pos + header_len..end];
        unmask(payload, mask);
        pos = end;
        if frame(first, payload) {
            return (pos, true);
        }
    }
    (pos, false)
}

/// Drops the first `consumed` bytes of `buf` and reads more, with room for
/// the rest of a large frame; `false` once the peer has closed.
///
/// # Errors
///
/// A read error, or a frame over [`MAX_FRAME`].
async fn read_more(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    consumed: usize,
) -> io::Result<bool> {
    buf.drain(..consumed);
    let want = frame_head(buf).map_or(0, |(h, _, len)| h.saturating_add(len));
    if want > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    buf.reserve(want.max(READ_CHUNK).saturating_sub(buf.len()));
    Ok(reader.read_buf(buf).await? != 0)
}

/// An unmasked server frame with first byte `first`, in its own buffer.
fn server_frame(first: u8, payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    push_frame(&mut frame, first, payload);
    Bytes::from(frame)
}

/// The path of the request line (`GET /sub HTTP/1.1`), without a query.
fn request_path(head: &[u8]) -> &[u8] {
    let target = head.split(|&b| b == b' ').nth(1).unwrap_or_default();
    target.split(|&b| b == b'?').next().unwrap_or_default()
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

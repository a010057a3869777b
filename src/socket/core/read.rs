//! The read path: the adaptive read buffer, frames from it (or payload
//! read straight into the caller's buffer) through the engine into the
//! caller's buffer or a whole message, and the whole-message fast path.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use super::*;
use crate::error::Error;
use crate::protocol::{Incoming, ProtocolError, WholeFrame, header_len};
use crate::socket::Utf8Bytes;
use crate::socket::message::{CloseFrame, Message, MessageType, ReceiveResult, WebSocketState};
use crate::socket::spare;

/// The most one read asks for once reads keep filling the buffer.
pub(super) const MAX_READ_SIZE: usize = 64 * 1024;

/// How many short reads in a row halve the read size.
pub(super) const SHRINK_AFTER: u8 = 8;

/// Payload is read straight into the caller's buffer (saving a copy) only
/// when that read can be at least this large; smaller targets are served
/// from the read buffer, whose reads grow under load, because a system
/// call costs far more than copying a few KiB.
pub(super) const DIRECT_READ_MIN: usize = 32 * 1024;

/// A whole binary message at least this large that arrived in one read
/// is handed to `receive_message` as a slice of the read buffer instead of
/// a copy. The message then shares the buffer's allocation (at most
/// [`MAX_READ_SIZE`] beyond the frame) until it is dropped, so the share
/// is limited to messages for which the copy would cost the most.
pub(super) const SHARE_MIN: usize = 8 * 1024;

/// When the whole-message API reads a payload straight from the I/O, it
/// reserves at most this much at a time, so a frame header announcing a
/// large payload does not allocate before the bytes arrive.
pub(super) const MESSAGE_READ_CHUNK: usize = 256 * 1024;

/// A compressed whole message is inflated into its assembly buffer in
/// rounds of eight times the compressed input waiting, between these
/// bounds (then half of what it holds, so large messages take few
/// rounds), never past the message limit.
const INFLATE_MIN: usize = 1024;
const INFLATE_CHUNK: usize = 64 * 1024;

impl Core {
    /// Reads more bytes into the read buffer. When the input has run dry
    /// (the read would block), queued output (coalesced replies, pongs) is
    /// written.
    ///
    /// An idle socket holds no read buffer: with nothing buffered, it waits
    /// for readiness first (on TCP, without a buffer) and frees the buffer
    /// when a read finds nothing. Under load, reads that fill the buffer
    /// double the next read, up to [`MAX_READ_SIZE`], so large messages and
    /// pipelined frames take fewer system calls.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.poll_output_within_bound(cx))?;
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(self.finished_error()));
        };
        if !self.rbuf.has_allocation() {
            // No buffer: take this thread's spare, or, if there is none,
            // wait for input before allocating one. (With a buffer at hand
            // the read itself checks readiness first, no system call.)
            if let Some(spare) = spare::take_read_buffer() {
                self.rbuf.adopt(spare);
            }
            if !self.rbuf.has_allocation() {
                match io.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(self.abort_with(e.into()))),
                    Poll::Pending => {
                        self.try_write_control(cx)?;
                        return Poll::Pending;
                    }
                }
            }
        }
        // The rest of a frame whose header was read is known to be coming:
        // make room for it (up to a read's maximum), so it takes one read.
        let frame_rest = usize::try_from(self.conn.remaining())
            .unwrap_or(usize::MAX)
            .saturating_sub(self.rbuf.len())
            .min(MAX_READ_SIZE);
        // An empty buffer is refilled to the full read size (reclaiming its
        // space is free then); a partly consumed one is topped up only when
        // nearly full or too small for the frame's rest.
        let want = if self.rbuf.is_empty() {
            self.read_size
        } else {
            256
        };
        if self.rbuf.spare() < want.max(frame_rest) {
            self.rbuf.reserve(self.read_size.max(frame_rest));
        }
        let spare = self.rbuf.spare();
        match tokio_util::io::poll_read_buf(Pin::new(io), cx, self.rbuf.as_bytes_mut()) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(self.abort_with(Error::ConnectionReset))),
            Poll::Ready(Ok(n)) => {
                self.read_epoch = self.read_epoch.wrapping_add(1);
                self.conn.traffic().read(n);
                if n == spare {
                    self.read_size = (self.read_size * 2).min(MAX_READ_SIZE.max(self.rbuf_size));
                    self.small_reads = 0;
                } else if n < self.read_size / 4 {
                    self.small_reads += 1;
                    if self.small_reads >= SHRINK_AFTER {
                        self.read_size = (self.read_size / 2).max(self.rbuf_size);
                        self.small_reads = 0;
                    }
                } else {
                    self.small_reads = 0;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.abort_with(e.into()))),
            Poll::Pending => {
                if self.rbuf.is_empty() {
                    self.release_read_buffer();
                }
                // The input ran dry: now write what was coalesced.
                self.try_write_control(cx)?;
                Poll::Pending
            }
        }
    }

    /// Reading stops while more output than the send queue's bound waits
    /// for the peer, and resumes once the peer has read it all. A peer that
    /// sends but never reads is held back by TCP instead of making the
    /// server read (and the application queue replies) without end. While
    /// a send on another task writes a large frame, the reader waits for
    /// it: the writer wakes the reader once the queue is back within its
    /// bound (see [`Shared::poll_with`]).
    #[inline]
    fn poll_output_within_bound(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.output_within_bound() {
            return Poll::Ready(Ok(()));
        }
        self.poll_output_drained(cx)
    }

    #[cold]
    fn poll_output_drained(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if !self.conn.frame_in_progress()
            && let Poll::Ready(result) = self.poll_write_out(cx)
        {
            return Poll::Ready(result);
        }
        self.reader_gated = true;
        Poll::Pending
    }

    /// Whether the output waiting for the peer is within the send bound.
    #[inline]
    pub(super) fn output_within_bound(&self) -> bool {
        self.conn.queued() <= self.max_buffered
    }

    /// The socket is idle with nothing buffered: give the read buffer back.
    /// The read size learned under load is kept (it decays as reads come
    /// back small), so a busy socket does not relearn it every message.
    ///
    /// The buffer goes to this thread's spare (see [`spare`]) if that is
    /// empty and the buffer not oversized.
    pub(super) fn release_read_buffer(&mut self) {
        if let Some(buffer) = self.rbuf.take_if_empty() {
            spare::give_read_buffer(buffer, MAX_READ_SIZE.max(self.rbuf_size));
        }
    }

    /// Receives the next piece of data (or the peer's Close) into `target`.
    ///
    /// Returns as soon as some payload is available, like ASP.NET's
    /// `ReceiveAsync`; pings are answered and pongs consumed on the way.
    pub(crate) fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        mut target: Target<'_>,
    ) -> Poll<Result<ReceiveResult, Error>> {
        match self.state() {
            WebSocketState::Open | WebSocketState::CloseSent => {}
            WebSocketState::CloseReceived => return Poll::Ready(Err(Error::Closed)),
            WebSocketState::Closed | WebSocketState::Aborted => {
                return Poll::Ready(Err(self.finished_error()));
            }
        }
        if let Target::Slice(buf) = &target
            && buf.is_empty()
        {
            return Poll::Ready(Err(Error::InvalidArgument("receive buffer is empty")));
        }
        loop {
            if self.conn.can_inflate() {
                match self.inflate_into(&mut target) {
                    Ok(Some(result)) => return Poll::Ready(Ok(result)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            let remaining = self.conn.remaining();
            if remaining > 0 && self.conn.message_is_compressed() {
                // Compressed payload goes to the inflater, never straight
                // to the target.
                if self.rbuf.is_empty() {
                    ready!(self.poll_fill(cx))?;
                }
                let n = self
                    .rbuf
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                if let Err(e) = self
                    .conn
                    .compressed_payload(&mut self.rbuf.unread_mut()[..n])
                {
                    return Poll::Ready(Err(self.fail(e)));
                }
                self.rbuf.consume(n);
                continue;
            }
            if remaining > 0 {
                let text = self.conn.message_is_text() == Some(true);
                let message_type = if text {
                    MessageType::Text
                } else {
                    MessageType::Binary
                };
                if self.rbuf.is_empty() {
                    match ready!(self.poll_direct(cx, &mut target, remaining)) {
                        Ok(Some((count, done))) => {
                            return Poll::Ready(Ok(data_result(count, message_type, done)));
                        }
                        Ok(None) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                    if self.rbuf.is_empty() {
                        ready!(self.poll_fill(cx))?;
                    }
                }
                let mut n = self
                    .rbuf
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                if let Target::Slice(buf) = &target {
                    n = n.min(buf.len());
                }
                if let Target::Message { data, whole } = &mut target {
                    let whole_text = if data.is_empty() {
                        self.conn.whole_message(n)
                    } else {
                        None
                    };
                    if let Some(text) = whole_text {
                        **whole = Some(match self.take_whole_message(n, text) {
                            Ok(message) => message,
                            Err(e) => return Poll::Ready(Err(e)),
                        });
                        return Poll::Ready(Ok(data_result(n, message_type, true)));
                    }
                }
                let done = match self.conn.payload(&mut self.rbuf.unread_mut()[..n]) {
                    Ok(done) => done,
                    Err(e) => return Poll::Ready(Err(self.fail(e))),
                };
                let chunk = &self.rbuf.unread()[..n];
                match &mut target {
                    Target::Slice(buf) => buf[..n].copy_from_slice(chunk),
                    Target::Message { data, .. } => {
                        begin_large_message(data, remaining);
                        data.extend_from_slice(chunk);
                    }
                    Target::Discard => {}
                }
                self.rbuf.consume(n);
                return Poll::Ready(Ok(data_result(n, message_type, done)));
            }

            if self.rbuf.is_empty() {
                // Between messages, the usual wait: no header to look at.
                ready!(self.poll_fill(cx))?;
                continue;
            }
            let (incoming, used) = match self.conn.receive_header(self.rbuf.unread_mut()) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => {
                    ready!(self.poll_fill(cx))?;
                    continue;
                }
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            };
            self.rbuf.consume(used);
            match incoming {
                Incoming::Data {
                    text,
                    len: 0,
                    message_done: true,
                    ..
                } => {
                    let message_type = if text {
                        MessageType::Text
                    } else {
                        MessageType::Binary
                    };
                    return Poll::Ready(Ok(data_result(0, message_type, true)));
                }
                Incoming::Data { .. } => {}
                Incoming::Pong(payload) => {
                    // The whole-message API hands pongs over; the buffer
                    // API (ASP.NET's) never shows them.
                    if let Target::Message { whole, .. } = &mut target {
                        **whole = Some(Message::Pong(Bytes::copy_from_slice(payload.as_slice())));
                        return Poll::Ready(Ok(data_result(0, MessageType::Binary, false)));
                    }
                }
                Incoming::Ping(payload) => {
                    // Its pong is queued: write it if nothing else is
                    // writing. Then, as for a pong, the whole-message API
                    // hands the ping over too.
                    self.try_write_control(cx)?;
                    if let Target::Message { whole, .. } = &mut target {
                        **whole = Some(Message::Ping(Bytes::copy_from_slice(payload.as_slice())));
                        return Poll::Ready(Ok(data_result(0, MessageType::Binary, false)));
                    }
                }
                Incoming::Close {
                    status,
                    description,
                } => return Poll::Ready(Ok(self.on_close(status, description))),
            }
        }
    }

    /// Inflates the compressed message into `target`: `Some` result once
    /// there is something to report (inflated bytes, or the message's
    /// end), `None` when the inflater needs more payload. A whole message
    /// is inflated in chunks that never pass the message limit by more than
    /// one byte, so a small bomb cannot make it allocate what it claims.
    #[cold]
    fn inflate_into(&mut self, target: &mut Target<'_>) -> Result<Option<ReceiveResult>, Error> {
        let message_type = if self.conn.message_is_text() == Some(true) {
            MessageType::Text
        } else {
            MessageType::Binary
        };
        let (count, done) = match target {
            Target::Slice(buf) => match self.conn.inflate(buf) {
                Ok(inflated) => inflated,
                Err(e) => return Err(self.fail(e)),
            },
            Target::Message { data, .. } => {
                let mut count = 0;
                loop {
                    // Room for what the pending input likely inflates to
                    // (text and JSON: 2-10 times), growing with the
                    // message, within the limit.
                    let guess = self.conn.inflate_pending().saturating_mul(8);
                    let room = guess
                        .clamp(INFLATE_MIN, INFLATE_CHUNK)
                        .max(data.len() / 2)
                        .min(usize::try_from(self.conn.inflate_allowance()).unwrap_or(usize::MAX))
                        + 1;
                    let start = data.len();
                    data.resize(start + room, 0);
                    let inflated = self.conn.inflate(&mut data[start..]);
                    let (n, done) = match inflated {
                        Ok(inflated) => inflated,
                        Err(e) => {
                            data.truncate(start);
                            return Err(self.fail(e));
                        }
                    };
                    data.truncate(start + n);
                    count += n;
                    if done || n < room {
                        break (count, done);
                    }
                }
            }
            Target::Discard => {
                let mut scratch = [0u8; 4096];
                let mut count = 0;
                loop {
                    match self.conn.inflate(&mut scratch) {
                        Ok((n, done)) => {
                            count += n;
                            if done || n < scratch.len() {
                                break (count, done);
                            }
                        }
                        Err(e) => return Err(self.fail(e)),
                    }
                }
            }
        };
        Ok((count > 0 || done).then(|| data_result(count, message_type, done)))
    }

    /// Takes the single-frame message [`Decoder::whole_frame`] found at the
    /// front of the read buffer (see [`take_unmasked_message`]).
    ///
    /// [`take_unmasked_message`]: Self::take_unmasked_message
    pub(super) fn take_whole_frame(&mut self, frame: WholeFrame) -> Result<Message, Error> {
        frame.unmask(self.rbuf.unread_mut());
        self.conn.traffic().message_in();
        self.take_unmasked_message(frame.header_len, frame.len, frame.text)
    }

    /// Takes a message whose whole payload is the first `n` buffered bytes
    /// (see [`Decoder::whole_message`]) without the assembly buffer: text is
    /// validated in one pass while it is copied into its `String`; a large
    /// binary message is handed over as a slice of the read buffer, a
    /// small one copied once into its `Bytes`.
    pub(super) fn take_whole_message(&mut self, n: usize, text: bool) -> Result<Message, Error> {
        let payload = &mut self.rbuf.unread_mut()[..n];
        if text {
            self.conn.payload_whole_text(payload);
        } else if let Err(e) = self.conn.payload(payload) {
            return Err(self.fail(e));
        }
        self.take_unmasked_message(0, n, text)
    }

    /// Takes the `n` buffered bytes after the first `skip` (a header),
    /// already unmasked, as a whole message, and consumes both: text
    /// validated in one pass while copied into its `String` (1007 if it is
    /// not UTF-8), large binary as a slice of the read buffer, small binary
    /// copied once.
    // Always inlined: it is the tail of the receive fast path, and a call
    // of its own measured slower (BENCHMARKS.md, "Figures that explain the
    // code").
    #[inline(always)]
    pub(super) fn take_unmasked_message(
        &mut self,
        skip: usize,
        n: usize,
        text: bool,
    ) -> Result<Message, Error> {
        let payload = &self.rbuf.unread()[skip..skip + n];
        let message = if text {
            match simdutf8::basic::from_utf8(payload) {
                Ok(valid) => Message::Text(Utf8Bytes::from(valid)),
                Err(_) => return Err(self.fail(ProtocolError::InvalidUtf8)),
            }
        } else if n >= SHARE_MIN {
            self.rbuf.consume(skip);
            return Ok(Message::Binary(self.rbuf.split_to(n).freeze()));
        } else {
            Message::Binary(Bytes::copy_from_slice(payload))
        };
        self.rbuf.consume(skip + n);
        Ok(message)
    }

    /// Reads payload straight from the I/O into the target when that saves
    /// a copy: the read buffer is empty and the target can take a read's
    /// worth. Returns `Ok(None)` when the read buffer should be used.
    pub(super) fn poll_direct(
        &mut self,
        cx: &mut Context<'_>,
        target: &mut Target<'_>,
        remaining: u64,
    ) -> Poll<Result<Option<(usize, bool)>, Error>> {
        let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
        if matches!(target, Target::Discard) {
            return Poll::Ready(Ok(None));
        }
        // Direct reads are large and rare: write coalesced output first.
        self.try_write_control(cx)?;
        ready!(self.poll_output_within_bound(cx))?;
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(self.finished_error()));
        };
        let (filled, count) = match target {
            Target::Slice(buf) => {
                let want = remaining.min(buf.len());
                if want < DIRECT_READ_MIN.max(self.read_size) {
                    return Poll::Ready(Ok(None));
                }
                let mut read_buf = ReadBuf::new(&mut buf[..want]);
                match ready!(Pin::new(io).poll_read(cx, &mut read_buf)) {
                    Ok(()) => {}
                    Err(e) => return Poll::Ready(Err(self.abort_with(e.into()))),
                }
                let n = read_buf.filled().len();
                (&mut buf[..n], n)
            }
            Target::Message { data: message, .. } => {
                if remaining < DIRECT_READ_MIN.max(self.read_size) {
                    return Poll::Ready(Ok(None));
                }
                begin_large_message(message, remaining as u64);
                let start = message.len();
                message.reserve(remaining.min(MESSAGE_READ_CHUNK));
                let mut limited = (&mut **message).limit(remaining);
                match ready!(tokio_util::io::poll_read_buf(
                    Pin::new(io),
                    cx,
                    &mut limited
                )) {
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Err(self.abort_with(e.into()))),
                }
                let n = message.len() - start;
                (&mut message[start..], n)
            }
            Target::Discard => return Poll::Ready(Ok(None)),
        };
        if count == 0 {
            return Poll::Ready(Err(self.abort_with(Error::ConnectionReset)));
        }
        self.read_epoch = self.read_epoch.wrapping_add(1);
        self.conn.traffic().read(count);
        match self.conn.payload(filled) {
            Ok(done) => Poll::Ready(Ok(Some((count, done)))),
            Err(e) => Poll::Ready(Err(self.fail(e))),
        }
    }

    /// Receives the next whole message, assembling it in `self.message`.
    pub(crate) fn poll_receive_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Message, Error>> {
        loop {
            if matches!(
                self.state(),
                WebSocketState::Open | WebSocketState::CloseSent
            ) {
                // The common case first: a whole single-frame message at
                // the front of the read buffer, or nothing buffered between
                // messages (wait for input, then look again).
                if let Some(frame) = self.conn.whole_frame(self.rbuf.unread()) {
                    return Poll::Ready(self.take_whole_frame(frame));
                }
                if self.rbuf.is_empty() && self.conn.remaining() == 0 && !self.conn.can_inflate() {
                    ready!(self.poll_fill(cx))?;
                    continue;
                }
            }
            let mut message = std::mem::take(&mut self.message);
            let mut whole = None;
            let result = self.poll_receive(
                cx,
                Target::Message {
                    data: &mut message,
                    whole: &mut whole,
                },
            );
            self.message = message;
            if let Some(whole) = whole {
                return Poll::Ready(Ok(whole));
            }
            let result = ready!(result)?;
            match result.message_type {
                MessageType::Close => {
                    let frame = result.close_status.map(|code| CloseFrame {
                        code,
                        reason: result
                            .close_description
                            .map(Utf8Bytes::from)
                            .unwrap_or_default(),
                    });
                    return Poll::Ready(Ok(Message::Close(frame)));
                }
                _ if !result.end_of_message => continue,
                MessageType::Text => {
                    let data = std::mem::take(&mut self.message);
                    // Validated as it arrived; this cannot fail.
                    let text =
                        text_message(&data).map_err(|_| self.fail(ProtocolError::InvalidUtf8))?;
                    // Copied out: the next large message can use it.
                    spare::give_message_buffer(data);
                    return Poll::Ready(Ok(Message::Text(text)));
                }
                MessageType::Binary => {
                    let data = std::mem::take(&mut self.message).freeze();
                    return Poll::Ready(Ok(Message::Binary(data)));
                }
            }
        }
    }
}

/// Starts assembling a large message whose first frame carries
/// `frame_len` bytes of payload, none of it in `data` yet: in this
/// thread's spare message buffer if there is one (no fresh allocation, no
/// pages to fault in), placed so that payload read straight into it lands
/// half a page away from where it sits in the sender's page (see
/// [`spare::place`]).
fn begin_large_message(data: &mut BytesMut, frame_len: u64) {
    if data.capacity() == 0 && frame_len >= spare::MESSAGE_SPARE_MIN as u64 {
        if let Some(buffer) = spare::take_message_buffer() {
            *data = buffer;
        }
        // Room for the frame, but no more up front than a spare already
        // holds or one read chunk: the header's claim is not yet data. (A
        // message that outgrows this is reallocated as it arrives, and the
        // new allocation's page offset is the allocator's: glibc keeps it
        // for large ones, which it remaps.)
        let room = usize::try_from(frame_len)
            .unwrap_or(usize::MAX)
            .min(data.capacity().max(MESSAGE_READ_CHUNK));
        // The sender's page holds the frame's (masked) header first.
        spare::place(
            data,
            room,
            spare::READ_PAGE_OFFSET + header_len(frame_len, true),
        );
    }
}

/// A text message assembled from pieces as a `String`.
///
/// The pieces were validated as they arrived (to fail fast with 1007), so
/// this cannot fail; but `String::from_utf8` would check the bytes again
/// with std's scalar validator, which dominated the cost of echoing text
/// (BENCHMARKS.md). simdutf8's check plus the copy into the `String` costs
/// less than std's check alone, without `unsafe`.
fn text_message(data: &[u8]) -> Result<Utf8Bytes, simdutf8::basic::Utf8Error> {
    simdutf8::basic::from_utf8(data).map(Utf8Bytes::from)
}

fn data_result(count: usize, message_type: MessageType, end_of_message: bool) -> ReceiveResult {
    ReceiveResult {
        count,
        message_type,
        end_of_message,
        close_status: None,
        close_description: None,
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Waker};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::*;
    use crate::{Message, WebSocket, WebSocketOptions};

    /// A closed-loop client as a scripted stream: it sends its next frame
    /// only once the echo of the previous one has been written, and hands
    /// out what is in flight in reads as large as the socket asks for,
    /// counting them.
    struct ClosedLoopPeer {
        frame: Vec<u8>,
        echo_len: usize,
        frames_left: usize,
        in_flight: Vec<u8>,
        read_pos: usize,
        echoed: usize,
        reads: Arc<AtomicUsize>,
        reader: Option<Waker>,
    }

    /// A socket over a [`ClosedLoopPeer`] that sends `payload` as one
    /// masked binary frame `messages` times, each after the echo of the
    /// last, counting its reads in `reads`. Also returns the frame's header
    /// length.
    fn closed_loop_socket(
        payload: &[u8],
        messages: usize,
        reads: Arc<AtomicUsize>,
    ) -> (WebSocket, usize) {
        let mask = [9u8, 8, 7, 6];
        let (mut frame, echo_header_len) = match payload.len() {
            0..=125 => (vec![0x82, 0x80 | payload.len() as u8], 2),
            126..=0xFFFF => {
                let mut frame = vec![0x82, 0x80 | 126];
                frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                (frame, 4)
            }
            _ => {
                let mut frame = vec![0x82, 0x80 | 127];
                frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
                (frame, 10)
            }
        };
        frame.extend_from_slice(&mask);
        let header_len = frame.len();
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let mut peer = ClosedLoopPeer {
            frame,
            echo_len: echo_header_len + payload.len(),
            frames_left: messages,
            in_flight: Vec::new(),
            read_pos: 0,
            echoed: 0,
            reads,
            reader: None,
        };
        peer.send_next();
        let options = WebSocketOptions::default().keep_alive_interval(None);
        (
            WebSocket::from_raw_socket(peer, options).unwrap(),
            header_len,
        )
    }

    impl ClosedLoopPeer {
        fn send_next(&mut self) {
            if self.frames_left > 0 {
                self.frames_left -= 1;
                self.in_flight = self.frame.clone();
                self.read_pos = 0;
                if let Some(waker) = self.reader.take() {
                    waker.wake();
                }
            }
        }
    }

    impl AsyncRead for ClosedLoopPeer {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let rest = &self.in_flight[self.read_pos..];
            if rest.is_empty() {
                self.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.read_pos += n;
            self.reads.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for ClosedLoopPeer {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.echoed += buf.len();
            if self.echoed >= self.echo_len {
                assert_eq!(self.echoed, self.echo_len, "one echo frame per message");
                self.echoed = 0;
                self.send_next();
            }
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    proptest::proptest! {
        #[test]
        fn text_message_agrees_with_std(bytes in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::prelude::any::<u8>(),
                // Bias towards multi-byte UTF-8 and its boundaries.
                proptest::sample::select(vec![0xc3u8, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xed, 0xa0, 0xbf, 0xc0, 0xf5]),
            ],
            0..300,
        )) {
            let ours = text_message(&bytes).ok().map(|text| text.as_str().to_owned());
            let std = String::from_utf8(bytes).ok();
            proptest::prop_assert_eq!(ours, std);
        }
    }

    /// Large payload is read into its message half a page away from where
    /// it sits in a sender's page whose frame starts the page (see
    /// `spare::place`), from the first message (a fresh buffer) on (the
    /// recycled one). The message fits the first buffer's one read chunk:
    /// a message that outgrows its buffer is reallocated, and where its
    /// rest lands is then the allocator's choice.
    #[tokio::test]
    async fn large_messages_land_half_a_page_from_the_senders_offset() {
        const MESSAGES: usize = 4;
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let (mut socket, header_len) =
            closed_loop_socket(&payload, MESSAGES, Arc::new(AtomicUsize::new(0)));
        for i in 0..MESSAGES {
            let message = socket.receive_message().await.unwrap();
            let Message::Binary(data) = &message else {
                panic!("{message:?}")
            };
            assert!(data[..] == payload[..], "message {i}");
            assert_eq!(
                data.as_ptr() as usize % spare::PAGE,
                spare::READ_PAGE_OFFSET + header_len,
                "message {i}"
            );
            socket.send(message).await.unwrap();
        }
    }

    /// A 16 KiB frame is one full read plus an 8-byte tail while the read
    /// size is 16 KiB; the read size must settle above it (one read per
    /// message) rather than swing between 16 and 32 KiB (two per message).
    #[tokio::test]
    async fn closed_loop_16k_echo_settles_at_one_read_per_message() {
        const MESSAGES: usize = 50;
        let payload: Vec<u8> = (0..16_384u32).map(|i| (i * 13) as u8).collect();
        let reads = Arc::new(AtomicUsize::new(0));
        let (mut socket, _) = closed_loop_socket(&payload, MESSAGES, reads.clone());
        for _ in 0..MESSAGES {
            let message = socket.receive_message().await.unwrap();
            assert_eq!(message, Message::Binary(payload.clone().into()));
            socket.send(message).await.unwrap();
        }
        let reads = reads.load(Ordering::Relaxed);
        // Two reads for the first message (the read size grows 4 → 32 KiB
        // while the frame arrives), then one each.
        assert!(
            reads <= MESSAGES + 2,
            "{reads} reads for {MESSAGES} messages"
        );
    }
}

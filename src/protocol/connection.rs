//! The server side of one WebSocket connection, without I/O: bytes in,
//! events and bytes out.
//!
//! [`Connection`] owns everything the protocol decides: the receive state
//! machine ([`Decoder`]), the close handshake (one [`WebSocketState`]), the
//! control frames waiting to go out (one pong slot, a keep-alive ping),
//! the type of the outgoing fragmented message, and the output queue the
//! frames are encoded into. The socket reads into a buffer and hands the
//! bytes here; it writes what [`output`](Connection::output) holds and
//! reports how much went out with [`written`](Connection::written).

use std::sync::Arc;

use super::close::CloseCode;
use super::compression::{Compression, CompressionConfig};
use super::decoder::{ControlFrame, Decoder, Header, Limits, WholeFrame};
use super::error::ProtocolError;
use super::frame::{ControlPayload, OpCode, put_compressed_frame, put_frame, put_header};
use super::output::Output;
use super::prepared::SharedFrames;
use crate::stats::Traffic;

/// The state of a [`WebSocket`](crate::WebSocket) (ASP.NET
/// `WebSocketState`).
///
/// ```text
///            close_output / close            peer's Close
///   Open ─────────────────────────▶ CloseSent ─────────────▶ Closed
///     │                                                        ▲
///     │ peer's Close                close_output / close       │
///     └──────────────▶ CloseReceived ──────────────────────────┘
///
///   any state ── abort, protocol error, I/O error, timeout ──▶ Aborted
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebSocketState {
    /// The handshake is done; both sides may send.
    Open,
    /// This side sent its Close frame and waits for the peer's.
    CloseSent,
    /// The peer's Close frame arrived; this side has not answered yet.
    CloseReceived,
    /// Both Close frames were exchanged; the connection is closed.
    Closed,
    /// The connection was dropped without a complete close handshake.
    Aborted,
}

impl WebSocketState {
    /// Whether the socket is finished (`Closed` or `Aborted`): nothing
    /// more can be sent or received.
    pub fn is_finished(self) -> bool {
        matches!(self, WebSocketState::Closed | WebSocketState::Aborted)
    }
}

/// What the bytes at the front of the read buffer hold, between frames
/// (see [`Connection::receive_header`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A data frame's header: feed its `len` bytes of payload to
    /// [`Connection::payload`] (to [`Connection::compressed_payload`] when
    /// `compressed`, and take the message from
    /// [`Connection::inflate`]). A zero-length frame is already complete:
    /// `message_done` says whether it ended the message (never for a
    /// compressed one, which ends when inflated).
    Data {
        text: bool,
        len: u64,
        message_done: bool,
        compressed: bool,
    },
    /// A ping, with its payload: its pong is queued (while our Close is
    /// not).
    Ping(ControlPayload),
    /// A pong, with its payload.
    Pong(ControlPayload),
    /// The peer's Close: its code and reason, if any.
    Close {
        status: Option<CloseCode>,
        description: Option<String>,
    },
}

/// Why a data frame cannot be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendRejected {
    /// The connection is closed or aborted.
    Finished,
    /// Our Close frame was sent: nothing may follow it.
    AfterClose,
    /// A different type than the open fragmented message's.
    TypeChanged,
    /// A control frame that cannot go now: too long, or a data frame is
    /// half written.
    NotNow,
}

/// How [`Connection::queue_data`] queued a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Header and payload are in the output.
    Whole,
    /// Only the header is: the caller writes the payload after the output
    /// ([`written`](Connection::written) for the queued bytes), then calls
    /// [`end_streamed_frame`](Connection::end_streamed_frame) — or, if it
    /// gives up, [`queue_rest`](Connection::queue_rest).
    Header,
}

/// The sans-IO server side of one WebSocket connection.
pub(crate) struct Connection {
    decoder: Decoder,
    /// Where the close handshake stands: the one record of it (read
    /// several times per message, so a plain field).
    state: WebSocketState,
    /// Our Close waits to be put in the output (behind a streamed frame
    /// or not yet written), with this payload; once it is in the output,
    /// nothing may follow it.
    our_close: Option<ControlPayload>,
    /// The status the peer's Close carried, or the one we answered with.
    close_status: Option<CloseCode>,
    close_description: Option<String>,
    /// Encoded frames waiting to be written.
    out: Output,
    /// A data frame's payload is being written from a caller's buffer
    /// behind its header in `out`: nothing else may enter the output until
    /// it is done.
    frame_in_progress: bool,
    /// The opcode of the outgoing fragmented message, if one is open.
    sending: Option<OpCode>,
    /// The latest unanswered ping's payload (RFC 6455 §5.5.3 allows
    /// answering only the most recent one).
    pending_pong: Option<ControlPayload>,
    /// A keep-alive ping waits to go out.
    pending_ping: bool,
    /// permessage-deflate, once negotiated (boxed: most sockets have none).
    compression: Option<Box<Compression>>,
    max_message_size: u64,
    /// Whether the peer's Close came before ours; `None` while neither
    /// came.
    peer_closed_first: Option<bool>,
    /// Messages and bytes both ways, read by the layer's snapshots.
    traffic: Arc<Traffic>,
}

impl Connection {
    #[cfg(test)]
    pub(crate) fn new(limits: Limits) -> Connection {
        Connection::with_traffic(limits, Arc::default())
    }

    /// A connection counting its traffic in `traffic`.
    pub(crate) fn with_traffic(limits: Limits, traffic: Arc<Traffic>) -> Connection {
        Connection {
            decoder: Decoder::new(limits),
            state: WebSocketState::Open,
            our_close: None,
            close_status: None,
            close_description: None,
            out: Output::default(),
            frame_in_progress: false,
            sending: None,
            pending_pong: None,
            pending_ping: false,
            compression: None,
            max_message_size: limits.max_message_size,
            peer_closed_first: None,
            traffic,
        }
    }

    /// The connection's traffic counters.
    #[inline]
    pub(crate) fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Whether the peer's Close came before ours; `None` if neither came.
    pub(crate) fn peer_closed_first(&self) -> Option<bool> {
        self.peer_closed_first
    }

    /// permessage-deflate was negotiated: RSV1 marks compressed messages
    /// both ways.
    pub(crate) fn enable_compression(&mut self, config: CompressionConfig) {
        self.decoder.allow_compression();
        self.compression = Some(Box::new(Compression::new(config, self.max_message_size)));
    }

    #[inline]
    pub(crate) fn state(&self) -> WebSocketState {
        self.state
    }

    pub(crate) fn close_status(&self) -> Option<CloseCode> {
        self.close_status
    }

    pub(crate) fn close_description(&self) -> Option<&str> {
        self.close_description.as_deref()
    }

    /// Whether our Close is queued or sent.
    #[inline]
    fn close_started(&self) -> bool {
        matches!(
            self.state,
            WebSocketState::CloseSent | WebSocketState::Closed
        )
    }

    // ----- receiving -----

    /// Payload bytes left in the current data frame (0 between frames).
    #[inline]
    pub(crate) fn remaining(&self) -> u64 {
        self.decoder.remaining()
    }

    /// Whether the current message is text (`None` between messages).
    #[inline]
    pub(crate) fn message_is_text(&self) -> Option<bool> {
        match self.decoder.message_is_text() {
            Some(text) => Some(text),
            None => self.compression.as_ref().and_then(|c| c.receiving_text()),
        }
    }

    /// Whether the current message is compressed: its payload goes to
    /// [`compressed_payload`](Self::compressed_payload), and it comes out of
    /// [`inflate`](Self::inflate).
    #[inline]
    pub(crate) fn message_is_compressed(&self) -> bool {
        self.decoder.message_is_compressed()
    }

    /// Whether [`inflate`](Self::inflate) can give more of the compressed
    /// message (or end it) without more payload.
    #[inline]
    pub(crate) fn can_inflate(&self) -> bool {
        self.compression.as_ref().is_some_and(|c| c.can_inflate())
    }

    /// Unmasks the next `chunk` of a compressed message's payload (at most
    /// [`remaining`](Self::remaining)) and keeps it for
    /// [`inflate`](Self::inflate).
    pub(crate) fn compressed_payload(&mut self, chunk: &mut [u8]) -> Result<(), ProtocolError> {
        let last = self.decoder.payload(chunk)?;
        if let Some(compression) = self.compression.as_mut() {
            compression.input(chunk, last);
        }
        Ok(())
    }

    /// Inflates the compressed message into `out`: the bytes written and
    /// whether the message ended. The message limit applies to the
    /// inflated size: past it, this fails having written at most one byte
    /// beyond it.
    ///
    /// # Errors
    ///
    /// As [`Compression::inflate`].
    pub(crate) fn inflate(&mut self, out: &mut [u8]) -> Result<(usize, bool), ProtocolError> {
        match self.compression.as_mut() {
            Some(compression) => compression.inflate(out),
            None => Ok((0, false)),
        }
    }

    /// Compressed bytes of the message waiting to be inflated.
    pub(crate) fn inflate_pending(&self) -> usize {
        self.compression.as_ref().map_or(0, |c| c.pending())
    }

    /// How many more inflated bytes the compressed message may have.
    pub(crate) fn inflate_allowance(&self) -> u64 {
        self.compression.as_ref().map_or(0, |c| c.allowance())
    }

    /// See [`Decoder::whole_frame`].
    #[inline]
    pub(crate) fn whole_frame(&self, buf: &[u8]) -> Option<WholeFrame> {
        self.decoder.whole_frame(buf)
    }

    /// See [`Decoder::whole_message`].
    #[inline]
    pub(crate) fn whole_message(&self, len: usize) -> Option<bool> {
        self.decoder.whole_message(len)
    }

    /// See [`Decoder::payload`].
    #[inline]
    pub(crate) fn payload(&mut self, chunk: &mut [u8]) -> Result<bool, ProtocolError> {
        self.decoder.payload(chunk)
    }

    /// See [`Decoder::payload_whole_text`].
    #[inline]
    pub(crate) fn payload_whole_text(&mut self, chunk: &mut [u8]) {
        self.decoder.payload_whole_text(chunk);
    }

    /// Decodes the frame at the front of `buf`, between frames, and acts on
    /// a control frame: a ping's pong is queued, a Close moves the close
    /// handshake on. Returns what it was and how many bytes it took;
    /// `Ok(None)` if `buf` holds only part of the header (or of a control
    /// frame), which then changes nothing.
    pub(crate) fn receive_header(
        &mut self,
        buf: &mut [u8],
    ) -> Result<Option<(Incoming, usize)>, ProtocolError> {
        let Some((header, header_len)) = self.decoder.decode_header(buf)? else {
            return Ok(None);
        };
        let (opcode, mask, len) = match header {
            Header::Data {
                text,
                len,
                message_done,
                last,
            } => {
                if last {
                    self.traffic.message_in();
                }
                let compressed = self.decoder.message_is_compressed()
                    || (message_done && self.compression.as_ref().is_some_and(|c| c.receiving()));
                let data = if compressed {
                    self.compressed_header(text, len, message_done)
                } else {
                    Incoming::Data {
                        text,
                        len,
                        message_done,
                        compressed: false,
                    }
                };
                return Ok(Some((data, header_len)));
            }
            Header::Control { opcode, mask, len } => (opcode, mask, len),
        };
        let Some(payload) = buf.get_mut(header_len..header_len + len) else {
            return Ok(None);
        };
        let incoming = match self.decoder.control(opcode, mask, payload)? {
            ControlFrame::Ping(data) => {
                let payload = ControlPayload::new(data);
                if !self.close_started() {
                    self.pending_pong = Some(payload);
                }
                Incoming::Ping(payload)
            }
            ControlFrame::Pong(data) => Incoming::Pong(ControlPayload::new(data)),
            ControlFrame::Close(close) => {
                let (status, description) = match close {
                    Some((code, reason)) => (Some(code), Some(reason.to_owned())),
                    None => (None, None),
                };
                self.close_received(status, description.as_deref());
                Incoming::Close {
                    status,
                    description,
                }
            }
        };
        Ok(Some((incoming, header_len + len)))
    }

    /// A compressed message's frame header: its first starts the inflating;
    /// an empty last frame ends its input.
    #[cold]
    fn compressed_header(&mut self, text: bool, len: u64, message_done: bool) -> Incoming {
        if let Some(compression) = self.compression.as_mut() {
            if !compression.receiving() {
                compression.begin_message(text);
            }
            if len == 0 && message_done {
                compression.input(&[], true);
            }
        }
        Incoming::Data {
            text,
            len,
            message_done: false,
            compressed: true,
        }
    }

    /// The peer's Close arrived.
    fn close_received(&mut self, status: Option<CloseCode>, description: Option<&str>) {
        if self.close_status.is_none() {
            self.close_status = status;
            self.close_description = description.map(str::to_owned);
        }
        if self.peer_closed_first.is_none() {
            self.peer_closed_first = Some(self.state == WebSocketState::Open);
        }
        self.state = match self.state {
            WebSocketState::Open => WebSocketState::CloseReceived,
            WebSocketState::CloseSent => WebSocketState::Closed,
            other => other,
        };
    }

    // ----- sending -----

    /// Whether this side may still send: not once the connection is
    /// finished, nor once our Close is queued.
    #[inline]
    fn can_send(&self) -> Result<(), SendRejected> {
        if self.state().is_finished() {
            Err(SendRejected::Finished)
        } else if self.close_started() {
            Err(SendRejected::AfterClose)
        } else {
            Ok(())
        }
    }

    /// Queues a data frame of `payload`, `text` or binary, ending the
    /// message if `fin`: its header, and its payload too if `copy` (the
    /// caller streams an uncopied payload itself, see [`Queued::Header`]).
    /// Control frames waiting so far go before it.
    pub(crate) fn queue_data(
        &mut self,
        payload: &[u8],
        text: bool,
        fin: bool,
        copy: bool,
    ) -> Result<Queued, SendRejected> {
        self.can_send()?;
        let kind = if text { OpCode::Text } else { OpCode::Binary };
        let opcode = match self.sending {
            Some(open) if open != kind => return Err(SendRejected::TypeChanged),
            Some(_) => OpCode::Continuation,
            None => kind,
        };
        let first = self.sending.is_none();
        self.sending = if fin { None } else { Some(kind) };
        if fin {
            self.traffic.message_out();
        }
        self.stage_control();
        if let Some(compression) = self.compression.as_mut()
            && compression.compresses(first, fin, payload.len())
        {
            let data = compression.deflate(payload, first, fin);
            put_compressed_frame(self.out.tail(), fin, first, opcode, data);
            compression.release_scratch();
            return Ok(Queued::Whole);
        }
        if copy {
            put_frame(self.out.tail(), fin, opcode, payload);
            Ok(Queued::Whole)
        } else {
            put_header(self.out.tail(), fin, opcode, payload.len());
            self.frame_in_progress = true;
            Ok(Queued::Header)
        }
    }

    /// An application's ping (or unsolicited pong) with `payload` (at most
    /// 125 bytes): into the output like a data frame, behind what is
    /// queued. Nothing may interrupt a half-written frame, and nothing
    /// follows our Close.
    pub(crate) fn queue_app_control(
        &mut self,
        ping: bool,
        payload: &[u8],
    ) -> Result<(), SendRejected> {
        self.can_send()?;
        if self.frame_in_progress || payload.len() > 125 {
            return Err(SendRejected::NotNow);
        }
        self.stage_control();
        let opcode = if ping { OpCode::Ping } else { OpCode::Pong };
        put_frame(self.out.tail(), true, opcode, payload);
        Ok(())
    }

    /// Queues a prepared message, behind what is queued: its shared frame
    /// (uncompressed, or compressed for this connection's variant), no
    /// copy; with context takeover, compressed here, with this
    /// connection's window. Nothing may interrupt a half-written frame or
    /// an open fragmented message ([`SendRejected::NotNow`]).
    pub(crate) fn queue_prepared(&mut self, frames: &SharedFrames) -> Result<(), SendRejected> {
        self.can_send()?;
        if self.mid_message() {
            return Err(SendRejected::NotNow);
        }
        self.traffic.message_out();
        self.stage_control();
        let payload = frames.payload();
        let frame = match self.compression.as_mut() {
            Some(compression) if compression.compresses(true, true, payload.len()) => {
                match compression.shared_variant() {
                    Some(variant) => frames.compressed(variant),
                    None => {
                        let opcode = if frames.is_text() {
                            OpCode::Text
                        } else {
                            OpCode::Binary
                        };
                        let data = compression.deflate(payload, true, true);
                        put_compressed_frame(self.out.tail(), true, true, opcode, data);
                        compression.release_scratch();
                        return Ok(());
                    }
                }
            }
            _ => frames.plain(),
        };
        self.out.push_shared(frame);
        Ok(())
    }

    /// Whether the output can take one more shared frame (see
    /// [`MAX_CHUNKS`](super::output::MAX_CHUNKS)).
    #[inline]
    pub(crate) fn has_chunk_room(&self) -> bool {
        self.out.has_chunk_room()
    }

    /// The streamed payload of a [`Queued::Header`] frame is written.
    pub(crate) fn end_streamed_frame(&mut self) {
        self.frame_in_progress = false;
    }

    /// A streamed frame's writer gave up with `rest` unwritten: queue it,
    /// so the stream stays whole.
    pub(crate) fn queue_rest(&mut self, rest: &[u8]) {
        if self.frame_in_progress {
            self.out.tail().extend_from_slice(rest);
            self.frame_in_progress = false;
        }
    }

    /// Whether a message is half sent: a streamed frame is being written,
    /// or a fragmented message is open. Nothing but control frames may go
    /// out before it ends.
    #[inline]
    pub(crate) fn mid_message(&self) -> bool {
        self.frame_in_progress || self.sending.is_some()
    }

    /// Whether a streamed frame's payload is being written.
    #[inline]
    pub(crate) fn frame_in_progress(&self) -> bool {
        self.frame_in_progress
    }

    /// Queues our Close. Returns `Ok(false)` if it was already queued or
    /// sent, `Err` on an aborted connection.
    pub(crate) fn start_close(
        &mut self,
        status: Option<CloseCode>,
        reason: &str,
    ) -> Result<bool, SendRejected> {
        match self.state {
            WebSocketState::Aborted => return Err(SendRejected::Finished),
            WebSocketState::Open => {
                self.peer_closed_first.get_or_insert(false);
                self.state = WebSocketState::CloseSent;
            }
            WebSocketState::CloseReceived => {
                // Our answer: the handshake is complete.
                self.close_status = self.close_status.or(status);
                self.state = WebSocketState::Closed;
            }
            WebSocketState::CloseSent | WebSocketState::Closed => return Ok(false),
        }
        self.our_close = Some(ControlPayload::close(status, reason));
        Ok(true)
    }

    /// The peer broke the protocol (RFC 6455 §7.1.7): queue a Close with
    /// the violation's code unless ours was already queued or a frame is
    /// half written, and end the connection [`Aborted`]. Returns the output
    /// to write before dropping the connection (ending with that Close),
    /// if there is a Close to send.
    ///
    /// [`Aborted`]: WebSocketState::Aborted
    pub(crate) fn fail(&mut self, violation: ProtocolError) -> Option<Output> {
        let output = if !self.close_started() && !self.frame_in_progress {
            self.our_close = Some(ControlPayload::close(
                Some(violation.close_code()),
                violation.reason(),
            ));
            // Nothing but what waited before it goes out with it.
            self.peer_closed_first.get_or_insert(false);
            self.state = WebSocketState::CloseSent;
            Some(self.take_output())
        } else {
            None
        };
        self.abort();
        output
    }

    /// A keep-alive ping, unless our Close is queued.
    pub(crate) fn queue_ping(&mut self) {
        if self.state() == WebSocketState::Open {
            self.pending_ping = true;
        }
    }

    /// Ends the connection without (completing) the handshake: the output
    /// is dropped. A closed connection stays `Closed`.
    pub(crate) fn abort(&mut self) {
        self.out = Output::default();
        self.frame_in_progress = false;
        if !self.state().is_finished() {
            self.state = WebSocketState::Aborted;
        }
    }

    // ----- output -----

    /// Moves waiting control frames into the output, unless a streamed
    /// frame is being written.
    ///
    /// A pong or ping waits while earlier output is still queued (the
    /// write finds the peer's window full): the pending slot keeps only
    /// the latest ping's answer (RFC 6455 §5.5.3), so a peer that floods
    /// pings and never reads cannot grow the output. Our Close takes
    /// everything still waiting with it, and goes last: nothing follows
    /// it.
    #[inline]
    pub(crate) fn stage_control(&mut self) {
        // Checked here, inline, before any `take`: moving a
        // `ControlPayload` out copies its 125 bytes, and this runs on
        // every write.
        if !self.frame_in_progress && self.control_waiting() {
            self.stage_waiting_control();
        }
    }

    #[inline]
    fn control_waiting(&self) -> bool {
        self.pending_pong.is_some() || self.pending_ping || self.our_close.is_some()
    }

    #[cold]
    fn stage_waiting_control(&mut self) {
        if !self.out.is_empty() && self.our_close.is_none() {
            return;
        }
        if let Some(pong) = self.pending_pong.take() {
            // Before our Close, never after it.
            if !self.close_started() || self.our_close.is_some() {
                put_frame(self.out.tail(), true, OpCode::Pong, pong.as_slice());
            }
        }
        if std::mem::take(&mut self.pending_ping) && !self.close_started() {
            put_frame(self.out.tail(), true, OpCode::Ping, &[]);
        }
        if let Some(close) = self.our_close.take() {
            put_frame(self.out.tail(), true, OpCode::Close, close.as_slice());
        }
    }

    /// The encoded frames waiting to be written.
    #[inline]
    pub(crate) fn output(&self) -> &Output {
        &self.out
    }

    /// Whether anything waits to be written: output or control frames.
    #[inline]
    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty() || self.control_waiting()
    }

    /// The first `n` bytes of the output were written; control frames
    /// that waited behind a queue now written out are staged.
    #[inline]
    pub(crate) fn written(&mut self, n: usize) {
        self.out.advance(n);
        if self.out.is_empty() {
            self.stage_control();
        }
    }

    /// Takes the whole output, waiting control frames staged, for a last
    /// write.
    pub(crate) fn take_output(&mut self) -> Output {
        self.stage_control();
        self.out.take()
    }

    /// Bytes in the output queue.
    pub(crate) fn queued(&self) -> usize {
        self.out.len()
    }

    /// Bytes accepted but not yet handed to the transport: the output plus
    /// the control frames waiting to be staged.
    pub(crate) fn buffered_amount(&self) -> usize {
        let frame =
            |payload: Option<&ControlPayload>| payload.map_or(0, |p| 2 + p.as_slice().len());
        let close = self.our_close.as_ref();
        self.out.len()
            + frame(self.pending_pong.as_ref())
            + frame(close)
            + if self.pending_ping { 2 } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decoder::tests::{frame, limits};
    use bytes::BytesMut;

    fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        frame(fin, 0, opcode, payload)
    }

    /// The unmasked server frames in `bytes`: (opcode, payload).
    fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let (header, n) = crate::protocol::frame::FrameHeader::parse(bytes)
                .unwrap()
                .expect("whole frames");
            assert_eq!(header.mask, None);
            let len = header.payload_len as usize;
            frames.push((header.opcode.as_u8(), bytes[n..n + len].to_vec()));
            bytes = &bytes[n + len..];
        }
        frames
    }

    /// Feeds `wire` through [`Connection::receive_header`] and
    /// [`Connection::payload`] in pieces of `step` bytes, as a socket
    /// would; returns what arrived (messages, pings, pongs, the Close) or
    /// the first violation.
    fn receive_all(
        conn: &mut Connection,
        wire: &[u8],
        step: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, ProtocolError> {
        let mut events = Vec::new();
        let mut buf = Vec::new();
        let mut message = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                if conn.can_inflate() {
                    let text = conn.message_is_text() == Some(true);
                    let mut out = [0u8; 1000];
                    let (n, done) = conn.inflate(&mut out)?;
                    message.extend_from_slice(&out[..n]);
                    if done {
                        let kind = if text { "text" } else { "binary" };
                        events.push((kind.to_owned(), std::mem::take(&mut message)));
                    }
                    if n > 0 || done {
                        continue;
                    }
                }
                let remaining = conn.remaining();
                if remaining > 0 && conn.message_is_compressed() {
                    if buf.is_empty() {
                        break;
                    }
                    let n = buf.len().min(remaining as usize);
                    conn.compressed_payload(&mut buf[..n])?;
                    buf.drain(..n);
                    continue;
                }
                if remaining > 0 {
                    if buf.is_empty() {
                        break;
                    }
                    let n = buf.len().min(remaining as usize);
                    let text = conn.message_is_text() == Some(true);
                    let done = conn.payload(&mut buf[..n])?;
                    message.extend_from_slice(&buf[..n]);
                    buf.drain(..n);
                    if done {
                        let kind = if text { "text" } else { "binary" };
                        events.push((kind.to_owned(), std::mem::take(&mut message)));
                    }
                    continue;
                }
                let Some((incoming, used)) = conn.receive_header(&mut buf)? else {
                    break;
                };
                buf.drain(..used);
                match incoming {
                    Incoming::Data {
                        text,
                        message_done: true,
                        ..
                    } => {
                        let kind = if text { "text" } else { "binary" };
                        events.push((kind.to_owned(), std::mem::take(&mut message)));
                    }
                    Incoming::Data { .. } => {}
                    Incoming::Ping(_) => events.push(("ping".to_owned(), Vec::new())),
                    Incoming::Pong(_) => events.push(("pong".to_owned(), Vec::new())),
                    Incoming::Close {
                        status,
                        description,
                    } => {
                        let code = status.map_or(0, CloseCode::as_u16);
                        let mut payload = code.to_be_bytes().to_vec();
                        payload.extend(description.unwrap_or_default().into_bytes());
                        events.push(("close".to_owned(), payload));
                        return Ok(events);
                    }
                }
            }
        }
        Ok(events)
    }

    #[test]
    fn a_ping_is_answered_with_its_payload() {
        let mut conn = Connection::new(limits());
        let mut wire = client_frame(true, OpCode::Ping, b"hello");
        assert_eq!(
            conn.receive_header(&mut wire).unwrap(),
            Some((Incoming::Ping(ControlPayload::new(b"hello")), wire.len()))
        );
        conn.stage_control();
        assert_eq!(
            server_frames(&conn.output().to_vec()),
            [(0xA, b"hello".to_vec())]
        );
    }

    /// While earlier output is unwritten, pings replace each other in the
    /// one pong slot; once the output drains, only the latest is answered.
    #[test]
    fn pings_while_the_output_is_blocked_leave_one_pong() {
        let mut conn = Connection::new(limits());
        conn.queue_data(b"reply", false, true, true).unwrap();
        for i in 0..1000u32 {
            let mut wire = client_frame(true, OpCode::Ping, &i.to_be_bytes());
            conn.receive_header(&mut wire).unwrap().unwrap();
            conn.stage_control();
        }
        assert_eq!(conn.queued(), 2 + 5, "only the reply is in the output");
        assert_eq!(conn.buffered_amount(), 2 + 5 + 2 + 4);
        let n = conn.queued();
        conn.written(n);
        assert_eq!(
            server_frames(&conn.output().to_vec()),
            [(0xA, 999u32.to_be_bytes().to_vec())]
        );
    }

    #[test]
    fn the_close_handshake_started_by_the_peer() {
        let mut conn = Connection::new(limits());
        let mut wire = client_frame(true, OpCode::Close, &[0x03, 0xE8, b'o', b'k']);
        let (incoming, _) = conn.receive_header(&mut wire).unwrap().unwrap();
        assert_eq!(
            incoming,
            Incoming::Close {
                status: Some(CloseCode::NORMAL),
                description: Some("ok".to_owned())
            }
        );
        assert_eq!(conn.state(), WebSocketState::CloseReceived);
        assert_eq!(conn.start_close(Some(CloseCode::NORMAL), ""), Ok(true));
        assert_eq!(conn.state(), WebSocketState::Closed);
        assert_eq!(conn.start_close(None, ""), Ok(false), "once");
        let out = conn.take_output().to_vec();
        assert_eq!(server_frames(&out.to_vec()), [(0x8, vec![0x03, 0xE8])]);
    }

    #[test]
    fn the_close_handshake_started_by_us() {
        let mut conn = Connection::new(limits());
        assert_eq!(
            conn.start_close(Some(CloseCode::GOING_AWAY), "bye"),
            Ok(true)
        );
        assert_eq!(conn.state(), WebSocketState::CloseSent);
        assert_eq!(
            conn.queue_data(b"x", false, true, true),
            Err(SendRejected::AfterClose)
        );
        // A ping that arrives now gets no pong: our Close goes last.
        let mut ping = client_frame(true, OpCode::Ping, b"p");
        conn.receive_header(&mut ping).unwrap().unwrap();
        conn.stage_control();
        assert_eq!(
            server_frames(&conn.output().to_vec()),
            [(0x8, b"\x03\xe9bye".to_vec())]
        );
        let mut close = client_frame(true, OpCode::Close, &[0x03, 0xE9]);
        conn.receive_header(&mut close).unwrap().unwrap();
        assert_eq!(conn.state(), WebSocketState::Closed);
    }

    #[test]
    fn a_pong_queued_before_our_close_goes_before_it() {
        let mut conn = Connection::new(limits());
        let mut ping = client_frame(true, OpCode::Ping, b"p");
        conn.receive_header(&mut ping).unwrap().unwrap();
        conn.start_close(None, "").unwrap();
        assert_eq!(
            server_frames(&conn.take_output().to_vec()),
            [(0xA, b"p".to_vec()), (0x8, vec![])]
        );
    }

    #[test]
    fn a_violation_sends_its_close_code_and_aborts() {
        let mut conn = Connection::new(limits());
        let mut wire = client_frame(true, OpCode::Binary, b"x");
        wire[0] |= 0x40; // RSV1 without an extension
        let violation = conn.receive_header(&mut wire).unwrap_err();
        let out = conn.fail(violation).expect("a Close to send");
        assert_eq!(conn.state(), WebSocketState::Aborted);
        let frames = server_frames(&out.to_vec());
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 0x8);
        assert_eq!(frames[0].1[..2], 1002u16.to_be_bytes());
    }

    #[test]
    fn a_streamed_frame_holds_control_frames_back_until_it_ends() {
        let mut conn = Connection::new(limits());
        let payload = [7u8; 300];
        assert_eq!(
            conn.queue_data(&payload, false, true, false),
            Ok(Queued::Header)
        );
        let mut ping = client_frame(true, OpCode::Ping, b"p");
        conn.receive_header(&mut ping).unwrap().unwrap();
        conn.stage_control();
        assert_eq!(
            conn.output().to_vec(),
            [0x82, 126, 1, 44],
            "the header alone"
        );
        // Half the payload written, then the writer gives up.
        let n = conn.queued();
        conn.written(n);
        conn.queue_rest(&payload[150..]);
        assert!(!conn.frame_in_progress());
        assert_eq!(conn.queued(), 150);
        conn.written(150);
        assert_eq!(
            server_frames(&conn.output().to_vec()),
            [(0xA, b"p".to_vec())]
        );
    }

    #[test]
    fn fragmented_sends_keep_their_type() {
        let mut conn = Connection::new(limits());
        conn.queue_data(b"a", true, false, true).unwrap();
        assert_eq!(
            conn.queue_data(b"b", false, true, true),
            Err(SendRejected::TypeChanged)
        );
        conn.queue_data(b"b", true, true, true).unwrap();
        conn.queue_data(b"c", false, true, true).unwrap();
        assert_eq!(
            server_frames(&conn.output().to_vec()),
            [
                (0x1, b"a".to_vec()),
                (0x0, b"b".to_vec()),
                (0x2, b"c".to_vec())
            ]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Whatever the byte stream, the events (or the violation's close
        /// code) do not depend on how it is cut into pieces, and the pongs
        /// answer the pings in order.
        #[test]
        fn events_do_not_depend_on_how_the_stream_is_cut(
            frames in proptest::collection::vec(
                (
                    proptest::sample::select(vec![0x0u8, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3]),
                    proptest::bool::weighted(0.8),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..140),
                ),
                0..12,
            ),
            step in 1usize..9,
        ) {
            let mut wire = Vec::new();
            for (opcode, fin, payload) in &frames {
                let mut frame = client_frame(*fin, OpCode::Binary, payload);
                frame[0] = (u8::from(*fin) << 7) | opcode;
                wire.extend(frame);
            }
            let mut whole_conn = Connection::new(limits());
            let whole = receive_all(&mut whole_conn, &wire, wire.len().max(1));
            let mut cut_conn = Connection::new(limits());
            let cut = receive_all(&mut cut_conn, &wire, step);
            match (&whole, &cut) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a.close_code(), b.close_code()),
                (a, b) => proptest::prop_assert!(false, "whole {:?} vs cut {:?}", a, b),
            }
        }
    }

    // ----- permessage-deflate -----

    use crate::protocol::deflate::Deflater;

    fn compressing(config: CompressionConfig, max_message_size: u64) -> Connection {
        let mut conn = Connection::new(Limits {
            max_message_size,
            max_frame_size: max_message_size,
        });
        conn.enable_compression(config);
        conn
    }

    fn config(takeover: bool) -> CompressionConfig {
        CompressionConfig {
            server_window_bits: 15,
            client_window_bits: 15,
            server_no_context_takeover: !takeover,
            client_no_context_takeover: !takeover,
            level: 6,
            threshold: 16,
        }
    }

    /// A client's compressed message as frames of at most `frame_len`
    /// compressed bytes, RSV1 on the first.
    fn compressed_message(
        deflater: &mut Deflater,
        opcode: OpCode,
        payload: &[u8],
        frame_len: usize,
    ) -> Vec<u8> {
        let mut data = BytesMut::new();
        deflater.compress(payload, true, &mut data);
        let pieces: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(frame_len).collect()
        };
        let mut wire = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let fin = i + 1 == pieces.len();
            let (rsv, op) = if i == 0 {
                (0b100, opcode)
            } else {
                (0, OpCode::Continuation)
            };
            wire.extend(frame(fin, rsv, op, piece));
        }
        wire
    }

    #[test]
    fn compressed_messages_arrive_inflated_whole_and_in_pieces() {
        for takeover in [true, false] {
            let mut deflater = Deflater::new(6, 15, !takeover);
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (i, len) in [0usize, 1, 125, 5000, 70_000].into_iter().enumerate() {
                let text = "κόσμε ".repeat(len / 11 + 1)[..].to_owned();
                let text = &text[..text.char_indices().nth(len / 2).map_or(text.len(), |c| c.0)];
                let binary: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                wire.extend(compressed_message(
                    &mut deflater,
                    OpCode::Text,
                    text.as_bytes(),
                    3 + i * 50,
                ));
                // An uncompressed message in between, and a ping inside.
                wire.extend(client_frame(true, OpCode::Binary, b"plain"));
                wire.extend(compressed_message(
                    &mut deflater,
                    OpCode::Binary,
                    &binary,
                    7000,
                ));
                expected.push(("text".to_owned(), text.as_bytes().to_vec()));
                expected.push(("binary".to_owned(), b"plain".to_vec()));
                expected.push(("binary".to_owned(), binary));
            }
            for step in [1, 7, 4096, wire.len()] {
                let mut conn = compressing(config(takeover), 1 << 20);
                assert_eq!(
                    receive_all(&mut conn, &wire, step).as_deref(),
                    Ok(&expected[..]),
                    "takeover {takeover}, step {step}"
                );
            }
        }
    }

    #[test]
    fn rsv1_belongs_on_the_first_frame_of_a_negotiated_message_only() {
        let mut deflater = Deflater::new(6, 15, true);
        let mut data = BytesMut::new();
        deflater.compress(b"hello hello hello", true, &mut data);
        let cases: [(&str, Vec<u8>, bool); 4] = [
            (
                "on a continuation",
                {
                    let mut wire = frame(false, 0b100, OpCode::Text, &data[..2]);
                    wire.extend(frame(true, 0b100, OpCode::Continuation, &data[2..]));
                    wire
                },
                true,
            ),
            ("on a ping", frame(true, 0b100, OpCode::Ping, b""), true),
            (
                "on a close",
                frame(true, 0b100, OpCode::Close, &[0x03, 0xe8]),
                true,
            ),
            (
                "not negotiated",
                frame(true, 0b100, OpCode::Text, &data),
                false,
            ),
        ];
        for (name, wire, negotiated) in cases {
            let mut conn = if negotiated {
                compressing(config(false), 1 << 20)
            } else {
                Connection::new(limits())
            };
            assert_eq!(
                receive_all(&mut conn, &wire, wire.len()),
                Err(ProtocolError::ReservedBits),
                "RSV1 {name}"
            );
        }
    }

    #[test]
    fn the_message_limit_holds_for_the_inflated_size() {
        // 16 MiB of zeros in about 16 KiB.
        let zeros = vec![0u8; 16 << 20];
        let mut deflater = Deflater::new(9, 15, true);
        let wire = compressed_message(&mut deflater, OpCode::Binary, &zeros, 1 << 20);
        assert!(wire.len() < 32 * 1024);
        let mut conn = compressing(config(false), 1 << 20);
        let mut buf = wire.clone();
        let (_, used) = conn.receive_header(&mut buf).unwrap().unwrap();
        let rest = &mut buf[used..];
        conn.compressed_payload(rest).unwrap();
        let mut written = 0;
        let mut out = vec![0u8; 64 * 1024];
        let error = loop {
            match conn.inflate(&mut out) {
                Ok((n, done)) => {
                    assert!(!done, "a 16 MiB message passed a 1 MiB limit");
                    written += n;
                }
                Err(error) => break error,
            }
        };
        assert_eq!(error, ProtocolError::MessageTooLarge);
        assert_eq!(error.close_code(), CloseCode::MESSAGE_TOO_BIG);
        // Never more than one byte past the limit was inflated.
        assert!(written <= 1 << 20, "{written}");
    }

    #[test]
    fn bad_compressed_data_and_bad_inflated_text_fail() {
        let mut conn = compressing(config(false), 1 << 20);
        let wire = frame(true, 0b100, OpCode::Binary, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            receive_all(&mut conn, &wire, wire.len()),
            Err(ProtocolError::InvalidCompressedData)
        );
        let mut deflater = Deflater::new(6, 15, true);
        let mut conn = compressing(config(false), 1 << 20);
        let wire = compressed_message(&mut deflater, OpCode::Text, b"ok \xff\xfe not utf-8", 1000);
        assert_eq!(
            receive_all(&mut conn, &wire, 5),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    /// What the server sends, inflated back: (first frame had RSV1,
    /// opcode of the first frame, the message).
    fn inflate_server_message(
        wire: &[u8],
        takeover_inflater: &mut crate::protocol::deflate::Inflater,
    ) -> (bool, u8, Vec<u8>) {
        let mut rest = wire;
        let mut first = None;
        let mut data = Vec::new();
        loop {
            let (header, n) = crate::protocol::frame::FrameHeader::parse(rest)
                .unwrap()
                .unwrap();
            let len = header.payload_len as usize;
            first.get_or_insert((header.rsv == 0b100, header.opcode.as_u8()));
            data.extend_from_slice(&rest[n..n + len]);
            rest = &rest[n + len..];
            if header.fin {
                break;
            }
        }
        let (compressed, opcode) = first.unwrap();
        if !compressed {
            return (false, opcode, data);
        }
        data.extend_from_slice(&crate::protocol::deflate::TAIL);
        let mut out = vec![0u8; 1 << 20];
        let (consumed, produced) = takeover_inflater.inflate(&data, &mut out).unwrap();
        assert_eq!(consumed, data.len());
        out.truncate(produced);
        (true, opcode, out)
    }

    /// A prepared message goes into every output as the same bytes: the
    /// plain frame without compression or under the threshold, one
    /// compressed frame per variant without context takeover, and a
    /// connection with context takeover compresses it with its own window.
    #[test]
    fn prepared_frames_are_shared_per_variant() {
        let payload = b"to the whole room ".repeat(50);
        let frames = SharedFrames::new(&payload, true);
        let small = SharedFrames::new(b"hi", true);
        let mut plain = Connection::new(limits());
        let mut a = compressing(config(false), 1 << 20);
        let mut b = compressing(config(false), 1 << 20);
        let mut narrow = compressing(
            CompressionConfig {
                server_window_bits: 10,
                ..config(false)
            },
            1 << 20,
        );
        let mut takeover = compressing(config(true), 1 << 20);
        for conn in [&mut plain, &mut a, &mut b, &mut narrow, &mut takeover] {
            conn.queue_prepared(&frames).unwrap();
            conn.queue_prepared(&small).unwrap();
        }
        let first_piece = |conn: &Connection| conn.output().pieces().next().unwrap().as_ptr();
        assert_eq!(first_piece(&plain), frames.plain().as_ptr(), "no copy");
        assert_eq!(first_piece(&a), first_piece(&b), "one compressed frame");
        assert_ne!(first_piece(&a), first_piece(&narrow), "another variant");
        assert_eq!(frames.variants(), 2);
        assert_ne!(
            first_piece(&takeover),
            first_piece(&a),
            "compressed in place, with its own window"
        );
        assert_eq!(small.variants(), 0, "under the threshold: never compressed");

        let mut inflater = crate::protocol::deflate::Inflater::new(15, false);
        for (conn, bits) in [(&a, 15), (&narrow, 10), (&takeover, 15)] {
            let wire = conn.output().to_vec();
            let mut inflater = crate::protocol::deflate::Inflater::new(bits, true);
            let (compressed, opcode, data) = inflate_server_message(&wire, &mut inflater);
            assert!(compressed && opcode == 0x1 && data == payload);
        }
        let wire = plain.output().to_vec();
        assert_eq!(
            inflate_server_message(&wire, &mut inflater),
            (false, 0x1, payload.clone())
        );
    }

    /// A prepared message keeps its place among the connection's own
    /// frames, and never goes into an open fragmented message.
    #[test]
    fn prepared_frames_keep_their_place_and_wait_for_a_message_to_end() {
        let mut conn = Connection::new(limits());
        let frames = SharedFrames::new(b"shared", false);
        conn.queue_data(b"one", true, true, true).unwrap();
        conn.queue_prepared(&frames).unwrap();
        conn.queue_app_control(true, b"p").unwrap();
        conn.queue_data(b"frag", true, false, true).unwrap();
        assert_eq!(conn.queue_prepared(&frames), Err(SendRejected::NotNow));
        conn.queue_data(b"ment", true, true, true).unwrap();
        conn.queue_prepared(&frames).unwrap();
        assert_eq!(
            server_frames(&conn.output().to_vec()),
            [
                (0x1, b"one".to_vec()),
                (0x2, b"shared".to_vec()),
                (0x9, b"p".to_vec()),
                (0x1, b"frag".to_vec()),
                (0x0, b"ment".to_vec()),
                (0x2, b"shared".to_vec()),
            ]
        );
        conn.start_close(Some(CloseCode::NORMAL), "").unwrap();
        assert_eq!(conn.queue_prepared(&frames), Err(SendRejected::AfterClose));
    }

    #[test]
    fn sent_messages_are_compressed_from_the_threshold_and_fragments_always() {
        let mut conn = compressing(config(true), 1 << 20);
        let mut inflater = crate::protocol::deflate::Inflater::new(15, false);
        let long = "a fairly repetitive message, ".repeat(20);
        // Under the threshold: plain.
        conn.queue_data(b"short", true, true, true).unwrap();
        assert_eq!(
            inflate_server_message(&conn.take_output().to_vec(), &mut inflater),
            (false, 0x1, b"short".to_vec())
        );
        for _ in 0..2 {
            assert_eq!(
                conn.queue_data(long.as_bytes(), true, true, false),
                Ok(Queued::Whole)
            );
            let wire = conn.take_output().to_vec();
            assert!(wire.len() < long.len() / 2, "{} bytes", wire.len());
            assert_eq!(
                inflate_server_message(&wire, &mut inflater),
                (true, 0x1, long.as_bytes().to_vec())
            );
        }
        // A fragmented message: RSV1 on its first frame only.
        conn.queue_data(b"ab", false, false, true).unwrap();
        conn.queue_data(b"", false, false, true).unwrap();
        conn.queue_data(b"cd", false, true, true).unwrap();
        let wire = conn.take_output().to_vec();
        let mut rest = &wire[..];
        let mut rsv = Vec::new();
        while !rest.is_empty() {
            let (header, n) = crate::protocol::frame::FrameHeader::parse(rest)
                .unwrap()
                .unwrap();
            rsv.push(header.rsv);
            rest = &rest[n + header.payload_len as usize..];
        }
        assert_eq!(rsv, [0b100, 0, 0]);
        assert_eq!(
            inflate_server_message(&wire, &mut inflater),
            (true, 0x2, b"abcd".to_vec())
        );
    }

    #[test]
    fn invalid_text_just_within_the_limit_is_1007_even_when_the_limit_passes_in_the_same_round() {
        // Invalid UTF-8 at byte 4,050 of a 4,096-byte limit: the round of
        // inflating that reaches it also passes the limit. The first
        // violation in the message's order is the one reported.
        let mut text = vec![b'a'; 6000];
        text[4050] = 0xff;
        let mut deflater = Deflater::new(6, 15, true);
        let wire = compressed_message(&mut deflater, OpCode::Text, &text, 1 << 20);
        for step in [1, 100, wire.len()] {
            let mut conn = compressing(config(false), 4096);
            let result = receive_all(&mut conn, &wire, step);
            assert_eq!(result, Err(ProtocolError::InvalidUtf8), "step {step}");
        }
    }

    /// A message for the compression properties: text or binary, its
    /// payload drawn from a few symbols (so it compresses and its
    /// back-references cross frames) or any chars and bytes.
    fn arbitrary_message() -> impl proptest::strategy::Strategy<Value = (bool, Vec<u8>)> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(
                proptest::sample::select(vec!['a', 'b', 'é', '€', '🦀']),
                0..3000
            )
            .prop_map(|chars| (true, chars.into_iter().collect::<String>().into_bytes())),
            proptest::collection::vec(any::<char>(), 0..300)
                .prop_map(|chars| (true, chars.into_iter().collect::<String>().into_bytes())),
            proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 2, 255]), 0..3000)
                .prop_map(|bytes| (false, bytes)),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(|bytes| (false, bytes)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Messages compressed as a client would (with or without context
        /// takeover), cut into frames of any size, some sent uncompressed
        /// and some with a ping after them, arrive as they were sent
        /// whatever the reads' sizes.
        #[test]
        fn compressed_messages_arrive_as_sent(
            messages in proptest::collection::vec(
                (arbitrary_message(), 1usize..600, proptest::bool::weighted(0.8), proptest::bool::weighted(0.2)),
                1..8,
            ),
            takeover in proptest::bool::ANY,
            step in 1usize..2000,
        ) {
            let mut deflater = Deflater::new(6, 15, !takeover);
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for ((text, payload), frame_len, compressed, ping) in &messages {
                let opcode = if *text { OpCode::Text } else { OpCode::Binary };
                if *compressed {
                    wire.extend(compressed_message(&mut deflater, opcode, payload, *frame_len));
                } else {
                    wire.extend(client_frame(true, opcode, payload));
                }
                let kind = if *text { "text" } else { "binary" };
                expected.push((kind.to_owned(), payload.clone()));
                if *ping {
                    wire.extend(client_frame(true, OpCode::Ping, b"p"));
                    expected.push(("ping".to_owned(), Vec::new()));
                }
            }
            let mut conn = compressing(config(takeover), 1 << 20);
            let received = receive_all(&mut conn, &wire, step);
            proptest::prop_assert_eq!(received.as_deref(), Ok(&expected[..]));
        }

        /// Hostile compressed streams (RSV1 anywhere, DEFLATE data that is
        /// garbage or a valid message's, cut frames, a 4 KiB message
        /// limit): no panic, and the messages or the violation's close
        /// code do not depend on how the stream is cut.
        #[test]
        fn hostile_compressed_streams_do_not_depend_on_how_they_are_cut(
            frames in proptest::collection::vec(
                (
                    proptest::sample::select(vec![0x0u8, 0x1, 0x2, 0x8, 0x9]),
                    proptest::bool::weighted(0.7),
                    proptest::bool::weighted(0.6),
                    proptest::option::weighted(0.5, arbitrary_message()),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                ),
                0..10,
            ),
            takeover in proptest::bool::ANY,
            step in 1usize..64,
        ) {
            let mut deflater = Deflater::new(6, 15, !takeover);
            let mut wire = Vec::new();
            for (opcode, fin, rsv1, message, garbage) in &frames {
                // A valid message's DEFLATE data, or bytes of any kind.
                let payload = match message {
                    Some((_, plain)) => {
                        let mut data = BytesMut::new();
                        deflater.compress(plain, true, &mut data);
                        data.to_vec()
                    }
                    None => garbage.clone(),
                };
                let mut bytes = frame(*fin, if *rsv1 { 0b100 } else { 0 }, OpCode::Binary, &payload);
                bytes[0] = (bytes[0] & 0xf0) | opcode;
                wire.extend(bytes);
            }
            let mut whole_conn = compressing(config(takeover), 4096);
            let whole = receive_all(&mut whole_conn, &wire, wire.len().max(1));
            let mut cut_conn = compressing(config(takeover), 4096);
            let cut = receive_all(&mut cut_conn, &wire, step);
            match (&whole, &cut) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a.close_code(), b.close_code()),
                (a, b) => proptest::prop_assert!(false, "whole {:?} vs cut {:?}", a, b),
            }
        }
    }
}

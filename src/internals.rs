//! Engine internals for the fuzz targets and benchmarks in this repository.
//!
//! Enabled by the `internals` feature. **Not a stable API**: it exists so
//! `fuzz/` and `bench/` can drive the sans-IO engine directly, and may change
//! in any release.

use crate::protocol::{self, ControlFrame, Header, Limits, ProtocolError};

/// XORs `buf` with `mask` from mask byte `phase`; returns the next phase.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], phase: usize) -> usize {
    protocol::mask::apply_mask(buf, mask, phase)
}

/// The byte-at-a-time reference for [`apply_mask`].
pub fn apply_mask_reference(buf: &mut [u8], mask: [u8; 4], phase: usize) -> usize {
    protocol::mask::apply_mask_reference(buf, mask, phase)
}

/// Incremental, fail-fast UTF-8 validation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8Validator(protocol::utf8::Utf8Validator);

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece; `false` once the input cannot be UTF-8.
    pub fn feed(&mut self, piece: &[u8]) -> bool {
        self.0.feed(piece).is_ok()
    }

    /// Ends the message; `false` if it ended inside a character.
    pub fn finish(&mut self) -> bool {
        self.0.finish().is_ok()
    }
}

/// A parsed frame header: `(fin, rsv, opcode, mask, payload_len)` and the
/// header's length.
pub type ParsedHeader = ((bool, u8, u8, Option<[u8; 4]>, u64), usize);

/// Parses a frame header; `Ok(None)` if `buf` holds only part of one.
///
/// # Errors
///
/// A reserved opcode or an invalid 64-bit length.
pub fn parse_header(buf: &[u8]) -> Result<Option<ParsedHeader>, ProtocolError> {
    Ok(protocol::frame::FrameHeader::parse(buf)?
        .map(|(h, n)| ((h.fin, h.rsv, h.opcode.as_u8(), h.mask, h.payload_len), n)))
}

/// Encodes an unmasked server frame header; returns its length.
pub fn encode_header(out: &mut [u8; 14], fin: bool, opcode: u8, payload_len: u64) -> usize {
    let opcode = protocol::OpCode::try_from(opcode).unwrap_or(protocol::OpCode::Binary);
    protocol::frame::encode_header(out, fin, 0, opcode, None, payload_len)
}

/// What [`decode_stream`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete data message: text flag and payload.
    Message(bool, Vec<u8>),
    /// A ping's payload.
    Ping(Vec<u8>),
    /// A pong's payload.
    Pong(Vec<u8>),
    /// A close frame: code and reason, if any.
    Close(Option<(u16, String)>),
}

/// Runs the receive state machine over a byte stream delivered in the
/// given pieces, the way the socket does: buffer, take a whole
/// single-frame message in one look when one is buffered (the fast path),
/// otherwise decode headers, unmask and validate payload as it arrives.
/// Stops at the first Close.
///
/// Fed the same stream whole and in small pieces, the two runs take the
/// fast path for different frames, so comparing them checks the fast path
/// against the general one (the `frame_decoder` fuzz target does).
///
/// # Errors
///
/// The first protocol violation.
pub fn decode_stream(
    pieces: &[&[u8]],
    max_message_size: u64,
    max_frame_size: u64,
) -> Result<Vec<Event>, ProtocolError> {
    let mut decoder = protocol::Decoder::new(Limits {
        max_message_size,
        max_frame_size,
    });
    let mut events = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut message = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            if let Some(frame) = decoder.whole_frame(&buf) {
                let payload = frame.unmask(&mut buf).to_vec();
                if frame.text && simdutf8::basic::from_utf8(&payload).is_err() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                buf.drain(..frame.header_len + frame.len);
                events.push(Event::Message(frame.text, payload));
                continue;
            }
            let remaining = decoder.remaining();
            if remaining > 0 {
                if buf.is_empty() {
                    break;
                }
                let n = buf
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let text = decoder.message_is_text() == Some(true);
                let done = decoder.payload(&mut buf[..n])?;
                message.extend_from_slice(&buf[..n]);
                buf.drain(..n);
                if done {
                    events.push(Event::Message(text, std::mem::take(&mut message)));
                }
                continue;
            }
            let Some((header, header_len)) = decoder.decode_header(&buf)? else {
                break;
            };
            match header {
                Header::Data {
                    text, message_done, ..
                } => {
                    buf.drain(..header_len);
                    if message_done {
                        events.push(Event::Message(text, std::mem::take(&mut message)));
                    }
                }
                Header::Control { opcode, mask, len } => {
                    if buf.len() < header_len + len {
                        break;
                    }
                    let mut payload: Vec<u8> = buf[header_len..header_len + len].to_vec();
                    buf.drain(..header_len + len);
                    match decoder.control(opcode, mask, &mut payload)? {
                        ControlFrame::Ping(p) => events.push(Event::Ping(p.to_vec())),
                        ControlFrame::Pong(p) => events.push(Event::Pong(p.to_vec())),
                        ControlFrame::Close(close) => {
                            events.push(Event::Close(
                                close.map(|(code, reason)| (code.as_u16(), reason.to_owned())),
                            ));
                            return Ok(events);
                        }
                    }
                }
            }
        }
    }
    Ok(events)
}

//! The receive state machine (RFC 6455 §5.2–§5.6).

use super::close::CloseCode;
use super::error::ProtocolError;
use super::frame::{FrameHeader, OpCode, parse_close_payload};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// The receive limits, from [`WebSocketOptions`](crate::WebSocketOptions).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_message_size: u64,
    pub(crate) max_frame_size: u64,
}

/// What a decoded header asks the caller to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A data frame; feed its `len` payload bytes to [`Decoder::payload`].
    /// A zero-length frame is already complete: `message_done` says
    /// whether it ended the message. `last`: the frame ends its message
    /// (FIN), whatever its length.
    Data {
        text: bool,
        len: u64,
        message_done: bool,
        last: bool,
    },
    /// A control frame; once `len` payload bytes are buffered, pass them to
    /// [`Decoder::control`].
    Control {
        opcode: OpCode,
        mask: [u8; 4],
        len: usize,
    },
}

/// A decoded control frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ControlFrame<'a> {
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    Close(Option<(CloseCode, &'a str)>),
}

/// A complete single-frame message found by [`Decoder::whole_frame`]: its
/// payload is `buf[header_len..header_len + len]`, still masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WholeFrame {
    pub(crate) text: bool,
    pub(crate) header_len: usize,
    pub(crate) len: usize,
    pub(crate) mask: [u8; 4],
}

impl WholeFrame {
    /// Unmasks the payload in place in `buf` (the buffer the frame was
    /// found in) and returns it.
    #[inline]
    pub(crate) fn unmask<'a>(&self, buf: &'a mut [u8]) -> &'a mut [u8] {
        let payload = &mut buf[self.header_len..self.header_len + self.len];
        apply_mask(payload, self.mask, 0);
        payload
    }
}

#[derive(Clone, Copy, Debug)]
struct DataFrame {
    remaining: u64,
    mask: [u8; 4],
    phase: usize,
    fin: bool,
}

#[derive(Clone, Copy, Debug)]
struct MessageState {
    text: bool,
    /// RSV1 on its first frame: permessage-deflate data, which the
    /// connection inflates, counts and validates (RFC 7692 §6).
    compressed: bool,
    size: u64,
    utf8: Utf8Validator,
}

/// RSV1 in [`FrameHeader::rsv`]: a compressed message (RFC 7692 §6).
const RSV1: u8 = 0b100;

/// The server-side receive state machine: validates headers against the
/// protocol and the limits, unmasks payload in place and validates text as
/// it arrives.
#[derive(Debug)]
pub(crate) struct Decoder {
    limits: Limits,
    /// RSV bits an extension has claimed: RSV1 once permessage-deflate is
    /// negotiated.
    allowed_rsv: u8,
    frame: Option<DataFrame>,
    message: Option<MessageState>,
}

impl Decoder {
    pub(crate) fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            allowed_rsv: 0,
            frame: None,
            message: None,
        }
    }

    /// permessage-deflate was negotiated: RSV1 marks the first frame of a
    /// compressed message.
    pub(crate) fn allow_compression(&mut self) {
        self.allowed_rsv |= RSV1;
    }

    /// Whether the current message is compressed (false between messages).
    #[inline]
    pub(crate) fn message_is_compressed(&self) -> bool {
        self.message.is_some_and(|m| m.compressed)
    }

    /// Payload bytes left in the current data frame (0 between frames).
    pub(crate) fn remaining(&self) -> u64 {
        self.frame.map_or(0, |f| f.remaining)
    }

    /// Whether the current message is text (None between messages).
    pub(crate) fn message_is_text(&self) -> Option<bool> {
        self.message.map(|m| m.text)
    }

    /// Decodes and validates the next frame header at the start of `buf`.
    ///
    /// Must only be called between frames (`remaining() == 0`). Returns
    /// `Ok(None)` if `buf` holds only part of a header.
    pub(crate) fn decode_header(
        &mut self,
        buf: &[u8],
    ) -> Result<Option<(Header, usize)>, ProtocolError> {
        debug_assert_eq!(self.remaining(), 0);
        let Some((header, header_len)) = FrameHeader::parse(buf)? else {
            return Ok(None);
        };
        if header.rsv & !self.allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let Some(mask) = header.mask else {
            return Err(ProtocolError::UnmaskedFrame);
        };
        if header.opcode.is_control() {
            // No extension defines RSV bits on control frames; compressed
            // control frames do not exist (RFC 7692 §6.1).
            if header.rsv != 0 {
                return Err(ProtocolError::ReservedBits);
            }
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if header.payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLarge);
            }
            let len = header.payload_len as usize;
            return Ok(Some((
                Header::Control {
                    opcode: header.opcode,
                    mask,
                    len,
                },
                header_len,
            )));
        }
        let compressed = header.rsv & RSV1 != 0;
        let mut message = match (header.opcode, self.message) {
            // RSV1 belongs on a compressed message's first frame only
            // (RFC 7692 §6.1).
            (OpCode::Continuation, Some(_)) if compressed => {
                return Err(ProtocolError::ReservedBits);
            }
            (OpCode::Continuation, Some(message)) => message,
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (opcode, None) => MessageState {
                text: opcode == OpCode::Text,
                compressed,
                size: 0,
                utf8: Utf8Validator::default(),
            },
        };
        message.size = message.size.saturating_add(header.payload_len);
        // A compressed message is held to the limit by its inflated size,
        // counted as it is inflated.
        if message.size > self.limits.max_message_size && !message.compressed {
            return Err(ProtocolError::MessageTooLarge);
        }
        if header.payload_len > self.limits.max_frame_size {
            return Err(ProtocolError::FrameTooLarge);
        }
        let text = message.text;
        let mut message_done = false;
        if header.payload_len == 0 {
            if header.fin {
                finish_message(&mut message)?;
                self.message = None;
                message_done = true;
            } else {
                self.message = Some(message);
            }
        } else {
            self.message = Some(message);
            self.frame = Some(DataFrame {
                remaining: header.payload_len,
                mask,
                phase: 0,
                fin: header.fin,
            });
        }
        Ok(Some((
            Header::Data {
                text,
                len: header.payload_len,
                message_done,
                last: header.fin,
            },
            header_len,
        )))
    }

    /// Unmasks and validates the next `chunk` of the current data frame's
    /// payload in place. `chunk` must not be longer than `remaining()`.
    ///
    /// Returns whether this chunk completed the message.
    pub(crate) fn payload(&mut self, chunk: &mut [u8]) -> Result<bool, ProtocolError> {
        let (Some(frame), Some(message)) = (self.frame.as_mut(), self.message.as_mut()) else {
            debug_assert!(chunk.is_empty(), "payload outside a data frame");
            return Ok(false);
        };
        debug_assert!(chunk.len() as u64 <= frame.remaining);
        frame.phase = apply_mask(chunk, frame.mask, frame.phase);
        frame.remaining -= chunk.len() as u64;
        if message.text && !message.compressed {
            message
                .utf8
                .feed(chunk)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if frame.remaining > 0 {
            return Ok(false);
        }
        let fin = frame.fin;
        self.frame = None;
        if !fin {
            return Ok(false);
        }
        let result = finish_message(message);
        self.message = None;
        result.map(|()| true)
    }

    /// Whether `len` bytes of payload are a whole message: its only frame,
    /// complete, with nothing of it consumed yet. Returns whether it is
    /// text. A whole text message may be taken with
    /// [`payload_whole_text`](Self::payload_whole_text) and validated in
    /// one piece; a whole binary one with [`payload`](Self::payload).
    pub(crate) fn whole_message(&self, len: usize) -> Option<bool> {
        match (self.frame, self.message) {
            (Some(frame), Some(message))
                if frame.fin
                    && frame.remaining == len as u64
                    && message.size == len as u64
                    && !message.compressed =>
            {
                Some(message.text)
            }
            _ => None,
        }
    }

    /// The common case in one look, without changing any state: between
    /// messages, `buf` starts with a complete, unfragmented text or binary
    /// frame (FIN, no RSV bits, masked, a 7- or 16-bit length) whose
    /// payload is all in `buf` and within both limits. Anything else is
    /// `None`, and the caller takes the general path
    /// ([`decode_header`](Self::decode_header)), which handles the rest
    /// and reports violations. A frame taken this way leaves the decoder
    /// exactly as the general path would: between messages.
    #[inline]
    pub(crate) fn whole_frame(&self, buf: &[u8]) -> Option<WholeFrame> {
        if self.frame.is_some() || self.message.is_some() {
            return None;
        }
        let [b0, b1, ..] = *buf else {
            return None;
        };
        let text = match b0 {
            0x81 => true,
            0x82 => false,
            _ => return None,
        };
        let (len, header_len) = match b1 {
            0xFE => {
                let bytes = buf.get(2..4)?;
                (usize::from(u16::from_be_bytes([bytes[0], bytes[1]])), 8)
            }
            0x80..=0xFD => (usize::from(b1 & 0x7F), 6),
            // Unmasked (a violation), or a 64-bit length.
            _ => return None,
        };
        let mask = buf.get(header_len - 4..header_len)?;
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        if buf.len() - header_len < len
            || len as u64 > self.limits.max_frame_size
            || len as u64 > self.limits.max_message_size
        {
            return None;
        }
        Some(WholeFrame {
            text,
            header_len,
            len,
            mask,
        })
    }

    /// Unmasks a whole text message (see
    /// [`whole_message`](Self::whole_message)) in place and ends it,
    /// **without** validating its UTF-8: the caller must validate the
    /// bytes as one piece and fail the connection with 1007 if they are
    /// not UTF-8. Saves a second pass over the message when it is turned
    /// into a `String`.
    pub(crate) fn payload_whole_text(&mut self, chunk: &mut [u8]) {
        debug_assert_eq!(self.whole_message(chunk.len()), Some(true));
        if let Some(frame) = self.frame.take() {
            apply_mask(chunk, frame.mask, frame.phase);
        }
        self.message = None;
    }

    /// Unmasks and interprets a complete control frame payload.
    pub(crate) fn control<'a>(
        &mut self,
        opcode: OpCode,
        mask: [u8; 4],
        payload: &'a mut [u8],
    ) -> Result<ControlFrame<'a>, ProtocolError> {
        apply_mask(payload, mask, 0);
        match opcode {
            OpCode::Ping => Ok(ControlFrame::Ping(payload)),
            OpCode::Pong => Ok(ControlFrame::Pong(payload)),
            _ => parse_close_payload(payload).map(ControlFrame::Close),
        }
    }
}

fn finish_message(message: &mut MessageState) -> Result<(), ProtocolError> {
    if message.text && !message.compressed {
        message
            .utf8
            .finish()
            .map_err(|_| ProtocolError::InvalidUtf8)
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::protocol::frame::{MAX_HEADER_LEN, encode_header};

    pub(crate) const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    pub(crate) fn limits() -> Limits {
        Limits {
            max_message_size: 1000,
            max_frame_size: 500,
        }
    }

    /// A masked client frame.
    pub(crate) fn frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = encode_header(
            &mut header,
            fin,
            rsv,
            opcode,
            Some(MASK),
            payload.len() as u64,
        );
        let mut out = header[..n].to_vec();
        let mut body = payload.to_vec();
        apply_mask(&mut body, MASK, 0);
        out.extend(body);
        out
    }

    /// Feeds whole frames; returns the messages (text flag, payload) or the
    /// first error.
    fn run(
        decoder: &mut Decoder,
        mut wire: Vec<u8>,
    ) -> Result<Vec<(bool, Vec<u8>)>, ProtocolError> {
        let mut messages = Vec::new();
        let mut current = Vec::new();
        let mut pos = 0;
        while pos < wire.len() {
            let (header, n) = decoder.decode_header(&wire[pos..])?.expect("whole header");
            pos += n;
            match header {
                Header::Data {
                    text,
                    len,
                    message_done,
                    ..
                } => {
                    let len = len as usize;
                    let chunk = &mut wire[pos..pos + len];
                    let done = if len == 0 {
                        message_done
                    } else {
                        decoder.payload(chunk)?
                    };
                    current.extend_from_slice(chunk);
                    pos += len;
                    if done {
                        messages.push((text, std::mem::take(&mut current)));
                    }
                }
                Header::Control { opcode, mask, len } => {
                    decoder.control(opcode, mask, &mut wire[pos..pos + len])?;
                    pos += len;
                }
            }
        }
        Ok(messages)
    }

    #[test]
    fn fragmented_text_with_interleaved_ping() {
        let mut wire = frame(false, 0, OpCode::Text, "κό".as_bytes());
        wire.extend(frame(true, 0, OpCode::Ping, b"p"));
        wire.extend(frame(false, 0, OpCode::Continuation, b""));
        wire.extend(frame(true, 0, OpCode::Continuation, "σμε".as_bytes()));
        let mut d = Decoder::new(limits());
        assert_eq!(
            run(&mut d, wire),
            Ok(vec![(true, "κόσμε".as_bytes().to_vec())])
        );
    }

    #[test]
    fn empty_messages() {
        let mut wire = frame(true, 0, OpCode::Text, b"");
        wire.extend(frame(true, 0, OpCode::Binary, b""));
        let mut d = Decoder::new(limits());
        assert_eq!(run(&mut d, wire), Ok(vec![(true, vec![]), (false, vec![])]));
    }

    #[test]
    fn violations_map_to_close_codes() {
        let cases: Vec<(Vec<u8>, ProtocolError, u16)> = vec![
            (
                frame(true, 0b100, OpCode::Text, b"x"),
                ProtocolError::ReservedBits,
                1002,
            ),
            (
                frame(true, 0b001, OpCode::Binary, b"x"),
                ProtocolError::ReservedBits,
                1002,
            ),
            (vec![0x81, 0x01, b'x'], ProtocolError::UnmaskedFrame, 1002),
            (
                vec![0x83, 0x80, 0, 0, 0, 0],
                ProtocolError::ReservedOpcode(3),
                1002,
            ),
            (
                vec![0x8B, 0x80, 0, 0, 0, 0],
                ProtocolError::ReservedOpcode(0xB),
                1002,
            ),
            (
                frame(false, 0, OpCode::Ping, b""),
                ProtocolError::FragmentedControlFrame,
                1002,
            ),
            (
                frame(true, 0, OpCode::Ping, &[0; 126]),
                ProtocolError::ControlFrameTooLarge,
                1002,
            ),
            (
                frame(true, 0, OpCode::Continuation, b"x"),
                ProtocolError::UnexpectedContinuation,
                1002,
            ),
            (
                [
                    frame(false, 0, OpCode::Text, b"a"),
                    frame(true, 0, OpCode::Text, b"b"),
                ]
                .concat(),
                ProtocolError::ExpectedContinuation,
                1002,
            ),
            (
                frame(true, 0, OpCode::Close, &[3]),
                ProtocolError::InvalidClosePayload,
                1002,
            ),
            (
                frame(true, 0, OpCode::Close, &[0, 0]),
                ProtocolError::InvalidCloseCode(0),
                1002,
            ),
            (
                frame(true, 0, OpCode::Text, b"\xFF"),
                ProtocolError::InvalidUtf8,
                1007,
            ),
            (
                frame(true, 0, OpCode::Text, b"\xCE"),
                ProtocolError::InvalidUtf8,
                1007,
            ),
            (
                frame(true, 0, OpCode::Binary, &[0; 501]),
                ProtocolError::FrameTooLarge,
                1009,
            ),
            (
                [
                    frame(false, 0, OpCode::Binary, &[0; 500]),
                    frame(false, 0, OpCode::Continuation, &[0; 500]),
                    frame(true, 0, OpCode::Continuation, &[0; 1]),
                ]
                .concat(),
                ProtocolError::MessageTooLarge,
                1009,
            ),
        ];
        for (wire, error, code) in cases {
            let mut d = Decoder::new(limits());
            assert_eq!(run(&mut d, wire), Err(error));
            assert_eq!(error.close_code().as_u16(), code);
        }
    }

    #[test]
    fn invalid_utf8_fails_at_the_first_bad_chunk() {
        // The frame announces 100 bytes; the first 3 already cannot be
        // UTF-8, so the error comes before the rest arrives.
        let mut wire = frame(true, 0, OpCode::Text, &[b'\xF4'; 100]);
        let mut d = Decoder::new(limits());
        let (header, n) = d.decode_header(&wire).unwrap().unwrap();
        assert!(matches!(header, Header::Data { len: 100, .. }));
        assert_eq!(
            d.payload(&mut wire[n..n + 3]),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn payload_in_pieces_matches_whole() {
        let text = "héllo wörld €𝄞".repeat(5);
        let mut wire = frame(true, 0, OpCode::Text, text.as_bytes());
        let mut d = Decoder::new(limits());
        let (_, n) = d.decode_header(&wire).unwrap().unwrap();
        let payload = &mut wire[n..];
        let mut done = false;
        for chunk in payload.chunks_mut(3) {
            done = d.payload(chunk).unwrap();
        }
        assert!(done);
        assert_eq!(payload, text.as_bytes());
        assert_eq!(d.remaining(), 0);
        assert_eq!(d.message_is_text(), None);
    }

    #[test]
    fn close_frames() {
        let mut d = Decoder::new(limits());
        let mut payload = vec![0x03, 0xE8, b'o', b'k'];
        apply_mask(&mut payload, MASK, 0);
        assert_eq!(
            d.control(OpCode::Close, MASK, &mut payload),
            Ok(ControlFrame::Close(Some((CloseCode::NORMAL, "ok"))))
        );
    }

    /// The general path over `buf` from a decoder between messages: a
    /// whole single-frame message's (text, header length, unmasked
    /// payload), if that is what `buf` starts with.
    fn general_whole_frame(limits: Limits, buf: &[u8]) -> Option<(bool, usize, Vec<u8>)> {
        let mut decoder = Decoder::new(limits);
        let (header, header_len) = decoder.decode_header(buf).ok()??;
        let Header::Data { text, len, .. } = header else {
            return None;
        };
        let len = usize::try_from(len).ok()?;
        let mut payload = buf.get(header_len..header_len.checked_add(len)?)?.to_vec();
        let done = if len == 0 {
            decoder.message.is_none()
        } else {
            decoder.payload(&mut payload).ok()? && decoder.remaining() == 0
        };
        (done && decoder.message_is_text().is_none()).then_some((text, header_len, payload))
    }

    #[test]
    fn whole_frame_takes_only_a_decoder_between_messages() {
        let wire = frame(true, 0, OpCode::Binary, b"abc");
        let mut decoder = Decoder::new(limits());
        assert!(decoder.whole_frame(&wire).is_some());
        decoder
            .decode_header(&frame(false, 0, OpCode::Text, b"x"))
            .unwrap();
        assert_eq!(decoder.whole_frame(&wire), None, "inside a frame");
        decoder.payload(&mut [b'x' ^ MASK[0]]).unwrap();
        assert_eq!(decoder.whole_frame(&wire), None, "inside a message");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// The fast path agrees with the general one: whatever it takes,
        /// the general path takes as the same whole message (same type,
        /// header length and payload) and leaves the decoder between
        /// messages; and every whole single-frame message with a 7- or
        /// 16-bit length that the general path takes without error, the
        /// fast path takes too. Random headers, lengths around the limits,
        /// and cut-off buffers.
        #[test]
        fn whole_frame_agrees_with_the_general_path(
            (b0, masked, len_form) in (
                proptest::sample::select(vec![0x81u8, 0x82, 0x80, 0x01, 0x02, 0x88, 0x89, 0x8A, 0x91, 0xA2, 0xC1, 0x83, 0x00]),
                proptest::bool::ANY,
                0u8..3,
            ),
            len in proptest::prop_oneof![0usize..130, 0usize..700],
            // Limits near the length: under, at, or over it.
            (frame_over, message_over) in (-2i64..3, -2i64..3),
            // Bytes cut off the end: none half the time.
            cut in proptest::prop_oneof![proptest::strategy::Just(0usize), 0usize..20],
            payload_seed in proptest::prelude::any::<u8>(),
        ) {
            let max_frame = (len as i64 + frame_over).max(0) as u64;
            let max_message = (len as i64 + message_over).max(0) as u64;
            let limits = Limits { max_message_size: max_message, max_frame_size: max_frame };
            let mut buf = vec![b0];
            let mask_bit = if masked { 0x80 } else { 0 };
            match len_form {
                0 if len < 126 => buf.push(mask_bit | len as u8),
                0 | 1 => {
                    buf.push(mask_bit | 126);
                    buf.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    buf.push(mask_bit | 127);
                    buf.extend_from_slice(&(len as u64).to_be_bytes());
                }
            }
            if masked {
                buf.extend_from_slice(&MASK);
            }
            // ASCII (valid text) for even seeds, anything for odd ones.
            let byte_mask = if payload_seed % 2 == 0 { 0x7F } else { 0xFF };
            buf.extend((0..len).map(|i| ((i as u8).wrapping_mul(payload_seed) ^ 0x5a) & byte_mask));
            buf.truncate(buf.len().saturating_sub(cut).max(1));

            let decoder = Decoder::new(limits);
            // The fast path leaves UTF-8 to its caller, which fails the
            // connection as the general path does.
            let fast = decoder.whole_frame(&buf).and_then(|frame| {
                let mut copy = buf.clone();
                let payload = frame.unmask(&mut copy).to_vec();
                let valid = !frame.text || std::str::from_utf8(&payload).is_ok();
                valid.then_some((frame.text, frame.header_len, payload))
            });
            let general = general_whole_frame(limits, &buf);
            match (&fast, &general) {
                (Some(fast), Some(general)) => proptest::prop_assert_eq!(fast, general),
                (Some(fast), None) => proptest::prop_assert!(false, "fast path took {fast:?}, general did not"),
                (None, Some((_, header_len, _))) => proptest::prop_assert!(
                    *header_len > 8 || b0 & 0x0F == 0,
                    "general path took a message the fast path left: {buf:02x?}"
                ),
                (None, None) => {}
            }
        }
    }
}

//! The bytes of a frame, both ways: the header codec (RFC 6455 §5.2),
//! whole unmasked server frames appended to an output queue, and Close
//! payloads (§5.5.1), encoded and parsed.

use bytes::{BufMut, BytesMut};

use super::close::CloseCode;
use super::error::ProtocolError;

/// The longest header: 2 fixed bytes, 8 length bytes, 4 mask bytes.
pub(crate) const MAX_HEADER_LEN: usize = 14;

/// A frame opcode (RFC 6455 §5.2, §11.8).
///
/// Decoded with [`TryFrom<u8>`]: reserved values are an error, never a
/// panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    pub(crate) const fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }

    pub(crate) const fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }
}

impl TryFrom<u8> for OpCode {
    type Error = ProtocolError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            other => Err(ProtocolError::ReservedOpcode(other)),
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) fin: bool,
    /// RSV1..RSV3 as the low three bits (RSV1 = 0b100).
    pub(crate) rsv: u8,
    pub(crate) opcode: OpCode,
    pub(crate) mask: Option<[u8; 4]>,
    pub(crate) payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header,
    /// otherwise the header and its length in bytes. Only what the header
    /// alone can tell is checked here (opcode, 64-bit length MSB); the
    /// [`Decoder`](super::Decoder) checks the rest.
    pub(crate) fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x07;
        let opcode = OpCode::try_from(b0 & 0x0F)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7F {
            126 => {
                let Some(bytes) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut len = [0u8; 8];
                len.copy_from_slice(bytes);
                let len = u64::from_be_bytes(len);
                if len >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let Some(bytes) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            pos,
        )))
    }
}

/// Encodes a header into `out` and returns its length. Uses the minimal
/// length form, as RFC 6455 §5.2 requires of senders.
pub(crate) fn encode_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) -> usize {
    out[0] = (u8::from(fin) << 7) | ((rsv & 0x07) << 4) | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut pos = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    };
    if let Some(mask) = mask {
        out[pos..pos + 4].copy_from_slice(&mask);
        pos += 4;
    }
    pos
}

/// The length of a header for `payload_len` bytes: 2 fixed bytes, the
/// extended length (none up to 125, 2 bytes up to 65,535, 8 beyond), and
/// the mask key if `masked`.
pub(crate) const fn header_len(payload_len: u64, masked: bool) -> usize {
    let extended = if payload_len < 126 {
        0
    } else if payload_len <= 0xFFFF {
        2
    } else {
        8
    };
    2 + extended + if masked { 4 } else { 0 }
}

/// Appends an unmasked server frame header for `len` bytes of payload.
pub(crate) fn put_header(out: &mut BytesMut, fin: bool, opcode: OpCode, len: usize) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, fin, 0, opcode, None, len as u64);
    out.put_slice(&header[..n]);
}

/// Appends a whole unmasked server frame of a compressed message
/// (permessage-deflate): RSV1 is set on its first frame (RFC 7692 §6).
pub(crate) fn put_compressed_frame(
    out: &mut BytesMut,
    fin: bool,
    first: bool,
    opcode: OpCode,
    payload: &[u8],
) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let rsv = if first { 0b100 } else { 0 };
    let n = encode_header(&mut header, fin, rsv, opcode, None, payload.len() as u64);
    out.reserve(n + payload.len());
    out.put_slice(&header[..n]);
    out.put_slice(payload);
}

/// Appends a whole unmasked server frame.
#[inline]
pub(crate) fn put_frame(out: &mut BytesMut, fin: bool, opcode: OpCode, payload: &[u8]) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    put_header(out, fin, opcode, payload.len());
    out.put_slice(payload);
}

/// A control frame payload (at most 125 bytes) held inline: a pending
/// pong's or a Close's, waiting for the output.
#[derive(Clone, Copy)]
pub(crate) struct ControlPayload {
    len: u8,
    bytes: [u8; 125],
}

impl PartialEq for ControlPayload {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for ControlPayload {}

impl std::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlPayload({:?})", self.as_slice())
    }
}

impl ControlPayload {
    /// `data`, cut to 125 bytes (a received control payload never is
    /// longer).
    pub(crate) fn new(data: &[u8]) -> Self {
        let mut bytes = [0u8; 125];
        let len = data.len().min(125);
        bytes[..len].copy_from_slice(&data[..len]);
        ControlPayload {
            len: len as u8,
            bytes,
        }
    }

    /// A Close payload: the code and the reason cut to
    /// [`MAX_REASON_LEN`] bytes on a character boundary, or empty for no
    /// code.
    pub(crate) fn close(code: Option<CloseCode>, reason: &str) -> Self {
        let mut payload = ControlPayload::new(&[]);
        if let Some(code) = code {
            let reason = truncate_reason(reason);
            payload.bytes[..2].copy_from_slice(&code.as_u16().to_be_bytes());
            payload.bytes[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
            payload.len = (2 + reason.len()) as u8;
        }
        payload
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The longest close reason: 125 bytes of control payload minus the code.
pub(crate) const MAX_REASON_LEN: usize = 123;

/// Parses an unmasked Close frame payload: empty (no status), or a valid
/// code followed by a UTF-8 reason.
pub(crate) fn parse_close_payload(
    payload: &[u8],
) -> Result<Option<(CloseCode, &str)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let raw = u16::from_be_bytes([*hi, *lo]);
            let code = CloseCode::new(raw).ok_or(ProtocolError::InvalidCloseCode(raw))?;
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Truncates `reason` to at most [`MAX_REASON_LEN`] bytes on a char
/// boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(fin: bool, rsv: u8, op: OpCode, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&mut out, fin, rsv, op, mask, len);
        out[..n].to_vec()
    }

    #[test]
    fn seven_bit_length() {
        assert_eq!(encode(true, 0, OpCode::Text, None, 5), [0x81, 0x05]);
        assert_eq!(encode(true, 0, OpCode::Binary, None, 125), [0x82, 125]);
    }

    #[test]
    fn sixteen_bit_length() {
        assert_eq!(
            encode(true, 0, OpCode::Binary, None, 126),
            [0x82, 126, 0, 126]
        );
        assert_eq!(
            encode(false, 0, OpCode::Text, None, 65535),
            [0x01, 126, 0xFF, 0xFF]
        );
    }

    #[test]
    fn sixty_four_bit_length() {
        assert_eq!(
            encode(true, 0, OpCode::Binary, None, 65536),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn masked_header_parses() {
        let bytes = [0x81, 0x85, 1, 2, 3, 4];
        let (h, n) = FrameHeader::parse(&bytes).unwrap().unwrap();
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
        assert_eq!(h.payload_len, 5);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
    }

    #[test]
    fn incomplete_headers_need_more() {
        let full = encode(true, 0, OpCode::Binary, Some([9, 9, 9, 9]), 70000);
        for cut in 0..full.len() {
            assert_eq!(
                FrameHeader::parse(&full[..cut]).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        assert!(FrameHeader::parse(&full).unwrap().is_some());
    }

    #[test]
    fn reserved_opcodes_are_errors() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0x80, 0, 0, 0, 0]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn length_with_msb_set_is_an_error() {
        let bytes = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(
            FrameHeader::parse(&bytes),
            Err(ProtocolError::InvalidLength)
        );
    }

    #[test]
    fn rsv_bits_are_reported() {
        let (h, _) = FrameHeader::parse(&[0xC1, 0x80, 0, 0, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!(h.rsv, 0b100);
    }

    proptest! {
        #[test]
        fn header_round_trips(
            fin: bool,
            rsv in 0u8..8,
            op in prop::sample::select(vec![
                OpCode::Continuation, OpCode::Text, OpCode::Binary,
                OpCode::Close, OpCode::Ping, OpCode::Pong,
            ]),
            mask: Option<[u8; 4]>,
            len in prop_oneof![0u64..=200, 60000u64..=70000, 0u64..(1u64 << 63)],
        ) {
            let bytes = encode(fin, rsv, op, mask, len);
            let (h, n) = FrameHeader::parse(&bytes).unwrap().unwrap();
            prop_assert_eq!(n, bytes.len());
            prop_assert_eq!(h, FrameHeader { fin, rsv, opcode: op, mask, payload_len: len });
        }
    }

    #[test]
    fn close_payloads() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(
            parse_close_payload(&[3]),
            Err(ProtocolError::InvalidClosePayload)
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, b'b', b'y', b'e']),
            Ok(Some((CloseCode::NORMAL, "bye")))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xED]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xFF]),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn reasons_truncate_on_char_boundaries() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_REASON_LEN);
        assert_eq!(cut.len(), 122);
    }

    #[test]
    fn close_payloads_round_trip() {
        let payload = ControlPayload::close(Some(CloseCode::GOING_AWAY), "bye");
        assert_eq!(
            parse_close_payload(payload.as_slice()),
            Ok(Some((CloseCode::GOING_AWAY, "bye")))
        );
        assert_eq!(ControlPayload::close(None, "ignored").as_slice(), b"");
        let long = ControlPayload::close(Some(CloseCode::NORMAL), &"é".repeat(100));
        assert_eq!(long.as_slice().len(), 2 + 122);
    }

    #[test]
    fn header_len_matches_the_encoder() {
        for len in [0u64, 1, 125, 126, 65535, 65536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = [0u8; MAX_HEADER_LEN];
                let n = encode_header(&mut out, true, 0, OpCode::Binary, mask, len);
                assert_eq!(header_len(len, mask.is_some()), n, "{len} {mask:?}");
            }
        }
    }
}

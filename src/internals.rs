//! Engine internals for the Criterion benchmarks in `bench/`: masking,
//! UTF-8 validation and the header codec, measured against the peers'
//! equivalents.
//!
//! Enabled by the `internals` feature. **Not a stable API**: it may change
//! in any release. The fuzz targets need none of it; they drive the real
//! socket through the public API.

use crate::protocol::{self, ProtocolError};

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
    let opcode =
        protocol::frame::OpCode::try_from(opcode).unwrap_or(protocol::frame::OpCode::Binary);
    protocol::frame::encode_header(out, fin, 0, opcode, None, payload_len)
}

//! A message framed once for any number of connections: the bytes behind
//! [`PreparedMessage`](crate::PreparedMessage).
//!
//! A server frame is never masked, so the same bytes are a valid frame on
//! every connection. The uncompressed frame is built when the message is
//! made; a compressed one is built the first time a connection that
//! compresses it asks, once per *variant* — the settings that decide the
//! compressed bytes (level and window) — and then shared the same way.
//! Only connections without context takeover share a compressed frame: a
//! compressor that keeps its window across messages makes bytes that are
//! valid on its own connection only, so such a connection compresses the
//! payload itself.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;

use super::compression::compress_message;
use super::frame::{MAX_HEADER_LEN, OpCode, encode_header};

/// A thread's buffer for compressing a prepared message, kept between
/// messages up to this size.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The settings that decide a message's compressed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    pub(crate) level: u32,
    pub(crate) window_bits: u8,
}

/// A message's frames, built once and shared. Each frame is one
/// allocation, its reference count and bytes together (an `Arc<[u8]>`):
/// a prepared message costs one allocation, and one more per compressed
/// variant, however many sockets send it.
pub(crate) struct SharedFrames {
    /// The whole uncompressed frame: header, then payload.
    plain: Arc<[u8]>,
    header_len: u8,
    text: bool,
    /// The compressed frames built so far, one per variant.
    compressed: Mutex<Variants>,
}

/// Compressed frames by variant: a server rarely has more than one, which
/// is kept inline (no allocation for the list).
#[derive(Default)]
struct Variants {
    first: Option<(Variant, Arc<[u8]>)>,
    more: Vec<(Variant, Arc<[u8]>)>,
}

impl Variants {
    fn get(&self, variant: Variant) -> Option<&Arc<[u8]>> {
        self.first
            .iter()
            .chain(&self.more)
            .find(|(v, _)| *v == variant)
            .map(|(_, frame)| frame)
    }

    fn add(&mut self, variant: Variant, frame: Arc<[u8]>) {
        if self.first.is_none() {
            self.first = Some((variant, frame));
        } else {
            self.more.push((variant, frame));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }
}

impl SharedFrames {
    /// Frames `payload` as one final text (`text`) or binary frame.
    pub(crate) fn new(payload: &[u8], text: bool) -> SharedFrames {
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = encode_header(
            &mut header,
            true,
            0,
            opcode(text),
            None,
            payload.len() as u64,
        );
        // An exact-size iterator: collected in one allocation.
        let plain: Arc<[u8]> = header[..header_len]
            .iter()
            .chain(payload)
            .copied()
            .collect();
        SharedFrames {
            plain,
            header_len: header_len as u8,
            text,
            compressed: Mutex::default(),
        }
    }

    /// Whether the message is text.
    #[inline]
    pub(crate) fn is_text(&self) -> bool {
        self.text
    }

    /// The payload, uncompressed.
    #[inline]
    pub(crate) fn payload(&self) -> &[u8] {
        &self.plain[usize::from(self.header_len)..]
    }

    /// The uncompressed frame's length: what it adds to a send queue
    /// (a compressed one is shorter, but its length is known only once it
    /// is built).
    #[inline]
    pub(crate) fn frame_len(&self) -> usize {
        self.plain.len()
    }

    /// The uncompressed frame, shared.
    #[inline]
    pub(crate) fn plain(&self) -> Arc<[u8]> {
        self.plain.clone()
    }

    /// The frame compressed with `variant` (RSV1 set), shared; built on
    /// the first call for that variant.
    pub(crate) fn compressed(&self, variant: Variant) -> Arc<[u8]> {
        let mut built = self
            .compressed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(frame) = built.get(variant) {
            return frame.clone();
        }
        let frame = compressed_frame(self.payload(), opcode(self.text), variant);
        built.add(variant, frame.clone());
        frame
    }

    /// How many compressed variants were built (for tests).
    #[cfg(test)]
    pub(crate) fn variants(&self) -> usize {
        self.compressed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn opcode(text: bool) -> OpCode {
    if text { OpCode::Text } else { OpCode::Binary }
}

/// One final compressed frame of `payload`: compressed in this thread's
/// scratch buffer behind room for the longest header, the header written
/// just in front of it, and the frame copied into its own allocation.
fn compressed_frame(payload: &[u8], opcode: OpCode, variant: Variant) -> Arc<[u8]> {
    SCRATCH.with(|scratch| {
        let mut frame = scratch.borrow_mut();
        frame.clear();
        frame.resize(MAX_HEADER_LEN, 0);
        compress_message(variant, payload, &mut frame);
        let data_len = frame.len() - MAX_HEADER_LEN;
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = encode_header(&mut header, true, 0b100, opcode, None, data_len as u64);
        let start = MAX_HEADER_LEN - header_len;
        frame[start..MAX_HEADER_LEN].copy_from_slice(&header[..header_len]);
        let shared = Arc::from(&frame[start..]);
        if frame.capacity() > SCRATCH_KEEP {
            *frame = BytesMut::new();
        }
        shared
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::deflate::{Inflater, TAIL};
    use crate::protocol::frame::FrameHeader;

    fn inflate(data: &[u8], window_bits: u8) -> Vec<u8> {
        let mut inflater = Inflater::new(window_bits, true);
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = vec![0u8; 1 << 20];
        let (_, produced) = inflater.inflate(&input, &mut out).unwrap();
        out.truncate(produced);
        out
    }

    #[test]
    fn the_plain_frame_is_a_final_unmasked_frame() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 100_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frames = SharedFrames::new(&payload, true);
            let plain = frames.plain();
            let (header, at) = FrameHeader::parse(&plain).unwrap().unwrap();
            assert!(header.fin && header.mask.is_none() && header.rsv == 0);
            assert_eq!(header.opcode, OpCode::Text);
            assert_eq!(header.payload_len, len as u64);
            assert_eq!(&plain[at..], &payload[..]);
            assert_eq!(frames.payload(), &payload[..]);
            assert_eq!(frames.frame_len(), plain.len());
        }
    }

    #[test]
    fn a_variant_is_compressed_once_and_inflates_back() {
        let payload: Vec<u8> = b"hello, room! ".repeat(400);
        let frames = SharedFrames::new(&payload, false);
        let variant = Variant {
            level: 6,
            window_bits: 15,
        };
        let first = frames.compressed(variant);
        let again = frames.compressed(variant);
        assert!(Arc::ptr_eq(&first, &again), "shared, not rebuilt");
        let small = frames.compressed(Variant {
            level: 6,
            window_bits: 9,
        });
        assert_eq!(frames.variants(), 2);
        for (frame, bits) in [(first, 15), (small, 9)] {
            let (header, at) = FrameHeader::parse(&frame).unwrap().unwrap();
            assert!(header.fin && header.rsv == 0b100 && header.mask.is_none());
            assert_eq!(header.opcode, OpCode::Binary);
            assert_eq!(header.payload_len as usize, frame.len() - at);
            assert_eq!(inflate(&frame[at..], bits), payload);
        }
    }
}

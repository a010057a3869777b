//! permessage-deflate's codec (RFC 7692 §7.2): a message's payload is raw
//! DEFLATE data ending in a sync flush, with the flush's last four bytes
//! (`00 00 ff ff`) removed by the sender and appended again by the
//! receiver.
//!
//! The work is flate2's (with the zlib-rs backend, which takes window
//! sizes); this file holds the framing rules around it: the tail, the
//! reset between messages without context takeover, and an inflater that
//! never writes more than the space it is given, so a small compressed
//! frame cannot make the receiver allocate what it would inflate to.

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::ProtocolError;

/// What a sync flush ends with, and the sender removes (RFC 7692 §7.2.1).
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The compressing side: server to client.
pub(crate) struct Deflater {
    inner: Compress,
    /// No context takeover: every message starts from an empty window.
    reset_each_message: bool,
}

impl Deflater {
    /// A compressor with `level` (0–9) and a window of `window_bits`
    /// (9–15).
    pub(crate) fn new(level: u32, window_bits: u8, reset_each_message: bool) -> Deflater {
        Deflater {
            inner: Compress::new_with_window_bits(Compression::new(level), false, window_bits),
            reset_each_message,
        }
    }

    /// Compresses `input`, the next piece of a message, onto `out`. `fin`
    /// ends the message: the flush's tail is removed, and without context
    /// takeover the compressor starts over for the next message.
    pub(crate) fn compress(&mut self, input: &[u8], fin: bool, out: &mut BytesMut) {
        let start = out.len();
        let mut consumed = 0;
        loop {
            // Room for incompressible input (stored blocks add 5 bytes per
            // 64 KiB) and the flush.
            let room = (input.len() - consumed) + (input.len() - consumed) / 1024 + 64;
            let len = out.len();
            out.resize(len + room, 0);
            let before_in = self.inner.total_in();
            let before_out = self.inner.total_out();
            let status = self
                .inner
                .compress(&input[consumed..], &mut out[len..], FlushCompress::Sync)
                .expect("deflate cannot fail on valid state");
            consumed += (self.inner.total_in() - before_in) as usize;
            let produced = (self.inner.total_out() - before_out) as usize;
            out.truncate(len + produced);
            debug_assert!(matches!(status, Status::Ok | Status::BufError));
            // Done when all input is in and the flush fit in the room.
            if consumed == input.len() && produced < room {
                break;
            }
        }
        if fin {
            debug_assert!(
                out.len() == start || out[start..].ends_with(&TAIL),
                "a sync flush ends with its tail"
            );
            if out[start..].ends_with(&TAIL) {
                out.truncate(out.len() - TAIL.len());
            } else if out.len() == start {
                // A flush with nothing new to flush (an empty message after
                // a flushed one) writes nothing; the tail the receiver
                // appends needs the header bits of its empty stored block
                // before it, one zero byte, as a fresh empty message has.
                out.extend_from_slice(&[0x00]);
            }
            if self.reset_each_message {
                self.inner.reset();
            }
        }
    }
}

/// The inflating side: client to server.
pub(crate) struct Inflater {
    inner: Decompress,
    /// The client compresses every message from an empty window.
    reset_each_message: bool,
}

impl Inflater {
    /// An inflater for a window of `window_bits` (9–15).
    pub(crate) fn new(window_bits: u8, reset_each_message: bool) -> Inflater {
        Inflater {
            inner: Decompress::new_with_window_bits(false, window_bits),
            reset_each_message,
        }
    }

    /// Inflates from `input` into `out`, never writing past `out`'s end.
    /// Returns the bytes of `input` consumed and of `out` written.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::InvalidCompressedData`] if `input` is not valid
    /// DEFLATE data, with the bytes written before the bad data was
    /// reached (they come first in the message, and a violation in them
    /// comes first too).
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, usize), (usize, ProtocolError)> {
        let before_in = self.inner.total_in();
        let before_out = self.inner.total_out();
        let result = self.inner.decompress(input, out, FlushDecompress::Sync);
        let consumed = (self.inner.total_in() - before_in) as usize;
        let produced = ((self.inner.total_out() - before_out) as usize).min(out.len());
        let Ok(status) = result else {
            return Err((produced, ProtocolError::InvalidCompressedData));
        };
        if status == Status::StreamEnd {
            // A final block (BFINAL) ended the DEFLATE stream; what
            // follows in the message starts a new one (RFC 7692 §7.2.3.3
            // leaves the choice of blocks to the sender).
            self.restart();
        }
        Ok((consumed, produced))
    }

    /// The message ended: without context takeover the next one starts
    /// from an empty window.
    pub(crate) fn end_message(&mut self) {
        if self.reset_each_message {
            self.restart();
        }
    }

    fn restart(&mut self) {
        // flate2 keeps the window size across a reset.
        self.inner.reset(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inflates a whole message (with its tail appended) through an output
    /// window of `step` bytes at a time.
    fn inflate_all(inflater: &mut Inflater, data: &[u8], step: usize) -> Vec<u8> {
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut chunk = vec![0u8; step];
        loop {
            let (consumed, produced) = inflater.inflate(&input[pos..], &mut chunk).unwrap();
            assert!(produced <= step);
            pos += consumed;
            out.extend_from_slice(&chunk[..produced]);
            if pos == input.len() && produced < step {
                break;
            }
        }
        inflater.end_message();
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        let pattern = b"{\"name\":\"tower\",\"value\":12345}";
        (0..len)
            .map(|i| pattern[i % pattern.len()] ^ (i / 997) as u8)
            .collect()
    }

    const LENGTHS: [usize; 6] = [0, 1, 125, 4096, 65536, 1 << 20];

    #[test]
    fn messages_round_trip_without_context_takeover_through_any_output_size() {
        for bits in [9u8, 12, 15] {
            let mut deflater = Deflater::new(6, bits, true);
            for len in LENGTHS {
                let message = sample(len);
                let mut wire = BytesMut::new();
                deflater.compress(&message, true, &mut wire);
                for step in [1usize, 7, 4096, 1 << 16] {
                    if step < 64 && len > 4096 {
                        continue;
                    }
                    let mut inflater = Inflater::new(bits, true);
                    assert_eq!(
                        inflate_all(&mut inflater, &wire, step),
                        message,
                        "{bits} bits, {len} bytes, {step}-byte output"
                    );
                }
            }
        }
    }

    #[test]
    fn messages_round_trip_with_context_takeover() {
        for bits in [9u8, 12, 15] {
            let mut deflater = Deflater::new(6, bits, false);
            let mut inflater = Inflater::new(bits, false);
            // Twice over, so later messages refer back to earlier ones.
            for len in LENGTHS.iter().chain(LENGTHS.iter()) {
                let message = sample(*len);
                let mut wire = BytesMut::new();
                deflater.compress(&message, true, &mut wire);
                assert_eq!(
                    inflate_all(&mut inflater, &wire, 4096),
                    message,
                    "{bits} {len}"
                );
            }
        }
    }

    #[test]
    fn context_takeover_makes_repeated_messages_smaller() {
        let message = sample(2000);
        let mut sizes = Vec::new();
        for reset in [false, true] {
            let mut deflater = Deflater::new(6, 15, reset);
            let mut first = BytesMut::new();
            deflater.compress(&message, true, &mut first);
            let mut second = BytesMut::new();
            deflater.compress(&message, true, &mut second);
            sizes.push((first.len(), second.len()));
        }
        let (takeover, reset) = (sizes[0], sizes[1]);
        assert!(takeover.1 < takeover.0 / 2, "{takeover:?}");
        assert_eq!(reset.0, reset.1);
    }

    #[test]
    fn a_message_compressed_in_pieces_inflates_whole() {
        let message = sample(100_000);
        let mut deflater = Deflater::new(6, 15, true);
        let mut wire = BytesMut::new();
        let pieces: Vec<&[u8]> = message.chunks(30_000).collect();
        for (i, piece) in pieces.iter().enumerate() {
            deflater.compress(piece, i + 1 == pieces.len(), &mut wire);
        }
        let mut inflater = Inflater::new(15, true);
        assert_eq!(inflate_all(&mut inflater, &wire, 8192), message);
    }

    #[test]
    fn an_empty_message_is_one_byte() {
        let mut deflater = Deflater::new(6, 15, false);
        let mut wire = BytesMut::new();
        deflater.compress(b"", true, &mut wire);
        assert_eq!(&wire[..], [0x00]);
        let mut inflater = Inflater::new(15, false);
        assert_eq!(inflate_all(&mut inflater, &wire, 16), b"");
    }

    #[test]
    fn a_bomb_never_writes_past_its_output() {
        // 16 MiB of zeros compress to about 16 KiB.
        let zeros = vec![0u8; 16 << 20];
        let mut deflater = Deflater::new(9, 15, true);
        let mut wire = BytesMut::new();
        deflater.compress(&zeros, true, &mut wire);
        assert!(wire.len() < 32 * 1024, "{}", wire.len());
        let mut inflater = Inflater::new(15, true);
        let mut out = [0u8; 1024];
        let (consumed, produced) = inflater.inflate(&wire, &mut out).unwrap();
        assert_eq!(produced, 1024);
        assert!(consumed < wire.len());
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut inflater = Inflater::new(15, true);
        let mut out = [0u8; 64];
        // Block type 3 is reserved in DEFLATE.
        assert_eq!(
            inflater.inflate(&[0xff, 0xff, 0xff], &mut out),
            Err((0, ProtocolError::InvalidCompressedData))
        );
        // Bad data after a valid block: what came before it is reported.
        let mut deflater = Deflater::new(6, 15, true);
        let mut wire = BytesMut::new();
        deflater.compress(b"hello", true, &mut wire);
        wire.extend_from_slice(&[0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let mut inflater = Inflater::new(15, true);
        assert_eq!(
            inflater.inflate(&wire, &mut out),
            Err((5, ProtocolError::InvalidCompressedData))
        );
        assert_eq!(&out[..5], b"hello");
    }
}

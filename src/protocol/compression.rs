//! A connection's permessage-deflate state (RFC 7692), once negotiated:
//! the inflating of the compressed message being received, bounded by the
//! message limit and validated as text, and the compressing of messages
//! sent.
//!
//! Without context takeover a codec is needed only while a message passes
//! through: it is taken from a per-thread pool when a message starts and
//! given back when it ends, so an idle socket holds none. With context
//! takeover the codec's window is the context, and the socket keeps it.

use std::cell::RefCell;

use bytes::{Buf, BytesMut};

use super::deflate::{Deflater, Inflater, TAIL};
use super::error::ProtocolError;
use super::prepared::Variant;
use super::utf8::Utf8Validator;

/// Codecs a thread keeps for sockets without context takeover.
const POOL_SIZE: usize = 4;

/// A socket keeps its frame-building buffer between messages only up to
/// this size, so an idle socket does not hold its largest message.
const SCRATCH_KEEP: usize = 16 * 1024;

thread_local! {
    static DEFLATERS: RefCell<Vec<(u32, u8, Deflater)>> = const { RefCell::new(Vec::new()) };
    static INFLATERS: RefCell<Vec<(u8, Inflater)>> = const { RefCell::new(Vec::new()) };
}

/// The settings both sides agreed on, and the server's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CompressionConfig {
    /// The window the server compresses with (9–15).
    pub(crate) server_window_bits: u8,
    /// The window the server inflates with (9–15).
    pub(crate) client_window_bits: u8,
    /// Reset the compressor after every message.
    pub(crate) server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub(crate) client_no_context_takeover: bool,
    /// Compression level, 0–9.
    pub(crate) level: u32,
    /// Whole messages shorter than this are sent uncompressed.
    pub(crate) threshold: usize,
}

/// The compressed message being received.
#[derive(Debug, Default)]
struct Receiving {
    /// Unmasked compressed bytes not yet inflated.
    pending: BytesMut,
    /// The message's last frame is all in `pending`.
    raw_done: bool,
    /// Bytes of [`TAIL`] still to feed once `raw_done`.
    tail_left: usize,
    /// Inflated bytes so far.
    size: u64,
    text: bool,
    utf8: Utf8Validator,
}

/// A connection's compression state.
pub(crate) struct Compression {
    config: CompressionConfig,
    max_message_size: u64,
    deflater: Option<Deflater>,
    inflater: Option<Inflater>,
    /// `Some` while a compressed message is being received.
    receiving: Option<Receiving>,
    /// The open fragmented outgoing message is compressed.
    sending_compressed: bool,
    /// Where a frame's compressed payload is built before its header.
    scratch: BytesMut,
}

impl Compression {
    pub(crate) fn new(config: CompressionConfig, max_message_size: u64) -> Compression {
        Compression {
            config,
            max_message_size,
            deflater: None,
            inflater: None,
            receiving: None,
            sending_compressed: false,
            scratch: BytesMut::new(),
        }
    }

    // ----- receiving -----

    /// A compressed message starts (its first frame's header was read).
    pub(crate) fn begin_message(&mut self, text: bool) {
        self.receiving = Some(Receiving {
            text,
            ..Receiving::default()
        });
        if self.inflater.is_none() {
            self.inflater = Some(self.take_inflater());
        }
    }

    /// Unmasked compressed payload of the message's frames, in order;
    /// `last` when it ends the message's last frame.
    pub(crate) fn input(&mut self, chunk: &[u8], last: bool) {
        let Some(receiving) = self.receiving.as_mut() else {
            return;
        };
        receiving.pending.extend_from_slice(chunk);
        if last {
            receiving.raw_done = true;
            receiving.tail_left = TAIL.len();
        }
    }

    /// Whether inflating can produce output (or end the message) without
    /// more compressed input.
    #[inline]
    pub(crate) fn can_inflate(&self) -> bool {
        self.receiving
            .as_ref()
            .is_some_and(|r| !r.pending.is_empty() || r.raw_done)
    }

    /// Whether a compressed message is being received.
    #[inline]
    pub(crate) fn receiving(&self) -> bool {
        self.receiving.is_some()
    }

    /// Whether the compressed message being received is text.
    pub(crate) fn receiving_text(&self) -> Option<bool> {
        self.receiving.as_ref().map(|r| r.text)
    }

    /// Compressed bytes waiting to be inflated.
    pub(crate) fn pending(&self) -> usize {
        self.receiving.as_ref().map_or(0, |r| r.pending.len())
    }

    /// How many more inflated bytes the message may have before it passes
    /// the message limit.
    pub(crate) fn allowance(&self) -> u64 {
        let size = self.receiving.as_ref().map_or(0, |r| r.size);
        self.max_message_size.saturating_sub(size)
    }

    /// Inflates what is pending into `out`. Returns the bytes written and
    /// whether that ended the message. Never writes more than one byte
    /// past the message limit: that byte fails it with 1009.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::MessageTooLarge`] past the limit,
    /// [`ProtocolError::InvalidCompressedData`] for bad DEFLATE data,
    /// [`ProtocolError::InvalidUtf8`] for a text message that inflates to
    /// invalid UTF-8.
    pub(crate) fn inflate(&mut self, out: &mut [u8]) -> Result<(usize, bool), ProtocolError> {
        let allowance = self.allowance();
        let Some(receiving) = self.receiving.as_mut() else {
            return Ok((0, false));
        };
        let inflater = self.inflater.as_mut().expect("an inflater while receiving");
        let limit = out
            .len()
            .min(usize::try_from(allowance.saturating_add(1)).unwrap_or(usize::MAX));
        let mut written = 0;
        let mut bad_data = None;
        loop {
            let input: &[u8] = if !receiving.pending.is_empty() {
                &receiving.pending
            } else if receiving.tail_left > 0 {
                &TAIL[TAIL.len() - receiving.tail_left..]
            } else {
                &[]
            };
            let from_pending = !receiving.pending.is_empty();
            let (consumed, produced) = match inflater.inflate(input, &mut out[written..limit]) {
                Ok(inflated) => inflated,
                Err((produced, error)) => {
                    written += produced;
                    bad_data = Some(error);
                    break;
                }
            };
            if from_pending {
                receiving.pending.advance(consumed);
            } else {
                receiving.tail_left -= consumed;
            }
            written += produced;
            if written == limit || (consumed == 0 && produced == 0) {
                break;
            }
        }
        // The first violation in the message's order wins, however the
        // input arrived: invalid text within the limit, then the limit,
        // then data that does not inflate.
        let within = usize::try_from(allowance).map_or(written, |allowed| written.min(allowed));
        if receiving.text {
            receiving
                .utf8
                .feed(&out[..within])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        receiving.size += written as u64;
        if receiving.size > self.max_message_size {
            return Err(ProtocolError::MessageTooLarge);
        }
        if let Some(error) = bad_data {
            return Err(error);
        }
        // All input is in and the output had room to spare: nothing more
        // can come out of it.
        let done = receiving.raw_done
            && receiving.pending.is_empty()
            && receiving.tail_left == 0
            && written < out.len();
        if !done {
            return Ok((written, false));
        }
        if receiving.text {
            receiving
                .utf8
                .finish()
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.receiving = None;
        if let Some(mut inflater) = self.inflater.take() {
            inflater.end_message();
            if self.config.client_no_context_takeover {
                give_inflater(self.config.client_window_bits, inflater);
            } else {
                self.inflater = Some(inflater);
            }
        }
        Ok((written, true))
    }

    fn take_inflater(&self) -> Inflater {
        let bits = self.config.client_window_bits;
        let reset = self.config.client_no_context_takeover;
        if reset {
            let pooled = INFLATERS.with(|pool| {
                let mut pool = pool.borrow_mut();
                let at = pool.iter().position(|(b, _)| *b == bits)?;
                Some(pool.swap_remove(at).1)
            });
            if let Some(inflater) = pooled {
                return inflater;
            }
        }
        Inflater::new(bits, reset)
    }

    // ----- sending -----

    /// Whether a frame of `len` bytes starting a message (`first`) or
    /// continuing one is sent compressed: a whole message from the
    /// threshold up, a fragmented one always (its size is not known).
    pub(crate) fn compresses(&self, first: bool, fin: bool, len: usize) -> bool {
        if first {
            !fin || len >= self.config.threshold
        } else {
            self.sending_compressed
        }
    }

    /// Compresses the next piece of an outgoing message into the scratch
    /// buffer and returns it; `first` starts the message, `fin` ends it.
    pub(crate) fn deflate(&mut self, payload: &[u8], first: bool, fin: bool) -> &[u8] {
        if first {
            self.sending_compressed = !fin;
        } else if fin {
            self.sending_compressed = false;
        }
        let mut deflater = match self.deflater.take() {
            Some(deflater) => deflater,
            None => self.take_deflater(),
        };
        self.scratch.clear();
        deflater.compress(payload, fin, &mut self.scratch);
        if fin && self.config.server_no_context_takeover {
            give_deflater(self.config.level, self.config.server_window_bits, deflater);
        } else {
            self.deflater = Some(deflater);
        }
        &self.scratch
    }

    /// The frame built by [`deflate`](Self::deflate) was copied out: an
    /// idle socket does not keep a large buffer for it.
    pub(crate) fn release_scratch(&mut self) {
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = BytesMut::new();
        }
    }

    fn take_deflater(&self) -> Deflater {
        take_deflater(
            self.config.level,
            self.config.server_window_bits,
            self.config.server_no_context_takeover,
        )
    }

    /// The settings a [prepared](super::prepared) message is compressed
    /// with for this connection, if it can share one compressed frame with
    /// other connections: only without context takeover, where every
    /// message starts from an empty window.
    pub(crate) fn shared_variant(&self) -> Option<Variant> {
        self.config.server_no_context_takeover.then_some(Variant {
            level: self.config.level,
            window_bits: self.config.server_window_bits,
        })
    }
}

/// A compressor for `level` and `bits`; without context takeover
/// (`reset`), from this thread's pool if it has one.
fn take_deflater(level: u32, bits: u8, reset: bool) -> Deflater {
    if reset {
        let pooled = DEFLATERS.with(|pool| {
            let mut pool = pool.borrow_mut();
            let at = pool
                .iter()
                .position(|(l, b, _)| *l == level && *b == bits)?;
            Some(pool.swap_remove(at).2)
        });
        if let Some(deflater) = pooled {
            return deflater;
        }
    }
    Deflater::new(level, bits, reset)
}

/// Compresses `payload` as one whole message from an empty window, onto
/// `out` (without the flush's tail), with a pooled compressor: the bytes
/// any connection without context takeover sends for it with `variant`.
pub(crate) fn compress_message(variant: Variant, payload: &[u8], out: &mut BytesMut) {
    let mut deflater = take_deflater(variant.level, variant.window_bits, true);
    deflater.compress(payload, true, out);
    give_deflater(variant.level, variant.window_bits, deflater);
}

fn give_deflater(level: u32, bits: u8, deflater: Deflater) {
    DEFLATERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_SIZE {
            pool.push((level, bits, deflater));
        }
    });
}

fn give_inflater(bits: u8, inflater: Inflater) {
    INFLATERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_SIZE {
            pool.push((bits, inflater));
        }
    });
}

//! The output queue: encoded frames waiting to be written, in order.
//!
//! Most frames are built in place, in one owned buffer (the *tail*): a
//! reply, a pong, our Close. A [prepared message]'s frame is built once
//! and shared by every socket that sends it, so it enters the queue as a
//! reference-counted chunk instead of a copy. The queue is then a run of
//! chunks followed by the tail; a chunk that arrives while the tail holds
//! frames first freezes those frames into a chunk of their own (the
//! buffer is not copied), so order is kept. The writer hands the chunks
//! and the tail to one vectored write.
//!
//! A queue of owned frames only — every socket that never sends a
//! prepared message — is the tail alone, written with a plain write, as
//! before chunks existed.
//!
//! [prepared message]: crate::PreparedMessage

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

/// At most this many chunks wait in one queue, whatever their size: a
/// queued chunk costs its handle (a few dozen bytes) beyond its bytes, so
/// a flood of tiny shared frames must not grow the queue past the byte
/// bound's intent. A send that would pass it finds the queue full.
pub(crate) const MAX_CHUNKS: usize = 1024;

/// A write takes at most this many slices (Linux's `IOV_MAX` is 1024).
pub(crate) const MAX_SLICES: usize = 64;

/// Frames queued ahead of the owned buffer.
#[derive(Debug)]
enum Chunk {
    /// Owned frames, frozen when a shared frame was queued behind them.
    Owned(Bytes),
    /// A prepared message's frame, from `start` on (the rest was written).
    Shared { frame: Arc<[u8]>, start: usize },
}

impl Chunk {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Shared { frame, start } => &frame[*start..],
        }
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Owned(bytes) => bytes.advance(n),
            Chunk::Shared { start, .. } => *start += n,
        }
    }
}

/// Encoded frames waiting to be written: shared chunks, then the tail.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Frames queued before everything in `tail`, oldest first.
    chunks: VecDeque<Chunk>,
    /// The bytes in `chunks`.
    chunked: usize,
    /// Owned frames, after every chunk.
    tail: BytesMut,
}

impl Output {
    /// Bytes waiting.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.chunked + self.tail.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether everything waiting is in the owned buffer.
    #[inline]
    pub(crate) fn is_contiguous(&self) -> bool {
        self.chunks.is_empty()
    }

    /// How many chunks wait before the owned frames.
    #[inline]
    pub(crate) fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// The owned buffer, to append frames to.
    #[inline]
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// The owned frames, when they are all that waits (see
    /// [`is_contiguous`](Self::is_contiguous)).
    #[inline]
    pub(crate) fn contiguous(&self) -> &[u8] {
        debug_assert!(self.chunks.is_empty());
        &self.tail
    }

    /// Whether another chunk fits under [`MAX_CHUNKS`] (freezing the tail
    /// may take a second one).
    #[inline]
    pub(crate) fn has_chunk_room(&self) -> bool {
        self.chunks.len() + 2 <= MAX_CHUNKS
    }

    /// Queues a shared frame behind everything waiting.
    pub(crate) fn push_shared(&mut self, frame: Arc<[u8]>) {
        if frame.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            // The owned frames go first: freeze them, without a copy.
            let owned = self.tail.split().freeze();
            self.chunked += owned.len();
            self.chunks.push_back(Chunk::Owned(owned));
        }
        self.chunked += frame.len();
        self.chunks.push_back(Chunk::Shared { frame, start: 0 });
    }

    /// Fills `slices` with the waiting bytes, oldest first, then `extra`
    /// if there is room; returns how many slices it filled.
    pub(crate) fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>], extra: &'a [u8]) -> usize {
        let mut n = 0;
        for chunk in &self.chunks {
            if n == slices.len() {
                return n;
            }
            // A queued chunk is never empty: written ones are popped.
            slices[n] = IoSlice::new(chunk.bytes());
            n += 1;
        }
        for piece in [&self.tail[..], extra] {
            if n == slices.len() {
                break;
            }
            if !piece.is_empty() {
                slices[n] = IoSlice::new(piece);
                n += 1;
            }
        }
        n
    }

    /// The first `n` bytes were written. An owned buffer written out whole
    /// is reset in place rather than advanced, so its next frames need no
    /// `reserve` to win the space back.
    #[inline]
    pub(crate) fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        if !self.chunks.is_empty() {
            self.advance_chunks(n);
        } else if n == self.tail.len() {
            self.tail.clear();
        } else {
            self.tail.advance(n);
        }
    }

    /// [`advance`](Self::advance) through the chunks, then the tail.
    #[cold]
    fn advance_chunks(&mut self, mut n: usize) {
        while let Some(front) = self.chunks.front_mut() {
            let len = front.bytes().len();
            if n < len {
                front.advance(n);
                self.chunked -= n;
                return;
            }
            n -= len;
            self.chunked -= len;
            self.chunks.pop_front();
        }
        if self.chunks.capacity() > 64 {
            // A burst is over: do not keep its slots.
            self.chunks = VecDeque::new();
        }
        if n == self.tail.len() {
            self.tail.clear();
        } else {
            self.tail.advance(n);
        }
    }

    /// Everything waiting, oldest first, for a last write; the queue is
    /// left empty.
    pub(crate) fn take(&mut self) -> Output {
        std::mem::take(self)
    }

    /// The waiting pieces, oldest first.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks
            .iter()
            .map(Chunk::bytes)
            .chain(std::iter::once(&self.tail[..]))
            .filter(|piece| !piece.is_empty())
    }

    /// Everything waiting, copied into one vector.
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.pieces().flatten().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a vectored write of at most `limit` bytes takes.
    fn write(out: &mut Output, limit: usize, extra: &[u8]) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let n = out.slices(&mut slices, extra);
        let mut taken: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        taken.truncate(limit);
        taken
    }

    #[test]
    fn owned_frames_only_stay_one_buffer() {
        let mut out = Output::default();
        out.tail().extend_from_slice(b"abc");
        out.tail().extend_from_slice(b"def");
        assert!(out.is_contiguous());
        assert_eq!(out.contiguous(), b"abcdef");
        out.advance(6);
        assert!(out.is_empty());
    }

    #[test]
    fn a_shared_chunk_keeps_its_place_between_owned_frames() {
        let mut out = Output::default();
        out.tail().extend_from_slice(b"pong");
        out.push_shared(Arc::from(&b"shared"[..]));
        out.tail().extend_from_slice(b"close");
        assert!(!out.is_contiguous());
        assert_eq!(out.to_vec(), b"pongsharedclose");
        assert_eq!(out.len(), 15);
        out.advance(6);
        assert_eq!(out.to_vec(), b"aredclose");
        out.advance(9);
        assert!(out.is_empty() && out.is_contiguous());
    }

    #[test]
    fn a_shared_chunk_is_not_copied() {
        let frame: Arc<[u8]> = Arc::from(vec![7u8; 100]);
        let mut out = Output::default();
        out.push_shared(frame.clone());
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(out.slices(&mut slices, &[]), 1);
        assert_eq!(slices[0].as_ptr(), frame.as_ptr());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Owned(Vec<u8>),
        Shared(Vec<u8>),
        Write(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Owned),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Shared),
            (0usize..120).prop_map(Op::Write),
        ]
    }

    proptest! {
        /// Against a plain byte vector: whatever mix of owned frames,
        /// shared chunks and partial writes, the bytes written are the
        /// bytes queued, in order.
        #[test]
        fn writes_take_the_bytes_in_queue_order(ops in proptest::collection::vec(op(), 0..60)) {
            let mut out = Output::default();
            let mut model: Vec<u8> = Vec::new();
            let mut written: Vec<u8> = Vec::new();
            let mut expected: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Owned(bytes) => {
                        out.tail().extend_from_slice(&bytes);
                        model.extend_from_slice(&bytes);
                    }
                    Op::Shared(bytes) => {
                        out.push_shared(Arc::from(&bytes[..]));
                        model.extend_from_slice(&bytes);
                    }
                    Op::Write(limit) => {
                        let taken = write(&mut out, limit, &[]);
                        out.advance(taken.len());
                        written.extend_from_slice(&taken);
                        let n = taken.len().min(model.len());
                        expected.extend(model.drain(..n));
                    }
                }
                prop_assert_eq!(out.len(), model.len());
                prop_assert_eq!(out.to_vec(), model.clone());
            }
            prop_assert_eq!(written, expected);
        }
    }
}

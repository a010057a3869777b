//! The socket's read buffer: a `BytesMut` plus a read position.
//!
//! `BytesMut::advance` moves the buffer's start, and the space it skips
//! comes back only through `reserve`, which every refill would then go
//! through. Here consuming moves a position instead, and consuming the
//! last byte resets the buffer in place, so the common cycle (read a
//! message, consume it all, read again) never advances or reserves.

use bytes::{Buf, BytesMut};

/// Bytes read from the peer and not yet consumed.
///
/// Invariant: `pos < buf.len()`, or `pos == 0` and `buf` is empty.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffer {
    buf: BytesMut,
    pos: usize,
}

impl ReadBuffer {
    /// A buffer holding `leftover` (bytes read along with the handshake).
    pub(crate) fn from_slice(leftover: &[u8]) -> ReadBuffer {
        ReadBuffer {
            buf: BytesMut::from(leftover),
            pos: 0,
        }
    }

    /// The unconsumed bytes.
    pub(crate) fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The unconsumed bytes, to unmask in place.
    pub(crate) fn unread_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.pos..]
    }

    /// How many bytes are unconsumed.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.len() == self.pos
    }

    /// Whether the buffer holds an allocation at all.
    pub(crate) fn has_allocation(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Room for reading more without moving or reallocating.
    pub(crate) fn spare(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    /// Consumes the first `n` unconsumed bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.pos += n;
        if self.pos == self.buf.len() {
            // Empty: start over at the front of the same allocation.
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Splits off the first `n` unconsumed bytes, sharing the allocation.
    pub(crate) fn split_to(&mut self, n: usize) -> BytesMut {
        self.compact();
        self.buf.split_to(n)
    }

    /// Makes room for at least `additional` more bytes after the
    /// unconsumed ones (dropping the consumed ones first).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.compact();
        self.buf.reserve(additional);
    }

    /// The buffer to read into: reads append after the unconsumed bytes.
    pub(crate) fn as_bytes_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Takes the allocation out if nothing is unconsumed, leaving none.
    pub(crate) fn take_if_empty(&mut self) -> Option<BytesMut> {
        if self.is_empty() && self.has_allocation() {
            Some(std::mem::take(&mut self.buf))
        } else {
            None
        }
    }

    /// Uses `buffer` (emptied) if this one holds no allocation.
    pub(crate) fn adopt(&mut self, mut buffer: BytesMut) {
        debug_assert!(!self.has_allocation());
        buffer.clear();
        self.buf = buffer;
        self.pos = 0;
    }

    /// Drops the consumed bytes from the front of `buf`.
    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.advance(self.pos);
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<u8>),
        Consume(usize),
        Split(usize),
        Reserve(usize),
        TakeAndAdopt,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Op::Append),
            (0usize..400).prop_map(Op::Consume),
            (0usize..400).prop_map(Op::Split),
            (0usize..5000).prop_map(Op::Reserve),
            Just(Op::TakeAndAdopt),
        ]
    }

    proptest! {
        /// Any sequence of operations leaves the same unconsumed bytes as a
        /// plain `Vec` model, and split-off pieces hold what was split.
        #[test]
        fn agrees_with_a_vec(
            leftover in proptest::collection::vec(any::<u8>(), 0..50),
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let mut buffer = ReadBuffer::from_slice(&leftover);
            let mut model = leftover.clone();
            let mut held = Vec::new();
            for op in ops {
                match op {
                    Op::Append(bytes) => {
                        buffer.as_bytes_mut().put_slice(&bytes);
                        model.extend_from_slice(&bytes);
                    }
                    Op::Consume(n) => {
                        let n = n.min(model.len());
                        buffer.consume(n);
                        model.drain(..n);
                    }
                    Op::Split(n) => {
                        let n = n.min(model.len());
                        let piece = buffer.split_to(n).freeze();
                        let expected: Vec<u8> = model.drain(..n).collect();
                        prop_assert_eq!(&piece[..], &expected[..]);
                        held.push((piece, expected));
                    }
                    Op::Reserve(n) => {
                        buffer.reserve(n);
                        prop_assert!(buffer.spare() >= n);
                    }
                    Op::TakeAndAdopt => {
                        if let Some(taken) = buffer.take_if_empty() {
                            prop_assert!(!buffer.has_allocation());
                            buffer.adopt(taken);
                        }
                    }
                }
                prop_assert_eq!(buffer.unread(), &model[..]);
                prop_assert_eq!(buffer.len(), model.len());
                prop_assert_eq!(buffer.is_empty(), model.is_empty());
                // The invariant: an empty buffer starts at its front.
                prop_assert!(buffer.pos < buffer.buf.len() || (buffer.pos == 0 && buffer.buf.is_empty()));
            }
            // Pieces split off earlier were not touched by later reads.
            for (piece, expected) in held {
                prop_assert_eq!(&piece[..], &expected[..]);
            }
        }
    }

    #[test]
    fn consuming_everything_keeps_the_whole_allocation_for_the_next_read() {
        let mut buffer = ReadBuffer::default();
        buffer.reserve(4096);
        let capacity = buffer.spare();
        buffer.as_bytes_mut().put_slice(&[7; 22]);
        buffer.consume(6);
        buffer.consume(16);
        assert!(buffer.is_empty());
        assert_eq!(buffer.spare(), capacity);
    }
}

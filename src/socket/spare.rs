//! Per-thread spare buffers, so that busy sockets reuse allocations
//! without idle ones holding any.
//!
//! - The read spare: a read buffer given back by a socket that went quiet,
//!   for the next socket on this thread that needs one. Busy sockets in a
//!   closed loop take turns going quiet, so without it each would free and
//!   allocate a buffer per message; with it, a thread holds at most one
//!   spare and an idle socket still holds none.
//! - The message spare: the allocation of a large message that was sent
//!   and is no longer referenced (an echoed message, typically), for the
//!   next large message received on this thread. Without it every large
//!   message is a fresh allocation that the allocator may take from (and
//!   give back to) the OS, and the kernel then zeroes and maps its pages
//!   again, faulting every page in anew (BENCHMARKS.md has the count).
//!
//! A thread keeps one read spare, and message spares up to
//! [`MESSAGE_SPARES_MAX`] bytes in all (a few sockets on one thread can be
//! receiving and sending large messages at once).

use std::cell::{Cell, RefCell};

use bytes::{Buf, Bytes, BytesMut};

/// Messages from this size up are assembled in the message spare, and sent
/// ones are kept as a spare.
pub(crate) const MESSAGE_SPARE_MIN: usize = 64 * 1024;

/// The largest allocation kept as a message spare, and the most all of a
/// thread's message spares hold together.
pub(crate) const MESSAGE_SPARES_MAX: usize = 8 * 1024 * 1024;

thread_local! {
    static READ: Cell<Option<BytesMut>> = const { Cell::new(None) };
    static MESSAGES: RefCell<MessageSpares> = const {
        RefCell::new(MessageSpares { buffers: Vec::new(), bytes: 0 })
    };
}

/// A thread's message spares.
struct MessageSpares {
    buffers: Vec<BytesMut>,
    /// The capacity of `buffers`, in all.
    bytes: usize,
}

/// Takes this thread's spare read buffer, emptied.
pub(crate) fn take_read_buffer() -> Option<BytesMut> {
    take(&READ)
}

/// Offers `buffer` as this thread's spare read buffer; it is dropped if
/// the thread has one already or it is larger than `max`.
pub(crate) fn give_read_buffer(buffer: BytesMut, max: usize) {
    if buffer.capacity() <= max {
        give(&READ, buffer);
    }
}

/// Takes one of this thread's spare message buffers, emptied.
pub(crate) fn take_message_buffer() -> Option<BytesMut> {
    let mut buffer = MESSAGES
        .try_with(|spares| {
            let mut spares = spares.borrow_mut();
            let buffer = spares.buffers.pop()?;
            spares.bytes -= buffer.capacity();
            Some(buffer)
        })
        .ok()
        .flatten()?;
    buffer.clear();
    Some(buffer)
}

/// Offers the allocation of a sent message as a spare message buffer:
/// kept if the message was large, nothing else refers to it (the
/// application let go of it, and it is no slice of a read buffer), and the
/// thread's spares have room for it.
pub(crate) fn recycle_message(data: Bytes) {
    if data.len() < MESSAGE_SPARE_MIN || data.len() > MESSAGE_SPARES_MAX {
        return;
    }
    if let Ok(buffer) = data.try_into_mut() {
        give_message_buffer(buffer);
    }
}

/// Offers a message buffer no one else refers to (an assembly buffer whose
/// contents were copied out) as this thread's spare message buffer.
pub(crate) fn give_message_buffer(buffer: BytesMut) {
    let capacity = buffer.capacity();
    if capacity < MESSAGE_SPARE_MIN {
        return;
    }
    // During thread teardown the spares are gone: the buffer is dropped.
    let _ = MESSAGES.try_with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.bytes + capacity <= MESSAGE_SPARES_MAX {
            spares.bytes += capacity;
            spares.buffers.push(buffer);
        }
    });
}

/// The page size at which copies alias (see [`place`]).
pub(crate) const PAGE: usize = 4096;

/// Where in a page large reads should land, relative to where the frame
/// they belong to starts in the sender's page: half a page away.
pub(crate) const READ_PAGE_OFFSET: usize = PAGE / 2;

/// Readies the empty `buffer` for at least `capacity` bytes that start at
/// `page_offset` within a 4 KiB page (it may reallocate, or move back to
/// the front of its allocation, to make room for the shift).
///
/// Why: the kernel copies received data out of its socket buffers with
/// `rep movsb`, and when the destination lies a few bytes after the source
/// modulo 4 KiB, the stores alias the loads that follow them ("4K
/// aliasing") and the copy runs at a half or a third of its speed. A
/// sender writing a frame into a drained connection (the closed-loop case)
/// often starts it at the beginning of a page: the kernel reuses its page
/// fragment from offset 0 once the previous data's pages are freed. So
/// payload read straight into a buffer is placed half a page away from
/// where it sits in such a page: as far from aliasing as can be, whichever
/// way the copy runs. `bench/copy_alignment.py` measures the effect with
/// plain loopback sockets (figures in BENCHMARKS.md and
/// `bench/results/copy-alignment.md`).
pub(crate) fn place(buffer: &mut BytesMut, capacity: usize, page_offset: usize) {
    debug_assert!(buffer.is_empty());
    let shift = |buffer: &BytesMut| page_offset.wrapping_sub(buffer.as_ptr() as usize) % PAGE;
    if buffer.capacity() < capacity + shift(buffer) {
        // Empty: this moves nothing; it either takes back the front of the
        // allocation or allocates anew.
        buffer.reserve(capacity + PAGE);
    }
    let shift = shift(buffer);
    buffer.resize(shift, 0);
    buffer.advance(shift);
}

fn take(slot: &'static std::thread::LocalKey<Cell<Option<BytesMut>>>) -> Option<BytesMut> {
    let mut buffer = slot.try_with(Cell::take).ok().flatten()?;
    buffer.clear();
    Some(buffer)
}

fn give(slot: &'static std::thread::LocalKey<Cell<Option<BytesMut>>>, buffer: BytesMut) {
    // During thread teardown the slot is gone: the buffer is just dropped.
    let _ = slot.try_with(|spare| {
        let held = spare.take();
        spare.set(Some(held.unwrap_or(buffer)));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_large_message_becomes_the_next_message_buffer() {
        let data = Bytes::from(vec![7u8; MESSAGE_SPARE_MIN]);
        let address = data.as_ptr();
        recycle_message(data);
        let spare = take_message_buffer().expect("a spare");
        assert!(spare.is_empty());
        assert!(spare.capacity() >= MESSAGE_SPARE_MIN);
        assert_eq!(spare.as_ptr(), address, "the same allocation");
        assert!(take_message_buffer().is_none(), "taken once");
    }

    #[test]
    fn small_shared_or_huge_messages_are_not_kept() {
        recycle_message(Bytes::from(vec![0u8; MESSAGE_SPARE_MIN - 1]));
        assert!(take_message_buffer().is_none(), "small");

        let data = Bytes::from(vec![0u8; MESSAGE_SPARE_MIN]);
        let held = data.clone();
        recycle_message(data);
        assert!(take_message_buffer().is_none(), "still referenced");
        assert_eq!(held.len(), MESSAGE_SPARE_MIN);

        recycle_message(Bytes::from(vec![0u8; MESSAGE_SPARES_MAX + 1]));
        assert!(take_message_buffer().is_none(), "too large");
    }

    #[test]
    fn message_spares_stay_within_their_budget() {
        // Four fit, with room left for a smaller one but not for a fifth.
        let size = MESSAGE_SPARES_MAX / 4 - MESSAGE_SPARE_MIN;
        for _ in 0..5 {
            recycle_message(Bytes::from(vec![1u8; size]));
        }
        recycle_message(Bytes::from(vec![2u8; 2 * MESSAGE_SPARE_MIN]));
        let mut kept = Vec::new();
        while let Some(buffer) = take_message_buffer() {
            assert!(buffer.is_empty());
            kept.push(buffer.capacity());
        }
        let total: usize = kept.iter().sum();
        assert!(total <= MESSAGE_SPARES_MAX, "{kept:?}");
        assert_eq!(kept.len(), 5, "four large and the smaller one: {kept:?}");
    }

    #[test]
    fn placing_starts_the_buffer_at_the_page_offset_with_the_room_asked_for() {
        let mut buffer = BytesMut::new();
        for (capacity, offset) in [
            (100, 0),
            (5000, 2048),
            (70_000, 2062),
            (10, 4095),
            (70_000, 2062),
        ] {
            buffer.clear();
            place(&mut buffer, capacity, offset);
            assert!(buffer.is_empty());
            assert_eq!(
                buffer.as_ptr() as usize % PAGE,
                offset,
                "{capacity} at {offset}"
            );
            assert!(buffer.capacity() >= capacity, "{capacity} at {offset}");
        }
        // Placed where it already is: the same allocation, untouched.
        let before = (buffer.as_ptr(), buffer.capacity());
        place(&mut buffer, 70_000, 2062);
        assert_eq!((buffer.as_ptr(), buffer.capacity()), before);
    }

    #[test]
    fn a_placed_buffer_keeps_its_place_through_a_sent_message() {
        let mut buffer = BytesMut::new();
        place(&mut buffer, MESSAGE_SPARE_MIN, 2062);
        buffer.extend_from_slice(&[3; MESSAGE_SPARE_MIN]);
        let data = buffer.freeze();
        let address = data.as_ptr();
        recycle_message(data);
        let mut spare = take_message_buffer().expect("a spare");
        assert_eq!(spare.as_ptr(), address);
        place(&mut spare, MESSAGE_SPARE_MIN, 2062);
        assert_eq!(spare.as_ptr(), address, "already in place");
    }

    #[test]
    fn a_thread_keeps_one_read_spare() {
        give_read_buffer(BytesMut::with_capacity(1024), 4096);
        give_read_buffer(BytesMut::with_capacity(2048), 4096);
        let read = take_read_buffer().expect("the first read spare");
        assert!((1024..2048).contains(&read.capacity()));
        assert!(take_read_buffer().is_none());
        give_read_buffer(BytesMut::with_capacity(8192), 4096);
        assert!(take_read_buffer().is_none(), "larger than allowed");
    }
}

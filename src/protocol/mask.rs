//! In-place XOR (un)masking (RFC 6455 §5.3).
//!
//! The mask is applied a 64-byte block at a time as eight `u64` lanes,
//! which LLVM turns into vector instructions; no `unsafe` is needed for
//! that. A byte-by-byte reference checks it in the tests below at every
//! length, phase and alignment.

/// XORs `buf` with `mask`, starting at mask byte `phase` (0..4).
///
/// Returns the phase for the byte after `buf`, so a payload can be unmasked
/// in any number of pieces.
#[inline]
pub(crate) fn apply_mask(buf: &mut [u8], mask: [u8; 4], phase: usize) -> usize {
    let phase = phase & 3;
    let mut key = mask;
    key.rotate_left(phase);
    let key32 = u32::from_ne_bytes(key);
    let key64 = u64::from(key32) | (u64::from(key32) << 32);

    let mut blocks = buf.chunks_exact_mut(64);
    for block in &mut blocks {
        for lane in block.chunks_exact_mut(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(lane);
            let word = u64::from_ne_bytes(word) ^ key64;
            lane.copy_from_slice(&word.to_ne_bytes());
        }
    }
    let rest = blocks.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for lane in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(lane);
        let word = u64::from_ne_bytes(word) ^ key64;
        lane.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
    (phase + buf.len()) & 3
}

/// The byte-at-a-time definition from RFC 6455 §5.3, for tests and
/// benchmarks.
#[cfg(any(test, feature = "internals"))]
pub(crate) fn apply_mask_reference(buf: &mut [u8], mask: [u8; 4], phase: usize) -> usize {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= mask[(phase + i) % 4];
    }
    (phase + buf.len()) % 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_example() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut data = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&data, b"Hello");
    }

    #[test]
    fn every_length_phase_and_alignment() {
        let mask = [0xA1, 0x5B, 0x00, 0xFF];
        let source: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for offset in 0..16 {
            for len in 0..=(source.len() - offset) {
                for phase in 0..4 {
                    let mut fast = source.clone();
                    let mut slow = source.clone();
                    let a = apply_mask(&mut fast[offset..offset + len], mask, phase);
                    let b = apply_mask_reference(&mut slow[offset..offset + len], mask, phase);
                    assert_eq!(a, b);
                    assert_eq!(fast, slow, "offset {offset} len {len} phase {phase}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_reference(
            data in prop::collection::vec(any::<u8>(), 0..2048),
            mask: [u8; 4],
            offset in 0usize..64,
            phase in 0usize..4,
            splits in prop::collection::vec(0usize..2048, 0..6),
        ) {
            let offset = offset.min(data.len());
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask_reference(&mut slow[offset..], mask, phase);
            // Unmask in arbitrary pieces, carrying the phase.
            let mut cuts: Vec<usize> = splits.into_iter().map(|s| offset + s % (data.len() - offset + 1)).collect();
            cuts.push(offset);
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut p = phase;
            for pair in cuts.windows(2) {
                p = apply_mask(&mut fast[pair[0]..pair[1]], mask, p);
            }
            prop_assert_eq!(fast, slow);
        }
    }
}

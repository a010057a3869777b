//! Incremental, fail-fast UTF-8 validation (RFC 6455 §8.1).
//!
//! Text messages arrive in pieces: fragments, and within a fragment
//! whatever each read returned. [`Utf8Validator`] validates every piece as
//! it arrives with `simdutf8` (SIMD where the CPU has it) and carries at
//! most three bytes of an unfinished code point to the next piece. A piece
//! is rejected as soon as it cannot be the prefix of valid UTF-8, so an
//! invalid message fails at its first bad byte, not at its end.

use simdutf8::compat::from_utf8;

/// Validation state carried between pieces of one text message.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Utf8Validator {
    partial: [u8; 4],
    partial_len: u8,
}

/// The input is not (the prefix of) valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InvalidUtf8;

impl Utf8Validator {
    /// Validates the next piece of the message.
    pub(crate) fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            // Finish the code point the previous piece left open, one byte
            // at a time (at most three), so an impossible continuation is
            // caught at once.
            while let Some((&byte, rest)) = input.split_first() {
                self.partial[usize::from(self.partial_len)] = byte;
                self.partial_len += 1;
                input = rest;
                match from_utf8(&self.partial[..usize::from(self.partial_len)]) {
                    Ok(_) => {
                        self.partial_len = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                    Err(_) => {}
                }
            }
            if self.partial_len > 0 {
                return Ok(());
            }
        }
        match from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                // A valid prefix of a code point at the end: keep it.
                let tail = &input[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Checks that the message did not end inside a code point.
    pub(crate) fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.partial_len == 0;
        *self = Utf8Validator::default();
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_in_pieces(data: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut start = 0;
        for &cut in cuts {
            v.feed(&data[start..cut])?;
            start = cut;
        }
        v.feed(&data[start..])?;
        v.finish()
    }

    #[test]
    fn valid_sequences_split_at_every_boundary() {
        let text = "a\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}κόσμε€𝄞".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(validate_in_pieces(text, &[i, j]), Ok(()), "cuts {i} {j}");
            }
        }
        // Byte by byte.
        let cuts: Vec<usize> = (1..text.len()).collect();
        assert_eq!(validate_in_pieces(text, &cuts), Ok(()));
    }

    #[test]
    fn invalid_sequences() {
        let cases: &[&[u8]] = &[
            b"\xC0\xAF",         // overlong '/'
            b"\xE0\x80\xAF",     // overlong
            b"\xF0\x80\x80\xAF", // overlong
            b"\xED\xA0\x80",     // U+D800
            b"\xED\xBF\xBF",     // U+DFFF
            b"\xF4\x90\x80\x80", // U+110000
            b"\xFF",             // never valid
            b"\x80",             // lone continuation
            b"\xCE\xBA\xE1\xBD", // truncated at end
        ];
        for case in cases {
            assert_eq!(validate_in_pieces(case, &[]), Err(InvalidUtf8), "{case:x?}");
        }
    }

    #[test]
    fn fails_fast_on_an_impossible_prefix() {
        // U+110000 is detected from its second byte, before the message
        // (or even the code point) ends.
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(b"ok\xF4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(b"\xED\xA0"), Err(InvalidUtf8));
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(b"\xE0"), Ok(()));
        assert_eq!(v.feed(b"\x80"), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_std_at_any_split(
            data in prop::collection::vec(
                prop_oneof![any::<u8>(), 0x80u8..0xC0, 0xE0u8..0xF5, Just(b'a')], 0..64),
            cuts in prop::collection::vec(0usize..64, 0..5),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let expected = std::str::from_utf8(&data).is_ok();
            prop_assert_eq!(validate_in_pieces(&data, &cuts).is_ok(), expected);
        }

        #[test]
        fn valid_strings_pass_at_any_split(s in "\\PC{0,40}", cuts in prop::collection::vec(0usize..200, 0..5)) {
            let data = s.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            prop_assert_eq!(validate_in_pieces(data, &cuts), Ok(()));
        }
    }
}

//! [`Utf8Bytes`]: text that is cheap to clone.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// UTF-8 text that is cheap to clone: cloning shares the text (a
/// reference count), so one text message sent to many sockets is never
/// copied per socket before the socket frames it. Named and used as
/// axum's and tungstenite's `Utf8Bytes`.
///
/// The text lives in a [`Bytes`]: a received text costs one allocation,
/// and a shared header only once it is first cloned. Making one from a
/// `String` moves it (no copy), from a `&str` copies it once;
/// [`into_bytes`](Self::into_bytes) hands the [`Bytes`] over. It reads as
/// a `&str` for free ([`as_str`](Self::as_str), `Deref`).
///
/// ```
/// use tower_websockets::{Message, Utf8Bytes};
///
/// let text = Utf8Bytes::from("hello, room");
/// let for_alice = Message::Text(text.clone()); // no copy of the text
/// let for_bob = Message::Text(text);
/// assert_eq!(for_alice, for_bob);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(
    /// Always valid UTF-8: every constructor takes a `str`, or checks.
    Bytes,
);

impl Utf8Bytes {
    /// A text from a `'static` string, without copying it.
    pub const fn from_static(text: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(text.as_bytes()))
    }

    /// The text.
    #[inline]
    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        // SAFETY: `self.0` holds valid UTF-8: `from_static`, `From<String>`,
        // `From<&String>` and `From<&str>` take it from a `str`, and
        // `TryFrom<Bytes>` / `TryFrom<Vec<u8>>` check it; nothing else makes
        // a `Utf8Bytes`, and a `Bytes` never changes what it holds. Checking
        // again here would make every `as_str` (and `Deref`) O(n); the
        // property test `as_str_agrees_with_a_checked_view` compares the two.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The text's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text as [`Bytes`], shared (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<str> for Utf8Bytes {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Utf8Bytes(Bytes::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(text: &String) -> Self {
        Utf8Bytes::from(text.as_str())
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.into_bytes()
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;

    /// Checks that `bytes` are UTF-8, and shares them.
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

impl TryFrom<Vec<u8>> for Utf8Bytes {
    type Error = std::string::FromUtf8Error;

    fn try_from(bytes: Vec<u8>) -> Result<Self, Self::Error> {
        String::from_utf8(bytes).map(Utf8Bytes::from)
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Utf8Bytes {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Utf8Bytes> for str {
    fn eq(&self, other: &Utf8Bytes) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Utf8Bytes> for &str {
    fn eq(&self, other: &Utf8Bytes) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Utf8Bytes> for String {
    fn eq(&self, other: &Utf8Bytes) -> bool {
        self == other.as_str()
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_bytes() {
        let text = Utf8Bytes::from(String::from("shared text"));
        let clone = text.clone();
        assert_eq!(text.as_bytes().as_ptr(), clone.as_bytes().as_ptr());
        assert_eq!(clone, "shared text");
        assert_eq!(&*clone, "shared text");
        // And as Bytes, still the same text.
        let bytes = clone.into_bytes();
        assert_eq!(bytes.as_ptr(), text.as_bytes().as_ptr());
    }

    proptest::proptest! {
        /// The unchecked `as_str` against a checked view of the same
        /// bytes, for every way a `Utf8Bytes` is made, and for bytes that
        /// are not UTF-8 (which must not get in).
        #[test]
        fn as_str_agrees_with_a_checked_view(
            text in proptest::string::string_regex("(?s).{0,300}").unwrap(),
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            cut in 0usize..300,
        ) {
            let made = [
                Utf8Bytes::from(text.clone()),
                Utf8Bytes::from(text.as_str()),
                Utf8Bytes::from(&text),
                Utf8Bytes::try_from(Bytes::from(text.clone())).unwrap(),
                Utf8Bytes::try_from(text.clone().into_bytes()).unwrap(),
                Utf8Bytes::from(text.clone()).clone(),
            ];
            for made in &made {
                let checked = std::str::from_utf8(made.as_bytes()).unwrap();
                proptest::prop_assert_eq!(made.as_str(), checked);
                proptest::prop_assert_eq!(made.as_str(), text.as_str());
            }
            // Arbitrary bytes get in exactly when they are UTF-8, and a cut
            // of valid text only at a character boundary.
            let bytes = Bytes::from(raw.clone());
            proptest::prop_assert_eq!(
                Utf8Bytes::try_from(bytes).ok().map(|t| t.as_str().to_owned()),
                String::from_utf8(raw).ok()
            );
            let cut = cut.min(text.len());
            let piece = Bytes::from(text.clone()).slice(..cut);
            proptest::prop_assert_eq!(
                Utf8Bytes::try_from(piece).is_ok(),
                text.is_char_boundary(cut)
            );
        }
    }

    #[test]
    fn only_utf8_gets_in() {
        assert!(Utf8Bytes::try_from(Bytes::from_static(b"\xff")).is_err());
        assert!(Utf8Bytes::try_from(vec![0xc3, 0x28]).is_err());
        let ok = Utf8Bytes::try_from(Bytes::from_static("é".as_bytes())).unwrap();
        assert_eq!(ok.as_str(), "é");
        assert_eq!(Utf8Bytes::from_static("static").len(), 6);
        assert_eq!(format!("{ok} {ok:?}"), "é \"é\"");
    }
}

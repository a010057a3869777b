//! [`Utf8Bytes`]: text that is cheap to clone.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

/// UTF-8 text that is cheap to clone: cloning shares the text (a
/// reference count), so one text message sent to many sockets is never
/// copied per socket before the socket frames it. Named and used as
/// axum's and tungstenite's `Utf8Bytes`.
///
/// It reads as a `&str` for free ([`as_str`](Self::as_str), `Deref`),
/// without `unsafe`: the text lives in an `Arc<str>`. Making one from a
/// `String` or `&str` copies the text once; [`into_bytes`](Self::into_bytes)
/// shares it as [`Bytes`] without a copy.
///
/// ```
/// use tower_websockets::{Message, Utf8Bytes};
///
/// let text = Utf8Bytes::from("hello, room");
/// let for_alice = Message::Text(text.clone()); // no copy of the text
/// let for_bob = Message::Text(text);
/// assert_eq!(for_alice, for_bob);
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(Arc<str>);

impl Utf8Bytes {
    /// A text from a `'static` string.
    pub fn from_static(text: &'static str) -> Self {
        Utf8Bytes(Arc::from(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The text as [`Bytes`], sharing it (no copy).
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(ArcText(self.0))
    }
}

/// An `Arc<str>` as the owner of a [`Bytes`].
struct ArcText(Arc<str>);

impl AsRef<[u8]> for ArcText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Default for Utf8Bytes {
    fn default() -> Self {
        Utf8Bytes::from_static("")
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
        Utf8Bytes(Arc::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Utf8Bytes(Arc::from(text))
    }
}

impl From<Arc<str>> for Utf8Bytes {
    fn from(text: Arc<str>) -> Self {
        Utf8Bytes(text)
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

    /// Checks that `bytes` are UTF-8, and copies them.
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&bytes).map(Utf8Bytes::from)
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

//! Close codes (RFC 6455 §7.4). Close-frame payloads are encoded and
//! parsed with the other frame bytes, in `frame`.

use std::fmt;
use std::num::NonZeroU16;

/// A close status code that may appear in a Close frame (RFC 6455 §7.4).
///
/// The ASP.NET `WebSocketCloseStatus` analog. Only codes that are valid on
/// the wire can be built: 1000–1003, 1007–1014 and 3000–4999. The codes an
/// endpoint must never send (1004, 1005, 1006, 1015) cannot be
/// represented; "no status code" is `None` where a code is optional.
///
/// ```
/// use tower_websockets::CloseCode;
///
/// assert_eq!(CloseCode::try_from(1000), Ok(CloseCode::NORMAL));
/// assert_eq!(u16::from(CloseCode::MESSAGE_TOO_BIG), 1009);
/// assert!(CloseCode::try_from(4000).is_ok()); // private use
/// assert!(CloseCode::try_from(1005).is_err()); // never on the wire
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(NonZeroU16);

/// A close code outside the ranges RFC 6455 allows on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidCloseCode(pub u16);

impl fmt::Display for InvalidCloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "close code {} is not allowed on the wire", self.0)
    }
}

impl std::error::Error for InvalidCloseCode {}

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        impl CloseCode {
            $(
                $(#[$doc])*
                pub const $name: CloseCode = match NonZeroU16::new($value) {
                    Some(v) => CloseCode(v),
                    None => unreachable!(),
                };
            )*
        }
    };
}

codes! {
    /// 1000: the purpose of the connection has been fulfilled
    /// (ASP.NET `NormalClosure`).
    NORMAL = 1000,
    /// 1001: the endpoint is going away, e.g. a server shutting down
    /// (ASP.NET `EndpointUnavailable`).
    GOING_AWAY = 1001,
    /// 1002: a protocol error (ASP.NET `ProtocolError`).
    PROTOCOL_ERROR = 1002,
    /// 1003: a data type the endpoint cannot accept
    /// (ASP.NET `InvalidMessageType`).
    UNSUPPORTED_DATA = 1003,
    /// 1007: data inconsistent with the message type, such as invalid
    /// UTF-8 in a text message (ASP.NET `InvalidPayloadData`).
    INVALID_PAYLOAD = 1007,
    /// 1008: a message that violates the endpoint's policy
    /// (ASP.NET `PolicyViolation`).
    POLICY_VIOLATION = 1008,
    /// 1009: a message too big to process (ASP.NET `MessageTooBig`).
    MESSAGE_TOO_BIG = 1009,
    /// 1010: the client expected an extension the server did not
    /// negotiate (ASP.NET `MandatoryExtension`).
    MANDATORY_EXTENSION = 1010,
    /// 1011: an unexpected condition on the server
    /// (ASP.NET `InternalServerError`).
    INTERNAL_ERROR = 1011,
    /// 1012: the service is restarting.
    SERVICE_RESTART = 1012,
    /// 1013: try again later (temporary overload).
    TRY_AGAIN_LATER = 1013,
    /// 1014: a gateway or proxy received an invalid upstream response.
    BAD_GATEWAY = 1014,
}

impl CloseCode {
    /// Returns the code if RFC 6455 allows it on the wire.
    pub const fn new(code: u16) -> Option<CloseCode> {
        match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => match NonZeroU16::new(code) {
                Some(v) => Some(CloseCode(v)),
                None => None,
            },
            _ => None,
        }
    }

    /// The numeric value.
    pub const fn as_u16(self) -> u16 {
        self.0.get()
    }
}

impl TryFrom<u16> for CloseCode {
    type Error = InvalidCloseCode;

    fn try_from(code: u16) -> Result<Self, Self::Error> {
        CloseCode::new(code).ok_or(InvalidCloseCode(code))
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.as_u16()
    }
}

impl PartialEq<u16> for CloseCode {
    fn eq(&self, other: &u16) -> bool {
        self.as_u16() == *other
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.as_u16())
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_u16(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_ranges() {
        for code in 0..=u16::MAX {
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            assert_eq!(CloseCode::new(code).is_some(), allowed, "{code}");
        }
    }
}

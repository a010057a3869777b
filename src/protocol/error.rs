//! [`ProtocolError`]: what a peer can do wrong, and the close code each
//! violation is answered with.

use std::fmt;

use super::close::CloseCode;

/// A protocol violation by the peer, and the close code it is answered
/// with.
///
/// When the peer breaks the protocol the socket sends a Close frame with
/// [`close_code`](ProtocolError::close_code), closes the connection and
/// ends [`Aborted`](crate::WebSocketState::Aborted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1, RSV2 or RSV3 set without an extension that defines it.
    ReservedBits,
    /// A reserved opcode (3–7, 0xB–0xF).
    ReservedOpcode(u8),
    /// A 64-bit payload length with its most significant bit set.
    InvalidLength,
    /// A client frame without a mask (RFC 6455 §5.1).
    UnmaskedFrame,
    /// A control frame without FIN.
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload.
    ControlFrameTooLarge,
    /// A continuation frame with no message to continue.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is open.
    ExpectedContinuation,
    /// A Close frame with a 1-byte payload.
    InvalidClosePayload,
    /// A Close frame with a code not allowed on the wire.
    InvalidCloseCode(u16),
    /// Invalid UTF-8 in a text message or close reason.
    InvalidUtf8,
    /// A message longer than the configured maximum message size.
    MessageTooLarge,
    /// A frame longer than the configured maximum frame size.
    FrameTooLarge,
    /// A compressed message (permessage-deflate, RFC 7692) whose payload
    /// is not valid DEFLATE data.
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code this violation is answered with: 1007 for invalid
    /// UTF-8, 1009 for exceeded limits, 1002 for everything else.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::MessageTooLarge | ProtocolError::FrameTooLarge => {
                CloseCode::MESSAGE_TOO_BIG
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short reason for the Close frame.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved bits set",
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::InvalidLength => "invalid payload length",
            ProtocolError::UnmaskedFrame => "unmasked client frame",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::ControlFrameTooLarge => "control frame too large",
            ProtocolError::UnexpectedContinuation => "unexpected continuation frame",
            ProtocolError::ExpectedContinuation => "expected continuation frame",
            ProtocolError::InvalidClosePayload => "invalid close payload",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::InvalidUtf8 => "invalid utf-8",
            ProtocolError::MessageTooLarge => "message too large",
            ProtocolError::FrameTooLarge => "frame too large",
            ProtocolError::InvalidCompressedData => "invalid compressed data",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ProtocolError {}

//! The sans-IO RFC 6455 engine.
//!
//! Nothing in here performs I/O, knows about tokio, tower or hyper, or
//! allocates on the hot path. It turns bytes into validated frame events
//! ([`Decoder`]) and frames into bytes ([`encode_header`]); the socket in
//! [`crate::socket`] moves the bytes.
//!
//! The pieces, each in its own file:
//!
//! - `frame`: the frame header codec (7/16/64-bit lengths, masks) and
//!   [`OpCode`].
//! - `mask`: in-place XOR unmasking, a machine word at a time.
//! - `utf8`: incremental, fail-fast UTF-8 validation across fragments.
//! - `close`: [`CloseCode`] and close-frame payloads.
//! - `decoder`: the receive state machine (fragmentation, control
//!   frames, limits, UTF-8) that maps every violation to its close code.

pub(crate) mod close;
pub(crate) mod decoder;
pub(crate) mod frame;
pub(crate) mod mask;
pub(crate) mod utf8;

pub use close::CloseCode;
pub use decoder::ProtocolError;
pub(crate) use decoder::{ControlFrame, Decoder, Header, Limits, WholeFrame};
pub(crate) use frame::{MAX_HEADER_LEN, OpCode, encode_header};

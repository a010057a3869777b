//! The sans-IO RFC 6455 engine.
//!
//! Nothing in here performs I/O, knows about tokio, tower or hyper, or
//! allocates on the hot path. It turns bytes into validated frame events
//! ([`Decoder`]) and frames into bytes ([`encode_header`]); the socket in
//! [`crate::socket`] moves the bytes.
//!
//! The pieces, each in its own file:
//!
//! - `close`: [`CloseCode`], the codes allowed on the wire.
//! - `error`: [`ProtocolError`], each violation and its close code.
//! - `frame`: the bytes of a frame both ways: the header codec (7/16/64-bit
//!   lengths, masks), [`OpCode`], whole server frames appended to an
//!   output queue, Close payloads encoded and parsed.
//! - `mask`: in-place XOR unmasking, a machine word at a time.
//! - `utf8`: incremental, fail-fast UTF-8 validation across fragments.
//! - `deflate`: permessage-deflate's codec (RFC 7692 §7.2): compressing a
//!   message without its flush tail, inflating into bounded space.
//! - `compression`: a connection's permessage-deflate state: the message
//!   being inflated (bounded, validated) and the codecs, pooled per thread
//!   without context takeover.
//! - `output`: the output queue: owned frames, and shared chunks of
//!   prepared messages, in order, written vectored.
//! - `prepared`: a message framed (and compressed, per variant) once for
//!   any number of connections.
//! - `decoder`: the receive state machine (fragmentation, control
//!   frames, limits, UTF-8) that maps every violation to its close code.
//! - `connection`: [`Connection`], the whole server side of a connection
//!   without I/O: the decoder, the close handshake, pending control
//!   frames, the outgoing message's fragment state and the output queue.
//!
//! Each file depends only on those above it in this list.

pub(crate) mod close;
pub(crate) mod compression;
pub(crate) mod connection;
pub(crate) mod decoder;
pub(crate) mod deflate;
pub(crate) mod error;
pub(crate) mod frame;
pub(crate) mod mask;
pub(crate) mod output;
pub(crate) mod prepared;
pub(crate) mod utf8;

pub use close::CloseCode;
pub(crate) use compression::CompressionConfig;
pub use connection::WebSocketState;
pub(crate) use connection::{Connection, Incoming, Queued, SendRejected};
pub(crate) use decoder::{Limits, WholeFrame};
pub use error::ProtocolError;
pub(crate) use frame::header_len;
pub(crate) use output::{MAX_SLICES, Output};
pub(crate) use prepared::SharedFrames;

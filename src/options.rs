//! [`WebSocketOptions`]: the `WebSocketOptions` of ASP.NET Core, plus the
//! limits it lacks.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};

/// Configuration for [`WebSocketLayer`](crate::WebSocketLayer), the
/// analog of ASP.NET Core's `WebSocketOptions`.
///
/// Build it with the chainable setters and hand it to
/// [`WebSocketLayer::new`](crate::WebSocketLayer::new), which validates it
/// once and reports a bad setting as an [`OptionsError`].
///
/// The security limits ([`max_message_size`](Self::max_message_size),
/// [`max_frame_size`](Self::max_frame_size),
/// [`allowed_origins`](Self::allowed_origins),
/// [`close_timeout`](Self::close_timeout)) are kept apart from the tuning
/// knobs ([`receive_buffer_size`](Self::receive_buffer_size),
/// [`keep_alive_interval`](Self::keep_alive_interval)) in the docs below.
///
/// ```
/// use std::time::Duration;
/// use tower_websockets::{WebSocketLayer, WebSocketOptions};
///
/// let layer = WebSocketLayer::new(
///     WebSocketOptions::default()
///         .keep_alive_interval(Some(Duration::from_secs(30)))
///         .allowed_origins(["https://client.example"])
///         .max_message_size(1 << 20),
/// )
/// .expect("valid options");
/// # let _ = layer;
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct WebSocketOptions {
    pub(crate) keep_alive_interval: Option<Duration>,
    pub(crate) keep_alive_timeout: Option<Duration>,
    pub(crate) receive_buffer_size: usize,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) require_origin: bool,
    pub(crate) max_message_size: usize,
    pub(crate) max_frame_size: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) max_buffered_amount: usize,
    pub(crate) permessage_deflate: Option<DeflateOptions>,
    pub(crate) max_sockets: Option<usize>,
}

/// permessage-deflate (RFC 7692) settings, for
/// [`WebSocketOptions::permessage_deflate`] or per socket
/// [`AcceptOptions::permessage_deflate`](crate::AcceptOptions::permessage_deflate)
/// (ASP.NET `WebSocketAcceptContext.DangerousEnableCompression`,
/// `DisableServerContextTakeover`, `ServerMaxWindowBits`).
///
/// Compression is off unless enabled: compressing secrets next to
/// attacker-chosen data in one TLS stream lets an attacker who sees the
/// compressed sizes guess the secrets (the CRIME and BREACH attacks). Turn
/// it on for data that does not mix the two, or use no context takeover
/// and keep secrets and attacker-controlled text in separate messages.
///
/// A client's offers are walked in its order and the first acceptable one
/// is accepted (RFC 7692 §5); the socket's
/// [`extensions`](crate::WebSocket::extensions) says what was agreed.
/// Window bits of 8 are honoured both ways although zlib's smallest window
/// is 9 bits: zlib never refers further back than its window less 262
/// bytes, so a 9-bit compressor stays within 250 bytes and its output is
/// valid for a client inflating with 8 bits (Node's `ws` does the same);
/// a client's 8-bit output is inflated with 9 bits, which decodes it.
///
/// Memory: with context takeover a socket keeps its compressor and
/// inflater, its context, for its whole life: 337.7 KiB per idle socket at
/// 15-bit windows, 225.7 at 12 and 213.2 at 9 (measured:
/// `bench/deflate/idle.mjs`, BENCHMARKS.md), most of it the compressor,
/// whose 128 KiB hash table and 64 KiB symbol buffer do not shrink with
/// the window. Without context takeover a codec is borrowed from a
/// per-thread pool for one message, and an idle socket costs 0.9 KiB more
/// than an uncompressed one.
///
/// ```
/// use tower_websockets::{DeflateOptions, WebSocketOptions};
///
/// let options = WebSocketOptions::default().permessage_deflate(Some(
///     DeflateOptions::default()
///         .server_no_context_takeover(true)
///         .client_no_context_takeover(true),
/// ));
/// # let _ = options;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateOptions {
    pub(crate) server_max_window_bits: u8,
    pub(crate) client_max_window_bits: u8,
    pub(crate) server_no_context_takeover: bool,
    pub(crate) client_no_context_takeover: bool,
    pub(crate) level: u32,
    pub(crate) threshold: usize,
}

impl Default for DeflateOptions {
    fn default() -> Self {
        DeflateOptions {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            level: 6,
            threshold: 256,
        }
    }
}

impl DeflateOptions {
    /// The largest window the server compresses with, 8–15 (ASP.NET
    /// `ServerMaxWindowBits`). Default: 15 (32 KiB). A client may ask for
    /// less. Smaller windows take less memory and compress less well; 8 is
    /// compressed with zlib's 9-bit window, which reaches 250 bytes back.
    #[must_use]
    pub fn server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits;
        self
    }

    /// The largest window the server lets a client that offers
    /// `client_max_window_bits` compress with, 8–15. Default: 15. Smaller
    /// windows shrink the server's inflater.
    #[must_use]
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits;
        self
    }

    /// Whether the server compresses every message on its own, without
    /// the ones before (ASP.NET `DisableServerContextTakeover`). Default:
    /// false. True costs compression on repetitive streams and saves the
    /// compressor's memory between messages.
    #[must_use]
    pub fn server_no_context_takeover(mut self, no_takeover: bool) -> Self {
        self.server_no_context_takeover = no_takeover;
        self
    }

    /// Whether to ask clients to compress every message on its own, so
    /// the server keeps no inflater between messages. Default: false.
    #[must_use]
    pub fn client_no_context_takeover(mut self, no_takeover: bool) -> Self {
        self.client_no_context_takeover = no_takeover;
        self
    }

    /// The compression level, 0 (stored) to 9 (smallest). Default: 6.
    ///
    /// zlib-rs picks its matcher by level as zlib-ng does: 1 "quick", 2
    /// "fast", 3–6 "medium", 7–9 zlib's classic lazy matching. On the
    /// benchmarks' 64 KiB JSON with context takeover, level 7 makes each
    /// reply 455 bytes instead of 1,060 for 1.8 times the codec's time
    /// (102.5 µs against 56.5 a message); at 1 KiB the reply hardly changes
    /// (19 bytes against 20) and the time grows 1.5 times (`deflate-limit
    /// --level`, BENCHMARKS.md).
    #[must_use]
    pub fn level(mut self, level: u32) -> Self {
        self.level = level;
        self
    }

    /// Whole messages shorter than this many bytes are sent uncompressed
    /// (a fragmented message is always compressed). Default: 256.
    #[must_use]
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), OptionsError> {
        if !(8..=15).contains(&self.server_max_window_bits) {
            return Err(OptionsError::WindowBits);
        }
        if !(8..=15).contains(&self.client_max_window_bits) {
            return Err(OptionsError::WindowBits);
        }
        if self.level > 9 {
            return Err(OptionsError::CompressionLevel);
        }
        Ok(())
    }

    /// The negotiation settings.
    pub(crate) fn negotiation(&self) -> crate::extensions::DeflateConfig {
        crate::extensions::DeflateConfig {
            server_max_window_bits: self.server_max_window_bits,
            client_max_window_bits: self.client_max_window_bits,
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
        }
    }
}

/// The default [`WebSocketOptions::keep_alive_interval`]: 30 seconds
/// (ASP.NET Core: 2 minutes), so that idle sockets stay alive behind
/// proxies that drop connections silent for 60 seconds (nginx's
/// `proxy_read_timeout`, AWS load balancers' idle timeout) and a dead peer
/// is found within a minute.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// The default [`WebSocketOptions::keep_alive_timeout`]: 30 seconds
/// (ASP.NET Core: none). With the default interval, a peer that vanished
/// without closing its connection is aborted within 60 seconds.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`WebSocketOptions::max_buffered_amount`]: 64 KiB.
pub const DEFAULT_MAX_BUFFERED_AMOUNT: usize = 64 * 1024;
/// The default [`WebSocketOptions::receive_buffer_size`]: 4 KiB, as ASP.NET
/// Core.
pub const DEFAULT_RECEIVE_BUFFER_SIZE: usize = 4 * 1024;
/// The default [`WebSocketOptions::max_message_size`]: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;
/// The default [`WebSocketOptions::max_frame_size`]: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;
/// The default [`WebSocketOptions::close_timeout`]: 10 seconds.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for WebSocketOptions {
    fn default() -> Self {
        WebSocketOptions {
            keep_alive_interval: Some(DEFAULT_KEEP_ALIVE_INTERVAL),
            keep_alive_timeout: Some(DEFAULT_KEEP_ALIVE_TIMEOUT),
            receive_buffer_size: DEFAULT_RECEIVE_BUFFER_SIZE,
            allowed_origins: Vec::new(),
            require_origin: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            max_buffered_amount: DEFAULT_MAX_BUFFERED_AMOUNT,
            permessage_deflate: None,
            max_sockets: None,
        }
    }
}

impl WebSocketOptions {
    // ----- tuning -----

    /// How often a Ping frame is sent to keep the connection alive
    /// (ASP.NET `KeepAliveInterval`); `None` disables keep-alive pings, and
    /// with them the [keep-alive timeout](Self::keep_alive_timeout).
    ///
    /// Default: 30 seconds ([`DEFAULT_KEEP_ALIVE_INTERVAL`]; ASP.NET: 2
    /// minutes). Pings are sent on a timer whether or not the application
    /// is currently receiving. Per socket it can be overridden with
    /// [`AcceptOptions::keep_alive_interval`](crate::AcceptOptions::keep_alive_interval).
    #[must_use]
    pub fn keep_alive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive_interval = interval;
        self
    }

    /// How long after a keep-alive ping a peer that shows no sign of life
    /// is given before the socket is aborted (ASP.NET `KeepAliveTimeout`);
    /// `None` never aborts.
    ///
    /// Default: 30 seconds ([`DEFAULT_KEEP_ALIVE_TIMEOUT`]; ASP.NET: none),
    /// so with the default interval a peer that vanished without closing
    /// its connection (a half-open connection) is aborted within 60
    /// seconds, interval plus timeout. Browsers and every client library
    /// answer pings by themselves, so a live peer is never cut off.
    ///
    /// When the timeout expires the socket is aborted if either
    ///
    /// - nothing arrived since the ping — any input counts as an answer,
    ///   not only the pong, and a peer is never timed out because the
    ///   *application* is busy and not receiving (unlike ASP.NET): the
    ///   socket reads what the peer sent, keeping it in order for the
    ///   application, before it decides; or
    /// - output is waiting and the peer accepted none of it since the
    ///   ping: a peer that stopped reading (while it goes on sending, or
    ///   flooding pings) cannot hold a socket, or a
    ///   [send waiting at the bound](Self::max_buffered_amount), for ever.
    ///
    /// An aborted socket fails the pending or next operation with
    /// [`Error::KeepAliveTimeout`](crate::Error::KeepAliveTimeout). Per
    /// socket it can be overridden with
    /// [`AcceptOptions::keep_alive_timeout`](crate::AcceptOptions::keep_alive_timeout).
    #[must_use]
    pub fn keep_alive_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.keep_alive_timeout = timeout;
        self
    }

    /// The bound on bytes a socket has accepted to send but not yet handed
    /// to the connection ([`WebSocket::buffered_amount`](crate::WebSocket::buffered_amount)):
    /// the send backpressure.
    ///
    /// Default: 64 KiB ([`DEFAULT_MAX_BUFFERED_AMOUNT`]). When the peer
    /// reads slower than the application sends, the kernel's socket buffer
    /// fills first; then the socket keeps what it cannot write, up to this
    /// bound:
    ///
    /// - a [`send`](crate::WebSocket::send) or
    ///   [`send`](crate::WebSocket::send) completes once its
    ///   frame is queued and the queue is within the bound, and otherwise
    ///   waits until the peer has read enough (a payload over 8 KiB is
    ///   written from the caller's buffer, so that send waits until it is
    ///   written);
    /// - [`try_send`](crate::WebSocket::try_send) never
    ///   waits: it fails with [`TrySendError::Full`](crate::TrySendError::Full),
    ///   handing the message back, when the message would take the queue
    ///   past the bound — a broadcaster drops or closes a slow consumer
    ///   instead of growing memory;
    /// - the `Sink` accepts an item while the queue is within the bound;
    /// - the socket stops *reading* while its queue is past the bound, so a
    ///   peer that sends but never reads is pushed back by TCP.
    ///
    /// A message larger than the bound is accepted into an empty queue, so
    /// the queue holds at most this many bytes or one message, whichever
    /// is larger. `0` makes every send wait until its bytes are written.
    #[must_use]
    pub fn max_buffered_amount(mut self, bytes: usize) -> Self {
        self.max_buffered_amount = bytes;
        self
    }

    /// How much a socket reads from the network at a time (ASP.NET
    /// `ReceiveBufferSize`).
    ///
    /// Default: 4 KiB. It is the starting size: while reads keep filling
    /// the buffer the read size doubles, up to 64 KiB (or this value, if
    /// larger), so large messages and pipelined frames take fewer system
    /// calls, and it halves again as reads come back small. An idle socket
    /// holds no read buffer at all. Payload is read straight into the
    /// caller's buffer when that read can be at least 32 KiB. Must be at
    /// least 256 bytes.
    #[must_use]
    pub fn receive_buffer_size(mut self, bytes: usize) -> Self {
        self.receive_buffer_size = bytes;
        self
    }

    /// permessage-deflate (RFC 7692) for every socket, when the client
    /// offers it; `None` (the default) sends and accepts only uncompressed
    /// messages. See [`DeflateOptions`] for why it is off by default and
    /// what it costs; per socket it can be overridden with
    /// [`AcceptOptions::permessage_deflate`](crate::AcceptOptions::permessage_deflate).
    ///
    /// The [message limit](Self::max_message_size) applies to the inflated
    /// size, checked while inflating: a small frame that would inflate past
    /// it fails the socket with 1009 before its output is allocated.
    #[must_use]
    #[doc(alias = "DangerousEnableCompression")]
    pub fn permessage_deflate(mut self, deflate: Option<DeflateOptions>) -> Self {
        self.permessage_deflate = deflate;
        self
    }

    // ----- security -----

    /// The `Origin` header values allowed to open a WebSocket (ASP.NET
    /// `AllowedOrigins`), such as `"https://client.example"`.
    ///
    /// Default: empty, which allows every origin. When not empty, a
    /// WebSocket request whose `Origin` is not in the list is answered with
    /// a bare `403 Forbidden` and the inner service never runs; so is one
    /// that carries more than one `Origin` header. Origins are
    /// compared ASCII case-insensitively (ASP.NET compares them
    /// case-sensitively, which rejects `https://Client.example`). A request
    /// without an `Origin` header (a non-browser client) is allowed unless
    /// [`require_origin`](Self::require_origin) is set.
    #[must_use]
    pub fn allowed_origins<I, T>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.allowed_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Whether a WebSocket request without an `Origin` header is rejected
    /// with `403` when [`allowed_origins`](Self::allowed_origins) is set.
    ///
    /// Default: `false`: browsers always send `Origin`, so a missing one
    /// means a non-browser client, which origin checks do not protect
    /// against anyway.
    #[must_use]
    pub fn require_origin(mut self, require: bool) -> Self {
        self.require_origin = require;
        self
    }

    /// The largest message, summed over its fragments, a socket accepts;
    /// a longer one is refused from the frame header that announces it,
    /// before its payload is read, with close code 1009.
    ///
    /// Default: 64 MiB. The buffer-based
    /// [`WebSocket::receive_buffer`](crate::WebSocket::receive_buffer) never buffers a
    /// whole message, but the whole-message API does, so this bounds the
    /// memory one peer can make a socket allocate.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The largest single frame a socket accepts; a longer one is refused
    /// from its header alone with close code 1009.
    ///
    /// Default: 16 MiB. A value above
    /// [`max_message_size`](Self::max_message_size) is capped at it.
    #[must_use]
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// How long [`WebSocket::close`](crate::WebSocket::close_with) waits for the
    /// peer's Close frame after sending its own, and how long a socket
    /// failing a protocol error waits to send its Close frame, before the
    /// connection is dropped.
    ///
    /// Default: 10 seconds, so a peer that never answers cannot hold a
    /// connection open. Must be non-zero.
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The most sockets a layer keeps live at once; `None` (the default)
    /// for no cap. A WebSocket request counts from the moment the layer
    /// sees it until its socket is finished, or until the handler answers
    /// without accepting; one over the cap is answered `503 Service
    /// Unavailable` before the inner service runs, while ordinary requests
    /// pass. The count is per [`WebSocketLayer`](crate::WebSocketLayer),
    /// shared by every service made from it
    /// ([`live_sockets`](crate::WebSocketLayer::live_sockets)). See the
    /// [layer docs](crate::layer#a-cap-on-live-sockets) for how it differs
    /// from a `ConcurrencyLimitLayer` inside the layer. Must be at least 1.
    #[must_use]
    pub fn max_sockets(mut self, max: Option<usize>) -> Self {
        self.max_sockets = max;
        self
    }

    /// Checks the settings and normalises the origins.
    pub(crate) fn validate(mut self) -> Result<Self, OptionsError> {
        if self.keep_alive_interval == Some(Duration::ZERO) {
            return Err(OptionsError::ZeroKeepAliveInterval);
        }
        if self.keep_alive_timeout == Some(Duration::ZERO) {
            return Err(OptionsError::ZeroKeepAliveTimeout);
        }
        if self.max_sockets == Some(0) {
            return Err(OptionsError::ZeroMaxSockets);
        }
        if self.receive_buffer_size < 256 {
            return Err(OptionsError::ReceiveBufferTooSmall);
        }
        if self.max_frame_size == 0 || self.max_message_size == 0 {
            return Err(OptionsError::ZeroSizeLimit);
        }
        // A frame can never be longer than the message it belongs to.
        self.max_frame_size = self.max_frame_size.min(self.max_message_size);
        if self.close_timeout.is_zero() {
            return Err(OptionsError::ZeroCloseTimeout);
        }
        if let Some(deflate) = &self.permessage_deflate {
            deflate.validate()?;
        }
        for origin in &mut self.allowed_origins {
            let trimmed = origin.trim();
            if trimmed.is_empty() || HeaderValue::from_str(trimmed).is_err() {
                return Err(OptionsError::InvalidOrigin);
            }
            *origin = trimmed.trim_end_matches('/').to_ascii_lowercase();
        }
        Ok(self)
    }

    /// Whether a request with these `Origin` headers may open a socket.
    /// With an allow-list, a request carrying more than one `Origin` is
    /// refused whatever their order: a browser sends exactly one (RFC 6454
    /// §7.3), and judging by either would let the other through.
    pub(crate) fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        if self.allowed_origins.is_empty() {
            return true;
        }
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let Some(origin) = origins.next() else {
            return !self.require_origin;
        };
        if origins.next().is_some() {
            return false;
        }
        let origin = origin.as_bytes();
        self.allowed_origins
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin))
    }
}

impl fmt::Debug for WebSocketOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketOptions")
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("receive_buffer_size", &self.receive_buffer_size)
            .field("allowed_origins", &self.allowed_origins)
            .field("require_origin", &self.require_origin)
            .field("max_message_size", &self.max_message_size)
            .field("max_frame_size", &self.max_frame_size)
            .field("close_timeout", &self.close_timeout)
            .field("max_buffered_amount", &self.max_buffered_amount)
            .field("permessage_deflate", &self.permessage_deflate)
            .finish()
    }
}

/// A [`WebSocketOptions`] (or [`DeflateOptions`]) setting that cannot
/// work, reported by [`WebSocketLayer::new`](crate::WebSocketLayer::new),
/// [`WebSocketService::new`](crate::WebSocketService::new) and
/// [`WebSocket::from_raw_socket`](crate::WebSocket::from_raw_socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OptionsError {
    /// [`WebSocketOptions::keep_alive_interval`] is zero (use `None` to
    /// disable keep-alive).
    ZeroKeepAliveInterval,
    /// [`WebSocketOptions::keep_alive_timeout`] is zero (use `None` to
    /// disable it).
    ZeroKeepAliveTimeout,
    /// [`WebSocketOptions::max_sockets`] is `Some(0)` (use `None` for no
    /// cap).
    ZeroMaxSockets,
    /// [`WebSocketOptions::receive_buffer_size`] is under 256 bytes.
    ReceiveBufferTooSmall,
    /// [`WebSocketOptions::max_frame_size`] or
    /// [`WebSocketOptions::max_message_size`] is zero.
    ZeroSizeLimit,
    /// [`WebSocketOptions::close_timeout`] is zero.
    ZeroCloseTimeout,
    /// [`WebSocketOptions::allowed_origins`] holds an empty origin or one
    /// that is not a valid header value.
    InvalidOrigin,
    /// A [`DeflateOptions`] window size is outside 8 to 15 bits.
    WindowBits,
    /// [`DeflateOptions::level`] is over 9.
    CompressionLevel,
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptionsError::ZeroKeepAliveInterval => {
                "keep_alive_interval must be non-zero (use None to disable)"
            }
            OptionsError::ZeroKeepAliveTimeout => {
                "keep_alive_timeout must be non-zero (use None to disable)"
            }
            OptionsError::ZeroMaxSockets => "max_sockets must be at least 1 (use None for no cap)",
            OptionsError::ReceiveBufferTooSmall => "receive_buffer_size must be at least 256 bytes",
            OptionsError::ZeroSizeLimit => "max_frame_size and max_message_size must be non-zero",
            OptionsError::ZeroCloseTimeout => "close_timeout must be non-zero",
            OptionsError::InvalidOrigin => "allowed_origins holds an empty or invalid origin",
            OptionsError::WindowBits => "permessage-deflate window bits must be 8 to 15",
            OptionsError::CompressionLevel => "the compression level must be 0 to 9",
        })
    }
}

impl std::error::Error for OptionsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let options = WebSocketOptions::default().validate().unwrap();
        assert_eq!(options.keep_alive_interval, Some(Duration::from_secs(30)));
        // Dead peers are reaped by default: a timeout is set.
        assert_eq!(options.keep_alive_timeout, Some(Duration::from_secs(30)));
        assert_eq!(options.receive_buffer_size, 4096);
        assert_eq!(options.max_buffered_amount, 64 * 1024);
    }

    #[test]
    fn bad_settings_are_reported_as_matchable_errors() {
        use OptionsError::*;
        let deflate = |d: DeflateOptions| WebSocketOptions::default().permessage_deflate(Some(d));
        let bad = [
            (
                WebSocketOptions::default().keep_alive_interval(Some(Duration::ZERO)),
                ZeroKeepAliveInterval,
            ),
            (
                WebSocketOptions::default().keep_alive_timeout(Some(Duration::ZERO)),
                ZeroKeepAliveTimeout,
            ),
            (
                WebSocketOptions::default().receive_buffer_size(10),
                ReceiveBufferTooSmall,
            ),
            (WebSocketOptions::default().max_frame_size(0), ZeroSizeLimit),
            (
                WebSocketOptions::default().close_timeout(Duration::ZERO),
                ZeroCloseTimeout,
            ),
            (
                WebSocketOptions::default().max_sockets(Some(0)),
                ZeroMaxSockets,
            ),
            (
                WebSocketOptions::default().allowed_origins([""]),
                InvalidOrigin,
            ),
            (
                WebSocketOptions::default().allowed_origins(["bad\norigin"]),
                InvalidOrigin,
            ),
            (
                deflate(DeflateOptions::default().server_max_window_bits(7)),
                WindowBits,
            ),
            (
                deflate(DeflateOptions::default().client_max_window_bits(16)),
                WindowBits,
            ),
            (
                deflate(DeflateOptions::default().level(10)),
                CompressionLevel,
            ),
        ];
        for (options, expected) in bad {
            assert_eq!(options.validate().unwrap_err(), expected);
            assert!(!expected.to_string().is_empty());
        }
    }

    #[test]
    fn frame_limit_is_capped_by_message_limit() {
        let options = WebSocketOptions::default()
            .max_message_size(1000)
            .validate()
            .unwrap();
        assert_eq!(options.max_frame_size, 1000);
    }

    #[test]
    fn origins_compare_case_insensitively() {
        let options = WebSocketOptions::default()
            .allowed_origins(["https://Client.Example/"])
            .validate()
            .unwrap();
        assert!(options.origin_allowed(&origins(&["https://client.example"])));
        assert!(options.origin_allowed(&origins(&["HTTPS://CLIENT.EXAMPLE"])));
        assert!(!options.origin_allowed(&origins(&["https://evil.example"])));
        assert!(options.origin_allowed(&origins(&[])));
        let strict = options.require_origin(true);
        assert!(!strict.origin_allowed(&origins(&[])));
    }

    /// `Origin` headers with these values, in this order.
    fn origins(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::ORIGIN, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn two_origin_headers_are_refused_in_either_order() {
        let options = WebSocketOptions::default()
            .allowed_origins(["https://client.example"])
            .validate()
            .unwrap();
        let (good, evil) = ("https://client.example", "https://evil.example");
        assert!(!options.origin_allowed(&origins(&[good, evil])));
        assert!(!options.origin_allowed(&origins(&[evil, good])));
        assert!(!options.origin_allowed(&origins(&[good, good])));
        // Without an allow-list nothing is checked.
        let open = WebSocketOptions::default().validate().unwrap();
        assert!(open.origin_allowed(&origins(&[good, evil])));
    }

    #[test]
    fn empty_list_allows_all() {
        let options = WebSocketOptions::default().validate().unwrap();
        assert!(options.origin_allowed(&origins(&["https://any"])));
    }
}

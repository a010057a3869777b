//! [`WebSocket`] and its split halves.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::core::{CoreConfig, FlushSignal, Party, SendProgress, Shared, Target, spawn_background};
use super::handle::WebSocketHandle;
use super::message::{CloseFrame, Message, MessageType, ReceiveResult, WebSocketState};
use super::pipeline::PipelineLink;
use super::prepared::PreparedMessage;
use super::spare;
use super::transport::Transport;
use crate::error::{Error, TrySendError};
use crate::layer::live::Registration;
use crate::options::{OptionsError, WebSocketOptions};
use crate::protocol::{CloseCode, CompressionConfig, Limits, SharedFrames};
use crate::stats::Traffic;

/// A server-side WebSocket connection: the analog of
/// `System.Net.WebSockets.WebSocket`.
///
/// Obtained from [`WebSocketUpgrade::accept`](crate::WebSocketUpgrade::accept).
/// Two surfaces over one connection:
///
/// - the Rust one, as axum's and tungstenite's `WebSocket`: whole
///   [`Message`]s with [`recv`](Self::recv) and [`send`](Self::send)
///   (also [`try_send`](Self::try_send), which never waits), or the
///   `futures` [`Stream`] and [`Sink`] of `Message`. Pings and pongs
///   arrive as messages (pings already answered);
/// - the ASP.NET one: [`receive_buffer`](Self::receive_buffer) into your
///   buffer (`ReceiveAsync`), returning count, type and end-of-message,
///   and [`send_buffer`](Self::send_buffer) (`SendAsync`) with the same
///   three, so fragmentation passes through unchanged;
///   [`close_with`](Self::close_with) (`CloseAsync`) and
///   [`close_output`](Self::close_output) (`CloseOutputAsync`).
///
/// No inherent method shadows a `StreamExt` or `SinkExt` method with a
/// different meaning: `socket.send(message)` is the `Sink`'s send, and
/// `SinkExt::close` starts the close handshake with 1000.
///
/// One receive and one send may run at the same time (as in ASP.NET):
/// [`split`](Self::split) gives a [`WebSocketReader`] and a
/// [`WebSocketWriter`] to put on two tasks. Any other task can close or
/// abort the socket through a [`WebSocketHandle`] (from
/// [`handle`](Self::handle)) while its owner keeps receiving: a server's
/// graceful shutdown, typically.
///
/// Pings are answered automatically, on whichever half is receiving; the
/// keep-alive timer sends pings of its own.
///
/// # The close handshake
///
/// Either side starts it by sending a Close frame; the other answers with
/// one; then the server closes the TCP connection (RFC 6455 §7.1.1).
///
/// - When the peer starts: a receive returns [`MessageType::Close`] with
///   the peer's [`close_status`](ReceiveResult::close_status) and the
///   state becomes [`CloseReceived`](WebSocketState::CloseReceived).
///   Answer with [`close_with`](Self::close_with) or [`close_output`](Self::close_output)
///   (usually echoing the status); both then complete at once and the
///   state becomes [`Closed`](WebSocketState::Closed). If the socket is
///   dropped instead, the answer is sent for you, echoing the status.
/// - When we start: [`close_output`](Self::close_output) sends our Close
///   and returns (state [`CloseSent`](WebSocketState::CloseSent)); keep
///   receiving to see the rest of the peer's data and its Close.
///   [`close_with`](Self::close_with) sends our Close and waits for the peer's,
///   discarding data that arrives meanwhile, at most the
///   [close timeout](crate::WebSocketOptions::close_timeout); a peer that
///   does not answer in time is cut off and the socket is
///   [`Aborted`](WebSocketState::Aborted).
/// - A protocol violation by the peer sends a Close with the RFC's code
///   (1002, 1007 or 1009), drops the connection and ends
///   [`Aborted`](WebSocketState::Aborted); the receive returns
///   [`Error::Protocol`].
///
/// Once `Closed` or `Aborted` the socket is *finished*: the request
/// pipeline held by [`WebSocketLayer`](crate::WebSocketLayer) completes,
/// and [`finished`](Self::finished) resolves. Dropping the socket finishes
/// it too: an open socket is then closed with 1011
/// ([`CloseCode::INTERNAL_ERROR`], reason "server handler ended") after
/// what completed sends left queued, and its connection dropped without
/// waiting for the peer's answer ([`abort`](Self::abort) sends no Close at
/// all).
pub struct WebSocket {
    reader: WebSocketReader,
    writer: WebSocketWriter,
}

/// The receiving half of a [`WebSocket`], from [`WebSocket::split`].
///
/// It answers pings by itself, even while the writer is busy on another
/// task.
pub struct WebSocketReader {
    shared: Arc<Shared>,
    stream_done: bool,
}

/// The sending half of a [`WebSocket`], from [`WebSocket::split`].
pub struct WebSocketWriter {
    shared: Arc<Shared>,
}

/// Socket settings taken from the layer's options and the accept options.
pub(crate) struct SocketConfig {
    pub(crate) limits: Limits,
    pub(crate) receive_buffer_size: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) keep_alive_interval: Option<Duration>,
    pub(crate) keep_alive_timeout: Option<Duration>,
    pub(crate) max_buffered_amount: usize,
    pub(crate) subprotocol: Option<Box<str>>,
    /// The `Sec-WebSocket-Extensions` answered, if any.
    pub(crate) extensions: Option<Box<str>>,
    /// permessage-deflate, as negotiated.
    pub(crate) compression: Option<CompressionConfig>,
    /// The request pipeline that accepted the socket, if any.
    pub(crate) pipeline: Option<Arc<PipelineLink>>,
    /// The layer's registry entry for the socket, if any.
    pub(crate) registration: Option<Registration>,
    /// The socket's span (from the layer; a bare one otherwise).
    pub(crate) span: tracing::Span,
}

impl SocketConfig {
    pub(crate) fn from_options(options: &WebSocketOptions) -> Self {
        SocketConfig {
            limits: Limits {
                max_message_size: options.max_message_size as u64,
                max_frame_size: options.max_frame_size as u64,
            },
            receive_buffer_size: options.receive_buffer_size,
            close_timeout: options.close_timeout,
            keep_alive_interval: options.keep_alive_interval,
            keep_alive_timeout: options.keep_alive_timeout,
            max_buffered_amount: options.max_buffered_amount,
            subprotocol: None,
            extensions: None,
            compression: None,
            pipeline: None,
            registration: None,
            span: tracing::Span::none(),
        }
    }
}

impl WebSocket {
    pub(crate) fn new(
        io: Transport,
        leftover: &[u8],
        config: SocketConfig,
        finished: watch::Sender<bool>,
    ) -> WebSocket {
        let flush_notify = Arc::new(FlushSignal::default());
        let traffic = Arc::new(Traffic::default());
        let shared = Shared::new(
            io,
            leftover,
            CoreConfig {
                flush_notify: flush_notify.clone(),
                limits: config.limits,
                receive_buffer_size: config.receive_buffer_size,
                close_timeout: config.close_timeout,
                max_buffered: config.max_buffered_amount,
                compression: config.compression,
                pipeline: config.pipeline.as_ref().map_or(0, PipelineLink::id),
                counters: config.registration.as_ref().map(Registration::counters),
                traffic: traffic.clone(),
                span: config.span,
            },
            config.subprotocol,
            config.extensions,
            finished,
        );
        if let Some(pipeline) = &config.pipeline {
            pipeline.attach(&shared);
        }
        if let Some(registration) = &config.registration {
            registration.attach(&shared, traffic);
        }
        spawn_background(
            Arc::downgrade(&shared),
            shared.finished_receiver(),
            flush_notify,
            config.keep_alive_interval,
            config.keep_alive_timeout,
        );
        WebSocket {
            reader: WebSocketReader {
                shared: shared.clone(),
                stream_done: false,
            },
            writer: WebSocketWriter { shared },
        }
    }

    /// Runs the server side of the protocol over a stream on which the
    /// opening handshake has already been completed (for custom servers
    /// and tests; [`WebSocketUpgrade::accept`](crate::WebSocketUpgrade::accept)
    /// is the usual way in).
    ///
    /// Must be called within a tokio runtime when keep-alive is enabled.
    ///
    /// # Errors
    ///
    /// The options are invalid.
    pub fn from_raw_socket<T>(io: T, options: WebSocketOptions) -> Result<WebSocket, OptionsError>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let options = options.validate()?;
        let (finished, _) = watch::channel(false);
        let mut config = SocketConfig::from_options(&options);
        config.span = tracing::debug_span!("websocket");
        Ok(WebSocket::new(Transport::new(io), &[], config, finished))
    }

    /// Receives the next message: `None` once the socket is finished (the
    /// peer's [`Message::Close`] is returned first, once; an error is
    /// returned once, then `None`). The loop axum and tungstenite users
    /// write:
    ///
    /// ```no_run
    /// # async fn f(mut socket: tower_websockets::WebSocket) -> Result<(), tower_websockets::Error> {
    /// use tower_websockets::Message;
    ///
    /// while let Some(Ok(message)) = socket.recv().await {
    ///     match message {
    ///         Message::Text(_) | Message::Binary(_) => socket.send(message).await?,
    ///         // Already answered; here for a liveness check of your own.
    ///         Message::Ping(_) | Message::Pong(_) => {}
    ///         // The socket answers it once the loop ends (or call close_output).
    ///         Message::Close(_) => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// Pings arrive as [`Message::Ping`] (already answered) and pongs as
    /// [`Message::Pong`], so a server can tell that a client is alive from
    /// its pings alone (see the README's "client pings, server times out"
    /// pattern).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a partly received message is kept in the socket and
    /// completed by the next call.
    pub fn recv(&mut self) -> impl Future<Output = Option<Result<Message, Error>>> + Send + '_ {
        self.reader.recv()
    }

    /// Sends a whole message: text or binary as one frame, a
    /// [`Message::Ping`] or [`Message::Pong`] as that control frame (at
    /// most 125 bytes), a [`Message::Close`] as
    /// [`close_output`](Self::close_output) does.
    ///
    /// # Errors
    ///
    /// As [`send_buffer`](Self::send_buffer);
    /// [`Error::InvalidArgument`] for a ping or pong over 125 bytes.
    ///
    /// # Cancel safety
    ///
    /// As [`send_buffer`](Self::send_buffer).
    ///
    /// # Memory
    ///
    /// A binary message of 64 KiB or more that nothing else refers to once
    /// it is written (a received message echoed back, typically) is not
    /// freed: its allocation is kept for the next large message received
    /// on the same thread, which then needs no fresh allocation (and the
    /// kernel no fresh pages). A thread keeps at most 8 MiB of such
    /// buffers, and no socket holds any while idle. A [`Message::Text`]
    /// (a [`Utf8Bytes`](crate::Utf8Bytes)) is shared, not copied, when the
    /// same text goes to many sockets.
    pub fn send(
        &mut self,
        message: Message,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_ {
        self.writer.send(message)
    }

    /// Receives the next piece of a message into `buf` (ASP.NET
    /// `ReceiveAsync`).
    ///
    /// Returns as soon as payload is available, with at most `buf.len()`
    /// bytes: check [`end_of_message`](ReceiveResult::end_of_message) for
    /// the message's end. Text arrives validated, but a piece may end inside
    /// a multi-byte character. When the peer's Close frame arrives this
    /// returns it as [`MessageType::Close`] (once).
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if the peer broke the protocol (the socket
    /// answered with the matching close code and is aborted);
    /// [`Error::Closed`] after the peer's Close was already returned;
    /// [`Error::Io`] / [`Error::ConnectionReset`] if the connection failed;
    /// [`Error::InvalidArgument`] for an empty `buf`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if the future is dropped before it completes, no data
    /// was consumed, and the next receive continues where this one would
    /// have.
    #[doc(alias = "ReceiveAsync")]
    pub fn receive_buffer<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = Result<ReceiveResult, Error>> + Send + 'a {
        self.reader.receive_buffer(buf)
    }

    /// Sends `payload` as one frame of a message of `message_type` (ASP.NET
    /// `SendAsync`); `end_of_message = false` leaves the message open for
    /// more frames, so a message can be streamed in pieces.
    ///
    /// Text payloads are sent as given: the caller is responsible for
    /// sending valid UTF-8 (the whole message must be valid; pieces may
    /// split characters).
    ///
    /// It completes once the frame is written, or queued within
    /// [`max_buffered_amount`](crate::WebSocketOptions::max_buffered_amount)
    /// when the peer's window is full (the socket writes the rest as the
    /// peer reads), and waits past that bound; a payload over 8 KiB is
    /// written from `payload` itself, so the send waits until it is
    /// written. A peer that reads nothing for a keep-alive timeout after a
    /// ping fails the wait with [`Error::KeepAliveTimeout`].
    ///
    /// # Errors
    ///
    /// [`Error::SendAfterClose`] after our Close was sent;
    /// [`Error::InvalidArgument`] for [`MessageType::Close`] or a type
    /// change inside a fragmented message; [`Error::Io`] if the connection
    /// failed; [`Error::Aborted`] / [`Error::Closed`] on a finished socket.
    ///
    /// # Cancel safety
    ///
    /// Once polled, the frame is sent whole even if the future is dropped:
    /// the unwritten rest is queued and goes out before anything else the
    /// socket writes, so the stream never carries half a frame.
    #[doc(alias = "SendAsync")]
    pub fn send_buffer<'a>(
        &'a mut self,
        payload: &'a [u8],
        message_type: MessageType,
        end_of_message: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        self.writer
            .send_buffer(payload, message_type, end_of_message)
    }

    /// Receives the next whole message, as [`recv`](Self::recv) does, but
    /// as a `Result` for `?`: after the peer's [`Message::Close`] it fails
    /// with [`Error::Closed`] where `recv` returns `None`. Pings and pongs
    /// arrive as messages here too.
    ///
    /// # Errors
    ///
    /// As [`receive_buffer`](Self::receive_buffer).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a partly received message is kept in the socket and
    /// completed by the next call.
    ///
    /// # Memory
    ///
    /// A binary message of 8 KiB or more that arrived whole in one read is
    /// handed over without a copy, as a slice of the socket's read buffer:
    /// its [`Bytes`](bytes::Bytes) keeps that buffer's allocation (usually
    /// at most 64 KiB beyond the message) until it is dropped, and the
    /// socket reads on into a fresh one. An application that keeps many
    /// received messages for a long time can copy them out
    /// (`Bytes::copy_from_slice`) to hold only their length.
    ///
    /// Messages of 64 KiB or more are assembled in an allocation reused
    /// from an earlier large message when the thread has one: see
    /// [`send`](Self::send).
    pub fn receive_message(&mut self) -> impl Future<Output = Result<Message, Error>> + Send + '_ {
        self.reader.receive_message()
    }

    /// Sends a whole message without waiting: it is queued (copied) and
    /// written as far as the connection takes it now, and the socket's
    /// background task writes the rest as the peer reads. For
    /// broadcasters: one slow subscriber fails its own sends instead of
    /// stalling the others, or growing memory.
    ///
    /// [`Message::Close`] queues our Close, as
    /// [`WebSocketHandle::close`](crate::WebSocketHandle::close) does
    /// (without waiting for the peer's).
    ///
    /// ```no_run
    /// # use tower_websockets::{CloseCode, CloseFrame, Message, TrySendError, WebSocketWriter};
    /// # async fn broadcast(subscribers: &mut Vec<WebSocketWriter>, text: String) {
    /// for subscriber in subscribers.iter_mut() {
    ///     match subscriber.try_send(Message::text(text.clone())) {
    ///         Ok(()) => {}
    ///         // Too slow: 64 KiB (by default) are still waiting for it.
    ///         Err(TrySendError::Full(_)) => {
    ///             let close = CloseFrame { code: CloseCode::TRY_AGAIN_LATER, reason: "too slow".into() };
    ///             let _ = subscriber.try_send(Message::Close(Some(close)));
    ///         }
    ///         Err(TrySendError::Failed(_)) => {} // closed or gone
    ///     }
    /// }
    /// subscribers.retain(|s| s.state() == tower_websockets::WebSocketState::Open);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`], with the message, when queuing it would take
    /// the [buffered amount](Self::buffered_amount) past
    /// [`max_buffered_amount`](crate::WebSocketOptions::max_buffered_amount)
    /// (an empty queue takes a message of any size);
    /// [`TrySendError::Failed`] with the error [`send`](Self::send) would
    /// give. A ping or pong is always taken (it is at most 127 bytes).
    pub fn try_send(&mut self, message: Message) -> Result<(), TrySendError> {
        self.writer.try_send(message)
    }

    /// Sends a [`PreparedMessage`]: its frame, built once, is queued by
    /// reference (no copy), then written as [`send`](Self::send) writes a
    /// message, waiting only while the send queue is past its bound.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); [`Error::InvalidArgument`] in the middle of
    /// a fragmented message.
    ///
    /// # Cancel safety
    ///
    /// The message is queued whole on the first poll; dropping the future
    /// after that only stops the wait, and the message still goes out.
    pub fn send_prepared<'a>(
        &'a mut self,
        message: &'a PreparedMessage,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        self.writer.send_prepared(message)
    }

    /// Queues a [`PreparedMessage`] without waiting, as
    /// [`try_send`](Self::try_send) does a message, and starts writing it.
    /// To broadcast from another task, use
    /// [`WebSocketHandle::try_send_prepared`].
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send): [`TrySendError::Full`] when it does
    /// not fit the send queue's bound, [`TrySendError::Failed`] with the
    /// error a send would give.
    pub fn try_send_prepared(&mut self, message: &PreparedMessage) -> Result<(), TrySendError<()>> {
        self.writer.try_send_prepared(message)
    }

    /// Closes the socket with the full handshake (ASP.NET `CloseAsync`):
    /// sends our Close frame (unless already sent), then waits for the
    /// peer's, discarding data that arrives meanwhile, at most the close
    /// timeout. `status = None` sends a Close frame without a code; the
    /// `description` is truncated to 123 bytes on a character boundary.
    ///
    /// Calling it on a closed socket does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::CloseTimeout`] if the peer did not answer in time (the
    /// socket is aborted); [`Error::Aborted`] on an aborted socket; any
    /// receive error while waiting.
    ///
    /// # Cancel safety
    ///
    /// Our Close frame is queued on the first poll and sent by whatever
    /// operation writes next; the wait for the peer's Close can be resumed
    /// by calling `close_with` again.
    #[doc(alias = "CloseAsync")]
    pub async fn close_with(
        &mut self,
        status: impl Into<Option<CloseCode>>,
        description: &str,
    ) -> Result<(), Error> {
        self.writer.close_output(status, description).await?;
        if self.state() != WebSocketState::CloseSent {
            return Ok(());
        }
        let timeout = self.writer.shared.lock().close_timeout();
        let wait = async {
            loop {
                let result = ReceiveFuture {
                    shared: &self.reader.shared,
                    into: Discard,
                }
                .await?;
                if result.message_type() == MessageType::Close {
                    return Ok(());
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(self.writer.shared.lock().close_timed_out()),
        }
    }

    /// Sends our Close frame without waiting for the peer's (ASP.NET
    /// `CloseOutputAsync`). After a received Close this completes the
    /// handshake; otherwise keep receiving until the peer's Close arrives.
    ///
    /// # Errors
    ///
    /// [`Error::Aborted`] on an aborted socket; [`Error::Io`] if writing
    /// failed.
    ///
    /// # Cancel safety
    ///
    /// The Close frame is queued on the first poll and sent by whatever
    /// operation writes next.
    #[doc(alias = "CloseOutputAsync")]
    pub async fn close_output(
        &mut self,
        status: impl Into<Option<CloseCode>>,
        description: &str,
    ) -> Result<(), Error> {
        self.writer.close_output(status, description).await
    }

    /// Drops the connection at once, without a close handshake (ASP.NET
    /// `Abort`). Pending and later operations fail with
    /// [`Error::Aborted`].
    pub fn abort(&self) {
        self.writer.abort();
    }

    /// The socket's state.
    pub fn state(&self) -> WebSocketState {
        self.writer.state()
    }

    /// The close code the peer sent (once its Close arrived), or the one we
    /// sent in reply; `None` if there is none (yet).
    pub fn close_status(&self) -> Option<CloseCode> {
        self.writer.shared.lock().close_status()
    }

    /// The peer's close reason, once its Close arrived.
    pub fn close_status_description(&self) -> Option<String> {
        self.writer
            .shared
            .lock()
            .close_description()
            .map(str::to_owned)
    }

    /// The subprotocol chosen at accept, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.writer.subprotocol()
    }

    /// The `Sec-WebSocket-Extensions` value the server answered with, if
    /// an extension was negotiated: with
    /// [`permessage_deflate`](crate::WebSocketOptions::permessage_deflate)
    /// enabled and offered, for example
    /// `permessage-deflate; client_max_window_bits=12`.
    pub fn extensions(&self) -> Option<&str> {
        self.writer.extensions()
    }

    /// Bytes accepted but not yet handed to the transport: frames queued
    /// by completed sends (coalesced replies, `Sink` items, the rest of a
    /// cancelled send) and control frames waiting for the output to drain
    /// (at most one pong, the answer to the latest ping, RFC 6455 §5.5.3).
    /// The browser API's `bufferedAmount`.
    pub fn buffered_amount(&self) -> usize {
        self.writer.buffered_amount()
    }

    /// A future that resolves when the socket is finished: closed, aborted
    /// or dropped. This is the `TaskCompletionSource` of the ASP.NET
    /// background-socket pattern: hand the socket to a background owner
    /// and await this in the request handler.
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        self.writer.shared.finished()
    }

    /// A handle for other tasks: close or abort this socket, or wait for
    /// it to finish, while this task keeps receiving and sending (a server's
    /// graceful shutdown, typically). See [`WebSocketHandle`].
    pub fn handle(&self) -> WebSocketHandle {
        self.writer.handle()
    }

    /// Splits the socket into a reader and a writer that can be used from
    /// two tasks at once; [`WebSocketReader::reunite`] puts them back
    /// together. Either half can start the close: the writer with
    /// [`send`](WebSocketWriter::send)`(Message::Close(..))` or
    /// [`close_output`](WebSocketWriter::close_output), the reader with
    /// [`close_output`](WebSocketReader::close_output). The peer's answer is
    /// read by the reader's next receive or, while none is pending, by the
    /// socket itself (so the close completes within one round trip either
    /// way), within the close timeout.
    pub fn split(self) -> (WebSocketReader, WebSocketWriter) {
        (self.reader, self.writer)
    }
}

/// A receive: polls the core until it completes. Dropped before that, it
/// tells the pipeline marks that the read no longer waits.
struct ReceiveFuture<'a, T> {
    shared: &'a Shared,
    into: T,
}

/// Where a [`ReceiveFuture`] receives to.
trait ReceiveInto {
    type Output;
    fn poll_core(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<Self::Output>;
}

impl ReceiveInto for &mut [u8] {
    type Output = Result<ReceiveResult, Error>;

    #[inline]
    fn poll_core(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<Self::Output> {
        shared.poll_with(cx, Party::Reader, |core, io_cx| {
            core.poll_receive(io_cx, Target::Slice(self))
        })
    }
}

/// The whole-message receive.
struct WholeMessage;

impl ReceiveInto for WholeMessage {
    type Output = Result<Message, Error>;

    #[inline]
    fn poll_core(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<Self::Output> {
        shared.poll_with(cx, Party::Reader, |core, io_cx| {
            core.poll_receive_message(io_cx)
        })
    }
}

/// Data validated and dropped, waiting for the peer's Close.
struct Discard;

impl ReceiveInto for Discard {
    type Output = Result<ReceiveResult, Error>;

    fn poll_core(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<Self::Output> {
        shared.poll_with(cx, Party::Reader, |core, io_cx| {
            core.poll_receive(io_cx, Target::Discard)
        })
    }
}

impl<T: ReceiveInto + Unpin> Future for ReceiveFuture<'_, T> {
    type Output = T::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T::Output> {
        let this = self.get_mut();
        this.into.poll_core(this.shared, cx)
    }
}

impl<T> Drop for ReceiveFuture<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.shared.pipeline.released(Party::Reader);
        self.shared.reader_gone();
    }
}

/// [`WebSocketReader::recv`]: the `Stream`'s next item, as a future that
/// tells the pipeline marks when it is dropped.
struct Recv<'a> {
    reader: &'a mut WebSocketReader,
}

impl Future for Recv<'_> {
    type Output = Option<Result<Message, Error>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut *self.reader).poll_next(cx)
    }
}

impl Drop for Recv<'_> {
    #[inline]
    fn drop(&mut self) {
        self.reader.shared.pipeline.released(Party::Reader);
        self.reader.shared.reader_gone();
    }
}

impl WebSocketReader {
    /// See [`WebSocket::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`WebSocket::recv`].
    pub fn recv(&mut self) -> impl Future<Output = Option<Result<Message, Error>>> + Send + '_ {
        Recv { reader: self }
    }

    /// See [`WebSocket::receive_buffer`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::receive_buffer`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`WebSocket::receive_buffer`].
    #[doc(alias = "ReceiveAsync")]
    pub fn receive_buffer<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = Result<ReceiveResult, Error>> + Send + 'a {
        ReceiveFuture {
            shared: &self.shared,
            into: buf,
        }
    }

    /// See [`WebSocket::receive_message`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::receive_buffer`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`WebSocket::receive_message`].
    pub fn receive_message(&mut self) -> impl Future<Output = Result<Message, Error>> + Send + '_ {
        ReceiveFuture {
            shared: &self.shared,
            into: WholeMessage,
        }
    }

    fn poll_receive_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, Error>> {
        WholeMessage.poll_core(&self.shared, cx)
    }

    /// Starts the close handshake from the reading half: queues our Close
    /// frame (unless one was sent), which the socket writes at once, even
    /// while the writer half is busy on another task; keep receiving to see
    /// the peer's data and its Close, which finishes the socket. As
    /// [`WebSocket::close_output`] (and the writer's), without waiting for
    /// the writer.
    ///
    /// # Errors
    ///
    /// [`Error::Aborted`] (or the error that ended it) on an aborted
    /// socket.
    #[doc(alias = "CloseOutputAsync")]
    pub fn close_output(
        &self,
        status: impl Into<Option<CloseCode>>,
        description: &str,
    ) -> Result<(), Error> {
        self.shared
            .close_from_handle(status.into(), description)
            .map(drop)
    }

    /// Puts the two halves of one socket back together.
    ///
    /// # Errors
    ///
    /// [`ReuniteError`], with both halves, if they are not from the same
    /// socket.
    pub fn reunite(self, writer: WebSocketWriter) -> Result<WebSocket, ReuniteError> {
        if Arc::ptr_eq(&self.shared, &writer.shared) {
            Ok(WebSocket {
                reader: self,
                writer,
            })
        } else {
            Err(ReuniteError {
                reader: self,
                writer,
            })
        }
    }

    /// See [`WebSocket::state`].
    pub fn state(&self) -> WebSocketState {
        self.shared.lock().state()
    }

    /// See [`WebSocket::abort`].
    pub fn abort(&self) {
        self.shared.abort();
    }

    /// See [`WebSocket::finished`].
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.finished()
    }

    /// See [`WebSocket::handle`].
    pub fn handle(&self) -> WebSocketHandle {
        WebSocketHandle::new(Arc::downgrade(&self.shared))
    }
}

/// [`WebSocketReader::reunite`] was given halves of two different sockets:
/// both are handed back.
pub struct ReuniteError {
    /// The reader passed in.
    pub reader: WebSocketReader,
    /// The writer passed in.
    pub writer: WebSocketWriter,
}

impl fmt::Debug for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReuniteError(..)")
    }
}

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the halves are from different websockets")
    }
}

impl std::error::Error for ReuniteError {}

/// What a [`SendFuture`] sends.
enum Outgoing<'a> {
    /// One frame of the buffer-based API.
    Frame {
        payload: &'a [u8],
        message_type: MessageType,
        end_of_message: bool,
    },
    /// A whole message, owned by the future.
    Message(Message),
    /// A prepared message's shared frames.
    Prepared(&'a SharedFrames),
}

impl Outgoing<'_> {
    /// The data frame to send: payload, type and end-of-message; `None` for
    /// a Close.
    fn data(&self) -> Option<(&[u8], MessageType, bool)> {
        match self {
            Outgoing::Frame {
                payload,
                message_type,
                end_of_message,
            } => Some((payload, *message_type, *end_of_message)),
            Outgoing::Message(Message::Text(text)) => {
                Some((text.as_bytes(), MessageType::Text, true))
            }
            Outgoing::Message(Message::Binary(data)) => Some((data, MessageType::Binary, true)),
            Outgoing::Message(Message::Close(_) | Message::Ping(_) | Message::Pong(_))
            | Outgoing::Prepared(_) => None,
        }
    }
}

/// [`WebSocket::try_send`] on `shared`, from the owner or (`from_handle`)
/// a [`WebSocketHandle`], whose sends find the socket full while the owner
/// is in the middle of a message, and leave the write to the background
/// task.
pub(crate) fn try_send_on(
    shared: &Shared,
    message: Message,
    from_handle: bool,
) -> Result<(), TrySendError> {
    let (payload, message_type): (&[u8], _) = match &message {
        Message::Text(text) => (text.as_bytes(), MessageType::Text),
        Message::Binary(data) => (data, MessageType::Binary),
        Message::Ping(data) | Message::Pong(data) => {
            let ping = message.is_ping();
            let queued = shared.poll_now(|core, io_cx| {
                if from_handle && core.frame_in_progress() {
                    return Ok(false);
                }
                core.queue_control(ping, data)?;
                core.written_by(io_cx, from_handle)?;
                Ok::<_, Error>(true)
            })?;
            return if queued {
                Ok(())
            } else {
                Err(TrySendError::Full(message))
            };
        }
        Message::Close(frame) => {
            let (code, reason) = close_parts(frame);
            shared.close_from_handle(code, reason)?;
            return Ok(());
        }
    };
    let taken = shared.poll_now(|core, io_cx| {
        core.try_queue_message(io_cx, payload, message_type, from_handle)
    })?;
    if taken {
        Ok(())
    } else {
        Err(TrySendError::Full(message))
    }
}

/// [`WebSocket::try_send_prepared`] on `shared`, from the owner or
/// (`from_handle`) a [`WebSocketHandle`], as [`try_send_on`].
pub(crate) fn try_send_prepared_on(
    shared: &Shared,
    message: &PreparedMessage,
    from_handle: bool,
) -> Result<(), TrySendError<()>> {
    let taken = shared
        .poll_now(|core, io_cx| core.try_queue_prepared(io_cx, &message.frames, from_handle))?;
    if taken {
        Ok(())
    } else {
        Err(TrySendError::Full(()))
    }
}

/// A Close frame's code and reason, as `close_output` takes them.
fn close_parts(frame: &Option<CloseFrame>) -> (Option<CloseCode>, &str) {
    match frame {
        Some(frame) => (Some(frame.code), frame.reason.as_str()),
        None => (None, ""),
    }
}

/// A send: one future from the caller's `.await` down to the core, with no
/// async layers in between (each would cost a state machine per message).
///
/// Dropped before it completes, it keeps the stream whole: the unwritten
/// rest of a half-written frame is queued. Once done (or dropped), a sent
/// message's allocation goes to this thread's spares if it is large and
/// no one else holds it.
struct SendFuture<'a> {
    shared: &'a Shared,
    outgoing: Outgoing<'a>,
    progress: SendProgress,
}

impl Future for SendFuture<'_> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Outgoing::Prepared(frames) = this.outgoing {
            let progress = &mut this.progress;
            return this.shared.poll_with(cx, Party::Writer, |core, io_cx| {
                core.poll_send_prepared(io_cx, frames, progress)
            });
        }
        let Some((payload, message_type, end_of_message)) = this.outgoing.data() else {
            // A Close (`close_output`, in one future), a ping or a pong:
            // queued, then flushed.
            if let (SendProgress::NotStarted, Outgoing::Message(message)) =
                (&this.progress, &this.outgoing)
            {
                let mut core = this.shared.lock();
                match message {
                    Message::Close(frame) => {
                        let (code, reason) = close_parts(frame);
                        core.start_close(code, reason).map(drop)?;
                    }
                    Message::Ping(data) => core.queue_control(true, data)?,
                    Message::Pong(data) => core.queue_control(false, data)?,
                    Message::Text(_) | Message::Binary(_) => {}
                }
                drop(core);
                this.progress = SendProgress::Flushing;
            }
            return this
                .shared
                .poll_with(cx, Party::Writer, |core, io_cx| core.poll_flush(io_cx));
        };
        let progress = &mut this.progress;
        this.shared.poll_with(cx, Party::Writer, |core, io_cx| {
            core.poll_send(io_cx, payload, message_type, end_of_message, progress)
        })
    }
}

impl Drop for SendFuture<'_> {
    fn drop(&mut self) {
        self.shared.pipeline.released(Party::Writer);
        if !matches!(self.progress, SendProgress::NotStarted | SendProgress::Done) {
            let payload = self.outgoing.data().map(|(payload, _, _)| payload);
            self.shared.send_dropped(payload, &self.progress);
        }
        // A large message's allocation, written and let go of, is kept for
        // the next large message received on this thread (an echo's reply
        // typically is the received message).
        if let Outgoing::Message(Message::Binary(data)) =
            std::mem::replace(&mut self.outgoing, Outgoing::Message(Message::Close(None)))
        {
            spare::recycle_message(data);
        }
    }
}

impl WebSocketWriter {
    /// See [`WebSocket::try_send`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::try_send`].
    pub fn try_send(&mut self, message: Message) -> Result<(), TrySendError> {
        try_send_on(&self.shared, message, false)
    }

    /// See [`WebSocket::send_prepared`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send_prepared`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::send_prepared`].
    pub fn send_prepared<'a>(
        &'a mut self,
        message: &'a PreparedMessage,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        SendFuture {
            shared: &self.shared,
            outgoing: Outgoing::Prepared(&message.frames),
            progress: SendProgress::NotStarted,
        }
    }

    /// See [`WebSocket::try_send_prepared`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::try_send_prepared`].
    pub fn try_send_prepared(&mut self, message: &PreparedMessage) -> Result<(), TrySendError<()>> {
        try_send_prepared_on(&self.shared, message, false)
    }

    /// See [`WebSocket::send_buffer`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send_buffer`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::send_buffer`].
    #[doc(alias = "SendAsync")]
    pub fn send_buffer<'a>(
        &'a mut self,
        payload: &'a [u8],
        message_type: MessageType,
        end_of_message: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        SendFuture {
            shared: &self.shared,
            outgoing: Outgoing::Frame {
                payload,
                message_type,
                end_of_message,
            },
            progress: SendProgress::NotStarted,
        }
    }

    /// See [`WebSocket::send`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::send`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::send`].
    pub fn send(
        &mut self,
        message: Message,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_ {
        SendFuture {
            shared: &self.shared,
            outgoing: Outgoing::Message(message),
            progress: SendProgress::NotStarted,
        }
    }

    /// See [`WebSocket::close_output`].
    ///
    /// # Errors
    ///
    /// As [`WebSocket::close_output`].
    ///
    /// # Cancel safety
    ///
    /// As [`WebSocket::close_output`].
    #[doc(alias = "CloseOutputAsync")]
    pub async fn close_output(
        &mut self,
        status: impl Into<Option<CloseCode>>,
        description: &str,
    ) -> Result<(), Error> {
        self.shared.lock().start_close(status.into(), description)?;
        poll_fn(|cx| self.poll_flush_inner(cx)).await
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared
            .poll_with(cx, Party::Writer, |core, io_cx| core.poll_flush(io_cx))
    }

    /// See [`WebSocket::state`].
    pub fn state(&self) -> WebSocketState {
        self.shared.lock().state()
    }

    /// See [`WebSocket::abort`].
    pub fn abort(&self) {
        self.shared.abort();
    }

    /// See [`WebSocket::subprotocol`].
    pub fn subprotocol(&self) -> Option<&str> {
        self.shared.subprotocol.as_deref()
    }

    /// See [`WebSocket::extensions`].
    pub fn extensions(&self) -> Option<&str> {
        self.shared.extensions.as_deref()
    }

    /// See [`WebSocket::buffered_amount`].
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().buffered_amount()
    }

    /// See [`WebSocket::finished`].
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.finished()
    }

    /// See [`WebSocket::handle`].
    pub fn handle(&self) -> WebSocketHandle {
        WebSocketHandle::new(Arc::downgrade(&self.shared))
    }
}

impl Stream for WebSocketReader {
    type Item = Result<Message, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stream_done {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(self.poll_receive_message(cx));
        if matches!(item, Ok(Message::Close(_)) | Err(_)) {
            self.stream_done = true;
        }
        Poll::Ready(Some(item))
    }
}

impl Sink<Message> for WebSocketWriter {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.shared.lock().has_room(0) {
            return Poll::Ready(Ok(()));
        }
        self.poll_flush_inner(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let mut core = self.shared.lock();
        match item {
            Message::Text(text) => core.queue_message(text.as_bytes(), MessageType::Text),
            Message::Binary(data) => core.queue_message(&data, MessageType::Binary),
            Message::Ping(data) => core.queue_control(true, &data),
            Message::Pong(data) => core.queue_control(false, &data),
            Message::Close(frame) => {
                let (code, reason) = close_parts(&frame);
                core.start_close(code, reason).map(drop)
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_flush_inner(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared
            .lock()
            .start_close(Some(CloseCode::NORMAL), "")?;
        self.poll_flush_inner(cx)
    }
}

impl Stream for WebSocket {
    type Item = Result<Message, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.reader).poll_next(cx)
    }
}

impl Sink<Message> for WebSocket {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.writer).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        Pin::new(&mut self.writer).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.writer).poll_close(cx)
    }
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("state", &self.state())
            .field("subprotocol", &self.subprotocol())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for WebSocketReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketReader")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for WebSocketWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketWriter")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

//! The byte stream under a socket.
//!
//! A plain TCP connection (what hyper hands over for HTTP/1.1 under
//! hyper-util's `TokioIo<TcpStream>`) is used directly: no dynamic
//! dispatch, no adapter layers, and its read readiness can be awaited
//! without a buffer, so an idle socket holds no read buffer. Anything else
//! (TLS, an HTTP/2 stream, a test pipe) is boxed.

use std::any::Any;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Any other byte stream.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub(crate) enum Transport {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

impl Transport {
    /// Wraps `io`, unboxing it if it is a `TcpStream`. On TCP, Nagle's
    /// algorithm is turned off: the socket writes whole frames and
    /// coalesces them itself, so Nagle could only add delay (40 ms stalls
    /// against delayed ACKs when a frame is written in two parts).
    pub(crate) fn new<T: Io>(io: T) -> Transport {
        let boxed: Box<dyn Any> = Box::new(io);
        match boxed.downcast::<TcpStream>() {
            Ok(tcp) => Transport::tcp(*tcp),
            Err(other) => match other.downcast::<T>() {
                Ok(io) => Transport::Other(io),
                Err(_) => unreachable!("a Box<T> downcasts to T"),
            },
        }
    }

    pub(crate) fn tcp(tcp: TcpStream) -> Transport {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        Transport::Tcp(tcp)
    }

    /// Waits until a read would make progress, without a buffer. Only TCP
    /// can tell; for other streams this is always ready and the read
    /// itself waits.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Tcp(tcp) => tcp.poll_read_ready(cx),
            Transport::Other(_) => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Transport::Other(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Transport::Other(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Transport::Other(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Tcp(tcp) => tcp.is_write_vectored(),
            Transport::Other(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Transport::Other(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Transport::Other(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

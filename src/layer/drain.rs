//! Graceful drain: [`DrainHandle`], from
//! [`WebSocketLayer::drain_handle`](super::WebSocketLayer::drain_handle).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::live::Live;

/// Drains a layer's sockets for a graceful shutdown or a redeploy.
///
/// [`drain`](Self::drain) starts the drain and waits for it:
///
/// 1. from then on, the layer answers WebSocket requests `503 Service
///    Unavailable` (with `Retry-After` if [configured](DrainOptions::retry_after))
///    before the inner service; ordinary requests pass as before;
/// 2. every open socket is sent a Close with 1001 (going away) and
///    [the reason](DrainOptions::reason), from outside the application's
///    tasks, as [`WebSocketHandle::close`](crate::WebSocketHandle::close)
///    does: a receive loop sees the client's answering Close as an
///    ordinary close and ends. A request admitted before the drain whose
///    handler accepts during it gets a socket that is closed the same way
///    at once;
/// 3. it waits until every WebSocket request of the layer is finished by
///    the lifetime rule (socket finished, request pipeline completed), or
///    until [the deadline](DrainOptions::deadline) passes; then it aborts
///    the sockets still open (and any accepted later), and resolves with a
///    [`DrainReport`].
///
/// A drain does not end; calling `drain` again (on any clone) waits again
/// and reports from that moment, without sending more Close frames.
///
/// The socket's Close is written by its receive loop, or by its background
/// task if no one is receiving; the client's answer is read by the
/// application's pending receive, which completes the handshake, or, while
/// none is pending, by the socket itself.
///
/// hyper's connections are not the layer's: an HTTP/1.1 connection is gone
/// from hyper once it is upgraded, and hyper-util's `GracefulShutdown`
/// waits for the rest. Run both, as the crate's `examples/production.rs`
/// does:
///
/// ```no_run
/// # async fn f(layer: tower_websockets::WebSocketLayer, graceful: hyper_util::server::graceful::GracefulShutdown) {
/// use std::time::Duration;
/// use tower_websockets::DrainOptions;
///
/// let drain = layer.drain_handle();
/// // ... on SIGTERM, having stopped accepting connections:
/// let (report, ()) = tokio::join!(
///     drain.drain(DrainOptions::new().deadline(Duration::from_secs(10))),
///     graceful.shutdown(),
/// );
/// println!("{} sockets closed, {} aborted", report.closed, report.aborted);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DrainHandle {
    live: Arc<Live>,
}

impl DrainHandle {
    pub(crate) fn new(live: Arc<Live>) -> DrainHandle {
        DrainHandle { live }
    }

    /// Drains the layer (see the type's docs) and reports what happened.
    ///
    /// # Cancel safety
    ///
    /// The drain starts on the first poll; dropping the future stops the
    /// wait, and the abort at its deadline, but not the drain.
    pub async fn drain(&self, options: DrainOptions) -> DrainReport {
        self.live.drain(&options).await
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        self.live.is_draining()
    }

    /// The layer's live WebSocket requests (see
    /// [`WebSocketLayer::live_sockets`](super::WebSocketLayer::live_sockets)).
    pub fn live_sockets(&self) -> usize {
        self.live.count()
    }
}

/// Settings of one drain: [`DrainHandle::drain`](crate::DrainHandle::drain).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DrainOptions {
    pub(crate) deadline: Duration,
    pub(crate) reason: Cow<'static, str>,
    retry_after: Option<Duration>,
}

/// [`DrainOptions`]' default deadline.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// [`DrainOptions`]' default Close reason.
pub const DEFAULT_DRAIN_REASON: &str = "server shutting down";

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            deadline: DEFAULT_DRAIN_DEADLINE,
            reason: Cow::Borrowed(DEFAULT_DRAIN_REASON),
            retry_after: None,
        }
    }
}

impl DrainOptions {
    /// The defaults: a 10 s deadline, the reason
    /// `"server shutting down"`, no `Retry-After`.
    pub fn new() -> Self {
        DrainOptions::default()
    }

    /// How long the drain waits for sockets to finish after sending them
    /// our Close, before it aborts the rest ([`DEFAULT_DRAIN_DEADLINE`]).
    /// Leave room for it in the orchestrator's grace period (Kubernetes'
    /// default `terminationGracePeriodSeconds` is 30 s).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The reason sent with the 1001 (going away) Close. RFC 6455 allows
    /// 123 bytes; a longer reason is cut at a character boundary.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Answer upgrades refused during the drain with this `Retry-After`
    /// (whole seconds, rounded up); none by default.
    #[must_use]
    pub fn retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub(crate) fn retry_after_header(&self) -> Option<HeaderValue> {
        let after = self.retry_after?;
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        Some(HeaderValue::from(seconds))
    }
}

/// What a drain did, from [`DrainHandle::drain`](crate::DrainHandle::drain).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// WebSocket requests live when this call began: open sockets, and
    /// requests whose handler had not accepted yet.
    pub sockets: usize,
    /// Of those, the ones finished before the deadline (socket finished
    /// and request pipeline completed).
    pub closed: usize,
    /// Sockets still open at the deadline, aborted then.
    pub aborted: usize,
    /// Requests still live at the deadline with no open socket to abort:
    /// a handler still running after its socket finished, or one that had
    /// not accepted yet (a socket it accepts now is aborted at once).
    pub unfinished: usize,
    /// How long the drain took.
    pub elapsed: Duration,
}

impl DrainReport {
    /// Whether every socket finished before the deadline.
    pub fn is_clean(&self) -> bool {
        self.closed == self.sockets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let header = |d| {
            DrainOptions::new()
                .retry_after(Some(d))
                .retry_after_header()
        };
        assert_eq!(header(Duration::from_secs(5)).unwrap(), "5");
        assert_eq!(header(Duration::from_millis(1500)).unwrap(), "2");
        assert!(DrainOptions::new().retry_after_header().is_none());
    }
}

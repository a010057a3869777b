//! Counters a layer keeps about its sockets, readable without a metrics
//! framework: [`WebSocketStats`].
//!
//! Events that happen once per socket (an accept, a rejection, a close)
//! are counted in atomics shared by the layer. Traffic is counted per
//! socket, in counters only that socket's core writes (under its lock, so
//! a plain load and store, no atomic read-modify-write on the data path);
//! a snapshot adds the live sockets' counters to those of the finished
//! ones.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a layer's counters, from
/// [`WebSocketLayer::stats`](crate::WebSocketLayer::stats).
///
/// Every count is monotonic over the layer's life except
/// [`live`](Self::live); a snapshot is consistent in itself (each socket's
/// traffic is counted exactly once, while it lives or after it finished),
/// so rates computed from two snapshots never go negative.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketStats {
    /// WebSocket requests seen and not yet finished, by the lifetime rule
    /// (the count [`WebSocketOptions::max_sockets`](crate::WebSocketOptions::max_sockets) caps).
    pub live: usize,
    /// Sockets accepted: the handshake response was sent and the
    /// connection handed over.
    pub accepted: u64,
    /// WebSocket requests the layer answered itself, by reason.
    pub rejected: Rejections,
    /// WebSocket requests that reached the handler and did not become a
    /// socket: it answered without accepting, or the accept failed
    /// (subprotocol not offered, the connection went away first, hyper
    /// could not hand it over).
    pub not_accepted: u64,
    /// Finished sockets, by how they ended.
    pub closed: Closes,
    /// Messages and bytes, both ways, of every socket this layer accepted.
    pub traffic: TrafficStats,
}

/// WebSocket requests [`WebSocketLayer`](crate::WebSocketLayer) answered
/// itself, before the inner service, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejections {
    /// `403`: the `Origin` is not allowed
    /// ([`WebSocketOptions::allowed_origins`](crate::WebSocketOptions::allowed_origins)).
    pub origin: u64,
    /// `503`: over [`WebSocketOptions::max_sockets`](crate::WebSocketOptions::max_sockets).
    pub capacity: u64,
    /// `503`: the layer is draining ([`DrainHandle`](crate::DrainHandle)).
    pub draining: u64,
}

/// Finished sockets by how they ended. Every accepted socket is counted
/// in exactly one of these once it is finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Closes {
    /// The close handshake completed (whoever started it).
    pub clean: u64,
    /// The peer broke the protocol; the socket sent the violation's close
    /// code (1002, 1007, 1009 ...) and dropped the connection.
    pub protocol_error: u64,
    /// The peer answered no keep-alive ping, or read none of our output,
    /// within the keep-alive timeout.
    pub keep_alive_timeout: u64,
    /// The peer did not answer our Close within the close timeout.
    pub close_timeout: u64,
    /// The connection ended without a close handshake, or reading or
    /// writing it failed.
    pub connection_lost: u64,
    /// Aborted by the application ([`WebSocket::abort`](crate::WebSocket::abort),
    /// a handle) or by a drain at its deadline.
    pub aborted: u64,
    /// The application dropped an open socket, or its request pipeline
    /// ended while it waited on it: the socket closed itself with 1011.
    pub left_open: u64,
}

/// Messages and bytes both ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrafficStats {
    /// Data messages received (counted at their last frame's header).
    pub messages_in: u64,
    /// Data messages sent (counted when their last frame is queued).
    pub messages_out: u64,
    /// Bytes read from the connections, frame headers included.
    pub bytes_in: u64,
    /// Bytes written to the connections, frame headers included (a
    /// closing socket's last output, its Close frame, counts when it is
    /// handed to the connection's last write).
    pub bytes_out: u64,
}

impl TrafficStats {
    fn add(&mut self, other: TrafficStats) {
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

/// How a socket ended, for [`Closes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Clean,
    ProtocolError,
    KeepAliveTimeout,
    CloseTimeout,
    ConnectionLost,
    Aborted,
    LeftOpen,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Clean => "clean",
            Outcome::ProtocolError => "protocol error",
            Outcome::KeepAliveTimeout => "keep-alive timeout",
            Outcome::CloseTimeout => "close timeout",
            Outcome::ConnectionLost => "connection lost",
            Outcome::Aborted => "aborted",
            Outcome::LeftOpen => "left open",
        }
    }
}

/// Why the layer answered a WebSocket request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    Origin,
    Capacity,
    Draining,
}

/// The once-per-socket counters of a layer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    accepted: AtomicU64,
    not_accepted: AtomicU64,
    rejected: [AtomicU64; 3],
    closed: [AtomicU64; 7],
}

impl Counters {
    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn not_accepted(&self) {
        self.not_accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, outcome: Outcome) {
        self.closed[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The snapshot, with `live` and the traffic filled in by the caller.
    pub(crate) fn snapshot(&self, live: usize, traffic: TrafficStats) -> WebSocketStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let closed = |o: Outcome| get(&self.closed[o as usize]);
        let rejected = |r: Rejection| get(&self.rejected[r as usize]);
        WebSocketStats {
            live,
            accepted: get(&self.accepted),
            rejected: Rejections {
                origin: rejected(Rejection::Origin),
                capacity: rejected(Rejection::Capacity),
                draining: rejected(Rejection::Draining),
            },
            not_accepted: get(&self.not_accepted),
            closed: Closes {
                clean: closed(Outcome::Clean),
                protocol_error: closed(Outcome::ProtocolError),
                keep_alive_timeout: closed(Outcome::KeepAliveTimeout),
                close_timeout: closed(Outcome::CloseTimeout),
                connection_lost: closed(Outcome::ConnectionLost),
                aborted: closed(Outcome::Aborted),
                left_open: closed(Outcome::LeftOpen),
            },
            traffic,
        }
    }
}

/// One socket's traffic. Written only by the socket's core, under its
/// lock; read by snapshots on other threads.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// Adds to a counter that has one writer: a plain load and store (no
/// locked instruction on the data path); readers see a value that is
/// never torn and only grows.
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

impl Traffic {
    #[inline(always)]
    pub(crate) fn message_in(&self) {
        bump(&self.messages_in, 1);
    }

    #[inline(always)]
    pub(crate) fn message_out(&self) {
        bump(&self.messages_out, 1);
    }

    #[inline(always)]
    pub(crate) fn read(&self, n: usize) {
        bump(&self.bytes_in, n as u64);
    }

    #[inline(always)]
    pub(crate) fn wrote(&self, n: usize) {
        bump(&self.bytes_out, n as u64);
    }

    pub(crate) fn get(&self) -> TrafficStats {
        TrafficStats {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// Traffic totals of finished sockets plus live ones, for a snapshot.
pub(crate) fn sum<'a>(
    finished: TrafficStats,
    live: impl Iterator<Item = &'a Traffic>,
) -> TrafficStats {
    let mut total = finished;
    for traffic in live {
        total.add(traffic.get());
    }
    total
}

/// Adds a finished socket's traffic to the totals.
pub(crate) fn retire(totals: &mut TrafficStats, traffic: &Traffic) {
    totals.add(traffic.get());
}

//! A multi-room chat whose rooms span several instances through Redis
//! pub/sub.
//!
//! ```text
//! cargo run --example chat -- --addr 127.0.0.1:5002
//! cargo run --example chat -- --addr 127.0.0.1:5002 --redis redis://127.0.0.1:6379
//! cargo run --example chat -- --addr 127.0.0.1:5003 --redis redis://127.0.0.1:6379
//! ```
//!
//! Open <http://127.0.0.1:5002> (and <http://127.0.0.1:5003>) in a browser,
//! pick a room and send: every text message a client sends reaches every
//! client of that room, on every instance, the sender included. Any
//! WebSocket client works too: `websocat ws://127.0.0.1:5002/ws?room=lobby`.
//! `/stats` shows the instance's counters as JSON.
//!
//! Options: `--addr HOST:PORT` (default `127.0.0.1:5002`), `--threads N`
//! (default: one per core), `--redis URL` (without it the chat is a single
//! node), `--instance ID` (default: a random one), `--slow-policy
//! drop-oldest|close` (default `drop-oldest`), `--overflow N` (default 64),
//! `--max-rooms N` (default 1000), `--max-sockets N` (default 10000),
//! `--close-timeout SECONDS` (default 10). `RUST_LOG` picks the logs
//! (default `info`).
//!
//! # Rooms
//!
//! `/ws?room=NAME` joins room `NAME` (`lobby` without a `room`). A name is
//! 1 to 32 characters, ASCII letters, digits, `-`, `_` and `.`; any other
//! name, or a second `room=`, is answered `400` before the upgrade. An
//! instance holds at most `--max-rooms` rooms with members; a request for a
//! new room past that is answered `503`. A room exists while it has local
//! members: the first one creates it, the last one to leave removes it.
//! Only text messages are chat: a binary message closes its socket with
//! 1003, and a message over 64 KiB with 1009 (the layer's
//! `max_message_size`, refused from the frame header).
//!
//! # Fan-out
//!
//! Each text to deliver is framed once, as a [`PreparedMessage`], and
//! queued on every local member of its room by reference with the
//! non-waiting [`WebSocketHandle::try_send_prepared`], from the task that
//! fans out: the sender's own task for a local message (after which it
//! goes back to receiving), the Redis subscriber's task for a message from
//! another instance. Every member's own task keeps receiving meanwhile.
//! Local messages reach the room's local members at once and in the same
//! order for all of them (one lock per room); each sender's messages
//! arrive in the order sent everywhere. Messages of different senders on
//! different instances may interleave differently on each instance (local
//! ones skip the round trip through Redis).
//!
//! # Slow members
//!
//! A member's socket queues at most 64 KiB (the layer's
//! `max_buffered_amount`); past that `try_send_prepared` reports `Full`
//! and the message is not queued. `--slow-policy` says what happens then:
//!
//! - `close`: the member is closed with 1013 (try again later), "too
//!   slow", from its handle. The Close frame waits behind the unread
//!   output; a member that reads nothing more is aborted at the close
//!   timeout (`--close-timeout`). It pins at most the 64 KiB queue (plus
//!   one message larger than that, as the queue takes one into an empty
//!   queue) until then. The policy is strict: the first message that does
//!   not fit closes the member. `Full` means the connection itself takes
//!   no more: before it says so, the send writes what waits in the queue
//!   as far as the connection takes it, so a burst to a member that reads
//!   is not taken for a slow member.
//! - `drop-oldest` (the default): the message goes to the member's
//!   overflow queue, at most `--overflow` messages (64), which drops its
//!   oldest entry when full (counted as `dropped` in `/stats`). While that
//!   queue is not empty, every later message for the member goes there
//!   too, so the member sees its messages in order, with a gap where some
//!   were dropped. The member's own task drains the queue with the waiting
//!   [`send_prepared`](WebSocketWriter::send_prepared), a message at a
//!   time, while it keeps receiving (`tokio::select!` between its
//!   `recv()`, the send and a [`Notify`]). A member that never reads pins
//!   at most 64 KiB of send queue, the one message its task has queued past
//!   that, and the 64 messages of its overflow queue: with 64 KiB messages
//!   about 4.1 MiB, with 100-byte lines about 70 KiB. The messages are
//!   shared with every other member (a reference each), so that is the
//!   most one member can keep alive, not a copy per member. A member
//!   that reads none of its output is finally aborted by the layer's
//!   keep-alive (`WebSocketOptions::keep_alive_timeout`).
//!
//! # Redis
//!
//! With `--redis URL`, each instance has an id (`--instance`, random by
//! default; ids must differ between instances). A local message is
//! delivered locally at once and published to the Redis channel
//! `chat:ROOM` as `ID\nTEXT`; every instance subscribed to that channel
//! delivers it to its local members, except the instance whose id it
//! carries, which has already. Two tasks talk to Redis:
//!
//! - the publisher owns one connection and publishes, in order, what the
//!   members' tasks hand it through a bounded channel: at most 1,024
//!   messages and 1 MiB wait for it; past that a message is not published
//!   (counted as `publish_dropped`; local delivery is unaffected), so a slow
//!   or absent Redis never holds memory or a member's task. Messages are
//!   sent in pipelines of up to 64 `PUBLISH`es.
//! - the subscriber owns one pub/sub connection with one subscription per
//!   room that has local members: it `SUBSCRIBE`s when a room gets its
//!   first local member and `UNSUBSCRIBE`s when the last one leaves
//!   (reconciling the set of rooms with its subscriptions whenever rooms
//!   come and go), and it pings Redis every 10 s.
//!
//! When Redis goes away, local delivery goes on as before. Each task
//! reconnects with a backoff (100 ms, doubling to 5 s); the subscriber
//! then subscribes again to every room that has members, and delivery
//! across instances resumes. What is lost meanwhile is not replayed
//! (Redis pub/sub keeps nothing): messages said while the publisher had no
//! connection (discarded as they come, counted as `publish_dropped`),
//! those of a pipeline that failed, and everything other instances
//! published while this instance's subscription was down. A subscriber
//! that falls far behind is disconnected by Redis itself (its
//! `client-output-buffer-limit` for pub/sub) and reconnects.
//!
//! # Counters
//!
//! `/stats` is one JSON object: `instance`, `redis` (whether it has
//! one), `slow_policy`, the gauges `rooms`, `members` and `subscriptions`
//! (Redis channels subscribed), the counters `messages_in` (texts from
//! local members), `remote_in` (texts from other instances fanned out
//! here), `remote_rejected`, `delivered` (queued on a member's socket),
//! `overflowed`, `dropped`, `closed_slow`, `published`,
//! `publish_dropped`, and `publisher_up` / `subscriber_up` (whether each
//! Redis task has its connection).
//!
//! # Bounds
//!
//! Messages 64 KiB, room names 32 bytes, rooms `--max-rooms`, sockets
//! `--max-sockets` (`503` past it, from the layer), per member the send
//! queue and the overflow queue above, the Redis publish queue above.
//! Handshakes have the deadlines of `common/mod.rs`. One queue is not
//! ours: the `redis` crate hands the subscriber its messages through an
//! unbounded channel, which the subscriber's task empties as fast as it
//! can fan out (never waiting on a member).
//!
//! Ctrl-C or SIGTERM drains the sockets with the layer's
//! [`DrainHandle`](tower_websockets::DrainHandle) (1001, going away) beside
//! hyper-util's `GracefulShutdown`, for at most 5 seconds.

#[path = "common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::error::Error as StdError;
use std::hash::BuildHasher;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{Notify, mpsc};
use tower::ServiceBuilder;
use tower_websockets::{
    CloseCode, DrainOptions, Error, Message, PreparedMessage, TrySendError, Utf8Bytes, WebSocket,
    WebSocketHandle, WebSocketLayer, WebSocketOptions, WebSocketReader, WebSocketUpgrade,
    WebSocketWriter,
};
use tracing_subscriber::EnvFilter;

type Body = Full<Bytes>;

/// The room of a `/ws` request without `room=`.
const DEFAULT_ROOM: &str = "lobby";

/// The longest room name (and instance id), in bytes.
const MAX_NAME: usize = 32;

/// The largest message a client may send (and one from Redis may carry).
const MAX_MESSAGE: usize = 64 * 1024;

/// A member's socket queue: past it, `try_send_prepared` reports `Full`.
/// The layer's default, set here because the docs above count with it.
const SEND_QUEUE: usize = 64 * 1024;

/// How many messages wait for the Redis publisher at most, and how many
/// bytes of text.
const PUBLISH_QUEUE: usize = 1024;
const PUBLISH_BYTES: usize = 1024 * 1024;

/// The most `PUBLISH`es in one pipeline.
const PUBLISH_BATCH: usize = 64;

/// The Redis channel of room `NAME` is `chat:NAME`.
const CHANNEL_PREFIX: &str = "chat:";

/// The first wait before reconnecting to Redis, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The deadline of every Redis request: connecting, subscribing, a
/// pipeline of `PUBLISH`es, a ping.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the subscriber pings Redis to find a dead connection.
const REDIS_PING: Duration = Duration::from_secs(10);

/// How long Ctrl-C and SIGTERM wait for sockets and connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const USAGE: &str = "\
usage: chat [--addr HOST:PORT] [--threads N] [--redis URL] [--instance ID]
            [--slow-policy drop-oldest|close] [--overflow N] [--max-rooms N]
            [--max-sockets N] [--close-timeout SECONDS]";

// ----- command line -----

/// What happens to a member whose socket queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlowPolicy {
    /// Queue the message in the member's bounded overflow queue, dropping
    /// its oldest entry when it is full.
    DropOldest,
    /// Close the member with 1013.
    Close,
}

impl SlowPolicy {
    fn as_str(self) -> &'static str {
        match self {
            SlowPolicy::DropOldest => "drop-oldest",
            SlowPolicy::Close => "close",
        }
    }
}

/// The command line.
struct Args {
    addr: String,
    threads: Option<usize>,
    redis: Option<String>,
    instance: Option<String>,
    policy: SlowPolicy,
    overflow: usize,
    max_rooms: usize,
    max_sockets: usize,
    close_timeout: Duration,
}

/// Parses the command line; `Ok(None)` for `--help`.
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        addr: "127.0.0.1:5002".to_owned(),
        threads: None,
        redis: None,
        instance: None,
        policy: SlowPolicy::DropOldest,
        overflow: 64,
        max_rooms: 1000,
        max_sockets: 10_000,
        close_timeout: Duration::from_secs(10),
    };
    while let Some(flag) = it.next() {
        if matches!(flag.as_str(), "-h" | "--help") {
            return Ok(None);
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => args.addr = value,
            "--threads" => args.threads = Some(number(&flag, &value)?),
            "--redis" => args.redis = Some(value),
            "--instance" => {
                if !valid_name(&value) {
                    return Err(format!(
                        "--instance takes 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
                    ));
                }
                args.instance = Some(value);
            }
            "--slow-policy" => {
                args.policy = match value.as_str() {
                    "drop-oldest" => SlowPolicy::DropOldest,
                    "close" => SlowPolicy::Close,
                    _ => return Err("--slow-policy takes drop-oldest or close".to_owned()),
                };
            }
            "--overflow" => args.overflow = number(&flag, &value)?,
            "--max-rooms" => args.max_rooms = number(&flag, &value)?,
            "--max-sockets" => args.max_sockets = number(&flag, &value)?,
            "--close-timeout" => {
                args.close_timeout = value
                    .parse()
                    .ok()
                    .and_then(|s: f64| Duration::try_from_secs_f64(s).ok())
                    .filter(|d| !d.is_zero())
                    .ok_or(format!("{flag} takes a positive number of seconds"))?;
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(Some(args))
}

fn number(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} takes a positive number")),
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    common::run(args.threads, serve(args))
}

// ----- the server -----

/// Serves until Ctrl-C or SIGTERM, then drains.
async fn serve(args: Args) -> Result<(), Box<dyn StdError>> {
    let redis = match &args.redis {
        Some(url) => {
            Some(redis::Client::open(url.as_str()).map_err(|e| format!("--redis {url}: {e}"))?)
        }
        None => None,
    };
    let instance: Arc<str> = args.instance.clone().map_or_else(random_id, Arc::from);
    let (publish, publish_queue) = match redis {
        Some(_) => {
            let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let chat = Arc::new(Chat {
        instance: instance.clone(),
        policy: args.policy,
        overflow: args.overflow,
        max_rooms: args.max_rooms,
        rooms: Mutex::default(),
        next_member: AtomicU64::new(1),
        rooms_changed: Notify::new(),
        publish,
        publish_bytes: AtomicUsize::new(0),
        stats: Counters::default(),
    });
    if let (Some(client), Some(queue)) = (redis, publish_queue) {
        tokio::spawn(publisher(client.clone(), queue, chat.clone()));
        tokio::spawn(subscriber(client, chat.clone()));
    }

    let options = WebSocketOptions::default()
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .max_buffered_amount(SEND_QUEUE)
        .max_sockets(Some(args.max_sockets))
        .close_timeout(args.close_timeout);
    let layer = WebSocketLayer::new(options)?;
    let drain = layer.drain_handle();
    let routes = chat.clone();
    let app = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |req| route(req, routes.clone()));

    let listener = common::bind(&args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    println!("Listening on http://{}", listener.local_addr()?);
    tracing::info!(
        %instance,
        redis = args.redis.as_deref().unwrap_or("none"),
        slow_policy = args.policy.as_str(),
        overflow = args.overflow,
        "chat started"
    );

    let graceful = GracefulShutdown::new();
    common::serve_until_shutdown(listener, app, &graceful).await;

    tracing::info!(
        members = chat.stats.members.load(Ordering::Relaxed),
        "shutting down"
    );
    let options = DrainOptions::new().deadline(SHUTDOWN_GRACE);
    let (report, connections) = tokio::join!(
        drain.drain(options),
        tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()),
    );
    tracing::info!(
        sockets = report.sockets,
        closed = report.closed,
        aborted = report.aborted,
        connections_closed = connections.is_ok(),
        "drained"
    );
    Ok(())
}

/// `/` the page, `/ws?room=NAME` a member, `/stats` the counters.
async fn route(mut req: Request<Incoming>, chat: Arc<Chat>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if path == "/ws" {
        // The name is checked before anything else, the upgrade included.
        let room = match room_from_query(req.uri().query()) {
            Ok(room) => room,
            Err(why) => return Ok(text(StatusCode::BAD_REQUEST, why)),
        };
        if !chat.has_room_for(room) {
            return Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many rooms on this instance\n",
            ));
        }
        let room: Arc<str> = Arc::from(room);
        let Some(upgrade) = WebSocketUpgrade::from_request(&mut req) else {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                "expected a WebSocket request\n",
            ));
        };
        // Its headers share hyper's read buffer: free it for the socket's
        // life.
        drop(req);
        match upgrade.accept().await {
            Ok(socket) => run_member(chat, room, socket).await,
            Err(error) => tracing::debug!(error = &error as &dyn StdError, "accept failed"),
        }
        // Discarded: the 101 was sent when the socket was accepted.
        return Ok(Response::default());
    }
    let response = match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/") => {
            with_type(Response::new(Body::from(PAGE)), "text/html; charset=utf-8")
        }
        (&Method::GET | &Method::HEAD, "/stats") => with_type(
            Response::new(Body::from(chat.stats_json())),
            "application/json",
        ),
        (_, "/" | "/stats") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// The room a `/ws` request names: `room=NAME` in its query, or
/// [`DEFAULT_ROOM`]. Names are not percent-decoded: no valid name needs it.
fn room_from_query(query: Option<&str>) -> Result<&str, &'static str> {
    let mut room = None;
    for pair in query.unwrap_or("").split('&') {
        let value = match pair.split_once('=') {
            Some(("room", value)) => value,
            None if pair == "room" => "",
            _ => continue,
        };
        if room.replace(value).is_some() {
            return Err("name one room only\n");
        }
    }
    let room = room.unwrap_or(DEFAULT_ROOM);
    if valid_name(room) {
        Ok(room)
    } else {
        Err("a room name is 1 to 32 letters, digits, '-', '_' or '.'\n")
    }
}

/// 1 to [`MAX_NAME`] ASCII letters, digits, `-`, `_` and `.`: printable,
/// short, the same in a URL, a log line and a Redis channel.
fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A random instance id: 64 bits from the standard library's random hash
/// keys, the process id and the time.
fn random_id() -> Arc<str> {
    let bits = std::collections::hash_map::RandomState::new()
        .hash_one((std::process::id(), SystemTime::now()));
    Arc::from(format!("{bits:016x}"))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = with_type(Response::new(Body::from(body)), "text/plain; charset=utf-8");
    *response.status_mut() = status;
    response
}

fn with_type(mut response: Response<Body>, content_type: &'static str) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Locks `mutex`, also after a panic elsewhere while it was held: every
/// critical section here leaves its data consistent at each step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ----- rooms and members -----

/// The instance's rooms, its link to the Redis tasks, its counters.
struct Chat {
    /// Carried by what this instance publishes.
    instance: Arc<str>,
    policy: SlowPolicy,
    /// The bound of each member's overflow queue (drop-oldest).
    overflow: usize,
    max_rooms: usize,
    /// Rooms with at least one local member. Lock order: this map, then a
    /// room's members, then a member's backlog.
    rooms: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    next_member: AtomicU64,
    /// A room was created or removed: the subscriber reconciles.
    rooms_changed: Notify,
    /// To the Redis publisher, when there is Redis.
    publish: Option<mpsc::Sender<Publish>>,
    /// Bytes of text waiting in `publish`.
    publish_bytes: AtomicUsize,
    stats: Counters,
}

/// `/stats`: gauges and counters since the start.
#[derive(Default)]
struct Counters {
    /// Local members now.
    members: AtomicUsize,
    /// Text messages received from local members.
    messages_in: AtomicU64,
    /// Messages from other instances, through Redis, fanned out here.
    remote_in: AtomicU64,
    /// Messages from Redis refused: no origin, not UTF-8, too long.
    remote_rejected: AtomicU64,
    /// Messages queued on a member's socket (directly or from its overflow
    /// queue).
    delivered: AtomicU64,
    /// Messages that went to a member's overflow queue.
    overflowed: AtomicU64,
    /// Messages an overflow queue dropped (its oldest, when full).
    dropped: AtomicU64,
    /// Members closed for being too slow (close policy).
    closed_slow: AtomicU64,
    /// Messages published to Redis.
    published: AtomicU64,
    /// Messages not published: the queue to the publisher was full, Redis
    /// was down, or their pipeline failed.
    publish_dropped: AtomicU64,
    /// Rooms the subscriber is subscribed to now.
    subscriptions: AtomicUsize,
    /// Whether the publisher has a connection.
    publisher_up: AtomicBool,
    /// Whether the subscriber has a connection with its subscriptions.
    subscriber_up: AtomicBool,
}

/// One room's local members.
#[derive(Default)]
struct Room {
    members: Mutex<Vec<Arc<Member>>>,
}

/// One local member: its socket's handle, for the fan-out, and its
/// overflow queue.
struct Member {
    id: u64,
    handle: WebSocketHandle,
    backlog: Mutex<Backlog>,
    /// Rung when the backlog gets a message: the member's task drains it.
    wake: Notify,
}

/// A member's overflow queue (drop-oldest policy) and its slow state.
#[derive(Default)]
struct Backlog {
    queue: VecDeque<Arc<PreparedMessage>>,
    /// The member's task is sending the message it took from `queue`:
    /// later messages must still go behind it.
    sending: bool,
    /// Closing for being slow (close policy): send nothing more.
    closing: bool,
}

/// A message for the Redis publisher.
struct Publish {
    room: Arc<str>,
    text: Utf8Bytes,
}

/// A member's place in its room, left when dropped.
struct Membership {
    chat: Arc<Chat>,
    name: Arc<str>,
    room: Arc<Room>,
    member: Arc<Member>,
}

/// Joining would create a room past `--max-rooms`.
struct TooManyRooms;

impl Chat {
    /// Whether a member could join `name` now (its room exists, or one
    /// more fits).
    fn has_room_for(&self, name: &str) -> bool {
        let rooms = lock(&self.rooms);
        rooms.contains_key(name) || rooms.len() < self.max_rooms
    }

    /// Adds a member with `handle` to room `name`, creating the room.
    fn join(
        self: &Arc<Self>,
        name: Arc<str>,
        handle: WebSocketHandle,
    ) -> Result<Membership, TooManyRooms> {
        let member = Arc::new(Member {
            id: self.next_member.fetch_add(1, Ordering::Relaxed),
            handle,
            backlog: Mutex::default(),
            wake: Notify::new(),
        });
        let mut rooms = lock(&self.rooms);
        let (room, created) = match rooms.get(&name) {
            Some(room) => (room.clone(), false),
            None if rooms.len() >= self.max_rooms => return Err(TooManyRooms),
            None => {
                let room = Arc::new(Room::default());
                rooms.insert(name.clone(), room.clone());
                (room, true)
            }
        };
        lock(&room.members).push(member.clone());
        drop(rooms);
        self.stats.members.fetch_add(1, Ordering::Relaxed);
        if created {
            self.rooms_changed.notify_one();
        }
        Ok(Membership {
            chat: self.clone(),
            name,
            room,
            member,
        })
    }

    /// A text from a local member of `room`: delivered to the room's local
    /// members at once, then handed to the Redis publisher.
    fn say(&self, name: &Arc<str>, room: &Room, text: Utf8Bytes) {
        self.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        let message = Arc::new(PreparedMessage::text(text.as_str()));
        self.fan_out(room, &message);
        self.publish(name, text);
    }

    /// Queues `message` on every member of `room`, without waiting.
    fn fan_out(&self, room: &Room, message: &Arc<PreparedMessage>) {
        let members = lock(&room.members);
        for member in members.iter() {
            self.deliver(member, message);
        }
    }

    /// Queues `message` on `member`'s socket or, per the slow policy, in
    /// its overflow queue, or closes it.
    fn deliver(&self, member: &Member, message: &Arc<PreparedMessage>) {
        let mut backlog = lock(&member.backlog);
        if backlog.closing {
            return;
        }
        // Behind messages already waiting: the member's order holds.
        if backlog.sending || !backlog.queue.is_empty() {
            self.overflow(member, &mut backlog, message);
            return;
        }
        match member.handle.try_send_prepared(message) {
            Ok(()) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(())) => match self.policy {
                SlowPolicy::DropOldest => self.overflow(member, &mut backlog, message),
                SlowPolicy::Close => {
                    backlog.closing = true;
                    self.stats.closed_slow.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(member = member.id, "closing a member too slow to read");
                    let handle = member.handle.clone();
                    tokio::spawn(async move {
                        // Aborted at the close timeout if it reads no more.
                        let _ = handle.close(CloseCode::TRY_AGAIN_LATER, "too slow").await;
                    });
                }
            },
            // Closing or gone: its own task leaves the room.
            Err(TrySendError::Failed(_)) => {}
        }
    }

    /// Puts `message` in `member`'s overflow queue, dropping the oldest
    /// entry of a full queue, and wakes the member's task.
    fn overflow(&self, member: &Member, backlog: &mut Backlog, message: &Arc<PreparedMessage>) {
        if backlog.queue.len() >= self.overflow {
            backlog.queue.pop_front();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        backlog.queue.push_back(message.clone());
        self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
        member.wake.notify_one();
    }

    /// Hands `text` to the Redis publisher, unless its queue is full.
    fn publish(&self, name: &Arc<str>, text: Utf8Bytes) {
        let Some(publish) = &self.publish else {
            return;
        };
        let len = text.len();
        let reserved = self
            .publish_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| {
                (queued + len <= PUBLISH_BYTES).then_some(queued + len)
            })
            .is_ok();
        let queued = reserved
            && publish
                .try_send(Publish {
                    room: name.clone(),
                    text,
                })
                .is_ok();
        if !queued {
            if reserved {
                self.publish_bytes.fetch_sub(len, Ordering::Relaxed);
            }
            self.stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The publisher is done with messages of `bytes` bytes of text in
    /// all: published, failed or discarded.
    fn published(&self, bytes: usize) {
        self.publish_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A message from Redis: fanned out to the local members of its room,
    /// unless this instance published it.
    fn on_remote(&self, message: &redis::Msg) {
        let Some(name) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
            return;
        };
        let payload = message.get_payload_bytes();
        let Some(newline) = payload.iter().position(|&b| b == b'\n') else {
            self.stats.remote_rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (origin, text) = (&payload[..newline], &payload[newline + 1..]);
        if origin == self.instance.as_bytes() {
            return; // delivered here when it was said
        }
        let text = match std::str::from_utf8(text) {
            Ok(text) if text.len() <= MAX_MESSAGE => text,
            _ => {
                self.stats.remote_rejected.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Some(room) = lock(&self.rooms).get(name).cloned() else {
            return; // its last member left
        };
        self.stats.remote_in.fetch_add(1, Ordering::Relaxed);
        self.fan_out(&room, &Arc::new(PreparedMessage::text(text)));
    }

    /// The names of the rooms with members.
    fn room_names(&self) -> HashSet<Arc<str>> {
        lock(&self.rooms).keys().cloned().collect()
    }

    /// `/stats` as one JSON object (names and the id need no escaping).
    fn stats_json(&self) -> String {
        let s = &self.stats;
        let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            concat!(
                "{{\"instance\":\"{}\",\"redis\":{},\"slow_policy\":\"{}\",",
                "\"rooms\":{},\"members\":{},\"messages_in\":{},\"remote_in\":{},",
                "\"remote_rejected\":{},\"delivered\":{},\"overflowed\":{},\"dropped\":{},",
                "\"closed_slow\":{},\"published\":{},\"publish_dropped\":{},",
                "\"subscriptions\":{},\"publisher_up\":{},\"subscriber_up\":{}}}\n"
            ),
            self.instance,
            self.publish.is_some(),
            self.policy.as_str(),
            lock(&self.rooms).len(),
            s.members.load(Ordering::Relaxed),
            n(&s.messages_in),
            n(&s.remote_in),
            n(&s.remote_rejected),
            n(&s.delivered),
            n(&s.overflowed),
            n(&s.dropped),
            n(&s.closed_slow),
            n(&s.published),
            n(&s.publish_dropped),
            s.subscriptions.load(Ordering::Relaxed),
            s.publisher_up.load(Ordering::Relaxed),
            s.subscriber_up.load(Ordering::Relaxed),
        )
    }
}

impl Member {
    /// Takes the next message of the overflow queue, marking it as being
    /// sent.
    fn next_backlogged(&self) -> Option<Arc<PreparedMessage>> {
        let mut backlog = lock(&self.backlog);
        let next = backlog.queue.pop_front();
        backlog.sending = next.is_some();
        next
    }

    /// The message [`next_backlogged`](Self::next_backlogged) gave is
    /// queued on the socket.
    fn sent_backlogged(&self) {
        lock(&self.backlog).sending = false;
    }
}

impl Membership {
    /// The member's task: receives (and fans out) its messages, and drains
    /// its overflow queue with the waiting `send_prepared`, until the
    /// socket ends.
    async fn run(
        &self,
        mut reader: WebSocketReader,
        mut writer: WebSocketWriter,
    ) -> Result<(), Error> {
        loop {
            if let Some(next) = self.member.next_backlogged() {
                // Queued on the first poll; waits while the socket's queue
                // is past its bound. Receiving goes on meanwhile.
                let send = writer.send_prepared(&next);
                tokio::pin!(send);
                let sent = loop {
                    let incoming = tokio::select! {
                        biased;
                        sent = &mut send => break sent,
                        incoming = reader.recv() => incoming,
                    };
                    if !self.on_incoming(&reader, incoming)? {
                        return Ok(());
                    }
                };
                self.member.sent_backlogged();
                sent?;
                self.chat.stats.delivered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let incoming = tokio::select! {
                () = self.member.wake.notified() => continue,
                incoming = reader.recv() => incoming,
            };
            if !self.on_incoming(&reader, incoming)? {
                return Ok(());
            }
        }
    }

    /// Handles what the member sent; `Ok(false)` when its socket is done.
    fn on_incoming(
        &self,
        reader: &WebSocketReader,
        incoming: Option<Result<Message, Error>>,
    ) -> Result<bool, Error> {
        match incoming {
            Some(Ok(Message::Text(text))) => {
                self.chat.say(&self.name, &self.room, text);
                Ok(true)
            }
            Some(Ok(Message::Binary(_))) => {
                // Keep receiving until the client answers.
                reader.close_output(CloseCode::UNSUPPORTED_DATA, "text messages only")?;
                Ok(true)
            }
            // Pings are answered by the socket itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(true),
            // Dropping the socket answers the client's Close.
            Some(Ok(Message::Close(_))) | None => Ok(false),
            Some(Err(error)) => Err(error),
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut rooms = lock(&self.chat.rooms);
        let mut members = lock(&self.room.members);
        members.retain(|member| member.id != self.member.id);
        let removed = members.is_empty()
            && rooms
                .get(&self.name)
                .is_some_and(|room| Arc::ptr_eq(room, &self.room));
        drop(members);
        if removed {
            rooms.remove(&self.name);
        }
        drop(rooms);
        self.chat.stats.members.fetch_sub(1, Ordering::Relaxed);
        if removed {
            self.chat.rooms_changed.notify_one();
        }
    }
}

/// An accepted socket as a member of `room` until it ends, with its start
/// and end logged.
async fn run_member(chat: Arc<Chat>, room: Arc<str>, mut socket: WebSocket) {
    let started = Instant::now();
    let membership = match chat.join(room.clone(), socket.handle()) {
        Ok(membership) => membership,
        Err(TooManyRooms) => {
            // Another request took the last room since the check.
            let _ = socket
                .close_with(CloseCode::TRY_AGAIN_LATER, "too many rooms")
                .await;
            return;
        }
    };
    let member = membership.member.id;
    tracing::info!(%room, member, "member joined");
    let (reader, writer) = socket.split();
    let result = membership.run(reader, writer).await;
    let duration = started.elapsed();
    match result {
        Ok(()) => tracing::info!(%room, member, ?duration, "member left"),
        Err(error) => tracing::info!(
            %room,
            member,
            ?duration,
            error = &error as &dyn StdError,
            "member left"
        ),
    }
}

// ----- Redis -----

/// The wait before the next attempt to reach Redis: 100 ms, doubling to
/// 5 s; back to 100 ms once connected.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }

    /// Whether no attempt failed since the last success.
    fn is_first(&self) -> bool {
        self.next == BACKOFF_FIRST
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(BACKOFF_MAX);
        wait
    }

    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

/// The Redis channel of room `name`.
fn channel(name: &str) -> String {
    format!("{CHANNEL_PREFIX}{name}")
}

/// Awaits a Redis request within [`REDIS_TIMEOUT`].
async fn timed<T>(
    request: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Box<dyn StdError + Send + Sync>> {
    match tokio::time::timeout(REDIS_TIMEOUT, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(format!("no answer from redis in {REDIS_TIMEOUT:?}").into()),
    }
}

/// The publisher task: one connection, `PUBLISH`es in pipelines, in the
/// order the members said them; reconnects with backoff, discarding what
/// is said while it has no connection.
async fn publisher(client: redis::Client, mut queue: mpsc::Receiver<Publish>, chat: Arc<Chat>) {
    let mut backoff = Backoff::new();
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let mut connection = match timed(client.get_multiplexed_async_connection()).await {
            Ok(connection) => connection,
            Err(error) => {
                if backoff.is_first() {
                    tracing::warn!(error, "redis publisher cannot connect; retrying");
                }
                let wait = tokio::time::sleep(backoff.next());
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        lost = queue.recv() => match lost {
                            Some(lost) => {
                                chat.published(lost.text.len());
                                chat.stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        backoff.reset();
        chat.stats.publisher_up.store(true, Ordering::Relaxed);
        tracing::info!("redis publisher connected");
        loop {
            if queue.recv_many(&mut batch, PUBLISH_BATCH).await == 0 {
                return; // the server is gone
            }
            let mut pipeline = redis::pipe();
            let mut bytes = 0;
            for message in &batch {
                let mut payload = Vec::with_capacity(chat.instance.len() + 1 + message.text.len());
                payload.extend_from_slice(chat.instance.as_bytes());
                payload.push(b'\n');
                payload.extend_from_slice(message.text.as_bytes());
                bytes += message.text.len();
                pipeline
                    .cmd("PUBLISH")
                    .arg(channel(&message.room))
                    .arg(payload)
                    .ignore();
            }
            let result = timed(pipeline.query_async::<()>(&mut connection)).await;
            chat.published(bytes);
            let count = batch.len() as u64;
            batch.clear();
            match result {
                Ok(()) => {
                    chat.stats.published.fetch_add(count, Ordering::Relaxed);
                }
                Err(error) => {
                    chat.stats
                        .publish_dropped
                        .fetch_add(count, Ordering::Relaxed);
                    chat.stats.publisher_up.store(false, Ordering::Relaxed);
                    tracing::warn!(error, "redis publish failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// The subscriber task: one pub/sub connection at a time, subscribed to
/// the rooms with members, delivering what other instances publish;
/// reconnects with backoff.
async fn subscriber(client: redis::Client, chat: Arc<Chat>) {
    let mut backoff = Backoff::new();
    loop {
        let error = subscription(&client, &chat, &mut backoff).await;
        let was_up = chat.stats.subscriber_up.swap(false, Ordering::Relaxed);
        chat.stats.subscriptions.store(0, Ordering::Relaxed);
        if was_up {
            tracing::warn!(error, "redis subscription lost; reconnecting");
        } else if backoff.is_first() {
            tracing::warn!(error, "redis subscriber cannot connect; retrying");
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

/// One subscriber connection, until it fails.
async fn subscription(
    client: &redis::Client,
    chat: &Chat,
    backoff: &mut Backoff,
) -> Box<dyn StdError + Send + Sync> {
    let (mut sink, mut stream) = match timed(client.get_async_pubsub()).await {
        Ok(pubsub) => pubsub.split(),
        Err(error) => return error,
    };
    let mut subscribed = HashSet::new();
    if let Err(error) = reconcile(&mut sink, &mut subscribed, chat).await {
        return error;
    }
    backoff.reset();
    chat.stats.subscriber_up.store(true, Ordering::Relaxed);
    tracing::info!(rooms = subscribed.len(), "redis subscriber connected");
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + REDIS_PING, REDIS_PING);
    loop {
        let result = tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    chat.on_remote(&message);
                    Ok(())
                }
                None => Err("the connection closed".into()),
            },
            () = chat.rooms_changed.notified() => reconcile(&mut sink, &mut subscribed, chat).await,
            _ = ping.tick() => timed(sink.ping::<redis::Value>()).await.map(drop),
        };
        if let Err(error) = result {
            return error;
        }
    }
}

/// Subscribes to the rooms that got members and unsubscribes from those
/// that lost them since the last call.
async fn reconcile(
    sink: &mut redis::aio::PubSubSink,
    subscribed: &mut HashSet<Arc<str>>,
    chat: &Chat,
) -> Result<(), Box<dyn StdError + Send + Sync>> {
    let wanted = chat.room_names();
    let join: Vec<String> = wanted.difference(subscribed).map(|r| channel(r)).collect();
    let leave: Vec<String> = subscribed.difference(&wanted).map(|r| channel(r)).collect();
    if !join.is_empty() {
        timed(sink.subscribe(&join)).await?;
    }
    if !leave.is_empty() {
        timed(sink.unsubscribe(&leave)).await?;
    }
    if !join.is_empty() || !leave.is_empty() {
        tracing::debug!(?join, ?leave, "redis subscriptions");
    }
    chat.stats
        .subscriptions
        .store(wanted.len(), Ordering::Relaxed);
    *subscribed = wanted;
    Ok(())
}

// ----- the page -----

/// The chat page: pick a room and a name, send, see the room's messages.
/// Everything from the network is put in the page as text, never as HTML.
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chat</title>
<style>
  body { font-family: system-ui, sans-serif; color: #222; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
  .row { display: flex; gap: .5rem; align-items: center; margin: .75rem 0; }
  .row input { padding: .3rem .4rem; }
  #text { flex: 1; }
  button { padding: .3rem .9rem; }
  #log { list-style: none; padding: 0; border-top: 1px solid #ddd; }
  #log li { padding: .25rem .5rem; border-bottom: 1px solid #eee; white-space: pre-wrap; word-break: break-word; }
  #log li.event { color: #777; font-style: italic; }
  #state { font-weight: 600; }
</style>
</head>
<body>
<h1>Chat</h1>
<p><span id="state">Not connected.</span> <span id="instance"></span></p>
<div class="row">
  <label for="room">Room</label>
  <input id="room" value="lobby" maxlength="32" size="14">
  <label for="nick">Name</label>
  <input id="nick" maxlength="32" size="14">
  <button id="join" type="button">Join</button>
  <button id="leave" type="button" disabled>Leave</button>
</div>
<form id="form" class="row">
  <input id="text" autocomplete="off" placeholder="Say something" disabled>
  <button id="send" disabled>Send</button>
</form>
<ul id="log"></ul>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let socket = null;

function line(text, kind) {
  const item = document.createElement("li");
  item.textContent = text;
  if (kind) item.className = kind;
  $("log").append(item);
  while ($("log").children.length > 500) $("log").firstElementChild.remove();
  item.scrollIntoView({ block: "nearest" });
}

function joined(on) {
  $("join").disabled = on;
  $("room").disabled = on;
  $("leave").disabled = !on;
  $("text").disabled = !on;
  $("send").disabled = !on;
}

$("join").onclick = () => {
  const room = $("room").value.trim() || "lobby";
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  socket = new WebSocket(scheme + location.host + "/ws?room=" + encodeURIComponent(room));
  $("state").textContent = "Joining " + room + "...";
  socket.onopen = () => {
    $("state").textContent = "In room " + room + ".";
    joined(true);
    $("text").focus();
  };
  socket.onmessage = (event) => line(event.data);
  socket.onerror = () => line("connection failed (room names: 1 to 32 letters, digits, - _ .)", "event");
  socket.onclose = (event) => {
    line("closed (" + event.code + (event.reason ? ": " + event.reason : "") + ")", "event");
    $("state").textContent = "Not connected.";
    joined(false);
    socket = null;
  };
};

$("leave").onclick = () => { if (socket) socket.close(1000, "bye"); };

$("form").onsubmit = (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!socket || text === "") return;
  const nick = $("nick").value.trim();
  socket.send(nick ? nick + ": " + text : text);
  $("text").value = "";
};

fetch("/stats").then((r) => r.json()).then((stats) => {
  $("instance").textContent = "Instance " + stats.instance +
    (stats.redis ? ", rooms shared through Redis." : ", single node.");
}).catch(() => {});
</script>
</body>
</html>
"#;

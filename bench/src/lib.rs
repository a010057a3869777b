//! Shared plumbing for the benchmark's echo servers: the command line every
//! server takes (`--addr HOST:PORT --threads N`, plus a server's own flags)
//! and the hand-built tokio runtime it runs on, so that all servers are
//! started and sized the same way and differ only in their WebSocket code.
//!
//! For the broadcast scenario, also what is not WebSocket code: which role
//! a request path asks for ([`Role`]) and the one room of subscribers
//! ([`Room`]), a registry of each subscriber's unbounded channel. What goes
//! through a channel, and how a subscriber's writer sends it, is each
//! server's own.

use std::future::Future;
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use slab::Slab;
use tokio::sync::mpsc::UnboundedSender;

/// What every bench server takes on its command line.
#[derive(Debug, Clone)]
pub struct ServerArgs {
    /// `--addr HOST:PORT`, default `127.0.0.1:9001`.
    pub addr: String,
    /// `--threads N`, tokio worker threads, default 1.
    pub threads: usize,
}

impl ServerArgs {
    /// Parses `std::env::args()`; `Err` holds the message to print.
    ///
    /// # Errors
    ///
    /// An unknown flag, a missing value or a thread count that is not a
    /// positive number.
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        Self::parse_with(args, |_, _| Ok(false))
    }

    /// [`parse`](Self::parse) for a server with flags of its own: every
    /// flag other than `--addr` and `--threads` is first offered to
    /// `extra`, with the rest of the command line to take its value from;
    /// `extra` returns whether the flag was one of its own.
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse), and whatever `extra` returns.
    pub fn parse_with(
        mut args: impl Iterator<Item = String>,
        mut extra: impl FnMut(&str, &mut dyn Iterator<Item = String>) -> Result<bool, String>,
    ) -> Result<Self, String> {
        let mut parsed = ServerArgs {
            addr: "127.0.0.1:9001".to_owned(),
            threads: 1,
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--addr" => parsed.addr = args.next().ok_or("--addr needs HOST:PORT")?,
                "--threads" => {
                    let value = args.next().ok_or("--threads needs a number")?;
                    parsed.threads = match value.parse() {
                        Ok(n) if n > 0 => n,
                        _ => return Err(format!("--threads must be positive, not {value:?}")),
                    };
                }
                other => {
                    if !extra(other, &mut args)? {
                        return Err(format!("unknown argument {other:?}"));
                    }
                }
            }
        }
        Ok(parsed)
    }
}

/// Parses the command line, raises the fd limit, builds a multi-thread
/// runtime with `--threads` workers and runs `serve(addr)` on it.
///
/// `name` is the server's name for messages.
pub fn run_server<F, Fut>(name: &str, serve: F) -> ExitCode
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    run_server_with(name, "", |_, _| Ok(false), serve)
}

/// [`run_server`] for a server with flags of its own: `extra` parses them
/// (see [`ServerArgs::parse_with`]) and `extra_usage` (such as
/// `" [--mode A|B]"`) is added to the usage line.
pub fn run_server_with<F, Fut>(
    name: &str,
    extra_usage: &str,
    extra: impl FnMut(&str, &mut dyn Iterator<Item = String>) -> Result<bool, String>,
    serve: F,
) -> ExitCode
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = std::io::Result<()>>,
{
    let args = match ServerArgs::parse_with(std::env::args().skip(1), extra) {
        Ok(args) => args,
        Err(message) => {
            eprintln!(
                "{name}: {message}\nusage: {name} [--addr HOST:PORT] [--threads N]{extra_usage}"
            );
            return ExitCode::from(2);
        }
    };
    // 10,000 idle sockets need more than the usual 1,024 descriptors.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(serve(args.addr)),
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `addr` and says so on stdout.
///
/// # Errors
///
/// The address cannot be bound.
pub async fn bind(name: &str, addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{name} listening on {}", listener.local_addr()?);
    Ok(listener)
}

/// What a WebSocket does, chosen by its request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `/sub`: joins the room and receives every message published; sends
    /// nothing.
    Subscriber,
    /// `/pub`: every text or binary message it sends goes to every current
    /// subscriber (not back to it).
    Publisher,
    /// Any other path (loadgen's echo mode asks for `/ws`): the echo.
    Echo,
}

impl Role {
    /// The role of a request for `path` (the path alone, no query).
    pub fn from_path(path: &[u8]) -> Self {
        match path {
            b"/sub" => Role::Subscriber,
            b"/pub" => Role::Publisher,
            _ => Role::Echo,
        }
    }
}

/// The broadcast scenario's one room: every current subscriber's sender.
///
/// A subscriber [`join`](Self::join)s with the sending end of its own
/// unbounded channel and [`leave`](Self::leave)s when its socket ends; a
/// publisher [`publish`](Self::publish)es each message by sending a clone
/// of it into every channel, under the room's lock. `T` is what the server
/// sends per delivery (a library's message type, or the floor's one
/// encoded frame), so the clone is a reference count, not a copy.
#[derive(Debug)]
pub struct Room<T> {
    members: Mutex<Slab<UnboundedSender<T>>>,
}

impl<T> Default for Room<T> {
    fn default() -> Self {
        Room {
            members: Mutex::new(Slab::new()),
        }
    }
}

impl<T: Clone> Room<T> {
    /// Adds a subscriber; returns its id for [`leave`](Self::leave).
    pub fn join(&self, sender: UnboundedSender<T>) -> usize {
        self.lock().insert(sender)
    }

    /// Removes the subscriber `id` (no-op if it already left).
    pub fn leave(&self, id: usize) {
        self.lock().try_remove(id);
    }

    /// Sends a clone of `message` to every subscriber. One whose writer has
    /// already ended is skipped; it leaves when its reader sees the end.
    pub fn publish(&self, message: &T) {
        for (_, sender) in self.lock().iter() {
            let _ = sender.send(message.clone());
        }
    }

    /// A subscriber on a library's `Stream + Sink` socket, as the peers
    /// with one broadcast naturally: the socket is split, a writer task
    /// does one `SinkExt::send` (write and flush) per message the room
    /// queues, and the read half is read only to see the close (the
    /// library answers it on the read), after which the subscriber leaves.
    pub async fn subscribe<W, E>(&self, socket: W)
    where
        W: Stream<Item = Result<T, E>> + Sink<T> + Send + 'static,
        T: Send + 'static,
    {
        let (mut sink, mut stream) = socket.split();
        let (sender, mut messages) = tokio::sync::mpsc::unbounded_channel();
        let id = self.join(sender);
        tokio::spawn(async move {
            while let Some(message) = messages.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        while let Some(Ok(_)) = stream.next().await {}
        self.leave(id);
    }

    /// A publisher on a library's socket: every message read for which
    /// `is_data` holds (text and binary) goes to every subscriber.
    pub async fn publish_all<E>(
        &self,
        mut socket: impl Stream<Item = Result<T, E>> + Unpin,
        is_data: impl Fn(&T) -> bool,
    ) {
        while let Some(Ok(message)) = socket.next().await {
            if is_data(&message) {
                self.publish(&message);
            }
        }
    }

    /// The registry; a panic elsewhere while it was held leaves it usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<UnboundedSender<T>>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

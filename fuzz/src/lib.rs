//! The harness shared by the `socket` and `utf8` fuzz targets: the real
//! [`WebSocket`] over an in-memory transport, through the public API only.
//!
//! A [`Case`] is a client byte stream, the limits, and several
//! [`Config`]urations to run it in: read all at once or in pieces (with a
//! `Pending` now and then), written to freely or blocked, received with
//! `receive_message` or with `receive_buffer` into a buffer of some size,
//! echoed or not, the peer's Close answered by dropping the socket,
//! `close_output` or `close_with`. [`check_case`] runs the socket in each
//! and checks that
//!
//! - nothing panics or hangs (every `Pending` comes with a wakeup, and the
//!   socket's tasks, such as the linger task that writes the final Close,
//!   finish and drop the connection);
//! - the messages received and the ending (the peer's Close, the close
//!   code of a violation, or a reset at the end of the input) are those of
//!   [`model`], a plain reading of RFC 6455 with the socket's limits, in
//!   every configuration;
//! - with `receive_message`, the pings and pongs the client sent before
//!   the end are handed over as `Message::Ping` / `Message::Pong`, in
//!   order, with their payloads (the buffer API never shows them);
//! - the server's bytes are valid unmasked server frames: pongs that
//!   answer the client's pings in order (all of them when output is never
//!   blocked; otherwise a subsequence that ends with the latest ping, as
//!   RFC 6455 §5.5.3 allows), echoes of the received messages, and at the
//!   end a Close with the violation's code, or the answer to the peer's
//!   Close, after which nothing is written.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_websockets::{
    CloseCode, Error, Message, MessageType, PreparedMessage, WebSocket, WebSocketOptions,
    WebSocketState,
};

// =========================================================================
// Reading the fuzz input
// =========================================================================

/// A cursor over the fuzz input; reads past the end give zeros.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A length byte, then that many bytes (at most `max`).
    pub fn section(&mut self, max: u8) -> &'a [u8] {
        let n = self.byte() % (max + 1);
        self.bytes(usize::from(n))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

// =========================================================================
// Client frames
// =========================================================================

/// A mask key from one byte (0: the all-zero key, which is legal).
pub fn mask_from(b: u8) -> [u8; 4] {
    if b == 0 {
        [0; 4]
    } else {
        [b, b ^ 0x5A, b.wrapping_mul(31), !b]
    }
}

pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// How a client frame writes its payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LenForm {
    /// The shortest form (7, 16 or 64 bits).
    Minimal,
    /// Always 16 bits (the length is cut to 16 bits).
    Bits16,
    /// Always 64 bits.
    Bits64,
    /// This 64-bit length, whatever the payload (a lie, or an invalid
    /// length with the top bit set).
    Declared(u64),
}

/// Appends a client frame: `b0` is FIN, RSV and opcode as on the wire.
pub fn put_frame(out: &mut Vec<u8>, b0: u8, mask: Option<[u8; 4]>, form: LenForm, payload: &[u8]) {
    out.push(b0);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len() as u64;
    match form {
        LenForm::Minimal if len < 126 => out.push(mask_bit | len as u8),
        LenForm::Minimal if len <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        LenForm::Bits16 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        LenForm::Minimal | LenForm::Bits64 => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
        LenForm::Declared(declared) => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&declared.to_be_bytes());
        }
    }
    let start = out.len();
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start + 4..], mask);
    }
}

/// A valid masked frame with the minimal length.
pub fn frame(out: &mut Vec<u8>, b0: u8, mask: [u8; 4], payload: &[u8]) {
    put_frame(out, b0, Some(mask), LenForm::Minimal, payload);
}

// =========================================================================
// The model
// =========================================================================

/// The socket's receive limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_message: usize,
    pub max_frame: usize,
}

/// How a receive loop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The peer's Close: its code and reason, if it had a code.
    Close(Option<(u16, String)>),
    /// A protocol violation, with its close code.
    Violation(u16),
    /// The input ended first (the transport read `Ok(0)`).
    Reset,
}

/// What a receive loop saw: whole messages (text?, payload) and the end.
#[derive(Clone, PartialEq, Eq)]
pub struct Outcome {
    pub messages: Vec<(bool, Vec<u8>)>,
    pub ending: Ending,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let messages: Vec<String> = self
            .messages
            .iter()
            .map(|(text, data)| {
                let shown = &data[..data.len().min(24)];
                format!(
                    "{}{:?}({} bytes)",
                    if *text { "Text" } else { "Binary" },
                    shown,
                    data.len()
                )
            })
            .collect();
        f.debug_struct("Outcome")
            .field("messages", &messages)
            .field("ending", &self.ending)
            .finish()
    }
}

/// The model's reading of a stream.
#[derive(Clone, Debug)]
pub struct Expected {
    pub outcome: Outcome,
    /// The payloads of the pings before the end, in order.
    pub pings: Vec<Vec<u8>>,
    /// The control frames before the end, in order: ping?, payload.
    pub controls: Vec<(bool, Vec<u8>)>,
}

/// A plain reading of the client stream as RFC 6455 §5 says a server
/// must, with the socket's limits, stopping at the first Close or
/// violation. A violation is found as soon as the bytes show it: a header
/// as soon as it is complete (the opcode from its first two bytes), invalid
/// UTF-8 at the first byte that cannot start or continue a character.
pub fn model(stream: &[u8], limits: Limits) -> Expected {
    use Ending::{Reset, Violation};
    let max_message = limits.max_message as u64;
    let max_frame = limits.max_frame.min(limits.max_message) as u64;
    let mut messages = Vec::new();
    let mut pings = Vec::new();
    let mut controls = Vec::new();
    // The open message: text?, payload so far, how much of it is known to
    // be whole UTF-8 characters.
    let mut open: Option<(bool, Vec<u8>, usize)> = None;
    let mut pos = 0;
    let ending = loop {
        let rest = &stream[pos..];
        let [b0, b1, ..] = *rest else { break Reset };
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if !matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10) {
            break Violation(1002);
        }
        let (len, mut header_len) = match b1 & 0x7F {
            126 => match rest.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => break Reset,
            },
            127 => match rest.get(2..10) {
                Some(b) => {
                    let len = u64::from_be_bytes(b.try_into().unwrap());
                    if len >> 63 != 0 {
                        break Violation(1002);
                    }
                    (len, 10)
                }
                None => break Reset,
            },
            n => (u64::from(n), 2),
        };
        let masked = b1 & 0x80 != 0;
        let mut mask = [0; 4];
        if masked {
            match rest.get(header_len..header_len + 4) {
                Some(m) => mask.copy_from_slice(m),
                None => break Reset,
            }
            header_len += 4;
        }
        if b0 & 0x70 != 0 || !masked {
            break Violation(1002);
        }
        let body = &rest[header_len..];
        if opcode >= 8 {
            if !fin || len > 125 {
                break Violation(1002);
            }
            let len = len as usize;
            if body.len() < len {
                break Reset;
            }
            let mut payload = body[..len].to_vec();
            apply_mask(&mut payload, mask);
            pos += header_len + len;
            match (opcode, payload.as_slice()) {
                (9, _) => {
                    controls.push((true, payload.clone()));
                    pings.push(payload);
                }
                (10, _) => controls.push((false, payload)),
                (_, []) => break Ending::Close(None),
                (_, [_]) => break Violation(1002),
                (_, [hi, lo, reason @ ..]) => {
                    let code = u16::from_be_bytes([*hi, *lo]);
                    if CloseCode::new(code).is_none() {
                        break Violation(1002);
                    }
                    match std::str::from_utf8(reason) {
                        Ok(reason) => break Ending::Close(Some((code, reason.to_owned()))),
                        Err(_) => break Violation(1007),
                    }
                }
            }
            continue;
        }
        let (text, mut data, mut valid) = match (opcode, open.take()) {
            (0, Some(message)) => message,
            (0, None) | (_, Some(_)) => break Violation(1002),
            (opcode, None) => (opcode == 1, Vec::new(), 0),
        };
        if (data.len() as u64).saturating_add(len) > max_message || len > max_frame {
            break Violation(1009);
        }
        let available = body.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let start = data.len();
        data.extend_from_slice(&body[..available]);
        apply_mask(&mut data[start..], mask);
        if text {
            match std::str::from_utf8(&data[valid..]) {
                Ok(_) => valid = data.len(),
                Err(e) if e.error_len().is_some() => break Violation(1007),
                Err(e) => valid += e.valid_up_to(),
            }
        }
        if (available as u64) < len {
            break Reset;
        }
        pos += header_len + available;
        if fin {
            if text && valid != data.len() {
                break Violation(1007);
            }
            messages.push((text, data));
        } else {
            open = Some((text, data, valid));
        }
    };
    Expected {
        outcome: Outcome { messages, ending },
        pings,
        controls,
    }
}

// =========================================================================
// The transport
// =========================================================================

/// Sizes and stalls for a transport's reads or writes, from fuzz bytes:
/// each operation takes the next byte, whose low 7 bits give the most it
/// moves (see [`piece_size`]) and whose top bit makes it return `Pending`
/// once first (after waking the waker). Once the bytes are used up, every
/// operation moves all it can.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    codes: Arc<[u8]>,
    next: usize,
    held: Option<usize>,
}

impl Schedule {
    pub fn new(codes: &[u8]) -> Self {
        Schedule {
            codes: codes.into(),
            next: 0,
            held: None,
        }
    }

    /// Whether any operation returns `Pending`.
    pub fn stalls(&self) -> bool {
        self.codes.iter().any(|&c| c & 0x80 != 0)
    }

    /// `None`: return `Pending` this time. `Some(n)`: move at most `n`.
    fn step(&mut self) -> Option<usize> {
        if let Some(size) = self.held.take() {
            return Some(size);
        }
        let Some(&code) = self.codes.get(self.next) else {
            return Some(usize::MAX);
        };
        self.next += 1;
        let size = piece_size(code & 0x7F);
        if code & 0x80 != 0 {
            self.held = Some(size);
            None
        } else {
            Some(size)
        }
    }
}

/// 0: everything; 1..=63: that many bytes; 64..=95: 64..=2048 in steps of
/// 64; 96..=127: 2 KiB .. 256 KiB, powers of two.
pub fn piece_size(code: u8) -> usize {
    match code {
        0 => usize::MAX,
        1..=63 => usize::from(code),
        64..=95 => usize::from(code - 63) * 64,
        _ => 2048 << ((code - 96) % 8),
    }
}

/// What the server did to the connection, kept after the socket lets go
/// of it.
#[derive(Debug, Default)]
struct Wire {
    written: Vec<u8>,
    shutdown: bool,
    written_after_shutdown: bool,
    dropped: bool,
}

/// The client's side of the connection: hands out `input` as the
/// [`Schedule`] says, then `Ok(0)`; records every byte written.
struct MemoryIo {
    input: Arc<[u8]>,
    pos: usize,
    reads: Schedule,
    writes: Schedule,
    vectored: bool,
    wire: Arc<Mutex<Wire>>,
}

fn lock(wire: &Mutex<Wire>) -> MutexGuard<'_, Wire> {
    wire.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryIo {
    fn record(&mut self, bufs: &[&[u8]], cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(mut room) = self.writes.step() else {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        let mut wire = lock(&self.wire);
        if wire.shutdown {
            wire.written_after_shutdown = true;
        }
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(room);
            wire.written.extend_from_slice(&buf[..take]);
            n += take;
            room -= take;
            if room == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncRead for MemoryIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(size) = self.reads.step() else {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        let this = &mut *self;
        let n = size.min(buf.remaining()).min(this.input.len() - this.pos);
        buf.put_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MemoryIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.record(&[buf], cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let slices: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
        self.record(&slices, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.wire).shutdown = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemoryIo {
    fn drop(&mut self) {
        lock(&self.wire).dropped = true;
    }
}

// =========================================================================
// Running the socket
// =========================================================================

/// How the application receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `receive_message`.
    Message,
    /// `receive_buffer` into a buffer of this size.
    Buffer(usize),
}

/// How the application answers the peer's Close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Drops the socket, which answers for it (echoing the code).
    Drop,
    /// `close_output(code, "")`.
    CloseOutput,
    /// `close_with(code, the peer's reason)`.
    Close,
}

impl Answer {
    pub fn from_bits(bits: u8) -> Answer {
        match bits % 3 {
            0 => Answer::Drop,
            1 => Answer::CloseOutput,
            _ => Answer::Close,
        }
    }
}

/// One way to run a stream.
#[derive(Clone, Debug)]
pub struct Config {
    pub reads: Schedule,
    pub writes: Schedule,
    pub vectored: bool,
    pub api: Api,
    /// Send every message (or, with [`Api::Buffer`], every piece) back.
    pub echo: bool,
    /// With [`Api::Message`], echo each message as a [`PreparedMessage`]
    /// (its shared frame queued by reference between the socket's own
    /// frames) instead of with `send`.
    pub prepared: bool,
    pub answer: Answer,
    pub receive_buffer_size: usize,
}

impl Config {
    /// Whole reads, free writes, `receive_message`, no echo.
    pub fn plain() -> Config {
        Config {
            reads: Schedule::default(),
            writes: Schedule::default(),
            vectored: false,
            api: Api::Message,
            echo: false,
            prepared: false,
            answer: Answer::Drop,
            receive_buffer_size: tower_websockets::DEFAULT_RECEIVE_BUFFER_SIZE,
        }
    }
}

/// A stream, its limits, and the configurations to run it in.
#[derive(Clone, Debug)]
pub struct Case {
    pub stream: Vec<u8>,
    pub limits: Limits,
    pub configs: Vec<Config>,
}

/// One run of the socket.
#[derive(Debug)]
pub struct Run {
    pub outcome: Outcome,
    /// The pings and pongs `receive_message` handed over (ping?,
    /// payload); `None` with the buffer API, which never shows them.
    pub controls: Option<Vec<(bool, Vec<u8>)>>,
    /// What the server wrote.
    pub written: Vec<u8>,
    pub shutdown: bool,
}

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            // The linger task's close timeout (never reached here).
            .enable_time()
            .build()
            .expect("tokio runtime"),
    );
}

/// The memory-size options from a fuzz byte.
pub fn receive_buffer_size(b: u8) -> usize {
    const SIZES: [usize; 12] = [
        256, 257, 300, 512, 1000, 4096, 8192, 16384, 32768, 65536, 100_000, 131_072,
    ];
    SIZES[usize::from(b) % SIZES.len()]
}

/// A `receive_buffer` buffer size from a fuzz byte: 1 byte .. 128 KiB.
pub fn buffer_size(b: u8) -> usize {
    const SIZES: [usize; 16] = [
        125, 126, 127, 256, 1000, 4095, 4096, 4097, 8192, 16384, 32767, 32768, 32769, 65535, 65536,
        131_072,
    ];
    let low = usize::from(b & 63);
    match b >> 6 {
        0 => 1 + low,
        1 => SIZES[low % SIZES.len()],
        2 => 64 + low * 512,
        _ => 32768 + low * 1536,
    }
}

/// Runs the socket over `stream` in `config`, then lets its tasks finish.
pub fn run(stream: &Arc<[u8]>, limits: Limits, config: &Config) -> Run {
    let wire = Arc::new(Mutex::new(Wire::default()));
    let io = MemoryIo {
        input: stream.clone(),
        pos: 0,
        reads: config.reads.clone(),
        writes: config.writes.clone(),
        vectored: config.vectored,
        wire: wire.clone(),
    };
    let options = WebSocketOptions::default()
        .keep_alive_interval(None)
        .max_message_size(limits.max_message)
        .max_frame_size(limits.max_frame)
        .receive_buffer_size(config.receive_buffer_size);
    let (outcome, controls) = RUNTIME.with(|runtime| {
        runtime.borrow().block_on(async {
            let socket = WebSocket::from_raw_socket(io, options).expect("valid options");
            let session = MustWake::new(session(socket, config)).await;
            // The socket is gone: its background task ends, and the linger
            // task writes our Close, shuts down and reads to the end.
            let metrics = tokio::runtime::Handle::current().metrics();
            let mut spins = 0u32;
            while !(lock(&wire).dropped && metrics.num_alive_tasks() == 0) {
                spins += 1;
                assert!(
                    spins < 100_000,
                    "the socket's tasks did not finish (connection dropped: {}, tasks alive: {})",
                    lock(&wire).dropped,
                    metrics.num_alive_tasks()
                );
                tokio::task::yield_now().await;
            }
            session
        })
    });
    let mut wire = lock(&wire);
    assert!(!wire.written_after_shutdown, "written after shutdown");
    Run {
        outcome,
        controls,
        written: std::mem::take(&mut wire.written),
        shutdown: wire.shutdown,
    }
}

/// The application: receive until the end, check the socket afterwards,
/// answer the peer's Close, drop the socket. Returns what it received and,
/// with `receive_message`, the pings and pongs handed over.
async fn session(
    mut socket: WebSocket,
    config: &Config,
) -> (Outcome, Option<Vec<(bool, Vec<u8>)>>) {
    let mut messages = Vec::new();
    let mut controls = Vec::new();
    let mut buf = match config.api {
        Api::Message => Vec::new(),
        Api::Buffer(size) => vec![0u8; size],
    };
    let ending = match config.api {
        Api::Message => loop {
            match socket.receive_message().await {
                Ok(Message::Close(frame)) => {
                    break Ending::Close(
                        frame.map(|f| (f.code.as_u16(), f.reason.as_str().to_owned())),
                    );
                }
                // Already answered by the socket: not echoed.
                Ok(Message::Ping(data)) => controls.push((true, data.to_vec())),
                Ok(Message::Pong(data)) => controls.push((false, data.to_vec())),
                Ok(message) => {
                    messages.push((message.is_text(), message.as_bytes().to_vec()));
                    if config.echo && config.prepared {
                        let prepared = match &message {
                            Message::Text(text) => PreparedMessage::text(text),
                            other => PreparedMessage::binary(other.as_bytes()),
                        };
                        socket.send_prepared(&prepared).await.expect("echo");
                    } else if config.echo {
                        socket.send(message).await.expect("echo");
                    }
                }
                Err(e) => break ending_of(e),
            }
        },
        Api::Buffer(_) => {
            let mut current: Option<(MessageType, Vec<u8>)> = None;
            loop {
                let result = match socket.receive_buffer(&mut buf).await {
                    Ok(result) => result,
                    Err(e) => break ending_of(e),
                };
                let (count, kind, end) = (
                    result.count(),
                    result.message_type(),
                    result.end_of_message(),
                );
                assert_eq!(
                    result.close_status().is_some(),
                    result.close_description().is_some(),
                    "{result:?}"
                );
                if kind == MessageType::Close {
                    assert!(count == 0 && end, "{result:?}");
                    break Ending::Close(result.close_status().map(|code| {
                        let reason = result.close_description().unwrap_or_default();
                        (code.as_u16(), reason.to_owned())
                    }));
                }
                assert!(result.close_status().is_none(), "{result:?}");
                assert!(count <= buf.len(), "{result:?}");
                assert!(
                    count > 0 || end,
                    "an empty piece before the end: {result:?}"
                );
                let (message_kind, data) = current.get_or_insert_with(|| (kind, Vec::new()));
                assert_eq!(*message_kind, kind, "the type changed within a message");
                data.extend_from_slice(&buf[..count]);
                if config.echo {
                    socket
                        .send_buffer(&buf[..count], kind, end)
                        .await
                        .expect("echo");
                }
                if end {
                    let (kind, data) = current.take().unwrap();
                    messages.push((kind == MessageType::Text, data));
                }
            }
        }
    };

    // A finished receive side keeps failing the same way.
    let again = match config.api {
        Api::Message => socket.receive_message().await.err(),
        Api::Buffer(_) => socket.receive_buffer(&mut buf).await.err(),
    };
    let expected_state = match (&ending, &again) {
        (Ending::Close(_), Some(Error::Closed)) => WebSocketState::CloseReceived,
        (Ending::Violation(code), Some(Error::Protocol(e))) if e.close_code().as_u16() == *code => {
            WebSocketState::Aborted
        }
        (Ending::Reset, Some(Error::ConnectionReset)) => WebSocketState::Aborted,
        _ => panic!("after {ending:?}, receiving again gave {again:?}"),
    };
    assert_eq!(socket.state(), expected_state, "after {ending:?}");

    if let Ending::Close(frame) = &ending {
        assert_eq!(
            socket.close_status().map(u16::from),
            frame.as_ref().map(|f| f.0),
            "close_status"
        );
        let status = frame
            .as_ref()
            .map(|(code, _)| CloseCode::new(*code).unwrap());
        match config.answer {
            Answer::Drop => {}
            Answer::CloseOutput => socket.close_output(status, "").await.expect("close_output"),
            Answer::Close => {
                let reason = frame.as_ref().map_or("", |f| f.1.as_str());
                socket.close_with(status, reason).await.expect("close_with");
            }
        }
        if config.answer != Answer::Drop {
            assert_eq!(socket.state(), WebSocketState::Closed);
        }
    }
    drop(socket);
    let controls = (config.api == Api::Message).then_some(controls);
    (Outcome { messages, ending }, controls)
}

fn ending_of(e: Error) -> Ending {
    match e {
        Error::Protocol(e) => Ending::Violation(e.close_code().as_u16()),
        Error::ConnectionReset => Ending::Reset,
        other => panic!("receive failed with {other:?}"),
    }
}

/// Polls a future with a waker that notes whether it was woken; a
/// `Pending` that comes with no wakeup would hang. (The transport wakes
/// before every `Pending` it returns and nothing else runs meanwhile, so
/// every `Pending` of the socket must come with a wakeup.)
struct MustWake<F> {
    inner: Pin<Box<F>>,
}

impl<F> MustWake<F> {
    fn new(inner: F) -> Self {
        MustWake {
            inner: Box::pin(inner),
        }
    }
}

struct NotingWaker {
    woken: AtomicBool,
    waker: Waker,
}

impl Wake for NotingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.waker.wake_by_ref();
    }
}

impl<F: Future> Future for MustWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let noting = Arc::new(NotingWaker {
            woken: AtomicBool::new(false),
            waker: cx.waker().clone(),
        });
        let waker = Waker::from(noting.clone());
        let poll = self.inner.as_mut().poll(&mut Context::from_waker(&waker));
        if poll.is_pending() {
            assert!(
                noting.woken.load(Ordering::SeqCst),
                "the socket returned Pending without a wakeup: it would hang"
            );
        }
        poll
    }
}

// =========================================================================
// Checking the server's bytes
// =========================================================================

/// A frame the server wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Parses the server's output as unmasked server frames, checking each;
/// a last frame cut short is allowed only if `may_be_cut` (an aborted
/// connection drops what it had not written).
pub fn server_frames(out: &[u8], may_be_cut: bool) -> Vec<ServerFrame> {
    let mut frames: Vec<ServerFrame> = Vec::new();
    let mut pos = 0;
    while pos < out.len() {
        if let Some(last) = frames.last() {
            assert_ne!(last.opcode, 8, "the server wrote after its Close");
        }
        let rest = &out[pos..];
        let cut = || {
            assert!(
                may_be_cut,
                "the server's output ends inside a frame: {rest:?}"
            );
        };
        let [b0, b1, ..] = *rest else {
            cut();
            break;
        };
        assert_eq!(b0 & 0x70, 0, "RSV bits in a server frame");
        assert_eq!(b1 & 0x80, 0, "a masked server frame");
        let opcode = b0 & 0x0F;
        assert!(
            matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10),
            "server opcode {opcode}"
        );
        let (len, header_len) = match b1 & 0x7F {
            126 => {
                let Some(b) = rest.get(2..4) else {
                    cut();
                    break;
                };
                let len = u64::from(u16::from_be_bytes([b[0], b[1]]));
                assert!(len >= 126, "non-minimal 16-bit length {len}");
                (len, 4)
            }
            127 => {
                let Some(b) = rest.get(2..10) else {
                    cut();
                    break;
                };
                let len = u64::from_be_bytes(b.try_into().unwrap());
                assert!(len > 0xFFFF, "non-minimal 64-bit length {len}");
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let fin = b0 & 0x80 != 0;
        if opcode >= 8 {
            assert!(fin && len <= 125, "bad server control frame {b0:#x} {len}");
        }
        let len = usize::try_from(len).unwrap();
        let Some(payload) = rest.get(header_len..header_len + len) else {
            cut();
            break;
        };
        if opcode == 8 {
            match payload {
                [] => {}
                [_] => panic!("server Close with a 1-byte payload"),
                [hi, lo, reason @ ..] => {
                    let code = u16::from_be_bytes([*hi, *lo]);
                    assert!(CloseCode::new(code).is_some(), "server close code {code}");
                    assert!(std::str::from_utf8(reason).is_ok(), "server close reason");
                }
            }
        }
        frames.push(ServerFrame {
            fin,
            opcode,
            payload: payload.to_vec(),
        });
        pos += header_len + len;
    }
    frames
}

/// The echoed messages in the server's data frames (complete ones only),
/// checking that they are fragmented properly.
fn echoed_messages(frames: &[ServerFrame]) -> Vec<(bool, Vec<u8>)> {
    let mut messages = Vec::new();
    let mut current: Option<(bool, Vec<u8>)> = None;
    for frame in frames.iter().filter(|f| f.opcode < 8) {
        match (frame.opcode, &mut current) {
            (1 | 2, None) => current = Some((frame.opcode == 1, frame.payload.clone())),
            (0, Some((_, data))) => data.extend_from_slice(&frame.payload),
            _ => panic!(
                "server data frame with opcode {} out of sequence",
                frame.opcode
            ),
        }
        if frame.fin {
            messages.push(current.take().unwrap());
        }
    }
    messages
}

/// Checks one run against the model and the configuration.
fn check_run(run: &Run, expected: &Expected, config: &Config) {
    let ending = &run.outcome.ending;
    let frames = server_frames(&run.written, *ending == Ending::Reset);
    assert!(
        frames.iter().all(|f| f.opcode != 9),
        "the server pinged with keep-alive off"
    );

    // Pongs answer the pings, in order.
    let pongs: Vec<&[u8]> = frames
        .iter()
        .filter(|f| f.opcode == 10)
        .map(|f| &f.payload[..])
        .collect();
    let pings: Vec<&[u8]> = expected.pings.iter().map(|p| &p[..]).collect();
    if config.writes.stalls() {
        let mut remaining = pings.iter();
        for pong in &pongs {
            assert!(
                remaining.any(|ping| ping == pong),
                "pong {pong:?} answers no ping, or out of order (pings {pings:?}, pongs {pongs:?})"
            );
        }
        if *ending != Ending::Reset {
            assert_eq!(
                pongs.last(),
                pings.last(),
                "the latest ping before the end was not answered"
            );
        }
    } else {
        assert_eq!(pongs, pings, "with unblocked output every ping is answered");
    }

    // The whole-message API hands every ping and pong over, in order.
    if let Some(controls) = &run.controls {
        assert_eq!(
            *controls, expected.controls,
            "receive_message did not hand over the pings and pongs received"
        );
    }

    // Echoes.
    let echoed = echoed_messages(&frames);
    if config.echo {
        let received = &run.outcome.messages;
        if *ending == Ending::Reset {
            assert!(
                echoed.len() <= received.len() && echoed[..] == received[..echoed.len()],
                "echoes are not a prefix of the received messages"
            );
        } else {
            assert!(
                echoed == *received,
                "echoes differ from the received messages"
            );
        }
    } else {
        assert!(frames.iter().all(|f| f.opcode >= 8), "data without echo");
    }

    // The end of the connection.
    let close = frames.iter().position(|f| f.opcode == 8);
    match ending {
        Ending::Reset => {
            assert_eq!(close, None, "the server closed after a reset");
            assert!(!run.shutdown, "shut down after a reset");
        }
        Ending::Violation(code) => {
            let last = frames.last().expect("no Close after a violation");
            assert_eq!(last.opcode, 8, "the server's last frame is not a Close");
            assert_eq!(
                last.payload.get(..2),
                Some(&code.to_be_bytes()[..]),
                "the server's Close does not carry the violation's code"
            );
            assert!(run.shutdown, "not shut down after a violation");
        }
        Ending::Close(frame) => {
            let last = frames.last().expect("the peer's Close was not answered");
            assert_eq!(last.opcode, 8, "the server's last frame is not a Close");
            let mut answer = Vec::new();
            if let Some((code, reason)) = frame {
                answer.extend_from_slice(&code.to_be_bytes());
                if config.answer == Answer::Close {
                    answer.extend_from_slice(reason.as_bytes());
                }
            }
            assert_eq!(
                last.payload, answer,
                "the server's Close does not echo the peer's"
            );
            assert!(run.shutdown, "not shut down after the close handshake");
        }
    }
}

/// Runs `case` in each of its configurations and checks every run.
pub fn check_case(case: &Case) -> Expected {
    let expected = model(&case.stream, case.limits);
    let stream: Arc<[u8]> = case.stream.as_slice().into();
    let mut first: Option<Outcome> = None;
    for (i, config) in case.configs.iter().enumerate() {
        let run = run(&stream, case.limits, config);
        if let Some(first) = &first {
            assert_eq!(
                run.outcome, *first,
                "configuration {i} ({config:?}) differs from the first ({:?})",
                case.configs[0]
            );
        } else {
            first = Some(run.outcome.clone());
        }
        assert_eq!(
            run.outcome, expected.outcome,
            "configuration {i} ({config:?}) disagrees with the model"
        );
        check_run(&run, &expected, config);
    }
    expected
}

// =========================================================================
// Scripts
// =========================================================================

/// The longest payload a script frame carries.
pub const MAX_PAYLOAD: usize = 100 * 1024;
/// Scripts stop adding frames past this many bytes.
pub const MAX_STREAM: usize = 512 * 1024;

/// Text that is UTF-8 of 1 to 4 bytes a character: a text message's
/// payload continues it from where the message's previous frame stopped,
/// so fragments split characters and a message is valid unless it ends
/// inside one.
const UTF8_PATTERN: &[u8] =
    "aé€😀zßЖ中\u{10FFFF}\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}".as_bytes();

/// Builds a client stream from a script of frames read from `input`.
pub fn script(input: &mut Input<'_>, limits: Limits) -> Vec<u8> {
    let mut out = Vec::new();
    // The fragmented message the script has open: text?, and where its
    // text continues the pattern.
    let mut open: Option<(bool, usize)> = None;
    while !input.is_empty() && out.len() < MAX_STREAM {
        let op = input.byte();
        let mask = mask_from(input.byte());
        match op & 7 {
            // A valid data frame: a new message or the next fragment.
            0..=2 => {
                let fin = op & 0x80 != 0;
                let (text, opcode) = match open {
                    Some((text, _)) => (text, 0),
                    None if op & 0x40 != 0 => (true, 1),
                    None => (false, 2),
                };
                let cursor = open.map_or(0, |(_, c)| c);
                let payload = payload(input, limits, text, cursor);
                open = (!fin).then_some((text, cursor + payload.len()));
                frame(&mut out, u8::from(fin) << 7 | opcode, mask, &payload);
            }
            // Any frame: FIN, RSV, opcode, mask and length form as given.
            3 => {
                let b0 = input.byte();
                let form = input.byte();
                let opcode = b0 & 0x0F;
                let text = opcode == 1 || (opcode == 0 && matches!(open, Some((true, _))));
                let cursor = match (opcode, open) {
                    (0, Some((_, c))) => c,
                    _ => 0,
                };
                let payload = payload(input, limits, text, cursor);
                if b0 & 0x70 == 0 && opcode < 3 {
                    let fin = b0 & 0x80 != 0;
                    open = (!fin).then_some((text, cursor + payload.len()));
                }
                let len_form = match form & 3 {
                    0 => LenForm::Minimal,
                    1 => LenForm::Bits16,
                    2 => LenForm::Bits64,
                    _ => LenForm::Declared(
                        u64::from(input.u16()) << (form >> 2) | payload.len() as u64,
                    ),
                };
                let mask = (form & 4 == 0).then_some(mask);
                put_frame(&mut out, b0, mask, len_form, &payload);
            }
            // Ping, pong: up to 130 bytes, from the input.
            4 | 5 => {
                let opcode = if op & 1 == 0 { 0x89 } else { 0x8A };
                let len = usize::from(input.byte()) % 131;
                let data = fill(input, len, op >> 4, false, 0);
                frame(&mut out, opcode, mask, &data);
            }
            // Close: no code, a common code, any code, or 1 byte; a reason.
            6 => {
                let kind = input.byte();
                let mut payload = Vec::new();
                match kind & 3 {
                    0 => {}
                    1 => {
                        const CODES: [u16; 8] = [1000, 1001, 1002, 1003, 1011, 3000, 4999, 1005];
                        payload.extend_from_slice(&CODES[usize::from(kind >> 2) % 8].to_be_bytes());
                    }
                    2 => payload.extend_from_slice(&input.u16().to_be_bytes()),
                    _ => payload.push(input.byte()),
                }
                if kind & 3 != 0 {
                    let len = usize::from(input.byte()) % 128;
                    let fill_kind = kind >> 5;
                    payload.extend(fill(input, len, fill_kind, fill_kind & 1 == 1, 0));
                }
                frame(&mut out, 0x88, mask, &payload);
            }
            // Raw bytes.
            _ => {
                let n = usize::from(op >> 3);
                out.extend_from_slice(input.bytes(n));
            }
        }
    }
    out
}

/// A payload length and contents.
fn payload(input: &mut Input<'_>, limits: Limits, text: bool, cursor: usize) -> Vec<u8> {
    let sel = input.byte();
    let low = usize::from(sel & 0x1F);
    let len = match sel >> 5 {
        0 | 1 => low,
        2 => usize::from(input.byte()),
        3 => 120 + low % 16,
        4 => usize::from(input.u16()),
        5 => {
            let boundaries = [
                65535,
                65536,
                32767,
                32768,
                32769,
                4095,
                4096,
                4097,
                8191,
                8192,
                limits.max_frame.saturating_sub(1),
                limits.max_frame,
                limits.max_frame + 1,
                limits.max_message.saturating_sub(1),
                limits.max_message,
                limits.max_message + 1,
            ];
            boundaries[low % 16]
        }
        6 => 32768 + usize::from(input.u16()),
        _ => usize::from(input.u16()) % 1024,
    }
    .min(MAX_PAYLOAD);
    let kind = input.byte();
    fill(input, len, kind, text, cursor)
}

/// `len` bytes: from the input, ASCII, the UTF-8 pattern, or pseudo-random;
/// text gets the UTF-8 pattern unless `kind` says otherwise.
fn fill(input: &mut Input<'_>, len: usize, kind: u8, text: bool, cursor: usize) -> Vec<u8> {
    match (kind & 3, text) {
        (0, _) => {
            let mut data = input.bytes(len.min(256)).to_vec();
            let missing = len - data.len();
            data.extend((0..missing).map(|i| b'a' + (i % 26) as u8));
            data
        }
        (1, _) => (0..len).map(|i| b' ' + ((cursor + i) % 95) as u8).collect(),
        (2, _) | (3, true) => (0..len)
            .map(|i| UTF8_PATTERN[(cursor + i) % UTF8_PATTERN.len()])
            .collect(),
        _ => {
            let mut state = u32::from(kind) | 1;
            (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (state >> 16) as u8
                })
                .collect()
        }
    }
}

/// The limits from two fuzz bytes: a message limit of 4096 ..= 200,000
/// bytes, and a frame limit below, at or above it.
pub fn limits(message: u8, frame: u8) -> Limits {
    let max_message = 4096 + usize::from(message) * (200_000 - 4096) / 255;
    let max_frame = match frame {
        0..=199 => 1 + usize::from(frame) * 1000,
        _ => {
            let choices = [
                125,
                126,
                65535,
                65536,
                max_message - 1,
                max_message,
                max_message + 1,
                16 << 20,
            ];
            choices[usize::from(frame - 200) % choices.len()]
        }
    };
    Limits {
        max_message,
        max_frame,
    }
}

// =========================================================================
// The targets' inputs
// =========================================================================

/// The `socket` target's case: flags, message limit, frame limit, two
/// buffer sizes, a receive buffer size, the read schedule and the write
/// schedule (a length byte each), a tail cut (if flagged), then the raw
/// stream or its [`script`]. Four configurations: whole reads and free
/// writes with `receive_message`, then pieces and blocked writes (echoing
/// with prepared messages if flagged), then the buffer API both ways.
pub fn socket_case(data: &[u8]) -> Case {
    let mut input = Input::new(data);
    let flags = input.byte();
    let limits = limits(input.byte(), input.byte());
    let (size_a, size_b) = (buffer_size(input.byte()), buffer_size(input.byte()));
    let rbuf = input.byte();
    let reads = Schedule::new(input.section(64));
    let writes = Schedule::new(input.section(64));
    let cut = if flags & 0x20 != 0 {
        usize::from(input.byte())
    } else {
        0
    };
    let mut stream = if flags & 1 == 0 {
        input.rest().to_vec()
    } else {
        script(&mut input, limits)
    };
    // A stream that stops short, inside a frame.
    stream.truncate(stream.len().saturating_sub(cut));

    // Tiny buffers on long streams only cost time: at most ~1024 receives
    // a configuration.
    let size_a = size_a.max(stream.len() / 1024);
    let size_b = size_b.max(stream.len() / 1024);
    let echo = flags & 2 != 0;
    let answer = (flags >> 2) & 3;
    let vectored = flags & 0x10 != 0;
    let configs = vec![
        Config {
            echo: !echo,
            ..Config::plain()
        },
        Config {
            reads: reads.clone(),
            writes: writes.clone(),
            vectored,
            api: Api::Message,
            echo,
            prepared: flags & 0x40 != 0,
            answer: Answer::from_bits(answer),
            receive_buffer_size: receive_buffer_size(rbuf),
        },
        Config {
            api: Api::Buffer(size_a),
            echo,
            answer: Answer::from_bits(answer + 1),
            receive_buffer_size: receive_buffer_size(rbuf.wrapping_add(5)),
            ..Config::plain()
        },
        Config {
            reads,
            writes,
            vectored: !vectored,
            api: Api::Buffer(size_b),
            echo,
            prepared: false,
            answer: Answer::from_bits(answer + 2),
            receive_buffer_size: 256,
        },
    ];
    Case {
        stream,
        limits,
        configs,
    }
}

/// The `utf8` target's case and the text it sends: flags (low 4 bits: how
/// many cuts; 0x10: a ping after the first fragment; 0x80: vectored
/// writes; the rest: how the Close is answered), a read piece code, a
/// write code, two buffer sizes, a mask byte, 2 bytes per cut, then the
/// text, sent as one text message cut at those points, then a Close 1000.
pub fn utf8_case(data: &[u8]) -> (Case, &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let reads = Schedule::new(&[input.byte(); 1024]);
    let writes = Schedule::new(&[input.byte(); 64]);
    let (size_a, size_b) = (buffer_size(input.byte()), buffer_size(input.byte()));
    let mask = mask_from(input.byte());
    let cuts: Vec<u16> = (0..flags & 15).map(|_| input.u16()).collect();
    let text = input.rest();

    let mut cuts: Vec<usize> = cuts
        .into_iter()
        .map(|c| usize::from(c) % (text.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(text.len());
    let mut stream = Vec::new();
    let mut start = 0;
    for (i, &end) in cuts.iter().enumerate() {
        let fin = i == cuts.len() - 1;
        let opcode = if i == 0 { 0x01 } else { 0x00 };
        frame(
            &mut stream,
            u8::from(fin) << 7 | opcode,
            mask,
            &text[start..end],
        );
        if i == 0 && flags & 0x10 != 0 {
            frame(&mut stream, 0x89, mask, b"between fragments");
        }
        start = end;
    }
    frame(&mut stream, 0x88, mask, b"\x03\xe8bye");

    let answer = (flags >> 5) & 3;
    let configs = vec![
        Config::plain(),
        Config {
            reads: reads.clone(),
            writes: writes.clone(),
            vectored: flags & 0x80 != 0,
            answer: Answer::from_bits(answer),
            ..Config::plain()
        },
        Config {
            api: Api::Buffer(size_a),
            answer: Answer::from_bits(answer + 1),
            ..Config::plain()
        },
        Config {
            reads,
            writes,
            api: Api::Buffer(size_b),
            answer: Answer::from_bits(answer + 2),
            receive_buffer_size: 256,
            ..Config::plain()
        },
    ];
    let case = Case {
        stream,
        limits: Limits {
            max_message: 1 << 20,
            max_frame: 1 << 20,
        },
        configs,
    };
    (case, text)
}

/// What the `utf8` target expects: the message and the Close iff the text
/// is UTF-8, else 1007.
pub fn utf8_expected(text: &[u8]) -> Outcome {
    if std::str::from_utf8(text).is_ok() {
        Outcome {
            messages: vec![(true, text.to_vec())],
            ending: Ending::Close(Some((1000, "bye".to_owned()))),
        }
    } else {
        Outcome {
            messages: Vec::new(),
            ending: Ending::Violation(1007),
        }
    }
}

/// Sanity checks of the harness itself: known streams give the known
/// outcome, and the checks see what they are meant to see.
#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [1, 2, 3, 4];
    const LIMITS: Limits = Limits {
        max_message: 200_000,
        max_frame: 150_000,
    };

    /// Every kind of configuration, blocked and not.
    fn configs() -> Vec<Config> {
        let pieces = Schedule::new(&[1, 0x81, 2, 3, 0x85, 7, 64, 0x90, 1, 1, 1, 100, 0x81]);
        let mut configs = Vec::new();
        for api in [
            Api::Message,
            Api::Buffer(1),
            Api::Buffer(7),
            Api::Buffer(65536),
        ] {
            for (reads, writes) in [
                (Schedule::default(), Schedule::default()),
                (pieces.clone(), pieces.clone()),
            ] {
                for (echo, answer) in [
                    (false, Answer::Drop),
                    (true, Answer::CloseOutput),
                    (true, Answer::Close),
                ] {
                    configs.push(Config {
                        reads: reads.clone(),
                        writes: writes.clone(),
                        vectored: echo,
                        api,
                        echo,
                        // Known streams echo with prepared messages too.
                        prepared: answer == Answer::Close,
                        answer,
                        receive_buffer_size: 256,
                    });
                }
            }
        }
        configs
    }

    fn check(stream: Vec<u8>, limits: Limits) -> Expected {
        check_case(&Case {
            stream,
            limits,
            configs: configs(),
        })
    }

    fn close(code: u16, reason: &str) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        payload
    }

    #[test]
    fn text_then_close_is_received_and_the_close_echoed() {
        let mut stream = Vec::new();
        frame(&mut stream, 0x81, MASK, b"hello");
        frame(&mut stream, 0x88, MASK, &close(1000, "bye"));
        let expected = check(stream.clone(), LIMITS);
        assert_eq!(
            expected.outcome,
            Outcome {
                messages: vec![(true, b"hello".to_vec())],
                ending: Ending::Close(Some((1000, "bye".into()))),
            }
        );
        let run = run(&stream.as_slice().into(), LIMITS, &Config::plain());
        assert_eq!(run.written, [0x88, 2, 0x03, 0xE8]);
        assert!(run.shutdown);
    }

    #[test]
    fn pings_are_answered_in_order() {
        let mut stream = Vec::new();
        frame(&mut stream, 0x89, MASK, b"one");
        frame(&mut stream, 0x01, MASK, "frag€".as_bytes());
        frame(&mut stream, 0x89, MASK, b"two");
        frame(&mut stream, 0x80, MASK, "ment".as_bytes());
        frame(&mut stream, 0x8A, MASK, b"unsolicited pong");
        frame(&mut stream, 0x89, MASK, b"");
        frame(&mut stream, 0x88, MASK, b"");
        let expected = check(stream.clone(), LIMITS);
        assert_eq!(expected.pings, [&b"one"[..], b"two", b""]);
        assert_eq!(
            expected.outcome,
            Outcome {
                messages: vec![(true, "frag€ment".as_bytes().to_vec())],
                ending: Ending::Close(None),
            }
        );
        let controls = vec![
            (true, b"one".to_vec()),
            (true, b"two".to_vec()),
            (false, b"unsolicited pong".to_vec()),
            (true, Vec::new()),
        ];
        assert_eq!(expected.controls, controls);
        let run = run(&stream.as_slice().into(), LIMITS, &Config::plain());
        assert_eq!(run.written, b"\x8a\x03one\x8a\x03two\x8a\x00\x88\x00");
        // receive_message hands them over too, already answered.
        assert_eq!(run.controls, Some(controls));
    }

    #[test]
    fn violations_are_answered_with_their_code() {
        let cases: [(&dyn Fn(&mut Vec<u8>), u16); 7] = [
            (
                &|s| put_frame(s, 0x82, None, LenForm::Minimal, b"unmasked"),
                1002,
            ),
            (&|s| frame(s, 0xC2, MASK, b"rsv1"), 1002),
            (&|s| frame(s, 0x83, MASK, b"opcode 3"), 1002),
            (&|s| frame(s, 0x80, MASK, b"continuation"), 1002),
            (&|s| frame(s, 0x81, MASK, b"\xff"), 1007),
            (&|s| frame(s, 0x88, MASK, &close(1005, "")), 1002),
            (&|s| frame(s, 0x82, MASK, &[0; 150_001]), 1009),
        ];
        for (build, code) in cases {
            let mut stream = Vec::new();
            frame(&mut stream, 0x82, MASK, b"first");
            frame(&mut stream, 0x89, MASK, b"ping");
            build(&mut stream);
            frame(&mut stream, 0x88, MASK, &close(1000, ""));
            let expected = check(stream.clone(), LIMITS);
            assert_eq!(
                expected.outcome,
                Outcome {
                    messages: vec![(false, b"first".to_vec())],
                    ending: Ending::Violation(code),
                }
            );
            let run = run(&stream.as_slice().into(), LIMITS, &Config::plain());
            let frames = server_frames(&run.written, false);
            assert_eq!(frames[0].payload, b"ping");
            assert_eq!(frames[1].payload[..2], code.to_be_bytes());
        }
    }

    #[test]
    fn large_frames_and_direct_reads() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut stream = Vec::new();
        frame(&mut stream, 0x02, MASK, &big[..40_000]);
        frame(&mut stream, 0x89, MASK, b"mid");
        frame(&mut stream, 0x80, MASK, &big[40_000..]);
        frame(&mut stream, 0x82, MASK, &big[..70_000]);
        put_frame(&mut stream, 0x82, Some(MASK), LenForm::Bits64, &big[..10]);
        frame(&mut stream, 0x88, MASK, &close(4000, "done"));
        let expected = check(stream, LIMITS);
        assert_eq!(expected.outcome.messages.len(), 3);
        assert_eq!(expected.outcome.messages[0].1, big);
        // Over the limits.
        let mut stream = Vec::new();
        frame(&mut stream, 0x82, MASK, &big[..1000]);
        frame(&mut stream, 0x82, MASK, &big);
        let small = Limits {
            max_message: 4096,
            max_frame: 2000,
        };
        assert_eq!(check(stream, small).outcome.ending, Ending::Violation(1009));
    }

    #[test]
    fn a_stream_cut_short_is_a_reset() {
        let mut stream = Vec::new();
        frame(&mut stream, 0x81, MASK, b"whole");
        frame(&mut stream, 0x89, MASK, b"answered");
        frame(
            &mut stream,
            0x81,
            MASK,
            "cut inside a character: €".as_bytes(),
        );
        stream.truncate(stream.len() - 1);
        let expected = check(stream, LIMITS);
        assert_eq!(expected.outcome.ending, Ending::Reset);
        assert_eq!(expected.outcome.messages.len(), 1);
        // Invalid bytes that arrived are found before the end.
        let mut stream = Vec::new();
        frame(&mut stream, 0x81, MASK, b"ok \xe0\x80 and more");
        stream.truncate(stream.len() - 5);
        assert_eq!(
            check(stream, LIMITS).outcome.ending,
            Ending::Violation(1007)
        );
    }

    #[test]
    fn the_output_checks_catch_bad_frames() {
        let mut out = Vec::new();
        out.extend_from_slice(b"\x8a\x01x\x88\x02\x03\xe8");
        let frames = server_frames(&out, false);
        assert_eq!(frames.len(), 2);
        let result = std::panic::catch_unwind(|| server_frames(b"\x88\x00\x8a\x00", false));
        assert!(result.is_err(), "a frame after the Close must be caught");
        let result = std::panic::catch_unwind(|| server_frames(b"\x82\x85abc", true));
        assert!(result.is_err(), "a masked server frame must be caught");
    }

    #[test]
    #[should_panic(expected = "without a wakeup")]
    fn a_pending_without_a_wakeup_is_caught() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(MustWake::new(std::future::pending::<()>()));
    }

    /// The seeds the README describes build the streams they are meant to.
    #[test]
    fn seeds() {
        let mut stream = Vec::new();
        frame(&mut stream, 0x81, mask_from(7), b"hello");
        frame(&mut stream, 0x89, mask_from(9), b"ping");
        frame(&mut stream, 0x88, mask_from(8), b"\x03\xe8bye");
        let mut seed = vec![0x00, 255, 255, 0x46, 0x05, 5, 3, 1, 0x82, 2, 2, 0x81, 0x83];
        seed.extend_from_slice(&stream);
        let case = socket_case(&seed);
        assert_eq!(case.stream, stream);
        let expected = check_case(&case);
        assert_eq!(
            expected.outcome.ending,
            Ending::Close(Some((1000, "bye".into())))
        );

        let header = [
            0x03, 255, 255, 0x46, 0x05, 5, 4, 1, 0x82, 3, 64, 2, 0x81, 0x83,
        ];
        let mut seed = header.to_vec();
        seed.extend_from_slice(&[0xC0, 0x11, 0x05, 0x00]);
        seed.extend_from_slice(b"hello");
        seed.extend_from_slice(&[0x04, 0x22, 4]);
        seed.extend_from_slice(b"ping");
        seed.extend_from_slice(&[0x06, 0x33, 0x01, 3]);
        seed.extend_from_slice(b"bye");
        let mut stream = Vec::new();
        frame(&mut stream, 0x81, mask_from(0x11), b"hello");
        frame(&mut stream, 0x89, mask_from(0x22), b"ping");
        frame(&mut stream, 0x88, mask_from(0x33), b"\x03\xe8bye");
        assert_eq!(socket_case(&seed).stream, stream);
        // A 64 KiB binary message, a 65,535 + 32,774 byte text message in
        // two fragments (splitting a character) with a ping between them,
        // a Close 1001.
        let mut seed = header.to_vec();
        seed.extend_from_slice(&[0x80, 0x44, 0xC0, 0x80, 0x00, 0x03]);
        seed.extend_from_slice(&[0x40, 0x55, 0xA0, 0x02]);
        seed.extend_from_slice(&[0x04, 0x22, 2]);
        seed.extend_from_slice(b"pi");
        seed.extend_from_slice(&[0x81, 0x66, 0xC0, 0x00, 0x06, 0x02]);
        seed.extend_from_slice(&[0x06, 0x33, 0x05]);
        let expected = check_case(&socket_case(&seed));
        let lengths: Vec<usize> = expected
            .outcome
            .messages
            .iter()
            .map(|m| m.1.len())
            .collect();
        assert_eq!(lengths, [65536, 98309]);
        assert_eq!(expected.pings, [b"pi"]);
        assert_eq!(
            expected.outcome.ending,
            Ending::Close(Some((1001, String::new())))
        );

        let mut seed = vec![0x03, 5, 0x83, 0x10, 0x47, 9, 0, 3, 0, 7, 0, 9];
        seed.extend_from_slice("héllo wörld €😀".as_bytes());
        let (case, text) = utf8_case(&seed);
        assert_eq!(check_case(&case).outcome, utf8_expected(text));
        assert_eq!(utf8_expected(text).messages.len(), 1);
    }

    #[test]
    fn scripts_build_streams() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let stream = script(&mut Input::new(&bytes), LIMITS);
        assert!(!stream.is_empty());
        check(stream, LIMITS);
    }
}

//! `deflate-load`: a compressing WebSocket client fast enough to keep a
//! one-core server busy, for measuring permessage-deflate against its
//! limit without the pacing of a slower client in the figures.
//!
//! ```text
//! deflate-load --addr 127.0.0.1:PORT --payload FILE [--connections 16]
//!              [--duration 3] [--warmup 1] [--no-takeover] [--no-deflate]
//!              [--server-pid PID]
//! ```
//!
//! `FILE` is the JSON text `bench/deflate/load.mjs --dump` writes; every
//! message changes its counter (`"seq":N`), as the Node client's do. Each
//! of C connections keeps one message in flight: it compresses it (flate2,
//! level 6, with the context kept across messages unless `--no-takeover`,
//! which offers and uses no context takeover both ways), sends it as one
//! masked frame, reads the echo (any fragmentation), inflates it and
//! compares it with what it sent; any difference is a hard error.
//! `--no-deflate` offers no compression: the server's uncompressed echo of
//! the same messages under the same client, the other half of the limit.
//!
//! With `--server-pid`, the server's CPU time (utime + stime of
//! `/proc/PID/stat`) over the counted window, per echoed message. Prints
//! one JSON line. Loopback only; every run is bounded by its duration.

use std::io;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const USAGE: &str = "usage: deflate-load --addr HOST:PORT --payload FILE [--connections C] \
                     [--duration S] [--warmup S] [--no-takeover] [--no-deflate] [--server-pid PID]";
/// The mask of every frame sent: fixed, not zero.
const MASK: [u8; 4] = [0x5a, 0xc3, 0x96, 0x3f];
/// A connection that makes no progress for this long has failed.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

struct Args {
    addr: String,
    payload: String,
    connections: usize,
    duration: f64,
    warmup: f64,
    no_takeover: bool,
    deflate: bool,
    server_pid: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:9001".to_owned(),
        payload: String::new(),
        connections: 16,
        duration: 3.0,
        warmup: 1.0,
        no_takeover: false,
        deflate: true,
        server_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => args.addr = value()?,
            "--payload" => args.payload = value()?,
            "--connections" => {
                args.connections = value()?.parse().map_err(|_| "bad --connections")?
            }
            "--duration" => args.duration = value()?.parse().map_err(|_| "bad --duration")?,
            "--warmup" => args.warmup = value()?.parse().map_err(|_| "bad --warmup")?,
            "--server-pid" => {
                args.server_pid = Some(value()?.parse().map_err(|_| "bad --server-pid")?)
            }
            "--no-takeover" => args.no_takeover = true,
            "--no-deflate" => args.deflate = false,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.payload.is_empty() || args.connections == 0 {
        return Err(USAGE.to_owned());
    }
    Ok(args)
}

/// Counted while the measuring window is open.
struct Counters {
    counting: AtomicBool,
    stopped: AtomicBool,
    messages: AtomicU64,
    wire_bytes: AtomicU64,
}

/// One connection's client side of permessage-deflate.
struct Codec {
    deflate: Compress,
    inflate: Decompress,
    reset: bool,
}

impl Codec {
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let start = self.deflate.total_in();
        loop {
            out.reserve(input.len() / 2 + 1024);
            let consumed = (self.deflate.total_in() - start) as usize;
            self.deflate
                .compress_vec(&input[consumed..], out, FlushCompress::Sync)
                .expect("deflate");
            if (self.deflate.total_in() - start) as usize == input.len()
                && out.capacity() > out.len()
            {
                break;
            }
        }
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
        if self.reset {
            self.deflate.reset();
        }
    }

    fn inflate(&mut self, input: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), String> {
        input.extend_from_slice(&TAIL);
        out.clear();
        let start = self.inflate.total_in();
        loop {
            out.reserve(4096);
            let consumed = (self.inflate.total_in() - start) as usize;
            self.inflate
                .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
                .map_err(|e| format!("the server's data does not inflate: {e}"))?;
            if (self.inflate.total_in() - start) as usize == input.len()
                && out.capacity() > out.len()
            {
                break;
            }
        }
        if self.reset {
            self.inflate.reset(false);
        }
        Ok(())
    }
}

fn handshake_request(addr: &str, deflate: bool, no_takeover: bool) -> String {
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if deflate {
        request.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits");
        if no_takeover {
            request.push_str("; server_no_context_takeover; client_no_context_takeover");
        }
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// Appends a masked client frame (FIN, text, RSV1 if `compressed`).
fn put_frame(out: &mut Vec<u8>, payload: &[u8], compressed: bool) {
    out.push(0x81 | if compressed { 0x40 } else { 0 });
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// A server frame: `(fin, rsv1, opcode, payload)`.
type Frame = (bool, bool, u8, Vec<u8>);

/// Takes one whole server frame off the front of `buf`, or `None` until it
/// is all there.
fn take_frame(buf: &mut Vec<u8>) -> Result<Option<Frame>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err("a masked server frame".to_owned());
    }
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return Ok(None);
    }
    let (fin, rsv1, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x40 != 0, buf[0] & 0x0f);
    let payload = buf[header..header + len].to_vec();
    buf.drain(..header + len);
    Ok(Some((fin, rsv1, opcode, payload)))
}

async fn connection(
    args: Arc<Args>,
    tail: Arc<str>,
    id: usize,
    counters: Arc<Counters>,
) -> Result<Option<String>, String> {
    let mut stream = TcpStream::connect(&args.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .write_all(handshake_request(&args.addr, args.deflate, args.no_takeover).as_bytes())
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        read_some(&mut stream, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("not upgraded: {head}"));
    }
    let extensions = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| value.trim().to_owned())
    });
    if args.deflate != extensions.is_some() {
        return Err(format!(
            "compression offered: {}, answered: {extensions:?}",
            args.deflate
        ));
    }
    let mut codec = Codec {
        deflate: Compress::new(Compression::new(6), false),
        inflate: Decompress::new(false),
        reset: args.no_takeover,
    };
    let (mut compressed, mut wire, mut message, mut inflated) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut seq = id * 1_000_000;
    while !counters.stopped.load(Ordering::Relaxed) {
        let payload = format!("{{\"seq\":{seq}{tail}");
        seq += 1;
        wire.clear();
        if args.deflate {
            codec.compress(payload.as_bytes(), &mut compressed);
            put_frame(&mut wire, &compressed, true);
        } else {
            put_frame(&mut wire, payload.as_bytes(), false);
        }
        stream
            .write_all(&wire)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut bytes = wire.len();
        // The echo, in however many frames.
        message.clear();
        let mut rsv1 = None;
        loop {
            let before = buf.len();
            let frame = take_frame(&mut buf)?;
            let Some((fin, first_rsv1, opcode, data)) = frame else {
                read_some(&mut stream, &mut buf).await?;
                continue;
            };
            bytes += before - buf.len();
            if opcode >= 0x8 {
                return Err(format!(
                    "a control frame (opcode {opcode}) instead of the echo"
                ));
            }
            rsv1.get_or_insert(first_rsv1);
            message.extend_from_slice(&data);
            if fin {
                break;
            }
        }
        let echoed: &[u8] = if rsv1 == Some(true) {
            codec.inflate(&mut message, &mut inflated)?;
            &inflated
        } else {
            &message
        };
        if echoed != payload.as_bytes() {
            return Err(format!(
                "connection {id}: the echo of message {seq} differs"
            ));
        }
        if counters.counting.load(Ordering::Relaxed) {
            counters.messages.fetch_add(1, Ordering::Relaxed);
            counters
                .wire_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
    Ok(extensions)
}

async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(64 * 1024);
    match tokio::time::timeout(STALL_TIMEOUT, stream.read_buf(buf)).await {
        Ok(Ok(0)) => Err("the server closed the connection".to_owned()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err(format!("no progress in {STALL_TIMEOUT:?}")),
    }
}

/// The server's CPU time so far (utime + stime), in clock ticks.
fn server_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => Arc::new(args),
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let text = match std::fs::read_to_string(&args.payload) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: {e}", args.payload);
            return ExitCode::from(2);
        }
    };
    let Some(tail) = text.strip_prefix("{\"seq\":0") else {
        eprintln!("{}: not a payload from load.mjs --dump", args.payload);
        return ExitCode::from(2);
    };
    let tail: Arc<str> = Arc::from(tail);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let counters = Arc::new(Counters {
            counting: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            messages: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
        });
        let tasks: Vec<_> = (0..args.connections)
            .map(|id| tokio::spawn(connection(args.clone(), tail.clone(), id, counters.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let ticks0 = args.server_pid.map(server_ticks).transpose();
        let start = Instant::now();
        counters.counting.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        counters.counting.store(false, Ordering::Relaxed);
        let seconds = start.elapsed().as_secs_f64();
        let ticks1 = args.server_pid.map(server_ticks).transpose();
        counters.stopped.store(true, Ordering::Relaxed);
        let mut extensions = None;
        for task in tasks {
            match tokio::time::timeout(STALL_TIMEOUT, task).await {
                Ok(Ok(Ok(answered))) => extensions = answered,
                Ok(Ok(Err(message))) => {
                    eprintln!("deflate-load: {message}");
                    return ExitCode::FAILURE;
                }
                _ => {
                    eprintln!("deflate-load: a connection did not finish");
                    return ExitCode::FAILURE;
                }
            }
        }
        let messages = counters.messages.load(Ordering::Relaxed);
        if messages == 0 {
            eprintln!("deflate-load: no message was echoed");
            return ExitCode::FAILURE;
        }
        let cpu = match (ticks0, ticks1) {
            (Ok(Some(a)), Ok(Some(b))) => {
                // Clock ticks are 1/100 s on Linux.
                format!("{:.2}", (b - a) as f64 * 1e4 / messages as f64)
            }
            _ => "null".to_owned(),
        };
        println!(
            "{{\"payload_bytes\":{},\"connections\":{},\"deflate\":{},\"no_takeover\":{},\
             \"extensions\":{},\"seconds\":{seconds:.3},\"msgs\":{messages},\"msgs_per_s\":{:.0},\
             \"server_cpu_us_per_msg\":{cpu},\"wire_bytes_per_msg\":{}}}",
            text.len(),
            args.connections,
            args.deflate,
            args.no_takeover,
            extensions.map_or("null".to_owned(), |e| format!("{e:?}")),
            messages as f64 / seconds,
            counters.wire_bytes.load(Ordering::Relaxed) / messages,
        );
        ExitCode::SUCCESS
    })
}

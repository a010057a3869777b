//! `loadgen`: the suite's WebSocket load generator, on raw TCP.
//!
//! It does the HTTP/1.1 upgrade itself and then only writes frames it
//! encoded (and masked) once at start-up, so the client stays cheap: a
//! pipeline of P identical frames lives in one buffer and "send k more" is
//! one `write` of its first k frames. Echoes are parsed as a stream and
//! compared with the sent payload byte for byte as they arrive, whatever
//! way the server fragments them; any difference is a hard error.
//!
//! Modes:
//!
//! - `echo`: a closed loop on C connections. Each keeps P frames in flight
//!   (send P; for every echo that comes back, send one more) for `--warmup`
//!   and then `--duration` seconds; only the second window is counted. The
//!   round trip of each message (from the moment it was due to be sent to
//!   the end of its echo) goes into an HDR histogram. Then the loop drains
//!   what is in flight and closes every socket with a close handshake.
//! - `idle`: open `--idle-count` upgraded sockets, say on stderr when all
//!   are open, hold them for `--idle-hold` seconds, close them cleanly.
//!
//! With `--server-pid PID` it also reads the server's CPU time
//! (utime + stime in `/proc/PID/stat`) at the exact start and end of the
//! counted window, and its `VmRSS` before opening and after opening the idle
//! sockets, and reports CPU µs per echoed message and KiB per idle socket.
//!
//! Output: one JSON object on stdout, one human line on stderr; exit status
//! 1 if anything went wrong (a mismatch, a connection error, a stall).
//!
//! ```text
//! loadgen --addr 127.0.0.1:9001 --connections 64 --size 16 --pipeline 16 \
//!         --duration 5 --warmup 1 [--text] [--server-pid PID]
//! loadgen --addr 127.0.0.1:9001 --mode idle --idle-count 10000 --idle-hold 3
//! ```

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::Histogram;
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;

const USAGE: &str = "\
usage: loadgen [--addr HOST:PORT] [--path /ws] [--mode echo|idle]
               [--connections C] [--size BYTES] [--pipeline P] [--text]
               [--duration SECS] [--warmup SECS]
               [--idle-count N] [--idle-hold SECS]
               [--server-pid PID] [--label NAME]";

/// A connection that makes no progress for this long has failed.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the handshake and the close handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Handshakes in progress at once when opening idle sockets.
const OPEN_CONCURRENCY: usize = 200;
/// The mask of every frame we send: fixed, not zero.
const MASK: [u8; 4] = [0x5a, 0xc3, 0x96, 0x3f];
/// What `--text` repeats: one-, two-, three- and four-byte characters.
const TEXT_PATTERN: &str = "héllo wörld €𝄞 ";
/// Most errors printed to stderr.
const MAX_ERRORS_SHOWN: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Echo,
    Idle,
}

#[derive(Clone, Debug)]
struct Args {
    addr: String,
    path: String,
    mode: Mode,
    connections: usize,
    size: usize,
    pipeline: usize,
    text: bool,
    duration: Duration,
    warmup: Duration,
    idle_count: usize,
    idle_hold: Duration,
    server_pid: Option<u32>,
    label: String,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut args = Args {
            addr: "127.0.0.1:9001".into(),
            path: "/ws".into(),
            mode: Mode::Echo,
            connections: 1,
            size: 16,
            pipeline: 1,
            text: false,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            idle_count: 1000,
            idle_hold: Duration::from_secs(2),
            server_pid: None,
            label: String::new(),
        };
        fn value(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, String> {
            it.next().ok_or_else(|| format!("{flag} needs a value"))
        }
        fn number<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
            s.parse()
                .map_err(|_| format!("{flag}: not a number: {s:?}"))
        }
        fn seconds(s: &str, flag: &str) -> Result<Duration, String> {
            let secs: f64 = number(s, flag)?;
            Duration::try_from_secs_f64(secs).map_err(|_| format!("{flag}: bad duration {s:?}"))
        }
        while let Some(flag) = it.next() {
            let flag = flag.as_str();
            match flag {
                "--addr" => args.addr = value(&mut it, flag)?,
                "--path" => args.path = value(&mut it, flag)?,
                "--mode" => {
                    args.mode = match value(&mut it, flag)?.as_str() {
                        "echo" => Mode::Echo,
                        "idle" => Mode::Idle,
                        other => return Err(format!("--mode is echo or idle, not {other:?}")),
                    }
                }
                "--connections" => args.connections = number(&value(&mut it, flag)?, flag)?,
                "--size" => args.size = number(&value(&mut it, flag)?, flag)?,
                "--pipeline" => args.pipeline = number(&value(&mut it, flag)?, flag)?,
                "--text" => args.text = true,
                "--duration" => args.duration = seconds(&value(&mut it, flag)?, flag)?,
                "--warmup" => args.warmup = seconds(&value(&mut it, flag)?, flag)?,
                "--idle-count" => args.idle_count = number(&value(&mut it, flag)?, flag)?,
                "--idle-hold" => args.idle_hold = seconds(&value(&mut it, flag)?, flag)?,
                "--server-pid" => args.server_pid = Some(number(&value(&mut it, flag)?, flag)?),
                "--label" => args.label = value(&mut it, flag)?,
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if args.connections == 0 || args.pipeline == 0 || args.idle_count == 0 {
            return Err("--connections, --pipeline and --idle-count must be positive".into());
        }
        if args.duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        Ok(args)
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("loadgen: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Room for 10,000 sockets and then some.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, async {
        match args.mode {
            Mode::Echo => run_echo(&args).await,
            Mode::Idle => run_idle(&args).await,
        }
    });
    println!("{}", report.json);
    eprintln!("{}", report.human);
    for error in report.errors.iter().take(MAX_ERRORS_SHOWN) {
        eprintln!("loadgen: error: {error}");
    }
    if report.errors.len() > MAX_ERRORS_SHOWN {
        eprintln!(
            "loadgen: ... and {} more errors",
            report.errors.len() - MAX_ERRORS_SHOWN
        );
    }
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What a run prints.
struct Report {
    json: String,
    human: String,
    errors: Vec<String>,
}

// ---------------------------------------------------------------------------
// echo mode

/// The one message every connection sends, encoded once.
struct Message {
    /// The payload the echo must equal.
    payload: Vec<u8>,
    text: bool,
    /// `pipeline` copies of the masked frame, back to back.
    frames: Vec<u8>,
    frame_len: usize,
}

impl Message {
    fn new(size: usize, text: bool, pipeline: usize) -> Self {
        let payload = if text {
            text_payload(size)
        } else {
            binary_payload(size)
        };
        let frame = client_frame(if text { 0x1 } else { 0x2 }, &payload);
        let frame_len = frame.len();
        Message {
            payload,
            text,
            frames: frame.repeat(pipeline),
            frame_len,
        }
    }
}

/// Valid UTF-8 of exactly `size` bytes: the pattern cut at a character
/// boundary, padded with ASCII.
fn text_payload(size: usize) -> Vec<u8> {
    let mut text = TEXT_PATTERN.repeat(size / TEXT_PATTERN.len() + 1);
    let mut cut = size;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    while text.len() < size {
        text.push('.');
    }
    text.into_bytes()
}

/// `size` bytes of a fixed pseudo-random sequence.
fn binary_payload(size: usize) -> Vec<u8> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    (0..size).map(|_| rng.next() as u8).collect()
}

/// A masked client frame with FIN set.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, &byte)| byte ^ MASK[i & 3]),
    );
    frame
}

/// A masked close frame with status 1000.
fn close_frame() -> Vec<u8> {
    client_frame(0x8, &1000u16.to_be_bytes())
}

/// Run-wide state, shared by the connection tasks on this one thread.
struct Shared {
    /// Connections ready to start.
    ready: Cell<usize>,
    started: tokio::sync::Notify,
    /// Echoes received now are counted.
    counting: Cell<bool>,
    /// No new frames are sent once set.
    stop: Cell<bool>,
    msgs: Cell<u64>,
    /// Every echo, warm-up and drain included (for syscalls per message).
    msgs_total: Cell<u64>,
    histogram: RefCell<Histogram<u64>>,
}

struct ConnOutcome {
    error: Option<String>,
}

async fn run_echo(args: &Args) -> Report {
    let message = Rc::new(Message::new(args.size, args.text, args.pipeline));
    let shared = Rc::new(Shared {
        ready: Cell::new(0),
        started: tokio::sync::Notify::new(),
        counting: Cell::new(false),
        stop: Cell::new(false),
        msgs: Cell::new(0),
        msgs_total: Cell::new(0),
        // 1 ns to 100 s at three significant digits.
        histogram: RefCell::new(
            Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds"),
        ),
    });
    let mut tasks = Vec::with_capacity(args.connections);
    for id in 0..args.connections {
        let (args, message, shared) = (args.clone(), message.clone(), shared.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let error = echo_connection(id, &args, &message, &shared).await.err();
            ConnOutcome { error }
        }));
    }
    let mut errors = Vec::new();

    // Wait until every connection is upgraded (or failed to be).
    let connect_deadline = Instant::now() + HANDSHAKE_TIMEOUT + Duration::from_secs(1);
    while shared.ready.get() < args.connections && Instant::now() < connect_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if shared.ready.get() < args.connections {
        errors.push(format!(
            "only {} of {} connections were upgraded",
            shared.ready.get(),
            args.connections
        ));
    }
    shared.started.notify_waiters();

    tokio::time::sleep(args.warmup).await;
    let clk_tck = clock_ticks_per_second();
    let server_split_before = args.server_pid.and_then(cpu_split);
    let server_before = server_split_before.map(|(user, system)| user + system);
    let client_before = cpu_ticks_self();
    let machine_before = machine_ticks();
    let window_start = Instant::now();
    shared.counting.set(true);
    tokio::time::sleep(args.duration).await;
    // No await between these reads and the flags: the window is exact.
    let server_split_after = args.server_pid.and_then(cpu_split);
    let server_after = server_split_after.map(|(user, system)| user + system);
    let client_after = cpu_ticks_self();
    let machine_after = machine_ticks();
    let window = window_start.elapsed();
    shared.counting.set(false);
    shared.stop.set(true);
    let msgs = shared.msgs.get();

    // Drain, close and collect; every task is bounded by its stall timeout.
    let drain_deadline = STALL_TIMEOUT + CLOSE_TIMEOUT + Duration::from_secs(5);
    for task in tasks {
        match tokio::time::timeout(drain_deadline, task).await {
            Ok(Ok(ConnOutcome { error: Some(error) })) => errors.push(error),
            Ok(Ok(ConnOutcome { error: None })) => {}
            Ok(Err(join)) => errors.push(format!("connection task failed: {join}")),
            Err(_) => errors.push("a connection did not finish in time".into()),
        }
    }

    let secs = window.as_secs_f64();
    let histogram = shared.histogram.borrow();
    let quantile_us = |q: f64| {
        if histogram.is_empty() {
            0.0
        } else {
            histogram.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let per_msg_us = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if msgs > 0 => {
            Some((a.saturating_sub(b)) as f64 * 1e6 / clk_tck as f64 / msgs as f64)
        }
        _ => None,
    };
    let server_cpu = per_msg_us(server_before, server_after);
    // The same window split into user space and the kernel (utime, stime).
    let server_user = per_msg_us(
        server_split_before.map(|(user, _)| user),
        server_split_after.map(|(user, _)| user),
    );
    let server_sys = per_msg_us(
        server_split_before.map(|(_, system)| system),
        server_split_after.map(|(_, system)| system),
    );
    let client_cpu = per_msg_us(client_before, client_after);
    let server_ticks = server_before.zip(server_after).map(|(b, a)| a - b);
    // What the rest of the machine did meanwhile: busy ticks of all CPUs
    // not spent by the server or by us, and ticks stolen by the hypervisor,
    // each as a percentage of one CPU.
    let client_ticks = client_before.zip(client_after).map(|(b, a)| a - b);
    let (other_pct, steal_pct) = match (machine_before, machine_after) {
        (Some(before), Some(after)) => {
            let one_cpu = secs * clk_tck as f64 / 100.0;
            let ours = server_ticks.unwrap_or(0) + client_ticks.unwrap_or(0);
            let other = (after.busy - before.busy).saturating_sub(ours);
            (
                Some(other as f64 / one_cpu),
                Some((after.steal - before.steal) as f64 / one_cpu),
            )
        }
        _ => (None, None),
    };
    let msgs_per_s = msgs as f64 / secs;
    let mb_per_s = msgs_per_s * args.size as f64 / 1e6;
    let (p50, p99, p999) = (quantile_us(0.5), quantile_us(0.99), quantile_us(0.999));
    let max = histogram.max() as f64 / 1000.0;

    let mut json = String::from("{");
    let _ = write!(
        json,
        "\"mode\":\"echo\",\"label\":{},\"connections\":{},\"size\":{},\"pipeline\":{},\
         \"text\":{},\"duration\":{secs:.3},\"msgs\":{msgs},\"msgs_total\":{},\"msgs_per_s\":{msgs_per_s:.1},\
         \"mb_per_s\":{mb_per_s:.3},\"p50_us\":{p50:.1},\"p99_us\":{p99:.1},\
         \"p999_us\":{p999:.1},\"max_us\":{max:.1},\"errors\":{},\
         \"server_cpu_us_per_msg\":{},\"server_user_us_per_msg\":{},\"server_sys_us_per_msg\":{},\
         \"server_cpu_ticks\":{},\"clk_tck\":{clk_tck},\
         \"client_cpu_us_per_msg\":{},\"other_cpu_pct\":{},\"steal_pct\":{}",
        json_string(&args.label),
        args.connections,
        args.size,
        args.pipeline,
        args.text,
        shared.msgs_total.get(),
        errors.len(),
        json_opt(server_cpu, 3),
        json_opt(server_user, 3),
        json_opt(server_sys, 3),
        server_ticks.map_or("null".into(), |t| t.to_string()),
        json_opt(client_cpu, 3),
        json_opt(other_pct, 1),
        json_opt(steal_pct, 1),
    );
    json.push('}');
    let kind = if message.text { "text" } else { "binary" };
    let mut human = format!(
        "echo {}{}x{} B {kind} P{}: {msgs} msgs in {secs:.2} s = {msgs_per_s:.0} msgs/s, \
         {mb_per_s:.2} MB/s, p50 {p50:.0} us, p99 {p99:.0} us, p99.9 {p999:.0} us",
        label_prefix(&args.label),
        args.connections,
        args.size,
        args.pipeline,
    );
    if let Some(cpu) = server_cpu {
        let _ = write!(human, ", server {cpu:.2} us CPU/msg");
        if let (Some(user), Some(sys)) = (server_user, server_sys) {
            let _ = write!(human, " ({user:.2} user + {sys:.2} kernel)");
        }
    }
    if let Some(other) = other_pct.filter(|&o| o >= 5.0) {
        let _ = write!(human, ", other load {other:.0}% of a CPU");
    }
    let _ = write!(human, ", {} errors", errors.len());
    Report {
        json,
        human,
        errors,
    }
}

/// One closed-loop connection: upgrade, wait for the start, keep
/// `pipeline` frames in flight until told to stop, drain, close.
async fn echo_connection(
    id: usize,
    args: &Args,
    message: &Message,
    shared: &Shared,
) -> Result<(), String> {
    let started = shared.started.notified();
    let upgraded = handshake(&args.addr, &args.path, id as u64).await;
    shared.ready.set(shared.ready.get() + 1);
    let (tcp, leftover) = upgraded.map_err(|e| format!("connection {id}: {e}"))?;
    started.await;

    let fail = |what: String| format!("connection {id}: {what}");
    let mut reader = FrameReader::new(&message.payload, message.text);
    let mut read_buf = vec![0; (message.frame_len * 2).clamp(64 * 1024, 4 << 20)];
    // Frames due but not fully written; bytes of the first already written.
    let mut owed = message.frames.len() / message.frame_len;
    let mut partial = 0usize;
    // When each frame in flight was due, oldest first.
    let mut due: VecDeque<Instant> = VecDeque::with_capacity(owed);
    let now = Instant::now();
    due.extend(std::iter::repeat_n(now, owed));
    // Control frames to send (pongs), written between data frames.
    let mut control: Vec<u8> = Vec::new();
    let mut stopping = false;

    let stall = tokio::time::sleep(STALL_TIMEOUT);
    tokio::pin!(stall);
    let mut last_progress = Instant::now();

    let mut pending_input = leftover;
    loop {
        if !stopping && shared.stop.get() {
            stopping = true;
            // Drop frames that were due but not started.
            let unstarted = owed - usize::from(partial > 0);
            owed -= unstarted;
            for _ in 0..unstarted {
                due.pop_back();
            }
        }
        if stopping && due.is_empty() && control.is_empty() {
            break;
        }

        // Input: the handshake's leftover first, then whatever is readable.
        let mut got = 0;
        if !pending_input.is_empty() {
            let input = std::mem::take(&mut pending_input);
            got = reader
                .feed(&input, &mut control)
                .map_err(|e| fail(format!("{e} (in leftover)")))?;
        }
        let writing = owed > 0 || !control.is_empty();
        let interest = if writing {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let ready = if got > 0 {
            None
        } else {
            tokio::select! {
                biased;
                ready = tcp.ready(interest) => Some(ready.map_err(|e| fail(e.to_string()))?),
                () = &mut stall => {
                    return Err(fail(format!(
                        "stalled: nothing received for {STALL_TIMEOUT:?} with {} in flight",
                        due.len()
                    )));
                }
            }
        };
        if ready.is_some_and(|ready| ready.is_readable()) {
            match tcp.try_read(&mut read_buf) {
                Ok(0) => return Err(fail("server closed the connection".into())),
                Ok(n) => {
                    got += reader
                        .feed(&read_buf[..n], &mut control)
                        .map_err(|e| fail(e.to_string()))?;
                    let now = Instant::now();
                    if now - last_progress > Duration::from_secs(1) {
                        stall.as_mut().reset((now + STALL_TIMEOUT).into());
                        last_progress = now;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(fail(format!("read: {e}"))),
            }
        }
        if got > 0 {
            let now = Instant::now();
            let counting = shared.counting.get();
            let mut histogram = counting.then(|| shared.histogram.borrow_mut());
            for _ in 0..got {
                let Some(sent) = due.pop_front() else {
                    return Err(fail("an echo arrived for a message never sent".into()));
                };
                if let Some(histogram) = histogram.as_mut() {
                    let nanos = u64::try_from((now - sent).as_nanos()).unwrap_or(u64::MAX);
                    histogram.saturating_record(nanos.max(1));
                }
            }
            drop(histogram);
            shared.msgs_total.set(shared.msgs_total.get() + got as u64);
            if counting {
                shared.msgs.set(shared.msgs.get() + got as u64);
            }
            if !stopping && !shared.stop.get() {
                owed += got;
                due.extend(std::iter::repeat_n(now, got));
            }
        }

        // Output: finish a frame begun, then control frames, then data.
        if owed > 0 && (partial > 0 || control.is_empty()) {
            match tcp.try_write(&message.frames[partial..owed * message.frame_len]) {
                Ok(n) => {
                    let written = partial + n;
                    owed -= written / message.frame_len;
                    partial = written % message.frame_len;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(fail(format!("write: {e}"))),
            }
        }
        if partial == 0 && !control.is_empty() {
            match tcp.try_write(&control) {
                Ok(n) => drop(control.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(fail(format!("write: {e}"))),
            }
        }
    }

    close(tcp, &mut reader)
        .await
        .map_err(|e| fail(format!("close: {e}")))
}

/// Sends a close frame and waits for the server's.
async fn close(mut tcp: TcpStream, reader: &mut FrameReader<'_>) -> Result<(), String> {
    reader.closing = true;
    let mut control = Vec::new();
    let closing = async {
        tcp.write_all(&close_frame())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0; 64 * 1024];
        while !reader.closed {
            let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                // The server may close the TCP connection right after its
                // close frame, which is then already in `reader`.
                break;
            }
            reader.feed(&buf[..n], &mut control)?;
        }
        Ok::<_, String>(())
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        Ok(result) => result?,
        Err(_) => return Err("no close frame from the server in time".into()),
    }
    if reader.closed {
        Ok(())
    } else {
        Err("connection ended without a close frame".into())
    }
}

/// Parses the server's frames as they arrive and checks every message
/// against the expected payload without buffering it.
struct FrameReader<'a> {
    expected: &'a [u8],
    text: bool,
    /// Bytes of a header not yet complete.
    header: Vec<u8>,
    /// Payload bytes left in the current frame.
    remaining: u64,
    /// Opcode and FIN of the current frame.
    opcode: u8,
    fin: bool,
    /// Inside a data message; how much of it has matched.
    in_message: bool,
    matched: usize,
    /// A control frame's payload so far.
    control_payload: Vec<u8>,
    /// Expecting the server's close (after ours).
    closing: bool,
    closed: bool,
}

impl<'a> FrameReader<'a> {
    fn new(expected: &'a [u8], text: bool) -> Self {
        FrameReader {
            expected,
            text,
            header: Vec::with_capacity(14),
            remaining: 0,
            opcode: 0,
            fin: false,
            in_message: false,
            matched: 0,
            control_payload: Vec::new(),
            closing: false,
            closed: false,
        }
    }

    /// Consumes `data`; returns how many whole messages it completed.
    /// Pongs to send are appended to `control`.
    fn feed(&mut self, mut data: &[u8], control: &mut Vec<u8>) -> Result<usize, String> {
        let mut messages = 0;
        while !data.is_empty() {
            if self.closed {
                return Err("data after the server's close frame".into());
            }
            if self.remaining > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                let (payload, rest) = data.split_at(n);
                if self.opcode >= 0x8 {
                    self.control_payload.extend_from_slice(payload);
                } else {
                    let end = self.matched + n;
                    if end > self.expected.len() {
                        return Err(format!(
                            "mismatch: echo longer than the {} bytes sent",
                            self.expected.len()
                        ));
                    }
                    if payload != &self.expected[self.matched..end] {
                        let at = payload
                            .iter()
                            .zip(&self.expected[self.matched..end])
                            .position(|(a, b)| a != b)
                            .unwrap_or(0);
                        return Err(format!(
                            "mismatch: echo differs at byte {} of {}",
                            self.matched + at,
                            self.expected.len()
                        ));
                    }
                    self.matched = end;
                }
                self.remaining -= n as u64;
                data = rest;
                if self.remaining == 0 {
                    messages += self.frame_done(control)?;
                }
                continue;
            }
            // A header, possibly split across reads.
            let take = (14 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            let Some((header_len, len)) = parse_server_header(&self.header)? else {
                data = &data[take..];
                continue;
            };
            // Give back what belongs to the payload.
            let used = header_len - (self.header.len() - take);
            data = &data[used..];
            self.fin = self.header[0] & 0x80 != 0;
            self.opcode = self.header[0] & 0x0f;
            self.header.clear();
            self.remaining = len;
            self.start_frame()?;
            if len == 0 {
                messages += self.frame_done(control)?;
            }
        }
        Ok(messages)
    }

    fn start_frame(&mut self) -> Result<(), String> {
        match self.opcode {
            0x0 if !self.in_message => Err("continuation frame outside a message".into()),
            0x0 => Ok(()),
            0x1 | 0x2 => {
                if self.in_message {
                    return Err("new message inside a fragmented one".into());
                }
                if (self.opcode == 0x1) != self.text {
                    return Err(format!(
                        "mismatch: sent {}, echo is {}",
                        if self.text { "text" } else { "binary" },
                        if self.opcode == 0x1 { "text" } else { "binary" }
                    ));
                }
                self.in_message = true;
                self.matched = 0;
                Ok(())
            }
            0x8..=0xA => {
                if !self.fin || self.remaining > 125 {
                    return Err("invalid control frame".into());
                }
                self.control_payload.clear();
                Ok(())
            }
            other => Err(format!("unknown opcode {other:#x}")),
        }
    }

    /// The current frame is complete; returns 1 if it ended a message.
    fn frame_done(&mut self, control: &mut Vec<u8>) -> Result<usize, String> {
        match self.opcode {
            0x8 if self.closing => {
                self.closed = true;
                Ok(0)
            }
            0x8 => Err(format!(
                "server sent close {:?} unasked",
                self.control_payload
                    .get(..2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
            )),
            0x9 => {
                control.extend_from_slice(&client_frame(0xA, &self.control_payload));
                Ok(0)
            }
            0xA => Ok(0),
            _ if self.fin => {
                self.in_message = false;
                if self.matched != self.expected.len() {
                    return Err(format!(
                        "mismatch: echo has {} of the {} bytes sent",
                        self.matched,
                        self.expected.len()
                    ));
                }
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

/// `Some((header_len, payload_len))` once `buf` holds a whole unmasked
/// header.
fn parse_server_header(buf: &[u8]) -> Result<Option<(usize, u64)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[0] & 0x70 != 0 {
        return Err("server frame with RSV bits set".into());
    }
    if buf[1] & 0x80 != 0 {
        return Err("server frame is masked".into());
    }
    let (len, header_len) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(bytes), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    Ok(Some((header_len, len)))
}

// ---------------------------------------------------------------------------
// idle mode

async fn run_idle(args: &Args) -> Report {
    let n = args.idle_count;
    let mut errors = Vec::new();
    let rss_before = args.server_pid.and_then(rss_kib);
    let opened: Rc<RefCell<Vec<TcpStream>>> = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let failures: Rc<RefCell<Vec<String>>> = Rc::default();
    let gate = Rc::new(tokio::sync::Semaphore::new(OPEN_CONCURRENCY));
    let open_start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for id in 0..n {
        let (args, opened, failures, gate) =
            (args.clone(), opened.clone(), failures.clone(), gate.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let Ok(_permit) = gate.acquire().await else {
                return;
            };
            match handshake(&args.addr, &args.path, id as u64).await {
                Ok((tcp, _)) => opened.borrow_mut().push(tcp),
                Err(e) => failures.borrow_mut().push(format!("socket {id}: {e}")),
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let open_time = open_start.elapsed();
    errors.append(&mut failures.borrow_mut());
    let sockets = std::mem::take(&mut *opened.borrow_mut());
    let count = sockets.len();
    eprintln!(
        "loadgen: all {count} of {n} sockets open in {:.2} s",
        open_time.as_secs_f64()
    );
    // Let the server finish whatever it does after the handshake.
    let settle = Duration::from_secs(1).min(args.idle_hold);
    tokio::time::sleep(settle).await;
    let rss_open = args.server_pid.and_then(rss_kib);
    tokio::time::sleep(args.idle_hold - settle).await;
    let rss_end = args.server_pid.and_then(rss_kib);

    // Close them all cleanly, a bounded number at a time.
    let clean = Rc::new(Cell::new(0usize));
    let mut tasks = Vec::with_capacity(count);
    let payload: &'static [u8] = &[];
    for tcp in sockets {
        let (clean, gate, failures) = (clean.clone(), gate.clone(), failures.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let Ok(_permit) = gate.acquire().await else {
                return;
            };
            let mut reader = FrameReader::new(payload, false);
            match close(tcp, &mut reader).await {
                Ok(()) => clean.set(clean.get() + 1),
                Err(e) => failures.borrow_mut().push(format!("idle close: {e}")),
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    errors.append(&mut failures.borrow_mut());

    let per_socket = rss_before
        .zip(rss_open)
        .filter(|_| count > 0)
        .map(|(before, open)| (open as f64 - before as f64) / count as f64);
    let kib = |v: Option<u64>| v.map_or("null".into(), |v| v.to_string());
    let json = format!(
        "{{\"mode\":\"idle\",\"label\":{},\"idle_count\":{n},\"opened\":{count},\
         \"open_secs\":{:.3},\"closed_cleanly\":{},\"rss_before_kib\":{},\
         \"rss_open_kib\":{},\"rss_end_kib\":{},\"kib_per_socket\":{},\"errors\":{}}}",
        json_string(&args.label),
        open_time.as_secs_f64(),
        clean.get(),
        kib(rss_before),
        kib(rss_open),
        kib(rss_end),
        json_opt(per_socket, 2),
        errors.len(),
    );
    let mut human = format!(
        "idle {}{count} of {n} sockets opened in {:.2} s, {} closed cleanly",
        label_prefix(&args.label),
        open_time.as_secs_f64(),
        clean.get()
    );
    if let Some(kib) = per_socket {
        let _ = write!(human, ", server {kib:.2} KiB/socket");
    }
    let _ = write!(human, ", {} errors", errors.len());
    Report {
        json,
        human,
        errors,
    }
}

// ---------------------------------------------------------------------------
// handshake and helpers

/// Connects and upgrades; returns the stream and any bytes that came after
/// the 101's head.
async fn handshake(addr: &str, path: &str, seed: u64) -> Result<(TcpStream, Vec<u8>), String> {
    let upgrade = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d ^ seed.wrapping_mul(0x9e37_79b9));
        let key_bytes: Vec<u8> = (0..16).map(|_| rng.next() as u8).collect();
        let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send handshake: {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        let head_len = loop {
            let mut chunk = [0; 1024];
            let n = tcp
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read handshake: {e}"))?;
            if n == 0 {
                return Err("connection closed during the handshake".into());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err("handshake response head over 16 KiB".into());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_len]);
        let status = head.lines().next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 101") {
            return Err(format!("handshake answered {status:?}"));
        }
        let expected = base64::engine::general_purpose::STANDARD.encode(
            Sha1::new()
                .chain_update(key.as_bytes())
                .chain_update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                .finalize(),
        );
        let accept = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-accept")
                .then(|| value.trim())
        });
        if accept != Some(expected.as_str()) {
            return Err(format!("bad Sec-WebSocket-Accept {accept:?}"));
        }
        Ok((tcp, buf.split_off(head_len)))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade)
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

/// utime and stime of a process, in clock ticks.
fn cpu_split(pid: u32) -> Option<(u64, u64)> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks_self() -> Option<u64> {
    stat_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
        .map(|(user, system)| user + system)
}

/// Fields 14 and 15 of `/proc/PID/stat` (utime, stime), counted after the
/// command name (which may contain spaces and parentheses).
fn stat_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// The machine's CPU ticks from the first line of `/proc/stat`.
#[derive(Clone, Copy)]
struct MachineTicks {
    /// Everything but idle, iowait and steal.
    busy: u64,
    steal: u64,
}

fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already
    // in user and nice).
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(MachineTicks {
        busy: get(0) + get(1) + get(2) + get(5) + get(6),
        steal: get(7),
    })
}

/// `VmRSS` of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `getconf CLK_TCK`, or the usual 100.
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("null".into(), |v| format!("{v:.decimals$}"))
}

fn label_prefix(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!("[{label}] ")
    }
}

/// A tiny deterministic PRNG for keys and payloads.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame.
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            n @ 0..=125 => frame.push(n as u8),
            n @ 126..=0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    fn feed_all(
        reader: &mut FrameReader<'_>,
        stream: &[u8],
        piece: usize,
    ) -> Result<usize, String> {
        let mut control = Vec::new();
        let mut messages = 0;
        for chunk in stream.chunks(piece) {
            messages += reader.feed(chunk, &mut control)?;
        }
        Ok(messages)
    }

    #[test]
    fn text_payload_is_valid_utf8_of_the_exact_size() {
        for size in 0..200 {
            let text = text_payload(size);
            assert_eq!(text.len(), size);
            assert!(std::str::from_utf8(&text).is_ok());
        }
        assert!(text_payload(1024).iter().any(|&b| b >= 0xf0));
    }

    #[test]
    fn client_frame_unmasks_to_the_payload() {
        let payload = binary_payload(300);
        let frame = client_frame(0x2, &payload);
        assert_eq!(&frame[..4], &[0x82, 0x80 | 126, 1, 44]);
        assert_eq!(&frame[4..8], &MASK);
        let unmasked: Vec<u8> = frame[8..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i & 3])
            .collect();
        assert_eq!(unmasked, payload);
    }

    #[test]
    fn whole_and_fragmented_echoes_match_at_every_split() {
        let payload = binary_payload(70_000);
        let mut stream = server_frame(0x82, &payload);
        // The same message again, in three fragments with a ping between.
        stream.extend(server_frame(0x02, &payload[..100]));
        stream.extend(server_frame(0x89, b"hi"));
        stream.extend(server_frame(0x00, &payload[100..69_000]));
        stream.extend(server_frame(0x80, &payload[69_000..]));
        for piece in [1, 2, 3, 7, 1000, 65_536, stream.len()] {
            let mut reader = FrameReader::new(&payload, false);
            let mut control = Vec::new();
            let mut messages = 0;
            for chunk in stream.chunks(piece) {
                messages += reader.feed(chunk, &mut control).unwrap();
            }
            assert_eq!(messages, 2, "piece {piece}");
            assert_eq!(control, client_frame(0xA, b"hi"), "the ping is answered");
        }
    }

    #[test]
    fn a_changed_byte_is_a_mismatch() {
        let payload = text_payload(1000);
        let mut echo = payload.clone();
        echo[999] ^= 1;
        let mut reader = FrameReader::new(&payload, true);
        let error = feed_all(&mut reader, &server_frame(0x81, &echo), 100).unwrap_err();
        assert!(error.contains("differs at byte 999"), "{error}");
    }

    #[test]
    fn short_long_and_retyped_echoes_are_mismatches() {
        let payload = binary_payload(64);
        for (echo, what) in [
            (server_frame(0x82, &payload[..63]), "has 63 of the 64"),
            (server_frame(0x82, &binary_payload(65)), "longer than"),
            (server_frame(0x81, &payload), "echo is text"),
        ] {
            let mut reader = FrameReader::new(&payload, false);
            let error = feed_all(&mut reader, &echo, 5).unwrap_err();
            assert!(error.contains(what), "{error}");
        }
    }

    #[test]
    fn an_unasked_close_is_an_error_and_an_answer_to_ours_is_not() {
        let close = server_frame(0x88, &1000u16.to_be_bytes());
        let mut reader = FrameReader::new(&[], false);
        assert!(feed_all(&mut reader, &close, 1).is_err());
        let mut reader = FrameReader::new(&[], false);
        reader.closing = true;
        assert_eq!(feed_all(&mut reader, &close, 1), Ok(0));
        assert!(reader.closed);
    }

    #[test]
    fn proc_stat_fields_are_found_after_the_command_name() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 2 0";
        assert_eq!(stat_ticks(stat), Some((7, 3)));
    }
}

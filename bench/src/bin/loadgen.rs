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
//! - `broadcast`: open `--subscribers` N sockets on `/sub`, then
//!   `--publishers` P on `/pub`. Publisher p sends messages 0, 1, 2, …
//!   whose payload starts with a tag (p and the sequence number in ASCII
//!   hex, so `--text` stays UTF-8) followed by the filler of the echo mode;
//!   it keeps `--in-flight` W of them in flight, sending message k + W only
//!   once message k has reached all N subscribers (receipts are counted per
//!   (publisher, k mod W) slot). Every subscriber checks that every
//!   message arrives exactly once, in order per publisher, with the filler
//!   intact; anything else is a hard error. Before the sequence starts, a
//!   probe message is published until every subscriber has received one,
//!   since a server may put a subscriber in its room only after the 101 has
//!   gone out. Deliveries (message × subscriber receipts) are counted in
//!   the window after `--warmup`, with the publish-to-last-subscriber
//!   latency of each message completed in it. Then the publishers stop,
//!   wait for what is in flight, and every socket is closed cleanly. With
//!   `--strace FILE`, `strace -c -f` is attached to the server for the
//!   counted window alone (its write, writev, sendto and sendmsg calls, in
//!   FILE), so that sends per delivery leave out the handshakes and closes.
//!
//! With `--server-pid PID` it also reads the server's CPU time
//! (utime + stime in `/proc/PID/stat`) at the exact start and end of the
//! counted window, and its `VmRSS` before opening and after opening the idle
//! sockets, and reports CPU µs per echoed message (per delivery in the
//! broadcast mode) and KiB per idle socket.
//!
//! Output: one JSON object on stdout, one human line on stderr; exit status
//! 1 if anything went wrong (a mismatch, a connection error, a stall).
//!
//! ```text
//! loadgen --addr 127.0.0.1:9001 --connections 64 --size 16 --pipeline 16 \
//!         --duration 5 --warmup 1 [--text] [--server-pid PID]
//! loadgen --addr 127.0.0.1:9001 --mode idle --idle-count 10000 --idle-hold 3
//! loadgen --addr 127.0.0.1:9001 --mode broadcast --subscribers 1000 \
//!         --publishers 10 --in-flight 16 --size 64 --text [--strace FILE]
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
usage: loadgen [--addr HOST:PORT] [--path /ws] [--mode echo|idle|broadcast]
               [--connections C] [--size BYTES] [--pipeline P] [--text]
               [--duration SECS] [--warmup SECS]
               [--idle-count N] [--idle-hold SECS]
               [--subscribers N] [--publishers P] [--in-flight W] [--strace FILE]
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
    Broadcast,
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
    subscribers: usize,
    publishers: usize,
    in_flight: usize,
    /// Where `strace -c` writes its summary of the broadcast window.
    strace: Option<String>,
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
            subscribers: 1000,
            publishers: 1,
            in_flight: 1,
            strace: None,
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
                        "broadcast" => Mode::Broadcast,
                        other => {
                            return Err(format!(
                                "--mode is echo, idle or broadcast, not {other:?}"
                            ));
                        }
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
                "--subscribers" => args.subscribers = number(&value(&mut it, flag)?, flag)?,
                "--publishers" => args.publishers = number(&value(&mut it, flag)?, flag)?,
                "--in-flight" => args.in_flight = number(&value(&mut it, flag)?, flag)?,
                "--strace" => args.strace = Some(value(&mut it, flag)?),
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
        if args.mode == Mode::Broadcast {
            if args.subscribers == 0 || args.in_flight == 0 {
                return Err("--subscribers and --in-flight must be positive".into());
            }
            if args.publishers == 0 || args.publishers > MAX_PUBLISHERS {
                return Err(format!("--publishers must be 1 to {MAX_PUBLISHERS}"));
            }
            if args.size < TAG_LEN {
                return Err(format!("--size must be at least {TAG_LEN} for the tag"));
            }
            if args.strace.is_some() && args.server_pid.is_none() {
                return Err("--strace needs --server-pid".into());
            }
        } else if args.strace.is_some() {
            return Err("--strace is for --mode broadcast".into());
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
            Mode::Broadcast => run_broadcast(&args).await,
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
    /// The first `tag_len` bytes of each message are not compared but
    /// appended to `tags` (the broadcast mode's publisher and sequence
    /// number); 0 in the other modes.
    tag_len: usize,
    tags: Vec<u8>,
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
            tag_len: 0,
            tags: Vec::new(),
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
                    // The tag, if any, is kept rather than compared.
                    let tagged = self.tag_len.saturating_sub(self.matched).min(n);
                    self.tags.extend_from_slice(&payload[..tagged]);
                    let from = self.matched + tagged;
                    if payload[tagged..] != self.expected[from..end] {
                        let at = payload[tagged..]
                            .iter()
                            .zip(&self.expected[from..end])
                            .position(|(a, b)| a != b)
                            .unwrap_or(0);
                        return Err(format!(
                            "mismatch: echo differs at byte {} of {}",
                            from + at,
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
// broadcast mode

/// Bytes at the start of every broadcast payload that say which message it
/// is: the publisher (4 hex digits) and its sequence number (12), in ASCII
/// so that text stays UTF-8. The rest of the payload is the filler.
const TAG_LEN: usize = 16;
/// The publisher field of a probe, a message that only shows a subscriber
/// is in the server's room, published before the counted sequence starts.
const PROBE: u16 = 0xffff;
/// Publishers a tag can name (the probe's field excluded).
const MAX_PUBLISHERS: usize = PROBE as usize;
/// How often the probe goes out until every subscriber has received one.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// How often the run is looked at: failures, stalls, the end of a phase.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// The message every publisher sends, encoded once.
struct Broadcast {
    /// The payload every delivery must equal after its tag (the tag's bytes
    /// here are placeholders).
    expected: Vec<u8>,
    text: bool,
    /// The masked frame of it; each message is a copy with its tag patched.
    frame: Vec<u8>,
    /// Where the payload starts in `frame`.
    payload_at: usize,
}

impl Broadcast {
    fn new(size: usize, text: bool) -> Self {
        let filler = size.saturating_sub(TAG_LEN);
        let mut expected = tag(0, 0).to_vec();
        expected.extend(if text {
            text_payload(filler)
        } else {
            binary_payload(filler)
        });
        let frame = client_frame(if text { 0x1 } else { 0x2 }, &expected);
        Broadcast {
            payload_at: frame.len() - expected.len(),
            expected,
            text,
            frame,
        }
    }

    /// Appends the frame of `publisher`'s message `seq` to `out`.
    fn push_frame(&self, out: &mut Vec<u8>, publisher: u16, seq: u64) {
        let start = out.len() + self.payload_at;
        out.extend_from_slice(&self.frame);
        let masked = out[start..start + TAG_LEN].iter_mut();
        for (i, (byte, tag_byte)) in masked.zip(tag(publisher, seq)).enumerate() {
            *byte = tag_byte ^ MASK[i & 3];
        }
    }
}

/// The tag of `publisher`'s message `seq`: 16 lowercase hex digits.
fn tag(publisher: u16, seq: u64) -> [u8; TAG_LEN] {
    let value = (u64::from(publisher) << 48) | (seq & 0xffff_ffff_ffff);
    let mut out = [0; TAG_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = b"0123456789abcdef"[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The publisher and sequence number of a tag, if it is one.
fn parse_tag(tag: &[u8]) -> Option<(u16, u64)> {
    let mut value = 0u64;
    for &byte in tag {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            _ => return None,
        };
        value = value << 4 | u64::from(digit);
    }
    Some(((value >> 48) as u16, value & 0xffff_ffff_ffff))
}

/// One message in flight: slot `seq % W` of its publisher.
struct Slot {
    /// Subscribers that have received it so far.
    receipts: Cell<usize>,
    /// When it was due to be sent.
    sent: Cell<Instant>,
}

/// What the subscribers tell a publisher.
struct PublisherState {
    slots: Vec<Slot>,
    /// Messages every subscriber has received: messages complete in order,
    /// since every subscriber receives a publisher's messages in order.
    completed: Cell<u64>,
    /// Woken when one completes.
    wake: tokio::sync::Notify,
}

/// Run-wide state of the broadcast mode, shared by the tasks on this one
/// thread.
struct Hub {
    subscribers: usize,
    publishers: Vec<PublisherState>,
    /// Subscribers upgraded, and those that have received the probe.
    upgraded: Cell<usize>,
    joined: Cell<usize>,
    /// Receipts now are counted.
    counting: Cell<bool>,
    /// No new messages are published once set.
    stop: Cell<bool>,
    /// Receipts (message × subscriber) in the counted window, and in all.
    deliveries: Cell<u64>,
    deliveries_total: Cell<u64>,
    /// Messages sent in the window and in all; messages that reached their
    /// last subscriber in the window.
    published: Cell<u64>,
    published_total: Cell<u64>,
    completed: Cell<u64>,
    /// Publish-to-last-subscriber latency of the messages completed in the
    /// window.
    histogram: RefCell<Histogram<u64>>,
    /// Publisher tasks that have ended.
    publishers_done: Cell<usize>,
    /// Every task's error, as it happens.
    errors: RefCell<Vec<String>>,
    /// The subscribers' read buffer, one for all: a task holds it only
    /// between two awaits.
    read_buf: RefCell<Vec<u8>>,
}

impl Hub {
    fn new(args: &Args) -> Self {
        let now = Instant::now();
        let publisher = || PublisherState {
            slots: (0..args.in_flight)
                .map(|_| Slot {
                    receipts: Cell::new(0),
                    sent: Cell::new(now),
                })
                .collect(),
            completed: Cell::new(0),
            wake: tokio::sync::Notify::new(),
        };
        Hub {
            subscribers: args.subscribers,
            publishers: (0..args.publishers).map(|_| publisher()).collect(),
            upgraded: Cell::new(0),
            joined: Cell::new(0),
            counting: Cell::new(false),
            stop: Cell::new(false),
            deliveries: Cell::new(0),
            deliveries_total: Cell::new(0),
            published: Cell::new(0),
            published_total: Cell::new(0),
            completed: Cell::new(0),
            // 1 ns to 100 s at three significant digits.
            histogram: RefCell::new(
                Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds"),
            ),
            publishers_done: Cell::new(0),
            errors: RefCell::new(Vec::new()),
            read_buf: RefCell::new(vec![0; 256 * 1024]),
        }
    }

    /// A subscriber received `publisher`'s message `seq` (after checking it
    /// is the next one from that publisher). The last receipt completes
    /// the message and lets the publisher send one more.
    fn receipt(&self, publisher: usize, seq: u64) -> Result<(), String> {
        let counting = self.counting.get();
        self.deliveries_total.set(self.deliveries_total.get() + 1);
        if counting {
            self.deliveries.set(self.deliveries.get() + 1);
        }
        let state = &self.publishers[publisher];
        let slot = &state.slots[(seq % state.slots.len() as u64) as usize];
        let receipts = slot.receipts.get() + 1;
        if receipts < self.subscribers {
            slot.receipts.set(receipts);
            return Ok(());
        }
        if seq != state.completed.get() {
            return Err(format!(
                "publisher {publisher}'s message {seq} reached every subscriber before \
                 message {}",
                state.completed.get()
            ));
        }
        slot.receipts.set(0);
        state.completed.set(seq + 1);
        if counting {
            self.completed.set(self.completed.get() + 1);
            let nanos = u64::try_from(slot.sent.get().elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.histogram.borrow_mut().saturating_record(nanos.max(1));
        }
        state.wake.notify_one();
        Ok(())
    }

    fn fail(&self, error: String) {
        self.errors.borrow_mut().push(error);
    }

    fn failed(&self) -> bool {
        !self.errors.borrow().is_empty()
    }
}

/// A subscriber's view of the stream: its frame reader (which keeps each
/// message's tag and compares the rest) and the next sequence number it
/// expects from each publisher.
struct Subscription<'a> {
    reader: FrameReader<'a>,
    next: Vec<u64>,
    joined: bool,
}

impl Subscription<'_> {
    /// Consumes `data`: checks every message it completes and counts it.
    fn take(&mut self, data: &[u8], hub: &Hub, control: &mut Vec<u8>) -> Result<(), String> {
        let messages = self.reader.feed(data, control)?;
        let tags = messages * TAG_LEN;
        for tag in self.reader.tags[..tags].chunks_exact(TAG_LEN) {
            let Some((publisher, seq)) = parse_tag(tag) else {
                return Err(format!(
                    "mismatch: corrupt tag {:?}",
                    String::from_utf8_lossy(tag)
                ));
            };
            if publisher == PROBE {
                if !self.joined {
                    self.joined = true;
                    hub.joined.set(hub.joined.get() + 1);
                }
                continue;
            }
            let p = usize::from(publisher);
            let Some(next) = self.next.get_mut(p) else {
                return Err(format!(
                    "a message from publisher {p} of {}",
                    self.next.len()
                ));
            };
            if seq != *next {
                return Err(if seq < *next {
                    format!("publisher {p}'s message {seq} again or out of order (after {next})")
                } else {
                    format!("publisher {p}'s messages {next} to {} missing", seq - 1)
                });
            }
            *next += 1;
            hub.receipt(p, seq)?;
        }
        self.reader.tags.drain(..tags);
        Ok(())
    }
}

async fn run_broadcast(args: &Args) -> Report {
    let broadcast = Rc::new(Broadcast::new(args.size, args.text));
    let hub = Rc::new(Hub::new(args));
    let (closing, _) = tokio::sync::watch::channel(false);
    let gate = Rc::new(tokio::sync::Semaphore::new(OPEN_CONCURRENCY));
    let mut tasks = Vec::with_capacity(args.subscribers + args.publishers);

    // Subscribers first, all upgraded before any publisher connects.
    for id in 0..args.subscribers {
        let (args, broadcast, hub, gate) =
            (args.clone(), broadcast.clone(), hub.clone(), gate.clone());
        let closing = closing.subscribe();
        tasks.push(tokio::task::spawn_local(async move {
            let result = subscriber(id, &args, &broadcast, &hub, &gate, closing).await;
            if let Err(error) = result {
                hub.fail(error);
            }
        }));
    }
    let all = || hub.upgraded.get() == args.subscribers;
    let opened = watch_run(&hub, Some(Instant::now() + HANDSHAKE_TIMEOUT * 3), all).await;
    if opened.is_ok() && !all() {
        hub.fail(format!(
            "only {} of {} subscribers were upgraded in time",
            hub.upgraded.get(),
            args.subscribers
        ));
    }
    let mut publishers = Vec::with_capacity(args.publishers);
    for p in 0..args.publishers {
        if hub.failed() {
            break;
        }
        match handshake(&args.addr, "/pub", (args.subscribers + p) as u64).await {
            Ok(upgraded) => publishers.push(upgraded),
            Err(error) => hub.fail(format!("publisher {p}: {error}")),
        }
    }

    // The probe, until every subscriber is in the server's room.
    let probe_deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut probe = Vec::new();
    broadcast.push_frame(&mut probe, PROBE, 0);
    while !hub.failed() && hub.joined.get() < args.subscribers {
        if Instant::now() >= probe_deadline {
            hub.fail(format!(
                "only {} of {} subscribers received the probe in {HANDSHAKE_TIMEOUT:?}",
                hub.joined.get(),
                args.subscribers
            ));
            break;
        }
        if let Some((tcp, _)) = publishers.first_mut()
            && let Err(error) = tcp.write_all(&probe).await
        {
            hub.fail(format!("publisher 0: probe: {error}"));
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    if !hub.failed() {
        eprintln!(
            "loadgen: {} subscribers and {} publishers open",
            args.subscribers, args.publishers
        );
    }
    for (p, (tcp, leftover)) in publishers.into_iter().enumerate() {
        let (args, broadcast, hub) = (args.clone(), broadcast.clone(), hub.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let result = publisher(p, tcp, leftover, &args, &broadcast, &hub).await;
            if let Err(error) = result {
                hub.fail(error);
            }
            hub.publishers_done.set(hub.publishers_done.get() + 1);
        }));
    }

    let mut window = Duration::ZERO;
    let mut cpu = WindowCpu::default();
    let mut strace = None;
    let run = async {
        if hub.failed() {
            return Err(String::new());
        }
        watch_run(&hub, Some(Instant::now() + args.warmup), || false).await?;
        if let (Some(file), Some(pid)) = (&args.strace, args.server_pid) {
            // Counted from the moment strace says it is attached to the
            // moment it is told to detach: the same window as the deliveries.
            strace = Some(Strace::attach(pid, file).await?);
        }
        cpu = WindowCpu::start(args.server_pid);
        let start = Instant::now();
        hub.counting.set(true);
        let counted = watch_run(&hub, Some(start + args.duration), || false).await;
        // No await between these reads and the flags: the window is exact.
        cpu.end(args.server_pid);
        if let Some(strace) = &mut strace {
            strace.detach();
        }
        window = start.elapsed();
        hub.counting.set(false);
        hub.stop.set(true);
        counted?;
        // What is in flight reaches every subscriber; then every publisher
        // has closed its socket.
        let drained = || hub.publishers_done.get() == args.publishers;
        watch_run(&hub, None, drained).await
    };
    if let Err(error) = run.await
        && !error.is_empty()
    {
        hub.fail(error);
    }
    let deliveries = hub.deliveries.get();

    if hub.failed() {
        for task in &tasks {
            task.abort();
        }
    } else {
        // Close the subscribers; each is bounded by its close timeout.
        let _ = closing.send(true);
        let deadline = CLOSE_TIMEOUT + Duration::from_secs(5);
        for task in tasks {
            if tokio::time::timeout(deadline, task).await.is_err() {
                hub.fail("a subscriber did not finish in time".into());
            }
        }
    }
    let strace_file = match strace {
        Some(strace) => match strace.finish().await {
            Ok(()) => args.strace.clone(),
            Err(error) => {
                hub.fail(error);
                None
            }
        },
        None => None,
    };

    let errors = std::mem::take(&mut *hub.errors.borrow_mut());
    let secs = window.as_secs_f64();
    let histogram = hub.histogram.borrow();
    let quantile_us = |q: f64| {
        if histogram.is_empty() {
            0.0
        } else {
            histogram.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let (p50, p99, max) = (
        quantile_us(0.5),
        quantile_us(0.99),
        histogram.max() as f64 / 1000.0,
    );
    let per_delivery = cpu.per_unit_us(deliveries, secs);
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let deliveries_per_s = per_s(deliveries);
    let published = hub.published.get();
    let mut json = String::from("{");
    let _ = write!(
        json,
        "\"mode\":\"broadcast\",\"label\":{},\"subscribers\":{},\"publishers\":{},\
         \"in_flight\":{},\"size\":{},\"text\":{},\"duration\":{secs:.3},\
         \"deliveries\":{deliveries},\"deliveries_total\":{},\
         \"deliveries_per_s\":{deliveries_per_s:.1},\"published\":{published},\
         \"published_total\":{},\"published_per_s\":{:.1},\"completed\":{},\
         \"p50_us\":{p50:.1},\"p99_us\":{p99:.1},\"max_us\":{max:.1},\"errors\":{},\
         \"server_cpu_us_per_delivery\":{},\"server_user_us_per_delivery\":{},\
         \"server_sys_us_per_delivery\":{},\"server_cpu_ticks\":{},\"clk_tck\":{},\
         \"client_cpu_us_per_delivery\":{},\"other_cpu_pct\":{},\"steal_pct\":{},\
         \"strace_file\":{}",
        json_string(&args.label),
        args.subscribers,
        args.publishers,
        args.in_flight,
        args.size,
        args.text,
        hub.deliveries_total.get(),
        hub.published_total.get(),
        per_s(published),
        hub.completed.get(),
        errors.len(),
        json_opt(per_delivery.server, 3),
        json_opt(per_delivery.server_user, 3),
        json_opt(per_delivery.server_sys, 3),
        cpu.server_ticks().map_or("null".into(), |t| t.to_string()),
        cpu.clk_tck,
        json_opt(per_delivery.client, 3),
        json_opt(per_delivery.other_pct, 1),
        json_opt(per_delivery.steal_pct, 1),
        strace_file.as_deref().map_or("null".into(), json_string),
    );
    json.push('}');
    let kind = if args.text { "text" } else { "binary" };
    let mut human = format!(
        "broadcast {}{} subscribers x {} publishers W{}, {} B {kind}: {deliveries} deliveries \
         in {secs:.2} s = {deliveries_per_s:.0}/s ({published} messages published), \
         publish to last subscriber p50 {p50:.0} us, p99 {p99:.0} us",
        label_prefix(&args.label),
        args.subscribers,
        args.publishers,
        args.in_flight,
        args.size,
    );
    if let Some(cpu) = per_delivery.server {
        let _ = write!(human, ", server {cpu:.3} us CPU/delivery");
        if let (Some(user), Some(sys)) = (per_delivery.server_user, per_delivery.server_sys) {
            let _ = write!(human, " ({user:.3} user + {sys:.3} kernel)");
        }
    }
    if let Some(other) = per_delivery.other_pct.filter(|&o| o >= 5.0) {
        let _ = write!(human, ", other load {other:.0}% of a CPU");
    }
    let _ = write!(human, ", {} errors", errors.len());
    drop(histogram);
    Report {
        json,
        human,
        errors,
    }
}

/// Waits until `done()` or `until`, whichever is first, while watching the
/// run: an error from any task ends it at once (`Err("")`: the error is in
/// the hub), and so does a stall, no delivery for [`STALL_TIMEOUT`].
async fn watch_run(
    hub: &Hub,
    until: Option<Instant>,
    done: impl Fn() -> bool,
) -> Result<(), String> {
    // Handshakes and probes are progress too, before deliveries start.
    let progress = || hub.deliveries_total.get() + (hub.upgraded.get() + hub.joined.get()) as u64;
    let (mut last, mut last_change) = (progress(), Instant::now());
    loop {
        if hub.failed() {
            return Err(String::new());
        }
        if done() {
            return Ok(());
        }
        let now = Instant::now();
        if until.is_some_and(|until| now >= until) {
            return Ok(());
        }
        if progress() != last {
            (last, last_change) = (progress(), now);
        } else if now - last_change >= STALL_TIMEOUT {
            return Err(format!(
                "stalled: no delivery for {STALL_TIMEOUT:?} ({} in all so far)",
                hub.deliveries_total.get()
            ));
        }
        let step = until.map_or(WATCH_INTERVAL, |until| (until - now).min(WATCH_INTERVAL));
        tokio::time::sleep(step).await;
    }
}

/// One subscriber: upgrade on `/sub`, then check and count every message
/// until told to close, then close cleanly.
async fn subscriber(
    id: usize,
    args: &Args,
    broadcast: &Broadcast,
    hub: &Hub,
    gate: &tokio::sync::Semaphore,
    mut closing: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let fail = |what: String| format!("subscriber {id}: {what}");
    let upgraded = {
        let _permit = gate.acquire().await.map_err(|e| fail(e.to_string()))?;
        handshake(&args.addr, "/sub", id as u64).await
    };
    let (mut tcp, leftover) = upgraded.map_err(fail)?;
    hub.upgraded.set(hub.upgraded.get() + 1);
    let mut reader = FrameReader::new(&broadcast.expected, broadcast.text);
    reader.tag_len = TAG_LEN;
    let mut subscription = Subscription {
        reader,
        next: vec![0; args.publishers],
        joined: false,
    };
    let mut control = Vec::new();
    subscription
        .take(&leftover, hub, &mut control)
        .map_err(|e| fail(format!("{e} (in leftover)")))?;
    loop {
        if !control.is_empty() {
            tcp.write_all(&control)
                .await
                .map_err(|e| fail(format!("write: {e}")))?;
            control.clear();
        }
        tokio::select! {
            biased;
            _ = closing.changed() => break,
            ready = tcp.readable() => ready.map_err(|e| fail(e.to_string()))?,
        }
        let mut buf = hub.read_buf.borrow_mut();
        match tcp.try_read(&mut buf) {
            Ok(0) => return Err(fail("server closed the connection".into())),
            Ok(n) => subscription
                .take(&buf[..n], hub, &mut control)
                .map_err(fail)?,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(fail(format!("read: {e}"))),
        }
    }
    // Nothing is in flight any more: anything but the close is an error.
    let mut reader = FrameReader::new(&[], broadcast.text);
    close(tcp, &mut reader)
        .await
        .map_err(|e| fail(format!("close: {e}")))
}

/// One publisher: keep `--in-flight` messages in flight until told to
/// stop, wait for the last to reach every subscriber, close cleanly. The
/// server sends a publisher nothing but control frames.
async fn publisher(
    index: usize,
    mut tcp: TcpStream,
    leftover: Vec<u8>,
    args: &Args,
    broadcast: &Broadcast,
    hub: &Hub,
) -> Result<(), String> {
    let fail = |what: String| format!("publisher {index}: {what}");
    let state = &hub.publishers[index];
    let in_flight = args.in_flight as u64;
    let mut reader = FrameReader::new(&[], broadcast.text);
    let mut control = Vec::new();
    let mut input = leftover;
    let mut out = Vec::with_capacity(broadcast.frame.len() * args.in_flight);
    let mut next = 0u64;
    loop {
        if reader.feed(&input, &mut control).map_err(fail)? > 0 {
            return Err(fail("the server sent a publisher a message".into()));
        }
        let completed = state.completed.get();
        if hub.stop.get() {
            if completed == next {
                break;
            }
        } else if next < completed + in_flight {
            let now = Instant::now();
            let counting = hub.counting.get();
            while next < completed + in_flight {
                broadcast.push_frame(&mut out, index as u16, next);
                state.slots[(next % in_flight) as usize].sent.set(now);
                next += 1;
                hub.published_total.set(hub.published_total.get() + 1);
                if counting {
                    hub.published.set(hub.published.get() + 1);
                }
            }
        }
        out.append(&mut control);
        if !out.is_empty() {
            tcp.write_all(&out)
                .await
                .map_err(|e| fail(format!("write: {e}")))?;
            out.clear();
        }
        input.clear();
        tokio::select! {
            () = state.wake.notified() => {}
            ready = tcp.readable() => {
                ready.map_err(|e| fail(e.to_string()))?;
                input.resize(4096, 0);
                match tcp.try_read(&mut input) {
                    Ok(0) => return Err(fail("server closed the connection".into())),
                    Ok(n) => input.truncate(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => input.clear(),
                    Err(e) => return Err(fail(format!("read: {e}"))),
                }
            }
        }
    }
    close(tcp, &mut reader)
        .await
        .map_err(|e| fail(format!("close: {e}")))
}

/// The server's CPU time (and this process's, and the machine's) at the
/// start and end of the counted window.
#[derive(Default)]
struct WindowCpu {
    clk_tck: u64,
    server: [Option<(u64, u64)>; 2],
    client: [Option<u64>; 2],
    machine: [Option<MachineTicks>; 2],
}

/// Per counted unit (a delivery), over a window.
struct PerUnit {
    server: Option<f64>,
    server_user: Option<f64>,
    server_sys: Option<f64>,
    client: Option<f64>,
    other_pct: Option<f64>,
    steal_pct: Option<f64>,
}

impl WindowCpu {
    fn start(server_pid: Option<u32>) -> Self {
        WindowCpu {
            clk_tck: clock_ticks_per_second(),
            server: [server_pid.and_then(cpu_split), None],
            client: [cpu_ticks_self(), None],
            machine: [machine_ticks(), None],
        }
    }

    fn end(&mut self, server_pid: Option<u32>) {
        self.server[1] = server_pid.and_then(cpu_split);
        self.client[1] = cpu_ticks_self();
        self.machine[1] = machine_ticks();
    }

    fn server_ticks(&self) -> Option<u64> {
        let [before, after] = self.server;
        let ((u0, s0), (u1, s1)) = before.zip(after)?;
        Some((u1 + s1).saturating_sub(u0 + s0))
    }

    /// CPU µs per unit of `units` counted over `secs`, and the rest of the
    /// machine's load in % of one CPU, as the echo mode computes them.
    fn per_unit_us(&self, units: u64, secs: f64) -> PerUnit {
        let clk_tck = self.clk_tck.max(1) as f64;
        let per_unit = |ticks: Option<u64>| {
            ticks
                .filter(|_| units > 0)
                .map(|t| t as f64 * 1e6 / clk_tck / units as f64)
        };
        let [before, after] = self.server;
        let server = before.zip(after);
        let user = server.map(|((u0, _), (u1, _))| u1.saturating_sub(u0));
        let sys = server.map(|((_, s0), (_, s1))| s1.saturating_sub(s0));
        let client = self.client[0]
            .zip(self.client[1])
            .map(|(b, a)| a.saturating_sub(b));
        let (other_pct, steal_pct) = match (self.machine[0], self.machine[1]) {
            (Some(before), Some(after)) if secs > 0.0 => {
                let one_cpu = secs * clk_tck / 100.0;
                let ours = self.server_ticks().unwrap_or(0) + client.unwrap_or(0);
                let other = after.busy.saturating_sub(before.busy).saturating_sub(ours);
                (
                    Some(other as f64 / one_cpu),
                    Some(after.steal.saturating_sub(before.steal) as f64 / one_cpu),
                )
            }
            _ => (None, None),
        };
        PerUnit {
            server: per_unit(self.server_ticks()),
            server_user: per_unit(user),
            server_sys: per_unit(sys),
            client: per_unit(client),
            other_pct,
            steal_pct,
        }
    }
}

/// `strace -c -f` attached to the server for the counted window: only its
/// sends (write, writev, sendto, sendmsg), summed in a file.
struct Strace {
    child: std::process::Child,
    detached: bool,
}

impl Strace {
    /// Starts strace and waits until it says it is attached.
    async fn attach(pid: u32, file: &str) -> Result<Self, String> {
        let mut child = std::process::Command::new("strace")
            .args([
                "-f",
                "-c",
                "-e",
                "trace=write,writev,sendto,sendmsg",
                "-o",
                file,
            ])
            .args(["-p", &pid.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start strace: {e}"))?;
        let Some(stderr) = child.stderr.take() else {
            return Err("strace has no stderr".into());
        };
        let (attached, said) = tokio::sync::oneshot::channel();
        // strace says "Process PID attached" once it is; the rest of what it
        // says is read to the end, so that it never writes into a closed pipe.
        std::thread::spawn(move || {
            let mut attached = Some(attached);
            for line in io::BufRead::lines(io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if line.contains("attached")
                    && let Some(attached) = attached.take()
                {
                    let _ = attached.send(());
                }
            }
        });
        let mut strace = Strace {
            child,
            detached: false,
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, said).await {
            Ok(Ok(())) => Ok(strace),
            _ => {
                strace.detach();
                Err("strace did not attach to the server".into())
            }
        }
    }

    /// Asks strace to detach and write its summary (SIGINT), once.
    fn detach(&mut self) {
        if !std::mem::replace(&mut self.detached, true) {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
        }
    }

    /// Detaches if that is not done yet and waits for strace to exit.
    async fn finish(mut self) -> Result<(), String> {
        self.detach();
        let waited = tokio::task::spawn_blocking(move || self.child.wait());
        match tokio::time::timeout(CLOSE_TIMEOUT, waited).await {
            Ok(Ok(Ok(_))) => Ok(()),
            _ => Err("strace did not finish".into()),
        }
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

    /// A broadcast run's arguments, as the command line gives them.
    fn broadcast_args(extra: &[&str]) -> Args {
        let line = ["--mode", "broadcast"].iter().chain(extra);
        Args::parse(line.map(|s| s.to_string())).unwrap()
    }

    /// The server frame of `publisher`'s message `seq`.
    fn delivery(broadcast: &Broadcast, publisher: u16, seq: u64) -> Vec<u8> {
        let mut payload = broadcast.expected.clone();
        payload[..TAG_LEN].copy_from_slice(&tag(publisher, seq));
        server_frame(if broadcast.text { 0x81 } else { 0x82 }, &payload)
    }

    fn subscription<'a>(broadcast: &'a Broadcast, publishers: usize) -> Subscription<'a> {
        let mut reader = FrameReader::new(&broadcast.expected, broadcast.text);
        reader.tag_len = TAG_LEN;
        Subscription {
            reader,
            next: vec![0; publishers],
            joined: false,
        }
    }

    #[test]
    fn tags_round_trip_and_junk_is_no_tag() {
        for (publisher, seq) in [(0, 0), (9, 1), (PROBE, 0), (1234, 0xffff_ffff_ffff)] {
            let tag = tag(publisher, seq);
            assert!(tag.is_ascii());
            assert_eq!(parse_tag(&tag), Some((publisher, seq)));
        }
        assert_eq!(parse_tag(b"000000000000000g"), None);
        assert_eq!(parse_tag(b"00000000000000AB"), None);
    }

    #[test]
    fn broadcast_frames_unmask_to_their_tag_and_the_filler() {
        let broadcast = Broadcast::new(64, true);
        let mut frames = Vec::new();
        broadcast.push_frame(&mut frames, 3, 42);
        broadcast.push_frame(&mut frames, 3, 43);
        assert_eq!(frames.len(), 2 * broadcast.frame.len());
        let payload: Vec<u8> = frames[broadcast.payload_at..broadcast.frame.len()]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i & 3])
            .collect();
        assert_eq!(&payload[..TAG_LEN], &tag(3, 42));
        assert_eq!(&payload[TAG_LEN..], &broadcast.expected[TAG_LEN..]);
        assert!(std::str::from_utf8(&payload).is_ok());
    }

    #[test]
    fn every_subscriber_completes_a_message_once_and_in_order() {
        let args = broadcast_args(&[
            "--subscribers",
            "2",
            "--publishers",
            "2",
            "--in-flight",
            "2",
        ]);
        let hub = Hub::new(&args);
        let broadcast = Broadcast::new(100, false);
        let (mut a, mut b) = (subscription(&broadcast, 2), subscription(&broadcast, 2));
        let mut control = Vec::new();
        let mut stream = delivery(&broadcast, PROBE, 0);
        for seq in 0..2 {
            stream.extend(delivery(&broadcast, 0, seq));
            stream.extend(delivery(&broadcast, 1, seq));
        }
        for piece in stream.chunks(7) {
            a.take(piece, &hub, &mut control).unwrap();
        }
        assert_eq!(
            (hub.joined.get(), hub.publishers[0].completed.get()),
            (1, 0)
        );
        b.take(&stream, &hub, &mut control).unwrap();
        assert_eq!(hub.joined.get(), 2);
        assert_eq!(hub.deliveries_total.get(), 8);
        for publisher in &hub.publishers {
            assert_eq!(publisher.completed.get(), 2);
            assert!(publisher.slots.iter().all(|slot| slot.receipts.get() == 0));
        }
        assert!(a.reader.tags.is_empty() && b.reader.tags.is_empty());
    }

    #[test]
    fn gaps_repeats_strangers_and_corruption_are_errors() {
        let args = broadcast_args(&["--subscribers", "3", "--publishers", "2"]);
        let broadcast = Broadcast::new(64, true);
        let mut corrupt_filler = delivery(&broadcast, 0, 0);
        *corrupt_filler.last_mut().unwrap() ^= 1;
        let mut corrupt_tag = delivery(&broadcast, 0, 0);
        corrupt_tag[2] = b'x';
        let mut repeat = delivery(&broadcast, 0, 0);
        repeat.extend(delivery(&broadcast, 0, 0));
        for (stream, what) in [
            (delivery(&broadcast, 0, 1), "messages 0 to 0 missing"),
            (repeat, "message 0 again"),
            (delivery(&broadcast, 2, 0), "publisher 2 of 2"),
            (corrupt_filler, "differs at byte 63"),
            (corrupt_tag, "corrupt tag"),
            (server_frame(0x82, &broadcast.expected), "echo is binary"),
        ] {
            let hub = Hub::new(&args);
            let mut subscription = subscription(&broadcast, 2);
            let error = subscription
                .take(&stream, &hub, &mut Vec::new())
                .unwrap_err();
            assert!(error.contains(what), "{what}: {error}");
        }
    }

    #[test]
    fn broadcast_arguments_are_checked() {
        let parse = |extra: &[&str]| {
            let line = ["--mode", "broadcast"].iter().chain(extra);
            Args::parse(line.map(|s| s.to_string()))
        };
        let args = parse(&[]).unwrap();
        assert_eq!(
            (args.subscribers, args.publishers, args.in_flight),
            (1000, 1, 1)
        );
        assert!(parse(&["--size", "15"]).is_err());
        assert!(parse(&["--publishers", "0"]).is_err());
        assert!(parse(&["--in-flight", "0"]).is_err());
        assert!(parse(&["--strace", "x.txt"]).is_err());
        assert!(Args::parse(["--strace", "x.txt"].iter().map(|s| s.to_string())).is_err());
    }

    #[test]
    fn proc_stat_fields_are_found_after_the_command_name() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 2 0";
        assert_eq!(stat_ticks(stat), Some((7, 3)));
    }
}

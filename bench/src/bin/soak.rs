//! `soak`: a bounded soak and scale tool for a WebSocket echo server that
//! serves Prometheus counters at `/metrics` (`examples/production.rs`).
//!
//! Like `loadgen` it does the HTTP/1.1 upgrade itself and writes masked
//! frames it encoded; unlike `loadgen` it is about many sockets at once and
//! about what the server has left behind afterwards, which it reads from
//! `/metrics` (`websocket_live_sockets`, `tokio_alive_tasks`,
//! `process_resident_memory_bytes`, `process_cpu_seconds_total`).
//!
//! Modes:
//!
//! - `waves`: scrape `/metrics` (the baseline), then wave after wave until
//!   `--duration` has passed (a wave that has started finishes). A wave
//!   opens N sockets (at most K handshakes in flight) and waits until all
//!   are open (then scrapes: the peak); then every socket sends M binary
//!   messages one at a time, each checked byte for byte against its echo,
//!   and closes: `--drop-percent` of them (socket index % 100 < P) reset
//!   the TCP connection with no Close, the rest do the close handshake
//!   (1000) and read to EOF. After the last wave it polls `/metrics` every
//!   200 ms for up to `--settle` seconds until no socket is live and the
//!   server's tokio tasks are back to the baseline.
//! - `idle`: open N sockets and hold them: each socket's task answers the
//!   server's pings (a Pong with the same payload) and nothing else. It
//!   reports how long opening took, the server's RSS per socket, its CPU
//!   during the hold and the pings answered, then closes every socket
//!   cleanly and waits (up to 10 s) for the server to count none live.
//!
//! `--sources` binds the client sockets to local IPv4 addresses, round
//! robin by socket index (one source address has about 28,000 ephemeral
//! ports; all of 127.0.0.0/8 is loopback on Linux).
//!
//! Every wait on the server is bounded: connect and handshake 10 s, an
//! echo 10 s, a close 5 s, a scrape 5 s.
//!
//! Output: one JSON object on stdout, one human line on stderr (`idle`
//! also says on stderr when its sockets are open); exit status 1 if
//! anything went wrong (an error, or the server not back to its baseline).
//!
//! ```text
//! soak waves --addr 127.0.0.1:5001 --sockets 20000 --duration 60 \
//!            --messages 10 --size 64 --sources 127.0.0.1,127.0.0.2
//! soak idle --addr 127.0.0.1:5001 --sockets 100000 --hold 60 \
//!           --sources 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

const USAGE: &str = "\
usage: soak waves --addr HOST:PORT [--path /ws] --sockets N --duration SECS
                  [--messages M] [--size BYTES] [--sources IP,IP,...]
                  [--concurrency K] [--drop-percent P] [--settle SECS]
       soak idle  --addr HOST:PORT [--path /ws] --sockets N --hold SECS
                  [--sources IP,IP,...] [--concurrency K] [--h2 CONNECTIONS]";

/// Connect and upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Send one message and read its whole echo.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);
/// Our Close, the server's, and the end of the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// One `GET /metrics`, read to its end.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Between scrapes while waiting for the server to settle.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// `idle`: from the last socket open to the "open" scrape.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// `idle`: how long to wait for no live sockets after closing.
const IDLE_DRAIN: Duration = Duration::from_secs(10);
/// Most bytes read at once into a socket's buffer (unless a frame needs
/// more); the buffer itself is freed whenever it is empty.
const READ_CHUNK: usize = 4096;
/// Largest message we accept from the server.
const MAX_MESSAGE: usize = 64 << 20;
/// Largest HTTP response head we accept.
const MAX_HEAD: usize = 16 * 1024;
/// The mask of every frame we send: fixed, not zero.
const MASK: [u8; 4] = [0x5a, 0xc3, 0x96, 0x3f];
/// Most errors printed to stderr.
const MAX_ERRORS_SHOWN: usize = 5;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Waves,
    Idle,
}

#[derive(Clone, Debug)]
struct Args {
    mode: Mode,
    addr: String,
    path: String,
    sockets: usize,
    sources: Vec<Ipv4Addr>,
    concurrency: usize,
    // waves
    duration: Duration,
    messages: usize,
    size: usize,
    drop_percent: usize,
    settle: Duration,
    // idle
    hold: Duration,
    /// `--h2 C`: the sockets are WebSocket streams (RFC 8441) over C h2c
    /// connections instead of one TCP connection each.
    h2: Option<usize>,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Self, String> {
        let mode = match it.next().as_deref() {
            Some("waves") => Mode::Waves,
            Some("idle") => Mode::Idle,
            Some("-h" | "--help") => return Err(String::new()),
            Some(other) => return Err(format!("the mode is waves or idle, not {other:?}")),
            None => return Err("no mode given".into()),
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
        let mut args = Args {
            mode,
            addr: String::new(),
            path: "/ws".into(),
            sockets: 0,
            sources: Vec::new(),
            concurrency: 500,
            duration: Duration::ZERO,
            messages: 10,
            size: 64,
            drop_percent: 10,
            settle: Duration::from_secs(10),
            hold: Duration::ZERO,
            h2: None,
        };
        let (mut addr, mut sockets, mut duration, mut hold) = (false, false, false, false);
        while let Some(flag) = it.next() {
            let flag = flag.as_str();
            let waves_only = matches!(
                flag,
                "--duration" | "--messages" | "--size" | "--drop-percent" | "--settle"
            );
            if waves_only && mode != Mode::Waves {
                return Err(format!("{flag} is an option of waves, not idle"));
            }
            if matches!(flag, "--hold" | "--h2") && mode != Mode::Idle {
                return Err(format!("{flag} is an option of idle, not waves"));
            }
            match flag {
                "--addr" => {
                    args.addr = value(&mut it, flag)?;
                    addr = true;
                }
                "--path" => args.path = value(&mut it, flag)?,
                "--sockets" => {
                    args.sockets = number(&value(&mut it, flag)?, flag)?;
                    sockets = true;
                }
                "--sources" => {
                    args.sources = value(&mut it, flag)?
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            s.parse()
                                .map_err(|_| format!("--sources: not an IPv4 address: {s:?}"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--concurrency" => args.concurrency = number(&value(&mut it, flag)?, flag)?,
                "--duration" => {
                    args.duration = seconds(&value(&mut it, flag)?, flag)?;
                    duration = true;
                }
                "--messages" => args.messages = number(&value(&mut it, flag)?, flag)?,
                "--size" => args.size = number(&value(&mut it, flag)?, flag)?,
                "--drop-percent" => args.drop_percent = number(&value(&mut it, flag)?, flag)?,
                "--settle" => args.settle = seconds(&value(&mut it, flag)?, flag)?,
                "--hold" => {
                    args.hold = seconds(&value(&mut it, flag)?, flag)?;
                    hold = true;
                }
                "--h2" => {
                    let connections: usize = number(&value(&mut it, flag)?, flag)?;
                    if connections == 0 {
                        return Err("--h2 takes a positive number of connections".into());
                    }
                    args.h2 = Some(connections);
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if !addr || !sockets {
            return Err("--addr and --sockets are required".into());
        }
        match mode {
            Mode::Waves if !duration => return Err("waves needs --duration".into()),
            Mode::Idle if !hold => return Err("idle needs --hold".into()),
            _ => {}
        }
        if args.sockets == 0 || args.concurrency == 0 {
            return Err("--sockets and --concurrency must be positive".into());
        }
        if mode == Mode::Waves && args.duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        if args.drop_percent > 100 {
            return Err("--drop-percent is at most 100".into());
        }
        if args.size > MAX_MESSAGE {
            return Err(format!("--size is at most {MAX_MESSAGE}"));
        }
        if !args.path.starts_with('/') {
            return Err("--path must start with /".into());
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
            eprintln!("soak: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Room for 100,000 sockets and then some.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("soak: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(async {
        let target = match Target::resolve(&args).await {
            Ok(target) => Arc::new(target),
            Err(error) => {
                let mut errors = Errors::default();
                errors.push(error);
                return Report::failed(args.mode, errors);
            }
        };
        match args.mode {
            Mode::Waves => run_waves(Arc::new(args), target).await,
            Mode::Idle => run_idle(&args, target).await,
        }
    });
    println!("{}", report.json);
    eprintln!("{}", report.human);
    for error in &report.errors.first {
        eprintln!("soak: error: {error}");
    }
    if report.errors.count > report.errors.first.len() as u64 {
        eprintln!(
            "soak: ... and {} more errors",
            report.errors.count - report.errors.first.len() as u64
        );
    }
    for problem in &report.problems {
        eprintln!("soak: failed: {problem}");
    }
    // Leave the sockets still open (after an error) to the kernel.
    runtime.shutdown_background();
    if report.errors.count == 0 && report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What a run prints.
struct Report {
    json: String,
    human: String,
    errors: Errors,
    /// The server did not get back to its baseline.
    problems: Vec<String>,
}

impl Report {
    /// A run that could not start.
    fn failed(mode: Mode, errors: Errors) -> Self {
        let mode = match mode {
            Mode::Waves => "waves",
            Mode::Idle => "idle",
        };
        Report {
            json: format!("{{\"mode\":\"{mode}\",\"errors\":{}}}", errors.count),
            human: format!("{mode}: could not start"),
            errors,
            problems: Vec::new(),
        }
    }
}

/// The number of errors and the first few.
#[derive(Default)]
struct Errors {
    count: u64,
    first: Vec<String>,
}

impl Errors {
    fn push(&mut self, error: String) {
        self.count += 1;
        if self.first.len() < MAX_ERRORS_SHOWN {
            self.first.push(error);
        }
    }
}

/// Where the sockets go and come from.
struct Target {
    addr: SocketAddr,
    /// `--addr` as given, for the Host header.
    host: String,
    path: String,
    sources: Vec<Ipv4Addr>,
}

impl Target {
    async fn resolve(args: &Args) -> Result<Self, String> {
        let mut addrs = tokio::net::lookup_host(&args.addr)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", args.addr))?;
        let addr = if args.sources.is_empty() {
            addrs.next()
        } else {
            addrs.find(SocketAddr::is_ipv4)
        };
        let addr = addr.ok_or_else(|| {
            format!(
                "{} has no {}address",
                args.addr,
                if args.sources.is_empty() { "" } else { "IPv4 " }
            )
        })?;
        Ok(Target {
            addr,
            host: args.addr.clone(),
            path: args.path.clone(),
            sources: args.sources.clone(),
        })
    }

    /// The source address of socket `index`, round robin.
    fn source(&self, index: usize) -> Option<Ipv4Addr> {
        (!self.sources.is_empty()).then(|| self.sources[index % self.sources.len()])
    }

    async fn connect(&self, index: usize) -> io::Result<TcpStream> {
        match self.source(index) {
            None => TcpStream::connect(self.addr).await,
            Some(ip) => {
                let socket = TcpSocket::new_v4()?;
                socket
                    .bind(SocketAddr::new(ip.into(), 0))
                    .map_err(|e| io::Error::new(e.kind(), format!("bind {ip}: {e}")))?;
                socket.connect(self.addr).await
            }
        }
    }
}

// ---------------------------------------------------------------------------
// waves

/// How a socket of a wave ended.
enum Ending {
    Clean,
    Dropped,
}

/// The server's figures over the waves.
#[derive(Default)]
struct Peak {
    live: Option<f64>,
    tasks: Option<f64>,
    rss: Option<f64>,
}

impl Peak {
    fn update(&mut self, metrics: &Metrics) {
        self.live = max_opt(self.live, metrics.live());
        self.tasks = max_opt(self.tasks, metrics.tasks());
        self.rss = max_opt(self.rss, metrics.rss_mib());
    }
}

async fn run_waves(args: Arc<Args>, target: Arc<Target>) -> Report {
    let mut errors = Errors::default();
    let Some(baseline) = scrape_into(&target, "baseline", &mut errors).await else {
        return Report::failed(Mode::Waves, errors);
    };
    let echoed = Arc::new(AtomicU64::new(0));
    let pings = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let (mut waves, mut opened, mut clean, mut drops) = (0u64, 0u64, 0u64, 0u64);
    let mut peak = Peak::default();
    let start = Instant::now();
    let deadline = start + args.duration;
    while Instant::now() < deadline {
        let wave = waves;
        waves += 1;

        // Open them all, K handshakes at a time, and keep them open.
        let mut opening = Vec::with_capacity(args.sockets);
        for index in 0..args.sockets {
            let (target, gate) = (target.clone(), gate.clone());
            opening.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                open(&target, index, (wave << 32) | index as u64).await
            }));
        }
        let mut sockets = Vec::with_capacity(args.sockets);
        for (index, task) in opening.into_iter().enumerate() {
            match task.await {
                Ok(Ok(ws)) => sockets.push((index, ws)),
                Ok(Err(e)) => errors.push(format!("wave {wave} socket {index}: {e}")),
                Err(e) => errors.push(format!("wave {wave} socket {index}: task failed: {e}")),
            }
        }
        opened += sockets.len() as u64;
        if sockets.is_empty() {
            // Nothing to measure, and another wave would fail the same way.
            errors.push(format!("wave {wave}: no socket opened; no more waves"));
            break;
        }
        if let Some(metrics) = scrape_into(&target, "peak", &mut errors).await {
            peak.update(&metrics);
        }

        // Then the traffic and the close, every socket at once.
        let running: Vec<_> = sockets
            .into_iter()
            .map(|(index, ws)| {
                let (args, echoed, pings) = (args.clone(), echoed.clone(), pings.clone());
                let task = tokio::spawn(async move {
                    wave_socket(ws, wave, index, &args, &echoed, &pings).await
                });
                (index, task)
            })
            .collect();
        for (index, task) in running {
            match task.await {
                Ok(Ok(Ending::Clean)) => clean += 1,
                Ok(Ok(Ending::Dropped)) => drops += 1,
                Ok(Err(e)) => errors.push(format!("wave {wave} socket {index}: {e}")),
                Err(e) => errors.push(format!("wave {wave} socket {index}: task failed: {e}")),
            }
        }
    }
    let elapsed = start.elapsed();

    // Wait for the server to let go of everything.
    let baseline = Some(baseline);
    let base_tasks = baseline.as_ref().and_then(Metrics::tasks);
    let settle_start = Instant::now();
    let settle_deadline = settle_start + args.settle;
    let mut last = None;
    let mut settled = false;
    loop {
        if let Some(metrics) = scrape_into(&target, "settle", &mut errors).await {
            settled = metrics.live() == Some(0.0)
                && matches!((metrics.tasks(), base_tasks), (Some(t), Some(b)) if t <= b);
            last = Some(metrics);
        }
        if settled || Instant::now() >= settle_deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let settle_secs = settle_start.elapsed().as_secs_f64();

    let get = |m: &Option<Metrics>, f: fn(&Metrics) -> Option<f64>| m.as_ref().and_then(f);
    let (base_live, final_live) = (get(&baseline, Metrics::live), get(&last, Metrics::live));
    let final_tasks = get(&last, Metrics::tasks);
    let (base_rss, final_rss) = (
        get(&baseline, Metrics::rss_mib),
        get(&last, Metrics::rss_mib),
    );
    let mut problems = Vec::new();
    if final_live != Some(0.0) {
        problems.push(format!(
            "websocket_live_sockets is {} after {settle_secs:.1} s, not 0",
            fmt_opt(final_live, 0)
        ));
    }
    if !matches!((final_tasks, base_tasks), (Some(t), Some(b)) if t <= b) {
        problems.push(format!(
            "tokio_alive_tasks is {} after {settle_secs:.1} s, not at most the baseline {}",
            fmt_opt(final_tasks, 0),
            fmt_opt(base_tasks, 0)
        ));
    }
    let cpu = get(&baseline, Metrics::cpu)
        .zip(get(&last, Metrics::cpu))
        .map(|(before, after)| after - before);
    let msgs = echoed.load(Ordering::Relaxed);
    let per = |count: u64| cpu.filter(|_| count > 0).map(|s| s * 1e6 / count as f64);
    let (us_per_msg, us_per_socket) = (per(msgs), per(opened));

    let mut json = String::from("{");
    let _ = write!(
        json,
        "\"mode\":\"waves\",\"sockets_per_wave\":{},\"messages_per_socket\":{},\"size\":{},\
         \"drop_percent\":{},\"concurrency\":{},\"sources\":{},\"waves\":{waves},\
         \"sockets_opened\":{opened},\"messages_echoed\":{msgs},\"clean_closes\":{clean},\
         \"drops\":{drops},\"pings_answered\":{},\"errors\":{},\"elapsed_secs\":{:.3},\
         \"settled\":{settled},\"settle_secs\":{settle_secs:.3},\
         \"live_sockets\":{{\"baseline\":{},\"peak\":{},\"final\":{}}},\
         \"tokio_alive_tasks\":{{\"baseline\":{},\"peak\":{},\"final\":{}}},\
         \"rss_mib\":{{\"baseline\":{},\"peak\":{},\"final\":{}}},\
         \"server_cpu_secs\":{},\"server_cpu_us_per_msg\":{},\"server_cpu_us_per_socket\":{}",
        args.sockets,
        args.messages,
        args.size,
        args.drop_percent,
        args.concurrency,
        args.sources.len(),
        pings.load(Ordering::Relaxed),
        errors.count,
        elapsed.as_secs_f64(),
        json_opt(base_live, 0),
        json_opt(peak.live, 0),
        json_opt(final_live, 0),
        json_opt(base_tasks, 0),
        json_opt(peak.tasks, 0),
        json_opt(final_tasks, 0),
        json_opt(base_rss, 2),
        json_opt(peak.rss, 2),
        json_opt(final_rss, 2),
        json_opt(cpu, 2),
        json_opt(us_per_msg, 2),
        json_opt(us_per_socket, 2),
    );
    json.push('}');
    let human = format!(
        "waves: {waves} x {} sockets x {} msgs of {} B in {:.2} s: {opened} opened, \
         {msgs} echoed, {clean} clean closes, {drops} drops, {} errors; \
         live {}/{}/{}, tasks {}/{}/{}, RSS {}/{}/{} MiB (baseline/peak/final, {} in {settle_secs:.1} s); \
         server CPU {} s = {} us/msg, {} us/socket",
        args.sockets,
        args.messages,
        args.size,
        elapsed.as_secs_f64(),
        errors.count,
        fmt_opt(base_live, 0),
        fmt_opt(peak.live, 0),
        fmt_opt(final_live, 0),
        fmt_opt(base_tasks, 0),
        fmt_opt(peak.tasks, 0),
        fmt_opt(final_tasks, 0),
        fmt_opt(base_rss, 1),
        fmt_opt(peak.rss, 1),
        fmt_opt(final_rss, 1),
        if settled { "settled" } else { "NOT settled" },
        fmt_opt(cpu, 2),
        fmt_opt(us_per_msg, 1),
        fmt_opt(us_per_socket, 1),
    );
    Report {
        json,
        human,
        errors,
        problems,
    }
}

/// One socket of a wave, already open: M echoes, then a drop or a close.
async fn wave_socket(
    mut ws: Ws,
    wave: u64,
    index: usize,
    args: &Args,
    echoed: &AtomicU64,
    pings: &AtomicU64,
) -> Result<Ending, String> {
    for message in 0..args.messages {
        let payload = payload(wave, index as u64, message as u64, args.size);
        let frame = client_frame(0x2, &payload);
        let round_trip = async {
            ws.tcp
                .write_all(&frame)
                .await
                .map_err(|e| format!("write: {e}"))?;
            match ws.next_message(pings).await? {
                Incoming::Data { text: true, .. } => Err("sent binary, the echo is text".into()),
                Incoming::Data { payload: echo, .. } => compare(&payload, &echo),
                Incoming::Close(code) => Err(format!("server sent close {code:?} unasked")),
            }
        };
        tokio::time::timeout(ECHO_TIMEOUT, round_trip)
            .await
            .map_err(|_| format!("message {message}: no echo within {ECHO_TIMEOUT:?}"))?
            .map_err(|e| format!("message {message}: {e}"))?;
        echoed.fetch_add(1, Ordering::Relaxed);
    }
    if index % 100 < args.drop_percent {
        // A reset: no Close, no FIN, and no TIME_WAIT on our port.
        let _ = ws.tcp.set_zero_linger();
        drop(ws);
        Ok(Ending::Dropped)
    } else {
        close(&mut ws).await.map_err(|e| format!("close: {e}"))?;
        Ok(Ending::Clean)
    }
}

fn compare(sent: &[u8], echo: &[u8]) -> Result<(), String> {
    if echo == sent {
        return Ok(());
    }
    match echo.iter().zip(sent).position(|(a, b)| a != b) {
        Some(at) => Err(format!(
            "mismatch: echo differs at byte {at} of {}",
            sent.len()
        )),
        None => Err(format!(
            "mismatch: echo has {} bytes, {} were sent",
            echo.len(),
            sent.len()
        )),
    }
}

/// `size` bytes that differ by wave, socket and message.
fn payload(wave: u64, socket: u64, message: u64, size: usize) -> Vec<u8> {
    let mut state = wave.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ socket.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ message.wrapping_mul(0x94d0_49bb_1331_11eb);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let word = splitmix64(&mut state).to_le_bytes();
        let take = (size - out.len()).min(word.len());
        out.extend_from_slice(&word[..take]);
    }
    out
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------
// idle

/// How an idle socket ended.
enum IdleEnd {
    NotOpened,
    Closed,
    ClosedByServer,
}

async fn run_idle(args: &Args, target: Arc<Target>) -> Report {
    let n = args.sockets;
    let mut errors = Errors::default();
    let Some(before) = scrape_into(&target, "before", &mut errors).await else {
        return Report::failed(Mode::Idle, errors);
    };
    let before = Some(before);

    let gate = Arc::new(Semaphore::new(args.concurrency));
    let pings = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, mut open_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let open_start = Instant::now();
    // Over HTTP/2, the connections first (each socket is a stream on one).
    let mut senders = Vec::new();
    for index in 0..args.h2.unwrap_or(0) {
        match h2::connect(&target, index).await {
            Ok(sender) => senders.push(sender),
            Err(e) => {
                errors.push(format!("h2 connection {index}: {e}"));
                return Report::failed(Mode::Idle, errors);
            }
        }
    }
    let tasks: Vec<_> = (0..n)
        .map(|index| {
            let (target, gate, pings) = (target.clone(), gate.clone(), pings.clone());
            let (open_tx, stop_rx) = (open_tx.clone(), stop_rx.clone());
            let sender = (!senders.is_empty()).then(|| senders[index % senders.len()].clone());
            tokio::spawn(async move {
                match sender {
                    Some(sender) => {
                        h2::idle_socket(index, sender, &target, &gate, open_tx, stop_rx, &pings)
                            .await
                    }
                    None => idle_socket(index, &target, &gate, open_tx, stop_rx, &pings).await,
                }
            })
        })
        .collect();
    drop(open_tx);
    let mut opened = 0usize;
    while let Some(result) = open_rx.recv().await {
        match result {
            Ok(()) => opened += 1,
            Err(e) => errors.push(e),
        }
    }
    let open_secs = open_start.elapsed().as_secs_f64();
    let opens_per_s = opened as f64 / open_secs.max(1e-9);
    eprintln!(
        "soak: {opened} of {n} sockets open in {open_secs:.2} s ({opens_per_s:.0}/s), \
         holding for {:.0} s",
        args.hold.as_secs_f64()
    );

    tokio::time::sleep(IDLE_SETTLE).await;
    let open = scrape_into(&target, "open", &mut errors).await;
    let hold_start = Instant::now();
    let pings_start = pings.load(Ordering::Relaxed);
    tokio::time::sleep(args.hold).await;
    let end = scrape_into(&target, "end", &mut errors).await;
    let hold_secs = hold_start.elapsed().as_secs_f64();
    let hold_pings = pings.load(Ordering::Relaxed) - pings_start;

    // Close them all, K at a time (each task takes a permit).
    let _ = stop_tx.send(true);
    let (mut clean, mut by_server) = (0usize, 0usize);
    for (index, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(IdleEnd::NotOpened)) => {}
            Ok(Ok(IdleEnd::Closed)) => clean += 1,
            Ok(Ok(IdleEnd::ClosedByServer)) => by_server += 1,
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("socket {index}: task failed: {e}")),
        }
    }
    let after = scrape_into(&target, "after", &mut errors).await;
    let mut last_live = after.as_ref().and_then(Metrics::live);
    let drain_start = Instant::now();
    while last_live != Some(0.0) && drain_start.elapsed() < IDLE_DRAIN {
        tokio::time::sleep(POLL_INTERVAL).await;
        if let Some(metrics) = scrape_into(&target, "drain", &mut errors).await {
            last_live = metrics.live();
        }
    }

    let mut problems = Vec::new();
    if opened < n {
        problems.push(format!("only {opened} of {n} sockets opened"));
    }
    if last_live != Some(0.0) {
        problems.push(format!(
            "websocket_live_sockets is {} 10 s after closing, not 0",
            fmt_opt(last_live, 0)
        ));
    }
    let rss = |m: &Option<Metrics>| m.as_ref().and_then(Metrics::rss_mib);
    let cpu = |m: &Option<Metrics>| m.as_ref().and_then(Metrics::cpu);
    let (rss_before, rss_open, rss_end, rss_after) =
        (rss(&before), rss(&open), rss(&end), rss(&after));
    let kib_per_socket = rss_before
        .zip(rss_open)
        .filter(|_| opened > 0)
        .map(|(before, open)| (open - before) * 1024.0 / opened as f64);
    let cpu_pct = cpu(&open)
        .zip(cpu(&end))
        .map(|(open, end)| (end - open) / hold_secs * 100.0);
    let pings_per_s = hold_pings as f64 / hold_secs;
    let live_open = open.as_ref().and_then(Metrics::live);

    let json = format!(
        "{{\"mode\":\"idle\",\"sockets\":{n},\"h2_connections\":{},\"opened\":{opened},\"concurrency\":{},\
         \"sources\":{},\"open_secs\":{open_secs:.3},\"opens_per_s\":{opens_per_s:.1},\
         \"live_sockets_open\":{},\"rss_mib\":{{\"before\":{},\"open\":{},\"end\":{},\"after\":{}}},\
         \"kib_per_socket\":{},\"hold_secs\":{hold_secs:.3},\"server_cpu_pct\":{},\
         \"pings_answered\":{hold_pings},\"pings_per_s\":{pings_per_s:.1},\
         \"closed_cleanly\":{clean},\"closed_by_server\":{by_server},\
         \"final_live_sockets\":{},\"errors\":{}}}",
        args.h2.unwrap_or(0),
        args.concurrency,
        args.sources.len(),
        json_opt(live_open, 0),
        json_opt(rss_before, 2),
        json_opt(rss_open, 2),
        json_opt(rss_end, 2),
        json_opt(rss_after, 2),
        json_opt(kib_per_socket, 2),
        json_opt(cpu_pct, 2),
        json_opt(last_live, 0),
        errors.count,
    );
    let over = match args.h2 {
        Some(c) => format!(" (HTTP/2 streams over {c} connections)"),
        None => String::new(),
    };
    let mut human = format!(
        "idle{over}: {opened} of {n} sockets opened in {open_secs:.2} s ({opens_per_s:.0}/s); \
         RSS {}/{}/{}/{} MiB (before/open/end/after) = {} KiB/socket; \
         server CPU {}% over a {hold_secs:.1} s hold, {hold_pings} pings answered \
         ({pings_per_s:.1}/s); {clean} closed cleanly",
        fmt_opt(rss_before, 1),
        fmt_opt(rss_open, 1),
        fmt_opt(rss_end, 1),
        fmt_opt(rss_after, 1),
        fmt_opt(kib_per_socket, 2),
        fmt_opt(cpu_pct, 2),
    );
    if by_server > 0 {
        let _ = write!(human, ", {by_server} closed by the server");
    }
    let _ = write!(
        human,
        ", live {} after, {} errors",
        fmt_opt(last_live, 0),
        errors.count
    );
    Report {
        json,
        human,
        errors,
        problems,
    }
}

/// One idle socket: open (and say so), answer pings until told to stop,
/// then close.
async fn idle_socket(
    index: usize,
    target: &Target,
    gate: &Semaphore,
    open_tx: mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    pings: &AtomicU64,
) -> Result<IdleEnd, String> {
    let opened = match gate.acquire().await {
        Ok(_permit) => open(target, index, index as u64).await,
        Err(e) => Err(e.to_string()),
    };
    let mut ws = match opened {
        Ok(ws) => {
            let _ = open_tx.send(Ok(()));
            ws
        }
        Err(e) => {
            let _ = open_tx.send(Err(format!("socket {index}: {e}")));
            return Ok(IdleEnd::NotOpened);
        }
    };
    drop(open_tx);
    let fail = |what: String| format!("socket {index}: {what}");
    loop {
        // Only whole frames are taken from the buffer, and the read below
        // is cancel-safe, so the stop can come at any time.
        while let Some(frame) = ws.take_frame().map_err(fail)? {
            match frame.opcode {
                0x9 => {
                    tokio::time::timeout(ECHO_TIMEOUT, ws.send(0xA, &frame.payload))
                        .await
                        .map_err(|_| fail("pong write timed out".into()))?
                        .map_err(fail)?;
                    pings.fetch_add(1, Ordering::Relaxed);
                }
                0xA => {}
                0x8 => {
                    // Answer with the same code and end.
                    let code = close_code(&frame.payload).map_err(fail)?;
                    let answer = code.map(u16::to_be_bytes);
                    let _ = tokio::time::timeout(
                        CLOSE_TIMEOUT,
                        ws.send(0x8, answer.as_ref().map_or(&[][..], |c| &c[..])),
                    )
                    .await;
                    return Ok(IdleEnd::ClosedByServer);
                }
                op => {
                    return Err(fail(format!(
                        "unexpected frame (opcode {op:#x}) while idle"
                    )));
                }
            }
        }
        tokio::select! {
            read = ws.read_more(1) => match read {
                Ok(0) => return Err(fail("the server closed the connection".into())),
                Ok(_) => {}
                Err(e) => return Err(fail(format!("read: {e}"))),
            },
            _ = stop.changed() => break,
        }
    }
    let _permit = gate.acquire().await.map_err(|e| fail(e.to_string()))?;
    close(&mut ws)
        .await
        .map_err(|e| fail(format!("close: {e}")))?;
    Ok(IdleEnd::Closed)
}

// ---------------------------------------------------------------------------
// the client side of a socket

/// An upgraded connection and the bytes read from it not yet parsed.
struct Ws {
    tcp: TcpStream,
    /// Empty, with nothing allocated, between frames.
    buf: Vec<u8>,
}

/// One whole server frame.
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A message from the server, pings answered and pongs skipped.
enum Incoming {
    Data { text: bool, payload: Vec<u8> },
    Close(Option<u16>),
}

impl Ws {
    /// Reads what is there (at least a byte) onto `buf`; `Ok(0)` at the
    /// end of the stream. `want` is how much the next frame still needs:
    /// more than `READ_CHUNK` is read straight into `buf`, less through a
    /// chunk on the stack. Cancel-safe.
    async fn read_more(&mut self, want: usize) -> io::Result<usize> {
        loop {
            self.tcp.readable().await?;
            let read = if want > READ_CHUNK {
                self.buf.reserve(want);
                self.tcp.try_read_buf(&mut self.buf)
            } else {
                let mut chunk = [0u8; READ_CHUNK];
                let read = self.tcp.try_read(&mut chunk);
                if let Ok(n) = read {
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                read
            };
            match read {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Takes a whole frame off `buf` if there is one.
    fn take_frame(&mut self) -> Result<Option<Frame>, String> {
        match parse_header(&self.buf)? {
            Some((header_len, len)) if self.buf.len() >= header_len + len => {
                Ok(Some(self.split_frame(header_len, len)?))
            }
            _ => Ok(None),
        }
    }

    fn split_frame(&mut self, header_len: usize, len: usize) -> Result<Frame, String> {
        let total = header_len + len;
        let first = self.buf[0];
        let payload = self.buf[header_len..total].to_vec();
        if self.buf.len() == total {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..total);
        }
        let frame = Frame {
            fin: first & 0x80 != 0,
            opcode: first & 0x0f,
            payload,
        };
        if frame.opcode >= 0x8 && (!frame.fin || frame.payload.len() > 125) {
            return Err(format!(
                "invalid control frame (opcode {:#x})",
                frame.opcode
            ));
        }
        Ok(frame)
    }

    /// Reads until a whole frame is there.
    async fn next_frame(&mut self) -> Result<Frame, String> {
        loop {
            let want = match parse_header(&self.buf)? {
                Some((header_len, len)) if self.buf.len() >= header_len + len => {
                    return self.split_frame(header_len, len);
                }
                Some((header_len, len)) => header_len + len - self.buf.len(),
                None => 1,
            };
            match self.read_more(want).await {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// The next data message (fragments joined) or Close; pings on the way
    /// are answered (and counted), pongs skipped.
    async fn next_message(&mut self, pings: &AtomicU64) -> Result<Incoming, String> {
        let mut partial: Option<(bool, Vec<u8>)> = None;
        loop {
            let frame = self.next_frame().await?;
            match frame.opcode {
                0x9 => {
                    self.send(0xA, &frame.payload).await?;
                    pings.fetch_add(1, Ordering::Relaxed);
                }
                0xA => {}
                0x8 => return Ok(Incoming::Close(close_code(&frame.payload)?)),
                0x1 | 0x2 if partial.is_some() => {
                    return Err("a new message inside a fragmented one".into());
                }
                0x1 | 0x2 => {
                    let text = frame.opcode == 0x1;
                    if frame.fin {
                        return Ok(Incoming::Data {
                            text,
                            payload: frame.payload,
                        });
                    }
                    partial = Some((text, frame.payload));
                }
                0x0 => {
                    let Some((text, mut payload)) = partial.take() else {
                        return Err("a continuation frame outside a message".into());
                    };
                    if payload.len() + frame.payload.len() > MAX_MESSAGE {
                        return Err(format!("a message over {MAX_MESSAGE} bytes"));
                    }
                    payload.extend_from_slice(&frame.payload);
                    if frame.fin {
                        return Ok(Incoming::Data { text, payload });
                    }
                    partial = Some((text, payload));
                }
                op => return Err(format!("unknown opcode {op:#x}")),
            }
        }
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        self.tcp
            .write_all(&client_frame(opcode, payload))
            .await
            .map_err(|e| format!("write: {e}"))
    }
}

/// Connects and upgrades (within `HANDSHAKE_TIMEOUT`); bytes after the
/// 101's head stay in the buffer.
async fn open(target: &Target, index: usize, seed: u64) -> Result<Ws, String> {
    let upgrade = async {
        let tcp = target
            .connect(index)
            .await
            .map_err(|e| match target.source(index) {
                Some(ip) => format!("connect from {ip} to {}: {e}", target.addr),
                None => format!("connect to {}: {e}", target.addr),
            })?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut ws = Ws {
            tcp,
            buf: Vec::new(),
        };
        let mut state = 0x2545_f491_4f6c_dd1d ^ seed;
        let key_bytes: Vec<u8> = (0..2)
            .flat_map(|_| splitmix64(&mut state).to_le_bytes())
            .collect();
        let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            target.path, target.host
        );
        ws.tcp
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send handshake: {e}"))?;
        let head_len = loop {
            if let Some(i) = find(&ws.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if ws.buf.len() > MAX_HEAD {
                return Err("handshake response head over 16 KiB".into());
            }
            match ws.read_more(1).await {
                Ok(0) => return Err("connection closed during the handshake".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read handshake: {e}")),
            }
        };
        let head = String::from_utf8_lossy(&ws.buf[..head_len]);
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
        if ws.buf.len() == head_len {
            ws.buf = Vec::new();
        } else {
            ws.buf.drain(..head_len);
        }
        Ok(ws)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade)
        .await
        .map_err(|_| format!("handshake timed out after {HANDSHAKE_TIMEOUT:?}"))?
}

/// The close handshake (within `CLOSE_TIMEOUT`): our Close 1000, the
/// server's Close 1000, then the end of the connection.
async fn close(ws: &mut Ws) -> Result<(), String> {
    let closing = async {
        ws.send(0x8, &1000u16.to_be_bytes()).await?;
        loop {
            let frame = ws
                .next_frame()
                .await
                .map_err(|e| format!("{e} before its close frame"))?;
            match frame.opcode {
                0x8 => match close_code(&frame.payload)? {
                    Some(1000) => break,
                    code => return Err(format!("server closed with {code:?}, not 1000")),
                },
                // Pings after our Close go unanswered.
                0x9 | 0xA => {}
                op => return Err(format!("a frame (opcode {op:#x}) after our close")),
            }
        }
        if !ws.buf.is_empty() {
            return Err("bytes after the server's close frame".into());
        }
        match ws.read_more(1).await {
            Ok(0) => Ok(()),
            Ok(_) => Err("bytes after the server's close frame".into()),
            Err(e) => Err(format!("read after the close frame: {e}")),
        }
    };
    tokio::time::timeout(CLOSE_TIMEOUT, closing)
        .await
        .map_err(|_| format!("not closed within {CLOSE_TIMEOUT:?}"))?
}

/// The status code of a Close frame's payload.
fn close_code(payload: &[u8]) -> Result<Option<u16>, String> {
    match payload {
        [] => Ok(None),
        [a, b, ..] => Ok(Some(u16::from_be_bytes([*a, *b]))),
        [_] => Err("a close frame with a one-byte payload".into()),
    }
}

/// `Some((header_len, payload_len))` once `buf` holds a whole unmasked
/// header.
fn parse_header(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
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
    match usize::try_from(len) {
        Ok(len) if len <= MAX_MESSAGE => Ok(Some((header_len, len))),
        _ => Err(format!("server frame of {len} bytes")),
    }
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// /metrics

/// Samples by `name` or `name{labels}`, as written.
#[derive(Debug, Default)]
struct Metrics(HashMap<String, f64>);

impl Metrics {
    fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }
    fn live(&self) -> Option<f64> {
        self.get("websocket_live_sockets")
    }
    fn tasks(&self) -> Option<f64> {
        self.get("tokio_alive_tasks")
    }
    fn rss_mib(&self) -> Option<f64> {
        self.get("process_resident_memory_bytes")
            .map(|bytes| bytes / MIB)
    }
    fn cpu(&self) -> Option<f64> {
        self.get("process_cpu_seconds_total")
    }
}

/// A scrape; a failure goes into `errors`, labelled `what`.
async fn scrape_into(target: &Target, what: &str, errors: &mut Errors) -> Option<Metrics> {
    match scrape(target).await {
        Ok(metrics) => Some(metrics),
        Err(e) => {
            errors.push(format!("metrics scrape ({what}): {e}"));
            None
        }
    }
}

/// `GET /metrics` on a new connection, read to its end (within
/// `SCRAPE_TIMEOUT`).
async fn scrape(target: &Target) -> Result<Metrics, String> {
    let fetch = async {
        let mut tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", target.addr))?;
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.host
        );
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(raw)
    };
    let raw = tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("timed out after {SCRAPE_TIMEOUT:?}"))??;
    parse_response(&raw)
}

/// The metrics in an HTTP/1.1 response (chunked or not).
fn parse_response(raw: &[u8]) -> Result<Metrics, String> {
    let head_end = find(raw, b"\r\n\r\n").ok_or("no end of the response head")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered {status:?}"));
    }
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else if let Some(length) = length {
        body.get(..length)
            .ok_or_else(|| format!("a body of {} bytes, not {length}", body.len()))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok(parse_prometheus(&String::from_utf8_lossy(&body)))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n").ok_or("a truncated chunk size")?;
        let line = String::from_utf8_lossy(&body[..line_end]);
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("a bad chunk size {size:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("a truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// `name value` and `name{labels} value` lines (an optional timestamp
/// after the value is ignored); comments and anything else skipped.
fn parse_prometheus(text: &str) -> Metrics {
    let mut samples = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let split = match (line.find('{'), line.rfind('}')) {
            (Some(open), Some(close)) if open < close => Some(line.split_at(close + 1)),
            _ => line.split_once(char::is_whitespace),
        };
        let Some((key, rest)) = split else {
            continue;
        };
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        if let Ok(value) = value.parse::<f64>() {
            samples.insert(key.trim().to_owned(), value);
        }
    }
    Metrics(samples)
}

// ---------------------------------------------------------------------------
// formatting

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn json_opt(value: Option<f64>, decimals: usize) -> String {
    value
        .filter(|v| v.is_finite())
        .map_or("null".into(), |v| format!("{v:.decimals$}"))
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("?".into(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# HELP websocket_live_sockets Live.\n\
                        # TYPE websocket_live_sockets gauge\n\
                        websocket_live_sockets 3\n\
                        websocket_closed_total{outcome=\"clean\"} 7\n\
                        process_cpu_seconds_total 1.23\n";

    #[test]
    fn prometheus_lines_are_keyed_by_name_and_labels() {
        let metrics = parse_prometheus(BODY);
        assert_eq!(metrics.live(), Some(3.0));
        assert_eq!(
            metrics.get("websocket_closed_total{outcome=\"clean\"}"),
            Some(7.0)
        );
        assert_eq!(metrics.cpu(), Some(1.23));
        assert_eq!(metrics.0.len(), 3);
    }

    #[test]
    fn responses_with_and_without_chunks_parse_alike() {
        let plain = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let (a, b) = BODY.split_at(40);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};x=y\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        for raw in [plain, chunked] {
            let metrics = parse_response(raw.as_bytes()).unwrap();
            assert_eq!(metrics.live(), Some(3.0));
            assert_eq!(metrics.cpu(), Some(1.23));
        }
        assert!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
    }

    #[test]
    fn headers_are_parsed_whole_or_not_at_all() {
        assert_eq!(parse_header(&[0x82]), Ok(None));
        assert_eq!(parse_header(&[0x82, 5]), Ok(Some((2, 5))));
        assert_eq!(parse_header(&[0x82, 126, 1]), Ok(None));
        assert_eq!(parse_header(&[0x82, 126, 1, 0]), Ok(Some((4, 256))));
        assert!(parse_header(&[0x82, 0x85]).is_err(), "masked");
    }

    #[test]
    fn payloads_differ_by_socket_and_message_and_have_their_size() {
        let a = payload(0, 1, 2, 61);
        assert_eq!(a.len(), 61);
        assert_eq!(a, payload(0, 1, 2, 61));
        assert_ne!(a, payload(0, 1, 3, 61));
        assert_ne!(a, payload(0, 2, 2, 61));
        assert_ne!(a, payload(1, 1, 2, 61));
    }

    #[test]
    fn compare_names_the_first_difference() {
        assert!(compare(b"abc", b"abc").is_ok());
        assert!(compare(b"abc", b"abd").unwrap_err().contains("byte 2"));
        assert!(compare(b"abc", b"ab").unwrap_err().contains("2 bytes"));
    }
}

// ---------------------------------------------------------------------------
// idle sockets over HTTP/2 (RFC 8441)

mod h2 {
    use super::*;

    use http_body_util::Empty;
    use hyper::body::Bytes;
    use hyper::client::conn::http2::{self, SendRequest};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    pub(super) type Sender = SendRequest<Empty<Bytes>>;

    /// An h2c (prior knowledge) connection, its SETTINGS received.
    pub(super) async fn connect(target: &Target, index: usize) -> Result<Sender, String> {
        let connecting = async {
            let tcp = target
                .connect(index)
                .await
                .map_err(|e| format!("connect to {}: {e}", target.addr))?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(connection);
            sender
                .ready()
                .await
                .map_err(|e| format!("h2 settings: {e}"))?;
            Ok(sender)
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| format!("h2 connection timed out after {HANDSHAKE_TIMEOUT:?}"))?
    }

    type Stream = TokioIo<hyper::upgrade::Upgraded>;

    /// An extended CONNECT for a WebSocket; the upgraded stream.
    async fn open(sender: &mut Sender, target: &Target) -> Result<Stream, String> {
        let opening = async {
            let mut request =
                hyper::Request::connect(format!("http://{}{}", target.host, target.path))
                    .version(hyper::Version::HTTP_2)
                    .header("sec-websocket-version", "13")
                    .body(Empty::new())
                    .map_err(|e| e.to_string())?;
            request
                .extensions_mut()
                .insert(hyper::ext::Protocol::from_static("websocket"));
            sender.ready().await.map_err(|e| format!("h2: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("extended CONNECT: {e}"))?;
            if response.status() != hyper::StatusCode::OK {
                return Err(format!("extended CONNECT answered {}", response.status()));
            }
            let upgraded = hyper::upgrade::on(response)
                .await
                .map_err(|e| format!("upgrade: {e}"))?;
            Ok(TokioIo::new(upgraded))
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, opening)
            .await
            .map_err(|_| format!("handshake timed out after {HANDSHAKE_TIMEOUT:?}"))?
    }

    /// Takes a whole frame (opcode, payload) off `buf`, if there is one.
    fn take_frame(buf: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, String> {
        let Some((header_len, len)) = parse_header(buf)? else {
            return Ok(None);
        };
        if buf.len() < header_len + len {
            return Ok(None);
        }
        let opcode = buf[0] & 0x0f;
        let payload = buf[header_len..header_len + len].to_vec();
        buf.drain(..header_len + len);
        if buf.is_empty() {
            *buf = Vec::new();
        }
        Ok(Some((opcode, payload)))
    }

    /// Reads a little more onto `buf`; `Ok(0)` at the end of the stream.
    /// Cancel-safe.
    async fn read_more(io: &mut Stream, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut chunk = [0u8; 256];
        let n = io.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// One idle socket as a stream: open (and say so), answer pings until
    /// told to stop, then close.
    pub(super) async fn idle_socket(
        index: usize,
        mut sender: Sender,
        target: &Target,
        gate: &Semaphore,
        open_tx: mpsc::UnboundedSender<Result<(), String>>,
        mut stop: watch::Receiver<bool>,
        pings: &AtomicU64,
    ) -> Result<IdleEnd, String> {
        let opened = match gate.acquire().await {
            Ok(_permit) => open(&mut sender, target).await,
            Err(e) => Err(e.to_string()),
        };
        drop(sender);
        let mut io = match opened {
            Ok(io) => {
                let _ = open_tx.send(Ok(()));
                io
            }
            Err(e) => {
                let _ = open_tx.send(Err(format!("socket {index}: {e}")));
                return Ok(IdleEnd::NotOpened);
            }
        };
        drop(open_tx);
        let fail = |what: String| format!("socket {index}: {what}");
        let mut buf = Vec::new();
        loop {
            while let Some((opcode, payload)) = take_frame(&mut buf).map_err(fail)? {
                match opcode {
                    0x9 => {
                        let pong = client_frame(0xA, &payload);
                        tokio::time::timeout(ECHO_TIMEOUT, io.write_all(&pong))
                            .await
                            .map_err(|_| fail("pong write timed out".into()))?
                            .map_err(|e| fail(format!("write: {e}")))?;
                        pings.fetch_add(1, Ordering::Relaxed);
                    }
                    0xA => {}
                    0x8 => {
                        let code = close_code(&payload).map_err(fail)?;
                        let answer = code.map(u16::to_be_bytes);
                        let close = client_frame(0x8, answer.as_ref().map_or(&[][..], |c| &c[..]));
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, io.write_all(&close)).await;
                        return Ok(IdleEnd::ClosedByServer);
                    }
                    op => {
                        return Err(fail(format!(
                            "unexpected frame (opcode {op:#x}) while idle"
                        )));
                    }
                }
            }
            tokio::select! {
                read = read_more(&mut io, &mut buf) => match read {
                    Ok(0) => return Err(fail("the server ended the stream".into())),
                    Ok(_) => {}
                    Err(e) => return Err(fail(format!("read: {e}"))),
                },
                _ = stop.changed() => break,
            }
        }
        let _permit = gate.acquire().await.map_err(|e| fail(e.to_string()))?;
        let closing = async {
            io.write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
                .await
                .map_err(|e| format!("write: {e}"))?;
            loop {
                while let Some((opcode, payload)) = take_frame(&mut buf)? {
                    match opcode {
                        0x8 => {
                            return match close_code(&payload)? {
                                Some(1000) => Ok(()),
                                code => Err(format!("server closed with {code:?}, not 1000")),
                            };
                        }
                        0x9 | 0xA => {}
                        op => return Err(format!("a frame (opcode {op:#x}) after our close")),
                    }
                }
                match read_more(&mut io, &mut buf).await {
                    Ok(0) => return Err("the stream ended before the server's close".into()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
        };
        tokio::time::timeout(CLOSE_TIMEOUT, closing)
            .await
            .map_err(|_| fail(format!("not closed within {CLOSE_TIMEOUT:?}")))?
            .map_err(|e| fail(format!("close: {e}")))?;
        Ok(IdleEnd::Closed)
    }
}

//! `examples/chat.rs` as child processes, on 127.0.0.1 with real sockets:
//! rooms on one node and across two instances sharing a `redis-server`
//! that the tests start themselves (on a free port, without persistence),
//! Redis stopped and restarted under the instances, and a member that
//! never reads under both slow-subscriber policies.
//!
//! Without `redis-server` installed the Redis tests are skipped with a
//! message, unless `TOWER_WEBSOCKETS_REQUIRE_REDIS=1` (as in CI) makes that
//! a failure.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::echo_example::{EchoServer, example};
use common::process::{note, run, skip};
use common::*;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Client;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const REQUIRE_ENV: &str = "TOWER_WEBSOCKETS_REQUIRE_REDIS";

// ----- redis-server -----

/// A `redis-server` child process on 127.0.0.1, without persistence,
/// killed when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    /// Starts `redis-server` on a free port; `None` (after reporting the
    /// skip, or failing where Redis is required) if it is not installed.
    async fn start_or_skip() -> Option<Redis> {
        let mut version = Command::new("redis-server");
        version.arg("--version");
        match run(version).await {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                skip(
                    REQUIRE_ENV,
                    &format!("`redis-server --version` failed: {}", output.status),
                );
                return None;
            }
            Err(why) => {
                skip(
                    REQUIRE_ENV,
                    &format!("redis-server is not available: {why}"),
                );
                return None;
            }
        }
        // The port is free when we look; another process could take it
        // before redis-server binds it, so try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut redis = Redis { child: None, port };
            match redis.spawn().await {
                Ok(()) => return Some(redis),
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts redis-server on `self.port` and waits until it answers.
    async fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args([
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            if ping(self.port).await {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(format!("redis-server on port {port} did not answer"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills redis-server (as a crash would) and waits until it is gone.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(TIMEOUT, child.wait()).await;
        }
    }

    /// Starts redis-server again on the same port.
    async fn restart(&mut self) {
        self.spawn().await.unwrap();
    }
}

/// Whether a Redis server on `port` answers `PING`.
async fn ping(port: u16) -> bool {
    let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let answer = async {
        tcp.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        tcp.read_exact(&mut buf).await.ok()?;
        Some(buf == *b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), answer).await,
        Ok(Some(true))
    )
}

/// How many connections are subscribed to `channel`, as Redis counts
/// them (`PUBSUB NUMSUB`).
async fn subscribers(port: u16, channel: &str) -> u64 {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(format!("PUBSUB NUMSUB {channel}\r\n").as_bytes())
        .await
        .unwrap();
    // *2 $len channel :N
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        while answer.iter().filter(|&&b| b == b'\n').count() < 4 {
            let mut chunk = [0u8; 256];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "redis closed: {:?}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("redis answered");
    let answer = String::from_utf8(answer).unwrap();
    answer
        .lines()
        .find_map(|line| line.strip_prefix(':'))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("PUBSUB NUMSUB answered {answer:?}"))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ----- clients -----

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A chat client (tokio-tungstenite): its texts arrive on a channel,
/// read by a task of its own, so it is always reading.
struct Chatter {
    name: String,
    sink: SplitSink<Ws, Client>,
    texts: mpsc::UnboundedReceiver<String>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Chatter {
    /// Drops the connection (without a close handshake).
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Chatter {
    async fn join(addr: &str, room: &str, name: &str) -> Chatter {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?room={room}"))
            .await
            .unwrap_or_else(|e| panic!("{name} cannot join {room} on {addr}: {e}"));
        let (sink, mut stream) = ws.split();
        let (tx, texts) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Client::Text(text) = message
                    && tx.send(text.as_str().to_owned()).is_err()
                {
                    return;
                }
            }
        });
        Chatter {
            name: name.to_owned(),
            sink,
            texts,
            reader,
        }
    }

    async fn say(&mut self, text: &str) {
        self.sink.send(Client::text(text)).await.unwrap();
    }

    /// The next text, within [`TIMEOUT`].
    async fn next(&mut self) -> String {
        match tokio::time::timeout(TIMEOUT, self.texts.recv()).await {
            Ok(Some(text)) => text,
            Ok(None) => panic!("{}: the socket ended", self.name),
            Err(_) => panic!("{}: no message in {TIMEOUT:?}", self.name),
        }
    }

    /// The next text if one arrives within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, self.texts.recv())
            .await
            .ok()
            .flatten()
    }

    /// Reads texts until `want`; returns those before it.
    async fn until(&mut self, want: &str) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let text = self.next().await;
            if text == want {
                return before;
            }
            before.push(text);
        }
    }
}

/// Every client of every room says `count` texts `ROOM|NAME|I`; then every
/// client must have received exactly its room's texts, each sender's in
/// order and none missing, and nothing else.
async fn exchange(rooms: &mut [(&str, Vec<Chatter>)], count: usize) {
    for (room, chatters) in rooms.iter_mut() {
        for chatter in chatters.iter_mut() {
            for i in 0..count {
                let text = format!("{room}|{}|{i}", chatter.name);
                chatter.say(&text).await;
            }
        }
    }
    for (room, chatters) in rooms.iter_mut() {
        let senders: Vec<String> = chatters.iter().map(|c| c.name.clone()).collect();
        for chatter in chatters.iter_mut() {
            let mut next: HashMap<&str, usize> = senders.iter().map(|s| (s.as_str(), 0)).collect();
            for _ in 0..senders.len() * count {
                let text = chatter.next().await;
                let mut parts = text.split('|');
                let (from_room, sender, i) = (parts.next(), parts.next(), parts.next());
                assert_eq!(from_room, Some(*room), "{} got {text:?}", chatter.name);
                let sender = sender.unwrap();
                let expected = next
                    .get_mut(sender)
                    .unwrap_or_else(|| panic!("{} got {text:?} from a stranger", chatter.name));
                assert_eq!(
                    i.and_then(|i| i.parse().ok()),
                    Some(*expected),
                    "{} got {text:?} out of order",
                    chatter.name
                );
                *expected += 1;
            }
            if let Some(extra) = chatter.next_within(Duration::from_millis(200)).await {
                panic!("{} got an extra message {extra:?}", chatter.name);
            }
        }
    }
}

// ----- the server's side -----

/// `GET path` on a fresh HTTP/1.1 connection: the status line and body.
async fn get(addr: &str, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (mut tcp, head, mut body) =
        raw_request(addr.parse().unwrap(), request.as_bytes(), &[]).await;
    tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut body))
        .await
        .unwrap()
        .unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// `/stats`.
async fn stats(addr: &str) -> String {
    let (head, body) = get(addr, "/stats").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}

/// A number (or a boolean, as 0 or 1) of `/stats`.
fn stat(stats: &str, key: &str) -> u64 {
    let at = stats
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {stats}"));
    let value = &stats[at + key.len() + 3..];
    let value = &value[..value.find([',', '}']).unwrap()];
    match value {
        "true" => 1,
        "false" => 0,
        number => number
            .parse()
            .unwrap_or_else(|_| panic!("{key} is {number:?}")),
    }
}

/// Polls `/stats` until `ready` holds, within [`TIMEOUT`].
async fn wait_for(addr: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stats = stats(addr).await;
        if ready(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "{addr}: not {what} in {TIMEOUT:?}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the instance at `addr` publishes and is subscribed to
/// `rooms` rooms with `members` members.
async fn wait_subscribed(addr: &str, rooms: u64, members: u64) {
    wait_for(addr, "subscribed", |s| {
        stat(s, "publisher_up") == 1
            && stat(s, "subscriber_up") == 1
            && stat(s, "subscriptions") == rooms
            && stat(s, "members") == members
    })
    .await;
}

async fn chat_example(args: &[&str]) -> EchoServer {
    let binary = example("chat").await;
    EchoServer::start(&binary, args).await
}

// ----- one node -----

#[tokio::test]
async fn one_node_delivers_to_its_rooms_only_and_checks_names() {
    let server = chat_example(&["--max-rooms", "2"]).await;
    let addr = server.addr.as_str();

    let (head, page) = get(addr, "/").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/html"), "{head}");
    assert!(page.contains("/ws?room="), "{page}");

    // Bad names are refused before the upgrade.
    let long = format!("/ws?room={}", "x".repeat(33));
    for path in [
        "/ws?room=",
        "/ws?room",
        "/ws?room=a%20b",
        "/ws?room=caf%C3%A9",
        "/ws?room=a/b",
        "/ws?room=a&room=b",
        long.as_str(),
    ] {
        let (_tcp, head, _) =
            raw_request(addr.parse().unwrap(), &handshake_request(path, &[]), &[]).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{path}: {head}");
    }

    let mut rooms = vec![
        (
            "alpha",
            vec![
                Chatter::join(addr, "alpha", "a1").await,
                Chatter::join(addr, "alpha", "a2").await,
                Chatter::join(addr, "alpha", "a3").await,
            ],
        ),
        (
            "beta",
            vec![
                Chatter::join(addr, "beta", "b1").await,
                Chatter::join(addr, "beta", "b2").await,
            ],
        ),
    ];
    // Members join their rooms after their upgrades.
    let s = wait_for(addr, "with five members", |s| stat(s, "members") == 5).await;
    assert_eq!(stat(&s, "rooms"), 2, "{s}");
    assert_eq!(stat(&s, "redis"), 0, "{s}");
    exchange(&mut rooms, 20).await;

    // A third room is past --max-rooms 2: 503 before the upgrade; the
    // default room is one too.
    for path in ["/ws?room=gamma", "/ws"] {
        let (_tcp, head, _) =
            raw_request(addr.parse().unwrap(), &handshake_request(path, &[]), &[]).await;
        assert!(head.starts_with("HTTP/1.1 503"), "{path}: {head}");
    }
    // beta's members leave: the room goes, and lobby fits.
    drop(rooms.pop());
    wait_for(addr, "down to one room", |s| {
        stat(s, "rooms") == 1 && stat(s, "members") == 3
    })
    .await;
    let mut lobby = Chatter::join(addr, "lobby", "l1").await;
    lobby.say("anyone?").await;
    assert_eq!(lobby.next().await, "anyone?");
    exchange(&mut rooms, 5).await;

    let s = stats(addr).await;
    assert_eq!(stat(&s, "messages_in"), 20 * 5 + 1 + 5 * 3, "{s}");
    assert_eq!(stat(&s, "dropped") + stat(&s, "closed_slow"), 0, "{s}");
    server.stop().await;
}

// ----- across instances -----

#[tokio::test]
async fn two_instances_share_rooms_through_redis() {
    let Some(mut redis) = Redis::start_or_skip().await else {
        return;
    };
    let url = redis.url();
    let one = chat_example(&["--redis", &url, "--instance", "one"]).await;
    let two = chat_example(&["--redis", &url, "--instance", "two"]).await;
    let (a, b) = (one.addr.as_str(), two.addr.as_str());

    let mut rooms = vec![
        (
            "alpha",
            vec![
                Chatter::join(a, "alpha", "a1").await,
                Chatter::join(b, "alpha", "a2").await,
                Chatter::join(a, "alpha", "a3").await,
            ],
        ),
        (
            "beta",
            vec![
                Chatter::join(a, "beta", "b1").await,
                Chatter::join(b, "beta", "b2").await,
                Chatter::join(b, "beta", "b3").await,
            ],
        ),
    ];
    wait_subscribed(a, 2, 3).await;
    wait_subscribed(b, 2, 3).await;
    // One subscription per room and instance, not per socket.
    assert_eq!(subscribers(redis.port, "chat:alpha").await, 2);
    assert_eq!(subscribers(redis.port, "chat:beta").await, 2);
    exchange(&mut rooms, 30).await;

    // Each instance published what its members said, and fanned out what
    // the other one published.
    let (sa, sb) = (stats(a).await, stats(b).await);
    assert_eq!(stat(&sa, "published"), 3 * 30, "{sa}");
    assert_eq!(stat(&sb, "published"), 3 * 30, "{sb}");
    assert_eq!(stat(&sa, "remote_in"), 3 * 30, "{sa}");
    assert_eq!(stat(&sb, "remote_in"), 3 * 30, "{sb}");
    assert_eq!(
        stat(&sa, "publish_dropped") + stat(&sb, "publish_dropped"),
        0
    );

    // The last member of beta on `one` leaves: `one` unsubscribes, and
    // beta goes on between the members on `two`.
    let mut beta = rooms.pop().unwrap().1;
    drop(beta.remove(0));
    wait_subscribed(a, 1, 2).await;
    assert_eq!(subscribers(redis.port, "chat:beta").await, 1);
    assert_eq!(subscribers(redis.port, "chat:alpha").await, 2);
    let mut beta = vec![("beta", beta)];
    exchange(&mut beta, 5).await;
    assert_eq!(
        stat(&stats(a).await, "remote_in"),
        3 * 30,
        "beta reached one"
    );

    drop(rooms);
    drop(beta);
    one.stop().await;
    two.stop().await;
    redis.kill().await;
}

#[tokio::test]
async fn redis_restarted_local_delivery_goes_on_and_cross_delivery_resumes() {
    let Some(mut redis) = Redis::start_or_skip().await else {
        return;
    };
    let url = redis.url();
    let one = chat_example(&["--redis", &url, "--instance", "one"]).await;
    let two = chat_example(&["--redis", &url, "--instance", "two"]).await;
    let (a, b) = (one.addr.as_str(), two.addr.as_str());
    let mut a1 = Chatter::join(a, "r", "a1").await;
    let mut a2 = Chatter::join(a, "r", "a2").await;
    let mut b1 = Chatter::join(b, "r", "b1").await;
    wait_subscribed(a, 1, 2).await;
    wait_subscribed(b, 1, 1).await;
    a1.say("before").await;
    for chatter in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(chatter.next().await, "before");
    }

    redis.kill().await;
    // Local delivery never stops, and is not slowed.
    let started = Instant::now();
    for i in 0..50 {
        let text = format!("down-{i}");
        a1.say(&text).await;
        assert_eq!(a1.next().await, text);
        assert_eq!(a2.next().await, text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    note(&format!(
        "50 messages with Redis down, each seen by both local members: {:?}",
        started.elapsed()
    ));
    wait_for(a, "without Redis", |s| {
        stat(s, "subscriber_up") == 0 && stat(s, "publisher_up") == 0
    })
    .await;

    redis.restart().await;
    let restarted = Instant::now();
    // From one to two: say until one arrives across.
    let deadline = restarted + Duration::from_secs(20);
    let mut k = 0;
    'across: loop {
        assert!(
            Instant::now() < deadline,
            "nothing crossed after the restart"
        );
        let probe = format!("probe-{k}");
        k += 1;
        a1.say(&probe).await;
        if let Some(text) = b1.next_within(Duration::from_millis(100)).await {
            // What was said while Redis was down is not replayed.
            assert!(text.starts_with("probe-"), "b1 got {text:?}");
            break 'across;
        }
    }
    // And from two to one.
    let mut k = 0;
    'back: loop {
        assert!(
            Instant::now() < deadline,
            "nothing came back after the restart"
        );
        b1.say(&format!("back-{k}")).await;
        k += 1;
        while let Some(text) = a2.next_within(Duration::from_millis(100)).await {
            if text.starts_with("back-") {
                break 'back;
            }
        }
    }
    note(&format!(
        "delivery across instances resumed {:?} after Redis restarted",
        restarted.elapsed()
    ));
    // Exactly once and in order from here on.
    for i in 0..10 {
        a1.say(&format!("after-{i}")).await;
    }
    for chatter in [&mut a1, &mut a2, &mut b1] {
        let mut got = Vec::new();
        chatter.until("after-0").await;
        got.push("after-0".to_owned());
        for _ in 1..10 {
            got.push(chatter.next().await);
        }
        let want: Vec<String> = (0..10).map(|i| format!("after-{i}")).collect();
        assert_eq!(got, want, "{}", chatter.name);
    }
    one.stop().await;
    two.stop().await;
    redis.kill().await;
}

// ----- a member that never reads -----

/// Upgrades to `room` and then never reads a byte, with a small receive
/// buffer so the kernel holds little for it.
async fn never_reader(addr: &str, room: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    tcp.write_all(&handshake_request(&format!("/ws?room={room}"), &[]))
        .await
        .unwrap();
    // The 101's head, a byte at a time so that nothing past it is read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// `sender` says `count` texts of `size` bytes (`I:` then padding), at most
/// `window` ahead of its own copies coming back; every `readers` (the
/// sender's copies included) must get all of them in order. Returns how
/// long that took.
async fn push(
    sender: &mut Chatter,
    readers: &mut [&mut Chatter],
    count: usize,
    size: usize,
    window: usize,
) -> Duration {
    let started = Instant::now();
    let text = |i: usize| {
        let mut text = format!("{i}:");
        text.extend(std::iter::repeat_n('x', size - text.len()));
        text
    };
    let mut said = 0;
    for received in 0..count {
        while said < count && said < received + window {
            sender.say(&text(said)).await;
            said += 1;
        }
        let got = sender.next().await;
        assert!(
            got.starts_with(&format!("{received}:")),
            "sender got {:?} instead of {received}",
            got.get(..16)
        );
        for reader in readers.iter_mut() {
            let got = reader.next().await;
            assert!(
                got.starts_with(&format!("{received}:")) && got.len() == size,
                "{} got {:?} instead of {received}",
                reader.name,
                got.get(..16)
            );
        }
    }
    started.elapsed()
}

/// The resident memory of process `pid`, from `/proc` (Linux).
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

const SIZE: usize = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_is_closed_with_the_close_policy() {
    let server = chat_example(&["--slow-policy", "close", "--close-timeout", "1"]).await;
    let addr = server.addr.as_str();
    let mut f1 = Chatter::join(addr, "r", "f1").await;
    let mut f2 = Chatter::join(addr, "r", "f2").await;
    let mut slow = never_reader(addr, "r").await;
    wait_for(addr, "with three members", |s| stat(s, "members") == 3).await;

    // 4 MiB through the room: far more than the slow member's socket
    // queue and kernel buffers hold. The policy closes a member at the
    // first message that does not fit its 64 KiB queue, once what waits
    // was written as far as its connection takes it: four 16 KiB messages
    // in flight never close a member that reads.
    let took = push(&mut f1, &mut [&mut f2], 256, 16 * 1024, 4).await;
    note(&format!(
        "close policy: 256 x 16 KiB to the fast members in {took:?}"
    ));
    let s = stats(addr).await;
    assert_eq!(stat(&s, "closed_slow"), 1, "{s}");
    // The Close frame waits behind what it never read: the socket is
    // aborted at the close timeout and leaves the room.
    let s = wait_for(addr, "rid of the slow member", |s| stat(s, "members") == 2).await;
    assert_eq!(stat(&s, "rooms"), 1, "{s}");

    // What the slow client can see: the bytes the kernel held for it,
    // then the end of the connection (EOF or a reset), and a Close frame
    // only if it was written before the abort.
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(TIMEOUT, async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match slow.read(&mut chunk).await {
                Ok(0) => return "eof",
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
                Err(_) => return "reset",
            }
        }
    })
    .await
    .expect("the slow member's connection ended");
    let mut rest = &seen[..];
    let mut frames = 0;
    let mut close = None;
    while let Some((frame, used)) = parse_server_frame(rest) {
        frames += 1;
        if frame.opcode == 0x8 {
            close = frame.close_code();
        }
        rest = &rest[used..];
    }
    note(&format!(
        "the slow member read {} bytes ({frames} whole frames), then {ended}; close frame: {close:?}",
        seen.len()
    ));
    assert!(close.is_none() || close == Some(1013), "{close:?}");

    // The room goes on.
    push(&mut f1, &mut [&mut f2], 16, 1024, 4).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_costs_bounded_memory_with_drop_oldest() {
    let server = chat_example(&["--slow-policy", "drop-oldest", "--overflow", "64"]).await;
    let addr = server.addr.as_str();
    let pid = server.child.id().expect("running");
    let mut f1 = Chatter::join(addr, "r", "f1").await;
    let mut f2 = Chatter::join(addr, "r", "f2").await;
    // A member joins its room after its upgrade: wait, or the first
    // message can go out before it is there.
    wait_for(addr, "with two members", |s| stat(s, "members") == 2).await;

    // The pace without a slow member, and the memory after a warm-up.
    let alone = push(&mut f1, &mut [&mut f2], 512, SIZE, 4).await;
    let before = rss(pid);

    let slow = never_reader(addr, "r").await;
    wait_for(addr, "with three members", |s| stat(s, "members") == 3).await;
    let with_slow = push(&mut f1, &mut [&mut f2], 512, SIZE, 4).await;
    // 32 MiB more: were they kept for the slow member, the process would
    // grow by as much.
    let more = push(&mut f1, &mut [&mut f2], 2048, SIZE, 4).await;
    let after = rss(pid);
    note(&format!(
        "drop-oldest: 512 x 16 KiB in {alone:?} alone, {with_slow:?} beside a member that \
         never reads, then 2048 more in {more:?}; resident memory {before:?} -> {after:?}"
    ));
    // The room keeps its pace (generous: the machine is shared).
    assert!(
        with_slow < alone * 4 + Duration::from_secs(1),
        "{with_slow:?} against {alone:?}"
    );

    let s = stats(addr).await;
    assert_eq!(stat(&s, "members"), 3, "{s}");
    assert_eq!(stat(&s, "closed_slow"), 0, "{s}");
    // Nearly everything pushed past the slow member's buffers was dropped
    // for it, and only for it: the fast members got every message.
    assert!(stat(&s, "dropped") > 1000, "{s}");
    if let (Some(before), Some(after)) = (before, after) {
        // The bound: 64 KiB of socket queue, one message past it, 64
        // messages of overflow (about 1.1 MiB of 16 KiB messages); the
        // rest is the allocator's slack.
        let grown = after.saturating_sub(before);
        assert!(
            grown < 12 * 1024 * 1024,
            "grew by {grown} bytes: {before} -> {after}"
        );
    } else {
        note("no /proc: resident memory not checked");
    }
    drop(slow);
    server.stop().await;
}

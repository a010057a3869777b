//! Interoperability with independent clients in other languages: Python's
//! `websockets` and Node's `ws`, pinned in `tests/peers/` (requirements.txt,
//! package-lock.json), each run as a process against in-process echo servers
//! on 127.0.0.1:0, one process per scenario: text and binary echo up to
//! 1 MiB, fragmented messages, ping/pong, close with a code and reason,
//! subprotocol negotiation, and 403 for a disallowed Origin.
//!
//! The clients are installed by `.ci/run`. Where one is missing the test is
//! skipped with a message, unless `TOWER_WEBSOCKETS_REQUIRE_PEERS=1` (as in
//! CI) makes that a failure.

mod common;
use common::process::{manifest_dir, note, run, skip};
use common::*;

use std::net::SocketAddr;

use tokio::process::Command;
use tower_websockets::{DeflateOptions, WebSocketOptions};

/// Scenarios run against the default echo server.
const SCENARIOS: &[&str] = &[
    "text",
    "binary",
    "fragmented",
    "ping",
    "close",
    "subprotocol",
];

/// The compression scenarios (permessage-deflate offers of each kind).
const DEFLATE_SCENARIOS: &[&str] = &["deflate", "deflate-no-takeover", "deflate-small-windows"];

/// The scenario run against the server that allows only this origin.
const ORIGIN_SCENARIO: &str = "origin";
const ALLOWED_ORIGIN: &str = "https://good.example";

const REQUIRE_ENV: &str = "TOWER_WEBSOCKETS_REQUIRE_PEERS";

/// An independent client: how to run its script and how to tell whether it
/// is installed.
struct Peer {
    name: &'static str,
    program: &'static str,
    script: &'static str,
    /// Arguments to `program` that print the client library's version and
    /// fail if it is missing.
    version_check: &'static [&'static str],
    install_hint: &'static str,
    /// Compression scenarios only this peer runs, after DEFLATE_SCENARIOS.
    own_deflate_scenarios: &'static [&'static str],
}

const PYTHON: Peer = Peer {
    name: "Python websockets",
    program: "python3",
    script: "tests/peers/python_client.py",
    version_check: &[
        "-c",
        "import websockets; print('websockets', websockets.__version__)",
    ],
    install_hint: "python3 -m pip install -r tests/peers/requirements.txt",
    // Python's zlib inflates with a true 256-byte window (Node's does not
    // take 8 bits).
    own_deflate_scenarios: &["deflate-window-8"],
};

const NODE: Peer = Peer {
    name: "Node ws",
    program: "node",
    script: "tests/peers/node_client.mjs",
    // Resolved from tests/peers/, where package-lock.json pins it.
    version_check: &[
        "--input-type=module",
        "-e",
        "import { createRequire } from 'node:module'; \
         const require = createRequire(process.cwd() + '/tests/peers/'); \
         console.log('ws', require('ws/package.json').version);",
    ],
    install_hint: "npm ci --prefix tests/peers",
    own_deflate_scenarios: &[],
};

#[tokio::test]
async fn python_websockets_client_interoperates() {
    run_all_scenarios(&PYTHON).await;
}

/// permessage-deflate against Python's own implementation: with and
/// without context takeover and with 512-byte windows, messages of 0 B to
/// 16 MiB both ways, text and binary, whole and fragmented, against the
/// ASP.NET echo loop (4 KiB pieces, so every echo is a fragmented
/// compressed message) and the whole-message echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_interoperates_with_compression() {
    run_deflate_scenarios(&PYTHON).await;
}

/// The same against Node's `ws` with `perMessageDeflate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ws_client_interoperates_with_compression() {
    run_deflate_scenarios(&NODE).await;
}

async fn run_deflate_scenarios(peer: &Peer) {
    let Some(version) = version_or_skip(peer).await else {
        return;
    };
    let options = WebSocketOptions::default()
        .max_message_size(17 << 20)
        .permessage_deflate(Some(DeflateOptions::default()));
    let servers = [
        ("the ASP.NET loop", echo_server(options.clone()).await),
        ("whole messages", message_echo_server(options).await),
    ];
    let mut failures = Vec::new();
    for (server, addr) in servers {
        for scenario in DEFLATE_SCENARIOS.iter().chain(peer.own_deflate_scenarios) {
            if let Err(failure) = run_scenario(peer, addr, scenario).await {
                failures.push(format!(
                    "--- {scenario:?} against {server} failed: {failure}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} ({version}): {}",
        peer.name,
        failures.join("\n")
    );
}

/// The conformance suite's compression cases (Autobahn|Testsuite 12.x and
/// 13.x: five kinds of payload, each of the suite's offers, messages of
/// 16 B to 128 KiB whole and in 256-byte fragments), replayed by Python
/// websockets with its zlib against both echo servers; 20 messages a case
/// here, `COMPRESSION_CASES_COUNT=1000` for the suite's count (see
/// `tests/peers/python_client.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_passes_the_compression_cases() {
    let Some(version) = version_or_skip(&PYTHON).await else {
        return;
    };
    let options = WebSocketOptions::default().permessage_deflate(Some(DeflateOptions::default()));
    let servers = [
        ("the ASP.NET loop", echo_server(options.clone()).await),
        ("whole messages", message_echo_server(options).await),
    ];
    let mut failures = Vec::new();
    for (server, addr) in servers {
        if let Err(failure) = run_scenario(&PYTHON, addr, "compression-cases").await {
            failures.push(format!("--- against {server}: {failure}"));
        }
    }
    assert!(failures.is_empty(), "{version}: {}", failures.join("\n"));
}

#[tokio::test]
async fn node_ws_client_interoperates() {
    run_all_scenarios(&NODE).await;
}

/// Runs every scenario of `peer` (each in its own process), then fails
/// naming each scenario that failed, with its output.
async fn run_all_scenarios(peer: &Peer) {
    let Some(version) = version_or_skip(peer).await else {
        return;
    };
    note(&format!("{}: using {version}", peer.name));

    let open = echo_server(WebSocketOptions::default()).await;
    let restricted =
        echo_server(WebSocketOptions::default().allowed_origins([ALLOWED_ORIGIN])).await;

    let mut failures = Vec::new();
    let runs = SCENARIOS
        .iter()
        .map(|scenario| (open, *scenario))
        .chain([(restricted, ORIGIN_SCENARIO)]);
    for (addr, scenario) in runs {
        if let Err(failure) = run_scenario(peer, addr, scenario).await {
            failures.push(format!("--- scenario {scenario:?} failed: {failure}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} ({version}): {} of {} scenarios failed\n{}",
        peer.name,
        failures.len(),
        SCENARIOS.len() + 1,
        failures.join("\n")
    );
}

/// Runs one scenario script against `addr`.
async fn run_scenario(peer: &Peer, addr: SocketAddr, scenario: &str) -> Result<(), String> {
    let base = format!("ws://{addr}");
    let mut command = Command::new(peer.program);
    command.arg(peer.script).arg(&base).arg(scenario);
    let output = run(command).await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{} {} {base} {scenario}` exited with {}\nstdout:\n{}\nstderr:\n{}",
            peer.program,
            peer.script,
            output.status,
            String::from_utf8_lossy(&output.stdout).trim_end(),
            String::from_utf8_lossy(&output.stderr).trim_end(),
        ))
    }
}

/// The client library's version; `None` (after reporting the skip, or
/// failing where peers are required) if it cannot be used.
async fn version_or_skip(peer: &Peer) -> Option<String> {
    match installed_version(peer).await {
        Ok(version) => Some(version),
        Err(why) => {
            skip(
                REQUIRE_ENV,
                &format!("{} is not available: {why}", peer.name),
            );
            None
        }
    }
}

/// The client library's version, or why it cannot be used.
async fn installed_version(peer: &Peer) -> Result<String, String> {
    let script = manifest_dir().join(peer.script);
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    let mut command = Command::new(peer.program);
    command.args(peer.version_check);
    let output = run(command).await?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{} cannot load it ({}); install it with `{}`",
            peer.program,
            error_line(&String::from_utf8_lossy(&output.stderr)),
            peer.install_hint
        ))
    }
}

/// The line of an interpreter's error output that says what went wrong.
fn error_line(stderr: &str) -> &str {
    let mut lines = stderr.lines().map(str::trim);
    lines
        .clone()
        .find(|line| line.contains("Error:") || line.contains("Error ["))
        .or_else(|| lines.rfind(|line| !line.is_empty()))
        .unwrap_or("no output")
}

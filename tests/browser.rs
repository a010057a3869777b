//! The `examples/echo` sample page end to end in a real browser: the
//! example binary itself serves on 127.0.0.1:0, and
//! `tests/peers/browser_echo_page.mjs` drives the page in headless Chromium
//! (Debian's `/usr/bin/chromium`, through playwright-core pinned in
//! `tests/peers/package-lock.json`): connect, echo a plain message, one with
//! `<script>` in it (logged escaped), a 64 KiB one, close with 1000, and
//! save screenshots as `<target dir>/browser-echo*.png`.
//!
//! Chromium and playwright-core are installed by `.ci/run`. Where one is
//! missing the test is skipped with a message, unless
//! `TOWER_WEBSOCKETS_REQUIRE_BROWSER=1` (as in CI) makes that a failure.

mod common;

use common::process::{PROCESS_TIMEOUT, manifest_dir, note, run, skip};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

const REQUIRE_ENV: &str = "TOWER_WEBSOCKETS_REQUIRE_BROWSER";

/// The browser; the `CHROMIUM` environment variable overrides it.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

const PAGE_SCRIPT: &str = "tests/peers/browser_echo_page.mjs";

#[tokio::test]
async fn echo_page_works_in_headless_chromium() {
    let versions = match browser_versions().await {
        Ok(versions) => versions,
        Err(why) => return skip(REQUIRE_ENV, &format!("browser test: {why}")),
    };
    note(&format!("browser test: using {versions}"));

    let echo = echo_example().await;
    let mut server = EchoServer::start(&echo).await;

    let url = format!("http://{}/", server.addr);
    let screenshot = target_dir().join("browser-echo.png");
    let mut command = Command::new("node");
    command
        .arg(PAGE_SCRIPT)
        .arg(&url)
        .arg(&screenshot)
        .env("CHROMIUM", chromium());
    let output = run(command).await.unwrap_or_else(|why| panic!("{why}"));

    // The server must have outlived the whole session.
    let server_status = server.child.try_wait().expect("the echo example's status");
    assert!(
        output.status.success() && server_status.is_none(),
        "the echo page failed in Chromium: `node {PAGE_SCRIPT} {url} {}` exited with {}{}\n\
         stdout:\n{}\nstderr:\n{}\necho example output:\n{}",
        screenshot.display(),
        output.status,
        match server_status {
            Some(status) => format!(", and the echo example exited with {status}"),
            None => String::new(),
        },
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end(),
        server.output(),
    );
    note(&format!(
        "browser test: screenshots in {}",
        screenshot.with_file_name("browser-echo*.png").display()
    ));
    server.stop().await;
}

/// The example binary, run as a child process.
struct EchoServer {
    child: Child,
    addr: String,
    /// Everything it printed, for failure messages.
    output: Arc<Mutex<String>>,
}

impl EchoServer {
    /// Starts `echo --addr 127.0.0.1:0` and reads the address it bound from
    /// its "Listening on http://ADDR" line.
    async fn start(echo: &Path) -> EchoServer {
        let mut child = Command::new(echo)
            .args(["--addr", "127.0.0.1:0", "--threads", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", echo.display()));
        let output = Arc::new(Mutex::new(String::new()));
        // Keep draining stderr, so that logging never blocks the server.
        tokio::spawn(collect(child.stderr.take().unwrap(), output.clone(), None));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(collect(
            child.stdout.take().unwrap(),
            output.clone(),
            Some(addr_tx),
        ));
        let addr = match tokio::time::timeout(PROCESS_TIMEOUT, addr_rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => panic!(
                "the echo example ended without printing \"Listening on http://ADDR\"; \
                 it printed:\n{}",
                output.lock().unwrap()
            ),
            Err(_) => panic!(
                "the echo example printed no \"Listening on http://ADDR\" in {PROCESS_TIMEOUT:?}; \
                 it printed:\n{}",
                output.lock().unwrap()
            ),
        };
        EchoServer {
            child,
            addr,
            output,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Kills the example (it is also killed if the test panics first).
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(PROCESS_TIMEOUT, self.child.wait()).await;
    }
}

/// Appends the lines of `from` to `output`; sends the address of the first
/// "Listening on http://ADDR" line to `addr`.
async fn collect(
    from: impl AsyncRead + Unpin,
    output: Arc<Mutex<String>>,
    mut addr: Option<tokio::sync::oneshot::Sender<String>>,
) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(found) = line.strip_prefix("Listening on http://") {
            if let Some(addr) = addr.take() {
                let _ = addr.send(found.trim().to_owned());
            }
        }
        let mut output = output.lock().unwrap();
        output.push_str(&line);
        output.push('\n');
    }
}

/// The `echo` example built with the same profile as this test: the one
/// `cargo test` built beside it, or, if that is missing or older than the
/// sources (say, under `cargo test --test browser`), a fresh build.
async fn echo_example() -> PathBuf {
    let profile_dir = profile_dir();
    let echo = profile_dir
        .join("examples")
        .join(format!("echo{}", std::env::consts::EXE_SUFFIX));
    if is_up_to_date(&echo) {
        return echo;
    }
    let mut command = Command::new(env!("CARGO"));
    command
        .args(["build", "--example", "echo"])
        .env("CARGO_TARGET_DIR", target_dir());
    match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    let output = run(command).await.unwrap_or_else(|why| panic!("{why}"));
    assert!(
        output.status.success(),
        "building the echo example failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        echo.is_file(),
        "`cargo build --example echo` did not produce {}",
        echo.display()
    );
    echo
}

/// Whether `binary` exists and is newer than everything it is built from.
fn is_up_to_date(binary: &Path) -> bool {
    let Some(built) = modified(binary) else {
        return false;
    };
    let root = manifest_dir();
    let mut newest = [root.join("Cargo.toml"), root.join("examples/echo.rs")]
        .iter()
        .filter_map(|path| modified(path))
        .max();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                newest = newest.max(modified(&path));
            }
        }
    }
    newest.is_some_and(|newest| newest <= built)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

/// `<target>/<profile>`: this test runs as `<target>/<profile>/deps/browser-*`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in <target>/<profile>/deps", exe.display()))
        .to_owned()
}

fn target_dir() -> PathBuf {
    let profile_dir = profile_dir();
    profile_dir
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent", profile_dir.display()))
        .to_owned()
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| DEFAULT_CHROMIUM.into(), PathBuf::from)
}

/// The versions of Chromium and playwright-core, or why they cannot be
/// used.
async fn browser_versions() -> Result<String, String> {
    let chromium = chromium();
    if !chromium.is_file() {
        return Err(format!(
            "{} is missing; install it with `apt-get install chromium chromium-driver`",
            chromium.display()
        ));
    }
    let mut command = Command::new(&chromium);
    command.arg("--version");
    let output = run(command).await?;
    if !output.status.success() {
        return Err(format!(
            "`{} --version` failed with {}",
            chromium.display(),
            output.status
        ));
    }
    let chromium_version = String::from_utf8_lossy(&output.stdout).trim().to_owned();

    let mut command = Command::new("node");
    // Resolved from tests/peers/, where package-lock.json pins it.
    command.args([
        "--input-type=module",
        "-e",
        "import { createRequire } from 'node:module'; \
         const require = createRequire(process.cwd() + '/tests/peers/'); \
         console.log('playwright-core', require('playwright-core/package.json').version);",
    ]);
    let output = run(command).await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = stderr
            .lines()
            .find(|line| line.contains("Error:") || line.contains("Error ["))
            .unwrap_or("no output");
        return Err(format!(
            "node cannot load playwright-core ({why}); install it with `npm ci --prefix tests/peers`"
        ));
    }
    let playwright_version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(format!("{chromium_version}, {playwright_version}"))
}

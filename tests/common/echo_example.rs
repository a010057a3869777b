//! An example (`echo`, `production`) as a child process: built with the
//! test's own profile when it is missing or stale, started on 127.0.0.1:0,
//! killed when the test ends.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::process::{PROCESS_TIMEOUT, manifest_dir, run};

/// The example binary, run as a child process.
pub struct EchoServer {
    pub child: Child,
    /// `HOST:PORT` it listens on.
    pub addr: String,
    /// Everything it printed, for failure messages.
    output: Arc<Mutex<String>>,
    /// The tasks that collect its stdout and stderr.
    collectors: Vec<tokio::task::JoinHandle<()>>,
}

impl EchoServer {
    /// Starts `echo --addr 127.0.0.1:0 --threads 2 ARGS...` and reads the
    /// address it bound from its "Listening on http://ADDR" line.
    pub async fn start(echo: &Path, args: &[&str]) -> EchoServer {
        let mut child = Command::new(echo)
            .args(["--addr", "127.0.0.1:0", "--threads", "2"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", echo.display()));
        let output = Arc::new(Mutex::new(String::new()));
        // Keep draining stderr, so that logging never blocks the server.
        let stderr = tokio::spawn(collect(child.stderr.take().unwrap(), output.clone(), None));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let stdout = tokio::spawn(collect(
            child.stdout.take().unwrap(),
            output.clone(),
            Some(addr_tx),
        ));
        let addr = match tokio::time::timeout(PROCESS_TIMEOUT, addr_rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => panic!(
                "the example ended without printing \"Listening on http://ADDR\"; \
                 it printed:\n{}",
                output.lock().unwrap()
            ),
            Err(_) => panic!(
                "the example printed no \"Listening on http://ADDR\" in {PROCESS_TIMEOUT:?}; \
                 it printed:\n{}",
                output.lock().unwrap()
            ),
        };
        EchoServer {
            child,
            addr,
            output,
            collectors: vec![stdout, stderr],
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the example to exit by itself and returns its status with
    /// everything it printed.
    pub async fn exited(mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(PROCESS_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the example did not exit in {PROCESS_TIMEOUT:?}; it printed:\n{}",
                    self.output()
                )
            })
            .expect("the example's exit status");
        for collector in self.collectors.drain(..) {
            // Its pipes closed with it: the rest of its output is in.
            let _ = collector.await;
        }
        (status, self.output())
    }

    /// Kills the example (it is also killed if the test panics first).
    pub async fn stop(mut self) {
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
        let listening = line
            .strip_prefix("Listening on http://")
            .or_else(|| line.strip_prefix("Listening on https://"));
        if let Some(found) = listening
            && let Some(addr) = addr.take()
        {
            let _ = addr.send(found.trim().to_owned());
        }
        let mut output = output.lock().unwrap();
        output.push_str(&line);
        output.push('\n');
    }
}

/// The `echo` example built with the same profile as this test (see
/// [`example`]).
pub async fn echo_example() -> PathBuf {
    example("echo").await
}

/// The example `name` built with the same profile as this test: the one
/// `cargo test` built beside it, or, if that is missing or older than the
/// sources (say, under `cargo test --test browser`), a fresh build.
pub async fn example(name: &str) -> PathBuf {
    let profile_dir = profile_dir();
    let binary = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if is_up_to_date(&binary, name) {
        return binary;
    }
    let mut command = Command::new(env!("CARGO"));
    command
        .args(["build", "--example", name])
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
        "building the {name} example failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        binary.is_file(),
        "`cargo build --example {name}` did not produce {}",
        binary.display()
    );
    binary
}

/// Whether `binary` exists and is newer than everything the example
/// `name` is built from.
fn is_up_to_date(binary: &Path, name: &str) -> bool {
    let Some(built) = modified(binary) else {
        return false;
    };
    let root = manifest_dir();
    let examples = root.join("examples");
    let mut newest =
        modified(&root.join("Cargo.toml")).max(modified(&examples.join(format!("{name}.rs"))));
    // An example is a file or a directory (`echo`: `main.rs`, its modules,
    // `index.html`); `common` is shared.
    let mut dirs = vec![
        root.join("src"),
        examples.join(name),
        examples.join("common"),
    ];
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

pub fn target_dir() -> PathBuf {
    let profile_dir = profile_dir();
    profile_dir
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent", profile_dir.display()))
        .to_owned()
}

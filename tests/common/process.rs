//! Running external programs from tests: bounded, killed on timeout, and
//! skipped (or failed, when required) when they are not installed.

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The longest any external program may run.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `command` in the crate's directory, bounded by [`PROCESS_TIMEOUT`];
/// the process is killed if it takes longer.
pub async fn run(mut command: Command) -> Result<std::process::Output, String> {
    command
        .current_dir(manifest_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let description = format!("{:?}", command.as_std());
    match tokio::time::timeout(PROCESS_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(error)) => Err(format!("cannot run {description}: {error}")),
        Err(_) => Err(format!(
            "{description} did not finish in {PROCESS_TIMEOUT:?} (killed)"
        )),
    }
}

pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Skips the calling test with `reason`, or fails it when the environment
/// variable `require_env` is `1`.
pub fn skip(require_env: &str, reason: &str) {
    if std::env::var(require_env).is_ok_and(|value| value == "1") {
        panic!("{reason} ({require_env}=1 makes this an error)");
    }
    note(&format!(
        "skipped: {reason} (set {require_env}=1 to make this an error)"
    ));
}

/// Prints past the test harness's output capture, so that a skip shows in
/// a plain `cargo test`.
pub fn note(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

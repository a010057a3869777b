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

use common::echo_example::{EchoServer, echo_example, example, target_dir};
use common::process::{note, run, skip};
use std::path::PathBuf;

use tokio::process::Command;

const REQUIRE_ENV: &str = "TOWER_WEBSOCKETS_REQUIRE_BROWSER";

/// The browser; the `CHROMIUM` environment variable overrides it.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

const PAGE_SCRIPT: &str = "tests/peers/browser_echo_page.mjs";

#[tokio::test]
async fn echo_page_works_in_headless_chromium() {
    run_page(&[], "browser-echo.png", None).await;
}

/// With `--deflate` Chromium's permessage-deflate offer is accepted, the
/// page shows it, and every echo (up to 64 KiB, in compressed 4 KiB
/// fragments) goes through it.
#[tokio::test]
async fn echo_page_works_in_headless_chromium_with_compression() {
    run_page(
        &["--deflate"],
        "browser-echo-deflate.png",
        Some("permessage-deflate"),
    )
    .await;
}

async fn run_page(args: &[&str], screenshot: &str, extensions: Option<&str>) {
    let versions = match browser_versions().await {
        Ok(versions) => versions,
        Err(why) => return skip(REQUIRE_ENV, &format!("browser test: {why}")),
    };
    note(&format!("browser test: using {versions}"));

    let echo = echo_example().await;
    let mut server = EchoServer::start(&echo, args).await;

    let url = format!("http://{}/", server.addr);
    let screenshot = target_dir().join(screenshot);
    let mut command = Command::new("node");
    command
        .arg(PAGE_SCRIPT)
        .arg(&url)
        .arg(&screenshot)
        .env("CHROMIUM", chromium());
    if let Some(extensions) = extensions {
        command.arg(extensions);
    }
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
        screenshot.display()
    ));
    server.stop().await;
}

/// `examples/tls` in Chromium over `https://`: the page loads over HTTP/2
/// (ALPN `h2`), its `wss://` socket opens as an HTTP/2 stream by extended
/// CONNECT (RFC 8441; the server logs the request's version), echoes and
/// closes with 1000. The certificate is made by the example at start, and
/// accepted for this browser context only.
#[tokio::test]
async fn wss_over_http2_extended_connect_in_headless_chromium() {
    let versions = match browser_versions().await {
        Ok(versions) => versions,
        Err(why) => return skip(REQUIRE_ENV, &format!("browser test: {why}")),
    };
    note(&format!("browser test: using {versions}"));
    let tls = example("tls").await;
    let server = EchoServer::start(&tls, &[]).await;
    let url = format!("https://{}/", server.addr);
    let screenshot = target_dir().join("browser-tls.png");
    let mut command = Command::new("node");
    command
        .arg(TLS_PAGE_SCRIPT)
        .arg(&url)
        .arg(&screenshot)
        .env("CHROMIUM", chromium());
    let output = run(command).await.unwrap_or_else(|why| panic!("{why}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains("received: hello over HTTP/2.0"),
        "the TLS page failed in Chromium: `node {TLS_PAGE_SCRIPT} {url}` exited with {}\n\
         stdout:\n{stdout}\nstderr:\n{}\nexample output:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim_end(),
        server.output(),
    );
    // On the server's side: the socket came as an HTTP/2 extended CONNECT.
    let accepted = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let log = server.output();
            if log.contains("websocket closed code=1000") {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| server.output());
    assert!(
        accepted.contains("websocket accepted version=HTTP/2.0"),
        "the server saw:\n{accepted}"
    );
    assert!(
        accepted.contains("websocket closed code=1000"),
        "{accepted}"
    );
    server.stop().await;
}

const TLS_PAGE_SCRIPT: &str = "tests/peers/browser_tls_page.mjs";

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

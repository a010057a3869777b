// Drives the examples/echo sample page in headless Chromium (Debian's
// /usr/bin/chromium, through playwright-core), as a person would: connect,
// send a plain message, one with <script> in it, and a 64 KiB one, see each
// come back in the Communication Log, close, and save a full-page
// screenshot (plus window-sized ones of its top and bottom).
//
//     node tests/peers/browser_echo_page.mjs PAGE_URL SCREENSHOT.png
//
// CHROMIUM overrides the browser binary. Exits 0 and prints "browser: ok"
// on success; on failure prints "browser: FAILED: why" to stderr (saving a
// screenshot of the failure beside SCREENSHOT.png when it can) and exits 1.
// Every wait is bounded.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Each page wait is bounded by WAIT_MS, launching the browser by
// LAUNCH_MS, the whole session by SESSION_MS (under the 60 s the Rust test
// allows, so that the browser is always closed by us, not killed).
const WAIT_MS = 15_000;
const LAUNCH_MS = 10_000;
const SESSION_MS = 40_000;

// Without the networking flags Chromium phones home at every start, and
// this machine's closed network refuses it.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

class Failure extends Error {}

function check(condition, message) {
  if (!condition) {
    throw new Failure(message);
  }
}

function describe(text) {
  return text.length > 60 ? `<${text.length} chars: ${JSON.stringify(text.slice(0, 30))}...>` : JSON.stringify(text);
}

/** The Communication Log as {from, to, data} rows (events have no from/to). */
function logRows(page) {
  return page.$$eval("#commsLog tr", (rows) =>
    rows.map((row) => {
      const cells = [...row.querySelectorAll("td")].map((td) => td.textContent);
      return cells.length === 3 ? { from: cells[0], to: cells[1], data: cells[2] } : { event: cells.join(" ") };
    }),
  );
}

async function waitForState(page, state) {
  try {
    await page.waitForFunction(
      (want) => document.getElementById("stateLabel").textContent === want,
      state,
      { timeout: WAIT_MS },
    );
  } catch {
    const label = await page.textContent("#stateLabel");
    throw new Failure(`state label: expected ${JSON.stringify(state)} within ${WAIT_MS} ms, it says ${JSON.stringify(label)}`);
  }
}

async function waitForLogEvent(page, text) {
  try {
    await page.waitForFunction(
      (want) => [...document.querySelectorAll("#commsLog tr")].some((row) => row.textContent === want),
      text,
      { timeout: WAIT_MS },
    );
  } catch {
    const events = (await logRows(page)).filter((row) => row.event).map((row) => row.event);
    throw new Failure(`log: expected the row ${JSON.stringify(text)} within ${WAIT_MS} ms; event rows: ${JSON.stringify(events)}`);
  }
}

/** Types `message` into the page, clicks Send, and waits for the echo. */
async function sendAndExpectEcho(page, message, what) {
  const before = (await logRows(page)).length;
  await page.fill("#sendMessage", message, { timeout: WAIT_MS });
  check((await page.inputValue("#sendMessage")) === message, `${what}: the input did not take the message`);
  await page.click("#sendButton", { timeout: WAIT_MS });
  try {
    await page.waitForFunction(
      ([skip, want]) =>
        [...document.querySelectorAll("#commsLog tr")].slice(skip).some((row) => {
          const cells = row.querySelectorAll("td");
          return cells.length === 3 && cells[0].textContent === "Server" && cells[1].textContent === "Client" && cells[2].textContent === want;
        }),
      [before, message],
      { timeout: WAIT_MS },
    );
  } catch {
    const rows = (await logRows(page)).slice(before).map((row) => (row.event ? row.event : `${row.from} -> ${row.to}: ${describe(row.data)}`));
    throw new Failure(`${what}: no "Server -> Client" row with the message within ${WAIT_MS} ms; new rows: ${JSON.stringify(rows)}`);
  }
  const rows = (await logRows(page)).slice(before);
  const sent = rows.filter((row) => row.from === "Client" && row.to === "Server" && row.data === message);
  check(sent.length === 1, `${what}: expected one "Client -> Server" row with the message, found ${sent.length}`);
}

async function drive(page, url, extensions) {
  const response = await page.goto(url, { timeout: WAIT_MS });
  check(response && response.ok(), `GET ${url}: HTTP ${response && response.status()}`);
  const title = await page.title();
  check(title === "WebSocket Sample Application", `title: ${JSON.stringify(title)}`);
  check((await page.textContent("#stateLabel")) === "Ready to connect...", "the page does not start 'Ready to connect...'");
  const wsUrl = await page.inputValue("#connectionUrl");
  check(wsUrl === url.replace(/^http/, "ws").replace(/\/?$/, "/ws"), `the prefilled server URL is ${JSON.stringify(wsUrl)}`);

  await page.click("#connectButton", { timeout: WAIT_MS });
  await waitForState(page, "Open");
  await waitForLogEvent(page, "Connection opened");
  if (extensions) {
    // Chromium offers permessage-deflate; the page logs what was agreed.
    await waitForLogEvent(page, `Extensions: ${extensions}`);
  }

  await sendAndExpectEcho(page, "Hello from Chromium", "plain message");

  // Must be logged as text, never run or parsed as markup.
  const markup = "<script>alert(1)</script><b>not bold</b> & \"quotes\" 'too'";
  await sendAndExpectEcho(page, markup, "message with <script>");
  const scripts = await page.$$eval("#commsLog script, #commsLog b", (found) => found.length);
  check(scripts === 0, `message with <script>: ${scripts} element(s) were created from it in the log`);
  const html = await page.$eval("#commsLog", (log) => log.innerHTML);
  check(html.includes("&lt;script&gt;alert(1)&lt;/script&gt;"), "message with <script>: the log's HTML does not hold it escaped");

  // 64 KiB: the server echoes it in 4 KiB fragments that the browser joins.
  const big = "0123456789abcdef".repeat(4096);
  await sendAndExpectEcho(page, big, "64 KiB message");
  // And multi-byte text bigger than the echo buffer, whose fragments split
  // characters.
  await sendAndExpectEcho(page, "ü€𝔸".repeat(1000), "9 KiB multi-byte message");

  await page.click("#closeButton", { timeout: WAIT_MS });
  await waitForLogEvent(page, "Connection closed. Code: 1000. Reason: Closing from client");
  await waitForState(page, "Closed");
  check(await page.isEnabled("#connectButton"), "Connect is not enabled again after closing");
}

async function main() {
  const [url, screenshot, extensions] = process.argv.slice(2);
  if (process.argv.length !== 4 && process.argv.length !== 5) {
    console.error("usage: browser_echo_page.mjs PAGE_URL SCREENSHOT.png [EXPECTED_EXTENSIONS]");
    return 2;
  }
  // Leave no screenshot of an earlier run to be mistaken for this one's.
  const base = screenshot.replace(/\.png$/, "");
  for (const old of [screenshot, `${base}-top.png`, `${base}-bottom.png`, `${base}-failure.png`]) {
    rmSync(old, { force: true });
  }
  const userDataDir = mkdtempSync(join(tmpdir(), "tower-websockets-chromium-"));
  let context;
  const problems = [];
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: LAUNCH_MS,
      viewport: { width: 1280, height: 800 },
    });
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(WAIT_MS);
    page.on("dialog", (dialog) => {
      problems.push(`a ${dialog.type()} dialog opened: ${JSON.stringify(dialog.message())}`);
      dialog.dismiss().catch(() => {});
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      // The page has no icon; Chromium's request for one gets a 404.
      if (message.type() === "error" && !message.location().url.endsWith("/favicon.ico")) {
        problems.push(`console error: ${message.text()}`);
      }
    });
    try {
      let timer;
      const deadline = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Failure(`the session took over ${SESSION_MS} ms`)), SESSION_MS);
      });
      await Promise.race([drive(page, url, extensions), deadline]).finally(() => clearTimeout(timer));
      check(problems.length === 0, `the page misbehaved: ${problems.join("; ")}`);
    } catch (error) {
      await page.screenshot({ path: `${base}-failure.png`, fullPage: true, timeout: WAIT_MS }).catch(() => {});
      throw error;
    }
    await page.screenshot({ path: screenshot, fullPage: true, timeout: WAIT_MS });
    // The 64 KiB rows make the full page some 40,000 pixels tall: also save
    // its top and its bottom at window size, for a person to look at.
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: `${base}-top.png`, timeout: WAIT_MS });
    await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
    await page.screenshot({ path: `${base}-bottom.png`, timeout: WAIT_MS });
  } catch (error) {
    if (!(error instanceof Failure)) {
      console.error(error);
    }
    console.error(`browser: FAILED: ${error.message}`);
    return 1;
  } finally {
    await context?.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
  console.log(`browser: ok (screenshots: ${screenshot}, its -top and -bottom)`);
  return 0;
}

process.exit(await main());

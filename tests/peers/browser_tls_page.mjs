// Drives examples/tls's page in headless Chromium over https:// (the
// example's self-signed certificate accepted for this one context): the
// page opens wss://…/ws, gets the server's greeting, echoes a message and
// closes with 1000. Prints the page's log; exits 0 and prints
// "browser: ok" when the log shows the whole exchange, else 1.
//
//     node tests/peers/browser_tls_page.mjs PAGE_URL SCREENSHOT.png
//
// Every wait is bounded.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 15_000;
const LAUNCH_MS = 10_000;

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

const [url, screenshot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "tls-browser-"));
let browser;
let code = 1;
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: LAUNCH_MS });
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const response = await page.goto(url, { timeout: WAIT_MS });
  console.log(`page: ${response.status()} over ${await response.request().headerValue(":scheme") ?? "?"}`);
  await page.waitForFunction(
    () => document.getElementById("log").textContent.includes("closed "),
    null,
    { timeout: WAIT_MS },
  );
  const log = await page.textContent("#log");
  console.log(log.trim());
  await page.screenshot({ path: screenshot, fullPage: true });
  if (log.includes("received: hello over") && log.includes("echoed") && log.includes("closed 1000")) {
    console.log("browser: ok");
    code = 0;
  } else {
    console.error(`browser: FAILED: the page log is ${JSON.stringify(log)}`);
  }
} catch (error) {
  console.error(`browser: FAILED: ${error.message}`);
} finally {
  if (browser) await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);

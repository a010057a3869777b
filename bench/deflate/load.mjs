// A closed-loop load of compressed JSON echoes, with Node's `ws` client.
//
//     node bench/deflate/load.mjs --url ws://127.0.0.1:PORT/ws --server-pid PID
//         [--connections 16] [--size 1024] [--duration 3] [--warmup 1]
//         [--no-takeover] [--no-deflate] [--rate MSGS_PER_S]
//
// Each connection sends a JSON text of about --size bytes (repetitive, as
// API payloads are, with a counter that changes every message), waits for
// its echo, checks it, and sends the next. After the warm-up it counts for
// --duration seconds: echoed messages, the server's CPU time (utime +
// stime from /proc/PID/stat at the window's start and end) and the bytes
// on the wire both ways (the TCP sockets' byte counts). Prints one JSON
// line. Loopback only; every run is bounded by its duration. `--rate`
// spaces each connection's messages so that all together send at most that
// many per second (to measure a server at another server's pace).

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(new URL("../../tests/peers/package.json", import.meta.url));
const WebSocket = require("ws");

function flag(name, fallback) {
  const at = process.argv.indexOf(name);
  return at < 0 ? fallback : process.argv[at + 1];
}
const url = flag("--url");
const pid = Number(flag("--server-pid"));
const connections = Number(flag("--connections", "16"));
const size = Number(flag("--size", "1024"));
const duration = Number(flag("--duration", "3"));
const warmup = Number(flag("--warmup", "1"));
const noTakeover = process.argv.includes("--no-takeover");
const deflate = !process.argv.includes("--no-deflate");
const rate = Number(flag("--rate", "0"));
if (!process.argv.includes("--dump") && (!url || !Number.isInteger(pid))) {
  console.error("usage: load.mjs --url URL --server-pid PID [...]");
  process.exit(2);
}
const CLK_TCK = 100;

function serverTicks() {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** The items that make the JSON about `size` bytes long. */
const ITEMS = (() => {
  const items = [];
  while (JSON.stringify({ seq: 0, user: "user-42", status: "ok", items }).length < size) {
    const i = items.length;
    items.push({ sku: `SKU-${1000 + (i % 50)}`, name: `item ${i % 50}`, qty: ((i * 7) % 5) + 1, price: 9.99 + (i % 10) });
  }
  return items;
})();

/** A JSON text of about --size bytes; `n` changes it every message. */
function payload(n) {
  return JSON.stringify({ seq: n, user: "user-42", status: "ok", items: ITEMS });
}

// --dump FILE: write the first message to FILE and stop (for the codec's
// own cost, bench/src/bin/deflate-limit.rs).
if (process.argv.includes("--dump")) {
  const { writeFileSync } = await import("node:fs");
  writeFileSync(flag("--dump"), payload(0));
  process.exit(0);
}

const options = deflate
  ? {
      perMessageDeflate: {
        threshold: 0,
        clientMaxWindowBits: true,
        serverNoContextTakeover: noTakeover,
        clientNoContextTakeover: noTakeover,
      },
      maxPayload: 64 * 1024 * 1024,
    }
  : { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 };

let counting = false;
let stopped = false;
let messages = 0;
let errors = 0;
let extensions = null;
const sockets = [];

function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    ws.once("upgrade", (res) => {
      extensions = res.headers["sec-websocket-extensions"] || null;
    });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

async function loop(ws, id) {
  let n = id * 1_000_000;
  // With --rate: this connection's share, one message every `interval` ms.
  const interval = rate > 0 ? (connections * 1000) / rate : 0;
  let due = performance.now();
  while (!stopped) {
    if (interval > 0) {
      due += interval;
      const wait = due - performance.now();
      if (wait > 0) {
        await new Promise((r) => setTimeout(r, wait));
      }
    }
    const message = payload(n++);
    const echoed = await new Promise((resolve) => {
      ws.once("message", (data) => resolve(data.toString()));
      ws.send(message);
    });
    if (echoed !== message) {
      errors++;
    }
    if (counting) {
      messages++;
    }
  }
}

function wireBytes() {
  return sockets.reduce((sum, ws) => sum + ws._socket.bytesRead + ws._socket.bytesWritten, 0);
}

for (let i = 0; i < connections; i++) {
  sockets.push(await open());
}
const loops = sockets.map((ws, i) => loop(ws, i));
await new Promise((r) => setTimeout(r, warmup * 1000));
const ticks0 = serverTicks();
const bytes0 = wireBytes();
const start = process.hrtime.bigint();
counting = true;
await new Promise((r) => setTimeout(r, duration * 1000));
counting = false;
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const ticks1 = serverTicks();
const bytes1 = wireBytes();
stopped = true;
await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, 2000))]);
for (const ws of sockets) {
  ws.terminate();
}
const cpuUs = ((ticks1 - ticks0) / CLK_TCK) * 1e6;
console.log(
  JSON.stringify({
    size,
    payload_bytes: Buffer.byteLength(payload(0)),
    connections,
    deflate,
    no_takeover: noTakeover,
    extensions,
    seconds: Number(seconds.toFixed(3)),
    msgs: messages,
    msgs_per_s: Math.round(messages / seconds),
    server_cpu_us_per_msg: messages ? Number((cpuUs / messages).toFixed(2)) : null,
    wire_bytes_per_msg: messages ? Math.round((bytes1 - bytes0) / messages) : null,
    errors,
  }),
);
process.exit(0);

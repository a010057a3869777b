// Server memory per idle socket with permessage-deflate negotiated.
//
//     node bench/deflate/idle.mjs --url ws://127.0.0.1:PORT/ws --server-pid PID
//         [--count 1000] [--no-takeover] [--no-deflate] [--size 1024]
//         [--window-bits 9..15]
//
// Opens --count sockets (compression offered unless --no-deflate), has
// each echo one JSON message of about --size bytes (so that a server with
// context takeover has built its codecs), then lets them idle for a second
// and reads the server's VmRSS: the growth from before the first socket,
// divided by the sockets, is the KiB an idle socket costs. --window-bits
// offers that window both ways (server_max_window_bits and
// client_max_window_bits). Prints one JSON line. Loopback only; bounded by
// its count.

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
const count = Number(flag("--count", "1000"));
const size = Number(flag("--size", "1024"));
const noTakeover = process.argv.includes("--no-takeover");
const deflate = !process.argv.includes("--no-deflate");
const windowBits = flag("--window-bits") === undefined ? undefined : Number(flag("--window-bits"));
if (!url || !Number.isInteger(pid)) {
  console.error("usage: idle.mjs --url URL --server-pid PID [...]");
  process.exit(2);
}

function rssKib() {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

const items = [];
while (JSON.stringify({ seq: 0, items }).length < size) {
  items.push({ sku: `SKU-${1000 + (items.length % 50)}`, qty: (items.length % 5) + 1 });
}
const options = deflate
  ? {
      perMessageDeflate: {
        threshold: 0,
        clientMaxWindowBits: windowBits ?? true,
        ...(windowBits === undefined ? {} : { serverMaxWindowBits: windowBits }),
        serverNoContextTakeover: noTakeover,
        clientNoContextTakeover: noTakeover,
      },
    }
  : { perMessageDeflate: false };

async function openAndEcho(i) {
  const ws = new WebSocket(url, options);
  let extensions = null;
  ws.once("upgrade", (res) => {
    extensions = res.headers["sec-websocket-extensions"] || null;
  });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  const message = JSON.stringify({ seq: i, items });
  const echoed = await new Promise((resolve) => {
    ws.once("message", (data) => resolve(data.toString()));
    ws.send(message);
  });
  if (echoed !== message) {
    throw new Error(`socket ${i}: the echo differs`);
  }
  return { ws, extensions };
}

const before = rssKib();
const sockets = [];
const BATCH = 50;
for (let i = 0; i < count; i += BATCH) {
  const batch = [];
  for (let j = i; j < Math.min(count, i + BATCH); j++) {
    batch.push(openAndEcho(j));
  }
  sockets.push(...(await Promise.all(batch)));
}
await new Promise((r) => setTimeout(r, 1000));
const after = rssKib();
console.log(
  JSON.stringify({
    count,
    deflate,
    no_takeover: noTakeover,
    window_bits: windowBits ?? null,
    extensions: sockets[0].extensions,
    rss_before_kib: before,
    rss_after_kib: after,
    kib_per_socket: Number(((after - before) / count).toFixed(2)),
  }),
);
for (const { ws } of sockets) {
  ws.terminate();
}
process.exit(0);

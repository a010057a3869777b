// Node's `ws` echo server with permessage-deflate, the compressing server a
// user would most likely pick instead: bench/deflate/run.sh measures it
// beside tower-websockets.
//
//     node bench/deflate/server.mjs --port PORT [--no-takeover]
//
// Echoes every message as it came (text as text, binary as binary) on
// 127.0.0.1:PORT. `--no-takeover` asks for no context takeover both ways.

import { createRequire } from "node:module";

const require = createRequire(new URL("../../tests/peers/package.json", import.meta.url));
const { WebSocketServer } = require("ws");

const args = process.argv.slice(2);
const port = Number(args[args.indexOf("--port") + 1]);
const noTakeover = args.includes("--no-takeover");
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: server.mjs --port PORT [--no-takeover]");
  process.exit(2);
}

const server = new WebSocketServer({
  host: "127.0.0.1",
  port,
  maxPayload: 64 * 1024 * 1024,
  // Every message compressed (as the tower-websockets server does from 256
  // bytes, and every payload here is larger).
  perMessageDeflate: {
    threshold: 0,
    serverNoContextTakeover: noTakeover,
    clientNoContextTakeover: noTakeover,
  },
});
server.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
});
server.on("listening", () => console.log(`Listening on http://127.0.0.1:${port}`));

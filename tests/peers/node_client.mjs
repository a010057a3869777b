// An independent client for tower-websockets: Node's `ws`.
//
//     node tests/peers/node_client.mjs BASE_URL SCENARIO
//
// BASE_URL is the server's WebSocket base, such as ws://127.0.0.1:5000; the
// scenarios talk to BASE_URL/ws, which must echo (tests/common's
// `echo_server`, or examples/echo), and for "subprotocol" must understand
// `/ws?protocol=NAME` (the server chooses NAME). "origin" needs a server
// that allows only https://good.example.
//
// Exits 0 and prints "SCENARIO: ok" on success; on failure prints
// "SCENARIO: FAILED: why" to stderr and exits 1 (2 for bad arguments).
// Every wait is bounded.

import WebSocket from "ws";

// Each wait is bounded by this; a whole scenario by SCENARIO_TIMEOUT_MS.
const TIMEOUT_MS = 10_000;
const SCENARIO_TIMEOUT_MS = 45_000;
const MIB = 1024 * 1024;

class Failure extends Error {}

function check(condition, message) {
  if (!condition) {
    throw new Failure(message);
  }
}

function describe(value) {
  if (Buffer.isBuffer(value)) {
    return `<${value.length} bytes${value.length ? ": " + value.subarray(0, 16).toString("hex") : ""}...>`;
  }
  if (typeof value === "string" && value.length > 40) {
    return `<${value.length} chars: ${JSON.stringify(value.slice(0, 20))}...>`;
  }
  return JSON.stringify(value);
}

/** Rejects with `what` timing out if `promise` takes longer than TIMEOUT_MS. */
function bounded(promise, what, ms = TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A connected socket with a queue of received messages, pongs and the
 * close event.
 */
class Client {
  static async open(base, path = "/ws", protocols = [], options = {}) {
    // Compression only where a scenario asks for it (ws offers it by
    // default).
    const ws = new WebSocket(base + path, protocols, {
      maxPayload: 17 * MIB,
      perMessageDeflate: false,
      ...options,
    });
    const client = new Client(ws);
    ws.once("upgrade", (res) => {
      client.extensionsHeader = res.headers["sec-websocket-extensions"];
    });
    await bounded(
      new Promise((resolve, reject) => {
        ws.once("open", resolve);
        ws.once("error", reject);
        ws.once("unexpected-response", (_req, res) =>
          reject(new Failure(`handshake for ${path}: unexpected HTTP ${res.statusCode}`)),
        );
      }),
      `opening ${path}`,
    );
    return client;
  }

  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.error = null;
    ws.on("message", (data, isBinary) => this.push({ kind: "message", data, isBinary }));
    ws.on("pong", (data) => this.push({ kind: "pong", data }));
    ws.on("close", (code, reason) => this.push({ kind: "close", code, reason: reason.toString() }));
    ws.on("error", (error) => {
      this.error = error;
    });
  }

  push(event) {
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter(event);
    } else {
      this.queue.push(event);
    }
  }

  /** The next message, pong or close event. */
  next(what) {
    if (this.queue.length) {
      return Promise.resolve(this.queue.shift());
    }
    return bounded(new Promise((resolve) => this.waiters.push(resolve)), what);
  }

  async expect(kind, what) {
    const event = await this.next(what);
    check(
      event.kind === kind,
      `${what}: expected a ${kind}, got ${event.kind}` +
        (event.kind === "close" ? ` (code ${event.code}, reason ${JSON.stringify(event.reason)})` : "") +
        (this.error ? ` after error ${this.error.message}` : ""),
    );
    return event;
  }

  send(data, options = {}) {
    return new Promise((resolve, reject) =>
      this.ws.send(data, options, (error) => (error ? reject(error) : resolve())),
    );
  }

  /** Sends `message` and checks that the same message comes back. */
  async echo(message, what) {
    await this.send(message);
    await this.expectMessage(message, what);
  }

  async expectMessage(message, what) {
    const binary = Buffer.isBuffer(message);
    const { data, isBinary } = await this.expect("message", what);
    check(isBinary === binary, `${what}: sent ${binary ? "binary" : "text"}, got ${isBinary ? "binary" : "text"}`);
    const got = binary ? data : data.toString("utf8");
    const same = binary ? message.equals(got) : got === message;
    check(same, `${what}: sent ${describe(message)}, got ${describe(got)} back`);
  }

  /** Closes with `code` and `reason`; returns what the server's Close said. */
  async close(code, reason, what = "close") {
    this.ws.close(code, reason);
    const { code: gotCode, reason: gotReason } = await this.expect("close", what);
    return { code: gotCode, reason: gotReason };
  }

  async closeNormally() {
    const { code } = await this.close(1000, "", "normal close");
    check(code === 1000, `normal close: expected the server to answer 1000, got ${code}`);
  }
}

// permessage-deflate (RFC 7692): the client's offer for each scenario, and
// the response header the server (default DeflateOptions) must answer with.
const DEFLATE_OFFERS = {
  deflate: [{ clientMaxWindowBits: true }, "permessage-deflate"],
  "deflate-no-takeover": [
    { serverNoContextTakeover: true, clientNoContextTakeover: true },
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
  ],
  "deflate-small-windows": [
    { serverMaxWindowBits: 9, clientMaxWindowBits: 9 },
    "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
  ],
};

function deflateScenario(name) {
  const [offer, expected] = DEFLATE_OFFERS[name];
  return async (base) => {
    // threshold 0: the client compresses every message, even empty ones.
    const client = await Client.open(base, "/ws", [], {
      perMessageDeflate: { ...offer, threshold: 0 },
    });
    // (`ws.extensions` names the extensions only; the header has the
    // parameters.)
    const answered = client.extensionsHeader;
    check(answered === expected, `${name}: the server answered ${JSON.stringify(answered)}, expected ${JSON.stringify(expected)}`);
    for (let round = 0; round < 2; round++) {
      // 16 MiB once: it is slow through the test build.
      const sizes = [0, 1, 125, 64 * 1024, MIB].concat(round === 0 ? [16 * MIB] : []);
      for (const size of sizes) {
        const binary = Buffer.alloc(size);
        for (let i = 0; i < size; i++) {
          binary[i] = (i % 97) ^ ((i >> 10) & 0x0f);
        }
        await client.echo(binary, `${name}: ${size}-byte binary, round ${round}`);
        // "héllo " is 7 bytes in UTF-8: at most `size` bytes.
        const text = "héllo ".repeat(Math.floor(size / 7)) + "x".repeat(size % 7);
        await client.echo(text, `${name}: ${text.length}-char text, round ${round}`);
      }
    }
    // A fragmented message: ws compresses it as one message over frames.
    await client.send("compressed ", { fin: false });
    await client.send("in ", { fin: false });
    await client.send("fragments ".repeat(1000), { fin: true });
    await client.expectMessage("compressed in " + "fragments ".repeat(1000), `${name}: fragmented text`);
    await client.closeNormally();
  };
}

const scenarios = {
  ...Object.fromEntries(Object.keys(DEFLATE_OFFERS).map((name) => [name, deflateScenario(name)])),
  async text(base) {
    const client = await Client.open(base);
    await client.echo("hello", "short text");
    await client.echo("", "empty text");
    await client.echo("héllo wörld, 你好, 🦀", "non-ASCII text");
    // Bigger than the server's 4 KiB echo buffer, so it comes back in
    // fragments split inside multi-byte characters.
    await client.echo("ü€🦀".repeat(3000), "27 KiB of multi-byte text");
    await client.echo("x".repeat(MIB), "1 MiB text");
    await client.closeNormally();
  },

  async binary(base) {
    const client = await Client.open(base);
    for (const size of [0, 1, 125, 126, 127, 4096, 65535, 65536, 65537, MIB]) {
      const payload = Buffer.alloc(size);
      for (let i = 0; i < size; i++) {
        payload[i] = (i * 31 + size) % 256;
      }
      await client.echo(payload, `${size}-byte binary`);
    }
    await client.closeNormally();
  },

  async fragmented(base) {
    const client = await Client.open(base);
    // `fin: false` sends a fragment; the next send continues the message.
    await client.send("frag", { fin: false });
    await client.send("ment", { fin: false });
    await client.send("ed", { fin: true });
    await client.expectMessage("fragmented", "fragmented text");

    // A text message with "€" (e2 82 ac) split between two frames: UTF-8
    // is validated over the message, not per frame.
    await client.send(Buffer.from([0x70, 0x72, 0x69, 0x63, 0x65, 0x3a, 0x20, 0xe2]), {
      binary: false,
      fin: false,
    });
    await client.send(Buffer.from([0x82, 0xac]), { binary: false, fin: true });
    await client.expectMessage("price: €", "text with a character split between frames");

    // Binary, with an empty fragment and a ping between fragments.
    const part = Buffer.alloc(70_000, 7);
    await client.send(part, { binary: true, fin: false });
    await client.send(Buffer.alloc(0), { binary: true, fin: false });
    client.ws.ping(Buffer.from("between fragments"));
    await client.send(Buffer.from([1, 2, 3]), { binary: true, fin: true });
    const pong = await client.expect("pong", "pong for the ping between fragments");
    check(
      pong.data.toString() === "between fragments",
      `pong between fragments: payload ${describe(pong.data)}`,
    );
    await client.expectMessage(Buffer.concat([part, Buffer.from([1, 2, 3])]), "fragmented binary");
    await client.closeNormally();
  },

  async ping(base) {
    const client = await Client.open(base);
    for (const payload of [Buffer.from("ping-payload"), Buffer.alloc(0), Buffer.from([...Array(125).keys()])]) {
      client.ws.ping(payload);
      const pong = await client.expect("pong", `pong for a ${payload.length}-byte ping`);
      check(
        pong.data.equals(payload),
        `ping: sent payload ${describe(payload)}, the pong carried ${describe(pong.data)}`,
      );
    }
    await client.echo("after pings", "text after pings");
    await client.closeNormally();
  },

  async close(base) {
    const client = await Client.open(base);
    await client.echo("before close", "text before close");
    // The close event reports the code and reason of the server's Close.
    const { code, reason } = await client.close(4001, "bye");
    check(code === 4001, `close: expected the server to echo code 4001, the library reports ${code}`);
    check(
      reason === "bye",
      `close: expected the server to echo reason "bye", the library reports ${JSON.stringify(reason)}`,
    );
  },

  async subprotocol(base) {
    let client = await Client.open(base, "/ws?protocol=superchat", ["chat", "superchat"]);
    check(
      client.ws.protocol === "superchat",
      `subprotocol: expected "superchat", the library reports ${JSON.stringify(client.ws.protocol)}`,
    );
    await client.echo("with a subprotocol", "text with a subprotocol");
    await client.closeNormally();

    // (Offering some and getting none is an error to `ws`, though RFC 6455
    // allows it; so the no-subprotocol case offers none.)
    client = await Client.open(base, "/ws");
    check(
      client.ws.protocol === "",
      `no subprotocol: the library reports ${JSON.stringify(client.ws.protocol)}`,
    );
    await client.closeNormally();

    // Choosing one the client did not offer fails the server's accept; the
    // test server answers that with 400.
    const status = await rejectedStatus(base, "/ws?protocol=superchat", ["chat"], {});
    check(status === 400, `subprotocol not offered: expected HTTP 400, got ${status}`);
  },

  async origin(base) {
    const status = await rejectedStatus(base, "/ws", [], { origin: "https://evil.example" });
    check(status === 403, `origin: expected HTTP 403, the library reports ${status}`);
    // The allowed origin, in any case, still gets in.
    for (const origin of ["https://good.example", "HTTPS://Good.Example"]) {
      const client = await Client.open(base, "/ws", [], { origin });
      await client.echo(`from ${origin}`, `text with Origin ${origin}`);
      await client.closeNormally();
    }
  },
};

/**
 * Opens a socket that the server must refuse; resolves with the HTTP status
 * `ws` reports for the refusal.
 */
function rejectedStatus(base, path, protocols, options) {
  const ws = new WebSocket(base + path, protocols, options);
  return bounded(
    new Promise((resolve, reject) => {
      ws.once("unexpected-response", (req, res) => {
        resolve(res.statusCode);
        req.destroy();
      });
      ws.once("open", () => {
        ws.terminate();
        reject(new Failure(`the handshake for ${path} with ${JSON.stringify(options)} succeeded`));
      });
      ws.on("error", (error) => reject(error));
    }),
    `refused handshake for ${path}`,
  );
}

async function main() {
  const [base, name] = process.argv.slice(2);
  if (process.argv.length !== 4 || !Object.hasOwn(scenarios, name)) {
    console.error(`usage: node_client.mjs BASE_URL (${Object.keys(scenarios).join("|")})`);
    return 2;
  }
  try {
    await bounded(scenarios[name](base.replace(/\/+$/, "")), name, SCENARIO_TIMEOUT_MS);
  } catch (error) {
    if (!(error instanceof Failure)) {
      console.error(error);
    }
    console.error(`${name}: FAILED: ${error.message}`);
    return 1;
  }
  console.log(`${name}: ok`);
  return 0;
}

// Exit at once: a socket a failed scenario left open must not keep us alive.
process.exit(await main());

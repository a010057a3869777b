#!/usr/bin/env python3
"""An independent client for tower-websockets: Python's `websockets` (asyncio).

    python3 tests/peers/python_client.py BASE_URL SCENARIO

BASE_URL is the server's WebSocket base, such as ws://127.0.0.1:5000; the
scenarios talk to BASE_URL/ws, which must echo (tests/common's
`echo_server`, or examples/echo), and for "subprotocol" must understand
`/ws?protocol=NAME` (the server chooses NAME). "origin" needs a server that
allows only https://good.example.

Exits 0 and prints "SCENARIO: ok" on success; on failure prints
"SCENARIO: FAILED: why" to stderr and exits 1 (2 for bad arguments).
Every wait is bounded.
"""

import asyncio
import os
import random
import sys
import traceback

# The ASP.NET echo loop answers a 16 MiB message in 4 KiB pieces: 4,097
# frames, one more than websockets takes by default. (Read at import.)
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", "65536")

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

# Each wait is bounded by this; a whole scenario by SCENARIO_TIMEOUT.
TIMEOUT = 10
SCENARIO_TIMEOUT = 45
MIB = 1024 * 1024


class Failure(Exception):
    """A scenario's expectation was not met."""


def check(condition, message):
    # Not `assert`: that disappears under `python3 -O`.
    if not condition:
        raise Failure(message)


def describe(value):
    """A short description of a message for failure messages."""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes{': ' + repr(bytes(value[:16])) if value else ''}...>"
    if isinstance(value, str) and len(value) > 40:
        return f"<{len(value)} chars: {value[:20]!r}...>"
    return repr(value)


def open_socket(base, path="/ws", **kwargs):
    # No proxy (the environment's must not apply to loopback), 17 MiB
    # messages, and no automatic pings to keep the traffic ours alone.
    # Compression only where a scenario asks for it.
    kwargs.setdefault("compression", None)
    return connect(
        base + path,
        proxy=None,
        max_size=17 * MIB,
        ping_interval=None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        **kwargs,
    )


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def echo(ws, message, what):
    await ws.send(message)
    got = await recv(ws)
    check(
        type(got) is type(message),
        f"{what}: sent {type(message).__name__}, got {type(got).__name__} back",
    )
    check(got == message, f"{what}: sent {describe(message)}, got {describe(got)} back")


async def close_normally(ws):
    await asyncio.wait_for(ws.close(), TIMEOUT)
    check(ws.close_code == 1000, f"close: expected the server to answer 1000, got {ws.close_code}")


async def text(base):
    async with open_socket(base) as ws:
        await echo(ws, "hello", "short text")
        await echo(ws, "", "empty text")
        await echo(ws, "héllo wörld, 你好, 🦀", "non-ASCII text")
        # Bigger than the server's 4 KiB echo buffer, so it comes back in
        # fragments split inside multi-byte characters.
        await echo(ws, "ü€🦀" * 3000, "27 KiB of multi-byte text")
        await echo(ws, "x" * MIB, "1 MiB text")
        await close_normally(ws)


async def binary(base):
    async with open_socket(base) as ws:
        for size in [0, 1, 125, 126, 127, 4096, 65535, 65536, 65537, MIB]:
            payload = bytes((i * 31 + size) % 256 for i in range(size))
            await echo(ws, payload, f"{size}-byte binary")
        await close_normally(ws)


async def fragmented(base):
    async with open_socket(base) as ws:
        # A list of fragments is sent as one message in that many frames.
        await ws.send(["frag", "ment", "ed ", "tëxt"])
        got = await recv(ws)
        check(got == "fragmented tëxt", f"fragmented text: got {describe(got)}")

        # An async iterator too, with an empty fragment.
        async def pieces():
            yield b"\x00\x01"
            yield bytes(range(256)) * 64
            yield b""
            yield b"\xff"

        await ws.send(pieces())
        got = await recv(ws)
        want = b"\x00\x01" + bytes(range(256)) * 64 + b"\xff"
        check(got == want, f"fragmented binary: got {describe(got)}, want {describe(want)}")

        # A ping between two fragments of a message: the server must answer
        # it, and the message still echoes whole.
        pongs = []

        async def with_ping():
            yield "before ping, "
            pongs.append(await ws.ping(b"between fragments"))
            yield "after ping"

        await ws.send(with_ping())
        got = await recv(ws)
        check(got == "before ping, after ping", f"text around a ping: got {describe(got)}")
        try:
            await asyncio.wait_for(pongs[0], TIMEOUT)
        except asyncio.TimeoutError:
            raise Failure(f"no pong for the ping sent between fragments in {TIMEOUT} s")

        # Fragments come back as fragments (the echo loop keeps
        # end-of-message), and reassemble to the message. (websockets sends
        # a list as non-final frames plus an empty final one.)
        await ws.send(["one,", "two,", "three"])
        fragments = []

        async def stream():
            async for fragment in ws.recv_streaming():
                fragments.append(fragment)

        await asyncio.wait_for(stream(), TIMEOUT)
        check(
            "".join(fragments) == "one,two,three",
            f"streamed fragments: got {fragments!r}",
        )
        print(f"fragmented: the echo came back as {fragments!r}")
        await close_normally(ws)


async def ping(base):
    async with open_socket(base) as ws:
        for payload in [b"ping-payload", b"", bytes(range(125))]:
            # `ping` resolves its waiter only on a pong with the same payload.
            waiter = await ws.ping(payload)
            try:
                await asyncio.wait_for(waiter, TIMEOUT)
            except asyncio.TimeoutError:
                raise Failure(f"ping: no pong with payload {describe(payload)} in {TIMEOUT} s")
        # The connection still echoes after the pings.
        await echo(ws, "after pings", "text after pings")
        await close_normally(ws)


async def close(base):
    async with open_socket(base) as ws:
        await echo(ws, "before close", "text before close")
        await asyncio.wait_for(ws.close(4001, "bye"), TIMEOUT)
        # close_code / close_reason are what the server's Close frame said.
        check(
            ws.close_code == 4001,
            f"close: expected the server to echo code 4001, the library reports {ws.close_code}",
        )
        check(
            ws.close_reason == "bye",
            f"close: expected the server to echo reason 'bye', the library reports {ws.close_reason!r}",
        )
        sent = ws.protocol.close_sent
        check(
            sent is not None and sent.code == 4001 and sent.reason == "bye",
            f"close: the client sent {sent}",
        )


async def subprotocol(base):
    async with open_socket(
        base, "/ws?protocol=superchat", subprotocols=["chat", "superchat"]
    ) as ws:
        check(
            ws.subprotocol == "superchat",
            f"subprotocol: expected 'superchat', the library reports {ws.subprotocol!r}",
        )
        await echo(ws, "with a subprotocol", "text with a subprotocol")
        await close_normally(ws)
    async with open_socket(base, "/ws", subprotocols=["chat", "superchat"]) as ws:
        check(
            ws.subprotocol is None,
            f"subprotocol: the server chose none, the library reports {ws.subprotocol!r}",
        )
        await close_normally(ws)
    # Choosing one the client did not offer fails the server's accept; the
    # test server answers that with 400.
    try:
        async with open_socket(base, "/ws?protocol=superchat", subprotocols=["chat"]):
            raise Failure("subprotocol: the handshake succeeded with a protocol not offered")
    except InvalidStatus as error:
        check(
            error.response.status_code == 400,
            f"subprotocol not offered: expected HTTP 400, got {error.response.status_code}",
        )


async def origin(base):
    try:
        async with open_socket(base, origin="https://evil.example"):
            raise Failure("origin: the handshake with Origin https://evil.example succeeded")
    except InvalidStatus as error:
        status = error.response.status_code
        check(status == 403, f"origin: expected HTTP 403, the library reports HTTP {status}")
    # The allowed origin, in any case, still gets in.
    for allowed in ["https://good.example", "HTTPS://Good.Example"]:
        async with open_socket(base, origin=allowed) as ws:
            await echo(ws, "from " + allowed, f"text with Origin {allowed}")
            await close_normally(ws)


# permessage-deflate (RFC 7692): the client's offer for each scenario, and
# the response header the server (default DeflateOptions) must answer with.
DEFLATE_OFFERS = {
    "deflate": (
        dict(client_max_window_bits=True),
        "permessage-deflate",
    ),
    "deflate-no-takeover": (
        dict(server_no_context_takeover=True, client_no_context_takeover=True),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ),
    "deflate-small-windows": (
        dict(server_max_window_bits=9, client_max_window_bits=9),
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
    ),
    # Python inflates with a true 256-byte window (zlib's inflater takes
    # 8 bits; its compressor does not, so the client's window is 9).
    "deflate-window-8": (
        dict(server_max_window_bits=8, client_max_window_bits=9),
        "permessage-deflate; server_max_window_bits=8; client_max_window_bits=9",
    ),
}


def deflate_scenario(name):
    params, expected = DEFLATE_OFFERS[name]

    async def run(base):
        factory = ClientPerMessageDeflateFactory(**params)
        # The ASP.NET loop echoes a 16 MiB message as 4,096 fragments: no
        # limit on how many the client queues.
        async with open_socket(base, extensions=[factory], max_queue=None) as ws:
            answered = ws.response.headers.get("Sec-WebSocket-Extensions")
            check(
                answered == expected,
                f"{name}: the server answered {answered!r}, expected {expected!r}",
            )
            # Every size both ways, text and binary, twice over so that
            # later messages can refer back to earlier ones.
            for round in range(2):
                # 16 MiB once: it is slow through the test build.
                for size in [0, 1, 125, 64 * 1024, MIB] + ([16 * MIB] if round == 0 else []):
                    data = b"".join(
                        b"%d:{'k': %d}," % (i % 97, i % 13) for i in range(size // 8 + 1)
                    )[:size]
                    await echo(ws, data, f"{name}: {size}-byte binary, round {round}")
                    text = ("héllo " * (size // 7 + 1))[:size]
                    await echo(ws, text, f"{name}: {len(text)}-char text, round {round}")
            # The same 300 random bytes, message after message: with
            # context takeover a compressor whose window is wider than the
            # agreed one would refer back into the previous message past
            # the client's window ("invalid distance too far back").
            block = random.Random(300).randbytes(300)
            for i in range(4):
                await echo(ws, block, f"{name}: 300 random bytes, message {i}")
            # A fragmented message (websockets compresses it as one
            # message over several frames).
            await ws.send(["compressed ", "in ", "fragments " * 1000])
            got = await recv(ws)
            want = "compressed in " + "fragments " * 1000
            check(got == want, f"{name}: fragmented text: got {describe(got)}")
            await close_normally(ws)

    return run



# The conformance suite's compression cases, as Autobahn|Testsuite runs
# them (cases 12.x and 13.x): one connection per case, its messages echoed
# one after the other and compared. 12.1-12.5: five kinds of payload with
# the suite's default offer; 13.1-13.7: the JSON payload with each of the
# suite's offers, given as (server_no_context_takeover,
# server_max_window_bits); the suite's client always adds
# client_no_context_takeover and client_max_window_bits. In each, 18 cases:
# messages of 16 B to 128 KiB whole, and 256 B to 128 KiB sent in 256-byte
# fragments. The suite sends 1,000 messages per case; CI sends
# COMPRESSION_CASES_COUNT (default 20).
SUITE_SIZES = [16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072]
SUITE_CASES = [(size, None) for size in SUITE_SIZES] + [
    (size, 256) for size in SUITE_SIZES if size >= 256
]
SUITE_OFFERS = {
    "13.1": [(False, 0)],
    "13.2": [(True, 0)],
    "13.3": [(False, 8)],
    "13.4": [(False, 15)],
    "13.5": [(True, 8)],
    "13.6": [(True, 15)],
    "13.7": [(True, 8), (True, 0), (False, 0)],
}


def suite_payloads():
    """Stand-ins for the suite's files, 256 KiB each: JSON, a bitmap,
    prose, HTML and a PDF-like mix of text and compressed-looking bytes.
    The text ones are ASCII, so any slice of them is a valid text message."""
    rng = random.Random(1205)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(400)
    ]
    size = 256 * 1024

    def fill(make):
        parts, total = [], 0
        while total < size:
            part = make()
            parts.append(part)
            total += len(part)
        return "".join(parts)[:size] if isinstance(parts[0], str) else b"".join(parts)[:size]

    json_text = fill(
        lambda: '{"id": %d, "name": "%s", "tags": ["%s", "%s"], "score": %.3f},\n'
        % (rng.randrange(10**6), rng.choice(words), rng.choice(words), rng.choice(words), rng.random())
    )
    bitmap = fill(lambda: bytes([rng.choice([0, 255])]) * rng.randint(1, 64))
    prose = fill(lambda: " ".join(rng.choice(words) for _ in range(rng.randint(4, 16))) + ".\n")
    html = fill(
        lambda: '<div class="%s"><a href="/%s/%d">%s</a></div>\n'
        % (rng.choice(words), rng.choice(words), rng.randrange(1000), rng.choice(words))
    )
    pdf = fill(
        lambda: (b"stream\n" + rng.randbytes(rng.randint(64, 2048)) + b"\nendstream\nendobj\n")
        if rng.random() < 0.5
        else b"%d 0 obj << /Type /Page /Length %d >>\n" % (rng.randrange(999), rng.randrange(10**5))
    )
    return {"json": json_text, "bitmap": bitmap, "prose": prose, "html": html, "pdf": pdf}


def suite_offer(offers):
    return [
        ClientPerMessageDeflateFactory(
            server_no_context_takeover=no_takeover,
            client_no_context_takeover=True,
            server_max_window_bits=bits or None,
            client_max_window_bits=True,
        )
        for no_takeover, bits in offers
    ]


def suite_expected(no_takeover, bits):
    """What the server (default DeflateOptions) answers to an offer."""
    answer = "permessage-deflate"
    if no_takeover:
        answer += "; server_no_context_takeover"
    answer += "; client_no_context_takeover"
    if bits:
        answer += f"; server_max_window_bits={bits}"
    return answer


async def suite_case(base, case, payload, offers, size, fragment, count):
    what = f"case {case} ({size} B{f' in {fragment}-byte fragments' if fragment else ''})"
    async with open_socket(base, extensions=suite_offer(offers), max_queue=None) as ws:
        answered = ws.response.headers.get("Sec-WebSocket-Extensions")
        expected = suite_expected(*offers[0])
        check(answered == expected, f"{what}: the server answered {answered!r}, expected {expected!r}")
        for i in range(count):
            start = (i * 7919 * size) % (len(payload) - size)
            message = payload[start : start + size]
            if fragment:
                await ws.send([message[at : at + fragment] for at in range(0, size, fragment)])
            else:
                await ws.send(message)
            got = await recv(ws)
            check(
                type(got) is type(message) and got == message,
                f"{what}: message {i}: sent {describe(message)}, got {describe(got)} back",
            )
        await close_normally(ws)


def compression_cases_count():
    return int(os.environ.get("COMPRESSION_CASES_COUNT", "20"))


async def compression_cases(base):
    count = compression_cases_count()
    payloads = suite_payloads()
    groups = [
        (f"12.{n}", payloads[kind], [(False, 0)])
        for n, kind in enumerate(["json", "bitmap", "prose", "html", "pdf"], start=1)
    ] + [(group, payloads["json"], offers) for group, offers in SUITE_OFFERS.items()]
    cases = 0
    for group, payload, offers in groups:
        for n, (size, fragment) in enumerate(SUITE_CASES, start=1):
            await suite_case(base, f"{group}.{n}", payload, offers, size, fragment, count)
            cases += 1
    print(f"compression cases: {cases} passed, {count} messages each", file=sys.stderr)

SCENARIOS = {
    **{name: deflate_scenario(name) for name in DEFLATE_OFFERS},
    "text": text,
    "binary": binary,
    "fragmented": fragmented,
    "ping": ping,
    "close": close,
    "subprotocol": subprotocol,
    "origin": origin,
    "compression-cases": compression_cases,
}

# Scenarios that take longer than SCENARIO_TIMEOUT (in seconds).
TIMEOUTS = {"compression-cases": lambda: 60 + compression_cases_count()}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in SCENARIOS:
        print(
            f"usage: {os.path.basename(sys.argv[0])} BASE_URL ({'|'.join(SCENARIOS)})",
            file=sys.stderr,
        )
        return 2
    base, name = sys.argv[1].rstrip("/"), sys.argv[2]
    try:
        asyncio.run(asyncio.wait_for(SCENARIOS[name](base), TIMEOUTS.get(name, lambda: SCENARIO_TIMEOUT)()))
    except Failure as failure:
        print(f"{name}: FAILED: {failure}", file=sys.stderr)
        return 1
    except BaseException as error:  # noqa: BLE001 - report anything, with its trace
        traceback.print_exc()
        print(f"{name}: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"{name}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

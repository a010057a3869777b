#!/usr/bin/env python3
"""Smoke test of `examples/echo` with a client written only against the
Python standard library (no code shared with the crate).

Usage: echo_smoke.py HOST:PORT
"""
import base64
import hashlib
import os
import socket
import struct
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
host, port = sys.argv[1].rsplit(":", 1)
port = int(port)


def connect():
    deadline = time.time() + 60
    while True:
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.settimeout(10)
            return s
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def http_get(path, extra=b""):
    s = connect()
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body


def frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Reader:
    def __init__(self, sock, rest):
        self.sock, self.buf = sock, rest

    def need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def take(self, n):
        assert self.need(n), "connection closed mid-frame"
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        if not self.need(2):
            return None
        b0, b1 = self.take(2)
        assert b1 & 0x80 == 0, "server frame is masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self.take(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self.take(8))[0]
        return bool(b0 & 0x80), b0 & 0x0F, self.take(n)

    def message(self):
        fin, opcode, payload = self.frame()
        while not fin:
            fin, cont, more = self.frame()
            assert cont == 0
            payload += more
        return opcode, payload


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)
    print("ok:", what)


head, body = http_get("/")
check(head.startswith("HTTP/1.1 200"), "GET / answers 200")
page = body.decode()
check("WebSocket Sample Application" in page, "the page has the sample title")
for element in ["stateLabel", "connectionUrl", "connectButton", "sendMessage", "sendButton", "closeButton", "commsLog"]:
    check('id="%s"' % element in page, "the page has #%s" % element)

head, _ = http_get("/ws")
check(head.startswith("HTTP/1.1 400"), "a plain GET /ws answers 400")

key = base64.b64encode(os.urandom(16))
s = connect()
s.sendall(
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
data = b""
while b"\r\n\r\n" not in data:
    chunk = s.recv(4096)
    check(chunk, "handshake response arrives")
    data += chunk
head, _, rest = data.partition(b"\r\n\r\n")
check(head.startswith(b"HTTP/1.1 101"), "handshake answers 101")
accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
check(accept.lower() in head.lower(), "Sec-WebSocket-Accept is right")
r = Reader(s, rest)

text = "héllo wörld €𝄞".encode()
s.sendall(frame(1, text))
check(r.message() == (1, text), "text echoes")
blob = os.urandom(70000)
s.sendall(frame(2, blob))
check(r.message() == (2, blob), "70000-byte binary echoes")
s.sendall(frame(1, b"frag", fin=False) + frame(0, b"mented", fin=False) + frame(0, b"!", fin=True))
frames = [r.frame() for _ in range(3)]
check([(f[0], f[1]) for f in frames] == [(False, 1), (False, 0), (True, 0)], "fragmentation is preserved")
check(b"".join(f[2] for f in frames) == b"fragmented!", "fragmented payload echoes")
s.sendall(frame(9, b"are you there"))
check(r.frame() == (True, 10, b"are you there"), "ping is answered with a pong")
s.sendall(frame(8, struct.pack(">H", 1000) + b"bye"))
check(r.frame() == (True, 8, struct.pack(">H", 1000) + b"bye"), "close is echoed with its status")
check(r.frame() is None, "server closes the TCP connection")
print("echo smoke: all ok")

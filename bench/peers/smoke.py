#!/usr/bin/env python3
"""Why this exists: a quick check that a benchmark peer speaks the plain protocol of bench/peers/README.md before
`danmaku bench --protocol plain` measures it. Python standard library only.

Usage: python3 bench/peers/smoke.py [--batch-ms N]... -- COMMAND [ARG...]

COMMAND is started once per batch window given (default: 100, then 0) with `--port 0 --batch-ms N` appended. The
check: 3 viewers in room r1 and 1 in room r2 (plus one viewer that names no room, so in "default"); one r1 viewer
sends 5 comments as masked text frames; every r1 viewer must get all 5, in order, as text frames whose payload is
exactly `[c1,c2,...]` (possibly over several frames); r2 and "default" must get nothing; SIGTERM must stop the peer
with exit code 0. Exits non-zero on the first failure.
"""

import base64
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 5.0


class Fail(Exception):
    pass


class Viewer:
    def __init__(self, port, target):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            b"GET " + target.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " % port + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Fail(f"{target}: connection closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise Fail(f"{target}: expected 101, got {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            raise Fail(f"{target}: bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}")
        self.target = target

    def send_text(self, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _frame(self):
        """One complete frame from the buffer, or None."""
        if len(self.buf) < 2:
            return None
        b0, b1 = self.buf[0], self.buf[1]
        if b1 & 0x80:
            raise Fail(f"{self.target}: server frame is masked")
        n, off = b1 & 0x7F, 2
        if n == 126:
            if len(self.buf) < 4:
                return None
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            if len(self.buf) < 10:
                return None
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        if len(self.buf) < off + n:
            return None
        payload, self.buf = self.buf[off : off + n], self.buf[off + n :]
        return b0, payload

    def frames(self, deadline):
        """Yields (first byte, payload) of each frame until the deadline."""
        while True:
            frame = self._frame()
            if frame is not None:
                yield frame
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Fail(f"{self.target}: connection closed by the server")
            self.buf += chunk

    def close(self):
        self.sock.close()


def collect(viewer, want):
    """Reads frames until `want` comments arrived; checks each is a text frame `[c1,c2,...]` of raw comments."""
    got = []
    deadline = time.monotonic() + TIMEOUT
    for b0, payload in viewer.frames(deadline):
        if b0 != 0x81:
            raise Fail(f"{viewer.target}: expected a final text frame, got first byte {b0:#x}")
        comments = json.loads(payload)
        if not isinstance(comments, list) or not comments:
            raise Fail(f"{viewer.target}: payload is not a non-empty JSON array: {payload!r}")
        raw = [want[len(got) + i] for i in range(min(len(comments), len(want) - len(got)))]
        if payload != b"[" + b",".join(raw) + b"]":
            raise Fail(f"{viewer.target}: expected {b'[' + b','.join(raw) + b']'!r}, got {payload!r}")
        got += raw
        if len(got) == len(want):
            return got
    raise Fail(f"{viewer.target}: got {len(got)} of {len(want)} comments in {TIMEOUT}s")


def expect_nothing(viewer, seconds):
    for b0, payload in viewer.frames(time.monotonic() + seconds):
        raise Fail(f"{viewer.target}: expected nothing, got frame {b0:#x} {payload!r}")


def start(command):
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().decode().strip() if ready else ""
    prefix = "listening on 127.0.0.1:"
    if not line.startswith(prefix) or not line[len(prefix) :].isdigit():
        proc.kill()
        raise Fail(f"expected '{prefix}PORT' on stdout, got {line!r}")
    return proc, int(line[len(prefix) :])


def run(command, batch_ms):
    proc, port = start(command + ["--port", "0", "--batch-ms", str(batch_ms)])
    viewers = []
    try:
        r1 = [Viewer(port, "/ws?room=r1&user=v%d" % i) for i in range(3)]
        r2 = Viewer(port, "/ws?room=r2")
        default = Viewer(port, "/ws")
        viewers = r1 + [r2, default]
        time.sleep(0.2)  # let every join land before the first comment
        comments = [
            json.dumps({"type": "send", "text": "comment %d 弹幕" % i, "nonce": "n%d" % i}, ensure_ascii=False).encode()
            for i in range(5)
        ]
        for c in comments:
            r1[1].send_text(c)
        for v in r1:
            collect(v, comments)
        expect_nothing(r2, 0.3 + batch_ms / 1000)
        expect_nothing(default, 0.05)
    finally:
        for v in viewers:
            v.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = "a hang"
    if code != 0:
        raise Fail(f"SIGTERM: expected exit code 0, got {code}")


def main(argv):
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1 :]
    windows = [int(opts[i + 1]) for i, o in enumerate(opts) if o == "--batch-ms"] or [100, 0]
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for batch_ms in windows:
        name = "%s (batch-ms %d)" % (" ".join(command), batch_ms)
        try:
            run(command, batch_ms)
            print("ok    %s" % name)
        except (Fail, OSError, ValueError) as e:
            failed += 1
            print("FAIL  %s: %s" % (name, e))
    print("%d passed, %d failed" % (len(windows) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

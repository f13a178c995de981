"""One load-generator process for bench/webhook.py: signed Twilio status callbacks over keep-alive HTTP/1.1.

Run by the bench, never by hand: ``python bench/loadgen.py '<json spec>'``. The spec names the server
(port, path), how many keep-alive connections this process holds, how long it posts, and the callbacks:
``count`` distinct MessageSids ``SM<prefix><counter>`` (``prefix``: 8 hex digits, the counter 24), each
signed with twilio-python's RequestValidator over the public URL, as Twilio signs. Every request is built
and signed before the timed part, so the timed loop only writes prepared bytes and reads answers.

The process builds its requests, opens its connections, prints ``ready`` and waits for a line on stdin;
it then posts for ``seconds`` (one request outstanding per connection, the next one sent as soon as the
answer is complete), waits for the answers still out, and prints one JSON line: requests answered 200,
other answers, elapsed seconds, whether it ran out of prepared requests, and every latency (ms).

With ``cycle`` the prepared requests are reused (for the no-op server that measures this generator's own
ceiling: it stores nothing, so repeats cost it nothing).
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
from urllib.parse import urlencode

ACCOUNT_FIELD_DEFAULTS = {"From": "+15005550006", "To": "+14155550123", "ApiVersion": "2010-04-01"}


def build_requests(spec: dict) -> list[bytes]:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(spec["token"])
    url = spec["public_url"] + spec["path"]
    head = f"POST {spec['path']} HTTP/1.1\r\nHost: 127.0.0.1:{spec['port']}\r\n"
    out = []
    for i in range(spec["count"]):
        sid = f"SM{spec['prefix']}{i:024x}"
        params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": "delivered", "SmsStatus": "delivered",
                  "AccountSid": spec["account"], **ACCOUNT_FIELD_DEFAULTS}
        body = urlencode(params).encode()
        signature = validator.compute_signature(url, params)
        headers = (f"Content-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {signature}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n")
        out.append((head + headers).encode() + body)
    return out


class _Conn:
    __slots__ = ("buf", "sent_at", "sock")

    def __init__(self, sock: socket.socket):
        self.sock, self.buf, self.sent_at = sock, b"", 0.0


def _answer(buf: bytes) -> tuple[int, int] | None:
    """(status, length of the whole answer) when ``buf`` holds a complete answer, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].lower()
    at = head.find(b"\r\ncontent-length:")
    length = 0
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:stop if stop >= 0 else len(head)])
    elif b"transfer-encoding: chunked" in head:
        tail = buf.find(b"0\r\n\r\n", end + 4)
        return (int(buf[9:12]), tail + 5) if tail >= 0 else None
    total = end + 4 + length
    return (int(buf[9:12]), total) if len(buf) >= total else None


def run(spec: dict) -> dict:
    requests = build_requests(spec)
    conns = []
    selector = selectors.DefaultSelector()
    for _ in range(spec["connections"]):
        sock = socket.create_connection(("127.0.0.1", spec["port"]))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock)
        conns.append(conn)
        selector.register(sock, selectors.EVENT_READ, conn)
    print("ready", flush=True)
    sys.stdin.readline()

    cycle, total = spec.get("cycle", False), len(requests)
    next_index, ok, other, latencies, exhausted = 0, 0, 0, [], False
    clock = time.perf_counter
    started = clock()
    ends = started + spec["seconds"]
    outstanding = 0

    def send(conn: _Conn) -> bool:
        nonlocal next_index, outstanding, exhausted
        if next_index >= total:
            if not cycle:
                exhausted = True
                return False
            next_index = 0
        conn.sent_at = clock()
        conn.sock.sendall(requests[next_index])
        next_index += 1
        outstanding += 1
        return True

    for conn in conns:
        send(conn)
    last_answer = started
    give_up = ends + 30
    while outstanding:
        for key, _mask in selector.select(timeout=1.0):
            conn = key.data
            data = conn.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed a keep-alive connection")
            conn.buf += data
            answer = _answer(conn.buf)
            if answer is None:
                continue
            status, size = answer
            now = clock()
            conn.buf = conn.buf[size:]
            outstanding -= 1
            last_answer = now
            latencies.append(round((now - conn.sent_at) * 1000, 3))
            if status == 200:
                ok += 1
            else:
                other += 1
            if now < ends:
                send(conn)
        if clock() > give_up:
            break
    for conn in conns:
        conn.sock.close()
    return {"ok": ok, "other": other, "elapsed": last_answer - started, "exhausted": exhausted,
            "unanswered": outstanding, "latencies_ms": latencies}


def main() -> int:
    spec = json.loads(sys.argv[1])
    print(json.dumps(run(spec)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

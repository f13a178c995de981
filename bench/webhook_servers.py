"""The three servers bench/webhook.py loads, each run in a process of its own on 127.0.0.1.

    python bench/webhook_servers.py ours|bare|noop --port P --stats-port S [--store-url URL]
                                    [--bare-writes auto|inline|thread]

- ``ours``: the provider's standalone webhook, started exactly as ``airflow twilio-sms webhook serve``
  starts it (:func:`airflow_provider_twilio_sms.cli.webhook.serve`: the store opened and checked first,
  then uvicorn, one worker process, no access log). The connection comes from
  ``AIRFLOW_CONN_TWILIO_SMS_DEFAULT`` in the environment, as in a deployment with connections in variables.
- ``bare``: the least a correct receiver does, written as a FastAPI app's author would write it: the
  signature checked with twilio's ``RequestValidator`` (built once), then one plain INSERT of the event row
  into ``twilio_sms_event`` (the same table, the same indexes, the same database), written whichever way
  is faster (``--bare-writes``): on SQLite in the event loop, on PostgreSQL in a worker thread. Its engine
  is set up not to lose time: a pool as large as the requests it can have in flight (no connection is
  ever opened and closed under load), and on SQLite the store's own durability (WAL,
  ``synchronous=NORMAL``: a commit is not fsynced) with this process's writers queued on a lock of their
  own (SQLite's busy handler sleeps up to 100 ms when writers collide). Same uvicorn settings as ``ours``.
- ``noop``: answers each HTTP request with a fixed 200 without looking at it (uvloop, no framework): what
  a load generator reaches against it is the generator's own ceiling on this machine.

``ours`` and ``bare`` also answer ``GET /`` on ``--stats-port`` (a thread of their own, idle while
requests are served) with ``{"connects": N}``: database connections their pools have opened since the
process started (a pool ``connect`` event on every SQLAlchemy pool), so the bench can tell how many new
sessions the steady state opened. With ``TWILIO_SMS_BENCH_PROFILE=<file>`` set, ``ours`` and ``bare``
also profile every thread (yappi, CPU time) between ``GET /profile/start`` and ``GET /profile/stop``
and write the stats there (pstats format).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fastapi import Request  # noqa: TC002 - FastAPI resolves the bare route's annotation from this module

PATH = "/twilio_sms/webhooks/twilio_sms_default/status"
CONCURRENCY = 16  # requests the bench keeps in flight: the bare app's pool never needs more connections
_connects = [0]


def _count_connects() -> None:
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    def on_connect(*_args):
        _connects[0] += 1  # under the GIL; a lost increment would need two threads opening at once

    event.listen(Pool, "connect", on_connect)


class _Stats(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/profile/"):
            _profile(self.path.rsplit("/", 1)[1])
        body = json.dumps({"connects": _connects[0]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _profile(action: str) -> None:
    import yappi

    if action == "start":
        yappi.set_clock_type("cpu")
        yappi.clear_stats()
        yappi.start(builtins=False, profile_threads=True)
    elif action == "stop":
        yappi.stop()
        yappi.get_func_stats().save(os.environ["TWILIO_SMS_BENCH_PROFILE"], type="pstat")


def _serve_stats(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Stats)
    threading.Thread(target=server.serve_forever, daemon=True, name="bench-stats").start()


def bare_app(url: str, token: str, public_url: str, writes: str = "auto"):
    import threading as _threading
    from contextlib import nullcontext
    from datetime import datetime, timezone
    from urllib.parse import parse_qsl

    from fastapi import FastAPI
    from fastapi.responses import Response
    from sqlalchemy import create_engine, event, insert
    from starlette.concurrency import run_in_threadpool
    from twilio.request_validator import RequestValidator

    from airflow_provider_twilio_sms.store import tables as t

    sqlite = url.startswith("sqlite")
    engine = create_engine(url, pool_size=CONCURRENCY, max_overflow=0, hide_parameters=True,
                           **({"connect_args": {"check_same_thread": False}} if sqlite else {}))
    if sqlite:
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA busy_timeout = 5000")
            cursor.close()

    writers = _threading.Lock() if sqlite else nullcontext()
    # Whichever is faster: a SQLite write (a local file, ~0.1 ms) in the event loop itself, since a hop to a
    # worker thread costs more than it saves; a PostgreSQL write (a round trip) in a worker thread, so
    # that other requests are parsed and verified meanwhile. Measured both ways on this machine.
    inline = sqlite if writes == "auto" else writes == "inline"
    validator = RequestValidator(token)
    signed_url = public_url + PATH
    statement = insert(t.event)

    def store(form: dict[str, str]) -> None:
        sid, status = form["MessageSid"], form["MessageStatus"]
        row = {"kind": "status", "account_sid": form["AccountSid"], "conn_id": "twilio_sms_default",
               "dedupe_key": f"status:{sid}:{status}", "message_sid": sid, "status": status,
               "from_number": form.get("From"), "to_number": form.get("To"),
               "received_at": datetime.now(timezone.utc), "payload": json.dumps(form)}
        with writers, engine.begin() as conn:
            conn.execute(statement, row)

    app = FastAPI()

    @app.post(PATH)
    async def status(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        if not validator.validate(signed_url, form, request.headers.get("x-twilio-signature", "")):
            return Response(status_code=403)
        if inline:
            store(form)
        else:
            await run_in_threadpool(store, form)
        return Response(b'{"success":true}', media_type="application/json")

    return app


class _NoOp(asyncio.Protocol):
    ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n"
              b'{"success":true}')

    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) \
                if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(self.ANSWER)


def serve_noop(port: int) -> None:
    import uvloop

    async def main():
        server = await asyncio.get_running_loop().create_server(_NoOp, "127.0.0.1", port)
        print(f"no-op server on {port}", flush=True)
        await server.serve_forever()

    uvloop.run(main())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=("ours", "bare", "noop"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats-port", type=int)
    parser.add_argument("--store-url")
    parser.add_argument("--bare-writes", choices=("auto", "inline", "thread"), default="auto")
    args = parser.parse_args()
    if args.which == "noop":
        serve_noop(args.port)
        return 0
    _count_connects()
    _serve_stats(args.stats_port)
    if args.which == "ours":
        from airflow_provider_twilio_sms.cli.webhook import serve

        serve(argparse.Namespace(host="127.0.0.1", port=args.port, store_url=args.store_url))
        return 0
    import uvicorn

    spec = json.loads(os.environ["AIRFLOW_CONN_TWILIO_SMS_DEFAULT"])
    app = bare_app(args.store_url, spec["password"], spec["extra"]["webhook_base_url"], args.bare_writes)
    print(f"bare app on {args.port}", flush=True)
    # What serve() gives uvicorn for ours: one process, no access log, log level info.
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: signed status callbacks per second through the full webhook app, against a bare baseline.

Both run in the same process, one after the other, served by uvicorn on 127.0.0.1 and driven by the
same client loop (8 threads, keep-alive, pre-signed unique callbacks, bounded time):
  - baseline: a bare handler doing one twilio ``RequestValidator.validate`` and one INSERT;
  - full app: ``create_app("standalone")`` (connection lookup, size cap, signature over the public URL,
    AccountSid and field checks, dedupe, status linking and forward-only update).
Prints callbacks/s for both and the ratio (goal >= 0.7), on SQLite and on PostgreSQL.

    .venv/bin/python bench/webhook.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from urllib.parse import parse_qsl, urlencode

import requests
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, insert, text

ACCOUNT = "AC" + "b" * 32
TOKEN = "bench-auth-token"
PUBLIC = "https://airflow.example.com"
PATH = "/twilio_sms/webhooks/twilio_sms_default/status"
CLIENTS = 8


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def baseline_app(url: str):
    """The minimum any correct receiver does: verify Twilio's signature, insert one row."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from twilio.request_validator import RequestValidator

    metadata = MetaData()
    table = Table("bench_baseline_event", metadata, Column("id", Integer, primary_key=True),
                  Column("message_sid", String(34)), Column("payload", Text))
    engine = create_engine(url)
    metadata.create_all(engine)
    validator = RequestValidator(TOKEN)

    def store(params):
        with engine.begin() as conn:
            conn.execute(insert(table).values(message_sid=params["MessageSid"], payload=json.dumps(params)))

    async def handle(request):
        params = dict(parse_qsl((await request.body()).decode()))
        if not validator.validate(PUBLIC + PATH, params, request.headers.get("x-twilio-signature", "")):
            return Response(status_code=403)
        await run_in_threadpool(store, params)
        return JSONResponse({"success": True})

    return Starlette(routes=[Route(PATH, handle, methods=["POST"])])


def _requests(n: int) -> list[tuple[str, dict]]:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TOKEN)
    out = []
    for _ in range(n):
        sid = "SM" + uuid.uuid4().hex
        params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": "delivered", "SmsStatus": "delivered",
                  "AccountSid": ACCOUNT, "From": "+15005550006", "To": "+14155550123", "ApiVersion": "2010-04-01"}
        out.append((urlencode(params), {"X-Twilio-Signature": validator.compute_signature(PUBLIC + PATH, params),
                                        "Content-Type": "application/x-www-form-urlencoded"}))
    return out


def drive(app, seconds: float) -> tuple[float, int]:
    import uvicorn

    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    pool = _requests(int(seconds * 2000))
    done, errors, lock = [0], [0], threading.Lock()
    cursor = iter(range(len(pool)))
    deadline = time.monotonic() + seconds

    def loop():
        session = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            body, headers = pool[i]
            ok = session.post(f"http://127.0.0.1:{port}{PATH}", data=body, headers=headers, timeout=30).status_code == 200
            with lock:
                done[0] += ok
                errors[0] += not ok

    threads = [threading.Thread(target=loop) for _ in range(CLIENTS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    server.should_exit = True
    thread.join(timeout=10)
    return done[0] / elapsed, errors[0]


def bench(name: str, url: str, seconds: float) -> None:
    from airflow_provider_twilio_sms.store.migrate import upgrade_url
    from airflow_provider_twilio_sms.webhook.app import create_app

    upgrade_url(url)
    os.environ["AIRFLOW_CONN_TWILIO_SMS_DEFAULT"] = json.dumps({
        "conn_type": "twilio_sms", "login": ACCOUNT, "password": TOKEN,
        "extra": {"from_number": "+15005550006", "webhook_base_url": PUBLIC}})
    base_rate, base_errors = drive(baseline_app(url), seconds)
    full_rate, full_errors = drive(create_app("standalone", store_url=url), seconds)
    print(f"{name}: baseline {base_rate:,.0f}/s ({base_errors} errors), full app {full_rate:,.0f}/s "
          f"({full_errors} errors), ratio {full_rate / base_rate:.2f}  (goal >= 0.7)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    bench("SQLite", f"sqlite:///{tempfile.mkdtemp()}/bench.db", args.seconds)
    admin = os.environ.get("TWILIO_SMS_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    name = f"twilio_sms_bench_{uuid.uuid4().hex[:8]}"
    try:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as err:  # noqa: BLE001
        print(f"PostgreSQL skipped: {type(err).__name__}")
        return 0
    try:
        bench("PostgreSQL", admin.rsplit("/", 1)[0] + "/" + name, args.seconds)
    finally:
        from airflow_provider_twilio_sms.store import engine as store_engine

        for e in store_engine._engines.values():
            e.dispose()
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return 0


if __name__ == "__main__":
    sys.exit(main())

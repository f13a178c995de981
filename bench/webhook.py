"""Benchmark: signed status callbacks per second through the full webhook app, against a bare baseline.

Both apps run in this process, each served by uvicorn on 127.0.0.1, and are driven by the same client loop
(8 threads, keep-alive, pre-signed callbacks with unique SIDs). After a warm-up (the first request reads the
connection and opens the store; later ones are served from the caches), they take turns for
``--rounds`` rounds of ``--seconds`` each, so a load spike on the machine hits both:

  - baseline: a bare Starlette handler doing one twilio ``RequestValidator.validate`` and one INSERT, on an
    engine with the store's connection settings (same SQLite pragmas, same PostgreSQL pool);
  - full app: ``create_app("standalone")``: connection lookup (cached), content type, body cap, signature
    over the public URL with both tokens and both port variants, AccountSid and field checks, dedupe on
    insert, link to the send and forward-only status update.

Two scenarios for the full app: callbacks for messages this provider sent (the store advances each
message's status: the real workload) and callbacks for SIDs it does not know. Prints callbacks/s, p50/p95
latency and the ratio full/baseline (goal >= 0.7), on SQLite and on PostgreSQL.

    .venv/bin/python bench/webhook.py [--seconds 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlencode

import requests
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, insert

from scratch_pg import scratch_database

ACCOUNT = "AC" + "b" * 32
TOKEN = "bench-auth-token"
PUBLIC = "https://airflow.example.com"
PATH = "/twilio_sms/webhooks/twilio_sms_default/status"
CLIENTS = 8
WARMUP = 100


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

    from airflow_provider_twilio_sms.store.engine import create_store_engine

    metadata = MetaData()
    table = Table("bench_baseline_event", metadata, Column("id", Integer, primary_key=True),
                  Column("message_sid", String(34)), Column("payload", Text))
    # The store's connection settings (SQLite: WAL, synchronous=NORMAL, busy timeout; PostgreSQL: the same
    # pool), so that both sides pay the same for a durable commit. A plain create_engine() would fsync
    # every SQLite commit (synchronous=FULL) and make the baseline slower than it has to be.
    engine = create_store_engine(url)
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

    return Starlette(routes=[Route(PATH, handle, methods=["POST"])]), engine


def signed_callbacks(sids: list[str]) -> list[tuple[str, dict]]:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TOKEN)
    out = []
    for sid in sids:
        params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": "delivered", "SmsStatus": "delivered",
                  "AccountSid": ACCOUNT, "From": "+15005550006", "To": "+14155550123",
                  "ApiVersion": "2010-04-01"}
        signature = validator.compute_signature(PUBLIC + PATH, params)
        out.append((urlencode(params), {"X-Twilio-Signature": signature,
                                        "Content-Type": "application/x-www-form-urlencoded"}))
    return out


def seed_sent_messages(url: str, sids: list[str]) -> None:
    """Outbound rows as the operator leaves them (sent, status queued), one per SID, in bulk."""
    from airflow_provider_twilio_sms.store import tables as t
    from airflow_provider_twilio_sms.store.claims import body_digest, key_digest, make_scope

    now = datetime.now(timezone.utc)
    rows = [{"scope": make_scope(ACCOUNT), "idempotency_key": f"bench-{sid}",
             "idempotency_key_sha256": key_digest(f"bench-{sid}"), "account_sid": ACCOUNT,
             "conn_id": "twilio_sms_default", "to_number": "+14155550123", "from_number": "+15005550006",
             "body": "bench", "body_sha256": body_digest("bench"), "num_media": 0, "send_state": "sent",
             "attempt_id": "bench", "lease_expires_at": now + timedelta(minutes=2), "sid": sid,
             "status": "queued", "status_rank": 2, "created_at": now, "updated_at": now, "sent_at": now}
            for sid in sids]
    engine = create_engine(url)
    with engine.begin() as conn:
        for i in range(0, len(rows), 1000):
            conn.execute(insert(t.message), rows[i:i + 1000])
    engine.dispose()


class Served:
    def __init__(self, app):
        import uvicorn

        self.port = _port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


Run = tuple[int, int, float, list[float]]  # done, errors, elapsed seconds, latencies


def drive(served: Served, pool: list[tuple[str, dict]], seconds: float) -> Run:
    """Post from ``pool`` with CLIENTS threads for ``seconds``; (done, errors, elapsed, latencies)."""
    url = f"http://127.0.0.1:{served.port}{PATH}"
    done, errors, latencies, lock = [0], [0], [], threading.Lock()
    cursor = iter(range(len(pool)))
    deadline = time.monotonic() + seconds

    def loop():
        session, mine = requests.Session(), []
        while time.monotonic() < deadline:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            body, headers = pool[i]
            started = time.perf_counter()
            ok = session.post(url, data=body, headers=headers, timeout=30).status_code == 200
            mine.append(time.perf_counter() - started)
            with lock:
                done[0] += ok
                errors[0] += not ok
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(CLIENTS)]
    start = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - start
    pool[:] = pool[done[0] + errors[0]:]  # never post the same callback twice
    return done[0], errors[0], elapsed, latencies


def _line(label: str, runs: list[Run]) -> tuple[str, float]:
    done = sum(r[0] for r in runs)
    errors = sum(r[1] for r in runs)
    rate = done / sum(r[2] for r in runs)
    lat = sorted(x for r in runs for x in r[3])
    p50, p95 = (statistics.median(lat), lat[int(len(lat) * 0.95)]) if lat else (0, 0)
    return (f"    {label:<34} {rate:8,.0f}/s   p50 {p50 * 1000:5.1f} ms   p95 {p95 * 1000:6.1f} ms"
            f"{f'   ({errors} errors)' if errors else ''}"), rate


def bench(name: str, url: str, seconds: float, rounds: int) -> list[float]:
    from airflow_provider_twilio_sms.store.migrate import upgrade_url
    from airflow_provider_twilio_sms.webhook.app import create_app

    upgrade_url(url)
    os.environ["AIRFLOW_CONN_TWILIO_SMS_DEFAULT"] = json.dumps({
        "conn_type": "twilio_sms", "login": ACCOUNT, "password": TOKEN,
        "extra": {"from_number": "+15005550006", "webhook_base_url": PUBLIC,
                  "secondary_auth_token": "bench-secondary-token"}})
    per_run = int(seconds * 1500) + WARMUP
    known = ["SM" + uuid.uuid4().hex for _ in range(per_run * rounds)]
    seed_sent_messages(url, known)
    pools = {"baseline": signed_callbacks(["SM" + uuid.uuid4().hex for _ in range(per_run * rounds)]),
             "known": signed_callbacks(known),
             "unknown": signed_callbacks(["SM" + uuid.uuid4().hex for _ in range(per_run * rounds)])}
    base_app, base_engine = baseline_app(url)
    servers = {"baseline": Served(base_app), "full": Served(create_app("standalone", store_url=url))}
    try:
        for label, server in (("baseline", "baseline"), ("known", "full"), ("unknown", "full")):
            drive(servers[server], pools[label][:WARMUP], 30)  # first requests fill the caches
            del pools[label][:WARMUP]
        runs: dict[str, list] = {"baseline": [], "known": [], "unknown": []}
        for _ in range(rounds):
            for label, server in (("baseline", "baseline"), ("known", "full"), ("unknown", "full")):
                runs[label].append(drive(servers[server], pools[label], seconds))
    finally:
        for server in servers.values():
            server.stop()
        base_engine.dispose()
    base_text, base_rate = _line("baseline (validate + 1 INSERT)", runs["baseline"])
    known_text, known_rate = _line("full app, messages we sent", runs["known"])
    unknown_text, unknown_rate = _line("full app, SIDs we do not know", runs["unknown"])
    print(f"{name}:\n{base_text}\n{known_text}   ratio {known_rate / base_rate:.2f}\n"
          f"{unknown_text}   ratio {unknown_rate / base_rate:.2f}   (goal >= 0.7)", flush=True)
    return [known_rate / base_rate, unknown_rate / base_rate]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3, help="length of one timed run")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per app, taking turns")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # alembic, uvicorn and Airflow lines would drown the figures
    print(f"{CLIENTS} client threads, {args.rounds} x {args.seconds:g} s per app, {os.cpu_count()} CPUs")
    bench("SQLite", f"sqlite:///{tempfile.mkdtemp()}/bench.db", args.seconds, args.rounds)
    with scratch_database() as url:
        if url:
            bench("PostgreSQL", url, args.seconds, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

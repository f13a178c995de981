"""Benchmark: the send path's overhead, and rate-limit decisions per second.

Prints, in one run:
  1. per-message time of SmsSender.send (validation, opt-out check, claim, record) against the same
     local stand-in as a raw twilio-python ``client.messages.create``, and the ratio (goal <= 1.2x);
  2. rate-limit decisions per second from 4 concurrent processes, on SQLite and on PostgreSQL.

    .venv/bin/python bench/send.py [--messages 300] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid

from airflow_provider_twilio_sms.store.api import SmsStore
from airflow_provider_twilio_sms.store.migrate import upgrade_url
from scratch_pg import scratch_database


def _timed(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


def bench_overhead(url: str, n: int) -> None:
    from twilio.rest import Client

    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.sending import SendRequest, SmsSender
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

    with TwilioSimulator(callback_delay=3600) as sim:
        os.environ["AIRFLOW_CONN_TWILIO_SMS_DEFAULT"] = json.dumps({
            "conn_type": "twilio_sms", "login": sim.account_sid, "password": sim.auth_token,
            "extra": {"from_number": "+15005550006", "api_base_url": sim.base_url}})
        from twilio.http.http_client import TwilioHttpClient

        from airflow_provider_twilio_sms.hooks.http_client import quiet_twilio_logger

        # the same HTTP client settings as the hook (twilio-python logs every request at INFO otherwise)
        raw = Client(sim.account_sid, sim.auth_token, environment={"BENCH": "1"},
                     http_client=TwilioHttpClient(timeout=30, logger=quiet_twilio_logger()))
        raw.api.base_url = sim.base_url
        sender = SmsSender(TwilioSmsHook(), SmsStore(url))
        run = uuid.uuid4().hex
        keys = iter(range(10**9))  # every timed send gets a fresh idempotency key: no "already sent" shortcut

        def raw_send(i):
            raw.messages.create(to="+14155550123", from_="+15005550006", body=f"Your code is {i:06d}")

        def our_send(i):
            result = sender.send(SendRequest(to="+14155550123", body=f"Your code is {i:06d}",
                                             idempotency_key=f"{run}-{next(keys)}"))
            assert not result["already_sent"], result

        for warm in range(20):  # connections, caches, engine pool
            raw_send(warm)
            our_send(warm)
        rounds = []
        for _ in range(3):  # interleave so that drift hits both sides alike
            rounds.append((_timed(raw_send, n // 3), _timed(our_send, n // 3)))
        base = sum(r[0] for r in rounds) / len(rounds)
        ours = sum(r[1] for r in rounds) / len(rounds)
    print(f"  raw client.messages.create: {base * 1e3:7.2f} ms/message")
    print(f"  SmsSender.send:             {ours * 1e3:7.2f} ms/message")
    print(f"  overhead ratio: {ours / base:.2f}x  (goal <= 1.2x)")


def _decider(url, seconds, out, start):
    store = SmsStore(url)
    start.wait()
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        store.acquire_rate_slot("bench", 1_000_000, 60, grant_key=uuid.uuid4().hex)
        count += 1
    out.put(count)


def bench_rate_limit(url: str, seconds: float) -> None:
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_decider, args=(url, seconds, out, start)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join()
    total = sum(out.get() for _ in procs)
    print(f"  rate-limit decisions, 4 processes: {total / seconds:,.0f}/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    sqlite = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    upgrade_url(sqlite)
    print("Send path overhead (SQLite store):")
    bench_overhead(sqlite, args.messages)
    print("SQLite:")
    bench_rate_limit(sqlite, args.seconds)
    with scratch_database() as url:
        if url:
            upgrade_url(url)
            print("PostgreSQL:")
            bench_rate_limit(url, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the cost of one reply-sensor poke as the store grows, and a triggerer's query rate.

Prints, in one run and per backend (SQLite always; PostgreSQL when TWILIO_SMS_BENCH_PG_URL or the
local server answers):
  1. the median time of one poke (the store query a SmsReplySensor makes) with 1 000 and with
     1 000 000 stored events, and their ratio (goal: at most 1.5, i.e. the query is indexed);
  2. store queries per second made by one triggerer holding 1 000 deferred sensors (500 status,
     500 reply), against the naive 1 000 / poll_interval;
  3. requests to Twilio (the local stand-in) made by one triggerer whose 1 000 status sensors all wait
     on statuses whose callbacks were lost, until every one has its status, against the naive one
     request per sensor per round.

    .venv/bin/python bench/sensor.py [--events 1000000] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import create_engine, insert, text

from airflow_provider_twilio_sms.replies import ReplyCriteria
from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.api import SmsStore
from airflow_provider_twilio_sms.store.migrate import upgrade_url

from scratch_pg import scratch_database

OURS = "+15005550006"
WAITED = "+15550009999"
ACCOUNT = "AC" + "0" * 32


def _fill(url: str, total: int, have: int) -> None:
    """Add inbound events (from 10 000 distinct numbers) until the store holds ``total``."""
    engine = create_engine(url)
    base = datetime.now(timezone.utc) - timedelta(days=30)
    chunk = 20_000
    with engine.begin() as conn:
        for start in range(have, total, chunk):
            rows = [{
                "kind": "inbound", "account_sid": ACCOUNT, "conn_id": "bench",
                "dedupe_key": f"inbound:SM{i:032d}", "message_sid": f"SM{i:032d}", "status": "received",
                "from_number": f"+1555{i % 10_000:07d}", "to_number": OURS, "body": f"message {i}",
                "num_media": 0, "received_at": base + timedelta(seconds=i), "payload": "{}",
            } for i in range(start, min(total, start + chunk))]
            conn.execute(insert(t.event), rows)
    engine.dispose()


def _poke_seconds(store: SmsStore, repeats: int = 200) -> float:
    """Median time of the query one SmsReplySensor poke makes (reply from one number, since an hour ago)."""
    criteria = ReplyCriteria(ACCOUNT, "bench", signer="f" * 32, from_number=WAITED, to_number=OURS,
                             body_pattern=r"code is (\d{6})",
                             since=datetime.now(timezone.utc) - timedelta(hours=1))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        rows = store.find_inbound(account_sid=ACCOUNT, conn_id="bench", signer=criteria.signer,
                                  to_number=criteria.to_number, from_number=criteria.from_number,
                                  since=criteria.since, limit=200)
        [criteria.match(r) for r in rows]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_poke(url: str, big: int) -> None:
    upgrade_url(url)
    store = SmsStore(url)
    _fill(url, 1_000, 0)
    small = _poke_seconds(store)
    _fill(url, big, 1_000)
    with store.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    large = _poke_seconds(store)
    print(f"  poke with {1_000:>9,} events: {small * 1e3:7.3f} ms")
    print(f"  poke with {big:>9,} events: {large * 1e3:7.3f} ms")
    print(f"  ratio large/small: {large / small:.2f}  (goal <= 1.5)")


async def _triggerer(url: str, sensors: int, interval: float, seconds: float) -> tuple[int, float]:
    from airflow_provider_twilio_sms.triggers.sms import SmsReplyTrigger, SmsStatusTrigger, StorePoller

    os.environ["AIRFLOW_CONN_BENCH_STORE"] = json.dumps(
        {"conn_type": "generic", "extra": {"sqlalchemy_url": url}}
    )
    StorePoller._pollers.clear()
    half = sensors // 2
    triggers = [
        SmsStatusTrigger(
            message_sid=f"SM{uuid.uuid4().hex}",
            success_statuses=["delivered"],
            failure_statuses=["failed"],
            store_conn_id="bench_store",
            poll_interval=interval,
        )
        for _ in range(half)
    ]
    store = SmsStore(url)
    shape = ReplyCriteria(ACCOUNT, "bench", from_number=WAITED, keywords=("YES",)).shape()
    triggers += [
        SmsReplyTrigger(
            wait_id=store.add_reply_wait(account_sid=ACCOUNT, conn_id="bench", from_number=f"+1666{i:07d}"),
            shape=shape,
            store_conn_id="bench_store",
            poll_interval=interval,
        )
        for i in range(sensors - half)
    ]
    tasks = [asyncio.ensure_future(tr.run().__anext__()) for tr in triggers]
    await asyncio.sleep(interval)  # let every trigger register
    poller = next(iter(StorePoller._pollers.values()))
    start_queries, start = poller.queries, time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - start
    queries = poller.queries - start_queries
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return queries, elapsed


def bench_triggerer(url: str, sensors: int = 1_000, interval: float = 1.0, seconds: float = 10.0) -> None:
    queries, elapsed = asyncio.run(_triggerer(url, sensors, interval, seconds))
    print(
        f"  triggerer with {sensors} deferred sensors, poll interval {interval:.0f} s: "
        f"{queries / elapsed:.1f} store queries/s "
        f"(one query per sensor per poll would be {sensors / interval:.0f}/s)"
    )


async def _twilio_fallback(url: str, sensors: int) -> tuple[int, int, float]:
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator
    from airflow_provider_twilio_sms.triggers.sms import SmsStatusTrigger, StorePoller

    store = SmsStore(url)
    with TwilioSimulator(callback_delay=0.01) as sim:
        os.environ["AIRFLOW_CONN_BENCH_STORE"] = json.dumps({"conn_type": "generic",
                                                             "extra": {"sqlalchemy_url": url}})
        os.environ["AIRFLOW_CONN_BENCH_TWILIO"] = json.dumps({
            "conn_type": "twilio_sms", "login": sim.account_sid, "password": sim.auth_token,
            "extra": {"from_number": OURS, "api_base_url": sim.base_url}})
        hook = TwilioSmsHook(twilio_conn_id="bench_twilio")
        sids = [hook.send_message(f"+1415555{i:04d}", "hello")["sid"] for i in range(sensors)]
        for sid in sids:  # the webhook stored ``sent``; the final callback was lost
            store.record_status_event(account_sid=sim.account_sid, conn_id="bench_twilio", message_sid=sid,
                                      status="sent", payload={})
        StorePoller._pollers.clear()
        sent_at = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
        before = sim.count("list") + sim.count("fetch")
        start = time.perf_counter()
        runs = [SmsStatusTrigger(message_sid=sid, success_statuses=["delivered"], failure_statuses=["failed"],
                                 store_conn_id="bench_store", poll_interval=0.5, fallback_at=sent_at,
                                 twilio_conn_id="bench_twilio", sent_at=sent_at).run() for sid in sids]
        await asyncio.gather(*(run.__anext__() for run in runs))
        elapsed = time.perf_counter() - start
        poller = next(iter(StorePoller._pollers.values()))
        return sim.count("list") + sim.count("fetch") - before, poller.rounds, elapsed


def bench_twilio_fallback(url: str, sensors: int = 1_000) -> None:
    requests, rounds, elapsed = asyncio.run(_twilio_fallback(url, sensors))
    print(
        f"  triggerer with {sensors} sensors whose final callbacks were lost: all done in {rounds} round(s), "
        f"{elapsed:.1f} s, {requests} Twilio request(s) (one per sensor per round would be "
        f"{sensors * rounds}; ratio {requests / (sensors * rounds):.4f})"
    )


def _bench_backend(name: str, url: str, events: int) -> None:
    print(f"{name}:")
    bench_poke(url, events)
    bench_triggerer(url)
    bench_twilio_fallback(url)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        _bench_backend("SQLite", f"sqlite:///{tempfile.mkdtemp()}/bench.db", args.events)
    if args.backend in ("postgres", "both"):
        with scratch_database() as url:
            if url:
                _bench_backend("PostgreSQL", url, args.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: one round of a triggerer's reply poller with 1 000 and with 1 000 000 stored inbound events.

Per backend (SQLite always; PostgreSQL when TWILIO_SMS_BENCH_PG_URL or the local server answers), in one
run, with the same waiters at both sizes: 200 deferred reply sensors that are caught up (120 waiting on a
reply from a number to one of ours, 40 on a sender only, 20 on one of our numbers only, 20 on a Messaging
Service only), while 5 new messages arrive between rounds. Prints the median time of

  1. a round (every waiter's reads, in one statement, and their matching);
  2. where a new sensor starts (``SmsStore.inbound_cursor``: one index probe);
  3. a round in which one new waiter (after_id=0, on one of our numbers) joins the 200;

with their range (min-max), and the ratio 1M/1k of each (goal: at most 2, i.e. a round does not grow with
the history). The two stores are measured in turn, round after round, so that other work on the machine
weighs on both alike. Also how many rounds a new waiter needs to see a reply sent after it started (goal:
1).

    .venv/bin/python bench/reply_poller.py [--events 1000000] [--rounds 100] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from airflow_provider_twilio_sms.replies import ReplyCriteria
from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.api import SmsStore
from airflow_provider_twilio_sms.store.migrate import upgrade_url
from airflow_provider_twilio_sms.triggers.sms import StorePoller

from scratch_pg import scratch_database

ACCOUNT = "AC" + "0" * 32
CONN = "bench"
OURS = tuple(f"+1500555000{i}" for i in range(5))
SERVICES = tuple(f"MG{i:032d}" for i in range(3))
SENDERS = 20_000
COLUMNS = ("kind", "account_sid", "conn_id", "dedupe_key", "message_sid", "status", "from_number",
           "to_number", "messaging_service_sid", "body", "num_media", "received_at", "payload")


def _rows(start: int, stop: int, first_at: datetime):
    """Inbound history, one message a second: 20 000 senders, five numbers of ours, one in ten through a
    service. Times as the store keeps them (naive UTC)."""
    for i in range(start, stop):
        yield ("inbound", ACCOUNT, CONN, f"inbound:SM{i:032d}", f"SM{i:032d}", "received",
               f"+1555{i % SENDERS:07d}", OURS[i % len(OURS)], SERVICES[i % 3] if i % 10 == 0 else None,
               f"message {i}", 0, (first_at + timedelta(seconds=i)).replace(tzinfo=None), "{}")


def _fill(store: SmsStore, have: int, total: int, first_at: datetime) -> None:
    """Bulk insert inbound history until the store holds ``total`` (COPY on PostgreSQL, executemany on
    SQLite), then refresh the planner's statistics."""
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        for start in range(have, total, 200_000):
            if store.dialect == "postgresql":  # a bulk load may take longer than any store call should
                cursor.execute("SET LOCAL statement_timeout = 0")
            rows = _rows(start, min(total, start + 200_000), first_at)
            if store.dialect == "postgresql":
                buffer = io.StringIO()
                csv.writer(buffer).writerows(["" if v is None else v for v in row] for row in rows)
                buffer.seek(0)
                copy = f"COPY twilio_sms_event ({', '.join(COLUMNS)}) FROM STDIN (FORMAT csv)"
                cursor.copy_expert(copy, buffer)
            else:
                cursor.execute("BEGIN")
                cursor.executemany(f"INSERT INTO twilio_sms_event ({', '.join(COLUMNS)}) VALUES "
                                   f"({', '.join('?' * len(COLUMNS))})",
                                   ((*row[:-2], row[-2].isoformat(sep=" "), row[-1]) for row in rows))
            raw.commit()
        cursor.execute("ANALYZE")
        raw.commit()
        cursor.close()
    finally:
        raw.close()


def _waiters(since: datetime) -> list[ReplyCriteria]:
    shapes = ([{"from_number": f"+1555{i:07d}", "to_number": OURS[i % 5]} for i in range(120)]
              + [{"from_number": f"+1555{i:07d}"} for i in range(120, 160)]
              + [{"to_number": OURS[i % 5]} for i in range(20)]
              + [{"messaging_service_sid": SERVICES[i % 3]} for i in range(20)])
    return [ReplyCriteria(ACCOUNT, CONN, keywords=("YES",), since=since, **shape) for shape in shapes]


def _arrive(store: SmsStore, count: int, tag: str, body: str = "hello", frm: str = "+15550000007") -> None:
    """``count`` new messages through the store's webhook path, to our numbers in turn."""
    for i in range(count):
        store.record_inbound(account_sid=ACCOUNT, conn_id=CONN, message_sid=f"SM{tag}{i:03d}",
                             from_number=frm, to_number=OURS[i % 5], body=body, payload={})


async def _timed_round(poller: StorePoller) -> float:
    start = time.perf_counter()
    await poller.poll_round()
    return time.perf_counter() - start


class _Scene:
    """One store, its poller (driven round by round: its own loop never runs one) and 200 caught-up
    waiters, and the times measured."""

    def __init__(self, store: SmsStore, events: int):
        self.store, self.events = store, events
        self.poller = StorePoller(store, interval=3600)
        self.now = datetime.now(timezone.utc)
        self.times: dict[str, list[float]] = {"round": [], "cursor": [], "join": []}
        self.rounds_to_reply = 0
        with store.engine.connect() as conn:  # the newest message: every waiter has looked at it
            caught_up = conn.execute(select(func.max(t.event.c.id))).scalar()
        self.tasks = [asyncio.ensure_future(self.poller.reply(criteria, caught_up))
                      for criteria in _waiters(self.now)]

    async def step(self, r: int) -> None:
        """5 messages arrive; a round; where a new waiter starts; a round it joins."""
        _arrive(self.store, 5, f"r{r:04d}")
        self.times["round"].append(await _timed_round(self.poller))
        start = time.perf_counter()
        cursor = self.store.inbound_cursor(self.now)
        self.times["cursor"].append(time.perf_counter() - start)
        new = asyncio.ensure_future(self.poller.reply(
            ReplyCriteria(ACCOUNT, CONN, to_number=OURS[0], keywords=("NEVER",), since=self.now), cursor))
        await asyncio.sleep(0)
        self.times["join"].append(await _timed_round(self.poller))
        new.cancel()

    async def finish(self) -> None:
        """Count the rounds a new waiter needs for a reply sent after it started; stop every waiter."""
        since = datetime.now(timezone.utc)
        seen = asyncio.ensure_future(self.poller.reply(
            ReplyCriteria(ACCOUNT, CONN, to_number=OURS[0], keywords=("YES",), since=since),
            self.store.inbound_cursor(since)))
        await asyncio.sleep(0)
        _arrive(self.store, 1, "yes", body="YES", frm="+15559999999")
        while not seen.done() and self.rounds_to_reply < 1000:
            await self.poller.poll_round()
            await asyncio.sleep(0)
            self.rounds_to_reply += 1
        running = [*self.tasks, *([self.poller._task] if self.poller._task else [])]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _measure(stores: dict[int, SmsStore], rounds: int) -> list[_Scene]:
    """The scenes of every store, measured in turn round after round (so that the machine's other work
    weighs on both sizes alike)."""
    StorePoller._pollers.clear()
    scenes = [_Scene(store, events) for events, store in stores.items()]
    await asyncio.sleep(0)
    for r in range(rounds):
        for scene in scenes:
            await scene.step(r)
    for scene in scenes:
        await scene.finish()
    return scenes


def _median(values: list[float]) -> str:
    return (f"{statistics.median(values) * 1e3:8.2f} ms (range {min(values) * 1e3:.2f}-"
            f"{max(values) * 1e3:.2f})")


def bench_backend(name: str, urls: list[str], sizes: tuple[int, int], rounds: int) -> None:
    """Fill a fresh store per size (history received before the bench starts, as the webhook would have
    stored it), then measure them side by side and print the figures and their ratios."""
    print(f"{name}:")
    stores = {}
    for url, events in zip(urls, sizes, strict=True):
        upgrade_url(url)
        stores[events] = SmsStore(url)
        started = time.perf_counter()
        _fill(stores[events], 0, events, datetime.now(timezone.utc) - timedelta(seconds=events + 86_400))
        print(f"  {events:>9,} stored inbound events (bulk loaded in {time.perf_counter() - started:.0f} s)")
    small, large = asyncio.run(_measure(stores, rounds))
    labels = {"round": "round", "cursor": "new wait's start (cursor)", "join": "round a new waiter joins"}
    for key, label in labels.items():
        ratio = statistics.median(large.times[key]) / statistics.median(small.times[key])
        print(f"  {label:<26} {small.events:>9,}: {_median(small.times[key])}   {large.events:>9,}: "
              f"{_median(large.times[key])}   ratio {ratio:.2f} (goal <= 2)")
    print(f"  rounds until a new waiter saw a reply sent after it started: {small.rounds_to_reply} and "
          f"{large.rounds_to_reply} (goal 1)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    sizes = (1_000, args.events)
    if args.backend in ("sqlite", "both"):
        folder = tempfile.mkdtemp()
        bench_backend("SQLite", [f"sqlite:///{folder}/{size}.db" for size in sizes], sizes, args.rounds)
    if args.backend in ("postgres", "both"):
        with scratch_database() as small, scratch_database() as large:
            if small and large:
                bench_backend("PostgreSQL", [small, large], sizes, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

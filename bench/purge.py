"""Benchmark: the retention purge (``SmsStore.purge``) on a small and a large store, SQLite and PostgreSQL.

A store of N rows holds N/4 outbound messages, each with 3 status events (the 1:3 a deployment sending
1M SMS a day writes), created evenly over the last 60 days: half of each table is older than the 30-day
cutoff. Seeded in bulk (executemany on SQLite, COPY on PostgreSQL), then analysed. Prints, per backend
and store size (1 000 and 1 000 000 rows):

  1. the time of one batch of 100 rows (select the page through its index, delete it by id, commit),
     for events and for messages: the median over rounds with the range, and the ratio of the large
     store's median to the small one's (the baseline, measured in the same run): a batch whose cost
     does not grow with the table is near 1;
  2. purge throughput at the default batch size (5 000 rows per transaction): rows deleted per second,
     the median over rounds (one batch of events and one of messages a round on the large store; on
     the small one, a whole purge of a freshly seeded store a round) with the range;
  3. on the large store, how PostgreSQL and SQLite read each statement of a batch (the plans' access
     paths), and the time of the whole remaining purge.

    .venv/bin/python bench/purge.py [--sizes 1000,1000000] [--rounds 5] [--backend sqlite|postgres|both]

Figures vary with the machine and what else runs on it: compare the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.api import SmsStore
from airflow_provider_twilio_sms.store.migrate import upgrade_url
from airflow_provider_twilio_sms.store.retention import Retention

from scratch_pg import scratch_database

AGE = timedelta(days=30)
SPAN = timedelta(days=60)
ACCOUNT = "AC" + "0" * 32
MESSAGE_COLUMNS = ("id", "scope", "idempotency_key", "idempotency_key_sha256", "account_sid", "conn_id",
                   "to_number", "from_number", "body_sha256", "num_media", "send_state", "attempt_id",
                   "lease_expires_at", "sid", "status", "status_rank", "created_at", "updated_at")
EVENT_COLUMNS = ("id", "kind", "account_sid", "conn_id", "dedupe_key", "message_sid", "message_id", "status",
                 "from_number", "to_number", "received_at", "payload")


class _Enough(Exception):
    """Raised by :class:`TimedRetention` once it has timed the batches asked for."""


class TimedRetention(Retention):
    """A :class:`Retention` that times each batch's transaction and stops after ``max_batches``."""

    def __init__(self, store: SmsStore, batch_size: int, max_batches: int | None = None):
        super().__init__(store, batch_size)
        self.max_batches = max_batches
        self.times: list[float] = []

    @contextmanager
    def _transaction(self, dry_run: bool):
        started = time.perf_counter()
        with super()._transaction(dry_run) as conn:
            yield conn
        self.times.append(time.perf_counter() - started)
        if self.max_batches is not None and len(self.times) >= self.max_batches:
            raise _Enough


def _stamp(moment: datetime) -> str:
    """A timestamp as the store keeps it: naive UTC, microseconds."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _rows(total: int, now: datetime):
    """(message rows, event rows) of a store of ``total`` rows, as tuples in column order."""
    count = max(total // 4, 1)
    step = SPAN / count
    messages, events = [], []
    for i in range(1, count + 1):
        created = now - SPAN + step * (i - 1)
        stamp = _stamp(created)
        to, sid = f"+1555{i % 10_000_000:07d}", f"SM{i:032x}"
        messages.append((i, f"{ACCOUNT}|", f"key-{i}", f"{i:064x}", ACCOUNT, "bench", to, "+15005550006",
                         "0" * 64, 0, "sent", "a", stamp, sid, "delivered", 5, stamp, stamp))
        for k in range(3):
            n = 3 * (i - 1) + k + 1
            events.append((n, "status", ACCOUNT, "bench", f"status:{n}", sid, i, "delivered", "+15005550006",
                           to, _stamp(created + timedelta(seconds=k + 1)), "{}"))
    return messages, events


def _seed(store: SmsStore, total: int, now: datetime) -> float:
    """Empty the tables and write a store of ``total`` rows in bulk, then analyse; the seconds it took."""
    started = time.perf_counter()
    messages, events = _rows(total, now)
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if store.dialect == "sqlite":  # the store's SQLite connections are in manual mode (engine.py)
            cursor.execute("BEGIN IMMEDIATE")
        else:  # the store's sessions cancel statements after [twilio_sms] store_statement_timeout_seconds
            cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute("DELETE FROM twilio_sms_event")
        cursor.execute("DELETE FROM twilio_sms_message")
        for table, columns, rows in (("twilio_sms_message", MESSAGE_COLUMNS, messages),
                                     ("twilio_sms_event", EVENT_COLUMNS, events)):
            if store.dialect == "postgresql":
                buffer = io.StringIO()
                csv.writer(buffer).writerows(rows)
                buffer.seek(0)
                copy = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
                cursor.copy_expert(copy, buffer)
            else:
                marks = ", ".join("?" * len(columns))
                cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        if store.dialect == "sqlite":
            cursor.execute("COMMIT")
        raw.commit()
        if store.dialect == "sqlite":
            cursor.execute("ANALYZE")
        else:  # as autovacuum leaves a table: hint bits and visibility map set, statistics fresh
            raw.driver_connection.autocommit = True
            cursor.execute("SET statement_timeout = 0")
            cursor.execute("VACUUM ANALYZE twilio_sms_message")
            cursor.execute("VACUUM ANALYZE twilio_sms_event")
            cursor.execute("RESET statement_timeout")
            raw.driver_connection.autocommit = False
    finally:
        raw.close()
    return time.perf_counter() - started


def _count(store: SmsStore, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _batches(store: SmsStore, sweep_name: str, batch_size: int, batches: int | None, now: datetime
             ) -> tuple[list[float], int]:
    """``batches`` batches (None: all) of one of the purge's sweeps: (the batches' times, rows deleted)."""
    retention = TimedRetention(store, batch_size, batches)
    sweep = getattr(retention.sql, sweep_name)
    table = t.metadata.tables[sweep.table]
    before = _count(store, table)
    with suppress(_Enough):
        retention._sweep(sweep, {"p_cutoff": now - AGE, "p_now": now}, dry_run=False)
    return retention.times, before - _count(store, table)


def _median_range(values: list[float], scale: float = 1.0, unit: str = "ms", digits: int = 2) -> str:
    values = sorted(values)
    return (f"{statistics.median(values) * scale:.{digits}f} {unit} "
            f"({values[0] * scale:.{digits}f}-{values[-1] * scale:.{digits}f})")


def _plans(store: SmsStore, now: datetime) -> None:
    """The access paths each statement of a purge's batch, and of an erasure, takes on the large store."""
    sql = Retention(store).sql
    ids = list(range(1, 5001))
    values = {"p_cutoff": now - AGE, "p_now": now, "p_limit": 5000, "p_ids": ids, "p_number": "+15550000042",
              "p_sids": [f"SM{i:032x}" for i in ids[:3]], **sql.events.start}
    statements = {
        "event page": sql.events.page,
        "event delete": select(t.event.c.id).where(sql.events.remove.whereclause),
        "message page": sql.messages.page,
        "message delete": select(t.message.c.id).where(sql.messages.remove.whereclause),
        "forget: messages": sql.number_messages.page,
        "forget: linked": select(t.event.c.id).where(sql.linked_events_remove.whereclause),
        "forget: by SID": select(t.event.c.id).where(sql.sid_events_remove.whereclause),
        **{f"forget: events {i + 1}": sweep.page for i, sweep in enumerate(sql.number_events)},
        "forget: counts": sql.counts[t.event.name],
    }
    explain = "EXPLAIN " if store.dialect == "postgresql" else "EXPLAIN QUERY PLAN "
    for name, statement in statements.items():
        compiled = str(statement.params(**values).compile(
            dialect=store.engine.dialect, compile_kwargs={"literal_binds": True, "render_postcompile": True}))
        with store.engine.connect() as conn:
            plan = conn.exec_driver_sql(explain + compiled.replace("%", "%%")).all()
        plan = [" ".join(map(str, row)) for row in plan]
        paths = [re.sub(r"\s+", " ", re.sub(r"\(cost=.*?\)|^\d+ \d+ \d+ ", "", line)).strip()
                 for line in plan if re.search(r"Scan|SCAN|SEARCH|Join|Sort|SORT|TEMP B-TREE", line)]
        print(f"      {name:18} {' / '.join(paths)}")


LARGE = 100_000  # from this size on, one seeding serves every round


def _bench_sweep(store: SmsStore, sweep: str, size: int, rounds: int, now: datetime
                 ) -> tuple[list[float], list[float], list[float]]:
    """(times of one batch of 100, times of one batch of 5 000, rows/s of those) over ``rounds``. A small
    store is seeded anew each round; the messages' sweep runs after the events' (as in a purge), so its
    rows have no events left.
    """
    small, big, rates = [], [], []
    for _ in range(rounds):
        if size < LARGE:
            _seed(store, size, now)
            if sweep == "messages":
                _batches(store, "events", 5000, None, now)
        small += _batches(store, sweep, 100, 1, now)[0]
        times, deleted = _batches(store, sweep, 5000, 1, now)
        big += times
        rates.append(deleted / times[0])
    return small, big, rates


def bench(url: str, sizes: list[int], rounds: int) -> None:
    upgrade_url(url)
    store = SmsStore(url)
    baseline: dict[str, list[float]] = {}
    for size in sizes:
        now = datetime.now(timezone.utc)
        seeded = _seed(store, size, now)
        print(f"  {size:>9,} stored rows ({size // 4:,} messages, {3 * (size // 4):,} events; seeded in "
              f"{seeded:.1f} s)")
        if size >= LARGE:
            _plans(store, now)
        for sweep in ("events", "messages"):
            small, big, rates = _bench_sweep(store, sweep, size, rounds, now)
            baseline.setdefault(sweep, small)
            ratio = statistics.median(small) / statistics.median(baseline[sweep])
            print(f"    {sweep:8} one batch of 100: {_median_range(small, 1e3)}, x{ratio:.2f} of the "
                  f"{sizes[0]:,}-row store; one batch of up to 5 000: {_median_range(big, 1e3)} = "
                  f"{_median_range(rates, 1, 'rows/s', 0)}")
            if size >= LARGE:
                times, deleted = _batches(store, sweep, 5000, None, now)
                print(f"    {sweep:8} the rest of the sweep: {deleted:,} rows in {len(times)} batches, "
                      f"{sum(times):.1f} s = {deleted / sum(times):,.0f} rows/s; batches "
                      f"{_median_range(times, 1e3)}")
    store.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"Purge of rows older than {AGE.days} days; {args.rounds} rounds. Shared machine: compare ratios.")
    if args.backend in ("sqlite", "both"):
        print("SQLite")
        with tempfile.TemporaryDirectory() as tmp:
            bench(f"sqlite:///{tmp}/bench.db", sizes, args.rounds)
    if args.backend in ("postgres", "both"):
        with scratch_database() as url:
            if url:
                print("PostgreSQL")
                bench(url, sizes, args.rounds)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Benchmark: rate-limit decisions, on SQLite and on PostgreSQL.

Prints, in one run:
  1. decisions per second from 4 processes on one pool (one store engine each, as 4 workers have), for
     grants (a limit never reached) and for refusals (a full window); medians of rounds with the range;
  2. what one decision costs with 0, 1 000 and 1 000 000 units already in the window (a one-day window):
     a grant (under a limit of 2 000 000) and a refusal (the window full at exactly its limit; the
     smallest full window is the refusal's baseline), the median of each round's median of a block of
     decisions, with the range over rounds (blocks interleaved), and the ratio to the baseline. The
     units are written with one bulk INSERT each (timed and printed).

    .venv/bin/python bench/rate_limit.py [--seconds 3] [--rounds 3] [--decisions 200] [--sizes 0,1000,1000000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

from sqlalchemy import select, text

from airflow_provider_twilio_sms.store.api import SmsStore
from airflow_provider_twilio_sms.store.migrate import upgrade_url

from scratch_pg import scratch_database

DAY = 86_400


def _median_range(values: list[float], scale: float, unit: str) -> str:
    values = sorted(values)
    return (
        f"{statistics.median(values) * scale:8.3f} {unit} ({values[0] * scale:.3f}-{values[-1] * scale:.3f})"
    )


# -- 1. decisions per second from 4 processes ----------------------------------------------------------

def _decider(url, pool, limit, seconds, out, start):
    store = SmsStore(url)
    store.acquire_rate_slot(pool, limit, 60)  # connections and compiled statements, before the clock starts
    start.wait()
    count, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        store.acquire_rate_slot(pool, limit, 60)
        count += 1
    out.put(count)


def _per_second(url: str, pool: str, limit: int, seconds: float) -> float:
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_decider, args=(url, pool, limit, seconds, out, start)) for _ in range(4)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    start.set()
    for p in procs:
        p.join()
    return sum(out.get() for _ in procs) / seconds


def bench_throughput(url: str, seconds: float, rounds: int) -> None:
    for what, limit in (("grants", 1_000_000_000), ("refusals", 1)):
        rates = [_per_second(url, f"throughput-{what}-{r}", limit, seconds) for r in range(rounds)]
        print(f"  decisions/s, 4 processes, {what:8}: {statistics.median(rates):7.0f}/s "
              f"(rounds {min(rates):.0f}-{max(rates):.0f})")


# -- 2. cost per decision against how many units the window holds -----------------------------------------

def _fill(store: SmsStore, pool: str, ring_size: int, units: int) -> float:
    """The pool's ring of ``ring_size`` slots with ``units`` of them taken just now (in a one-day window),
    the oldest next: one bulk INSERT ... SELECT. Returns the seconds it took."""
    started = time.perf_counter()
    with store.engine.begin() as conn:
        # the store's own clock expression (bench only), so that the units are "now" on its clock
        now_us = conn.execute(select(store._sql.clock_us[0])).scalar()
        conn.execute(text("DELETE FROM twilio_sms_rate_slot WHERE pool = :pool"), {"pool": pool})
        conn.execute(text("DELETE FROM twilio_sms_rate_pool WHERE pool = :pool"), {"pool": pool})
        conn.execute(text("INSERT INTO twilio_sms_rate_pool (pool, updated_at, ring_size, ring_next) "
                          "VALUES (:pool, CURRENT_TIMESTAMP, :size, :next)"),
                     {"pool": pool, "size": ring_size, "next": units % ring_size})
        if units:
            numbers = ("SELECT generate_series(0, :n - 1) AS i" if store.dialect == "postgresql" else
                       "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < :n) "
                       "SELECT i FROM k")
            conn.execute(text(f"INSERT INTO twilio_sms_rate_slot (pool, slot, until_us) "
                              f"SELECT :pool, i, :now FROM ({numbers}) AS units"),
                         {"pool": pool, "n": units, "now": now_us})
    if store.dialect == "postgresql":
        with store.engine.connect() as conn:
            conn.execute(text("ANALYZE twilio_sms_rate_slot"))
    return time.perf_counter() - started


def _block(store: SmsStore, pool: str, limit: int, n: int, granted: bool) -> float:
    """The median time of ``n`` decisions in a row on ``pool``."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        decision = store.acquire_rate_slot(pool, limit, DAY)
        times.append(time.perf_counter() - start)
        assert decision.granted == granted, (pool, limit, decision)
    return statistics.median(times)


def bench_cost(url: str, sizes: list[int], n: int, rounds: int) -> None:
    """Every pool filled first (then, on PostgreSQL, VACUUM ANALYZE, so that no autovacuum runs during the
    timing); then rounds in which each case runs a block of ``n`` decisions, interleaved, so that the
    machine's drift hits every case alike."""
    store = SmsStore(url)
    grant_limit = 2 * max(*sizes, 1)
    cases = []  # (label, pool, limit, granted)
    for size in sizes:
        full = max(size, 1)
        took = _fill(store, f"grant-{size}", grant_limit, size) + _fill(store, f"refuse-{size}", full, full)
        print(f"  {size:>9,} units written in {took:5.1f} s (twice: a pool to grant in, a full one)")
        cases += [("grant", size, f"grant-{size}", grant_limit, True),
                  ("refusal", size, f"refuse-{size}", full, False)]
    if store.dialect == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE twilio_sms_rate_slot"))
    times: dict[tuple[str, int], list[float]] = {(what, size): [] for what, size, *_ in cases}
    for _ in range(rounds):
        for what, size, pool, limit, granted in cases:
            times[(what, size)].append(_block(store, pool, limit, n, granted))
    for what in ("grant", "refusal"):
        base = statistics.median(times[(what, sizes[0])])
        for size in sizes:
            values = times[(what, size)]
            note = f" ({max(size, 1):,} of {max(size, 1):,})" if what == "refusal" else ""
            print(f"  {what:7} with {size:>9,} units in the window{note}: {_median_range(values, 1e3, 'ms')}"
                  f"  x{statistics.median(values) / base:.2f} of {sizes[0]:,}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--sizes", default="0,1000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    sqlite = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    upgrade_url(sqlite)
    print("SQLite:")
    bench_throughput(sqlite, args.seconds, args.rounds)
    bench_cost(sqlite, sizes, args.decisions, args.rounds)
    with scratch_database() as url:
        if url:
            upgrade_url(url)
            print("PostgreSQL:")
            bench_throughput(url, args.seconds, args.rounds)
            bench_cost(url, sizes, args.decisions, args.rounds)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

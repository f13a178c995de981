"""Benchmark: signed status callbacks per second through the provider's webhook, against a bare FastAPI app.

Every party is a process of its own on 127.0.0.1 (see bench/webhook_servers.py and bench/loadgen.py):

  - ours: the standalone webhook, started as ``airflow twilio-sms webhook serve`` starts it (uvicorn, one
    worker process);
  - bare: a FastAPI app that checks the signature with twilio's RequestValidator and does one plain INSERT
    of the event row into the same table of the same database (same uvicorn settings);
  - noop: a server that answers 200 without reading the request, to measure the load generator's ceiling;
  - the load generator: ``--clients`` processes, each holding ``--connections`` keep-alive connections,
    posting pre-signed callbacks (a new MessageSid each, so each is a new event) for ``--seconds``.

For ours the callbacks are about messages it sent (rows seeded as sent, status queued; each callback
advances one): the real workload. Per backend (SQLite; PostgreSQL in a scratch database when a server
answers) and per size of the history (``--sizes``, default 1 000 and 1 000 000 stored events, bulk-loaded
with COPY or executemany, a third as many sent messages), after a warm-up of each server, ``--rounds``
rounds each run the generator against the no-op server, the bare app and ours (bare and ours take turns
going first), so that other work on the machine weighs on all of them alike. Printed: the medians and
ranges of callbacks/s and latencies, the ratio ours/bare of each round (goal >= 0.7), the generator's
ceiling with a flag when it is not at least twice the fastest server's rate, and how many database
connections each server's pools opened during the rounds (goal 0: no new sessions in steady state).

    .venv/bin/python bench/webhook.py [--seconds 3] [--rounds 3] [--sizes 1000,1000000]
                                      [--backend sqlite|postgres|both] [--clients 2] [--connections 8]
                                      [--bare-writes auto|inline|thread] [--profile DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, func, select

from scratch_pg import scratch_database

HERE = Path(__file__).resolve().parent
ACCOUNT = "AC" + "b" * 32
TOKEN = "bench-auth-token"
PUBLIC = "https://airflow.example.com"
CONN_ID = "twilio_sms_default"
PATH = f"/twilio_sms/webhooks/{CONN_ID}/status"
OURS, THEM = "+15005550006", "+14155550123"
_prefixes = itertools.count(1)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signer() -> str:
    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings

    return TwilioConnectionSettings(conn_id=CONN_ID, account_sid=ACCOUNT, auth_token=TOKEN).signer


# -- seeding -------------------------------------------------------------------------------------------

MESSAGE_COLUMNS = ("id", "scope", "idempotency_key", "idempotency_key_sha256", "account_sid", "conn_id",
                   "signer", "to_number", "from_number", "body", "body_sha256", "num_media", "send_state",
                   "attempt_id", "lease_expires_at", "sid", "status", "status_rank", "created_at", "sent_at",
                   "updated_at")
EVENT_COLUMNS = ("kind", "account_sid", "conn_id", "signer", "dedupe_key", "message_sid", "message_id",
                 "status", "from_number", "to_number", "received_at", "payload")
_BODY_SHA = hashlib.sha256(b"bench").hexdigest()


def _message_row(row_id: int, sid: str, status: str, rank: int, at: datetime, signer: str) -> tuple:
    key = f"bench-{sid}"
    return (row_id, f"{ACCOUNT}|", key, hashlib.sha256(key.encode()).hexdigest(), ACCOUNT, CONN_ID, signer,
            THEM, OURS, "bench", _BODY_SHA, 0, "sent", "bench", at, sid, status, rank, at, at, at)


def _payload(sid: str, status: str) -> str:
    return json.dumps({"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "From": OURS, "MessageSid": sid,
                       "MessageStatus": status, "SmsSid": sid, "SmsStatus": status, "To": THEM},
                      sort_keys=True)


def _load(engine, table: str, columns: tuple[str, ...], rows) -> None:
    """Bulk insert: COPY on PostgreSQL, executemany in one transaction on SQLite (times as naive UTC)."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            buffer = io.StringIO()
            csv.writer(buffer).writerows(
                ["" if v is None else v.isoformat(sep=" ") if isinstance(v, datetime) else v for v in row]
                for row in rows)
            buffer.seek(0)
            cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)", buffer)
        else:
            cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                               f"({', '.join('?' * len(columns))})",
                               (tuple(v.isoformat(sep=" ") if isinstance(v, datetime) else v for v in row)
                                for row in rows))
        raw.commit()
        cursor.close()
    finally:
        raw.close()


def _next_message_id(engine) -> int:
    from airflow_provider_twilio_sms.store import tables as t

    with engine.connect() as conn:
        return (conn.execute(select(func.max(t.message.c.id))).scalar() or 0) + 1


def seed_history(engine, events: int, signer: str) -> None:
    """Grow the history to ``events`` stored events: sent messages, each with three status callbacks
    (queued, sent, delivered), received over the past days; then refresh the planner's statistics.
    """
    from airflow_provider_twilio_sms.store import tables as t

    with engine.connect() as conn:
        have = conn.execute(select(func.count()).select_from(t.event)).scalar()
    messages = max(0, events - have + 2) // 3
    if not messages:
        return
    first_id, start = _next_message_id(engine), datetime.now(timezone.utc).replace(tzinfo=None)
    for chunk in range(0, messages, 100_000):
        ids = range(first_id + chunk, first_id + min(messages, chunk + 100_000))
        sids = {i: f"SM{'f' * 8}{i:024x}" for i in ids}
        at = {i: start - timedelta(days=3, seconds=i) for i in ids}
        _load(engine, "twilio_sms_message", MESSAGE_COLUMNS,
              (_message_row(i, sids[i], "delivered", 5, at[i], signer) for i in ids))
        _load(engine, "twilio_sms_event", EVENT_COLUMNS,
              (("status", ACCOUNT, CONN_ID, signer, f"status:{sids[i]}:{status}", sids[i], i, status, OURS,
                THEM, at[i] + timedelta(seconds=n), _payload(sids[i], status))
               for i in ids for n, status in enumerate(("queued", "sent", "delivered"))))
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('twilio_sms_message', 'id'), "
                                 "(SELECT max(id) FROM twilio_sms_message))")
            conn.commit()
    raw = engine.raw_connection()
    try:
        raw.cursor().execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def seed_pending(engine, prefixes: list[str], count: int, signer: str) -> None:
    """Sent messages (status queued) with the SIDs the generator will post callbacks about."""
    first_id, now = _next_message_id(engine), datetime.now(timezone.utc).replace(tzinfo=None)
    sids = [f"SM{prefix}{i:024x}" for prefix in prefixes for i in range(count)]
    _load(engine, "twilio_sms_message", MESSAGE_COLUMNS,
          (_message_row(first_id + n, sid, "queued", 2, now, signer) for n, sid in enumerate(sids)))
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('twilio_sms_message', 'id'), "
                                 "(SELECT max(id) FROM twilio_sms_message))")
            conn.commit()


def stored(engine) -> tuple[int, int]:
    from airflow_provider_twilio_sms.store import tables as t

    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(t.event)).scalar(),
                conn.execute(select(func.count()).select_from(t.message)).scalar())


# -- servers and the generator -------------------------------------------------------------------------

class Server:
    """One server process (bench/webhook_servers.py), its output kept in a file."""

    def __init__(self, which: str, url: str | None, env: dict[str, str], logs: Path, options: list[str]):
        self.which, self.port, self.stats_port = which, _port(), _port()
        self.log = (logs / f"{which}.log").open("w")
        command = [sys.executable, str(HERE / "webhook_servers.py"), which, "--port", str(self.port),
                   "--stats-port", str(self.stats_port), *options] + (["--store-url", url] if url else [])
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {which} server exited: see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {which} server did not listen within 120 s") from None
                time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (user + system), from /proc."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def connects(self, path: str = "/") -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}{path}", timeout=60) as answer:
            return json.load(answer)["connects"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@dataclass
class Run:
    ok: int
    other: int
    rate: float
    latencies_ms: list[float]
    exhausted: bool
    cpu_ms: float = 0.0  # the server's CPU time per answered callback


def new_prefixes(n: int) -> list[str]:
    """SID prefixes never used before in this run: one per generator process."""
    return [f"{next(_prefixes):08x}" for _ in range(n)]


def drive(port: int, seconds: float, prefixes: list[str], connections: int, per_client: int,
          cycle: bool = False) -> Run:
    """Load ``port`` for ``seconds`` from one generator process per SID prefix."""
    procs = []
    for prefix in prefixes:
        spec = {"port": port, "path": PATH, "connections": connections, "seconds": seconds,
                "count": per_client, "prefix": prefix, "token": TOKEN, "public_url": PUBLIC,
                "account": ACCOUNT, "cycle": cycle}
        procs.append(subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), json.dumps(spec)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a load generator did not start")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.communicate(timeout=seconds + 120)[0]) for proc in procs]
    if any(r["unanswered"] for r in results):
        raise RuntimeError("requests were left unanswered for 30 s after the run")
    elapsed = statistics.mean(r["elapsed"] for r in results)
    ok = sum(r["ok"] for r in results)
    return Run(ok, sum(r["other"] for r in results), ok / elapsed,
               [x for r in results for x in r["latencies_ms"]], any(r["exhausted"] for r in results))


# -- the bench -----------------------------------------------------------------------------------------

@dataclass
class Figures:
    runs: dict[str, list[Run]] = field(default_factory=lambda: {"ceiling": [], "bare": [], "ours": []})
    connects: dict[str, int] = field(default_factory=lambda: {"bare": 0, "ours": 0})


def _spread(values: list[float], fmt: str = ",.0f") -> str:
    return f"{statistics.median(values):{fmt}} (range {min(values):{fmt}}-{max(values):{fmt}})"


def _report(figures: Figures) -> list[str]:
    lines = []
    labels = {"ceiling": "generator ceiling (no-op server)", "bare": "bare app (validate + 1 INSERT)",
              "ours": "ours (standalone webhook)"}
    for key, label in labels.items():
        runs = figures.runs[key]
        line = f"    {label:<34} {_spread([r.rate for r in runs])} /s"
        if key != "ceiling":
            lat = sorted(x for r in runs for x in r.latencies_ms)
            line += (f"   p50 {statistics.median(lat):5.1f} ms  p95 {lat[int(len(lat) * 0.95)]:6.1f} ms   "
                     f"server CPU {_spread([r.cpu_ms for r in runs], '.2f')} ms/callback")
        errors = sum(r.other for r in runs)
        if errors:
            line += f"   {errors} answers not 200"
        if any(r.exhausted for r in runs):
            line += "   (ran out of prepared requests: a rate too low)"
        lines.append(line)
    ratios = [o.rate / b.rate for o, b in zip(figures.runs["ours"], figures.runs["bare"], strict=True)]
    lines.append(f"    {'ratio ours/bare, per round':<34} {_spread(ratios, '.2f')}   (goal >= 0.7)")
    fastest = max(statistics.median([r.rate for r in figures.runs[k]]) for k in ("bare", "ours"))
    headroom = statistics.median([r.rate for r in figures.runs["ceiling"]]) / fastest
    lines.append(f"    generator ceiling / fastest server: {headroom:.1f}x"
                 + ("" if headroom >= 2 else "   FLAG: under 2x, the generator may limit the servers"))
    callbacks = {k: sum(r.ok + r.other for r in figures.runs[k]) for k in ("bare", "ours")}
    lines.append("    database connections opened during the rounds: "
                 + ", ".join(f"{k} {figures.connects[k]} (over {callbacks[k]:,} callbacks)"
                             for k in ("bare", "ours")) + "   (goal: ours 0)")
    return lines


def bench_size(engine, servers: dict[str, Server], args, signer: str) -> list[str]:
    clients, connections, seconds = args.clients, args.connections, args.seconds
    estimate = {"bare": 2000.0, "ours": 2000.0}

    def load(which: str, run_seconds: float) -> Run:
        per_client = int(estimate[which] * run_seconds * 3 / clients) + 500
        prefixes = new_prefixes(clients)
        if which == "ours":  # callbacks about messages it sent: seed them before the timed part
            seed_pending(engine, prefixes, per_client, signer)
        run = drive(servers[which].port, run_seconds, prefixes, connections, per_client)
        estimate[which] = max(run.rate, 1000.0)
        return run

    for which in ("bare", "ours"):  # warm-up: caches filled, pools opened
        load(which, 1.0)
    figures = Figures()
    if args.profile:
        for which in ("bare", "ours"):
            servers[which].connects("/profile/start")
    for r in range(args.rounds):
        figures.runs["ceiling"].append(drive(servers["noop"].port, seconds, new_prefixes(clients),
                                             connections, 2000, cycle=True))
        for which in (("bare", "ours") if r % 2 == 0 else ("ours", "bare")):
            before, cpu = servers[which].connects(), servers[which].cpu_seconds()
            run = load(which, seconds)
            run.cpu_ms = (servers[which].cpu_seconds() - cpu) * 1000 / max(1, run.ok + run.other)
            figures.runs[which].append(run)
            figures.connects[which] += servers[which].connects() - before
    if args.profile:
        for which in ("bare", "ours"):
            servers[which].connects("/profile/stop")
    return _report(figures)


def bench_backend(name: str, url: str, args) -> None:
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    upgrade_url(url)
    signer = _signer()
    engine = create_engine(url)
    home = tempfile.mkdtemp(prefix="bench-webhook-")
    env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
           "AIRFLOW_CONN_TWILIO_SMS_DEFAULT": json.dumps({
               "conn_type": "twilio_sms", "login": ACCOUNT, "password": TOKEN,
               "extra": {"from_number": OURS, "webhook_base_url": PUBLIC,
                         "secondary_auth_token": "bench-secondary-token"}})}
    with ExitStack() as stack:
        servers = {}
        for which in ("noop", "bare", "ours"):
            if args.profile:
                env["TWILIO_SMS_BENCH_PROFILE"] = str(Path(args.profile) / f"{name}-{which}.prof")
            servers[which] = Server(which, url if which != "noop" else None, env, Path(home),
                                    ["--bare-writes", args.bare_writes] if which == "bare" else [])
            stack.callback(servers[which].stop)
        for size in args.sizes:
            started = time.perf_counter()
            seed_history(engine, size, signer)
            events, messages = stored(engine)
            print(f"{name}, {events:,} stored events and {messages:,} messages (loaded in "
                  f"{time.perf_counter() - started:.0f} s):", flush=True)
            for line in bench_size(engine, servers, args, signer):
                print(line, flush=True)
            events, messages = stored(engine)
            print(f"    (after the rounds: {events:,} events, {messages:,} messages)", flush=True)
    engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3, help="length of one timed run")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per server, taking turns")
    parser.add_argument("--sizes", default="1000,1000000", help="stored events, comma-separated")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections per generator")
    parser.add_argument("--bare-writes", choices=("auto", "inline", "thread"), default="auto",
                        help="where the bare app writes: auto is the faster way per database (inline on "
                             "SQLite, a worker thread on PostgreSQL)")
    parser.add_argument("--profile", metavar="DIR",
                        help="profile bare and ours during the rounds (yappi, every thread, CPU time) into "
                             "DIR/<backend>-<server>.prof (pstats); their rates are then not comparable")
    args = parser.parse_args()
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    logging.disable(logging.WARNING)  # alembic's lines would drown the figures
    print(f"{args.clients} generator processes x {args.connections} connections, {args.rounds} rounds x "
          f"{args.seconds:g} s per server, {os.cpu_count()} CPUs (shared with other work)", flush=True)
    if args.backend in ("sqlite", "both"):
        bench_backend("SQLite", f"sqlite:///{tempfile.mkdtemp()}/bench.db", args)
    if args.backend in ("postgres", "both"):
        with scratch_database() as url:
            if url:
                bench_backend("PostgreSQL", url, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the send path's overhead.

Prints, in one run, the per-message time of SmsSender.send (validation, opt-out check, claim, record)
against the same local stand-in as a raw twilio-python ``client.messages.create``, and the ratio; and, as
the floor any durable send path has (goal: at most 1.0 ms per message above it), the raw create between the
store's own two writes (the claim before the request, the SID after it) run as bare SQL on the DB-API
connection; on SQLite and on PostgreSQL. Also SmsSender.send with a new hook and sender per message, as the
operator builds them per task (the connection looked up, the process's client for it reused:
hooks/clients.py), and the same with that client forgotten before each message (a new client and TCP
connection per task, as before clients were kept): what a task adds over the sender. Rate-limit decisions
have their own benchmark: bench/rate_limit.py.

    .venv/bin/python bench/send.py [--messages 2400] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid

from airflow_provider_twilio_sms.store.api import SmsStore
from airflow_provider_twilio_sms.store.claims import key_digest
from airflow_provider_twilio_sms.store.migrate import upgrade_url

from scratch_pg import scratch_database


def _timed(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


def _bare(statement, dialect):
    """``statement`` as its driver runs it: the SQL SQLAlchemy compiles for ``dialect``, and a function that
    turns ``{bind name: value}`` into the driver's parameters with the column types' own conversions."""
    compiled = statement.compile(dialect=dialect)
    convert = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
               for name, bind in compiled.binds.items()}

    def parameters(values):
        given = {**{n: b.value for n, b in compiled.binds.items() if not b.required}, **values}
        given = {n: (convert[n](v) if convert.get(n) else v) for n, v in given.items()}
        return tuple(given[n] for n in compiled.positiontup) if compiled.positional else given

    return compiled.string, parameters


def _floor_writes(store: SmsStore, n: int):
    """The two writes a send cannot do without (the claim before the request, the SID after it): the
    store's own SQL, run on a bare DB-API connection (``sqlite3``, ``psycopg2``) with every parameter
    computed beforehand, i.e. with none of our Python around them. Returns ``write(i, send)``: claim,
    ``send(i)``, record."""
    from datetime import datetime, timezone

    from airflow_provider_twilio_sms.store.statements import CLAIM_COLUMNS, statements

    sql, dialect = statements(store.dialect), store.engine.dialect
    claim_sql, claim_parameters = _bare(sql.claim_insert_returning(True), dialect)
    record_sql, record_parameters = _bare(sql.record_sent, dialect)
    now = datetime.now(timezone.utc)
    run = uuid.uuid4().hex
    claims, records = [], []
    for i in range(n):
        row = dict.fromkeys(CLAIM_COLUMNS)
        key = f"floor-{run}-{i}"
        row.update(scope="AC|", idempotency_key=key, idempotency_key_sha256=key_digest(key), account_sid="AC",
                   conn_id="bench",
                   to_number="+14155550123", from_number="+15005550006", body=f"Your code is {i:06d}",
                   body_sha256="0" * 64, channel="sms", num_media=0, send_state="claimed", attempt_id=run,
                   status_rank=0,
                   lease_expires_at=now, created_at=now, updated_at=now, http_attempted_at=now)
        claims.append(claim_parameters({f"v_{k}": v for k, v in row.items()}))
        recorded = record_parameters({
            "p_sid": f"SMf{i:031d}", "p_num_segments": 1, "p_encoding": "GSM-7", "p_error_code": None,
            "p_error_message": None, "p_from_number": "+15005550006", "p_id": 0, "p_attempt": run,
            "p_status": "queued", "p_rank": 1, "p_now": now})
        records.append(dict(recorded) if isinstance(recorded, dict) else list(recorded))
    compiled_record = sql.record_sent.compile(dialect=dialect)
    id_at = list(compiled_record.positiontup).index("p_id") if compiled_record.positional else "p_id"
    connection = store.engine.raw_connection()
    connection.detach()
    bare = connection.dbapi_connection
    if store.dialect == "sqlite":  # in manual mode with synchronous=NORMAL, as the store's engine sets it

        def transaction(statement, params):
            bare.execute("BEGIN IMMEDIATE")
            rows = bare.execute(statement, params).fetchall()
            bare.execute("COMMIT")
            return rows
    else:  # one autocommitted statement, as the store runs it
        bare.autocommit = True
        cursor = bare.cursor()

        def transaction(statement, params):
            cursor.execute(statement, params)
            return cursor.fetchall()

    def write(i, send):
        new_id = transaction(claim_sql, claims[i])[0][0]
        send(i)
        params = records[i]
        params[id_at] = new_id
        transaction(record_sql, params)

    return write


def bench_overhead(url: str, n: int, rounds: int) -> None:
    from twilio.rest import Client

    from airflow_provider_twilio_sms.hooks.clients import forget_clients
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.sending import SendRequest, SmsSender
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

    with TwilioSimulator(callback_delay=3600) as sim:
        os.environ["AIRFLOW_CONN_TWILIO_SMS_DEFAULT"] = json.dumps({
            "conn_type": "twilio_sms", "login": sim.account_sid, "password": sim.auth_token,
            "extra": {"from_number": "+15005550006", "api_base_url": sim.base_url}})
        from twilio.http.http_client import TwilioHttpClient

        from airflow_provider_twilio_sms.hooks.http_client import quiet_twilio_logger

        # twilio-python's own HTTP client, quiet (it logs every request at INFO otherwise)
        raw = Client(sim.account_sid, sim.auth_token, environment={"BENCH": "1"},
                     http_client=TwilioHttpClient(timeout=30, logger=quiet_twilio_logger()))
        raw.api.base_url = sim.base_url
        store = SmsStore(url)
        sender = SmsSender(TwilioSmsHook(), store)
        per_round = max(1, n // rounds)
        floor_write = _floor_writes(store, per_round * rounds + 20)
        run = uuid.uuid4().hex
        keys = iter(range(10**9))  # every timed send gets a fresh idempotency key: no "already sent" shortcut
        floor_keys = iter(range(10**9))

        def raw_send(i):
            raw.messages.create(to="+14155550123", from_="+15005550006", body=f"Your code is {i:06d}")

        def floor_send(i):
            floor_write(next(floor_keys), raw_send)

        def our_send(i, sender=sender):
            result = sender.send(SendRequest(to="+14155550123", body=f"Your code is {i:06d}",
                                             idempotency_key=f"{run}-{next(keys)}"))
            assert not result["already_sent"], result

        def task_send(i):  # what SendSmsOperator.execute builds per task: a hook, a sender
            our_send(i, SmsSender(TwilioSmsHook(), store))

        def fresh_client_send(i):  # the same, with no client kept from the task before
            forget_clients()
            task_send(i)

        for warm in range(20):  # connections, caches, statements
            raw_send(warm)
            floor_send(warm)
            our_send(warm)
            task_send(warm)
            fresh_client_send(warm)
        # Interleaved in blocks of 10 messages, so that drift (the machine, the stand-in's heap, GC) hits
        # all five alike; each round sums its blocks.
        raws, floors, ours, tasks, fresh = [], [], [], [], []
        for _ in range(rounds):
            totals = [0.0, 0.0, 0.0, 0.0, 0.0]
            for _ in range(max(1, per_round // 10)):
                for k, fn in enumerate((raw_send, floor_send, our_send, task_send, fresh_client_send)):
                    totals[k] += _timed(fn, 10)
            blocks = max(1, per_round // 10)
            raws.append(totals[0] / blocks)
            floors.append(totals[1] / blocks)
            ours.append(totals[2] / blocks)
            tasks.append(totals[3] / blocks)
            fresh.append(totals[4] / blocks)
    ratios = sorted(o / r for o, r in zip(ours, raws, strict=True))
    floor_ratios = sorted(f / r for f, r in zip(floors, raws, strict=True))
    median = statistics.median
    print(f"  raw client.messages.create:        {median(raws) * 1e3:6.2f} ms/message "
          f"(median of {rounds} rounds)")
    print(f"  + the two store writes, bare SQL:  {median(floors) * 1e3:6.2f} ms/message  "
          f"floor ratio {median(floor_ratios):.2f}x")
    print(f"  SmsSender.send:                    {median(ours) * 1e3:6.2f} ms/message")
    print(
        f"  overhead ratio: {median(ratios):.2f}x (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}x); "
        f"above the floor: {(median(ours) - median(floors)) * 1e6:.0f} us/message (goal <= 1000)"
    )
    for label, times in (("a new hook and sender per message:", tasks),
                         ("  the same, a new client each time:", fresh)):
        above = sorted(t - f for t, f in zip(times, floors, strict=True))
        print(f"  {label:<34} {median(times) * 1e3:6.2f} ms/message; above the floor: "
              f"{median(above) * 1e6:.0f} us/message (rounds {above[0] * 1e6:.0f}-{above[-1] * 1e6:.0f})")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2400)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    sqlite = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    upgrade_url(sqlite)
    print("Send path overhead (SQLite store):")
    bench_overhead(sqlite, args.messages, args.rounds)
    with scratch_database() as url:
        if url:
            upgrade_url(url)
            print("Send path overhead (PostgreSQL store):")
            bench_overhead(url, args.messages, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

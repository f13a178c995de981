"""Benchmark: the "Twilio SMS" page's API calls with 100 000 stored webhook events, on SQLite and PostgreSQL.

The store is filled with 40 000 outbound messages over the last 30 days (each with its ``sent`` and final
status callback: 80 000 events) and 20 000 inbound messages (1 % of them STOP), spread over four teams and
no team. Then every call the page makes is timed through Airflow's real api-server app (this provider's
plugin mounted, ``[core] multi_team`` on, SimpleAuthManager JWTs), in this process, for an admin (every
team) and for a viewer of one team:

  summary?period=7d and 30d, messages (outbound with timelines, 50), messages (inbound, 50), opt-outs (50)

Prints median and p95 per call (goal: under 200 ms). Needs a few seconds for ``airflow db migrate`` of a
temporary metadata DB; PostgreSQL from TWILIO_SMS_BENCH_PG_URL (default the local server), skipped when
it does not answer.

    .venv/bin/python bench/ui_api.py [--repeat 30] [--events 100000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from scratch_pg import scratch_database

HOME = Path(tempfile.mkdtemp(prefix="twilio-sms-bench-ui-"))
os.environ.update({
    "AIRFLOW_HOME": str(HOME),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME / 'airflow.db'}",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__MULTI_TEAM": "True",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,alice:viewer:team_a",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(HOME / "passwords.json"),
    "AIRFLOW__API_AUTH__JWT_SECRET": "bench-jwt-secret-0123456789abcdef0123456789abcdef",
    "AIRFLOW__CORE__FERNET_KEY": "8tSk1lKfN3L7Vt7hOqkqYTGYyuvzx1sM0Y8P0b2nFhw=",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
})

ACCOUNT = "AC" + "c" * 32
TEAMS = ["team_a", "team_b", "team_c", "team_d", None]
FINAL = [("delivered", None)] * 85 + [("undelivered", 30003)] * 2 + [("undelivered", 30005)] * 2 + \
        [("undelivered", 30007)] + [("failed", 30008)] * 2 + [("failed", 21610)] * 2 + [("sent", None)] * 6
CALLS = ["summary?period=7d", "summary?period=30d",
         "messages?direction=outbound&include_history=true&limit=50",
         "messages?direction=inbound&limit=50", "opt-outs?limit=50"]


def fill(url: str, events: int, seed: int = 7) -> dict[str, int]:
    """``events`` webhook events: 2/5 outbound messages with two callbacks each, 1/5 inbound messages."""
    from sqlalchemy import insert, text

    from airflow_provider_twilio_sms.store import tables as t
    from airflow_provider_twilio_sms.store.claims import key_digest
    from airflow_provider_twilio_sms.store.engine import get_engine

    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    engine = get_engine(url)
    outbound, inbound = events * 2 // 5, events // 5
    messages, rows, counts = [], [], {"messages": 0, "events": 0, "opt_outs": 0}

    def flush(force: bool = False) -> None:
        if len(rows) >= 5000 or force:
            with engine.begin() as conn:
                if messages:
                    conn.execute(insert(t.message), messages)
                if rows:
                    conn.execute(insert(t.event), rows)
            counts["messages"] += len(messages)
            counts["events"] += len(rows)
            messages.clear()
            rows.clear()

    for i in range(1, outbound + 1):
        created = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        team = rng.choice(TEAMS)
        status, code = rng.choice(FINAL)
        sid, to = f"SM{i:032x}", f"+1415{rng.randrange(10**7):07d}"
        messages.append({
            "id": i, "scope": f"{ACCOUNT}|{team or ''}", "idempotency_key": f"bench-{i}",
            "idempotency_key_sha256": key_digest(f"bench-{i}"), "account_sid": ACCOUNT,
            "conn_id": "twilio_sms_default", "team": team, "pool": None, "to_number": to,
            "from_number": "+15005550006", "body": f"Your code is {rng.randrange(10**6):06d}",
            "body_sha256": "0" * 64, "num_media": 0, "send_state": "sent", "attempt_id": uuid.uuid4().hex,
            "lease_expires_at": created, "sid": sid, "status": status,
            "status_rank": 5 if status != "sent" else 4,
            "status_updated_at": created + timedelta(seconds=4), "num_segments": 1, "error_code": code,
            "dag_id": f"{team or 'shared'}_notify", "task_id": "send", "run_id": f"scheduled__{i}",
            "map_index": -1,
            "created_at": created, "sent_at": created, "updated_at": created + timedelta(seconds=4)})
        for step, (value, value_code) in enumerate([("sent", None), (status, code)] if status != "sent"
                                                   else [("sent", None), ("sent", None)]):
            rows.append({
                "kind": "status", "account_sid": ACCOUNT, "conn_id": "twilio_sms_default",
                "dedupe_key": f"status:{sid}:{value}:{step}", "idempotency_token": uuid.uuid4().hex,
                "message_sid": sid, "message_id": i, "status": value, "error_code": value_code,
                "from_number": "+15005550006", "to_number": to, "team": team,
                "received_at": created + timedelta(seconds=2 + 2 * step), "payload": "{}"})
        flush()
    flush(force=True)  # one executemany takes rows of one shape: the status rows go before the inbound ones
    opted: dict[str, dict] = {}
    for i in range(1, inbound + 1):
        received = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        team, sid, sender = rng.choice(TEAMS), f"SM{10**9 + i:032x}", f"+1415{rng.randrange(10**7):07d}"
        stop = rng.random() < 0.01
        rows.append({
            "kind": "inbound", "account_sid": ACCOUNT, "conn_id": "twilio_sms_default",
            "dedupe_key": f"inbound:{sid}", "message_sid": sid, "status": "received", "from_number": sender,
            "to_number": "+15005550006", "body": "STOP" if stop else "YES", "num_media": 0,
            "opt_out_type": "STOP" if stop else None, "team": team, "received_at": received, "payload": "{}"})
        if stop:
            opted[sender] = {"account_sid": ACCOUNT, "number": sender, "opted_out": True, "keyword": "STOP",
                             "message_sid": sid, "updated_at": received}
        flush()
    flush(force=True)
    with engine.begin() as conn:
        if opted:
            conn.execute(insert(t.opt_out), list(opted.values()))
    if engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk load
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    counts["opt_outs"] = len(opted)
    return counts


def token(username: str, role: str, teams: list[str] | None) -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role, teams=teams))
    return {"Authorization": f"Bearer {jwt}"}


def bench(name: str, url: str, events: int, repeat: int, client) -> None:
    from airflow import plugins_manager

    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    upgrade_url(url)
    started = time.monotonic()
    counts = fill(url, events)
    print(f"\n{name}: {counts['events']} events, {counts['messages']} outbound messages, "
          f"{counts['opt_outs']} opt-outs (filled in {time.monotonic() - started:.0f} s)")
    os.environ["AIRFLOW_CONN_TWILIO_SMS_STORE_DEFAULT"] = json.dumps(
        {"conn_type": "generic", "extra": {"sqlalchemy_url": url}})
    apps, _ = plugins_manager.get_fastapi_plugins()
    [mounted] = [a for a in apps if a["url_prefix"] == "/twilio_sms"]
    mounted["app"].state.twilio_sms.reset()
    viewers = {"admin (all teams)": token("admin", "admin", None),
               "viewer of team_a": token("alice", "viewer", ["team_a"])}
    print(f"  {'call':62} {'viewer':18} {'median':>8} {'p95':>8}")
    for call in CALLS:
        for who, headers in viewers.items():
            timings = []
            for i in range(repeat + 3):
                t0 = time.perf_counter()
                answer = client.get(f"/twilio_sms/api/{call}", headers=headers)
                elapsed = (time.perf_counter() - t0) * 1000
                if answer.status_code != 200:
                    raise SystemExit(f"{call} answered {answer.status_code}: {answer.text[:300]}")
                if i >= 3:  # the first calls open the store and fill the caches
                    timings.append(elapsed)
            timings.sort()
            p95 = timings[min(len(timings) - 1, int(round(0.95 * (len(timings) - 1))))]
            print(f"  {call:62} {who:18} {statistics.median(timings):6.1f}ms {p95:6.1f}ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per API call and viewer")
    parser.add_argument("--events", type=int, default=100_000, help="webhook events to store")
    args = parser.parse_args()
    migrate = subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
                             capture_output=True, text=True, check=False)
    if migrate.returncode != 0:
        print(migrate.stderr[-3000:])
        return 1
    logging.disable(logging.WARNING)
    from airflow.api_fastapi.app import create_app
    from airflow.models.team import Team
    from airflow.utils.session import create_session
    from fastapi.testclient import TestClient

    with create_session() as session:
        for team in TEAMS:
            if team:
                session.merge(Team(name=team))
    client = TestClient(create_app())
    print(f"{os.cpu_count()} CPUs; calls through Airflow's api-server app (plugin, JWT auth, multi-team), "
          f"{args.repeat} timed calls each")
    bench("SQLite", f"sqlite:///{HOME / 'store.db'}", args.events, args.repeat, client)
    with scratch_database() as url:
        if url:
            bench("PostgreSQL", url, args.events, args.repeat, client)
    return 0


if __name__ == "__main__":
    sys.exit(main())

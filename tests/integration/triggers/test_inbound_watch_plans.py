"""Every query an inbound-SMS asset watcher issues reads ``twilio_sms_event`` through an index, a few rows
at a time, in a store the size of a busy one (60 000 inbound messages, 20 000 status callbacks).

Watchers of each shape (a number and a keyword, a Messaging Service and a pattern, one that starts at a
``since``) open and poll while new messages arrive; every statement the store receives is recorded, then
run again under ``EXPLAIN ANALYZE`` (PostgreSQL, after ``ANALYZE``) or ``EXPLAIN QUERY PLAN`` (SQLite).
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from airflow_provider_twilio_sms.triggers.inbound_events import SmsInboundEventTrigger

from inbound_watch_testing import ACCOUNT, CONN_ID, OURS, inbound, use_twilio_connection
from query_plans import check_plans, event_table_nodes, recorded_selects, sqlite_plan
from reply_testing import add_history

SERVICE = "MG" + "1" * 32
INBOUND, STATUSES = 60_000, 20_000
# Rows of twilio_sms_event one statement may touch (index entries read, rows filtered out): a page of the
# channel, not the table.
MOST_ROWS = 2_000


@pytest.fixture
def busy_store(store_conn, monkeypatch):
    use_twilio_connection(monkeypatch)
    store = store_conn
    month_ago = datetime.now(timezone.utc) - timedelta(days=30)
    add_history(store, INBOUND, account_sid=ACCOUNT, conn_id=CONN_ID, received_from=month_ago,
                to_numbers=(OURS, "+15005550007", "+15005550008"), services=(SERVICE,))
    add_history(store, STATUSES, account_sid=ACCOUNT, conn_id=CONN_ID, received_from=month_ago,
                to_numbers=(OURS,), kind="status", tag="s")
    with store.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return store


async def _watch(store) -> None:
    since = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
    triggers = [SmsInboundEventTrigger(to_number=OURS, keyword="deploy"),
                SmsInboundEventTrigger(messaging_service_sid=SERVICE, pattern=r"deploy (\w+)"),
                SmsInboundEventTrigger(to_number=OURS, keyword="deploy", since=since)]
    opened = [await trigger._open() for trigger in triggers]
    for body in ("deploy web", "hello", "deploy db"):
        inbound(store, body)
    for trigger, (_store, criteria, start) in zip(triggers, opened, strict=True):
        cursor = start
        for _ in range(2):
            async for _event, moved in trigger._round(store, criteria, trigger.watch_key(), cursor):
                cursor = moved


def _check_postgresql(raw, statement: str, parameters) -> None:
    for node, where in event_table_nodes(raw, statement, parameters):
        assert node["Node Type"] != "Seq Scan", where
        loops = node.get("Actual Loops", 1)
        touched = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
        assert touched <= MOST_ROWS, f"{touched} rows read by {where}"


def _check_sqlite(raw, statement: str, parameters) -> None:
    for detail in sqlite_plan(raw, statement, parameters):
        assert not re.match(r"SCAN (twilio_sms_event\w*|x|m)\b", detail), f"{detail!r} in:\n{statement}"


def test_every_watcher_query_reads_the_events_through_an_index(busy_store):
    statements = [(statement, parameters) for statement, parameters
                  in recorded_selects(busy_store.engine, lambda: asyncio.run(_watch(busy_store)))
                  if "twilio_sms_event" in statement]
    every = "\n".join(statement for statement, _ in statements)
    assert "twilio_sms_event x" in every  # the channel reads
    assert "max(twilio_sms_event.id)" in every.lower()  # where a new watcher starts
    if busy_store.dialect == "postgresql":
        assert "ORDER BY twilio_sms_event.received_at DESC" in every  # the settled id, and since=
    check = _check_postgresql if busy_store.dialect == "postgresql" else _check_sqlite
    check_plans(busy_store, statements, check)

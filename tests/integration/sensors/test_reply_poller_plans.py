"""Every query a triggerer's store poller issues for reply sensors (and for a status sensor beside them)
reads ``twilio_sms_event`` through an index, in a store the size of a busy one.

Real triggers of every shape (a reply from a number to a number, from a number only, to a number only,
through a Messaging Service only, to a number or through a service; new and caught up) and a status
trigger wait together; every statement the store receives while they start and poll twice is recorded,
then run again under ``EXPLAIN ANALYZE`` (PostgreSQL, after ``ANALYZE``) or ``EXPLAIN QUERY PLAN``
(SQLite).
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from airflow_provider_twilio_sms.replies import ReplyCriteria
from airflow_provider_twilio_sms.store.claims import make_scope
from airflow_provider_twilio_sms.triggers.sms import SmsReplyTrigger, SmsStatusTrigger, StorePoller

from query_plans import check_plans, event_table_nodes, recorded_selects, sqlite_plan
from reply_testing import add_history, newest_id, one_round, stop, waiting

ACCOUNT = "AC" + "4" * 32
CONN = "twilio_sms_default"
OURS = tuple(f"+1500555000{i}" for i in range(5))
SERVICES = tuple(f"MG{i:032d}" for i in range(3))
SENDERS = tuple(f"+1555{i:07d}" for i in range(20_000))
USER = SENDERS[42]
SENT_SID = "SM" + "5" * 32
INBOUND, STATUSES = 150_000, 50_000


@pytest.fixture
def busy_store(store_conn):
    """The store with 150 000 inbound messages (20 000 senders, five numbers of ours, one in ten through
    one of three services) and 50 000 status callbacks over a month, one sent message, and fresh planner
    statistics."""
    store = store_conn
    month_ago = datetime.now(timezone.utc) - timedelta(days=30)
    add_history(store, INBOUND, account_sid=ACCOUNT, conn_id=CONN, received_from=month_ago, to_numbers=OURS,
                senders=SENDERS, services=SERVICES)
    add_history(store, STATUSES, account_sid=ACCOUNT, conn_id=CONN, received_from=month_ago, to_numbers=OURS,
                kind="status", tag="s")
    claim = store.claim(scope=make_scope(ACCOUNT), idempotency_key="k", account_sid=ACCOUNT, conn_id=CONN,
                        to_number=USER, from_number=OURS[0], body="Reply YES")
    store.record_sent(claim, {"sid": SENT_SID, "status": "queued"})
    with store.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    StorePoller._pollers.clear()
    return store


def _reply_triggers(store) -> list[SmsReplyTrigger]:
    since = datetime.now(timezone.utc) - timedelta(minutes=10)
    shapes = [{"from_number": USER, "to_number": OURS[2]}, {"from_number": USER},
              {"to_number": OURS[0]}, {"messaging_service_sid": SERVICES[1]},
              {"to_number": OURS[3], "messaging_service_sid": SERVICES[2]},
              {"from_number": USER, "to_number": OURS[1], "messaging_service_sid": SERVICES[0]}]
    triggers = []
    for after_id in (0, newest_id(store)):  # new (0: as a trigger of an earlier version), and caught up
        for shape in shapes:
            wanted = ReplyCriteria(ACCOUNT, CONN, keywords=("YES",), since=since, **shape)
            triggers.append(SmsReplyTrigger(wait_id=store.add_reply_wait(**wanted.parties()),
                                            shape=wanted.shape(), after_id=after_id, poll_interval=3600))
    return triggers


async def _two_rounds(triggers: list[SmsReplyTrigger]) -> None:
    status = SmsStatusTrigger(message_sid=SENT_SID, success_statuses=["delivered"],
                              failure_statuses=["failed"], poll_interval=3600)
    status_task = asyncio.ensure_future(status.run().__anext__())
    poller, tasks = await waiting(triggers)
    try:
        for _ in range(2):
            deadline = asyncio.get_running_loop().time() + 30
            while SENT_SID not in poller._status:  # the status trigger waits with the poller (again)
                assert asyncio.get_running_loop().time() < deadline, "the status trigger did not wait"
                await asyncio.sleep(0.01)
            await one_round(poller)
        assert poller.queries == 2 * 2  # each round: one for the status, one for every reply read
    finally:
        await stop(poller, [*tasks, status_task])


def _statements(store) -> list[tuple[str, object]]:
    """Each distinct (statement, parameters) the store received while the triggers started and polled."""
    triggers = _reply_triggers(store)
    seen = recorded_selects(store.engine, lambda: asyncio.run(_two_rounds(triggers)))
    every = "\n".join(statement for statement, _ in seen)
    assert "twilio_sms_event x" in every  # the channel reads
    assert "ORDER BY twilio_sms_event.received_at DESC" in every  # where a new wait starts reading
    assert "twilio_sms_message" in every  # the status poll
    return seen


def _check_postgresql(raw, statement: str, parameters) -> None:
    for node, where in event_table_nodes(raw, statement, parameters):
        assert node["Node Type"] != "Seq Scan", where
        assert node.get("Index Name") != "pk_twilio_sms_event", where
        removed = node.get("Rows Removed by Filter", 0) * node.get("Actual Loops", 1)
        assert removed <= 0.01 * (INBOUND + STATUSES), f"{removed} rows filtered out by {where}"


# The event table under the names the statements give it.
_EVENT = r"(twilio_sms_event\w*|x|m)"


def _check_sqlite(raw, statement: str, parameters) -> None:
    for detail in sqlite_plan(raw, statement, parameters):
        where = f"{detail!r} in:\n{statement}"
        assert not re.match(rf"SCAN {_EVENT}\b", detail), where  # a walk through the table or an index
        assert not re.match(rf"SEARCH {_EVENT} USING INTEGER PRIMARY KEY \(rowid[<>]", detail), where


def test_every_poller_query_reads_the_events_through_an_index(busy_store):
    statements = _statements(busy_store)
    check = _check_postgresql if busy_store.dialect == "postgresql" else _check_sqlite
    check_plans(busy_store, statements, check)

"""Helpers for the reply-sensor tests: a long inbound history, stored in bulk (COPY on PostgreSQL, one
executemany on SQLite) instead of through the webhook; reply triggers driven round by round."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, insert, select

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.triggers.sms import StorePoller

COLUMNS = ("kind", "account_sid", "conn_id", "dedupe_key", "message_sid", "status", "from_number",
           "to_number", "messaging_service_sid", "body", "num_media", "received_at", "payload")


def add_history(store, count: int, *, account_sid: str, conn_id: str, received_from: datetime,
                to_numbers: tuple[str, ...], senders: tuple[str, ...] = (), services: tuple[str, ...] = (),
                body: str = "hello", kind: str = "inbound", tag: str = "h") -> None:
    """Store ``count`` events of ``kind``, one a second from ``received_from`` on, cycling through
    ``to_numbers``, ``senders`` (else 10 000 numbers of their own) and ``services`` (every tenth message
    goes through one, when given). ``tag`` keeps the SIDs of two batches apart.
    """
    rows = []
    for i in range(count):
        sid = f"SM{tag}{i:0{32 - len(tag)}d}"
        rows.append({
            "kind": kind, "account_sid": account_sid, "conn_id": conn_id, "dedupe_key": f"{kind}:{sid}",
            "message_sid": sid, "status": "received" if kind == "inbound" else "delivered",
            "from_number": senders[i % len(senders)] if senders else f"+1555{i % 10_000:07d}",
            "to_number": to_numbers[i % len(to_numbers)],
            "messaging_service_sid": services[i % len(services)] if services and i % 10 == 0 else None,
            "body": body, "num_media": 0, "payload": "{}",
            "received_at": received_from + timedelta(seconds=i),
        })
    if store.dialect == "postgresql":
        _copy(store, rows)
    else:
        with store.engine.begin() as conn:
            conn.execute(insert(t.event), rows)


def newest_id(store) -> int:
    """The highest event id stored."""
    with store.engine.connect() as conn:
        return conn.execute(select(func.max(t.event.c.id))).scalar() or 0


def _copy(store, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:  # an empty field is NULL; times as the store keeps them, naive UTC
        naive = {**row, "received_at": row["received_at"].astimezone(timezone.utc).replace(tzinfo=None)}
        writer.writerow(["" if naive[name] is None else naive[name] for name in COLUMNS])
    buffer.seek(0)
    raw = store.engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(f"COPY twilio_sms_event ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
                               buffer)
        raw.commit()
    finally:
        raw.close()


async def waiting(triggers) -> tuple[StorePoller, list[asyncio.Future]]:
    """Start the reply triggers (made with a poll interval of an hour: the poller's own loop makes no
    round); once every one waits with the poller, the poller and the triggers' tasks. The test then makes
    each round with ``await poller.poll_round()``, and ends with :func:`stop`.
    """
    tasks = [asyncio.ensure_future(trigger.run().__anext__()) for trigger in triggers]

    def registered() -> int:
        return len(next(iter(StorePoller._pollers.values()))._replies) if StorePoller._pollers else 0

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while registered() < len(tasks):
        assert loop.time() < deadline, "the triggers did not start waiting within 30 s"
        await asyncio.sleep(0.01)
    poller = next(iter(StorePoller._pollers.values()))
    assert poller.rounds == 0, "give the triggers a poll interval the test never reaches"
    return poller, tasks


async def one_round(poller: StorePoller) -> None:
    """One polling round; then the triggers it answered yield their events."""
    await poller.poll_round()
    await asyncio.sleep(0)


async def stop(poller: StorePoller, tasks: list[asyncio.Future]) -> None:
    for task in [*tasks, poller._task]:
        if task is not None:
            task.cancel()
    await asyncio.gather(*tasks, *([poller._task] if poller._task else []), return_exceptions=True)

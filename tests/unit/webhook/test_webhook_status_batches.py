"""The webhook's status writer (webhook/status_batches.py) on a real store, SQLite and PostgreSQL: callbacks
that arrive together are written in one transaction, each answered only after its batch committed, a
failed batch is written again one callback at a time, and a callback keeps its own deadline while queued.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy import create_engine, func, select

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.claims import make_scope
from airflow_provider_twilio_sms.store.deadline import StoreDeadlineExceeded
from airflow_provider_twilio_sms.webhook.status_batches import StatusBatches

ACCOUNT = "AC" + "1" * 32
CONN = "twilio_sms_default"


def _callback(sid: str, status: str = "delivered", **kw) -> dict:
    return {"account_sid": ACCOUNT, "conn_id": CONN, "message_sid": sid, "status": status,
            "payload": {"MessageStatus": status}, **kw}


class Recording:
    """The real store, with every batch it was given (sizes) recorded and, while ``hold`` is clear, every
    write held at its start (``holding`` is set then)."""

    def __init__(self, store):
        self.store, self.batches = store, []
        self.hold, self.holding = threading.Event(), threading.Event()
        self.hold.set()

    def _wait(self):
        self.holding.set()
        self.hold.wait(30)

    def record_status_events(self, callbacks):
        self._wait()
        self.batches.append(len(callbacks))
        return self.store.record_status_events(callbacks)

    def record_status_event(self, **callback):
        self._wait()
        self.batches.append(1)
        return self.store.record_status_event(**callback)


def _stored_sids(store) -> set[str]:
    """What another session of the database sees committed."""
    engine = create_engine(store.engine.url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(t.event.c.message_sid)).scalars())
    finally:
        engine.dispose()


def test_concurrent_callbacks_share_transactions_and_each_is_answered_after_its_commit(store):
    recording = Recording(store)
    batches = StatusBatches(lambda: recording)
    sids = [f"SM{i:032x}" for i in range(60)]
    seen_committed: list[bool] = []

    async def one(sid: str) -> bool:
        stored = await batches.record(_callback(sid), 10)
        seen_committed.append(sid in await asyncio.to_thread(_stored_sids, store))
        return stored

    async def main():
        first = asyncio.ensure_future(one(sids[0]))
        # the writer is busy with the first: the rest queue up
        await asyncio.to_thread(recording.holding.wait, 10)
        # the same callback twice among the others: one of the copies is a duplicate
        rest = asyncio.gather(*(one(sid) for sid in [*sids[1:], sids[5]]))
        await asyncio.sleep(0.05)
        recording.hold.set()
        return [await first, *await rest]

    recording.hold.clear()
    results = asyncio.run(main())
    assert results.count(True) == 60
    assert results.count(False) == 1
    assert all(seen_committed)  # never answered before its transaction committed
    assert sum(recording.batches) == 61
    assert recording.batches[0] == 1
    assert max(recording.batches) > 1  # the ones queued meanwhile were written together
    assert _stored_sids(store) == set(sids)


def test_a_callback_that_fails_in_a_batch_fails_alone(store):
    recording = Recording(store)
    batches = StatusBatches(lambda: recording)

    async def main():
        recording.hold.clear()
        first = asyncio.ensure_future(batches.record(_callback("SM" + "0" * 32), 10))
        await asyncio.to_thread(recording.holding.wait, 10)
        queued = [asyncio.ensure_future(batches.record(_callback(sid), 10))
                  for sid in ("SM" + "1" * 32, None, "SM" + "2" * 32)]  # no MessageSid: NOT NULL fails
        await asyncio.sleep(0.05)
        recording.hold.set()
        return [await first, *await asyncio.gather(*queued, return_exceptions=True)]

    first, good, bad, other = asyncio.run(main())
    assert (first, good, other) == (True, True, True)
    assert isinstance(bad, Exception)
    assert recording.batches == [1, 3, 1, 1, 1]  # the batch of three failed, then one at a time
    assert _stored_sids(store) == {"SM" + "0" * 32, "SM" + "1" * 32, "SM" + "2" * 32}


def test_a_callback_whose_deadline_passes_while_queued_is_never_written(store):
    recording = Recording(store)
    batches = StatusBatches(lambda: recording)
    late = "SM" + "9" * 32

    async def main():
        recording.hold.clear()
        first = asyncio.ensure_future(batches.record(_callback("SM" + "0" * 32), 10))
        await asyncio.to_thread(recording.holding.wait, 10)
        queued = asyncio.ensure_future(batches.record(_callback(late), 0.2))
        await asyncio.sleep(0.5)  # its deadline passes while the writer is busy
        recording.hold.set()
        await first
        with pytest.raises(StoreDeadlineExceeded, match="waited for the status writer"):
            await queued
        return await batches.record(_callback(late), 10)  # Twilio's retry

    assert asyncio.run(main()) is True
    assert recording.batches == [1, 1]
    assert late in _stored_sids(store)


def test_a_withdrawn_callback_is_never_written_and_a_started_batch_is_waited_for(store):
    recording = Recording(store)
    batches = StatusBatches(lambda: recording)
    started, withdrawn = "SM" + "0" * 32, "SM" + "9" * 32

    async def main():
        recording.hold.clear()
        first = asyncio.ensure_future(batches.record(_callback(started), 10))
        await asyncio.to_thread(recording.holding.wait, 10)
        queued = asyncio.ensure_future(batches.record(_callback(withdrawn), 10))
        await asyncio.sleep(0.05)
        queued.cancel()  # still queued: withdrawn
        first.cancel()  # its write started: waited for
        threading.Timer(0.3, recording.hold.set).start()
        began = time.monotonic()
        for task in (queued, first):
            with pytest.raises(asyncio.CancelledError):
                await task
        waited = time.monotonic() - began
        await batches.record(_callback("SM" + "1" * 32), 10)  # the writer goes on
        return waited

    assert asyncio.run(main()) >= 0.25
    assert _stored_sids(store) == {started, "SM" + "1" * 32}


def test_a_batch_links_and_advances_sent_messages(store):
    sid = "SM" + "c" * 32
    claim = store.claim(scope=make_scope(ACCOUNT), idempotency_key="key-1", account_sid=ACCOUNT, conn_id=CONN,
                        to_number="+15551230001", from_number="+15005550006", body="hi", attempt_id="a1")
    store.record_sent(claim, {"sid": sid, "status": "queued"})
    batches = StatusBatches(lambda: store)

    async def main():
        return await asyncio.gather(*(batches.record(_callback(sid, status), 10)
                                      for status in ("sent", "delivered", "sent", "undelivered")))

    assert asyncio.run(main()) == [True, True, False, True]
    assert store.get_message(sid=sid)["status"] == "delivered"  # terminal: undelivered did not replace it
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.event)).scalar() == 3


def test_at_least_one_callback_per_batch():
    with pytest.raises(ValueError, match="at least one callback"):
        StatusBatches(lambda: None, max_batch=0)


def test_a_forked_child_gets_a_writer_of_its_own(sqlite_url):
    """The parent's writer thread is not in a forked child (an api-server worker forked after the first
    callback): the child's callbacks are written by a writer of its own, not queued for a thread that is
    not there."""
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    from conftest import in_forked_child

    upgrade_url(sqlite_url)
    batches = StatusBatches(lambda: SmsStore(sqlite_url))
    assert asyncio.run(batches.record(_callback("SM" + "0" * 32), 10)) is True  # the parent's writer runs
    in_child = _callback("SM" + "1" * 32)
    stored_in_child = in_forked_child(lambda: asyncio.run(asyncio.wait_for(batches.record(in_child, 10), 20)))
    assert stored_in_child == (b"1", 0)
    assert asyncio.run(batches.record(_callback("SM" + "2" * 32), 10)) is True  # the parent's still runs
    assert _stored_sids(SmsStore(sqlite_url)) == {"SM" + "0" * 32, "SM" + "1" * 32, "SM" + "2" * 32}

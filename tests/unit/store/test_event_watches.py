"""The asset watchers' cursors (``twilio_sms_event_watch``) on SQLite and PostgreSQL: made once, moved only
by compare-and-set, even by many threads at once; and when an event id is settled."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.watches import SETTLE_AFTER

KEY = hashlib.sha256(b"watch").hexdigest()
ACCOUNT = "AC" + "2" * 32


def _inbound(store, n: int, received_at: datetime | None = None) -> int:
    store.record_inbound(account_sid=ACCOUNT, conn_id="c", message_sid=f"SM{n:032d}", body="hi", payload={},
                         from_number="+14155550123", to_number="+15005550006", now=received_at)
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT max(id) FROM twilio_sms_event").scalar()


def test_a_new_watch_starts_after_the_newest_event_and_keeps_its_cursor(store):
    newest = _inbound(store, 1)
    assert store.event_watch_cursor(KEY) is None
    assert store.open_event_watch(KEY) == newest
    _inbound(store, 2)
    assert store.open_event_watch(KEY) == newest  # opened again (a restart): where it was
    assert store.open_event_watch(hashlib.sha256(b"other").hexdigest(), start_after_id=0) == 0
    with pytest.raises(ValueError, match="SHA-256"):
        store.open_event_watch("short")


def test_many_triggerers_opening_one_new_watch_get_one_cursor(store):
    _inbound(store, 1)
    with ThreadPoolExecutor(8) as pool:
        cursors = set(pool.map(lambda n: store.open_event_watch(KEY, start_after_id=n), range(8)))
    assert len(cursors) == 1
    assert store.event_watch_cursor(KEY)[0] in cursors


def test_the_cursor_moves_only_from_where_it_is_and_only_forward(store):
    store.open_event_watch(KEY, start_after_id=10)
    assert store.advance_event_watch(KEY, 10, 12, mover="a", emitted=True)
    assert not store.advance_event_watch(KEY, 10, 13, mover="b", emitted=True)  # it moved meanwhile
    assert store.event_watch_cursor(KEY) == (12, "a")
    with pytest.raises(ValueError, match="only moves forward"):
        store.advance_event_watch(KEY, 12, 12, mover="a", emitted=False)
    assert not store.rewind_event_watch(KEY, 12, 10, mover="b")  # only who moved it may move it back
    assert store.rewind_event_watch(KEY, 12, 10, mover="a")
    assert store.event_watch_cursor(KEY)[0] == 10
    assert store.advance_event_watch(KEY, 10, 11, mover="b", emitted=True)
    assert not store.rewind_event_watch(KEY, 12, 10, mover="a")  # moved since: stays


def test_of_threads_racing_to_move_the_cursor_past_each_event_exactly_one_wins_each(store):
    """Eight movers (threads, each with its own connection) try to move the cursor past each of 40 events,
    reading where it is before each try as a triggerer does: every step is won once, and the count of
    emitted events is the number of steps."""
    store.open_event_watch(KEY, start_after_id=0)
    wins: list[tuple[int, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def mover(name: str) -> None:
        start.wait()
        while True:
            cursor, _ = store.event_watch_cursor(KEY)
            if cursor >= 40:
                return
            if store.advance_event_watch(KEY, cursor, cursor + 1, mover=name, emitted=True):
                with lock:
                    wins.append((cursor + 1, name))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(mover, [f"m{i}" for i in range(8)]))
    assert sorted(step for step, _ in wins) == list(range(1, 41))
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT events FROM twilio_sms_event_watch").scalar() == 40


def _read(store, after_id: int):
    from airflow_provider_twilio_sms.store.inbound import InboundChannel

    return store.read_watch([(InboundChannel(ACCOUNT, "to_number", "+15005550006"), after_id)], page=10,
                            after_id=after_id)


def test_a_visible_event_with_every_id_below_it_visible_is_passable(store):
    first = _inbound(store, 1)
    second = _inbound(store, 2)
    seen = _read(store, 0)
    assert [row["id"] for row in seen.pages[0]] == [first, second]
    assert seen.passable(second, datetime.now(timezone.utc))
    assert _read(store, first).passable(second, datetime.now(timezone.utc))


# PostgreSQL only: SQLite writers take turns, so rows become visible in id order there.
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_below_a_hole_an_event_waits_until_it_is_old_enough(store):
    """On PostgreSQL an id below a visible event may belong to an insert still in flight: the event is
    passable once the hole is filled, or once it was received SETTLE_AFTER before the read."""
    base = _inbound(store, 1)
    conn = store.engine.connect()
    held = conn.begin()
    conn.execute(insert(t.event).values(
        kind="inbound", account_sid=ACCOUNT, conn_id="c", dedupe_key="inbound:held", to_number="+15005550006",
        message_sid="SM" + "h" * 32, received_at=datetime.now(timezone.utc), payload="{}"))
    now = datetime.now(timezone.utc)
    later = _inbound(store, 3)
    seen = _read(store, base)
    assert [row["id"] for row in seen.pages[0]] == [later]  # the one in flight is not in the read
    assert not seen.passable(later, now)
    assert seen.settled_id < later
    assert seen.passable(later, now - SETTLE_AFTER - timedelta(seconds=5))
    held.commit()
    conn.close()
    seen = _read(store, base)
    assert len(seen.pages[0]) == 2
    assert seen.passable(later, now)

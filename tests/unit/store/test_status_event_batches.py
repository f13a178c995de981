"""SmsStore.record_status_events: several status callbacks in one transaction, each stored, deduplicated and
applied exactly as record_status_event stores it alone; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.claims import make_scope

ACCOUNT = "AC" + "1" * 32
CONN = "twilio_sms_default"
SID = "SM" + "c" * 32
OTHER = "SM" + "d" * 32


def _sent(store, key: str, sid: str | None) -> int:
    claim = store.claim(scope=make_scope(ACCOUNT), idempotency_key=key, account_sid=ACCOUNT, conn_id=CONN,
                        to_number="+15551230001", from_number="+15005550006", body="hi", attempt_id="a1")
    if sid is None:
        store.mark_attempt(claim)  # the request left; its response (and the SID) was lost
    else:
        store.record_sent(claim, {"sid": sid, "status": "queued"})
    return claim.message_id


def _callback(status: str, sid: str | None = SID, **kw) -> dict:
    return {"account_sid": ACCOUNT, "conn_id": CONN, "message_sid": sid, "status": status,
            "payload": {"MessageStatus": status}, **kw}


def _events(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.event)).scalar()


def test_a_batch_stores_each_callback_as_one_at_a_time_would_duplicates_included(store):
    _sent(store, "key-1", SID)
    stored = store.record_status_events([
        _callback("sent", idempotency_token="attempt-1"),
        _callback("sent", idempotency_token="attempt-2"),  # the same SID and status: a duplicate
        _callback("delivered"),
        _callback("delivered", idempotency_token="attempt-1"),  # a copy of the one before, in the same batch
        _callback("delivered", sid=OTHER),  # a message we never sent: kept, linked to nothing
    ])
    assert stored == [True, False, True, False, True]
    assert [h["status"] for h in store.status_history(SID)] == ["sent", "delivered"]
    assert store.get_message(sid=SID)["status"] == "delivered"
    assert store.get_message(sid=OTHER) is None
    assert len(store.status_history(OTHER)) == 1
    # and a later batch (or single write) sees what the batch stored
    assert store.record_status_events([_callback("sent")]) == [False]
    assert not store.record_status_event(**_callback("delivered"))


@pytest.mark.parametrize("order", [("sent", "delivered"), ("delivered", "sent")])
def test_the_status_moves_forward_whatever_the_order_within_a_batch(store, order):
    _sent(store, "key-1", SID)
    assert store.record_status_events([_callback(s) for s in order]) == [True, True]
    assert store.get_message(sid=SID)["status"] == "delivered"
    assert [h["status"] for h in store.status_history(SID)] == list(order)  # history in arrival order


def test_terminal_statuses_never_move_back_within_a_batch(store):
    _sent(store, "key-1", SID)
    assert store.record_status_events([
        _callback("undelivered", error_code=30003),
        _callback("delivered"),
        _callback("sent", error_code=30005),
        _callback("queued"),
    ]) == [True] * 4
    row = store.get_message(sid=SID)
    assert (row["status"], row["error_code"]) == ("undelivered", 30003)


def test_a_send_whose_response_was_lost_is_linked_by_key_and_then_found_by_sid_in_one_batch(store):
    message_id = _sent(store, "key-1", None)
    assert store.record_status_events([
        _callback("sent", idempotency_key="key-1"),  # links the message and gives it its SID
        _callback("delivered"),  # no key: found by the SID the callback before recorded
    ]) == [True, True]
    row = store.get_message(message_id=message_id)
    assert (row["sid"], row["status"]) == (SID, "delivered")
    with store.engine.connect() as conn:
        linked = conn.execute(select(t.event.c.message_id).where(t.event.c.message_sid == SID)).all()
    assert linked == [(message_id,), (message_id,)]


def test_a_batch_with_a_failing_callback_writes_nothing_and_raises(store):
    _sent(store, "key-1", SID)
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the database's own error, whichever it is
        store.record_status_events([_callback("sent"), _callback("delivered", sid=None), _callback("read")])
    assert "NOT NULL" in str(raised.value) or "not-null" in str(raised.value)
    assert _events(store) == 0
    assert store.get_message(sid=SID)["status"] == "queued"
    # one at a time, the good ones are stored (what the webhook's writer does after a failed batch)
    assert store.record_status_event(**_callback("sent"))
    assert store.record_status_event(**_callback("read"))
    assert store.get_message(sid=SID)["status"] == "read"


def test_an_empty_batch_writes_nothing(store):
    assert store.record_status_events([]) == []
    assert _events(store) == 0

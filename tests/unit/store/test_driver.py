"""The send path's writes on the DB-API connection (store/driver.py), on SQLite and PostgreSQL.

That they write exactly what SQLAlchemy would is asserted in test_store.py (a claim's and a recorded
send's rows equal the rows read back through SQLAlchemy); here: conversions, failures, threads, forks.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from airflow_provider_twilio_sms.store.api import SmsStore, make_scope
from airflow_provider_twilio_sms.store.driver import DriverWriter

ACCOUNT = "AC" + "2" * 32
TO = "+15551230002"


def _claim(store, key, **kw):
    args = dict(scope=make_scope(ACCOUNT), idempotency_key=key, account_sid=ACCOUNT, conn_id="c",
                to_number=TO, from_number="+15005550006", body="Your code is 424242", attempting=True,
                refuse_opted_out=True)
    args.update(kw)
    return store.claim(**args)


def test_the_send_path_runs_on_the_driver_for_sqlite_and_psycopg2(store):
    assert store._driver is DriverWriter.for_engine(store.engine, store._writer_lock)
    assert SmsStore(store.engine)._driver is store._driver  # one per engine, its compiled statements shared


def test_a_naive_timestamp_is_refused_before_anything_is_written(store):
    with pytest.raises(ValueError, match="naive datetime"):
        _claim(store, "naive", now=datetime(2026, 1, 1))
    assert store.get_message(scope=make_scope(ACCOUNT), idempotency_key="naive") is None


def test_a_failed_write_is_sqlalchemys_error_without_values_and_the_next_write_works(store):
    claim = _claim(store, "k1")
    with store.engine.begin() as conn:  # the column the recorded SID goes into refuses it for a moment
        conn.execute(text("CREATE TABLE twilio_sms_guard (x INTEGER)"))
        conn.execute(text("ALTER TABLE twilio_sms_message RENAME TO twilio_sms_message_away"))
    with pytest.raises(DBAPIError) as caught:
        store.record_sent(claim, {"sid": "SM" + "3" * 32, "status": "queued"})
    assert "twilio_sms_message" in str(caught.value)
    assert TO not in str(caught.value)
    assert "3" * 32 not in str(caught.value)
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE twilio_sms_message_away RENAME TO twilio_sms_message"))
    row = store.record_sent(claim, {"sid": "SM" + "3" * 32, "status": "queued"})
    assert row["send_state"] == "sent"
    assert store.get_message(sid="SM" + "3" * 32)["id"] == claim.message_id


def test_threads_write_at_once_each_on_its_own_connection(store):
    barrier = threading.Barrier(8)
    claims, errors = [], []

    def send(i):
        try:
            barrier.wait(10)
            for j in range(10):
                claim = _claim(store, f"t{i}-{j}")
                store.record_sent(claim, {"sid": f"SM{i:02d}{j:02d}" + "0" * 28, "status": "queued"})
                claims.append(claim)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len({c.message_id for c in claims}) == 80
    assert all(store.get_message(message_id=c.message_id)["send_state"] == "sent" for c in claims)


def _child_claims(store, key, out):
    try:
        claim = _claim(store, key)
        store.record_sent(claim, {"sid": "SM" + "5" * 32, "status": "queued"})
        out.put(claim.outcome)
    except Exception as err:  # noqa: BLE001 - sent to the parent
        out.put(repr(err))


def test_a_forked_child_opens_its_own_connection_and_the_parent_keeps_its_own(store):
    _claim(store, "parent-1")  # the parent's thread now holds a connection
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_claims, args=(store, "child-1", out))
    child.start()
    child.join(60)
    assert out.get(timeout=5) == "new"
    assert _claim(store, "parent-2").outcome == "new"
    assert store.get_message(sid="SM" + "5" * 32)["idempotency_key"] == "child-1"

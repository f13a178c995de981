"""Every store call has a deadline enforced in the database, on the socket and in the caller.

PostgreSQL through a proxy that stops forwarding (a hung server: TCP still acknowledges, nothing answers),
and SQLite with its write lock held by another connection: a call with a deadline returns at the deadline
with StoreDeadlineExceeded instead of waiting for the database, and the store works again as soon as the
database does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from airflow_provider_twilio_sms.store.api import SmsStore
from airflow_provider_twilio_sms.store.deadline import StoreDeadlineExceeded, deadline
from airflow_provider_twilio_sms.store.engine import StoreTimeouts, create_store_engine
from airflow_provider_twilio_sms.store.migrate import upgrade_url

from conftest import StallingProxy

ACCOUNT = "AC" + "4" * 32


def _status(store: SmsStore, n: int) -> bool:
    sid = f"SM{n:032d}"
    return store.record_status_event(account_sid=ACCOUNT, conn_id="tw", message_sid=sid, status="delivered",
                                     payload={"MessageSid": sid, "MessageStatus": "delivered"})


def _claim(store: SmsStore, key: str):
    return store.claim(scope=f"{ACCOUNT}|", idempotency_key=key, account_sid=ACCOUNT, conn_id="tw",
                       to_number="+14155550123", body="hi")


def _returns_within(call, seconds: float) -> tuple[BaseException | None, float]:
    """Run ``call`` in a thread; fail the test if it is still running after ``seconds`` (the old code
    blocked there for as long as the TCP connection lived)."""
    outcome: list = []

    def run():
        started = time.monotonic()
        try:
            call()
            outcome.append((None, time.monotonic() - started))
        except BaseException as err:  # noqa: BLE001 - reported to the test
            outcome.append((err, time.monotonic() - started))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the store call was still running after {seconds} s"
    return outcome[0]


@pytest.fixture
def proxied(pg_url):
    """A migrated PostgreSQL store reached through a StallingProxy, with short limits."""
    upgrade_url(pg_url)
    url = make_url(pg_url)
    proxy = StallingProxy(url.port or 5432)
    timeouts = replace(StoreTimeouts.from_config(), connect_seconds=2, statement_seconds=1)
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    engine = create_store_engine(through, timeouts)
    yield proxy, SmsStore(engine)
    proxy.close()
    engine.dispose()


def test_postgres_sessions_carry_the_statement_timeout_and_keepalives(pg_url, monkeypatch):
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__STORE_STATEMENT_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__STORE_KEEPALIVES_IDLE_SECONDS", "7")
    engine = create_store_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "500ms"
            dsn = conn.connection.dbapi_connection.get_dsn_parameters()
            assert (dsn["keepalives"], dsn["keepalives_idle"], dsn["connect_timeout"]) == ("1", "7", "3")
            assert dsn["tcp_user_timeout"] == str((7 + 3 * 3) * 1000)
            started = time.monotonic()
            with pytest.raises(Exception, match="statement timeout"):
                conn.execute(text("SELECT pg_sleep(5)"))
            assert time.monotonic() - started < 3  # the server cancelled it
    finally:
        engine.dispose()


@pytest.mark.parametrize("write", [_status, lambda store, n: _claim(store, f"key-{n}")],
                         ids=["status-event", "claim"])
def test_a_call_to_a_hung_postgres_returns_at_its_deadline_and_the_store_recovers(proxied, write):
    proxy, store = proxied
    assert write(store, 1)  # the pool holds a live connection now
    proxy.stall()
    try:
        def late():
            with deadline(1.0):
                write(store, 2)

        err, took = _returns_within(late, 8)
        assert isinstance(err, StoreDeadlineExceeded)
        assert 0.9 <= took < 3
        # A connection the pool opens while the server hangs gives up at connect_timeout (2 s here).
        err, took = _returns_within(lambda: write(store, 3), 8)
        assert err is not None
        assert took < 5
    finally:
        proxy.resume()
    # The interrupted connection never went back to the pool: the next call works at once.
    err, took = _returns_within(lambda: write(store, 4), 8)
    assert err is None
    assert took < 2


def test_a_deadline_passing_while_waiting_for_a_sqlite_write_lock_ends_the_wait(sqlite_url):
    """SQLite's busy wait cannot be interrupted: a call's busy timeout is cut to its deadline (30 s here),
    and put back for the connection's next user."""
    upgrade_url(sqlite_url)
    timeouts = replace(StoreTimeouts.from_config(), sqlite_busy_seconds=30)
    store = SmsStore(create_store_engine(sqlite_url, timeouts))
    _status(store, 1)
    _claim(store, "warm")
    import sqlite3

    holder = sqlite3.connect(make_url(sqlite_url).database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for write in (lambda: _status(store, 2), lambda: _claim(store, "locked")):
            def late(write=write):
                with deadline(0.5):
                    write()

            err, took = _returns_within(late, 10)
            assert isinstance(err, StoreDeadlineExceeded)
            assert took < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _status(store, 3)
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    store.engine.dispose()


def test_what_the_store_url_sets_itself_wins_and_its_options_keep_theirs(pg_url):
    url = make_url(pg_url).update_query_dict({"connect_timeout": "9", "options": "-c application_name=mine"})
    engine = create_store_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.get_dsn_parameters()["connect_timeout"] == "9"
            assert conn.execute(text("SHOW application_name")).scalar() == "mine"
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "5s"
    finally:
        engine.dispose()


def test_store_calls_with_deadlines_cost_the_watchdog_no_wake_up_and_leave_nothing_behind(
        db_url, monkeypatch):
    """Each call with a deadline is watched; the watchdog thread sleeps until the earliest deadline and is
    woken only by a call whose deadline comes sooner (before: once per call, a thread hop on every webhook
    write), and finished watches leave its heap at once (before: they stayed until their deadline)."""
    from airflow_provider_twilio_sms.store import deadline as module

    upgrade_url(db_url)
    store = SmsStore(db_url)
    watchdog = module._Watchdog()
    monkeypatch.setattr(module, "_watchdog", watchdog)
    with deadline(10):
        assert _status(store, 0)  # the watchdog's thread starts, and sleeps until this deadline
    waited = time.monotonic()
    while watchdog._wakes_at == float("inf") and time.monotonic() - waited < 5:
        time.sleep(0.01)
    wake_ups = []
    notify = watchdog._lock.notify
    monkeypatch.setattr(watchdog._lock, "notify", lambda *args: (wake_ups.append(1), notify(*args)))
    for n in range(1, 201):
        with deadline(10):
            assert _status(store, n)
    assert wake_ups == []
    with deadline(0.5):  # sooner than the deadline it sleeps until: it is woken for this one
        assert _status(store, 201)
    assert len(wake_ups) == 1
    assert watchdog._heap == []

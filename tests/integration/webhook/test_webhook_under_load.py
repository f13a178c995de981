"""Real concurrency and a real outage: uvicorn on loopback, 50 threads posting one callback at once, and a
store that stops answering (PostgreSQL refusing connections, a SQLite volume gone) then comes back."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlencode

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import free_port
from webhook_testing import (
    FORM,
    SID,
    STATUS,
    ServedApp,
    event_count,
    make_client,
    post_signed,
    send_row,
    sign,
    status_params,
    twilio_connection,
    use_store,
)


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection())


@pytest.fixture
def db(store, monkeypatch):
    return use_store(monkeypatch, store)


@pytest.mark.parametrize("same_token", [True, False], ids=["same-idempotency-token", "no-token"])
def test_fifty_concurrent_copies_of_one_callback_make_one_event(db, same_token):
    from airflow_provider_twilio_sms.webhook.app import create_app

    send_row(db, "order-1")
    params = status_params("delivered")
    headers = {**FORM, **sign(STATUS, params)}
    if same_token:
        headers["I-Twilio-Idempotency-Token"] = "delivery-attempt-1"
    answers: list[tuple[int, int | None]] = []
    lock, start = threading.Lock(), threading.Barrier(50)

    with ServedApp(create_app("standalone"), free_port()) as served:
        # Warm the connection and store caches so the 50 copies race on the write itself.
        requests.get(served.url("/twilio_sms/api/health"), timeout=10)

        def hit():
            with requests.Session() as session:
                start.wait()
                r = session.post(served.url(STATUS), data=urlencode(params), headers=headers, timeout=60)
                with lock:
                    answers.append((r.status_code, r.json()["processed"] if r.status_code == 200 else None))

        threads = [threading.Thread(target=hit) for _ in range(50)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    assert sorted(answers) == [(200, 0)] * 49 + [(200, 1)]
    assert event_count(db) == 1
    assert db.get_message(sid=SID)["status"] == "delivered"


def test_steady_callbacks_from_more_clients_than_connections_open_no_new_database_sessions(db):
    """More clients at once than the pool has connections (its overflow included), a steady stream of
    callbacks: every store call runs on a connection the pool keeps, so no database session is opened
    beyond the pool's (before: store calls on 15 threads over a pool keeping 5, so an overflow connection
    was opened and closed call after call, hundreds of new PostgreSQL sessions a minute).
    """
    from sqlalchemy import event

    from airflow_provider_twilio_sms.store.engine import MAX_OVERFLOW, POOL_SIZE
    from airflow_provider_twilio_sms.webhook.app import create_app

    opened: list[int] = []
    event.listen(db.engine, "connect", lambda *_: opened.append(1))
    clients, per_client = POOL_SIZE + MAX_OVERFLOW + 5, 20
    answers: list[int] = []
    lock = threading.Lock()

    def post_all(first: int) -> None:
        def client(n: int) -> None:
            with requests.Session() as session:
                for i in range(per_client):
                    params = status_params("delivered", sid=f"SM{first + n * per_client + i:032x}")
                    r = session.post(served.url(STATUS), data=urlencode(params),
                                     headers={**FORM, **sign(STATUS, params)}, timeout=60)
                    with lock:
                        answers.append(r.status_code)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    with ServedApp(create_app("standalone"), free_port()) as served:
        post_all(0)  # warm-up: the pool opens the connections it keeps
        warm = len(opened)
        post_all(1_000_000)  # steady state

    assert answers == [200] * (2 * clients * per_client)
    assert event_count(db) == 2 * clients * per_client
    assert 1 <= warm <= POOL_SIZE, warm
    assert len(opened) <= POOL_SIZE, (warm, len(opened))  # at most the connections the pool keeps, ever


@pytest.fixture
def outage(db, monkeypatch, tmp_path):
    """Start and end a store outage: PostgreSQL stops accepting connections (and drops the open ones);
    SQLite's database is swapped for one on a volume that is gone."""
    url = make_url(db.engine.url.render_as_string(hide_password=False))
    if db.dialect == "postgresql":
        admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")

        def set_down(down: bool) -> None:
            with admin.connect() as c:
                allow = "false" if down else "true"
                c.execute(text(f'ALTER DATABASE "{url.database}" WITH ALLOW_CONNECTIONS {allow}'))
                if down:
                    c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": url.database})
        yield set_down
        set_down(False)
        admin.dispose()
        return

    from airflow_provider_twilio_sms.store.api import SmsStore

    gone = SmsStore(f"sqlite:///{tmp_path / 'unmounted-volume' / 'store.db'}")

    def swap(down: bool) -> None:
        use_store(monkeypatch, gone if down else db)

    yield swap


@pytest.mark.parametrize("mode", ["api-server", "standalone"])
def test_store_outage_answers_503_and_the_retry_is_stored(request, db, outage, mode):
    client = make_client(mode, request)
    from webhook_testing import app_state

    state = app_state(client)
    send_row(db, "order-9")
    assert post_signed(client, STATUS, status_params("sent")).status_code == 200  # store open and warm

    outage(True)
    state.reset()  # (SQLite: the app finds the store again, now the unreachable one)
    params = status_params("delivered")
    down = post_signed(client, STATUS, params, headers={"I-Twilio-Idempotency-Token": "attempt-1"})
    assert down.status_code == 503  # never 200 (lost) and never 429
    assert client.get("/twilio_sms/api/health").status_code == 503

    outage(False)
    state.reset()
    retry = post_signed(client, STATUS, params, headers={"I-Twilio-Idempotency-Token": "attempt-1"})
    assert retry.status_code == 200
    assert retry.json()["processed"] == 1
    assert [h["status"] for h in db.status_history(SID)] == ["sent", "delivered"]
    assert db.get_message(sid=SID)["status"] == "delivered"


def test_a_store_too_slow_for_twilio_gets_503_and_the_late_write_is_cancelled_not_left_running(
        request, monkeypatch, tmp_path):
    """Twilio waits 15 s at most: past the store deadline the answer is 503, and the write that had not
    started by then never runs (nothing keeps running after its caller gave up): Twilio's retry is stored."""
    from webhook_testing import migrated_sqlite_store

    db = use_store(monkeypatch, migrated_sqlite_store(f"sqlite:///{tmp_path / 'store.db'}"))
    client = make_client("standalone", request)
    finished: list[BaseException | None] = []

    class SlowStore:
        def record_status_event(self, **kwargs):
            time.sleep(0.5)  # e.g. the GIL or the CPU taken by something else: the deadline passes meanwhile
            try:
                db.record_status_event(**kwargs)
                finished.append(None)
            except BaseException as err:
                finished.append(err)
                raise

    state = client.app.state.twilio_sms
    state.store_deadline_seconds = 0.1
    state.use_store(SlowStore())
    params = status_params("delivered")
    assert post_signed(client, STATUS, params).status_code == 503
    [err] = finished  # the request was answered once the call had returned, not before
    from airflow_provider_twilio_sms.store.deadline import StoreDeadlineExceeded

    assert isinstance(err, StoreDeadlineExceeded)
    assert event_count(db) == 0
    state.use_store(db)
    state.store_deadline_seconds = 10
    assert post_signed(client, STATUS, params).json() == {"success": True, "processed": 1}
    assert event_count(db) == 1


def test_secrets_backend_failure_gets_503_not_404(request, monkeypatch, tmp_path):
    """A connection that cannot be read right now is not an unknown one: Twilio must retry."""
    from airflow.models.connection import Connection

    from webhook_testing import migrated_sqlite_store

    db = use_store(monkeypatch, migrated_sqlite_store(f"sqlite:///{tmp_path / 'store.db'}"))
    client = make_client("standalone", request)

    def backend_down(*args, **kwargs):
        raise ConnectionError("vault unreachable")

    monkeypatch.setattr(Connection, "get_connection_from_secrets", backend_down)
    assert post_signed(client, STATUS, status_params("delivered")).status_code == 503
    monkeypatch.undo()
    use_store(monkeypatch, db)
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection())
    assert post_signed(client, STATUS, status_params("delivered")).json()["processed"] == 1


@pytest.mark.parametrize("mode", ["api-server", "standalone"])
def test_a_secret_that_does_not_decrypt_gets_503_until_its_key_is_back_and_an_unknown_id_404(
        request, airflow_home, monkeypatch, tmp_path, mode):
    """The key removed from [twilio_sms] encryption_keys too early in a rotation: Twilio retries (503)
    instead of dropping callbacks (404); they are stored once the key is back. 404 stays for an id that
    no secrets backend knows."""
    import json

    from airflow_provider_twilio_sms.crypto import Keyring, clear_keyring_cache, encrypt_extra, new_key

    from webhook_testing import app_state, migrated_sqlite_store

    use_store(monkeypatch, migrated_sqlite_store(f"sqlite:///{tmp_path / 'store.db'}"))
    old_key = new_key()
    token = encrypt_extra("primary-auth-token", "twilio_sms_default", "password",
                          Keyring.from_json(json.dumps({"k1": old_key})))
    spec = json.loads(twilio_connection())
    spec["password"] = token
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", json.dumps(spec))
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS", json.dumps({"k2": new_key()}))
    clear_keyring_cache()
    request.addfinalizer(clear_keyring_cache)
    client = make_client(mode, request)
    params = status_params("delivered")
    assert post_signed(client, STATUS, params).status_code == 503
    assert post_signed(client, STATUS, params).status_code == 503  # not remembered as unknown either

    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS", json.dumps({"k2": new_key(), "k1": old_key}))
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ACTIVE_KEY_ID", "k2")
    clear_keyring_cache()
    app_state(client).connections.clear()
    assert post_signed(client, STATUS, params).json() == {"success": True, "processed": 1}
    unknown = "/twilio_sms/webhooks/no_such_connection/status"
    assert post_signed(client, unknown, params).status_code == 404


def test_a_connection_kept_in_an_unreachable_metadata_database_gets_503_not_404(
        request, airflow_home, monkeypatch, tmp_path):
    """Airflow skips a secrets backend that fails and answers "not found": the webhook asks again and
    answers 503 when a backend (here the metadata database) cannot be reached."""
    from airflow import settings
    from sqlalchemy.orm import scoped_session, sessionmaker

    from webhook_testing import metadata_db_connection, migrated_sqlite_store

    use_store(monkeypatch, migrated_sqlite_store(f"sqlite:///{tmp_path / 'store.db'}"))
    monkeypatch.delenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT")
    remove = metadata_db_connection("twilio_sms_default")
    request.addfinalizer(remove)
    client = make_client("standalone", request)
    params = status_params("delivered")
    down = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/airflow",
                         connect_args={"connect_timeout": 2})  # nothing listens there
    with monkeypatch.context() as patch:
        patch.setattr(settings, "Session", scoped_session(sessionmaker(bind=down)))
        assert post_signed(client, STATUS, params).status_code == 503
    down.dispose()
    assert post_signed(client, STATUS, params).json() == {"success": True, "processed": 1}


def test_a_status_callback_still_queued_for_the_writer_at_its_deadline_gets_503_and_is_never_written(
        monkeypatch, tmp_path):
    """SQLite's status callbacks are written in batches by one writer thread (webhook/status_batches.py):
    one that waited for the writer past the store deadline is answered 503 like any store call too slow for
    Twilio, never reaches the store, and Twilio's retry is stored."""
    from concurrent.futures import ThreadPoolExecutor

    from airflow_provider_twilio_sms.webhook.app import create_app

    from webhook_testing import migrated_sqlite_store

    db = use_store(monkeypatch, migrated_sqlite_store(f"sqlite:///{tmp_path / 'store.db'}"))
    reached: list[str] = []
    holding = threading.Event()

    class HeldStore:
        """The real store; its first write is held past the deadline (a slow disk, a busy CPU)."""

        dialect = db.dialect

        def _reach(self, sids):
            reached.extend(sids)
            if not holding.is_set():
                holding.set()
                time.sleep(1.2)

        def record_status_event(self, **callback):
            self._reach([callback["message_sid"]])
            return db.record_status_event(**callback)

        def record_status_events(self, callbacks):
            self._reach([c["message_sid"] for c in callbacks])
            return db.record_status_events(callbacks)

    app = create_app("standalone")
    state = app.state.twilio_sms
    state.store_deadline_seconds = 0.5
    state.use_store(HeldStore())
    held, queued = status_params("sent", sid="SM" + "1" * 32), status_params("sent", sid="SM" + "2" * 32)

    with ServedApp(app, free_port()) as served:
        def post(params):
            return requests.post(served.url(STATUS), data=urlencode(params),
                                 headers={**FORM, **sign(STATUS, params)}, timeout=30).status_code

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, held)
            assert holding.wait(10)  # the writer holds the first callback: the second waits behind it
            second = pool.submit(post, queued)
            assert [first.result(), second.result()] == [503, 503]
        assert reached == [held["MessageSid"]]  # the queued one never reached the store
        assert event_count(db) == 0
        assert [post(queued), post(held)] == [200, 200]  # Twilio's retries
    assert event_count(db) == 2

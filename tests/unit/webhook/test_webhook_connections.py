"""Which connections the webhook accepts, read from Airflow's secrets, and how long it remembers them."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_provider_twilio_sms.webhook.connections import ConnectionCache, load_connection

ACCOUNT = "AC" + "3" * 32


def _conn(monkeypatch, conn_id: str, **fields):
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_a_twilio_connection_is_loaded_with_its_webhook_secrets(monkeypatch):
    _conn(monkeypatch, "tw", conn_type="twilio_sms", login=ACCOUNT, password="tok",
          extra={"secondary_auth_token": "tok2", "webhook_base_url": "https://a.example.com/"})
    found = load_connection("tw")
    assert found.settings.webhook_tokens == ["tok", "tok2"]
    assert found.settings.webhook_base_url == "https://a.example.com"
    assert found.team is None


@pytest.mark.parametrize(("fields", "logged"), [
    ({"conn_type": "http", "login": ACCOUNT, "password": "tok"}, "has type http"),
    ({"conn_type": "twilio_sms", "login": "not-a-sid", "password": "tok"}, "login"),
    ({"conn_type": "twilio_sms", "login": ACCOUNT, "extra": {"api_key_sid": "SK" + "1" * 32,
                                                               "api_key_secret": "s"}}, "no Auth Token"),
])
def test_unusable_connections_are_unknown_and_say_why(monkeypatch, caplog, fields, logged):
    _conn(monkeypatch, "tw", **fields)
    with caplog.at_level(logging.ERROR, logger="airflow_provider_twilio_sms"):
        assert load_connection("tw") is None
    assert logged in caplog.text
    assert "tok" not in caplog.text.replace("Auth Token", "")


def test_a_missing_connection_is_unknown(airflow_home):
    """Every secrets backend answered (environment variables, the migrated metadata database): unknown."""
    assert load_connection("no_such_connection_here") is None


def test_a_secret_that_does_not_decrypt_is_not_unknown_but_unavailable(monkeypatch, caplog):
    """Its key removed from the keyring too early in a rotation: the route answers 503 and Twilio retries
    until the key is back (a 404 would make Twilio drop the callback)."""
    from airflow_provider_twilio_sms.crypto import Keyring, clear_keyring_cache, encrypt_extra, new_key
    from airflow_provider_twilio_sms.errors import EncryptionError

    old = Keyring.from_json(json.dumps({"k1": new_key()}))
    _conn(monkeypatch, "tw", conn_type="twilio_sms", login=ACCOUNT,
          password=encrypt_extra("the-auth-token", "tw", "password", old))
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS", json.dumps({"k2": new_key()}))
    clear_keyring_cache()
    try:
        with caplog.at_level(logging.ERROR, logger="airflow_provider_twilio_sms"), \
                pytest.raises(EncryptionError, match="'k1'"):
            load_connection("tw")
    finally:
        clear_keyring_cache()
    assert "503" in caplog.text
    assert "the-auth-token" not in caplog.text


def test_a_connection_whose_metadata_database_is_unreachable_is_unavailable_not_unknown(monkeypatch):
    """Airflow answers "not found" when a secrets backend raises (it skips it): with the metadata database
    unreachable, a connection kept there would be refused as unknown (404, Twilio drops it)."""
    from airflow import settings
    from sqlalchemy import create_engine
    from sqlalchemy.orm import scoped_session, sessionmaker

    from airflow_provider_twilio_sms.webhook.connections import ConnectionUnavailable

    from conftest import free_port

    down = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/airflow",
                         connect_args={"connect_timeout": 2})  # nothing listens there
    monkeypatch.setattr(settings, "Session", scoped_session(sessionmaker(bind=down)))
    try:
        with pytest.raises(ConnectionUnavailable, match="MetastoreBackend"):
            load_connection("kept_in_the_metadata_db")
    finally:
        down.dispose()


def test_concurrent_misses_wait_for_one_lookup_and_failures_are_not_cached():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    calls: list[str] = []
    lock = threading.Lock()

    def loader(conn_id):
        with lock:
            calls.append(conn_id)
        time.sleep(0.2)  # a slow secrets backend
        if conn_id == "flaky" and calls.count("flaky") == 1:
            raise RuntimeError("backend down")
        return conn_id

    cache = ConnectionCache(ttl=30, loader=loader)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(cache.get, ["a"] * 8 + ["b"] * 8))
    assert answers == ["a"] * 8 + ["b"] * 8
    assert sorted(calls) == ["a", "b"]  # one lookup per id, not one per request
    with pytest.raises(RuntimeError):
        cache.get("flaky")
    assert cache.get("flaky") == "flaky"
    assert calls.count("flaky") == 2  # the failure was not cached
    assert cache._loading == {}


def test_cache_keeps_answers_for_the_ttl_and_stays_bounded():
    calls: list[str] = []
    clock = [0.0]

    def loader(conn_id):
        calls.append(conn_id)
        return None if conn_id.startswith("missing") else conn_id

    cache = ConnectionCache(ttl=30, max_entries=3, loader=loader, clock=lambda: clock[0])
    assert cache.get("a") == "a"
    assert cache.get("a") == "a"
    assert cache.cached("a") == (True, "a")
    assert cache.get("missing") is None
    assert cache.get("missing") is None  # unknown ids are cached too
    assert calls == ["a", "missing"]
    clock[0] = 31
    assert cache.cached("a") == (False, None)
    assert cache.get("a") == "a"
    assert calls[-1] == "a"
    for name in ("b", "c", "d"):
        cache.get(name)
    assert len(cache._entries) == 3
    assert "a" not in cache._entries

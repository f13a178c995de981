"""The store's engines: one per URL and process, and SQLite writers of one process queued on one lock."""

from __future__ import annotations

import threading

import pytest

from airflow_provider_twilio_sms.store import engine as store_engine


def test_sqlite_engines_on_one_file_share_one_writer_lock_and_other_databases_need_none(tmp_path):
    path = tmp_path / "store.db"
    first = store_engine.create_store_engine(f"sqlite:///{path}")
    second = store_engine.create_store_engine(f"sqlite:///{tmp_path}/../{tmp_path.name}/store.db")
    other = store_engine.create_store_engine(f"sqlite:///{tmp_path}/other.db")
    try:
        assert store_engine.writer_lock(first) is store_engine.writer_lock(second)
        assert store_engine.writer_lock(first) is not store_engine.writer_lock(other)
        pg = store_engine.create_store_engine(
            "postgresql+psycopg2://nobody@127.0.0.1:1/none"
        )  # never connects
        with store_engine.writer_lock(pg), store_engine.writer_lock(pg):
            pass
    finally:
        for e in (first, second, other):
            e.dispose()


def test_a_writer_waits_for_the_lock_at_most_the_busy_timeout(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__STORE_SQLITE_BUSY_TIMEOUT_SECONDS", "0.2")
    engine = store_engine.create_store_engine(f"sqlite:///{tmp_path}/store.db")
    lock = store_engine.writer_lock(engine)
    held, release = threading.Event(), threading.Event()

    def holder():
        with lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        held.wait(10)
        with pytest.raises(TimeoutError, match="stayed locked"), lock:
            pass
    finally:
        release.set()
        thread.join()
        engine.dispose()
    with lock, lock:  # free again, and re-entrant for the thread that holds it
        pass

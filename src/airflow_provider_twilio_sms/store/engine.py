"""SQLAlchemy engines for the store, one per URL and process.

SQLite (the embedded default) runs in WAL mode with a busy timeout; write transactions start with
``BEGIN IMMEDIATE`` so two writers queue for the lock up front instead of deadlocking on an upgrade
from a read lock. PostgreSQL gets a small pool.

Within one process, SQLite writers also queue on a lock of their own (:func:`writer_lock`) before they
ask SQLite for its write lock: SQLite's busy handler polls with sleeps of up to 100 ms, so threads that
collide on ``BEGIN IMMEDIATE`` wait far longer than the transaction they wait for. Across processes
SQLite's own lock still decides; the in-process lock only orders this process's writers.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "twilio_sms_write"

_engines: dict[str, Engine] = {}
_engines_pid = os.getpid()
_lock = threading.Lock()
_writer_locks: dict[str, _WriterLock] = {}


def _ensure_wal(cursor) -> None:
    import sqlite3
    import time

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _configure_sqlite(engine: Engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event decide how a transaction starts (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            # WAL is a property of the file: switch once (it needs a moment of exclusive access, so
            # only try when the file is not in WAL mode yet, retrying while other writers hold it).
            _ensure_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        # Straight to the driver: two of these per send, and SQLAlchemy's statement machinery would cost
        # more than SQLite takes to begin.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


class _WriterLock:
    """A re-entrant lock that a forked child gets fresh (a lock held by a parent's thread at the fork
    would never be released in the child).
    """

    def __init__(self):
        self._pid, self._lock = os.getpid(), threading.RLock()

    def __enter__(self):
        if self._pid != os.getpid():
            self._pid, self._lock = os.getpid(), threading.RLock()
        # As long as SQLite itself would wait for a writer (its busy timeout), then fail the same way.
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise TimeoutError(f"the store's SQLite database stayed locked by this process's other writers "
                               f"for {SQLITE_BUSY_TIMEOUT_MS // 1000} s")
        return self

    def __exit__(self, *exc):
        self._lock.release()


def writer_lock(engine: Engine) -> AbstractContextManager:
    """What this process's writers to ``engine``'s database hold around a write transaction.

    SQLite: one lock per database file, shared by every engine on that file in this process. Other
    databases queue writers row by row themselves: nothing to hold.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    database = engine.url.database
    if database in (None, "", ":memory:") or database.startswith("file:"):
        key = f"engine:{id(engine)}"
    else:
        key = os.path.realpath(database)
    with _lock:
        found = _writer_locks.get(key)
        if found is None:
            found = _writer_locks[key] = _WriterLock()
        return found


def create_store_engine(url: str) -> Engine:
    """A new engine for ``url`` (callers normally want :func:`get_engine`, which caches)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    # A statement's parameters never go into an exception's message: they hold phone numbers and bodies.
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        return engine
    # No pre-ping (a round trip per checkout): a connection the server dropped fails once, SQLAlchemy
    # then discards the whole pool, and callers already treat a failed write as retryable.
    return create_engine(parsed, pool_size=5, max_overflow=10, pool_recycle=1800, hide_parameters=True)


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url``; a forked child gets fresh engines, never its parent's."""
    global _engines_pid
    with _lock:
        if _engines_pid != os.getpid():
            _engines.clear()
            _engines_pid = os.getpid()
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_store_engine(url)
        return engine


def write_options() -> dict:
    """Execution options that mark a connection as a writer (``BEGIN IMMEDIATE`` on SQLite)."""
    return {_WRITE_OPTION: True}

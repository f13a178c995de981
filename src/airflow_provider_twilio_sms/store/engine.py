"""SQLAlchemy engines for the store, one per URL and process.

SQLite (the embedded default) runs in WAL mode with a busy timeout; write transactions start with
``BEGIN IMMEDIATE`` so two writers queue for the lock up front instead of deadlocking on an upgrade
from a read lock. PostgreSQL gets a small pool.

Every store call has a deadline enforced in three places (``[twilio_sms]`` options, see
:class:`StoreTimeouts`): in the database (PostgreSQL ``statement_timeout``; SQLite's busy timeout), on the
socket (libpq ``connect_timeout``, TCP keepalives and ``tcp_user_timeout``, so a dead peer is noticed
instead of waited on for the kernel's two hours) and in the caller (:mod:`.deadline`: a call past its
caller's deadline has its connection interrupted). The pool waits for a free connection no longer than
the connect timeout.

A forked child (a Celery prefork worker, an executor that forks per task) never uses its parent's
connections: it gets engines of its own from :func:`get_engine`, and a connection an inherited engine
opened in the parent is never handed out in the child (:func:`_guard_fork`). Nor is it closed there:
closing it would end the parent's session on the server, since both processes share its socket.

Within one process, SQLite writers also queue on a lock of their own (:func:`writer_lock`) before they
ask SQLite for its write lock: SQLite's busy handler polls with sleeps of up to 100 ms, so threads that
collide on ``BEGIN IMMEDIATE`` wait far longer than the transaction they wait for. Across processes
SQLite's own lock still decides; the in-process lock only orders this process's writers.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

_WRITE_OPTION = "twilio_sms_write"
_busy_seconds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # SQLite engine -> its busy timeout
# A server engine's connections: POOL_SIZE kept open once opened, and up to MAX_OVERFLOW more for a burst,
# each closed again when returned while POOL_SIZE are idle. Callers that run a steady stream of store calls
# in threads (the webhook) run them on at most POOL_SIZE threads, so that they never open a connection
# beyond the pool's: under load an overflow connection would be opened and closed call after call (a new
# database session each time, hundreds a second on PostgreSQL).
POOL_SIZE, MAX_OVERFLOW = 10, 5

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
# What a forked child inherited and must never use nor free: freeing a parent's DB-API connection in the
# child (when nothing refers to it any more) would close it, ending the parent's session on the server.
_inherited: list[Any] = []
_writer_locks: dict[str, _WriterLock] = {}


@dataclass(frozen=True)
class StoreTimeouts:
    """The store engines' time limits, from ``[twilio_sms]`` (defaults in :mod:`..config`)."""

    connect_seconds: int  # PostgreSQL connect_timeout (libpq: whole seconds, at least 2); also the pool wait
    statement_seconds: float  # PostgreSQL statement_timeout; 0 = none
    keepalives_idle_seconds: int  # TCP: silence before the first probe
    keepalives_interval_seconds: int  # between probes
    keepalives_count: int  # unanswered probes before the connection is dead
    sqlite_busy_seconds: float  # how long a SQLite writer waits for the database's write lock

    @classmethod
    def from_config(cls) -> StoreTimeouts:
        from airflow_provider_twilio_sms import config

        return cls(
            connect_seconds=max(2, math.ceil(config.get_float("store_connect_timeout_seconds", minimum=1))),
            statement_seconds=config.get_float("store_statement_timeout_seconds", minimum=0),
            keepalives_idle_seconds=max(1, round(config.get_float("store_keepalives_idle_seconds",
                                                                  minimum=1))),
            keepalives_interval_seconds=max(1, round(config.get_float("store_keepalives_interval_seconds",
                                                                      minimum=1))),
            keepalives_count=max(1, config.get_int("store_keepalives_count")),
            sqlite_busy_seconds=config.get_float("store_sqlite_busy_timeout_seconds", minimum=0),
        )

    def postgres_connect_args(self) -> dict[str, Any]:
        """The libpq connection parameters; ``options`` sets the session's statement timeout at connect (no
        round trip of its own).
        """
        dead_after_ms = 1000 * (self.keepalives_idle_seconds
                                + self.keepalives_interval_seconds * self.keepalives_count)
        args: dict[str, Any] = {
            "connect_timeout": self.connect_seconds,
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle_seconds,
            "keepalives_interval": self.keepalives_interval_seconds,
            "keepalives_count": self.keepalives_count,
            # Sent data unacknowledged this long: the connection is dead (keepalives only probe an idle one).
            "tcp_user_timeout": dead_after_ms,
        }
        if self.statement_seconds > 0:
            args["options"] = f"-c statement_timeout={max(1, round(self.statement_seconds * 1000))}"
        return args


def _ensure_wal(cursor, busy_timeout_ms: int) -> None:
    import sqlite3
    import time

    deadline = time.monotonic() + busy_timeout_ms / 1000
    while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event decide how a transaction starts (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        if engine.url.database not in (None, "", ":memory:"):
            # WAL is a property of the file: switch once (it needs a moment of exclusive access, so
            # only try when the file is not in WAL mode yet, retrying while other writers hold it).
            _ensure_wal(cursor, busy_timeout_ms)
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        # Straight to the driver: two of these per send, and SQLAlchemy's statement machinery would cost
        # more than SQLite takes to begin.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


def autocommits(engine: Engine) -> bool:
    """psycopg2 can run one statement as its own transaction (its autocommit flag), without the BEGIN and
    COMMIT round trips.
    """
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2"


@contextmanager
def autocommit(dbapi_connection, invalidate: Callable[[], Any]) -> Iterator[None]:
    """psycopg2's autocommit flag on for the block, and off again before the connection goes back to the
    pool (set through SQLAlchemy's AUTOCOMMIT isolation level instead, every return to the pool would cost
    a ``SET default_transaction_isolation`` round trip). A connection on which the flag cannot be cleared
    is broken: ``invalidate()`` keeps it out of the pool.
    """
    dbapi_connection.autocommit = True
    try:
        yield
    finally:
        try:
            dbapi_connection.autocommit = False
        except Exception:  # noqa: BLE001 - a broken connection must not go back to the pool
            invalidate()


def _guard_fork(engine: Engine) -> None:
    """Connections of ``engine``'s pool are handed out only in the process that opened them; in a forked
    child the pool opens new ones, and keeps the parent's out of use without closing them.
    """
    from sqlalchemy import event, exc

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_connection, record):
        record.info["twilio_sms_pid"] = os.getpid()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, proxy):
        if record.info.get("twilio_sms_pid", os.getpid()) != os.getpid():
            _inherited.append(dbapi_connection)
            record.dbapi_connection = proxy.dbapi_connection = None
            raise exc.DisconnectionError("a connection opened by the parent process: a new one is opened")


def _after_fork_in_child() -> None:
    """A forked child's engines are its own: the parent's stay referenced, unused, so that nothing of
    theirs is closed from here.
    """
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _inherited.extend(_engines.values())
    _engines.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _WriterLock:
    """A re-entrant lock that a forked child gets fresh (a lock held by a parent's thread at the fork
    would never be released in the child).
    """

    def __init__(self, timeout_seconds: float):
        self._pid, self._lock = os.getpid(), threading.RLock()
        self.timeout_seconds = timeout_seconds

    def __enter__(self):
        from airflow_provider_twilio_sms.store.deadline import remaining

        if self._pid != os.getpid():
            self._pid, self._lock = os.getpid(), threading.RLock()
        # As long as SQLite itself would wait for a writer (its busy timeout), and never past the
        # caller's deadline; then fail the same way.
        left = remaining()
        wait = self.timeout_seconds if left is None else max(0.0, min(self.timeout_seconds, left))
        if not self._lock.acquire(timeout=wait):
            raise TimeoutError(f"the store's SQLite database stayed locked by this process's other writers "
                               f"for {wait:.3g} s")
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
            busy = _busy_seconds.get(engine)
            if busy is None:  # an engine made elsewhere: the configured busy timeout
                busy = StoreTimeouts.from_config().sqlite_busy_seconds
            found = _writer_locks[key] = _WriterLock(busy)
        return found


def create_store_engine(url: str, timeouts: StoreTimeouts | None = None) -> Engine:
    """A new engine for ``url`` (callers normally want :func:`get_engine`, which caches), with the
    ``[twilio_sms]`` time limits (``timeouts`` overrides them).
    """
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from airflow_provider_twilio_sms.errors import UnsupportedStoreError
    from airflow_provider_twilio_sms.store.deadline import watch_pool

    timeouts = timeouts or StoreTimeouts.from_config()
    parsed = make_url(url)
    UnsupportedStoreError.check(parsed.get_backend_name())
    # A statement's parameters never go into an exception's message: they hold phone numbers and bodies.
    if parsed.get_backend_name() == "sqlite":
        busy_ms = round(timeouts.sqlite_busy_seconds * 1000)
        engine = create_engine(
            parsed,
            connect_args={"timeout": timeouts.sqlite_busy_seconds, "check_same_thread": False},
            hide_parameters=True,
        )
        _busy_seconds[engine] = timeouts.sqlite_busy_seconds
        _configure_sqlite(engine, busy_ms)
        _guard_fork(engine)
        watch_pool(engine)
        return engine
    connect_args = {}
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg2":
        # What the URL's own query sets wins; its libpq "options" keep theirs and get the timeout added.
        connect_args = {k: v for k, v in timeouts.postgres_connect_args().items() if k not in parsed.query}
        if "options" in parsed.query and timeouts.statement_seconds > 0:
            ours = timeouts.postgres_connect_args()["options"]
            connect_args["options"] = f"{parsed.query['options']} {ours}"
    # No pre-ping (a round trip per checkout): a connection the server dropped, or that a caller's deadline
    # interrupted, fails once; SQLAlchemy then discards it and every connection checked in before it, and
    # callers already treat a failed write as retryable.
    engine = create_engine(parsed, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_recycle=1800,
                           pool_timeout=timeouts.connect_seconds, connect_args=connect_args,
                           hide_parameters=True)
    _guard_fork(engine)
    watch_pool(engine)
    return engine


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url``; a forked child gets fresh engines, never its parent's."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_store_engine(url)
        return engine


def write_options() -> dict:
    """Execution options that mark a connection as a writer (``BEGIN IMMEDIATE`` on SQLite)."""
    return {_WRITE_OPTION: True}

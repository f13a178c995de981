"""Deadlines of store calls, enforced in the caller: a call past its deadline is interrupted, not left
running in its thread.

The database and the socket have limits of their own (``statement_timeout``, connect timeout, keepalives:
see :mod:`.engine`), but none of them helps when the database stops answering while the network still
accepts bytes (a hung server, a stalled proxy or load balancer): the driver then waits in ``recv()`` for
as long as the TCP connection lives, and the thread that made the call with it. So a caller with a
deadline (the webhook: Twilio waits 15 s at most) runs its store calls inside :func:`deadline`, and every
connection the store takes from its pool during the call is watched. When the deadline passes with the
call still holding the connection, the connection is interrupted:

- PostgreSQL (psycopg2): its socket is shut down. The driver's blocked read returns at once ("server
  closed the connection unexpectedly"), SQLAlchemy counts that as a disconnect and drops the connection
  (and every connection checked in before it: each reconnects on its next use), so a blocked connection
  never goes back to the pool. A statement that did reach the server ends there at ``statement_timeout``
  (below the webhook's deadline by default).
- SQLite: ``interrupt()`` ends the running statement; waits for the write lock are cut to the deadline
  instead (the busy timeout of the connection, and this process's writer lock, see :mod:`.engine`).

The call then raises :class:`StoreDeadlineExceeded`. One watchdog thread per process serves every watched
connection.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

_deadline: ContextVar[float | None] = ContextVar("twilio_sms_store_deadline", default=None)
_WATCH_KEY = "twilio_sms_deadline_watch"  # connection record info: the watch of the call holding it
_BUSY_KEY = "twilio_sms_busy_timeout_ms"  # connection record info: a SQLite connection's own busy timeout


class StoreDeadlineExceeded(TimeoutError):
    """A store call ran past its caller's deadline and was interrupted."""


def remaining() -> float | None:
    """Seconds left to the current call's deadline (may be negative); None when it has none."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Store calls in the block finish within ``seconds`` (or within an enclosing deadline, if sooner), or
    are interrupted and raise :class:`StoreDeadlineExceeded`.
    """
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    except StoreDeadlineExceeded:
        raise
    except Exception as err:
        # Whatever the interrupted driver raised (a disconnect, "database is locked", a pool timeout), the
        # caller learns the reason: its deadline.
        left = remaining()
        if left is not None and left <= 0:
            raise StoreDeadlineExceeded(f"the store did not answer within {seconds:.3g} s "
                                        f"({type(err).__name__})") from err
        raise
    finally:
        _deadline.reset(token)


class _Watch:
    __slots__ = ("at", "connection", "dialect", "done", "fired")

    def __init__(self, at: float, connection: Any, dialect: str):
        self.at, self.connection, self.dialect = at, connection, dialect
        self.done = self.fired = False


class _Watchdog:
    """One daemon thread that interrupts watched connections whose deadline passed. A watch is removed
    (under the same lock the interruption holds) before its connection is closed or reused, so an
    interruption never reaches a connection, or a file descriptor, that another call owns.

    The thread sleeps until the moment it last saw as the earliest deadline, and is woken before only by a
    watch whose deadline comes sooner. With deadlines of a fixed length a new watch is nearly always the
    latest, so a store call costs no wake-up of this thread: it wakes about once per deadline's length,
    finds the watches finished by then gone, and sleeps until the next. Finished watches leave the heap as
    soon as they reach its top, so it holds about as many watches as calls in flight.
    """

    def __init__(self):
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._wakes_at = math.inf  # when the thread wakes up unless notified

    def watch(self, connection: Any, dialect: str, at: float) -> _Watch:
        entry = _Watch(at, connection, dialect)
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._pid, self._heap, self._thread, self._wakes_at = os.getpid(), [], None, math.inf
            heapq.heappush(self._heap, (at, next(self._order), entry))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="twilio-sms-store-deadlines",
                                                daemon=True)
                self._thread.start()
            elif at < self._wakes_at:
                self._lock.notify()
        return entry

    def forget(self, entry: _Watch) -> None:
        with self._lock:
            entry.done = True
            heap = self._heap
            while heap and heap[0][2].done:
                heapq.heappop(heap)

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wakes_at = math.inf
                    self._lock.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._wakes_at = self._heap[0][0]
                    self._lock.wait(delay)
                    continue
                entry = heapq.heappop(self._heap)[2]
                entry.done = entry.fired = True
                try:
                    _interrupt(entry.connection, entry.dialect)
                except Exception:
                    log.exception("Could not interrupt a store connection past its deadline")


_watchdog = _Watchdog()


def _interrupt(connection: Any, dialect: str) -> None:
    if dialect == "sqlite":
        connection.interrupt()
        return
    if dialect == "postgresql" and not connection.closed:
        fd = connection.fileno()  # -1 once libpq dropped the socket itself
        if fd >= 0:
            # A duplicate of the descriptor: shutdown() acts on the socket they share, close() only on the
            # duplicate; the driver's own descriptor stays its to close.
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
            log.warning("A store call passed its deadline: its PostgreSQL connection was shut down")


def _sqlite_busy_ms(dbapi_connection, info: dict) -> int:
    """The connection's busy timeout: read once, then remembered with its pool record (a call that cuts it
    to its deadline puts it back before the connection returns to the pool).
    """
    busy = info.get(_BUSY_KEY)
    if busy is None:
        busy = info[_BUSY_KEY] = dbapi_connection.execute("PRAGMA busy_timeout").fetchone()[0]
    return busy


def start_watch(dbapi_connection, dialect: str, info: dict) -> tuple[_Watch, int | None] | None:
    at = _deadline.get()
    if at is None:
        return None
    left = at - time.monotonic()
    if left <= 0:
        raise StoreDeadlineExceeded("the store call's deadline passed before it got a connection")
    busy = None
    if dialect == "sqlite":  # a wait for the write lock is not interruptible: never wait past the deadline
        busy = _sqlite_busy_ms(dbapi_connection, info)
        if left * 1000 < busy:
            dbapi_connection.execute(f"PRAGMA busy_timeout = {max(1, int(left * 1000))}")
        else:
            busy = None
    return _watchdog.watch(dbapi_connection, dialect, at), busy


def end_watch(started: tuple[_Watch, int | None] | None) -> None:
    if started is None:
        return
    entry, busy = started
    _watchdog.forget(entry)
    if busy is not None:
        try:
            entry.connection.execute(f"PRAGMA busy_timeout = {busy}")
        except Exception:
            log.debug("Could not restore the SQLite busy timeout", exc_info=True)


def watch_pool(engine: Engine) -> None:
    """Watch every connection ``engine``'s pool hands out during a call with a deadline, until it is
    returned, invalidated or closed (whichever comes first).
    """
    from sqlalchemy import event

    dialect = engine.dialect.name

    def on_checkout(dbapi_connection, record, _proxy):
        started = start_watch(dbapi_connection, dialect, record.info)
        if started is not None:
            record.info[_WATCH_KEY] = started

    def on_release(_dbapi_connection, record, *_):
        if record is not None:
            end_watch(record.info.pop(_WATCH_KEY, None))

    event.listen(engine, "checkout", on_checkout)
    for name in ("checkin", "invalidate", "soft_invalidate", "close", "detach"):
        event.listen(engine, name, on_release)

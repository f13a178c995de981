"""Cursors of the inbound-SMS asset watchers (``twilio_sms_event_watch``), and when an event is safe to pass.

An asset watcher (:mod:`..triggers.inbound_events`) emits one asset event per matching inbound message. Its
cursor, the id of the last inbound event it has decided on, is a row here, so it survives a triggerer
restart and is shared by every triggerer running the same watcher. It moves only by compare-and-set
(:meth:`EventWatches.advance_event_watch`): of two triggerers that read the same message, one moves the
cursor past it and emits it; the other's update finds the cursor moved and emits nothing.

A cursor must never pass an event that is not visible yet. Event ids come from the database as rows are
inserted, and on PostgreSQL a transaction can commit after another that took a higher id: a reader that
sees id 101 may not see 100 yet. :meth:`EventWatches.read_watch` reads a watcher's messages together with
what tells, in the same snapshot, whether an event below one of them may still appear
(:meth:`WatchRead.passable`): none can when every id below it is in the snapshot, or when it was received
:data:`SETTLE_AFTER` before the snapshot. On SQLite writers take turns (``BEGIN IMMEDIATE``), so rows
become visible in id order and every visible event is passable.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, bindparam, func, select, text, update

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.base import StoreBase, utcnow
from airflow_provider_twilio_sms.store.inbound import channel_pages

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from airflow_provider_twilio_sms.store.inbound import InboundChannel

w, e = t.event_watch, t.event

# A webhook's store call (its insert included) ends within its deadline, at most 14 s
# ([twilio_sms] webhook_store_deadline_seconds), from the moment it read the clock it stores as
# ``received_at``; an insert that took an id below a visible event's started before that event's
# insert ended. So once an event was received this long ago on the database's clock (twice the deadline,
# and a margin for the webhook host's clock), nothing can still arrive below it.
SETTLE_AFTER = timedelta(seconds=30)

# In a read, the ids after the cursor are checked for holes through the primary key, at most this many
# (a few ms); an event further on is passable once SETTLE_AFTER old. A watcher moves its cursor up to the
# passable ids as it reads (triggers/inbound_events.py), so the span is about the events of the last
# SETTLE_AFTER: no message waits up to some 30 events a second (2.5 million a day) in the whole store.
HOLE_CHECK_SPAN = 2_000


@functools.cache
def _cursor_statement():
    return (select(w.c.last_event_id, w.c.moved_by)
            .where(w.c.watch_key == bindparam("p_key", type_=w.c.watch_key.type)))


@functools.cache
def _advance_statement(emitted: bool):
    key = bindparam("p_key", type_=w.c.watch_key.type)
    expected = bindparam("p_expected", type_=w.c.last_event_id.type)
    values: dict[str, Any] = {"last_event_id": bindparam("p_new", type_=w.c.last_event_id.type),
              "moved_by": bindparam("p_mover", type_=w.c.moved_by.type),
              "updated_at": bindparam("p_now", type_=w.c.updated_at.type)}
    if emitted:
        values["events"] = w.c.events + 1
    return update(w).where(w.c.watch_key == key, w.c.last_event_id == expected).values(values)


@functools.cache
def _rewind_statement():
    now = bindparam("p_now", type_=w.c.updated_at.type)
    return (update(w).where(w.c.watch_key == bindparam("p_key", type_=w.c.watch_key.type),
                            w.c.last_event_id == bindparam("p_from", type_=w.c.last_event_id.type),
                            w.c.moved_by == bindparam("p_mover", type_=w.c.moved_by.type))
            .values(last_event_id=bindparam("p_back", type_=w.c.last_event_id.type), events=w.c.events - 1,
                    updated_at=now))


@functools.cache
def _contiguous_statement():
    """The highest id up to which every id after ``:after`` is present (``:after`` when the next is missing),
    among the next ``:span`` ids (an index-only range of the primary key).
    """
    return text(
        "SELECT max(id) FROM (SELECT id, id - row_number() OVER (ORDER BY id) AS shift FROM "
        "(SELECT id FROM twilio_sms_event WHERE id > :after ORDER BY id LIMIT :span) AS following) AS ranked "
        "WHERE shift = :after"
    ).bindparams(bindparam("after", type_=Integer()), bindparam("span", type_=Integer()))


@functools.cache
def _settled_id_statement(dialect: str):
    """The newest inbound event received :data:`SETTLE_AFTER` before the database's clock (a backward probe
    of ix_twilio_sms_event_kind_received); on SQLite the newest event (see the module's docstring).
    """
    if dialect == "sqlite":
        return select(func.max(e.c.id))
    # received_at is naive UTC: compare it with the clock in UTC, whatever the session's time zone.
    before = func.timezone("UTC", func.now()) - SETTLE_AFTER
    return (select(e.c.id).where(e.c.kind == "inbound", e.c.received_at < before)
            .order_by(e.c.received_at.desc()).limit(1))


class EventWatches(StoreBase):
    """The asset watchers' cursors."""

    def open_event_watch(self, watch_key: str, *, start_after_id: int | None = None) -> int:
        """The cursor of watcher ``watch_key``, made on first use: after ``start_after_id``, else after the
        newest event stored now (a new watcher does not replay the history). Of two triggerers opening the
        same new watcher at once, the first row stays and both get its cursor.
        """
        if len(watch_key) != 64:
            raise ValueError("a watch key is a SHA-256 in hex (64 characters)")
        with self._write() as conn:
            if start_after_id is None:
                start_after_id = int(conn.execute(select(func.max(e.c.id))).scalar() or 0)
            now = utcnow()
            conn.execute(self._sql._insert_ignoring(w, ["watch_key"]),
                         {"watch_key": watch_key, "last_event_id": int(start_after_id), "events": 0,
                          "created_at": now, "updated_at": now})
            return int(conn.execute(_cursor_statement(), {"p_key": watch_key}).one().last_event_id)

    def event_watch_cursor(self, watch_key: str) -> tuple[int, str | None] | None:
        """Where watcher ``watch_key`` has read to and who moved it there last, or None when it has no
        cursor (yet).
        """
        with self._read() as conn:
            found = conn.execute(_cursor_statement(), {"p_key": watch_key}).first()
        return None if found is None else (int(found.last_event_id), found.moved_by)

    def advance_event_watch(self, watch_key: str, expected: int, new: int, *, mover: str,
                            emitted: bool) -> bool:
        """Move the cursor from ``expected`` to ``new`` if it still is at ``expected``, in one statement;
        True when this call moved it. ``mover`` names the caller (kept with the cursor); ``emitted``: the
        move passes an event the caller emits (counted).
        """
        if new <= expected:
            raise ValueError(f"a watch cursor only moves forward (from {expected} to {new} asked)")
        with self._write_one() as conn:
            moved = conn.execute(_advance_statement(emitted), {"p_key": watch_key, "p_expected": expected,
                                                                "p_new": new, "p_mover": mover,
                                                                "p_now": utcnow()})
            return moved.rowcount == 1

    def rewind_event_watch(self, watch_key: str, moved_to: int, back_to: int, *, mover: str) -> bool:
        """Undo ``mover``'s last move (to ``moved_to``, of an event it then could not emit): the cursor goes
        back to ``back_to`` if it is still where ``mover`` moved it; True when it went back.
        """
        with self._write_one() as conn:
            moved = conn.execute(_rewind_statement(), {"p_key": watch_key, "p_from": moved_to,
                                                       "p_back": back_to, "p_mover": mover,
                                                       "p_now": utcnow()})
            return moved.rowcount == 1

    def read_watch(self, reads: Sequence[tuple[InboundChannel, int]], *, page: int,
                   after_id: int) -> WatchRead:
        """A watcher's round: :meth:`read_inbound_channels` of ``reads`` (all from ``after_id``), and, in the
        same snapshot, what tells whether an event may still appear below one of the rows
        (:meth:`WatchRead.passable`).
        """
        with self._snapshot() as conn:
            if self.dialect == "sqlite":  # rows become visible in id order: all that is visible is passable
                settled = int(conn.execute(_settled_id_statement(self.dialect)).scalar() or 0)
                return WatchRead(channel_pages(conn, self.dialect, reads, page), settled, settled, None)
            now = conn.execute(select(func.now())).scalar_one()
            settled = int(conn.execute(_settled_id_statement(self.dialect)).scalar() or 0)
            contiguous = conn.execute(_contiguous_statement(),
                                      {"after": after_id, "span": HOLE_CHECK_SPAN}).scalar()
            pages = channel_pages(conn, self.dialect, reads, page)
        return WatchRead(pages, settled, int(contiguous or after_id), now)

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read transaction whose statements all see one snapshot (PostgreSQL: repeatable read; SQLite's
        read transactions always do).
        """
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn


@dataclass(frozen=True)
class WatchRead:
    """What :meth:`EventWatches.read_watch` saw, in one snapshot."""

    pages: list[list[dict[str, Any]]]  # each read's rows, oldest first
    settled_id: int  # no event can appear at or below this id any more
    contiguous_to: int  # every id from the cursor up to this one is in the snapshot
    now: datetime | None  # the database's clock at the snapshot (PostgreSQL)

    def passable(self, event_id: int, received_at: datetime) -> bool:
        """Whether the snapshot holds every event that will ever have an id below ``event_id`` (one of its
        rows, received at ``received_at``): a cursor may then pass it.
        """
        if event_id <= max(self.settled_id, self.contiguous_to):
            return True
        return self.now is not None and received_at <= self.now - SETTLE_AFTER

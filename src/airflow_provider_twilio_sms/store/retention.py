"""Retention and erasure: the store's deletes behind ``SmsStore.purge`` and ``SmsStore.forget_number``.

Every delete runs in bounded batches, one short transaction each, so a busy store waits for one batch at
most and no statement reads a whole large table: a page of at most ``batch_size`` rows is selected
through an index, in the index's order and continuing after the last row of the page before (so rows
that stay are read once, not once per batch), then deleted by primary key in the same transaction, the
conditions a concurrent writer can change tested again (a retry taking an ``unknown`` claim over, a new
rate-limit grant): such a row stays. A dry run reads the same pages and deletes nothing.

What the purge removes, older than its cutoff, in this order:

1. webhook events (status callbacks and inbound messages, with their bodies and payloads);
2. outbound messages whose send is over (``sent``, ``failed``, ``unknown``) with an expired lease, created
   and last changed before the cutoff, and with no event received since the cutoff (their older events
   went in step 1, so no event is left pointing at a deleted message). ``claimed`` rows are never purged:
   their attempt may still be live, or died with the request out, and the next attempt must reconcile;
3. reply waits created before the cutoff (the deferred reply sensor that made one has timed out by then,
   unless its timeout is longer than the retention);
4. human-in-the-loop reply codes texted before the cutoff (a request still waiting after that long can
   then be answered in Airflow's UI only);
5. rate-limit slots whose reservation ended before the pools' cutoff, then the pools unused since it with
   no slot left. The pools' cutoff is at least :data:`RATE_POOL_IDLE_FLOOR` ago: a slot older than the
   window of a limit counts nothing, and a pool's ring is created again on its first use, so a pool
   removed this way decides as it would have for every window up to that long.

A message row is what makes a send with the same idempotency key return the recorded result instead of
sending again: once purged, a task retried with that key sends anew (and an ``unknown`` row's retry no
longer reconciles first). The cutoff must therefore be far older than any task can still be retried or
cleared; the default retention is 30 days.

Opt-outs are never purged: they are what keeps a STOP honoured. :meth:`Retention.forget_number` erases one
person; see its docstring.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, and_, bindparam, delete, exists, func, literal, or_, select, union, update

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.statements import param

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Row
    from sqlalchemy.sql import Select
    from sqlalchemy.sql.elements import BindParameter

    from airflow_provider_twilio_sms.store.api import SmsStore

DEFAULT_BATCH_SIZE = 5000
MAX_BATCH_SIZE = 10_000  # a page's keys are bound one by one; SQLite takes at most 32 766 values
# A rate-limit pool is removed only once unused for this long, whatever the purge's age: windows up to
# this long (or up to the purge's age, when longer) count exactly across a purge.
RATE_POOL_IDLE_FLOOR = timedelta(days=31)
# The states of a message whose send is over.
FINISHED_STATES = ("sent", "failed", "unknown")
PURGED_TABLES = (t.event.name, t.message.name, t.reply_wait.name, t.hitl_request.name, t.rate_slot.name,
                 t.rate_pool.name)
FORGOTTEN_TABLES = (t.event.name, t.message.name, t.reply_wait.name, t.hitl_request.name, t.opt_out.name)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
m, e, w, o, rp, rs, h = t.message, t.event, t.reply_wait, t.opt_out, t.rate_pool, t.rate_slot, t.hitl_request


_LIMIT: BindParameter[Any] = bindparam("p_limit", type_=Integer)
_IDS: BindParameter[Any] = bindparam("p_ids", expanding=True)


@dataclass(frozen=True)
class Sweep:
    """One kind of row deleted in batches.

    ``page`` selects the next page through an index: its first column the primary key, then the keyset
    columns, and with ``flagged`` a last column saying whether the row qualifies (conditions on columns
    the index does not hold are read from the page's rows, never left to the planner as a filter it could
    answer with a scan). ``remove`` deletes the keys ``p_ids`` that still qualify. ``keyset`` turns a
    page's last row into the bind values the next page continues after; ``start`` are the first page's.
    """

    table: str
    page: Select
    remove: Any
    keyset: Callable[[Row], dict[str, Any]]
    start: Mapping[str, Any]
    flagged: bool = False


def _time_page(table, time_column, condition, flag=None) -> Select:
    """A page of ``table`` where ``condition`` holds, in (``time_column``, id) order after (``p_after_t``,
    ``p_after_id``), written so that the time index bounds the scan: ``time >= t AND (time > t OR id >
    id)``. ``flag``: the qualifying test, returned as the last column.
    """
    after_t = param("p_after_t", time_column)
    after_id = param("p_after_id", table.c.id)
    after = and_(time_column >= after_t, or_(time_column > after_t, table.c.id > after_id))
    columns = [table.c.id, time_column] + ([flag.label("qualifies")] if flag is not None else [])
    return select(*columns).where(condition, after).order_by(time_column, table.c.id).limit(_LIMIT)


def _id_page(table, condition, key=None) -> Select:
    """A page of ``table``'s ``key`` (by default ``id``) where ``condition`` holds, after ``p_after_id``."""
    key = table.c.id if key is None else key
    return select(key).where(condition, key > param("p_after_id", key)).order_by(key).limit(_LIMIT)


def _time_keyset(row: Row) -> dict[str, Any]:
    return {"p_after_t": row[1], "p_after_id": row[0]}


def _id_keyset(row: Row) -> dict[str, Any]:
    return {"p_after_id": row[0]}


def _by_id(table, condition) -> Sweep:
    """Rows of ``table`` where ``condition`` holds, in primary-key order, deleted by id."""
    return Sweep(table.name, _id_page(table, condition), delete(table).where(table.c.id.in_(_IDS)),
                 _id_keyset, {"p_after_id": 0})


class PurgeStatements:
    """The purge's and the erasure's statements, built once (bind parameters ``p_*``)."""

    def __init__(self) -> None:
        self._purge()
        self._erasure()

    def _purge(self) -> None:
        cutoff = param("p_cutoff", m.c.created_at)
        time_start = {"p_after_t": _EPOCH, "p_after_id": 0}
        # 1. Events, through the received_at index.
        self.events = Sweep(e.name, _time_page(e, e.c.received_at, e.c.received_at < cutoff),
                            delete(e).where(e.c.id.in_(_IDS)), _time_keyset, time_start)
        # 2. Finished messages with no event since the cutoff: the page walks the old messages through the
        # created_at index and, for each of its rows only, reads state, lease and last change, and when its
        # last event came through the events' message_id index (a scalar subquery, which the database runs
        # per row: as a join or EXISTS it could read every recent event, or the whole table, instead). The
        # delete tests again what a retry may have changed meanwhile; an event stored for the message
        # between the two statements (a callback a month late, within those milliseconds) would stay,
        # unlinked.
        # A scheduled message (send_at) is not finished before its moment: its row is what keeps a retried
        # task from scheduling it again (up to 35 days ahead, beyond a short retention).
        finished = and_(m.c.send_state.in_(FINISHED_STATES),
                        m.c.lease_expires_at < param("p_now", m.c.lease_expires_at), m.c.updated_at < cutoff,
                        or_(m.c.send_at.is_(None), m.c.send_at < cutoff))
        last_event = (select(func.max(e.c.received_at)).where(e.c.message_id == m.c.id)
                      .group_by(e.c.message_id).scalar_subquery())
        quiet = func.coalesce(last_event, literal(_EPOCH, e.c.received_at.type)) < cutoff
        self.messages = Sweep(
            m.name, _time_page(m, m.c.created_at, m.c.created_at < cutoff, flag=and_(finished, quiet)),
            delete(m).where(m.c.id.in_(_IDS), finished), _time_keyset, time_start, flagged=True)
        # 3. Reply waits: one row per deferred reply sensor, a small table read in primary-key order.
        self.reply_waits = _by_id(w, w.c.created_at < cutoff)
        # 4. HITL reply codes, through the created_at index.
        self.hitl_requests = Sweep(h.name, _time_page(h, h.c.created_at, h.c.created_at < cutoff),
                                   delete(h).where(h.c.id.in_(_IDS)), _time_keyset, time_start)
        # 5. Rate-limit pools unused since their cutoff (few rows), their expired slots (by the primary key
        # (pool, slot)), then each such pool left without a slot.
        pool_cutoff = param("p_pool_cutoff", rp.c.updated_at)
        self.idle_pools = _id_page(rp, rp.c.updated_at < pool_cutoff, key=rp.c.pool)
        in_pool = rs.c.pool == param("p_pool", rs.c.pool)
        expired = rs.c.until_us < param("p_old_us", rs.c.until_us)
        self.slots = Sweep(rs.name, _id_page(rs, and_(in_pool, expired), key=rs.c.slot),
                           delete(rs).where(in_pool, rs.c.slot.in_(_IDS), expired), _id_keyset,
                           {"p_after_id": -(2 ** 31)})
        self.pool_kept = select(exists().where(in_pool, ~expired))
        unused = and_(rp.c.pool == param("p_pool", rp.c.pool), rp.c.updated_at < pool_cutoff)
        self.pool_remove = delete(rp).where(unused, ~exists().where(rs.c.pool == rp.c.pool))

    def _erasure(self) -> None:
        number = param("p_number", m.c.to_number)
        live = and_(m.c.send_state == "claimed", m.c.lease_expires_at > param("p_now", m.c.lease_expires_at))
        # Outbound messages to the number (its to_number index), each page's events deleted first.
        to_number = and_(m.c.to_number == number, ~live)
        page = (select(m.c.id, m.c.sid).where(to_number, m.c.id > param("p_after_id", m.c.id))
                .order_by(m.c.id).limit(_LIMIT))
        self.number_messages = Sweep(m.name, page, delete(m).where(m.c.id.in_(_IDS), ~live), _id_keyset,
                                     {"p_after_id": 0})
        self.linked_events_remove = delete(e).where(e.c.message_id.in_(_IDS))
        self.sid_events_remove = delete(e).where(e.c.message_sid.in_(bindparam("p_sids", expanding=True)))
        self.live_claims = select(func.count()).where(m.c.to_number == number, live)
        # Events naming the number, each through its (kind, number, id) index.
        naming = [and_(e.c.kind == "status", e.c.to_number == number),
                  and_(e.c.kind == "inbound", e.c.from_number == number),
                  and_(e.c.kind == "inbound", e.c.to_number == number)]
        self.number_events = [_by_id(e, condition) for condition in naming]
        waits = or_(w.c.from_number == number, w.c.to_number == number)
        self.number_waits = _by_id(w, waits)
        # HITL requests texted to the number; its entry in other requests' users mappings (a small table:
        # matched in its JSON text, rewritten in Python).
        self.number_hitl = _by_id(h, h.c.to_number == number)
        self.hitl_mappings = _by_id(h, h.c.users.like(bindparam("p_like", type_=h.c.users.type)))
        self.hitl_mapping_ids = select(h.c.id, h.c.users).where(h.c.id.in_(_IDS))
        self.hitl_mapping_update = update(h).where(h.c.id == bindparam("p_id")).values(
            users=bindparam("p_users"))
        # Opt-outs: an opt-in (START) row is history only; an opt-out keeps what refuses the next send.
        self.opt_in_remove = delete(o).where(o.c.number == number, o.c.opted_out.is_(False))
        self.opt_out_strip = (update(o).where(o.c.number == number, o.c.opted_out.is_(True))
                              .values(keyword=None, message_sid=None))
        self.opt_outs = select(func.count()).where(o.c.number == number, o.c.opted_out.is_(True))
        # A dry run's counts: what the erasure deletes, every event once.
        sids = select(m.c.sid).where(to_number, m.c.sid.is_not(None))
        event_ids = union(select(e.c.id).where(e.c.message_id.in_(select(m.c.id).where(to_number))),
                          select(e.c.id).where(e.c.message_sid.in_(sids)),
                          *(select(e.c.id).where(condition) for condition in naming)).subquery()
        self.counts = {
            e.name: select(func.count()).select_from(event_ids),
            m.name: select(func.count()).where(to_number),
            w.name: select(func.count()).where(waits),
            h.name: select(func.count()).where(h.c.to_number == number),
            o.name: select(func.count()).where(o.c.number == number, o.c.opted_out.is_(False)),
        }


@functools.cache
def purge_statements() -> PurgeStatements:
    """The statements, built on first use and shared by every store."""
    return PurgeStatements()


@dataclass(frozen=True)
class Erasure:
    """What :meth:`Retention.forget_number` erased (or, in a dry run, would erase).

    ``deleted``: rows per table. ``opt_outs_kept``: opt-outs of the number kept, without their keyword and
    message SID, so that a send to it is still refused. ``live_claims_kept``: sends to the number in
    flight, left alone (erase again once they are over).
    """

    deleted: dict[str, int]
    opt_outs_kept: int
    live_claims_kept: int


class Retention:
    """Bounded purges and erasures on one :class:`~airflow_provider_twilio_sms.store.api.SmsStore`."""

    def __init__(self, store: SmsStore, batch_size: int = DEFAULT_BATCH_SIZE):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
                or not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size={batch_size!r}: give a whole number of rows per transaction from 1 "
                             f"to {MAX_BATCH_SIZE} (default {DEFAULT_BATCH_SIZE})")
        self.store = store
        self.batch_size = batch_size
        self.sql = purge_statements()

    # -- batches ----------------------------------------------------------------------------------

    def _transaction(self, dry_run: bool):
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``), or a read-only one for a dry run."""
        return self.store._read() if dry_run else self.store._write()

    def _each_page(self, sweep: Sweep, values: Mapping[str, Any], dry_run: bool,
                   handle: Callable[[Connection, list[Row]], int]) -> int:
        """``handle(conn, rows)`` for each page of ``sweep``, each in a transaction of its own, until a page
        comes back short; the sum of what ``handle`` returned.
        """
        done, after = 0, dict(sweep.start)
        while True:
            with self._transaction(dry_run) as conn:
                rows = list(conn.execute(sweep.page, {**values, **after, "p_limit": self.batch_size}).all())
                if rows:
                    done += handle(conn, rows)
            if len(rows) < self.batch_size:
                return done
            after = sweep.keyset(rows[-1])

    def _sweep(self, sweep: Sweep, values: Mapping[str, Any], dry_run: bool) -> int:
        """Delete (or count, in a dry run) every row of ``sweep``, batch by batch."""

        def delete_page(conn: Connection, rows: list[Row]) -> int:
            ids = [row[0] for row in rows if not sweep.flagged or row[-1]]
            if not ids or dry_run:
                return len(ids)
            return conn.execute(sweep.remove, {**values, "p_ids": ids}).rowcount

        return self._each_page(sweep, values, dry_run, delete_page)

    # -- purge ------------------------------------------------------------------------------------

    def purge(self, older_than: timedelta, *, dry_run: bool = False,
              now: datetime | None = None) -> dict[str, int]:
        """Delete what is older than ``older_than`` (see the module docstring); rows per table."""
        if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
            raise ValueError(f"older_than={older_than!r}: give a positive timedelta, e.g. timedelta(days=30)")
        now = now or datetime.now(timezone.utc)
        values = {"p_cutoff": now - older_than, "p_now": now}
        sql = self.sql
        counts = {sweep.table: self._sweep(sweep, values, dry_run)
                  for sweep in (sql.events, sql.messages, sql.reply_waits, sql.hitl_requests)}
        counts[rs.name], counts[rp.name] = self._purge_pools(now - max(older_than, RATE_POOL_IDLE_FLOOR),
                                                             dry_run)
        return {table: counts[table] for table in PURGED_TABLES}

    def _purge_pools(self, pool_cutoff: datetime, dry_run: bool) -> tuple[int, int]:
        """(slots, pools) deleted: the slots that expired before ``pool_cutoff`` of the pools unused since
        then, and those pools once they have no slot left.
        """
        old_us = (pool_cutoff - _EPOCH) // timedelta(microseconds=1)
        values = {"p_pool_cutoff": pool_cutoff, "p_old_us": old_us}
        slots = pools = 0
        after = ""
        while True:
            with self.store._read() as conn:
                page = conn.execute(self.sql.idle_pools, {**values, "p_after_id": after,
                                                          "p_limit": self.batch_size}).scalars().all()
            for pool in page:
                at = {**values, "p_pool": pool}
                slots += self._sweep(self.sql.slots, at, dry_run)
                with self._transaction(dry_run) as conn:
                    if dry_run:
                        pools += not conn.execute(self.sql.pool_kept, at).scalar()
                    else:
                        pools += conn.execute(self.sql.pool_remove, at).rowcount
            if len(page) < self.batch_size:
                return slots, pools
            after = page[-1]

    # -- erasure ----------------------------------------------------------------------------------

    def forget_number(self, number: str, *, dry_run: bool = False, now: datetime | None = None) -> Erasure:
        """Erase what the store holds about ``number`` (E.164, already normalised).

        Deleted: outbound messages to it, with their events (linked to the row, or carrying its SID); status
        callbacks addressed to it (of messages sent elsewhere); inbound messages from it or to it; reply
        waits naming it; human-in-the-loop requests texted to it, and its entry in other requests' number ->
        user mappings; its opt-in (START) history. Kept: an opt-out (STOP), its keyword and message SID
        cleared, because it is what refuses the next send to the number; and a send to it still in flight
        (a live claim), left to finish. An erased message's idempotency key is forgotten too: a task retried
        with it would send again, unless the number opted out.
        """
        now = now or datetime.now(timezone.utc)
        values = {"p_number": number, "p_now": now}
        sql = self.sql
        with self.store._read() as conn:
            live = conn.execute(sql.live_claims, values).scalar_one()
            if dry_run:
                return Erasure({table: conn.execute(count, values).scalar_one()
                                for table, count in sql.counts.items()},
                               conn.execute(sql.opt_outs, values).scalar_one(), live)
        deleted = dict.fromkeys(FORGOTTEN_TABLES, 0)

        def erase_messages(conn: Connection, rows: list[Row]) -> int:
            ids = [row.id for row in rows]
            sids = [row.sid for row in rows if row.sid]
            # Their events first: none is left pointing at a deleted message.
            deleted[e.name] += conn.execute(sql.linked_events_remove, {"p_ids": ids}).rowcount
            if sids:
                deleted[e.name] += conn.execute(sql.sid_events_remove, {"p_sids": sids}).rowcount
            return conn.execute(sql.number_messages.remove, {**values, "p_ids": ids}).rowcount

        deleted[m.name] = self._each_page(sql.number_messages, values, False, erase_messages)
        for events in sql.number_events:
            deleted[e.name] += self._sweep(events, values, dry_run=False)
        deleted[w.name] = self._sweep(sql.number_waits, values, dry_run=False)
        deleted[h.name] = self._sweep(sql.number_hitl, values, dry_run=False)
        self._forget_in_hitl_mappings(number)
        with self.store._write() as conn:
            deleted[o.name] = conn.execute(sql.opt_in_remove, values).rowcount
            kept = conn.execute(sql.opt_out_strip, values).rowcount
        return Erasure(deleted, kept, live)

    def _forget_in_hitl_mappings(self, number: str) -> None:
        """Drop ``number`` from the number -> user mappings kept with HITL requests texted to others."""
        import json

        # An E.164 number holds no LIKE wildcard (% or _): only its JSON-quoted form is matched.
        values = {"p_like": f"%{json.dumps(number)}%"}

        def strip(conn: Connection, rows: list[Row]) -> int:
            ids = [row[0] for row in rows]
            for request_id, users in conn.execute(self.sql.hitl_mapping_ids, {"p_ids": ids}).all():
                mapping = json.loads(users or "{}")
                if mapping.pop(number, None) is not None:
                    conn.execute(self.sql.hitl_mapping_update,
                                 {"p_id": request_id, "p_users": json.dumps(mapping, sort_keys=True)})
            return len(ids)

        self._each_page(self.sql.hitl_mappings, values, False, strip)

"""The store's write statements, built once per dialect with bind parameters.

Built anew on every call, a statement costs SQLAlchemy more (constructing it, then computing its key for
the compiled cache) than the database takes to run it. Built once, its cache key is memoized and its
compiled form reused: a call only binds values. :class:`~airflow_provider_twilio_sms.store.api.SmsStore`
decides what runs when; this module only says what each statement is.

Bind parameters are named ``p_*`` so they never collide with the column keys SQLAlchemy binds for
``INSERT`` values and ``UPDATE`` ``SET`` clauses given at execution time.
"""

from __future__ import annotations

import functools
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)

from airflow_provider_twilio_sms.errors import UnsupportedStoreError
from airflow_provider_twilio_sms.store import tables as t

if TYPE_CHECKING:
    from sqlalchemy.sql.elements import BindParameter, ColumnElement

m, e, o, rp, rs, w = t.message, t.event, t.opt_out, t.rate_pool, t.rate_slot, t.reply_wait

# The columns of a sent message's row that its sender cannot know: what callbacks (status) and this
# attempt's own updates since the claim (lease, HTTP attempt) wrote. Every other column was given by the
# claim and never changes, or is set by record_sent itself.
SENT_RETURNING = ("status", "status_rank", "lease_expires_at", "http_attempted_at")

# What a new claim's row is given; every other column of ``twilio_sms_message`` starts NULL.
CLAIM_COLUMNS = (
    "scope",
    "idempotency_key",
    "idempotency_key_sha256",
    "account_sid",
    "conn_id",
    "signer",
    "team",
    "pool",
    "to_number",
    "from_number",
    "messaging_service_sid",
    "body",
    "body_sha256",
    "channel",
    "num_media",
    "send_state",
    "attempt_id",
    "lease_expires_at",
    "status_rank",
    "dag_id",
    "task_id",
    "run_id",
    "map_index",
    "created_at",
    "updated_at",
    "http_attempted_at",
    "send_at",
)


def param(name: str, column) -> BindParameter[Any]:
    """A bind parameter typed like ``column`` (so timestamps go through ``UtcDateTime``); every statement of
    the store builds its parameters with it.
    """
    return bindparam(name, type_=column.type)


def _opted_out_for(account_sid, signer, number):
    """The opt-out rows that refuse a send: the recipient's STOP to this account, verified with this signer
    (or stored before signers were recorded, signer ``''``). A STOP verified with another token never counts.
    """
    return and_(o.c.account_sid == account_sid, o.c.number == number, o.c.signer.in_([signer, ""]),
                o.c.opted_out.is_(True))


class Statements:
    """One dialect's write statements (see the module docstring). Get one with :func:`statements`."""

    def __init__(self, dialect: str):
        UnsupportedStoreError.check(dialect)
        self.dialect = dialect

    def _dialect_insert(self, table):
        """The dialect's ``INSERT``, with ``ON CONFLICT`` and ``RETURNING`` (PostgreSQL, SQLite)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as postgresql_insert

            return postgresql_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    def _insert_ignoring(self, table, conflict_cols: list[str]):
        """``INSERT`` that skips a row whose unique ``conflict_cols`` exist."""
        return self._dialect_insert(table).on_conflict_do_nothing(index_elements=conflict_cols)

    # -- send claims ----------------------------------------------------------------------------

    @cached_property
    def opted_out(self):
        return select(o.c.opted_out).where(_opted_out_for(param("p_account_sid", o.c.account_sid),
                                                          param("p_signer", o.c.signer),
                                                          param("p_number", o.c.number)))

    def claim_insert_returning(self, refuse_opted_out: bool):
        """The new claim's row (:data:`CLAIM_COLUMNS` bound as ``v_<column>``) unless the key is taken,
        or, with ``refuse_opted_out``, the recipient opted out of this account: one statement, RETURNING
        the new id (PostgreSQL, SQLite). No row back: the caller looks at which of the two it was.
        """
        return self._claim_refusing if refuse_opted_out else self._claim_plain

    def _build_claim_insert(self, refuse_opted_out: bool):
        def value(name):
            return self._typed(f"v_{name}", m.c[name])

        row = select(*[value(name) for name in CLAIM_COLUMNS])
        if refuse_opted_out:
            row = row.where(~exists().where(_opted_out_for(
                param("v_account_sid", o.c.account_sid), param("v_signer", o.c.signer),
                param("v_to_number", o.c.number))))
        else:
            row = row.where(true())  # SQLite parses an upsert after INSERT ... SELECT only with a WHERE
        return (self._dialect_insert(m).from_select(list(CLAIM_COLUMNS), row)
                .on_conflict_do_nothing(index_elements=["scope", "idempotency_key_sha256"]).returning(m.c.id))

    @cached_property
    def _claim_refusing(self):
        return self._build_claim_insert(True)

    @cached_property
    def _claim_plain(self):
        return self._build_claim_insert(False)

    @cached_property
    def message_by_key(self):
        return select(m).where(m.c.scope == param("p_scope", m.c.scope),
                               m.c.idempotency_key_sha256 == param("p_key_sha256",
                                                                   m.c.idempotency_key_sha256))

    def take_over(self, attempting: bool):
        """Compare-and-set: the claim moves to this attempt only if nobody else moved it meanwhile."""
        return self._take_over_attempting if attempting else self._take_over

    def _build_take_over(self, attempting: bool):
        values = {"attempt_id": param("p_attempt", m.c.attempt_id),
                  "lease_expires_at": param("p_lease", m.c.lease_expires_at), "send_state": "claimed",
                  "updated_at": param("p_now", m.c.updated_at)}
        if attempting:
            values["http_attempted_at"] = func.coalesce(m.c.http_attempted_at, param("p_now", m.c.updated_at))
        return (update(m).where(m.c.id == param("p_id", m.c.id),
                                m.c.attempt_id == param("p_old_attempt", m.c.attempt_id),
                                m.c.send_state == param("p_old_state", m.c.send_state))
                .values(**values))

    @cached_property
    def _take_over(self):
        return self._build_take_over(False)

    @cached_property
    def _take_over_attempting(self):
        return self._build_take_over(True)

    @cached_property
    def update_owned(self):
        """``UPDATE`` of the row this attempt owns; the ``SET`` columns are the execution's column keys."""
        return update(m).where(m.c.id == param("p_id", m.c.id),
                               m.c.attempt_id == param("p_attempt", m.c.attempt_id))

    @cached_property
    def withdraw(self):
        """Delete the owned claim if no HTTP attempt was ever recorded on it (nothing reached Twilio)."""
        return delete(m).where(
            m.c.id == param("p_id", m.c.id),
            m.c.attempt_id == param("p_attempt", m.c.attempt_id),
            m.c.send_state == "claimed",
            m.c.http_attempted_at.is_(None),
            m.c.sid.is_(None),
        )

    @cached_property
    def record_sent(self):
        """The send's result onto the owned row; a status an early callback advanced is kept. RETURNING
        only :data:`SENT_RETURNING` (where supported): the caller knows every other column.
        """
        rank = param("p_rank", m.c.status_rank)
        keep = m.c.status_rank >= rank  # SET expressions all see the row as it was
        now = param("p_now", m.c.updated_at)
        owned = and_(m.c.id == param("p_id", m.c.id), m.c.attempt_id == param("p_attempt", m.c.attempt_id))
        stmt = (update(m).where(owned)
                .values(send_state="sent", sid=param("p_sid", m.c.sid),
                        status=case((keep, m.c.status), else_=param("p_status", m.c.status)),
                        status_rank=case((keep, m.c.status_rank), else_=rank),
                        status_updated_at=now, num_segments=param("p_num_segments", m.c.num_segments),
                        encoding=param("p_encoding", m.c.encoding),
                        error_code=param("p_error_code", m.c.error_code),
                        error_message=param("p_error_message", m.c.error_message),
                        from_number=param("p_from_number", m.c.from_number), sent_at=now, updated_at=now))
        return stmt.returning(*(m.c[name] for name in SENT_RETURNING))

    # -- webhook events -------------------------------------------------------------------------

    @cached_property
    def _callback_message_id(self):
        """The outbound row a status callback is about, among the messages sent under the verifying
        connection's account AND by that connection (an event verified by one connection never touches
        another's messages): the one with its SID, else (the send's response was lost, so no SID was
        recorded) the one without a SID whose idempotency key (its SHA-256) the callback URL carries, if
        only one is (the same key in two teams' scopes of one connection: neither).
        """
        own = and_(m.c.account_sid == param("p_account_sid", m.c.account_sid),
                   m.c.conn_id == param("p_conn_id", m.c.conn_id))
        by_sid = select(m.c.id).where(m.c.sid == param("p_sid", m.c.sid), own).scalar_subquery()
        by_key = (select(func.min(m.c.id))
                  .where(own, m.c.idempotency_key_sha256 == param("p_key_sha256", m.c.idempotency_key_sha256),
                         m.c.sid.is_(None))
                  .having(func.count() == 1).scalar_subquery())
        return func.coalesce(by_sid, by_key)

    @cached_property
    def status_event_insert(self):
        """One status event (columns bound as ``v_<column>``), deduplicated on (account, dedupe key), linked
        to its outbound row; RETURNING that row's id (NULL: not ours). Its team is the
        linked message's, else the verifying connection's (``v_team``): never what the request said.
        """
        return self._event_insert(self._callback_message_id, returning=True)

    def _event_insert(self, message_id, *, returning: bool):
        """An event row linked to ``message_id`` (an SQL expression), its team derived from that message."""
        values = {c.key: param(f"v_{c.key}", c) for c in e.c if c.key not in ("id", "message_id", "team")}
        answered_team = select(m.c.team).where(m.c.id == message_id).scalar_subquery()
        team = func.coalesce(answered_team, param("v_team", e.c.team))
        stmt = self._insert_ignoring(e, ["account_sid", "dedupe_key"]).values(
            message_id=message_id, team=team, **values)
        return stmt.returning(e.c.message_id) if returning else stmt

    def _build_apply_status(self, message_id):
        """Onto the callback's outbound row: its SID when it had none (linked by idempotency key), and the
        status only when it ranks higher (forward only; SET expressions all see the row as it was).
        """
        rank = param("p_rank", m.c.status_rank)
        now = param("p_now", m.c.updated_at)
        advances = m.c.status_rank < rank
        return (update(m).where(m.c.id == message_id, or_(advances, m.c.sid.is_(None)))
                .values(sid=func.coalesce(m.c.sid, param("p_sid", m.c.sid)),
                        status=case((advances, param("p_status", m.c.status)), else_=m.c.status),
                        status_rank=case((advances, rank), else_=m.c.status_rank),
                        status_updated_at=case((advances, now), else_=m.c.status_updated_at),
                        error_code=case((advances, func.coalesce(param("p_error_code", m.c.error_code),
                                                                 m.c.error_code)), else_=m.c.error_code),
                        updated_at=now))

    @cached_property
    def apply_status(self):
        return self._build_apply_status(param("p_id", m.c.id))

    @cached_property
    def status_event_fused(self):
        """PostgreSQL: :attr:`status_event_insert` and :attr:`apply_status` in one statement (data-modifying
        CTEs), so a callback is one round trip and atomic on its own. A row back: stored; none: duplicate.
        """
        if self.dialect != "postgresql":
            return None
        stored = self.status_event_insert.cte("stored")
        applied = self._build_apply_status(stored.c.message_id).cte("applied")
        return select(stored.c.message_id).add_cte(applied)

    @cached_property
    def inbound_insert(self):
        """One inbound message (columns bound as ``v_<column>``), linked to the message it answers (see
        :attr:`_answered_message_id`), whose team it takes, else the verifying connection's.
        """
        return self._event_insert(self._answered_message_id, returning=False)

    @cached_property
    def _answered_message_id(self):
        """The latest outbound message an inbound one answers: sent under the same account by the same
        signer or connection, to the inbound's sender, from the number (or Messaging Service) it arrived at.
        """
        return (select(m.c.id)
                .where(m.c.account_sid == param("v_account_sid", m.c.account_sid),
                       or_(m.c.signer == param("v_signer", m.c.signer),
                           m.c.conn_id == param("v_conn_id", m.c.conn_id)),
                       m.c.to_number == param("v_from_number", m.c.to_number),
                       or_(m.c.from_number == param("v_to_number", m.c.from_number),
                           m.c.messaging_service_sid == param("v_messaging_service_sid",
                                                           m.c.messaging_service_sid)),
                       m.c.created_at <= param("v_received_at", m.c.created_at))
                .order_by(m.c.created_at.desc(), m.c.id.desc()).limit(1).scalar_subquery())

    @cached_property
    def opt_out_upsert(self):
        """Insert the number's opt-out state, or overwrite it (the latest STOP/START wins)."""
        stmt = self._dialect_insert(o)
        return stmt.on_conflict_do_update(
            index_elements=["account_sid", "signer", "number"],
            set_={c: stmt.excluded[c] for c in ("opted_out", "keyword", "message_sid", "updated_at")})

    # -- rate limits ----------------------------------------------------------------------------

    @cached_property
    def clock_us(self):
        """The database's clock in microseconds since the epoch, read when the statement runs, and its
        resolution: PostgreSQL's ``clock_timestamp()`` (1 us), SQLite's ``julianday('now')`` (1 ms).
        """
        if self.dialect == "postgresql":
            return cast(func.floor(func.extract("epoch", func.clock_timestamp()) * 1_000_000), BigInteger), 1
        if self.dialect == "sqlite":
            ms = cast(func.round((func.julianday("now") - 2440587.5) * 86_400_000.0), BigInteger)
            return ms * 1000, 1000
        raise NotImplementedError(f"rate limits need the database's clock; {self.dialect} is not supported")

    @cached_property
    def pool_insert(self):
        return self._insert_ignoring(rp, ["pool"])

    @cached_property
    def pool_lock(self):
        """The pool's ring (size, oldest slot), locked: ``FOR UPDATE`` of its row serialises the pool's
        deciders (SQLite: ``BEGIN IMMEDIATE`` did).
        """
        stmt = select(rp.c.ring_size, rp.c.ring_next).where(rp.c.pool == param("p_pool", rp.c.pool))
        return stmt if self.dialect == "sqlite" else stmt.with_for_update()

    # The fused decision's lock statement leaves here, for its transaction, how many pool rows it locked.
    _RING_LOCKED: ColumnElement[str] = literal_column("'twilio_sms.ring_locked'")

    @cached_property
    def pool_lock_noted(self):
        """PostgreSQL: :attr:`pool_lock`, noting in the transaction's setting :attr:`_RING_LOCKED` whether
        it found (and so locked) the pool's row. A row committed after this statement's snapshot is not
        locked, yet the next statement's snapshot sees it: :attr:`decide_fused` decides only when this note
        says 1 (deciding on such a row unlocked granted two deciders the same slot).
        """
        locked = (select(literal_column("1").label("one")).where(rp.c.pool == param("p_pool", rp.c.pool))
                  .with_for_update().subquery("locked"))
        noted = func.set_config(self._RING_LOCKED, cast(func.count(), Text), true())
        return select(noted).select_from(locked)

    @cached_property
    def clock_and_edge(self):
        """The database's clock now, and what slot ``p_slot`` of the pool holds (NULL: never written)."""
        edge = select(rs.c.until_us).where(rs.c.pool == param("p_pool", rs.c.pool),
                                          rs.c.slot == param("p_slot", rs.c.slot)).scalar_subquery()
        return select(self.clock_us[0].label("now_us"), edge.label("edge_us"))

    def _typed(self, name: str, column):
        """A parameter in a SELECT list: PostgreSQL types a bare one as text, which an INSERT turns into a
        text column's type (raising "value too long" when it does not fit), so a non-text column's value is
        CAST to its type; never to a VARCHAR(n), which PostgreSQL would cut to n silently.
        """
        bound = param(name, column)
        if self.dialect != "postgresql" or isinstance(column.type, String):
            return bound
        return cast(bound, column.type)

    @cached_property
    def slots_take(self):
        """Slots ``p_first`` .. ``p_first + p_cost - 1`` (round the ring of ``p_size``) := ``p_until``,
        written whether or not they existed: one statement for a grant of any cost.
        """
        k = select(literal(0, Integer).label("i")).cte("k", recursive=True)
        k = k.union_all(select(k.c.i + 1).where(k.c.i + 1 < self._typed("p_cost", rs.c.slot)))
        rows = select(self._typed("p_pool", rs.c.pool),
                      (self._typed("p_first", rs.c.slot) + k.c.i) % self._typed("p_size", rs.c.slot),
                      self._typed("p_until", rs.c.until_us)).select_from(k).where(true())
        stmt = self._dialect_insert(rs).from_select(["pool", "slot", "until_us"], rows)
        return stmt.on_conflict_do_update(index_elements=["pool", "slot"],
                                          set_={"until_us": stmt.excluded.until_us})

    @cached_property
    def decision_durability(self):
        """PostgreSQL: ``synchronous_commit`` off for a rate decision's transaction alone, so the pool's lock
        is released without waiting for the disk (a flush per decision, under the lock, would cap a pool at
        one decision per flush). The grant is still durable before its request leaves: the sender's next
        write (the attempt marked on its claim) commits synchronously, and flushing its commit flushes all
        WAL before it, this decision's included. A grant that a server crash loses was never sent.
        """
        return text("SET LOCAL synchronous_commit TO OFF") if self.dialect == "postgresql" else None

    @cached_property
    def decide_fused(self):
        """PostgreSQL: a whole decision in one round trip. Run after :attr:`pool_lock_noted` in the same
        simple query (:meth:`decide_fused_sql`), which PostgreSQL runs as one transaction, each statement
        with a snapshot taken when it starts: this one sees every decision committed before the lock was
        granted, and the lock is held only inside the server. Reads the ring (no row: the pool is missing,
        or was committed too late to be locked, or its ring is not ``p_limit`` slots; the caller prepares
        it and decides again), the clock and the ``p_cost``-th oldest slot; when that slot is a window
        old, takes ``p_cost`` slots and advances the ring (data-modifying CTEs).
        """
        if self.dialect != "postgresql":
            return None
        now_us, resolution = self.clock_us
        pool, cost = self._typed("p_pool", rp.c.pool), self._typed("p_cost", rp.c.ring_size)
        ring = (select(rp.c.ring_size, rp.c.ring_next, now_us.label("now_us"))
                .where(rp.c.pool == pool, rp.c.ring_size == param("p_limit", rp.c.ring_size),
                       func.current_setting(self._RING_LOCKED) == literal_column("'1'")).cte("ring"))
        edge = select(rs.c.until_us).where(rs.c.pool == pool, rs.c.slot == (ring.c.ring_next + cost - 1)
                                           % ring.c.ring_size).scalar_subquery()
        decided = select(ring.c.ring_size, ring.c.ring_next, ring.c.now_us, edge.label("edge_us")).cte(
            "decided"
        )
        free = or_(decided.c.edge_us.is_(None),
                   decided.c.edge_us <= decided.c.now_us - self._typed("p_window", rs.c.until_us))
        ok = select(decided.c.ring_size, decided.c.ring_next, decided.c.now_us).where(free).cte("ok")
        units = func.generate_series(0, cost - 1).table_valued("k").render_derived(name="units")
        rows = (
            select(
                pool,
                (ok.c.ring_next + units.c.k) % ok.c.ring_size,
                ok.c.now_us + resolution + self._typed("p_hold", rs.c.until_us),
            )
            .select_from(ok)
            .join(units, true())
        )
        take = self._dialect_insert(rs).from_select(["pool", "slot", "until_us"], rows)
        take = take.on_conflict_do_update(index_elements=["pool", "slot"],
                                          set_={"until_us": take.excluded.until_us}).cte("take")
        advance = (update(rp).where(rp.c.pool == pool, rp.c.ring_size == ok.c.ring_size)
                   .values(ring_next=(ok.c.ring_next + cost) % ok.c.ring_size,
                           updated_at=func.timezone("UTC", func.clock_timestamp())).cte("advance"))
        granted = exists(select(ok.c.now_us))
        return (select(decided.c.ring_size, decided.c.ring_next, decided.c.now_us, decided.c.edge_us,
                       granted.label("granted")).add_cte(take, advance))

    def decide_fused_sql(self, dialect) -> tuple[str, dict[str, Any]]:
        """The PostgreSQL decision as one query string for ``dialect`` (psycopg2's named parameters):
        :attr:`decision_durability`; :attr:`pool_lock_noted`; :attr:`decide_fused`, and the values of the
        parameters the statements bind themselves (their constants). Its rows are the decision's.
        """
        compiled = [part.compile(dialect=dialect)
                    for part in (self.decision_durability, self.pool_lock_noted, self.decide_fused)]
        constants: dict[str, Any] = {}
        for part in compiled:
            if part.positional:
                raise ValueError("the fused rate decision needs a driver with named parameters")
            own = {name: bind.value for name, bind in part.binds.items() if not bind.required}
            if own.keys() & constants.keys():
                raise ValueError(f"the fused rate decision's statements share parameter names: {own.keys()}")
            constants.update(own)
        return "; ".join(part.string for part in compiled), constants

    @cached_property
    def pool_advance(self):
        return (update(rp).where(rp.c.pool == param("p_pool", rp.c.pool))
                .values(ring_next=param("p_next", rp.c.ring_next),
                        updated_at=param("p_now", rp.c.updated_at)))

    @cached_property
    def ring_resize(self):
        """Resize a pool's ring to ``p_limit`` slots, keeping its newest units in order (oldest first from
        slot 0; the slots before them free): three statements, run in order under the pool's lock.
        """
        size = param("p_size", rs.c.slot)
        age = (rs.c.slot - param("p_next", rs.c.slot) + size) % size
        ranked = (select(rs.c.pool, rs.c.until_us, func.row_number().over(order_by=age.desc()).label("r"))
                  .where(rs.c.pool == param("p_pool", rs.c.pool), rs.c.slot >= 0).subquery())
        park = insert(rs).from_select(["pool", "slot", "until_us"],
                                     select(ranked.c.pool, -ranked.c.r, ranked.c.until_us)
                                     .where(ranked.c.r <= param("p_limit", rs.c.slot)))
        drop = delete(rs).where(rs.c.pool == param("p_pool", rs.c.pool), rs.c.slot >= 0)
        place = (update(rs).where(rs.c.pool == param("p_pool", rs.c.pool), rs.c.slot < 0)
                 .values(slot=rs.c.slot + param("p_limit", rs.c.slot)))
        return park, drop, place

    @cached_property
    def pool_resized(self):
        return (update(rp).where(rp.c.pool == param("p_pool", rp.c.pool))
                .values(ring_size=param("p_limit", rp.c.ring_size), ring_next=0))

    @cached_property
    def pool_rewind(self):
        """The ring's oldest slot back to ``p_first`` if no grant came after the one ending at ``p_next``."""
        return (
            update(rp)
            .where(
                rp.c.pool == param("p_pool", rp.c.pool),
                rp.c.ring_size == param("p_size", rp.c.ring_size),
                rp.c.ring_next == param("p_next", rp.c.ring_next),
            )
            .values(ring_next=param("p_first", rp.c.ring_next))
        )

    @cached_property
    def slots_settle(self):
        """A grant's slots, if they still hold its reservation ``p_until``: lowered to the database's clock
        now (its request was answered, so it reached Twilio before now), or freed (it never left).
        """
        now_ceiling = self.clock_us[0] + self.clock_us[1]
        in_grant = or_(and_(rs.c.slot >= param("p_first", rs.c.slot), rs.c.slot < param("p_end", rs.c.slot)),
                       rs.c.slot < param("p_wrapped_end", rs.c.slot))
        lowered = case((rs.c.until_us < now_ceiling, rs.c.until_us), else_=now_ceiling)
        return (update(rs).where(rs.c.pool == param("p_pool", rs.c.pool), in_grant,
                                rs.c.until_us == param("p_until", rs.c.until_us))
                .values(until_us=case((bindparam("p_left", type_=Boolean()), lowered), else_=0)))


@functools.cache
def statements(dialect: str) -> Statements:
    """The statements for ``dialect`` (``"sqlite"``, ``"postgresql"``, ...), shared by every store."""
    return Statements(dialect)

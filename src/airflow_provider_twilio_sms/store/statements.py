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

from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    true,
    update,
)

from airflow_provider_twilio_sms.store import tables as t

m, e, o, rp, g = t.message, t.event, t.opt_out, t.rate_pool, t.rate_grant

# The columns of a sent message's row that its sender cannot know: what callbacks (status) and this
# attempt's own updates since the claim (lease, HTTP attempt) wrote. Every other column was given by the
# claim and never changes, or is set by record_sent itself.
SENT_RETURNING = ("status", "status_rank", "lease_expires_at", "http_attempted_at")

# What a new claim's row is given; every other column of ``twilio_sms_message`` starts NULL.
CLAIM_COLUMNS = (
    "scope", "idempotency_key", "idempotency_key_sha256", "account_sid", "conn_id", "team", "pool", "to_number", "from_number",
    "messaging_service_sid", "body", "body_sha256", "num_media", "send_state", "attempt_id", "lease_expires_at",
    "status_rank", "dag_id", "task_id", "run_id", "map_index", "created_at", "updated_at", "http_attempted_at",
)


def _p(name: str, column):
    """A bind parameter typed like ``column`` (so timestamps go through ``UtcDateTime``)."""
    return bindparam(name, type_=column.type)


class Statements:
    """One dialect's write statements (see the module docstring). Get one with :func:`statements`."""

    def __init__(self, dialect: str):
        self.dialect = dialect
        # INSERT ... ON CONFLICT DO NOTHING, with RETURNING: one statement both inserts and says whether.
        self.upsert = dialect in ("postgresql", "sqlite")

    def _dialect_insert(self, table):
        """The dialect's ``INSERT`` with ``ON CONFLICT`` (PostgreSQL, SQLite); else None."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            return None
        return dialect_insert(table)

    def _insert_ignoring(self, table, conflict_cols: list[str]):
        """``INSERT`` that skips a row whose unique ``conflict_cols`` exist (plain ``INSERT`` elsewhere:
        the caller then catches the IntegrityError in a savepoint)."""
        stmt = self._dialect_insert(table)
        return insert(table) if stmt is None else stmt.on_conflict_do_nothing(index_elements=conflict_cols)

    # -- send claims ----------------------------------------------------------------------------

    @cached_property
    def opted_out(self):
        return select(o.c.opted_out).where(o.c.account_sid == _p("p_account_sid", o.c.account_sid),
                                           o.c.number == _p("p_number", o.c.number), o.c.opted_out.is_(True))

    @cached_property
    def claim_insert(self):
        """The new claim's row, every column given at execution (databases without ``ON CONFLICT``)."""
        return insert(m)

    def claim_insert_returning(self, refuse_opted_out: bool):
        """The new claim's row (:data:`CLAIM_COLUMNS` bound as ``v_<column>``) unless the key is taken,
        or, with ``refuse_opted_out``, the recipient opted out of this account: one statement, RETURNING
        the new id (PostgreSQL, SQLite). No row back: the caller looks at which of the two it was."""
        return self._claim_refusing if refuse_opted_out else self._claim_plain

    def _build_claim_insert(self, refuse_opted_out: bool):
        def value(name):
            param = _p(f"v_{name}", m.c[name])
            # PostgreSQL types a bare parameter in a SELECT list as text, which the INSERT turns into a text
            # column's type (raising "value too long" when it does not fit); any other column needs its own
            # type. Never CAST to a VARCHAR(n): PostgreSQL's explicit cast cuts the value to n silently.
            if self.dialect != "postgresql" or isinstance(m.c[name].type, String):
                return param
            return cast(param, m.c[name].type)

        row = select(*[value(name) for name in CLAIM_COLUMNS])
        if refuse_opted_out:
            row = row.where(~exists().where(o.c.account_sid == _p("v_account_sid", o.c.account_sid),
                                            o.c.number == _p("v_to_number", o.c.number),
                                            o.c.opted_out.is_(True)))
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
        return select(m).where(m.c.scope == _p("p_scope", m.c.scope),
                               m.c.idempotency_key_sha256 == _p("p_key_sha256", m.c.idempotency_key_sha256))

    @cached_property
    def message_by_id(self):
        return select(m).where(m.c.id == _p("p_id", m.c.id))

    def take_over(self, attempting: bool):
        """Compare-and-set: the claim moves to this attempt only if nobody else moved it meanwhile."""
        return self._take_over_attempting if attempting else self._take_over

    def _build_take_over(self, attempting: bool):
        values = {"attempt_id": _p("p_attempt", m.c.attempt_id),
                  "lease_expires_at": _p("p_lease", m.c.lease_expires_at), "send_state": "claimed",
                  "updated_at": _p("p_now", m.c.updated_at)}
        if attempting:
            values["http_attempted_at"] = func.coalesce(m.c.http_attempted_at, _p("p_now", m.c.updated_at))
        return (update(m).where(m.c.id == _p("p_id", m.c.id),
                                m.c.attempt_id == _p("p_old_attempt", m.c.attempt_id),
                                m.c.send_state == _p("p_old_state", m.c.send_state))
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
        return update(m).where(m.c.id == _p("p_id", m.c.id),
                               m.c.attempt_id == _p("p_attempt", m.c.attempt_id))

    @cached_property
    def record_sent(self):
        """The send's result onto the owned row; a status an early callback advanced is kept. RETURNING
        only :data:`SENT_RETURNING` (where supported): the caller knows every other column."""
        rank = _p("p_rank", m.c.status_rank)
        keep = m.c.status_rank >= rank  # SET expressions all see the row as it was
        now = _p("p_now", m.c.updated_at)
        owned = and_(m.c.id == _p("p_id", m.c.id), m.c.attempt_id == _p("p_attempt", m.c.attempt_id))
        stmt = (update(m).where(owned)
                .values(send_state="sent", sid=_p("p_sid", m.c.sid),
                        status=case((keep, m.c.status), else_=_p("p_status", m.c.status)),
                        status_rank=case((keep, m.c.status_rank), else_=rank),
                        status_updated_at=now, num_segments=_p("p_num_segments", m.c.num_segments),
                        encoding=_p("p_encoding", m.c.encoding),
                        error_code=_p("p_error_code", m.c.error_code),
                        error_message=_p("p_error_message", m.c.error_message),
                        from_number=_p("p_from_number", m.c.from_number), sent_at=now, updated_at=now))
        return stmt.returning(*(m.c[name] for name in SENT_RETURNING)) if self.upsert else stmt

    # -- webhook events -------------------------------------------------------------------------

    @cached_property
    def _callback_message_id(self):
        """The outbound row a status callback is about: the one with its SID, else (the send's response was
        lost, so no SID was recorded) the one of the idempotency key (its SHA-256) in the callback URL, if it
        has no SID."""
        by_sid = select(m.c.id).where(m.c.sid == _p("p_sid", m.c.sid)).scalar_subquery()
        by_key = (select(m.c.id).where(m.c.account_sid == _p("p_account_sid", m.c.account_sid),
                                       m.c.idempotency_key_sha256 == _p("p_key_sha256",
                                                                        m.c.idempotency_key_sha256),
                                       m.c.scope == _p("p_scope", m.c.scope), m.c.sid.is_(None))
                  .scalar_subquery())
        return func.coalesce(by_sid, by_key)

    @cached_property
    def callback_message_id(self):
        return select(self._callback_message_id)

    @cached_property
    def status_event_insert(self):
        """One status event (columns bound as ``v_<column>``), deduplicated on (account, dedupe key), linked
        to its outbound row; RETURNING that row's id (NULL: not ours) where supported."""
        values = {c.key: _p(f"v_{c.key}", c) for c in e.c if c.key not in ("id", "message_id")}
        stmt = self._insert_ignoring(e, ["account_sid", "dedupe_key"]).values(
            message_id=self._callback_message_id, **values)
        return stmt.returning(e.c.message_id) if self.upsert else stmt

    def _build_apply_status(self, message_id):
        """Onto the callback's outbound row: its SID when it had none (linked by idempotency key), and the
        status only when it ranks higher (forward only; SET expressions all see the row as it was)."""
        rank = _p("p_rank", m.c.status_rank)
        now = _p("p_now", m.c.updated_at)
        advances = m.c.status_rank < rank
        return (update(m).where(m.c.id == message_id, or_(advances, m.c.sid.is_(None)))
                .values(sid=func.coalesce(m.c.sid, _p("p_sid", m.c.sid)),
                        status=case((advances, _p("p_status", m.c.status)), else_=m.c.status),
                        status_rank=case((advances, rank), else_=m.c.status_rank),
                        status_updated_at=case((advances, now), else_=m.c.status_updated_at),
                        error_code=case((advances, func.coalesce(_p("p_error_code", m.c.error_code),
                                                                 m.c.error_code)), else_=m.c.error_code),
                        updated_at=now))

    @cached_property
    def apply_status(self):
        return self._build_apply_status(_p("p_id", m.c.id))

    @cached_property
    def status_event_fused(self):
        """PostgreSQL: :attr:`status_event_insert` and :attr:`apply_status` in one statement (data-modifying
        CTEs), so a callback is one round trip and atomic on its own. A row back: stored; none: duplicate."""
        if self.dialect != "postgresql":
            return None
        stored = self.status_event_insert.cte("stored")
        applied = self._build_apply_status(stored.c.message_id).cte("applied")
        return select(stored.c.message_id).add_cte(applied)

    @cached_property
    def inbound_insert(self):
        return self._insert_ignoring(e, ["account_sid", "dedupe_key"])

    @cached_property
    def opt_out_upsert(self):
        """Insert the number's opt-out state, or overwrite it (the latest STOP/START wins)."""
        stmt = self._dialect_insert(o)
        if stmt is None:
            return None
        return stmt.on_conflict_do_update(
            index_elements=["account_sid", "number"],
            set_={c: stmt.excluded[c] for c in ("opted_out", "keyword", "message_sid", "updated_at")})

    @cached_property
    def opt_out_insert(self):
        return self._insert_ignoring(o, ["account_sid", "number"])

    @cached_property
    def opt_out_update(self):
        return update(o).where(o.c.account_sid == _p("p_account_sid", o.c.account_sid),
                               o.c.number == _p("p_number", o.c.number))

    # -- rate limits ----------------------------------------------------------------------------

    @cached_property
    def pool_insert(self):
        return self._insert_ignoring(rp, ["pool"])

    @cached_property
    def pool_lock(self):
        """Serialises the pool's deciders: ``FOR UPDATE`` of its row (SQLite: ``BEGIN IMMEDIATE`` did)."""
        stmt = select(rp.c.pool).where(rp.c.pool == _p("p_pool", rp.c.pool))
        return stmt if self.dialect == "sqlite" else stmt.with_for_update()

    @cached_property
    def grant_held(self):
        return select(g.c.granted_at).where(g.c.pool == _p("p_pool", g.c.pool),
                                            g.c.grant_key == _p("p_key", g.c.grant_key))

    @cached_property
    def _in_window(self):
        return and_(g.c.pool == _p("p_pool", g.c.pool), g.c.granted_at > _p("p_window_start", g.c.granted_at))

    @cached_property
    def window_used(self):
        return select(func.coalesce(func.sum(g.c.cost), 0)).where(self._in_window)

    @cached_property
    def window_grants(self):
        return select(g.c.granted_at, g.c.cost).where(self._in_window).order_by(g.c.granted_at)

    @cached_property
    def grant_insert(self):
        return insert(g)

    @cached_property
    def grant_renew(self):
        return (update(g).where(g.c.pool == _p("p_pool", g.c.pool),
                                g.c.grant_key == _p("p_key", g.c.grant_key))
                .values(granted_at=_p("p_now", g.c.granted_at), cost=_p("p_cost", g.c.cost)))

    @cached_property
    def pool_touch(self):
        return (update(rp).where(rp.c.pool == _p("p_pool", rp.c.pool))
                .values(updated_at=_p("p_now", rp.c.updated_at)))

    @cached_property
    def grants_forget(self):
        return delete(g).where(g.c.pool == _p("p_pool", g.c.pool),
                               g.c.granted_at <= _p("p_horizon", g.c.granted_at))


@functools.cache
def statements(dialect: str) -> Statements:
    """The statements for ``dialect`` (``"sqlite"``, ``"postgresql"``, ...), shared by every store."""
    return Statements(dialect)

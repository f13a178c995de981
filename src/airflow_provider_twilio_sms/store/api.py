r"""The store API: every reader and writer of the ``twilio_sms_*`` tables goes through :class:`SmsStore`.

Correct under concurrent writers on SQLite and PostgreSQL alike: every decision that must be made once
is made by a unique constraint or a compare-and-set ``UPDATE ... WHERE``, never by reading first and
writing after. Transactions are short and never span a network call to Twilio.

Send claims (the idempotency state machine, one row per scope and key)::

    claim() --insert--> claimed --mark_attempt()--> (HTTP to Twilio) --record_sent()-------> sent
                           |                                         \-record_failed()----> failed
                           |                                          \-record_unknown()---> unknown
                           \-- lease expired, or unknown: the next claim() takes it over and must
                               reconcile with Twilio first when an HTTP attempt may have been made.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select

from airflow_provider_twilio_sms.errors import ValueTooLongError
from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.engine import (
    autocommit,
    autocommits,
    get_engine,
    write_options,
    writer_lock,
)
from airflow_provider_twilio_sms.store.inbound import (
    CURSOR_MARGIN,
    channel_reads,
    cursor_statement,
    inbound_page_statement,
)
from airflow_provider_twilio_sms.store.retention import DEFAULT_BATCH_SIZE, Erasure, Retention
from airflow_provider_twilio_sms.store.statements import CLAIM_COLUMNS, statements
from airflow_provider_twilio_sms.store.status import status_rank

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from airflow_provider_twilio_sms.store.inbound import InboundChannel

# Inbound keywords that opt a number out or back in, with or without Twilio's OptOutType.
STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "END", "QUIT", "REVOKE", "OPTOUT", "CANCEL"})
START_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})


def opt_out_keyword(body: str | None) -> str | None:
    """"STOP" or "START" when the whole body is one of Twilio's opt-out or opt-in keywords."""
    words = (body or "").split()
    if len(words) != 1:
        return None
    word = words[0].strip(".!").upper()
    if word in STOP_KEYWORDS:
        return "STOP"
    if word in START_KEYWORDS:
        return "START"
    return None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def body_digest(body: str | None) -> str:
    """SHA-256 of a message body: how reconciliation matches a message without reading bodies."""
    return hashlib.sha256((body or "").encode("utf-8")).hexdigest()


def _string_limits(table) -> tuple[tuple[str, int], ...]:
    return tuple((c.key, length) for c in table.c if (length := getattr(c.type, "length", None)))


_MESSAGE_LIMITS = dict(_string_limits(t.message))
_DISPLAY_KEY_LENGTH = _MESSAGE_LIMITS["idempotency_key"]
_CLAIM_LIMITS = tuple((name, limit) for name, limit in _MESSAGE_LIMITS.items() if name in CLAIM_COLUMNS)
_POOL_LIMIT = dict(_string_limits(t.rate_pool))["pool"]


def key_digest(key: str) -> str:
    """SHA-256 (hex) of an idempotency key, or of a rate grant key: what the store finds and keeps them
    unique by, whatever their length.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def displayed_key(key: str) -> str | None:
    """The idempotency key as stored for display: the key itself when it fits its column, else None
    (never a cut-down key that could be mistaken for another).
    """
    return key if len(key) <= _DISPLAY_KEY_LENGTH else None


def check_fits(values: Mapping[str, Any], limits: Iterable[tuple[str, int]]) -> None:
    """Raise :class:`ValueTooLongError` naming the first value longer than its column keeps.

    Every database then behaves alike: PostgreSQL would refuse the value ("value too long"), SQLite would
    keep it whole; here it is refused before anything is written, in words that say which value it was.
    """
    for name, limit in limits:
        value = values.get(name)
        if value is not None and len(value) > limit:
            raise ValueTooLongError(name, len(value), limit)


def make_scope(account_sid: str, team: str | None = None) -> str:
    """Idempotency keys are unique per Twilio account, and per team when multi-team is on."""
    return f"{account_sid}|{team or ''}"


def _team_filter(column, teams: Iterable[str | None]):
    """Rows of the given teams; ``None`` among them means rows with no team. No teams: no rows."""
    from sqlalchemy import false

    teams = list(teams)
    named = [x for x in teams if x]
    either = [column.in_(named)] if named else []
    if None in teams:
        either.append(column.is_(None))
    return or_(*either) if either else false()


def _new_claim_row(values: Mapping[str, Any], new_id: int) -> dict[str, Any]:
    """A new claim's row as the database would return it: timestamps in UTC, every column not given NULL."""
    row = dict.fromkeys(t.message.c.keys())
    row.update((k, v.astimezone(timezone.utc) if isinstance(v, datetime) else v) for k, v in values.items())
    row["id"] = new_id
    return row


class LeaseLostError(RuntimeError):
    """Another attempt took over this send's claim (ours had expired); this attempt must stop."""


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`SmsStore.claim`.

    ``outcome`` is one of:
      - ``new``: the key was free; this attempt owns it and may send.
      - ``resume``: taken over from an attempt that never made an HTTP request; may send.
      - ``reconcile``: taken over from an attempt that may have reached Twilio (it died or got no
        answer); look the message up at Twilio before sending, never re-POST blindly.
      - ``sent`` / ``failed``: done before; ``row`` holds the recorded result. Nothing to send.
      - ``held``: a live attempt elsewhere holds the claim until ``row["lease_expires_at"]``.
      - ``opted_out``: the recipient replied STOP (only with ``refuse_opted_out``); nothing claimed.
    """

    outcome: str
    row: dict[str, Any]
    attempt_id: str

    @property
    def owned(self) -> bool:
        return self.outcome in ("new", "resume", "reconcile")

    @property
    def message_id(self) -> int:
        return self.row["id"]


@dataclass(frozen=True)
class RateGrant:
    """Units of a pool's rate limit taken for one request to Twilio (see :meth:`SmsStore.acquire_rate_slot`).

    Its slots hold ``until_us``, the latest moment (database clock, microseconds since the epoch) the
    request may reach Twilio and still be counted right, until :meth:`SmsStore.settle_rate_grant` lowers
    that to when Twilio answered, or frees the slots when the request never left.
    """

    pool: str
    first_slot: int
    cost: int
    ring_size: int
    until_us: int
    granted_at: datetime  # the database's clock when the units were taken


@dataclass(frozen=True)
class RateDecision:
    """What :meth:`SmsStore.acquire_rate_slot` decided: granted or not, and when a slot frees up."""

    granted: bool
    decided_at: datetime  # the database's clock when the pool decided
    grant: RateGrant | None  # when granted
    next_free_at: datetime | None  # when not granted: the earliest moment (database clock) a slot may free up
    wait_seconds: float = 0.0  # when not granted: decision to ``next_free_at``, for any worker's clock


def _from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)


# How long after its grant a request may still leave for Twilio: a request not sent by then takes a new
# grant (``SmsSender``), so a slot holding this reservation never undercounts a request that was sent.
DEFAULT_RATE_HOLD_SECONDS = 5.0


class SmsStore:
    """All reads and writes of the provider's tables. Thread-safe; cheap to construct per URL."""

    def __init__(self, url_or_engine: str | Engine):
        self.engine: Engine = get_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.dialect = self.engine.dialect.name
        self._sql = statements(self.dialect)
        self._writer = self.engine.execution_options(**write_options())
        self._writer_lock = writer_lock(self.engine)
        self._autocommit_driver = autocommits(self.engine)
        # PostgreSQL with psycopg2 decides on rate limits in one round trip (statements in one query).
        self._decide_sql = (self._sql.decide_fused_sql(self.engine.dialect) if self._autocommit_driver
                            else None)

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: ``BEGIN IMMEDIATE``, queued behind this process's writers)."""
        with self._writer_lock, self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _write_one(self) -> Iterator[Connection]:
        """A connection for ONE write statement, which commits on its own (atomic as any statement).

        psycopg2: its autocommit flag on the pooled connection (:func:`.engine.autocommit`). SQLite: a
        write transaction.
        """
        if not self._autocommit_driver:
            with self._write() as conn:
                yield conn
            return
        with self.engine.connect() as conn, autocommit(conn.connection.dbapi_connection, conn.invalidate):
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def _insert_ignore(self, conn: Connection, stmt, values: dict) -> bool:
        """Run ``stmt``, an insert from :mod:`.statements` that skips rows violating its unique key;
        True when a row was inserted. Without ``ON CONFLICT`` the violation is caught in a savepoint.
        """
        return conn.execute(stmt, values).rowcount == 1

    @staticmethod
    def _row(result_row) -> dict[str, Any] | None:
        return dict(result_row._mapping) if result_row is not None else None

    def check_ready(self) -> None:
        """Raise unless the store answers (for health checks)."""
        with self._read() as conn:
            conn.execute(select(func.count()).select_from(t.rate_pool))

    # -- retention and erasure (store/retention.py) ----------------------------------------------

    def purge(self, older_than: timedelta, *, dry_run: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
              now: datetime | None = None) -> dict[str, int]:
        """Delete what is older than ``older_than``: webhook events, finished messages, reply waits and idle
        rate-limit pools, ``batch_size`` rows per transaction; returns the rows deleted per table (a dry
        run deletes nothing and returns what it would delete). See :mod:`.retention` for what stays.
        """
        return Retention(self, batch_size).purge(older_than, dry_run=dry_run, now=now)

    def forget_number(self, number: str, *, dry_run: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                      now: datetime | None = None) -> Erasure:
        """Erase what the store holds about one phone number (E.164), keeping only an opt-out so that a
        STOP stays honoured; see :meth:`.retention.Retention.forget_number`.
        """
        return Retention(self, batch_size).forget_number(number, dry_run=dry_run, now=now)

    # -- send claims (idempotency) --------------------------------------------------------------

    def claim(
        self,
        *,
        scope: str,
        idempotency_key: str,
        account_sid: str,
        conn_id: str,
        to_number: str,
        body: str | None,
        signer: str | None = None,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        num_media: int = 0,
        lease_seconds: float = 120,
        attempt_id: str | None = None,
        team: str | None = None,
        pool: str | None = None,
        dag_id: str | None = None,
        task_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
        attempting: bool = False,
        refuse_opted_out: bool = False,
        store_body: bool = False,
        now: datetime | None = None,
    ) -> Claim:
        """Claim ``idempotency_key`` in ``scope`` for one send attempt. See :class:`Claim`.

        ``attempting=True`` records in the same statement that the HTTP request is about to leave (what
        :meth:`mark_attempt` does), for callers with nothing to decide between claiming and sending.
        ``refuse_opted_out=True`` returns outcome ``opted_out`` (claiming nothing) when ``to_number``
        replied STOP to this account, verified with this ``signer`` (the sending connection's
        :attr:`~airflow_provider_twilio_sms.connection.TwilioConnectionSettings.signer`), checked in the same
        transaction. The body's SHA-256 is always kept (reconciliation matches by it); the text itself only
        with ``store_body=True`` (``[twilio_sms] store_outbound_bodies``).
        """
        attempt_id = attempt_id or uuid.uuid4().hex
        now = now or utcnow()
        lease = now + timedelta(seconds=lease_seconds)
        key_sha256 = key_digest(idempotency_key)
        values = {
            "scope": scope, "idempotency_key": displayed_key(idempotency_key),
            "idempotency_key_sha256": key_sha256, "account_sid": account_sid,
            "conn_id": conn_id, "signer": signer, "team": team, "pool": pool, "to_number": to_number,
            "from_number": from_number, "messaging_service_sid": messaging_service_sid,
            "body": body if store_body else None, "body_sha256": body_digest(body), "num_media": num_media,
            "send_state": "claimed",
            "attempt_id": attempt_id, "lease_expires_at": lease, "status_rank": 0,
            "dag_id": dag_id, "task_id": task_id, "run_id": run_id, "map_index": map_index,
            "created_at": now, "updated_at": now, "http_attempted_at": now if attempting else None,
        }
        check_fits(values, _CLAIM_LIMITS)  # before anything is written: nothing claimed, nothing sent
        sql = self._sql
        by_key = {"p_scope": scope, "p_key_sha256": key_sha256}
        with self._write_one() as conn:  # a new key (the usual case): one statement; else the full path below
            inserted = self._claim_insert(conn, values, refuse_opted_out)
        if inserted is not None:
            return Claim("new", inserted, attempt_id)
        for _ in range(20):
            with self._write() as conn:
                inserted = self._claim_insert(conn, values, refuse_opted_out)
                if inserted is not None:
                    return Claim("new", inserted, attempt_id)
                if refuse_opted_out and conn.execute(sql.opted_out, {
                        "p_account_sid": account_sid, "p_signer": signer or "",
                        "p_number": to_number}).first():
                    return Claim("opted_out", {}, attempt_id)
                row = self._row(conn.execute(sql.message_by_key, by_key).first())
                if row is None:  # deleted between the two statements; try again
                    continue
                state = row["send_state"]
                if state in ("sent", "failed"):
                    return Claim(state, row, attempt_id)
                live = state == "claimed" and row["lease_expires_at"] > now
                if live and row["attempt_id"] != attempt_id:
                    return Claim("held", row, attempt_id)
                # Take the claim over, but only if nobody else did in the meantime (compare-and-set).
                taken = conn.execute(sql.take_over(attempting), {
                    "p_id": row["id"], "p_old_attempt": row["attempt_id"], "p_old_state": state,
                    "p_attempt": attempt_id, "p_lease": lease, "p_now": now}).rowcount
                if taken != 1:
                    continue
                outcome = "reconcile" if row["http_attempted_at"] is not None else "resume"
                row.update(attempt_id=attempt_id, lease_expires_at=lease,
                           http_attempted_at=row["http_attempted_at"] or (now if attempting else None))
                return Claim(outcome, row, attempt_id)
        raise RuntimeError(f"could not settle the claim on idempotency key (SHA-256 {key_sha256[:12]}...) in "
                           f"scope {scope!r}: too much contention")

    def _claim_insert(self, conn: Connection, values: dict, refuse_opted_out: bool) -> dict[str, Any] | None:
        """The new claim's row, or None when the key is taken (or, with ``refuse_opted_out``, maybe the
        recipient opted out). PostgreSQL and SQLite decide both in one INSERT ... SELECT ... WHERE NOT
        EXISTS (opt-out) ON CONFLICT DO NOTHING RETURNING id; the row is then what was inserted.
        """
        new_id = conn.execute(self._sql.claim_insert_returning(refuse_opted_out),
                              {f"v_{name}": values[name] for name in CLAIM_COLUMNS}).scalar()
        return None if new_id is None else _new_claim_row(values, new_id)

    def _update_owned(self, conn: Connection, claim: Claim, **values) -> None:
        values["updated_at"] = values.get("updated_at") or utcnow()
        done = conn.execute(self._sql.update_owned,
                            {"p_id": claim.message_id, "p_attempt": claim.attempt_id, **values}).rowcount
        if done != 1:
            raise LeaseLostError(
                f"the claim on message row {claim.message_id} was taken over by another attempt "
                "(this attempt's lease expired); stopping so that only one attempt sends"
            )

    def extend_lease(self, claim: Claim, lease_seconds: float) -> None:
        with self._write_one() as conn:
            self._update_owned(conn, claim, lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))

    def mark_attempt(self, claim: Claim, lease_seconds: float | None = None) -> None:
        """Record, before the HTTP request leaves, that Twilio may be about to create the message."""
        now = utcnow()
        values: dict[str, Any] = {"http_attempted_at": claim.row.get("http_attempted_at") or now}
        if lease_seconds is not None:
            values["lease_expires_at"] = now + timedelta(seconds=lease_seconds)
        with self._write_one() as conn:
            self._update_owned(conn, claim, **values)

    def clear_attempt(self, claim: Claim) -> None:
        """Twilio refused the request before creating anything (e.g. 429): no reconcile needed later."""
        with self._write_one() as conn:
            self._update_owned(conn, claim, http_attempted_at=None)

    def record_sent(self, claim: Claim, result: Mapping[str, Any]) -> dict[str, Any]:
        """Record Twilio's answer (``sid``, ``status``, segments...) and return the stored row.

        A status already advanced by an early callback is kept: the status only moves forward.
        """
        sql = self._sql
        now = utcnow()
        recorded = {
            "send_state": "sent",
            "sid": result["sid"],
            "status_updated_at": now,
            "num_segments": result.get("num_segments"),
            "encoding": result.get("encoding"),
            "error_code": result.get("error_code"),
            "error_message": result.get("error_message"),
            "from_number": result.get("from") or claim.row.get("from_number"),
            "sent_at": now,
            "updated_at": now,
        }
        params = {f"p_{k}": recorded[k]
                  for k in ("sid", "num_segments", "encoding", "error_code", "error_message", "from_number")}
        params.update(p_id=claim.message_id, p_attempt=claim.attempt_id, p_status=result.get("status"),
                      p_rank=status_rank(result.get("status")), p_now=now)
        # The claim's row with what this statement set, and what it RETURNs (SENT_RETURNING): the row as
        # stored, without reading and converting all of its columns back.
        with self._write_one() as conn:
            returned_row = conn.execute(sql.record_sent, params).first()
        row = {**claim.row, **recorded, **returned_row._mapping} if returned_row is not None else None
        if row is None:
            raise LeaseLostError(
                f"the claim on message row {claim.message_id} was taken over by another attempt "
                "(this attempt's lease expired); its result was not recorded by this attempt")
        return row

    def record_failed(self, claim: Claim, error_code: int | None, error_message: str) -> None:
        """Twilio refused the message for good; a later attempt with the same key returns this failure."""
        with self._write_one() as conn:
            self._update_owned(conn, claim, send_state="failed", status="failed",
                               status_rank=status_rank("failed"), error_code=error_code,
                               error_message=error_message)

    def record_unknown(self, claim: Claim) -> None:
        """No answer after the request left: the next attempt must reconcile before sending."""
        with self._write_one() as conn:
            self._update_owned(conn, claim, send_state="unknown", lease_expires_at=utcnow())

    def release(self, claim: Claim) -> None:
        """Give up the claim without sending (e.g. to defer); the next attempt resumes it."""
        with self._write_one() as conn:
            self._update_owned(conn, claim, lease_expires_at=utcnow())

    def withdraw(self, claim: Claim) -> None:
        """Give up the claim of a send that nothing of reached Twilio (turned away by the rate limit): its
        row goes (a later attempt claims the key anew), so no page counts it as pending. A row on which an
        HTTP attempt is recorded stays, released: the next attempt must reconcile.
        """
        with self._write_one() as conn:
            if conn.execute(
                self._sql.withdraw, {"p_id": claim.message_id, "p_attempt": claim.attempt_id}
            ).rowcount:
                return
            self._update_owned(conn, claim, lease_expires_at=utcnow())

    # -- rate limits ----------------------------------------------------------------------------

    def acquire_rate_slot(self, pool: str, limit: int, window_seconds: float, *, cost: int = 1,
                          hold_seconds: float = DEFAULT_RATE_HOLD_SECONDS) -> RateDecision:
        """Take ``cost`` units of ``limit`` per sliding ``window_seconds`` for one request about to leave,
        or say when they may be free. Exact across processes and machines, on the database's clock.

        The pool keeps the last ``limit`` units it granted in a ring of slots; each slot holds the latest
        moment its request can have reached Twilio (at first the grant plus ``hold_seconds``, the longest
        the caller may take to send it; :meth:`settle_rate_grant` then lowers it to when Twilio answered).
        The units may be taken when the ``cost``-th oldest of those moments is at least a window ago:
        then at most ``limit - cost`` units of requests that can reach Twilio within the window are out,
        and this request reaches Twilio after now. One slot is read and ``cost`` written, whatever the
        window holds; the pool's lock row serialises deciders (``FOR UPDATE`` on PostgreSQL, ``BEGIN
        IMMEDIATE`` on SQLite). A changed limit resizes the ring, keeping its newest units.
        """
        if not 1 <= cost <= limit:
            raise ValueError(f"one send costs {cost}, more than the whole limit {limit} of pool {pool!r}"
                             if cost > limit else f"cost must be at least 1, not {cost!r}")
        check_fits({"pool": pool}, (("pool", _POOL_LIMIT),))
        values = {
            "p_pool": pool,
            "p_limit": limit,
            "p_cost": cost,
            "p_window": round(window_seconds * 1_000_000),
            "p_hold": round(hold_seconds * 1_000_000),
        }
        for _ in range(3):
            decision = self._decide_fused(values) if self._decide_sql is not None else self._decide(values)
            if decision is not None:
                return decision
            self._prepare_ring(pool, limit)  # a new pool, or a changed limit: then decide again
        raise RuntimeError(f"the ring of rate-limit pool {pool!r} keeps changing size: is it used with "
                           "different limits at once?")

    def _decision(self, values: dict, ring_size: int, oldest: int, now_us: int, edge_us: int | None,
                  granted: bool) -> RateDecision:
        now = _from_us(now_us)
        if granted:
            return RateDecision(True, now, RateGrant(values["p_pool"], oldest, values["p_cost"], ring_size,
                                                     now_us + self._sql.clock_us[1] + values["p_hold"], now),
                                None)
        if edge_us is None:  # an edge slot never taken is free: the decision cannot be a refusal
            raise ValueError("a refused rate decision needs the edge slot's reservation")
        # A request still out (its reservation ahead of now) may be answered any moment: its slot frees a
        # window after that at the earliest.
        free_us = min(edge_us, now_us) + values["p_window"]
        return RateDecision(False, now, None, _from_us(free_us), (free_us - now_us) / 1_000_000)

    def _decide_fused(self, values: dict) -> RateDecision | None:
        """PostgreSQL: lock and decide in one round trip (:meth:`.statements.Statements.decide_fused_sql`)."""
        if self._decide_sql is None:
            raise RuntimeError("the fused rate decision is for PostgreSQL with psycopg2")
        with self._write_one() as conn:
            sql, constants = self._decide_sql
            row = conn.exec_driver_sql(sql, {**constants, **values}).first()
        if row is None:
            return None
        return self._decision(values, row.ring_size, row.ring_next, row.now_us, row.edge_us, row.granted)

    def _decide(self, values: dict) -> RateDecision | None:
        """Lock, read the clock and the edge slot, and take the slots: statement by statement in one
        write transaction. Each statement sees what committed before it started, so the edge slot is read
        after the lock is held: never a decision on a ring another decider has just changed.
        """
        sql = self._sql
        with self._write() as conn:
            if sql.decision_durability is not None:
                conn.execute(sql.decision_durability)
            ring = conn.execute(sql.pool_lock, values).first()
            if ring is None or ring.ring_size != values["p_limit"]:
                return None
            size, oldest = ring
            now_us, edge_us = conn.execute(
                sql.clock_and_edge,
                {"p_pool": values["p_pool"], "p_slot": (oldest + values["p_cost"] - 1) % size},
            ).one()
            granted = edge_us is None or edge_us <= now_us - values["p_window"]
            decision = self._decision(values, size, oldest, now_us, edge_us, granted)
            grant = decision.grant  # set exactly when granted
            if grant is not None:
                conn.execute(sql.slots_take, {**values, "p_first": oldest, "p_size": size,
                                              "p_until": grant.until_us})
                conn.execute(
                    sql.pool_advance,
                    {
                        "p_pool": values["p_pool"],
                        "p_now": grant.granted_at,
                        "p_next": (oldest + values["p_cost"]) % size,
                    },
                )
            return decision

    def _prepare_ring(self, pool: str, limit: int) -> None:
        """Create the pool's lock row, or resize its ring to ``limit`` slots keeping its newest units."""
        sql = self._sql
        with self._write() as conn:
            ring = conn.execute(sql.pool_lock, {"p_pool": pool}).first()
            if ring is None:
                self._insert_ignore(conn, sql.pool_insert, {"pool": pool, "updated_at": utcnow()})
                ring = conn.execute(sql.pool_lock, {"p_pool": pool}).one()
            if ring.ring_size != limit:
                self._resize_ring(conn, pool, ring.ring_size, ring.ring_next, limit)

    def _resize_ring(self, conn: Connection, pool: str, size: int, oldest: int, limit: int) -> None:
        values = {"p_pool": pool, "p_next": oldest, "p_size": max(size, 1), "p_limit": limit}
        if size:
            for statement in self._sql.ring_resize:
                conn.execute(statement, values)
        conn.execute(self._sql.pool_resized, values)

    def settle_rate_grant(self, grant: RateGrant, *, reached_twilio: bool) -> None:
        """After the request: it reached Twilio before now (an answer came, or the request left and got
        none), so its slots count it until now at most; or it never left (``reached_twilio=False``), and
        its slots are free again (and, when no grant came after it, the oldest again, as before it was
        taken). Slots a later grant has taken already (the ring came round) are left alone.
        """
        end = grant.first_slot + grant.cost
        values = {"p_pool": grant.pool, "p_first": grant.first_slot, "p_end": min(end, grant.ring_size),
                  "p_wrapped_end": max(0, end - grant.ring_size), "p_until": grant.until_us,
                  "p_left": reached_twilio, "p_size": grant.ring_size, "p_next": end % grant.ring_size}
        if reached_twilio:
            with self._write_one() as conn:
                conn.execute(self._sql.slots_settle, values)
            return
        with self._write() as conn:
            if conn.execute(self._sql.slots_settle, values).rowcount == grant.cost:
                conn.execute(self._sql.pool_rewind, values)

    # -- webhook events -------------------------------------------------------------------------

    def record_status_event(
        self,
        *,
        account_sid: str,
        conn_id: str,
        message_sid: str,
        status: str,
        payload: Mapping[str, Any],
        error_code: int | None = None,
        idempotency_token: str | None = None,
        idempotency_key: str | None = None,
        idempotency_key_sha256: str | None = None,
        signer: str | None = None,
        team: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Store one status callback verified by connection ``conn_id`` of ``account_sid`` (whose
        ``signer`` it records); advance the message's status if it moves forward.

        Returns False (and changes nothing) for a delivery already stored: the same idempotency token,
        or the same message SID and status. The outbound row is one sent under ``account_sid`` by
        ``conn_id``: found by SID, or, when the send's response was lost, by the idempotency key carried in
        the callback URL's query: its SHA-256 (``idempotency_key_sha256``), or the key itself (URLs made
        before keys were stored by digest). The event's team is that message's, else ``team`` (the
        verifying connection's).
        """
        now = now or utcnow()
        status = (status or "").strip().lower()
        sql = self._sql
        # A retried delivery carries the same I-Twilio-Idempotency-Token and so the same SID and
        # status: the unique (account, "status:SID:status") key dedupes both cases in one statement.
        event = {
            "kind": "status", "account_sid": account_sid, "conn_id": conn_id, "signer": signer,
            "dedupe_key": f"status:{message_sid}:{status}", "idempotency_token": idempotency_token,
            "message_sid": message_sid, "status": status, "error_code": error_code,
            "from_number": payload.get("From"), "to_number": payload.get("To"),
            "messaging_service_sid": payload.get("MessagingServiceSid") or None, "body": None,
            "num_media": None,
            "opt_out_type": None, "team": team, "received_at": now,
            "payload": json.dumps(dict(payload), sort_keys=True),
        }
        params = {f"v_{k}": v for k, v in event.items()}
        # Which outbound row: by SID, else by the idempotency key of the callback URL (see statements.py).
        if not idempotency_key_sha256 and idempotency_key:
            idempotency_key_sha256 = key_digest(idempotency_key)
        params.update(p_sid=message_sid, p_account_sid=account_sid, p_conn_id=conn_id,
                      p_key_sha256=idempotency_key_sha256 or None, p_rank=status_rank(status),
                      p_status=status,
                      p_now=now, p_error_code=error_code)
        if sql.status_event_fused is not None:
            with self._write_one() as conn:
                return conn.execute(sql.status_event_fused, params).first() is not None
        with self._write() as conn:
            stored = conn.execute(sql.status_event_insert, params).first()
            if stored is None:
                return False
            message_id = stored.message_id
            if message_id is not None:
                conn.execute(sql.apply_status, {**params, "p_id": message_id})
            return True

    def record_inbound(
        self,
        *,
        account_sid: str,
        conn_id: str,
        message_sid: str,
        from_number: str,
        to_number: str,
        body: str | None,
        payload: Mapping[str, Any],
        num_media: int = 0,
        opt_out_type: str | None = None,
        signer: str | None = None,
        team: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Store one inbound message verified by connection ``conn_id`` of ``account_sid`` (once per
        MessageSid) and apply STOP/START to that account's opt-out list for ``signer``.

        The message is linked to the outbound message it answers, if any (same account, same signer or
        connection, sent to ``from_number`` from ``to_number`` or from the payload's Messaging Service), and
        takes its team; else ``team`` (the verifying connection's).

        ``now`` (for tests) must be about the present: reply sensors start reading after the newest message
        received well before their ``since`` (:meth:`inbound_cursor`), which holds because event ids follow
        the order messages arrived in.
        """
        now = now or utcnow()
        keyword = (opt_out_type or "").strip().upper() or opt_out_keyword(body)
        values = {
            "kind": "inbound", "account_sid": account_sid, "conn_id": conn_id, "signer": signer,
            "dedupe_key": f"inbound:{message_sid}", "idempotency_token": None, "message_sid": message_sid,
            "status": "received", "error_code": None, "from_number": from_number, "to_number": to_number,
            "messaging_service_sid": payload.get("MessagingServiceSid") or None, "body": body,
            "num_media": num_media, "opt_out_type": keyword, "team": team, "received_at": now,
            "payload": json.dumps(dict(payload), sort_keys=True),
        }
        with self._write() as conn:
            bound = {f"v_{k}": v for k, v in values.items()}
            if not self._insert_ignore(conn, self._sql.inbound_insert, bound):
                return False
            if keyword in ("STOP", "START"):
                self._set_opt_out(conn, account_sid, signer or "", from_number, keyword == "STOP", keyword,
                                  message_sid, now)
            return True

    def _set_opt_out(self, conn: Connection, account_sid: str, signer: str, number: str, opted_out: bool,
                     keyword: str, message_sid: str | None, now: datetime) -> None:
        values = {"opted_out": opted_out, "keyword": keyword, "message_sid": message_sid, "updated_at": now}
        key = {"account_sid": account_sid, "signer": signer, "number": number}
        # One atomic INSERT ... ON CONFLICT DO UPDATE: the latest STOP/START wins.
        conn.execute(self._sql.opt_out_upsert, {**key, **values})

    def set_opt_out(self, account_sid: str, number: str, opted_out: bool, keyword: str = "MANUAL", *,
                    signer: str = "") -> None:
        """Record an opt-out of ``number`` from ``account_sid``: for the connections of ``signer`` only, or,
        with the default ``''``, for every connection of the account.
        """
        with self._write() as conn:
            self._set_opt_out(conn, account_sid, signer, number, opted_out, keyword, None, utcnow())

    def is_opted_out(self, account_sid: str, number: str, *, signer: str = "") -> bool:
        """Whether a send from ``account_sid`` by a connection of ``signer`` to ``number`` is refused."""
        with self._read() as conn:
            return conn.execute(self._sql.opted_out, {"p_account_sid": account_sid, "p_signer": signer,
                                                      "p_number": number}).first() is not None

    # -- reads ----------------------------------------------------------------------------------

    def get_message(
        self,
        *,
        sid: str | None = None,
        scope: str | None = None,
        idempotency_key: str | None = None,
        message_id: int | None = None,
    ) -> dict[str, Any] | None:
        m = t.message
        if sid:
            where = m.c.sid == sid
        elif message_id is not None:
            where = m.c.id == message_id
        elif scope and idempotency_key:
            where = and_(m.c.scope == scope, m.c.idempotency_key_sha256 == key_digest(idempotency_key))
        else:
            raise ValueError("get_message needs sid, message_id, or scope and idempotency_key")
        with self._read() as conn:
            return self._row(conn.execute(select(m).where(where)).first())

    def message_ids_by_sid(self, sids: Iterable[str]) -> dict[str, int]:
        """The outbound row of each of these SIDs that a send recorded: ``{sid: row id}``, one query per
        500 SIDs (reconciliation asks about every candidate at once).
        """
        return {sid: row.id for sid, row in self._messages_by_sid(sids, t.message.c.id).items()}

    def message_senders(self, sids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        """The connection each of these SIDs was sent with, and its signer: ``{sid: (conn_id, signer)}``
        for the SIDs a send recorded (the status fallback stores Twilio's answer as the sender's).
        """
        m = t.message
        return {sid: (row.conn_id, row.signer)
                for sid, row in self._messages_by_sid(sids, m.c.conn_id, m.c.signer).items()}

    def _messages_by_sid(self, sids: Iterable[str], *columns) -> dict[str, Any]:
        """``columns`` of the outbound rows of these SIDs, ``{sid: row}``, one query per 500 SIDs."""
        sids = list(dict.fromkeys(s for s in sids if s))
        m = t.message
        found: dict[str, Any] = {}
        with self._read() as conn:
            for chunk in (sids[i:i + 500] for i in range(0, len(sids), 500)):
                found.update((row.sid, row) for row in conn.execute(select(m.c.sid, *columns)
                                                                     .where(m.c.sid.in_(chunk))))
        return found

    def get_inbound(self, message_sid: str, event_id: int | None = None) -> dict[str, Any] | None:
        """The inbound message with this SID (stored once per account, whatever Twilio's retries), or None.
        With ``event_id`` (what a reply sensor matched), that stored row only: another account's event with
        the same SID is not it.
        """
        e = t.event
        where = [e.c.message_sid == message_sid, e.c.kind == "inbound"]
        if event_id is not None:
            where.append(e.c.id == event_id)
        with self._read() as conn:
            return self._row(conn.execute(select(e).where(*where).order_by(e.c.id).limit(1)).first())

    def status_history(self, message_sid: str) -> list[dict[str, Any]]:
        """Every status callback stored for a message, in arrival order: for a message sent by this
        provider, those linked to it (verified by its own connection); else every one with its SID.
        """
        e, m = t.event, t.message
        ours = select(m.c.id).where(m.c.sid == message_sid).scalar_subquery()
        with self._read() as conn:
            rows = conn.execute(
                select(e.c.id, e.c.status, e.c.error_code, e.c.received_at, e.c.idempotency_token)
                .where(e.c.message_sid == message_sid, e.c.kind == "status",
                       or_(ours.is_(None), e.c.message_id == ours))
                .order_by(e.c.id)
            ).all()
        return [dict(r._mapping) for r in rows]

    def message_states(self, sids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Current status of many messages in one round trip (the triggers' batched poll).

        A message sent by this provider has a row whose status only moves forward, and counts the callbacks
        linked to it (verified by its own connection); a message known only from callbacks (sent
        elsewhere) takes the highest-ranked status among its events.
        Each value: ``status``, ``error_code``, ``events`` (how many callbacks are stored).
        """
        sids = list(dict.fromkeys(s for s in sids if s))
        states: dict[str, dict[str, Any]] = {}
        m, e = t.message, t.event
        with self._read() as conn:
            for chunk in (sids[i:i + 500] for i in range(0, len(sids), 500)):
                linked = (select(func.count()).where(e.c.message_id == m.c.id, e.c.kind == "status")
                          .scalar_subquery())
                for ours in conn.execute(select(m.c.sid, m.c.status, m.c.error_code, linked.label("events"))
                                         .where(m.c.sid.in_(chunk))):
                    states[ours.sid] = {"status": ours.status, "error_code": ours.error_code,
                                        "events": ours.events}
                orphans = [sid for sid in chunk if sid not in states]
                if orphans:
                    rows = conn.execute(select(e.c.message_sid, e.c.status, e.c.error_code)
                                        .where(e.c.kind == "status", e.c.message_sid.in_(orphans))
                                        .order_by(e.c.id)).all()
                    for row in rows:
                        best = states.setdefault(
                            row.message_sid, {"status": None, "error_code": None, "events": 0}
                        )
                        best["events"] += 1
                        if status_rank(row.status) > status_rank(best["status"]):
                            best.update(status=row.status, error_code=row.error_code)
        return states

    def read_inbound_channels(self, reads: Sequence[tuple[InboundChannel, int]], *,
                              page: int) -> list[list[dict[str, Any]]]:
        """For each ``(channel, after_id)`` of ``reads``: at most ``page`` inbound messages of the channel
        with an id above ``after_id``, oldest first. One statement, each read through its own index, from its
        own cursor (:func:`.inbound.channel_reads`): what every waiting reply sensor of a triggerer reads in
        a round. The rows hold what the matching needs (:data:`.inbound.READ_COLUMNS`); each sensor keeps
        those verified for its own account and signer
        (:meth:`~airflow_provider_twilio_sms.replies.ReplyCriteria.concerns`).
        """
        pages: list[list[dict[str, Any]]] = [[] for _ in reads]
        if not reads:
            return pages
        stmt, params = channel_reads(self.dialect, reads, page)
        with self._read() as conn:
            for row in conn.execute(stmt, params):
                found = dict(row._mapping)
                pages[found.pop("read_index")].append(found)
        for rows in pages:
            rows.sort(key=lambda row: row["id"])
        return pages

    def inbound_cursor(self, since: datetime | None) -> int:
        """Where to read inbound messages received at or after ``since`` from: an event id that every such
        message is above (the newest inbound message received :data:`.inbound.CURSOR_MARGIN` before
        ``since``, found by one probe of an index); 0 when there is none, or no ``since``.
        """
        if since is None:
            return 0
        with self._read() as conn:
            found = conn.execute(cursor_statement(), {"before": since - CURSOR_MARGIN}).scalar()
        return int(found or 0)

    def find_inbound(
        self,
        *,
        account_sid: str,
        conn_id: str,
        signer: str | None = None,
        to_number: str | None = None,
        messaging_service_sid: str | None = None,
        from_number: str | None = None,
        since: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Inbound messages verified for ``account_sid`` by connection ``conn_id`` or another connection of
        ``signer``, from ``from_number``, arriving at ``to_number`` or through ``messaging_service_sid``
        (either, when both are given), oldest first, received at or after ``since``.
        """
        if not (to_number or from_number or messaging_service_sid):
            raise ValueError("find_inbound needs to_number or from_number: "
                             "a scan of every message is not allowed")
        statement = inbound_page_statement(
            by_signer=bool(signer), to_number=bool(to_number),
            messaging_service_sid=bool(messaging_service_sid), from_number=bool(from_number),
            since=since is not None)
        values = {"p_conn_id": conn_id, "p_signer": signer, "p_after_id": after_id,
                  "p_account_sid": account_sid, "p_to_number": to_number,
                  "p_messaging_service_sid": messaging_service_sid, "p_from_number": from_number,
                  "p_since": since, "p_limit": limit}
        with self._read() as conn:
            rows = conn.execute(statement, values).all()
        return [dict(r._mapping) for r in rows]

    # -- reply waits (what a deferred reply sensor's trigger reads instead of numbers in its kwargs) ------

    def add_reply_wait(self, *, account_sid: str, conn_id: str, signer: str | None = None,
                       from_number: str | None = None, to_number: str | None = None,
                       messaging_service_sid: str | None = None) -> int:
        """Record who a reply sensor waits on; returns the id its trigger carries instead of the numbers."""
        w = t.reply_wait
        with self._write() as conn:
            key = conn.execute(w.insert().values(
                account_sid=account_sid, conn_id=conn_id, signer=signer, from_number=from_number,
                to_number=to_number, messaging_service_sid=messaging_service_sid, created_at=utcnow())
            ).inserted_primary_key
            if key is None:  # a one-row INSERT always has its key
                raise RuntimeError("the store returned no id for the new reply wait")
            return int(key[0])

    def get_reply_wait(self, wait_id: int) -> dict[str, Any] | None:
        w = t.reply_wait
        with self._read() as conn:
            return self._row(conn.execute(select(w).where(w.c.id == wait_id)).first())

    def drop_reply_wait(self, wait_id: int) -> None:
        """Forget a wait whose sensor finished (its trigger fired)."""
        w = t.reply_wait
        with self._write() as conn:
            conn.execute(w.delete().where(w.c.id == wait_id))

    def list_messages(
        self,
        *,
        status: str | None = None,
        number: str | None = None,
        since: datetime | None = None,
        teams: Iterable[str | None] | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Outbound messages, newest first, for the read API (keyset pagination on ``before_id``)."""
        m = t.message
        return self._newest_first(m, m.c.created_at, [m.c.status == status] if status else [], number=number,
                                  since=since, teams=teams, before_id=before_id, limit=limit)

    def list_inbound(
        self,
        *,
        number: str | None = None,
        since: datetime | None = None,
        teams: Iterable[str | None] | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Inbound messages, newest first, for the read API (keyset pagination on ``before_id``)."""
        e = t.event
        return self._newest_first(e, e.c.received_at, [e.c.kind == "inbound"], number=number, since=since,
                                  teams=teams, before_id=before_id, limit=limit)

    def _newest_first(self, table, time_column, conditions: list, *, number: str | None,
                      since: datetime | None, teams: Iterable[str | None] | None, before_id: int | None,
                      limit: int) -> list[dict[str, Any]]:
        """One page of ``table``, newest first, filtered the way the read API filters."""
        conditions = list(conditions)
        if number:
            conditions.append(or_(table.c.to_number == number, table.c.from_number == number))
        if since is not None:
            conditions.append(time_column >= since)
        if before_id is not None:
            conditions.append(table.c.id < before_id)
        if teams is not None:
            conditions.append(_team_filter(table.c.team, teams))
        with self._read() as conn:
            rows = conn.execute(
                select(table).where(*conditions).order_by(table.c.id.desc()).limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

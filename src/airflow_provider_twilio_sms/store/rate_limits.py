"""Rate limits per team pool, exact across processes and machines, on the database's clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.base import StoreBase, _string_limits, check_fits, utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_POOL_LIMIT = dict(_string_limits(t.rate_pool))["pool"]


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


class RateLimits(StoreBase):
    """Rate-limit decisions (see :meth:`acquire_rate_slot`)."""

    @cached_property
    def _decide_sql(self) -> tuple[str, dict[str, Any]] | None:
        """PostgreSQL with psycopg2 decides in one round trip (statements in one query)."""
        return self._sql.decide_fused_sql(self.engine.dialect) if self._autocommit_driver else None

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

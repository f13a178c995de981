"""Rate-limit decisions in the store: exact sliding windows on the database's clock, at a cost that does
not grow with the window, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from airflow_provider_twilio_sms.store import base
from airflow_provider_twilio_sms.store.tables import rate_slot

from conftest import skew_store_clock


def _us(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


def _slots(store, pool):
    with store.engine.connect() as conn:
        return dict(conn.execute(select(rate_slot.c.slot, rate_slot.c.until_us)
                                 .where(rate_slot.c.pool == pool)).all())


def test_exact_sliding_window_against_an_independent_count(store):
    """Decisions as fast as they come for 1.5 windows, costs 1 to 3: each one agrees with a count of the
    units granted before it that still reach into its window (granted iff that count + cost <= limit),
    and a refusal names the moment the cost-th oldest unit of the last ``limit`` leaves the window."""
    limit, window = 5, 0.4
    window_us = round(window * 1_000_000)
    units: list[int] = []  # every unit granted, oldest first: the moment it counts until
    seen = {"granted": 0, "refused": 0}
    deadline = time.monotonic() + 1.5 * window
    i = 0
    while time.monotonic() < deadline or not all(seen.values()):
        cost = 1 + i % 3
        i += 1
        decision = store.acquire_rate_slot("qa", limit, window, cost=cost, hold_seconds=0)
        now_us = _us(decision.decided_at)
        in_window = [u for u in units if u > now_us - window_us]
        assert decision.granted == (len(in_window) + cost <= limit), (i, cost, len(in_window))
        if decision.granted:
            units += [decision.grant.until_us] * cost
            assert decision.grant.until_us > now_us  # counted from its grant on, never before
        else:
            # (a unit still counting past now may be settled any moment: a window from now at the earliest)
            free = min(([0] * limit + units)[-limit:][cost - 1], now_us) + window_us
            assert _us(decision.next_free_at) == free
            assert decision.wait_seconds == pytest.approx((free - now_us) / 1e6, abs=1e-6)
        seen["granted" if decision.granted else "refused"] += 1
        assert i < 100_000


def test_the_window_is_on_the_database_clock_not_the_workers(store, monkeypatch):
    """A worker whose clock is 10 s slow takes the two units of 2 per 5 s; one whose clock is 10 s fast
    comes right after: the window is full for it too. (On the worker's clock the slow worker's grants
    would be 20 s old for the fast one, and four sends would leave within milliseconds.)"""
    real = base.utcnow
    skew_store_clock(-10, monkeypatch.setattr)
    slow = [store.acquire_rate_slot("qa", 2, 5).granted for _ in range(2)]
    skew_store_clock(10, monkeypatch.setattr)
    fast = store.acquire_rate_slot("qa", 2, 5)
    assert slow == [True, True]
    assert not fast.granted
    assert abs((fast.decided_at - real()).total_seconds()) < 5  # the database's clock, not either worker's
    assert 4 < fast.wait_seconds <= 5


def test_a_pool_per_team_and_a_cost_per_segment(store):
    assert store.acquire_rate_slot("team:a", 5, 60, cost=3).granted
    denied = store.acquire_rate_slot("team:a", 5, 60, cost=3)
    assert not denied.granted
    assert store.acquire_rate_slot("team:a", 5, 60, cost=2).granted  # exactly the 2 units left
    assert store.acquire_rate_slot("team:b", 5, 60, cost=3).granted


def test_a_cost_above_the_limit_is_an_error(store):
    with pytest.raises(ValueError, match="more than the whole limit"):
        store.acquire_rate_slot("a", 2, 60, cost=3)


def test_a_changed_limit_keeps_the_newest_units(store):
    assert all(store.acquire_rate_slot("qa", 3, 60).granted for _ in range(3))
    raised = [store.acquire_rate_slot("qa", 5, 60).granted for _ in range(3)]
    assert raised == [True, True, False]  # 3 already in the window count against the new limit of 5
    assert not store.acquire_rate_slot("qa", 2, 60).granted
    assert len(_slots(store, "qa")) == 2  # the ring is the limit: old slots are not kept


def test_a_grant_that_never_left_is_given_back_and_one_that_did_counts_until_twilio_answered(store):
    first = store.acquire_rate_slot("qa", 1, 60, hold_seconds=30)
    assert first.granted
    assert not store.acquire_rate_slot("qa", 1, 60, hold_seconds=30).granted
    store.settle_rate_grant(first.grant, reached_twilio=False)  # e.g. connection refused
    second = store.acquire_rate_slot("qa", 1, 60, hold_seconds=30)
    assert second.granted
    in_flight = store.acquire_rate_slot("qa", 1, 60)
    # Still out: it may be answered any moment, so a slot may free a window from now.
    assert not in_flight.granted
    assert in_flight.wait_seconds == pytest.approx(60, abs=0.01)
    store.settle_rate_grant(second.grant, reached_twilio=True)
    until = _slots(store, "qa")[0]
    assert _us(second.decided_at) < until < second.grant.until_us  # lowered to when the answer came
    # SQLite's clock ticks in milliseconds and a settled slot is held to the tick after the answer: a
    # decision within that tick still sees it as in flight. Decide once the tick has passed.
    time.sleep(0.005)
    refused = store.acquire_rate_slot("qa", 1, 60)
    assert _us(refused.next_free_at) == until + 60_000_000


def test_a_grant_given_back_behind_later_ones_never_lets_more_through(store):
    """A hole in the middle of the ring (later grants came after the one given back) is free when the ring
    comes round to it; until then the pool decides as if it were still taken: never more than the limit."""
    grants = [store.acquire_rate_slot("qa", 4, 60, hold_seconds=30).grant for _ in range(3)]
    store.settle_rate_grant(grants[1], reached_twilio=False)
    decisions = [store.acquire_rate_slot("qa", 4, 60, hold_seconds=30).granted for _ in range(4)]
    assert decisions[0]
    assert not any(decisions[2:])
    live = [u for u in _slots(store, "qa").values() if u > 0]
    assert len(live) <= 4


def test_a_settle_after_the_ring_came_round_leaves_the_new_grant_alone(store):
    old = store.acquire_rate_slot("qa", 1, 0.05, hold_seconds=0)
    time.sleep(0.1)
    new = store.acquire_rate_slot("qa", 1, 0.05, hold_seconds=0)
    assert new.granted
    store.settle_rate_grant(old.grant, reached_twilio=False)
    assert _slots(store, "qa") == {0: new.grant.until_us}


def test_decisions_cost_the_same_with_a_full_window(store):
    """A window holding 20 000 units is decided by reading one slot: the ring's other rows are not read
    (a decision with every other slot corrupted to 'in the window' still sees only its edge)."""
    limit = 20_000
    assert store.acquire_rate_slot("big", limit, 3600).granted
    with store.engine.begin() as conn:
        from sqlalchemy import insert

        conn.execute(insert(rate_slot), [{"pool": "big", "slot": i, "until_us": 0} for i in range(1, limit)])
        far = _us(datetime.now(timezone.utc) + timedelta(days=1))
        conn.execute(
            update(rate_slot).where(rate_slot.c.pool == "big", rate_slot.c.slot > 2).values(until_us=far)
        )
    assert [store.acquire_rate_slot("big", limit, 3600).granted for _ in range(3)] == [True, True, False]

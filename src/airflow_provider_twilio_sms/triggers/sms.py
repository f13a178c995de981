"""Triggers for the deferrable SMS sensors, polling the store (never Airflow's ORM) in batches.

A triggerer may hold thousands of waiting sensors. They do not each query the store: every trigger
for the same store registers with one :class:`StorePoller` per event loop, which makes one query per
round for all status waiters (``sid IN (...)``) and one for all reply waiters (numbers ``IN (...)``,
after the lowest cursor), then hands each trigger its answer. Queries per second stay flat as the
number of waiting sensors grows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_twilio_sms.replies import ReplyCriteria

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.store.api import SmsStore

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 5.0


@dataclass(eq=False)
class _ReplyWaiter:
    criteria: ReplyCriteria
    cursor: int
    future: asyncio.Future = field(repr=False)


class StorePoller:
    """One polling loop per (event loop, store URL, interval), shared by every trigger that waits there."""

    _pollers: dict[tuple[int, str, float], StorePoller] = {}

    def __init__(self, store: SmsStore, interval: float):
        self.store = store
        self.interval = interval
        self._status: dict[str, list[asyncio.Future]] = {}
        self._replies: set[_ReplyWaiter] = set()
        self._task: asyncio.Task | None = None
        self.queries = 0  # store round trips made, for benchmarks and tests
        self.rounds = 0

    @classmethod
    def for_store(cls, store: SmsStore, url: str, interval: float) -> StorePoller:
        key = (id(asyncio.get_running_loop()), url, float(interval))
        poller = cls._pollers.get(key)
        if poller is None:
            poller = cls._pollers[key] = cls(store, interval)
        return poller

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def next_status(self, sid: str) -> dict[str, Any] | None:
        """The message's state as of the next polling round."""
        future = asyncio.get_running_loop().create_future()
        self._status.setdefault(sid, []).append(future)
        self._ensure_running()
        try:
            return await future
        finally:
            waiting = self._status.get(sid)
            if waiting and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._status[sid]

    async def reply(self, criteria: ReplyCriteria, after_id: int) -> tuple[str, dict[str, Any]]:
        """Wait for ("match", result) or ("opt_out", event) among inbound messages after ``after_id``."""
        waiter = _ReplyWaiter(criteria, after_id, asyncio.get_running_loop().create_future())
        self._replies.add(waiter)
        self._ensure_running()
        try:
            return await waiter.future
        finally:
            self._replies.discard(waiter)

    async def _run(self) -> None:
        while self._status or self._replies:
            await asyncio.sleep(self.interval)
            self.rounds += 1
            try:
                await self._poll_statuses()
                await self._poll_replies()
            except Exception:  # a store hiccup must not kill every waiting sensor: try next round
                log.exception("Polling the twilio_sms store failed; retrying in %.1f s", self.interval)

    async def _poll_statuses(self) -> None:
        if not self._status:
            return
        waiting, self._status = self._status, {}
        states = await asyncio.to_thread(self.store.message_states, list(waiting))
        self.queries += 1
        for sid, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(states.get(sid))

    async def _poll_replies(self) -> None:
        waiters = [w for w in self._replies if not w.future.done()]
        if not waiters:
            return
        after = min(w.cursor for w in waiters)
        rows = await asyncio.to_thread(
            self.store.find_inbound_any,
            numbers_to=[w.criteria.to_number for w in waiters if w.criteria.to_number],
            numbers_from=[w.criteria.from_number for w in waiters if w.criteria.from_number and
                          not w.criteria.to_number],
            after_id=after, limit=1000)
        self.queries += 1
        for waiter in waiters:
            for row in rows:
                if row["id"] <= waiter.cursor:
                    continue
                waiter.cursor = row["id"]
                if waiter.criteria.is_opt_out(row):
                    waiter.future.set_result(("opt_out", row))
                    break
                result = waiter.criteria.match(row)
                if result is not None:
                    waiter.future.set_result(("match", result))
                    break


async def _store_for(store_conn_id: str | None) -> tuple[SmsStore, str]:
    from airflow_provider_twilio_sms.store.locate import get_store, store_url

    url = await asyncio.to_thread(store_url, store_conn_id)
    return get_store(url=url), url


class SmsStatusTrigger(BaseTrigger):
    """Fires when a message reaches a success or failure status, or when no callback came in time.

    Events: ``{"outcome": "success" | "failure", "sid", "status", "error_code"}`` or
    ``{"outcome": "no_callback", "sid"}`` after ``fallback_after`` seconds with no stored status callback
    (the sensor then asks Twilio once, in the worker).
    """

    def __init__(self, *, message_sid: str, success_statuses: list[str], failure_statuses: list[str],
                 store_conn_id: str | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL,
                 fallback_at: str | None = None):
        super().__init__()
        self.message_sid = message_sid
        self.success_statuses = list(success_statuses)
        self.failure_statuses = list(failure_statuses)
        self.store_conn_id = store_conn_id
        self.poll_interval = poll_interval
        self.fallback_at = fallback_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "message_sid": self.message_sid, "success_statuses": self.success_statuses,
            "failure_statuses": self.failure_statuses, "store_conn_id": self.store_conn_id,
            "poll_interval": self.poll_interval, "fallback_at": self.fallback_at,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        store, url = await _store_for(self.store_conn_id)
        poller = StorePoller.for_store(store, url, self.poll_interval)
        fallback_at = datetime.fromisoformat(self.fallback_at) if self.fallback_at else None
        while True:
            state = await poller.next_status(self.message_sid) or {}
            status = (state.get("status") or "").lower()
            if status in self.success_statuses or status in self.failure_statuses:
                yield TriggerEvent({
                    "outcome": "success" if status in self.success_statuses else "failure",
                    "sid": self.message_sid, "status": status, "error_code": state.get("error_code"),
                })
                return
            if fallback_at and not state.get("events") and datetime.now(timezone.utc) >= fallback_at:
                yield TriggerEvent({"outcome": "no_callback", "sid": self.message_sid})
                return


class SmsReplyTrigger(BaseTrigger):
    """Fires on the first inbound message after ``after_id`` that matches, or on an opt-out (STOP).

    Events: ``{"outcome": "match", "result": {...}}`` or ``{"outcome": "opt_out", "message": "..."}``.
    """

    def __init__(self, *, criteria: dict[str, Any], after_id: int = 0, store_conn_id: str | None = None,
                 poll_interval: float = DEFAULT_POLL_INTERVAL):
        super().__init__()
        self.criteria = criteria
        self.after_id = after_id
        self.store_conn_id = store_conn_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "criteria": self.criteria, "after_id": self.after_id, "store_conn_id": self.store_conn_id,
            "poll_interval": self.poll_interval,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        criteria = ReplyCriteria.from_json(self.criteria)
        store, url = await _store_for(self.store_conn_id)
        poller = StorePoller.for_store(store, url, self.poll_interval)
        outcome, payload = await poller.reply(criteria, self.after_id)
        if outcome == "opt_out":
            yield TriggerEvent({"outcome": "opt_out", "message": criteria.opt_out_message(payload)})
        else:
            yield TriggerEvent({"outcome": "match", "result": payload})

"""Triggers for the deferrable SMS sensors, polling the store (never Airflow's ORM) in batches.

A triggerer may hold thousands of waiting sensors. They do not each query the store: every trigger
for the same store registers with one :class:`StorePoller` per event loop, which makes one query per
round for all status waiters (``sid IN (...)``) and one per :data:`READS_PER_QUERY` reply reads, then
hands each trigger its answer. Queries per second stay flat as the number of waiting sensors grows.

Each reply waiter reads its own channels (the messages from its sender, else to its number or through its
Messaging Service: :meth:`ReplyCriteria.channels`) from its own cursor, through an index, a page at a time
(:mod:`..store.inbound`): a waiter that is caught up reads only what is new for it, whatever another
waiter still has to read, and a round costs the same with a thousand or a million stored messages. A
new waiter starts after the messages received well before its ``since`` (:meth:`SmsStore.inbound_cursor`),
not at the start of the table.

The same holds for Twilio: a status waiter whose callbacks did not come is asked about at Twilio
(:mod:`.status_fallback`) by the poller, together with every other waiter due in that round, in a few
requests per Twilio connection whatever their number.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_twilio_sms.replies import ReplyCriteria
from airflow_provider_twilio_sms.status_fallback import (
    DEFAULT_INTERVAL,
    DEFAULT_MAX_INTERVAL,
    FallbackSchedule,
    finishing_statuses,
)
from airflow_provider_twilio_sms.store.status import reached

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.inbound import InboundChannel

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 5.0
# Rows per reply read and round, and reply reads per store query (a statement returns at most their
# product; waiters that are caught up read a handful of rows each).
REPLY_PAGE = 500
READS_PER_QUERY = 250
# Asking Twilio holds up the round's store polling for every waiter: wait less than the hook's default.
TWILIO_TIMEOUT = 10.0


@dataclass
class _TwilioAsk:
    """A status waiter's fallback: which connection to ask through, when, and since when it was sent."""

    conn_id: str
    sent_at: datetime | None
    schedule: FallbackSchedule


@dataclass(eq=False)
class _ReplyWaiter:
    """One waiting reply trigger: what it waits for, and the last message id it has looked at."""

    criteria: ReplyCriteria
    cursor: int
    future: asyncio.Future = field(repr=False)
    channels: tuple[InboundChannel, ...] = field(init=False)

    def __post_init__(self):
        self.channels = self.criteria.channels()

    def take(self, pages: list[list[dict[str, Any]]], page: int) -> None:
        """Look at this round's rows of the waiter's channels (``pages``, one per channel, each read from
        ``cursor`` with at most ``page`` rows) in id order, and answer on the first match or opt-out.

        With two channels a full page may stop short of the other's rows: those above the lowest last id
        of a full page are left for the next round, so no earlier message is ever skipped.
        """
        if self.future.done():  # cancelled while the round read the store
            return
        full = [rows[-1]["id"] for rows in pages if len(rows) >= page]
        horizon = min(full) if full else None
        by_id = {row["id"]: row for rows in pages for row in rows}
        for row_id in sorted(by_id):
            if horizon is not None and row_id > horizon:
                return
            row = by_id[row_id]
            self.cursor = row_id
            if self.criteria.is_opt_out(row):
                self.future.set_result(("opt_out", row))
                return
            result = self.criteria.match(row)
            if result is not None:
                self.future.set_result(("match", result))
                return


class StorePoller:
    """One polling loop per (event loop, store URL, interval), shared by every trigger that waits there."""

    _pollers: dict[tuple[int, str, float], StorePoller] = {}

    def __init__(self, store: SmsStore, interval: float):
        self.store = store
        self.interval = interval
        self._status: dict[str, list[asyncio.Future]] = {}
        self._replies: set[_ReplyWaiter] = set()
        self._asks: dict[str, _TwilioAsk] = {}  # by SID: kept across rounds (the backoff), while awaited
        self._hooks: dict[str, TwilioSmsHook] = {}
        self._task: asyncio.Task | None = None
        self.queries = 0  # store round trips made, for benchmarks and tests
        self.twilio_asks = 0  # batches sent to Twilio (each a few requests), for tests
        self.rounds = 0

    @classmethod
    def for_store(cls, store: SmsStore, url: str, interval: float) -> StorePoller:
        """The poller shared by every trigger on this event loop, store and interval (made on first use)."""
        key = (id(asyncio.get_running_loop()), url, float(interval))
        poller = cls._pollers.get(key)
        if poller is None:
            poller = cls._pollers[key] = cls(store, interval)
        return poller

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def next_status(self, sid: str, ask: _TwilioAsk | None = None) -> dict[str, Any] | None:
        """The message's state as of the next polling round; with ``ask``, Twilio is asked in that round
        when its schedule says so (and what it said is in the state).
        """
        future = asyncio.get_running_loop().create_future()
        self._status.setdefault(sid, []).append(future)
        if ask is not None:
            self._asks.setdefault(sid, ask)  # the one already there keeps its backoff
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
        """Wait for ("match", result) or ("opt_out", event) among inbound messages after ``after_id``: the
        first such message in id order that the criteria accepts.
        """
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
            try:
                await self.poll_round()
            except Exception:  # a store hiccup must not kill every waiting sensor: try next round
                log.exception("Polling the twilio_sms store failed; retrying in %.1f s", self.interval)

    async def poll_round(self) -> None:
        """One round: every status waiter and every reply waiter gets what the store holds for it now (the
        polling loop runs one per interval; benchmarks and tests drive it round by round).
        """
        self.rounds += 1
        await self._poll_statuses()
        await self._poll_replies()

    async def _poll_statuses(self) -> None:
        if not self._status:
            self._asks.clear()
            return
        waiting, self._status = self._status, {}
        self._asks = {sid: ask for sid, ask in self._asks.items() if sid in waiting}  # the rest finished
        states = await asyncio.to_thread(self.store.message_states, list(waiting))
        self.queries += 1
        now = datetime.now(timezone.utc)
        due = [sid for sid, ask in self._asks.items()
               if ask.schedule.due((states.get(sid) or {}).get("status"), now)]
        if due:
            await self._ask_twilio(due, now)
            states.update(await asyncio.to_thread(self.store.message_states, due))
            self.queries += 1
        for sid, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(states.get(sid))

    async def _ask_twilio(self, due: list[str], now: datetime) -> None:
        """One batch per Twilio connection for every waiter due this round. Those Twilio was asked about
        wait their next interval; those left out by the batch's bound stay due for the next round. A
        failure is logged, and the whole batch waits its next interval.
        """
        from airflow_provider_twilio_sms.status_fallback import ask_twilio

        by_conn: dict[str, list[str]] = {}
        for sid in due:
            by_conn.setdefault(self._asks[sid].conn_id, []).append(sid)
        for conn_id, sids in by_conn.items():
            sent = [at for sid in sids if (at := self._asks[sid].sent_at) is not None]
            oldest = min(sent) if len(sent) == len(sids) else None  # one unknown: no lower bound
            self.twilio_asks += 1
            answered: Iterable[str]
            try:
                answered = await asyncio.to_thread(ask_twilio, self._hook(conn_id), self.store, conn_id, sids,
                                                   created_after=oldest and oldest - timedelta(minutes=5))
            except Exception:  # Twilio or the connection failing must not stop the store polling
                self._hooks.pop(conn_id, None)  # read the connection again next time (rotated token?)
                answered = sids
                log.exception("Asking Twilio (connection %s) about %d message(s) failed; asking again "
                              "after their next interval", conn_id, len(sids))
            for sid in answered:
                self._asks[sid].schedule.asked(now)

    def _hook(self, conn_id: str) -> TwilioSmsHook:
        from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook

        hook = self._hooks.get(conn_id)
        if hook is None:
            hook = self._hooks[conn_id] = TwilioSmsHook(twilio_conn_id=conn_id, timeout=TWILIO_TIMEOUT)
        return hook

    async def _poll_replies(self) -> None:
        """Read each reply waiter's channels from its own cursor (waiters with the same channel and cursor
        share the read), :data:`READS_PER_QUERY` reads per query, and let each waiter take its rows.
        """
        waiters = [w for w in self._replies if not w.future.done()]
        if not waiters:
            return
        slots: dict[tuple[InboundChannel, int], int] = {}
        for waiter in waiters:
            for channel in waiter.channels:
                slots.setdefault((channel, waiter.cursor), len(slots))
        reads = list(slots)
        pages: list[list[dict[str, Any]]] = []
        for start in range(0, len(reads), READS_PER_QUERY):
            pages += await asyncio.to_thread(self.store.read_inbound_channels,
                                             reads[start:start + READS_PER_QUERY], page=REPLY_PAGE)
            self.queries += 1
        for waiter in waiters:
            waiter.take([pages[slots[channel, waiter.cursor]] for channel in waiter.channels], REPLY_PAGE)


async def _store_for(store_conn_id: str | None) -> tuple[SmsStore, str]:
    from airflow_provider_twilio_sms.store.locate import get_store, store_url

    url = await asyncio.to_thread(store_url, store_conn_id)
    return get_store(url=url), url


class SmsStatusTrigger(BaseTrigger):
    """Fires when a message reaches a success or failure status.

    Events: ``{"outcome": "success" | "failure", "sid", "status", "error_code"}``. From ``fallback_at``
    on, while the stored status ends nothing, Twilio is asked through ``twilio_conn_id`` (batched with
    every other waiter of the triggerer, see :mod:`.status_fallback`) every ``fallback_interval`` seconds,
    doubling up to ``fallback_max_interval``. A trigger serialized without ``twilio_conn_id`` (before
    this was so) fires ``{"outcome": "no_callback", "sid"}`` at ``fallback_at`` when no status callback
    is stored, and the sensor asks Twilio itself.
    """

    def __init__(self, *, message_sid: str, success_statuses: list[str], failure_statuses: list[str],
                 store_conn_id: str | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL,
                 fallback_at: str | None = None, twilio_conn_id: str | None = None,
                 sent_at: str | None = None, fallback_interval: float = DEFAULT_INTERVAL,
                 fallback_max_interval: float = DEFAULT_MAX_INTERVAL):
        super().__init__()
        self.message_sid = message_sid
        self.success_statuses = list(success_statuses)
        self.failure_statuses = list(failure_statuses)
        self.store_conn_id = store_conn_id
        self.poll_interval = poll_interval
        self.fallback_at = fallback_at
        self.twilio_conn_id = twilio_conn_id
        self.sent_at = sent_at
        self.fallback_interval = fallback_interval
        self.fallback_max_interval = fallback_max_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and plain-JSON kwargs the triggerer rebuilds this trigger from."""
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "message_sid": self.message_sid, "success_statuses": self.success_statuses,
            "failure_statuses": self.failure_statuses, "store_conn_id": self.store_conn_id,
            "poll_interval": self.poll_interval, "fallback_at": self.fallback_at,
            "twilio_conn_id": self.twilio_conn_id, "sent_at": self.sent_at,
            "fallback_interval": self.fallback_interval, "fallback_max_interval": self.fallback_max_interval,
        })

    def _ask(self) -> _TwilioAsk | None:
        if not (self.fallback_at and self.twilio_conn_id):
            return None
        schedule = FallbackSchedule(datetime.fromisoformat(self.fallback_at),
                                    finishing_statuses(self.success_statuses, self.failure_statuses),
                                    self.fallback_interval, self.fallback_max_interval)
        return _TwilioAsk(self.twilio_conn_id, datetime.fromisoformat(self.sent_at) if self.sent_at else None,
                          schedule)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait for a final status through the shared poller (which also asks Twilio when the fallback
        schedule says so); yield one event and stop. A trigger deferred by an older version yields
        ``no_callback`` once ``fallback_at`` passed with no status event stored.
        """
        store, url = await _store_for(self.store_conn_id)
        poller = StorePoller.for_store(store, url, self.poll_interval)
        ask = self._ask()
        no_callback_at = None  # a trigger from before Twilio was asked in the triggerer
        if self.fallback_at and ask is None:
            no_callback_at = datetime.fromisoformat(self.fallback_at)
        while True:
            state = await poller.next_status(self.message_sid, ask) or {}
            status = (state.get("status") or "").lower()
            if reached(status, self.success_statuses) or status in self.failure_statuses:
                yield TriggerEvent({  # (WhatsApp's read reaches delivered)
                    "outcome": "success" if reached(status, self.success_statuses) else "failure",
                    "sid": self.message_sid, "status": status, "error_code": state.get("error_code"),
                })
                return
            if no_callback_at and not state.get("events") and datetime.now(timezone.utc) >= no_callback_at:
                yield TriggerEvent({"outcome": "no_callback", "sid": self.message_sid})
                return


class SmsReplyTrigger(BaseTrigger):
    """Fires on the first inbound message after ``after_id`` that matches, or on an opt-out (STOP).

    Messages received before the shape's ``since`` never count, so the wait reads from the later of
    ``after_id`` and :meth:`SmsStore.inbound_cursor` of ``since`` (a trigger deferred by an earlier
    version passed 0), never from the start of the table.

    Its kwargs are stored in Airflow's ``trigger`` table, so they hold no phone number: ``wait_id`` names
    the reply wait in the store (account, signer, numbers; see ``SmsStore.add_reply_wait``) and ``shape``
    what the reply must look like (:meth:`ReplyCriteria.shape`).

    Events (each with ``wait_id``): ``{"outcome": "match", "result": {...}}``, ``{"outcome": "opt_out",
    "message": "..."}``, or ``{"outcome": "error", "message": "..."}`` when the wait is gone from the store.
    """

    def __init__(self, *, wait_id: int, shape: dict[str, Any], after_id: int = 0,
                 store_conn_id: str | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL):
        super().__init__()
        self.wait_id = wait_id
        self.shape = shape
        self.after_id = after_id
        self.store_conn_id = store_conn_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and plain-JSON kwargs the triggerer rebuilds this trigger from."""
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "wait_id": self.wait_id, "shape": self.shape, "after_id": self.after_id,
            "store_conn_id": self.store_conn_id, "poll_interval": self.poll_interval,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Read the wait's parties and where to start from the store once, then wait with the shared
        poller.
        """
        store, url = await _store_for(self.store_conn_id)
        parties = await asyncio.to_thread(store.get_reply_wait, self.wait_id)
        if parties is None:
            yield TriggerEvent({"outcome": "error", "wait_id": None, "message": (
                f"reply wait {self.wait_id} is not in the message store (cleaned up, or another "
                "store_conn_id?): clear the task to wait again")})
            return
        criteria = ReplyCriteria.from_parts(parties, self.shape)
        start = max(self.after_id, await asyncio.to_thread(store.inbound_cursor, criteria.since))
        poller = StorePoller.for_store(store, url, self.poll_interval)
        outcome, payload = await poller.reply(criteria, start)
        if outcome == "opt_out":
            yield TriggerEvent({"outcome": "opt_out", "wait_id": self.wait_id,
                                "message": criteria.opt_out_message(payload)})
        else:
            yield TriggerEvent({"outcome": "match", "wait_id": self.wait_id, "result": payload})

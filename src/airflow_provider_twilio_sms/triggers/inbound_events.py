"""Inbound SMS as asset events: a trigger for ``AssetWatcher`` that fires once per matching inbound message.

::

    from airflow.sdk import Asset, AssetWatcher

    deploy_requests = Asset("sms_deploy_requests", watchers=[AssetWatcher(
        name="sms_deploy", trigger=SmsInboundEventTrigger(to_number="+15005550006", keyword="DEPLOY"))])

It reads the store the webhook app writes (only signature-verified inbound messages, and of those only the
ones verified for its connection's account by that connection or another of its signer: README "What a
webhook is trusted for"), through the ``(kind, to_number, id)`` or ``(kind, messaging_service_sid, id)``
index, from a cursor kept in the store (``twilio_sms_event_watch``, :mod:`..store.watches`).

**One asset event per message.** The cursor is keyed by the trigger's class path and kwargs
(:meth:`SmsInboundEventTrigger.watch_key`), the same for every triggerer that runs the watcher, and is moved
past a message by a compare-and-set *before* the event for it is yielded: of two triggerers that read the
message, only the one whose update moved the cursor yields it. A restart resumes after the last message
passed. A cursor never passes an event id that is not visible yet (an insert still in flight below it,
:meth:`~airflow_provider_twilio_sms.store.watches.WatchRead.passable`), so no message is skipped.

**The one window that cannot be closed.** Airflow, not the trigger, stores the asset event: the triggerer
queues what a trigger yields and writes it to its metadata database up to a second or two later, in a
transaction of its own. Nothing spans that database and the store, so a triggerer that dies (or is stopped:
Airflow 3.3's triggerer drops events it queued but had not yet written when it stops) between the cursor's
move and Airflow's write loses that message's event; moving the cursor after the yield instead would fire
it twice in the same window, and lets two triggerers both fire it. This trigger loses rather than
duplicates (at most once, exactly once outside that window), and the message stays in the store (the log
line of each event names its event id): run the DAG by hand for it. A trigger cancelled while its move
runs (before it could yield) undoes the move, so that case is covered (:meth:`._advance`).

**What the event carries** (the asset event's ``extra["payload"]``): the message SID, the stored event's
id, when it was received, the sender and our number masked (``***0123``), the keyword that matched and the
groups the pattern captured. Never the text or the sender's full number, unless ``include_body`` /
``include_from_number`` ask for them: Airflow keeps asset events in its database and shows them in its UI.

A new watcher starts after the newest message stored when it first runs (it does not replay the history),
unless ``since`` asks for the messages received from then on. Changing any argument makes a new watcher.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_twilio_sms.privacy import mask_number, mask_sid

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.replies import ReplyCriteria
    from airflow_provider_twilio_sms.store.api import SmsStore

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_STORE_DEADLINE = 10.0
# Messages read per channel and round (a watcher that is caught up reads a handful).
PAGE = 500
# A watcher whose channel is quiet moves its cursor up to the settled events of the whole store once it
# lags this many ids behind, so the check that no insert is in flight below a new message stays short.
SKIP_AHEAD = 1_000
# Waits after a round that failed (the store, the connection): doubling up to this many seconds.
MAX_RETRY_WAIT = 300.0

_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")


def _within(seconds: float, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    from airflow_provider_twilio_sms.store.deadline import deadline

    with deadline(seconds):
        return call(*args, **kwargs)


class SmsInboundEventTrigger(BaseEventTrigger):
    """Fires an asset event for each inbound SMS to ``to_number`` (or through ``messaging_service_sid``)
    whose first word is ``keyword`` (one word, or a list of them), or in which ``pattern`` (a regular
    expression, searched) is found; with neither, every message. Case-insensitive unless ``case_sensitive``.

    Only messages verified for the account of ``twilio_conn_id`` by that connection or another connection
    of its signer count; STOP opt-outs never fire. ``since`` (ISO 8601): a new watcher also passes the
    messages received from then on instead of starting at the newest stored message. The store is
    ``store_conn_id`` (else ``[twilio_sms] store_conn_id``), polled every ``poll_interval`` seconds, each
    call given ``store_deadline_seconds``. See the module's docstring for the delivery guarantee.
    """

    def __init__(self, *, to_number: str | None = None, messaging_service_sid: str | None = None,
                 keyword: str | Sequence[str] | None = None, pattern: str | None = None,
                 case_sensitive: bool = False, twilio_conn_id: str = "twilio_sms_default",
                 store_conn_id: str | None = None, since: str | None = None,
                 include_body: bool = False, include_from_number: bool = False,
                 poll_interval: float = DEFAULT_POLL_INTERVAL,
                 store_deadline_seconds: float = DEFAULT_STORE_DEADLINE):
        super().__init__()
        keywords = [keyword] if isinstance(keyword, str) else list(keyword or ())
        if not (to_number or messaging_service_sid):
            raise ValueError("SmsInboundEventTrigger needs to_number (your Twilio number the messages come "
                             "to) or messaging_service_sid: watching every number of the account is not "
                             "allowed")
        if messaging_service_sid and not _SERVICE_SID.fullmatch(messaging_service_sid):
            raise ValueError("messaging_service_sid must be MG followed by 32 hex characters")
        if keywords and pattern:
            raise ValueError("SmsInboundEventTrigger takes keyword or pattern, not both: put the keyword "
                             "in the pattern (e.g. r'^DEPLOY\\s+(\\S+)')")
        if any(not isinstance(word, str) or not word.strip() or len(word.split()) != 1 for word in keywords):
            raise ValueError("each keyword must be one word (the message's first word is compared with it)")
        if pattern:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"pattern is not a valid regular expression: {err}") from None
        if since is not None:
            try:
                datetime.fromisoformat(since)
            except (TypeError, ValueError):
                raise ValueError(f"since must be an ISO 8601 time such as 2026-12-01T00:00:00+00:00, not "
                                 f"{since!r}") from None
        if not poll_interval > 0 or not store_deadline_seconds > 0:
            raise ValueError("poll_interval and store_deadline_seconds must be positive numbers of seconds")
        self.to_number = to_number
        self.messaging_service_sid = messaging_service_sid
        self.keyword = keywords
        self.pattern = pattern
        self.case_sensitive = bool(case_sensitive)
        self.twilio_conn_id = twilio_conn_id
        self.store_conn_id = store_conn_id
        self.since = since
        self.include_body = bool(include_body)
        self.include_from_number = bool(include_from_number)
        self.poll_interval = float(poll_interval)
        self.store_deadline_seconds = float(store_deadline_seconds)
        # This run of the trigger, as it signs the cursor's moves (see _advance).
        self._mover = str(uuid.uuid4())

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and plain-JSON kwargs the triggerer rebuilds this trigger from (and Airflow
        tells watchers apart by).
        """
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "to_number": self.to_number, "messaging_service_sid": self.messaging_service_sid,
            "keyword": self.keyword, "pattern": self.pattern, "case_sensitive": self.case_sensitive,
            "twilio_conn_id": self.twilio_conn_id, "store_conn_id": self.store_conn_id, "since": self.since,
            "include_body": self.include_body, "include_from_number": self.include_from_number,
            "poll_interval": self.poll_interval, "store_deadline_seconds": self.store_deadline_seconds,
        })

    def watch_key(self) -> str:
        """The watcher's identity in the store: SHA-256 (hex) of the class path and every kwarg, the same in
        every triggerer and after every restart. Every kwarg: two watchers that differ in any one are
        separate triggers in Airflow, and each must see every message.
        """
        classpath, kwargs = self.serialize()
        text = json.dumps([classpath, kwargs], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def __repr__(self) -> str:  # Airflow logs triggers by repr: no phone number in it
        return (f"<{type(self).__name__} to={mask_number(self.to_number) if self.to_number else None} "
                f"service={mask_sid(self.messaging_service_sid) if self.messaging_service_sid else None} "
                f"keyword={self.keyword!r} pattern={self.pattern!r} conn={self.twilio_conn_id!r}>")

    # -- running ----------------------------------------------------------------------------------

    async def _call(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A store call in a thread, interrupted past ``store_deadline_seconds``
        (:mod:`..store.deadline`).
        """
        return await asyncio.to_thread(_within, self.store_deadline_seconds, call, *args, **kwargs)

    async def _criteria(self) -> ReplyCriteria:
        """Which messages count, from the connection (account, signer, default region)."""
        from airflow_provider_twilio_sms.connection import load_settings
        from airflow_provider_twilio_sms.phone import normalize_number
        from airflow_provider_twilio_sms.replies import ReplyCriteria

        settings = await asyncio.to_thread(load_settings, self.twilio_conn_id)
        since = datetime.fromisoformat(self.since) if self.since else None
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)  # a naive time is read as UTC, as Airflow does
        return ReplyCriteria(
            account_sid=settings.account_sid, conn_id=self.twilio_conn_id, signer=settings.signer,
            to_number=normalize_number(self.to_number, settings.default_region) if self.to_number else None,
            messaging_service_sid=self.messaging_service_sid, body_pattern=self.pattern,
            keywords=tuple(self.keyword), case_sensitive=self.case_sensitive, since=since)

    async def _open(self) -> tuple[SmsStore, ReplyCriteria, int]:
        from airflow_provider_twilio_sms.triggers.sms import _store_for

        store, _url = await _store_for(self.store_conn_id)
        criteria = await self._criteria()
        start = None
        if criteria.since is not None:
            start = await self._call(store.inbound_cursor, criteria.since)
        cursor = await self._call(store.open_event_watch, self.watch_key(), start_after_id=start)
        return store, criteria, cursor

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the store for ever; yield one event per matching message, after moving the cursor past it.

        A round that fails (the store down or past its deadline, the connection missing) is logged and
        tried again, waiting longer each time up to :data:`MAX_RETRY_WAIT`: the watcher never ends.
        """
        key = self.watch_key()
        opened: tuple[SmsStore, ReplyCriteria, int] | None = None
        wait = self.poll_interval
        while True:
            try:
                if opened is None:
                    opened = await self._open()
                    log.info("Watching inbound SMS to %s (watch %s…) from event %d", self._where(), key[:12],
                             opened[2])
                store, criteria, cursor = opened
                async for event, moved in self._round(store, criteria, key, cursor):
                    opened = (store, criteria, moved)
                    if event is not None:
                        yield event
                wait = self.poll_interval
            except Exception as err:  # noqa: BLE001 - the watcher outlives a store or connection failure
                log.warning("Reading inbound SMS for watch %s… failed (%s: %s); trying again in %.0f s",
                            key[:12], type(err).__name__, _short(err), wait)
                opened = None  # start from the stored cursor again: a failed move may have moved it
                await asyncio.sleep(wait)
                wait = min(wait * 2, MAX_RETRY_WAIT)
                continue
            await asyncio.sleep(self.poll_interval)

    async def _round(self, store: SmsStore, criteria: ReplyCriteria, key: str,
                     cursor: int) -> AsyncIterator[tuple[TriggerEvent | None, int]]:
        """One poll: each matching message after ``cursor``, in id order, as (event, new cursor) once the
        cursor has been moved past it; then (None, new cursor) when the cursor was moved past what did not
        match. Ends early (the rest next round) at a message that may still have an insert in flight below
        it, or when another triggerer moved the cursor.
        """
        reads = [(channel, cursor) for channel in criteria.channels()]
        seen = await self._call(store.read_watch, reads, page=PAGE, after_id=cursor)
        rows, through = _in_order(seen.pages)
        done, done_at = cursor, None
        for row in rows:
            payload = self._payload(criteria, row)
            if payload is None:
                done, done_at = row["id"], row["received_at"]
                continue
            if not seen.passable(row["id"], row["received_at"]):
                return  # an insert may still be in flight below it: next round
            moved = await self._advance(store, key, cursor, row["id"], emitted=True)
            if moved is None:  # another triggerer moved the cursor: go on from where it is, next round
                yield None, await self._stored_cursor(store, key)
                return
            cursor = done = moved
            done_at = None
            log.info("Inbound SMS %s (event %d) to %s matched watch %s…: asset event",
                     mask_sid(row["message_sid"]), row["id"], mask_number(row.get("to_number")), key[:12])
            yield TriggerEvent(payload), cursor
        # Past what did not match: up to the settled ids (every message of the channels up to them was in
        # this round's read, and has been looked at), and no further than a full page reached; or up to the
        # last message looked at, when no insert can be in flight below it (a busy number's recent messages,
        # on PostgreSQL, which would otherwise be read again for SETTLE_AFTER).
        target = seen.settled_id if through is None else min(seen.settled_id, through)
        if done_at is not None and done > max(target, cursor) and seen.passable(done, done_at):
            target = done
        if target > cursor and (done > cursor or target - cursor >= SKIP_AHEAD):
            moved = await self._advance(store, key, cursor, target, emitted=False)
            yield None, moved if moved is not None else await self._stored_cursor(store, key)

    async def _advance(self, store: SmsStore, key: str, cursor: int, new: int, *,
                       emitted: bool) -> int | None:
        """Move the cursor from ``cursor`` to ``new``; ``new`` when this trigger moved it, None when another
        did. A move whose answer was lost (the store's deadline passed) is looked up: the cursor names who
        moved it last.

        A trigger cancelled while its move past a message runs (the triggerer stops, or hands the watcher
        to another) will not yield that message's event: once the move is done, it is undone, so that the
        watcher's next run emits the message.
        """
        move = asyncio.ensure_future(self._call(store.advance_event_watch, key, cursor, new,
                                                mover=self._mover, emitted=emitted))
        try:
            moved = await asyncio.shield(move)
        except asyncio.CancelledError:
            if emitted:
                await self._undo(store, key, move, cursor, new)
            raise
        except Exception:
            found = await self._call(store.event_watch_cursor, key)
            if found == (new, self._mover):
                return new
            raise
        return new if moved else None

    async def _undo(self, store: SmsStore, key: str, move: asyncio.Future, cursor: int, new: int) -> None:
        """Once ``move`` (of the cursor from ``cursor`` to ``new``) is over, put the cursor back if this
        trigger moved it and nobody moved it since (whatever ``move`` answered: its answer may be lost).
        """
        try:
            await asyncio.wait({move})  # the store's deadline bounds it
            if await self._call(store.rewind_event_watch, key, new, cursor, mover=self._mover):
                log.info("Cancelled while passing event %d: the cursor is back at %d", new, cursor)
        except Exception as err:  # noqa: BLE001 - cancelled anyway: say what may be lost
            log.warning("Cancelled while passing event %d, and could not move the cursor back (%s): that "
                        "message's asset event may be lost", new, type(err).__name__)

    async def _stored_cursor(self, store: SmsStore, key: str) -> int:
        found = await self._call(store.event_watch_cursor, key)
        if found is None:  # deleted by hand: run() opens the watch again
            raise LookupError("the watch's cursor is no longer in the store")
        return found[0]

    def _payload(self, criteria: ReplyCriteria, row: dict[str, Any]) -> dict[str, Any] | None:
        """The asset event's payload when ``row`` is a message this watcher fires on, else None."""
        from airflow_provider_twilio_sms.replies import capture

        if not criteria.concerns(row) or criteria.is_opt_out(row):
            return None
        body = row.get("body") or ""
        captured = capture(body, body_pattern=self.pattern, keywords=self.keyword,
                           case_sensitive=self.case_sensitive)
        if captured is None:
            return None
        groups, named, keyword = captured
        payload: dict[str, Any] = {
            "message_sid": row["message_sid"], "event_id": row["id"],
            "received_at": row["received_at"].isoformat(), "from": mask_number(row.get("from_number")),
            "to": mask_number(row.get("to_number")), "keyword": keyword, "groups": groups,
            "named_groups": named,
        }
        if self.include_body:
            payload["body"] = body
        if self.include_from_number:
            payload["from_number"] = row.get("from_number")
        return payload

    def _where(self) -> str:
        return mask_number(self.to_number) if self.to_number else mask_sid(self.messaging_service_sid)


def _in_order(pages: list[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], int | None]:
    """The rows of one round's channel reads in id order, and the id through which they hold every message
    of the channels (None: every one after the cursor). With two channels a full page may stop short of the
    other's rows: rows above the lowest last id of a full page are left for the next round.
    """
    full = [rows[-1]["id"] for rows in pages if len(rows) >= PAGE]
    through = min(full) if full else None
    merged = {row["id"]: row for rows in pages for row in rows if through is None or row["id"] <= through}
    return [merged[i] for i in sorted(merged)], through


def _short(err: BaseException) -> str:
    from airflow_provider_twilio_sms.privacy import safe_for_log

    return safe_for_log(err, limit=200)

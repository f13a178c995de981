"""Scheduled messages in the stand-in: held until ``SendAt``, released early on request, canceled as Twilio
cancels them.

A message created with ``ScheduleType=fixed`` through a Messaging Service is ``scheduled`` (no callback
for it: it is the initial status). At its ``SendAt`` it is released: ``queued`` (called back), then the
usual lifecycle (``sent``, then ``delivered`` or the outcome set for the recipient). Tests need not wait
15 minutes: ``POST /_sim/scheduled/release`` (``{"sid": ...}``, or every held message) releases at once.

``POST .../Messages/{Sid}.json`` with ``Status=canceled`` cancels a message only while it is held:
``canceled`` (called back, terminal). Once released, or canceled already, Twilio answers 30409 ("This
message cannot be canceled"). Release and cancel take the message out of the held set under one lock, so
exactly one of them wins a race.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from airflow_provider_twilio_sms.simulator.errors import TwilioApiError, invalid_parameter

NOT_CANCELABLE = 30409


class ScheduledMessages:
    """The held messages: ``sid -> SendAt``. Thread-safe.

    ``advance(sid, status, error_code, now)`` moves a stored message on (None when it is gone);
    ``on_status(sid, status, error_code, snapshot)`` calls its StatusCallback back; ``start(snapshot)``
    plays out the rest of its lifecycle once released; ``call_later(delay, fn, *args, key=sid)`` runs the
    release at SendAt.
    """

    def __init__(self, *, advance: Callable[..., dict[str, Any] | None],
                 on_status: Callable[[str, str, int | None, dict[str, Any]], None],
                 start: Callable[[dict[str, Any]], Any], call_later: Callable[..., None],
                 clock: Callable[[], datetime], exists: Callable[[str], bool], max_held: int = 10_000):
        self._advance, self._on_status, self._start = advance, on_status, start
        self._call_later, self._clock, self._exists = call_later, clock, exists
        self._max_held = max_held
        self._lock = threading.Lock()
        self._held: dict[str, datetime] = {}

    def hold(self, sid: str, send_at: datetime) -> None:
        """Keep ``sid`` scheduled until ``send_at`` (on the stand-in's clock), then release it."""
        with self._lock:
            self._held[sid] = send_at
            if len(self._held) > self._max_held:  # messages the book forgot are never released
                self._held = {s: at for s, at in self._held.items() if self._exists(s)}
        delay = max(0.0, (send_at - self._clock()).total_seconds())
        self._call_later(delay, self.release, sid, key=sid)

    def release(self, sid: str) -> bool:
        """Send ``sid`` now (its SendAt came, or a test asked): False when it is no longer held."""
        with self._lock:
            if self._held.pop(sid, None) is None:
                return False
        snapshot = self._advance(sid, "queued", None, self._clock())
        if snapshot is None:
            return False
        self._on_status(sid, "queued", None, snapshot)
        self._start(snapshot)
        return True

    def release_all(self) -> list[str]:
        with self._lock:
            sids = list(self._held)
        return [sid for sid in sids if self.release(sid)]

    def cancel(self, sid: str) -> dict[str, Any]:
        """Twilio's ``Status=canceled``: the canceled message, or 30409 when it is not held any more."""
        with self._lock:
            if self._held.pop(sid, None) is None:
                raise TwilioApiError(NOT_CANCELABLE, "This message cannot be canceled", 400)
        snapshot = self._advance(sid, "canceled", None, self._clock())
        if snapshot is None:
            raise TwilioApiError(20404, f"The requested resource {sid} was not found", 404)
        self._on_status(sid, "canceled", None, snapshot)
        return snapshot

    def held(self) -> list[dict[str, str]]:
        with self._lock:
            return [{"sid": sid, "send_at": at.isoformat()} for sid, at in self._held.items()]

    def clear(self) -> None:
        with self._lock:
            self._held.clear()


def check_update_status(value: str) -> None:
    """The contract's ``Status`` of an update: ``canceled`` only."""
    if value != "canceled":
        raise invalid_parameter(f"Invalid Status: {value!r}; the only status a message can be updated to "
                                "is canceled")

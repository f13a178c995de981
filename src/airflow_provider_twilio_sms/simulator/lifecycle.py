"""How an accepted message plays out over time, and the timer that drives it.

``sent`` after one ``status_delay``, then the final status after another: ``delivered`` by default, or
what :meth:`Lifecycle.set_outcome` chose for the recipient (``undelivered`` with 30003/30005/30006/
30007..., ``failed`` straight from the queue). A WhatsApp message goes on to ``read`` after one more
delay (a recipient with read receipts off: ``set_outcome(to, "delivered")``); one the stand-in must refuse
for the session window fails at once with 63016 (``content``). Each step updates the message (so ``GET``
sees it move) and, when the message has a ``StatusCallback``, is called back; the initial
``queued``/``accepted`` never is. A scheduled message (``ScheduleType=fixed``) starts when ``scheduling``
releases it at its ``SendAt``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_provider_twilio_sms.privacy import mask_sid

log = logging.getLogger(__name__)

OUTCOMES = ("delivered", "undelivered", "failed", "read")


class Scheduler:
    """One thread that runs callables when they fall due. Entries for a gone key are dropped when the
    heap grows past ``compact_at``, so a long ``status_delay`` cannot make memory grow without bound.
    """

    def __init__(self, is_alive: Callable[[Any], bool] = lambda key: True, compact_at: int = 50_000):
        self._heap: list[tuple[float, int, Any, Callable[..., None], tuple]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._is_alive = is_alive
        self._compact_at = compact_at
        self._thread = threading.Thread(target=self._run, name="twilio-sim-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any, key: Any = None) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), key, fn, args))
            if len(self._heap) > self._compact_at:
                self._heap = [e for e in self._heap if e[2] is None or self._is_alive(e[2])]
                heapq.heapify(self._heap)
                self._compact_at = max(self._compact_at, 2 * len(self._heap))
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopping:
                    return
                _, _, _, fn, args = heapq.heappop(self._heap)
            try:
                fn(*args)
            except Exception:  # one bad step must not stop every later one
                log.exception("Twilio stand-in: a scheduled step failed")


@dataclass
class Outcome:
    """How messages to a number end: ``delivered``, or ``undelivered``/``failed`` with an ErrorCode
    (30003/30008 unless given).
    """

    status: str = "delivered"
    error_code: int | None = None

    def __post_init__(self) -> None:
        if self.status not in OUTCOMES:
            raise ValueError(f"outcome status must be one of {', '.join(OUTCOMES)}, not {self.status!r}")
        if self.status in ("delivered", "read") and self.error_code is not None:
            raise ValueError(f"a {self.status} message carries no error code")
        if self.status not in ("delivered", "read") and self.error_code is None:
            self.error_code = 30003 if self.status == "undelivered" else 30008
        code = self.error_code
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise ValueError(f"error_code must be an integer (30003, 30005, ...), not {self.error_code!r}")


class Lifecycle:
    """Plans each accepted message's statuses and applies them when due.

    ``advance(sid, status, error_code, now)`` updates the stored message and returns its snapshot (None
    when it is gone); ``callback(sid, status, error_code, snapshot)`` reports a step to its StatusCallback.
    """

    def __init__(self, scheduler: Scheduler, advance: Callable[..., dict[str, Any] | None],
                 callback: Callable[[str, str, int | None, dict[str, Any]], None],
                 clock: Callable[[], datetime]):
        self._scheduler = scheduler
        self._advance = advance
        self._callback = callback
        self._clock = clock
        self._lock = threading.Lock()
        self._outcomes: dict[str, Outcome] = {}
        self.status_delay = 0.05
        self.out_of_order = False

    def set_outcome(self, to: str, status: str = "delivered", error_code: int | None = None) -> Outcome:
        outcome = Outcome(status, error_code)
        if status == "read" and not to.startswith("whatsapp:"):
            raise ValueError("read is reported on WhatsApp only: give a whatsapp:+... recipient")
        with self._lock:
            self._outcomes[to] = outcome
        return outcome

    def outcomes(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {to: {"status": o.status, "error_code": o.error_code} for to, o in self._outcomes.items()}

    def clear(self) -> None:
        with self._lock:
            self._outcomes.clear()

    def plan(self, message: dict[str, Any], outcome: Outcome | None = None) -> list[tuple[str, int | None]]:
        """Schedule the message's steps: as ``outcome`` says (a refusal decided at create), else as the
        recipient's outcome says, else ``delivered`` (``read`` on WhatsApp).
        """
        whatsapp = str(message["to"]).startswith("whatsapp:")
        with self._lock:
            outcome = outcome or self._outcomes.get(message["to"]) or Outcome(
                "read" if whatsapp else "delivered")
        steps: list[tuple[str, int | None]]
        if outcome.status == "failed":
            steps = [("failed", outcome.error_code)]
        elif outcome.status == "read":
            steps = [("sent", None), ("delivered", None), ("read", None)]
        else:
            steps = [("sent", None), (outcome.status, outcome.error_code)]
        if self.out_of_order:
            steps.reverse()
        for index, (status, code) in enumerate(steps, start=1):
            self._scheduler.call_later(self.status_delay * index, self._step, message["sid"], status,
                                       code, key=message["sid"])
        return steps

    def _step(self, sid: str, status: str, error_code: int | None) -> None:
        snapshot = self._advance(sid, status, error_code, self._clock())
        if snapshot is None:
            log.debug("Twilio stand-in: message %s is gone; no %s step", mask_sid(sid), status)
            return
        self._callback(sid, status, error_code, snapshot)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)

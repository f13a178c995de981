"""Status callbacks as Twilio sends them: signed form POSTs, retried on 5xx or no answer.

Each delivery is ``POST <StatusCallback>`` with ``Content-Type: application/x-www-form-urlencoded``,
``User-Agent: TwilioProxy/1.1``, ``X-Twilio-Signature`` (HMAC-SHA1 of the URL and the sorted params,
keyed by the account's primary Auth Token) and ``I-Twilio-Idempotency-Token``, unique per delivery and
the same on each retry of it. Params: ``MessageSid``, ``SmsSid``, ``SmsStatus``, ``MessageStatus``,
``AccountSid``, ``From``, ``To``, ``ApiVersion``, ``MessagingServiceSid`` when the message has one,
``ErrorCode`` for undelivered/failed, ``RawDlrDoneDate`` for delivered/undelivered.

A 5xx, a timeout or a refused connection is retried (``retries`` times, backoff ``retry_delay`` doubling
each time) as Twilio does with its connection overrides; any other answer, 4xx included, is final.
On demand each status is also sent twice (``duplicate``; a new idempotency token unless
``duplicate_same_token``), as Twilio sometimes does. Deliveries for one message keep their order
(one worker per message), different messages go out in parallel.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from airflow_provider_twilio_sms.privacy import mask_sid
from airflow_provider_twilio_sms.signature import compute_signature
from airflow_provider_twilio_sms.simulator.messages import API_VERSION

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.simulator.lifecycle import Scheduler

log = logging.getLogger(__name__)

USER_AGENT = "TwilioProxy/1.1"
FORM = "application/x-www-form-urlencoded"


def idempotency_token() -> str:
    return secrets.token_hex(16)


def signed_headers(url: str, params: dict[str, str], auth_token: str, token: str) -> dict[str, str]:
    """The headers Twilio sends with a webhook request."""
    return {"X-Twilio-Signature": compute_signature(url, params, auth_token),
            "I-Twilio-Idempotency-Token": token, "User-Agent": USER_AGENT, "Content-Type": FORM,
            "X-Home-Region": "us1"}


def status_params(message: dict[str, Any], status: str, error_code: int | None,
                  now: datetime) -> dict[str, str]:
    """The form Twilio posts to a StatusCallback for ``message`` reaching ``status``."""
    sid = message["sid"]
    params = {"MessageSid": sid, "SmsSid": sid, "SmsStatus": status, "MessageStatus": status,
              "AccountSid": message["account_sid"], "From": message["from"] or "", "To": message["to"],
              "ApiVersion": API_VERSION}
    if message.get("messaging_service_sid"):
        params["MessagingServiceSid"] = message["messaging_service_sid"]
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    if status in ("delivered", "undelivered"):
        params["RawDlrDoneDate"] = now.astimezone(timezone.utc).strftime("%y%m%d%H%M")
    return params


@dataclass
class CallbackSettings:
    """How the stand-in delivers webhooks: retries after a failed attempt, the delay between them, the
    answer timeout, and whether each callback is sent twice (with the same or a fresh idempotency token).
    """

    retries: int = 3
    retry_delay: float = 0.2
    timeout: float = 15.0
    duplicate: bool = False
    duplicate_same_token: bool = False

    def update(self, **changes: Any) -> None:
        for name, value in changes.items():
            if name not in ("retries", "retry_delay", "timeout", "duplicate", "duplicate_same_token"):
                raise ValueError(f"unknown callback setting {name!r}")
            kind = type(getattr(self, name))
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, not {value!r}")
            if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                         or value < 0):
                raise ValueError(f"{name} must be a number >= 0, not {value!r}")
            setattr(self, name, kind(value))


@dataclass
class Delivery:
    """One webhook POST to make: where, what, signed for which account, and which attempt it is."""

    url: str
    params: dict[str, str]
    account_sid: str
    key: str  # the message SID: one message's deliveries stay in order
    token: str = field(default_factory=idempotency_token)
    attempt: int = 1
    duplicate: bool = False


class CallbackSender:
    """Worker threads that POST deliveries and record what each got back."""

    def __init__(self, scheduler: Scheduler, token_for: Callable[[str], str | None], *, workers: int = 4,
                 max_records: int = 10_000):
        self.settings = CallbackSettings()
        self._scheduler = scheduler
        self._token_for = token_for
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(workers)]
        self._threads = [threading.Thread(target=self._work, args=(q,), name=f"twilio-sim-callbacks-{i}",
                                          daemon=True) for i, q in enumerate(self._queues)]
        self._records: deque[dict[str, Any]] = deque(maxlen=max_records)
        self._max_pending = max(100, max_records)
        self._recorded = threading.Condition()
        self._total = 0
        self._stopping = False

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping = True
        for q in self._queues:
            q.put(None)
        for thread in self._threads:  # daemon threads: one stuck on a slow webhook is left behind
            if thread.is_alive():
                thread.join(timeout=1)

    def send(self, url: str, params: dict[str, str], account_sid: str, key: str) -> None:
        """Deliver now, and once more a little later when duplicates are on."""
        first = Delivery(url, params, account_sid, key)
        self._enqueue(first)
        if self.settings.duplicate:
            token = first.token if self.settings.duplicate_same_token else idempotency_token()
            again = Delivery(url, dict(params), account_sid, key, token=token, duplicate=True)
            self._scheduler.call_later(0.01, self._enqueue, again, key=key)

    def _enqueue(self, delivery: Delivery) -> None:
        if self._stopping:
            return
        inbox = self._queues[zlib.crc32(delivery.key.encode()) % len(self._queues)]
        if inbox.qsize() >= self._max_pending:  # a webhook far slower than the sends: keep memory bounded
            self._record(delivery, None, "dropped: too many callbacks waiting", 0.0)
            return
        inbox.put(delivery)

    def _work(self, inbox: queue.SimpleQueue) -> None:
        import requests

        session = requests.Session()
        session.trust_env = False  # callbacks go where the message said, never through a proxy
        while True:
            delivery = inbox.get()
            if delivery is None:
                session.close()
                return
            self._deliver(session, delivery)

    def _deliver(self, session: Any, delivery: Delivery) -> None:
        auth_token = self._token_for(delivery.account_sid)
        answer: int | None = None
        error = None
        started = time.monotonic()
        if auth_token is None:
            error = "account no longer configured"
        else:
            headers = signed_headers(delivery.url, delivery.params, auth_token, delivery.token)
            try:
                response = session.post(delivery.url, data=urlencode(delivery.params), headers=headers,
                                        timeout=self.settings.timeout, allow_redirects=False)
                answer = response.status_code
                response.close()
            except Exception as err:  # noqa: BLE001 - an unreachable webhook is an outcome to record
                error = type(err).__name__
        retry = (answer is None or answer >= 500) and auth_token is not None \
            and delivery.attempt <= self.settings.retries and not self._stopping
        log.log(logging.DEBUG if answer is not None and answer < 300 else logging.INFO,
                "Twilio stand-in: %s callback for %s to %s answered %s (attempt %d)%s",
                delivery.params.get("MessageStatus"), mask_sid(delivery.key), urlsplit(delivery.url).path,
                answer or error, delivery.attempt, "; will retry" if retry else "")
        self._record(delivery, answer, error, time.monotonic() - started)
        if retry:
            again = Delivery(delivery.url, delivery.params, delivery.account_sid, delivery.key,
                             token=delivery.token, attempt=delivery.attempt + 1, duplicate=delivery.duplicate)
            backoff = self.settings.retry_delay * (2 ** (delivery.attempt - 1))
            self._scheduler.call_later(backoff, self._enqueue, again, key=delivery.key)

    def _record(self, delivery: Delivery, answer: int | None, error: str | None, elapsed: float) -> None:
        with self._recorded:
            self._records.append({
                "url": delivery.url, "sid": delivery.params.get("MessageSid"),
                "status": delivery.params.get("MessageStatus"), "answer": answer, "error": error,
                "attempt": delivery.attempt, "idempotency_token": delivery.token,
                "duplicate": delivery.duplicate,
                "params": dict(delivery.params), "elapsed_ms": round(elapsed * 1000, 1),
                "at": datetime.now(timezone.utc).isoformat(),
            })
            self._total += 1
            self._recorded.notify_all()

    def records(self) -> list[dict[str, Any]]:
        with self._recorded:
            return [dict(r) for r in self._records]

    def wait(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """The records once at least ``count`` deliveries were made (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        with self._recorded:
            while self._total < count and time.monotonic() < deadline:
                self._recorded.wait(deadline - time.monotonic())
            return [dict(r) for r in self._records]

    def clear(self) -> None:
        with self._recorded:
            self._records.clear()
            self._total = 0

"""Status callbacks as Twilio sends them: signed form POSTs, retried on 5xx or no answer.

Each delivery is ``POST <StatusCallback>`` with ``Content-Type: application/x-www-form-urlencoded``,
``User-Agent: TwilioProxy/1.1``, ``X-Twilio-Signature`` (HMAC-SHA1 of the URL and the sorted params,
keyed by the account's primary Auth Token) and ``I-Twilio-Idempotency-Token``, unique per delivery and
the same on each retry of it. Params: ``MessageSid``, ``SmsSid``, ``SmsStatus``, ``MessageStatus``,
``AccountSid``, ``From``, ``To``, ``ApiVersion``, ``MessagingServiceSid`` when the message has one,
``ErrorCode`` for undelivered/failed, ``RawDlrDoneDate`` for delivered/undelivered; on WhatsApp (To and
From ``whatsapp:+...``) also ``ChannelPrefix=whatsapp`` and ``ChannelToAddress`` (the number without the
prefix), and the statuses go on to ``read``.

Retries follow Twilio's webhook connection overrides in the URL's fragment (:class:`ConnectionOverrides`),
which Twilio neither sends nor signs: ``#rc=`` retries (0 to 5; default 1), ``#rp=`` which failures are
retried (``ct`` a failed connect, ``rt`` a read timeout, ``4xx``, ``5xx``, ``all``; default ``ct`` only, so
without overrides a 503 is final), ``#ct=``/``#rt=`` connect and read timeouts and ``#tt=`` the total time
for all attempts, in milliseconds (defaults 5000, 15000, 15000). The backoff between attempts starts at
``retry_delay`` and doubles. The ``retries`` and ``timeout`` settings, when set, replace ``rc`` and the
timeouts for every URL (a test knob, not something Twilio has).
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
from urllib.parse import parse_qsl, urlencode, urlsplit

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
    if status in ("delivered", "undelivered") and not str(message["to"]).startswith("whatsapp:"):
        params["RawDlrDoneDate"] = now.astimezone(timezone.utc).strftime("%y%m%d%H%M")
    if str(message["to"]).startswith("whatsapp:"):
        params["ChannelPrefix"] = "whatsapp"
        params["ChannelToAddress"] = str(message["to"])[len("whatsapp:"):]
    return params


RETRY_CLASSES = ("ct", "rt", "4xx", "5xx")


@dataclass(frozen=True)
class ConnectionOverrides:
    """Twilio's webhook connection overrides, as a URL's fragment gives them (``#rc=3&rp=ct,rt,5xx``).

    Values outside Twilio's limits are brought within them; unknown keys (``e`` edge, ``sni``) and
    unknown retry classes are ignored.
    """

    retry_count: int = 1  # rc: 0..5
    retry_policy: frozenset[str] = frozenset({"ct"})  # rp: a set of RETRY_CLASSES
    connect_timeout: float = 5.0  # ct: 100..10000 ms
    read_timeout: float = 15.0  # rt: 100..15000 ms
    total_time: float = 15.0  # tt: 100..15000 ms, every attempt of one delivery included

    @classmethod
    def split(cls, url: str) -> tuple[str, ConnectionOverrides]:
        """(the URL Twilio requests and signs: without its fragment, the overrides its fragment sets)."""
        base, _, fragment = url.partition("#")
        found: dict[str, Any] = {}
        for key, value in parse_qsl(fragment, keep_blank_values=True):
            try:
                if key == "rc":
                    found["retry_count"] = min(5, max(0, int(value)))
                elif key == "rp":
                    wanted = {part.strip().lower() for part in value.split(",")}
                    found["retry_policy"] = frozenset(RETRY_CLASSES if "all" in wanted
                                                      else wanted.intersection(RETRY_CLASSES))
                elif key in ("ct", "rt", "tt"):
                    limit = 10_000 if key == "ct" else 15_000
                    name = {"ct": "connect_timeout", "rt": "read_timeout", "tt": "total_time"}[key]
                    found[name] = min(limit, max(100, int(value))) / 1000
            except ValueError:
                log.warning("Twilio stand-in: connection override %s=%r is not a number; ignored", key, value)
        return base, cls(**found)

    def retries(self, failure: str) -> bool:
        """Whether a delivery that failed with ``failure`` (one of RETRY_CLASSES) is tried again."""
        return failure in self.retry_policy


def failure_class(answer: int | None, error: BaseException | None) -> str | None:
    """What kind of failure an attempt was, in Twilio's retry classes; None for a 1xx-3xx answer."""
    import requests

    if error is not None:
        if isinstance(error, requests.ConnectTimeout) or not isinstance(error, requests.Timeout):
            return "ct"  # refused, reset or unreachable before an answer could start
        return "rt"
    if answer is not None and 400 <= answer < 500:
        return "4xx"
    if answer is not None and answer >= 500:
        return "5xx"
    return None


@dataclass
class CallbackSettings:
    """How the stand-in delivers webhooks: retries after a failed attempt, the delay between them, the
    answer timeout, and whether each callback is sent twice (with the same or a fresh idempotency token).
    """

    retries: int | None = None  # None: each URL's #rc (as Twilio); a number: that many for every URL
    retry_delay: float = 0.2
    timeout: float | None = None  # None: each URL's #ct/#rt (as Twilio); seconds: both, for every URL
    duplicate: bool = False
    duplicate_same_token: bool = False

    def update(self, **changes: Any) -> None:
        for name, value in changes.items():
            if name not in ("retries", "retry_delay", "timeout", "duplicate", "duplicate_same_token"):
                raise ValueError(f"unknown callback setting {name!r}")
            if name in ("retries", "timeout") and value is None:
                setattr(self, name, None)
                continue
            kind = {"retries": int, "timeout": float}.get(name) or type(getattr(self, name))
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
    first_at: float | None = None  # monotonic time of the first attempt (Twilio's #tt counts from it)


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
        url, overrides = ConnectionOverrides.split(delivery.url)
        answer: int | None = None
        error = None
        failure = None
        started = time.monotonic()
        if delivery.first_at is None:
            delivery.first_at = started
        if auth_token is None:
            error = "account no longer configured"
        else:
            headers = signed_headers(url, delivery.params, auth_token, delivery.token)
            timeout = self.settings.timeout
            try:
                response = session.post(url, data=urlencode(delivery.params), headers=headers,
                                        timeout=(overrides.connect_timeout, overrides.read_timeout)
                                        if timeout is None else timeout, allow_redirects=False)
                answer = response.status_code
                response.close()
            except Exception as err:  # noqa: BLE001 - an unreachable webhook is an outcome to record
                error = type(err).__name__
                failure = failure_class(None, err)
            else:
                failure = failure_class(answer, None)
        retries = overrides.retry_count if self.settings.retries is None else self.settings.retries
        in_time = self.settings.retries is not None \
            or time.monotonic() - delivery.first_at < overrides.total_time
        retry = failure is not None and overrides.retries(failure) and auth_token is not None \
            and delivery.attempt <= retries and in_time and not self._stopping
        log.log(logging.DEBUG if answer is not None and answer < 300 else logging.INFO,
                "Twilio stand-in: %s callback for %s to %s answered %s (attempt %d)%s",
                delivery.params.get("MessageStatus"), mask_sid(delivery.key), urlsplit(delivery.url).path,
                answer or error, delivery.attempt, "; will retry" if retry else "")
        self._record(delivery, answer, error, time.monotonic() - started)
        if retry:
            again = Delivery(delivery.url, delivery.params, delivery.account_sid, delivery.key,
                             token=delivery.token, attempt=delivery.attempt + 1, duplicate=delivery.duplicate,
                             first_at=delivery.first_at)
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

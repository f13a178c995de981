"""The stand-in's message resources: Twilio's JSON shape, status that only moves forward, bounded memory.

A message looks exactly as ``GET .../Messages/{Sid}.json`` returns it (``sid``, ``status``,
``date_created`` in RFC 2822, ``num_segments`` as a string, ...). Its status advances
queued/accepted -> sent -> delivered (or undelivered/failed with ``error_code``), and on WhatsApp on to
``read``; a lower or equal status never replaces a higher one, so a late ``sent`` cannot undo ``delivered``,
and no final status is left except ``delivered`` for ``read``. A WhatsApp message is one segment,
whatever its length (WhatsApp is not sent as SMS segments); a Content template's text is the template
filled in. Only the newest
``max_messages`` are kept: the oldest are forgotten first.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.simulator.encoding import segment_count, smart_encode
from airflow_provider_twilio_sms.simulator.errors import DELIVERY_ERRORS

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.simulator.validation import CreateRequest

API_VERSION = "2010-04-01"
PRICE_PER_SEGMENT = 0.0079
_LINK = re.compile(r"https?://[^\s]+", re.IGNORECASE)
TERMINAL = frozenset({"delivered", "undelivered", "failed", "canceled", "read"})
_RANK = {"scheduled": 0, "accepted": 0, "queued": 1, "sending": 2, "sent": 3, "receiving": 0, "received": 4,
         **{status: 4 for status in TERMINAL}, "read": 5}


def status_rank(status: str) -> int:
    return _RANK.get(status, 0)


def moves_to(current: str, status: str) -> bool:
    """Whether a message in ``current`` takes ``status``: forward only, and out of a final status only
    from ``delivered`` to ``read``.
    """
    if current in TERMINAL and not (current == "delivered" and status == "read"):
        return False
    return status_rank(status) > status_rank(current)


def rfc2822(moment: datetime) -> str:
    """Twilio's date format: ``Thu, 24 Aug 2023 05:01:45 +0000`` (always GMT)."""
    return moment.strftime("%a, %d %b %Y %H:%M:%S +0000")


def shorten_links(body: str) -> str:
    """What Link Shortening (``ShortenUrls=true`` through a Messaging Service) sends: each http(s) URL
    replaced by a short link on the service's domain (here Twilio's own, ``twil.io``).
    """
    return _LINK.sub(lambda _: "https://twil.io/" + secrets.token_urlsafe(6), body)


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class StoredMessage:
    """A message as the stand-in keeps it: its public resource plus what only the stand-in needs."""

    resource: dict[str, Any]  # the public JSON, as Twilio returns it
    seq: int
    created_at: datetime
    sent_at: datetime | None = None
    status_callback: str | None = None
    service_number: str | None = None  # the sender a messaging service picks when the message leaves


class MessageBook:
    """Messages by SID, newest last. Thread-safe; every read returns copies."""

    def __init__(self, max_messages: int = 10_000):
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._messages: OrderedDict[str, StoredMessage] = OrderedDict()
        self._seq = 0

    def _store(self, stored: StoredMessage) -> None:
        with self._lock:
            self._seq += 1
            stored.seq = self._seq
            self._messages[stored.resource["sid"]] = stored
            while len(self._messages) > self.max_messages:
                self._messages.popitem(last=False)

    def add_outbound(self, account_sid: str, request: CreateRequest, now: datetime,
                     service_number: str | None) -> dict[str, Any]:
        body = smart_encode(request.text) if request.smart_encoded else request.text
        if request.shorten_urls:
            body = shorten_links(body)
        segments = 1 if request.channel == "whatsapp" else segment_count(body)[0]
        sid = new_sid("MM" if request.media_urls else "SM")
        if request.send_at is not None:
            status = "scheduled"
        else:
            status = "accepted" if request.messaging_service_sid and not request.from_ else "queued"
        resource = _resource(sid, account_sid, now, body=body, to=request.to, from_=request.from_,
                             status=status, direction="outbound-api", num_media=len(request.media_urls),
                             num_segments=segments, messaging_service_sid=request.messaging_service_sid)
        self._store(StoredMessage(resource, 0, now, status_callback=request.status_callback,
                                  service_number=service_number))
        return dict(resource)

    def add_inbound(self, sid: str, account_sid: str, now: datetime, *, from_: str, to: str, body: str,
                    num_media: int, num_segments: int, messaging_service_sid: str | None) -> dict[str, Any]:
        resource = _resource(sid, account_sid, now, body=body, to=to, from_=from_, status="received",
                             direction="inbound", num_media=num_media, num_segments=num_segments,
                             messaging_service_sid=messaging_service_sid)
        resource["date_sent"] = rfc2822(now)
        resource["price"], resource["price_unit"] = f"{-PRICE_PER_SEGMENT * num_segments:.5f}", "USD"
        self._store(StoredMessage(resource, 0, now, sent_at=now))
        return dict(resource)

    def advance(self, sid: str, status: str, error_code: int | None, now: datetime) -> dict[str, Any] | None:
        """Move the message to ``status`` unless it is already there or further; its snapshot, or None
        when the message is gone (forgotten or deleted).
        """
        with self._lock:
            stored = self._messages.get(sid)
            if stored is None:
                return None
            message = stored.resource
            if message["from"] is None and stored.service_number and status != "canceled":
                message["from"] = stored.service_number  # the service picked its sender
            if moves_to(message["status"], status):
                message["status"] = status
                message["date_updated"] = rfc2822(now)
                if status in ("sent", "delivered", "undelivered") and message["date_sent"] is None:
                    message["date_sent"] = rfc2822(now)
                    stored.sent_at = now
                if status == "sent" and message["price"] is None:
                    message["price"] = f"{-PRICE_PER_SEGMENT * int(message['num_segments']):.5f}"
                if error_code is not None:
                    message["error_code"] = error_code
                    message["error_message"] = DELIVERY_ERRORS.get(error_code, "Unknown error")
            return dict(message)

    def callback_url(self, sid: str) -> str | None:
        with self._lock:
            stored = self._messages.get(sid)
            return stored.status_callback if stored else None

    def exists(self, sid: str) -> bool:
        return sid in self._messages

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            stored = self._messages.get(sid)
            return dict(stored.resource) if stored else None

    def account_of(self, sid: str) -> str | None:
        with self._lock:
            stored = self._messages.get(sid)
            return stored.resource["account_sid"] if stored else None

    def delete(self, sid: str) -> bool:
        with self._lock:
            return self._messages.pop(sid, None) is not None

    def redact(self, sid: str, now: datetime) -> dict[str, Any] | None:
        """Twilio's ``POST .../Messages/{Sid}.json`` with ``Body=""``: the body is erased."""
        with self._lock:
            stored = self._messages.get(sid)
            if stored is None:
                return None
            stored.resource["body"] = ""
            stored.resource["date_updated"] = rfc2822(now)
            return dict(stored.resource)

    def snapshot(self, account_sid: str | None = None) -> list[StoredMessage]:
        """Stored messages (copies), newest first, of one account or all."""
        with self._lock:
            rows = [StoredMessage(dict(m.resource), m.seq, m.created_at, m.sent_at, m.status_callback,
                                  m.service_number)
                    for m in self._messages.values()
                    if account_sid is None or m.resource["account_sid"] == account_sid]
        rows.reverse()
        return rows

    def __len__(self) -> int:
        return len(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()


def _resource(sid: str, account_sid: str, now: datetime, *, body: str, to: str, from_: str | None,
              status: str, direction: str, num_media: int, num_segments: int,
              messaging_service_sid: str | None) -> dict[str, Any]:
    base = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
    return {
        "account_sid": account_sid, "api_version": API_VERSION, "body": body,
        "date_created": rfc2822(now), "date_sent": None, "date_updated": rfc2822(now),
        "direction": direction, "error_code": None, "error_message": None, "from": from_,
        "messaging_service_sid": messaging_service_sid, "num_media": str(num_media),
        "num_segments": str(num_segments), "price": None, "price_unit": "USD", "sid": sid, "status": status,
        "subresource_uris": {"media": f"{base}/Media.json", "feedback": f"{base}/Feedback.json"},
        "to": to, "uri": f"{base}.json",
    }

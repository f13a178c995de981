"""Inbound SMS as Twilio delivers them to a number's webhook, and the opt-outs they cause.

The webhook gets a signed form POST (same headers as a status callback) with ``MessageSid``,
``SmsSid``, ``SmsMessageSid``, ``AccountSid``, ``MessagingServiceSid`` (when the number belongs to one),
``From``, ``To``, ``Body``, ``NumMedia``, ``NumSegments``, ``MediaUrlN``/``MediaContentTypeN``,
``SmsStatus=received``, ``ApiVersion``, ``FromCountry``/``ToCountry`` (and empty city/state/zip), and
``OptOutType`` when the whole body, trimmed and in any case, is one of Twilio's default keywords:
STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT -> ``STOP``; START, YES, UNSTOP -> ``START``;
HELP, INFO -> ``HELP``.

As with Twilio, a STOP blocks further messages from that number to the sender (21610) until the sender
opts back in with a START keyword.

A WhatsApp message (From and To ``whatsapp:+...``) carries ``ProfileName`` (the user's WhatsApp profile
name) and ``WaId`` (their WhatsApp ID: the number's digits without ``+``), and no ``OptOutType``: Twilio's
opt-out keywords are an SMS feature (a WhatsApp user blocks the business in WhatsApp instead).
"""

from __future__ import annotations

import mimetypes
import threading
from typing import Any

from airflow_provider_twilio_sms.simulator.magic_numbers import country_of
from airflow_provider_twilio_sms.simulator.messages import API_VERSION

STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})


def opt_out_type(body: str | None) -> str | None:
    """``STOP``, ``START`` or ``HELP`` when the whole body is such a keyword ("Stop please" is not)."""
    word = (body or "").strip().upper()
    if word in STOP_KEYWORDS:
        return "STOP"
    if word in START_KEYWORDS:
        return "START"
    if word in HELP_KEYWORDS:
        return "HELP"
    return None


def media_content_type(url: str) -> str:
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return guessed or "image/jpeg"


def inbound_params(sid: str, account_sid: str, *, from_: str, to: str, body: str, media_urls: list[str],
                   num_segments: int, messaging_service_sid: str | None,
                   profile_name: str | None = None) -> dict[str, str]:
    params = {
        "ToCountry": country_of(to), "ToState": "", "SmsMessageSid": sid, "NumMedia": str(len(media_urls)),
        "ToCity": "", "FromZip": "", "SmsSid": sid, "FromState": "", "SmsStatus": "received", "FromCity": "",
        "Body": body, "FromCountry": country_of(from_), "To": to, "ToZip": "",
        "NumSegments": str(num_segments),
        "MessageSid": sid, "AccountSid": account_sid, "From": from_, "ApiVersion": API_VERSION,
    }
    if messaging_service_sid:
        params["MessagingServiceSid"] = messaging_service_sid
    for index, url in enumerate(media_urls):
        params[f"MediaUrl{index}"] = url
        params[f"MediaContentType{index}"] = media_content_type(url)
    if from_.startswith("whatsapp:"):
        params["ProfileName"] = profile_name or "Stand-in user"
        params["WaId"] = from_[len("whatsapp:"):].lstrip("+")
        return params
    keyword = opt_out_type(body)
    if keyword:
        params["OptOutType"] = keyword
    return params


class OptOutList:
    """(our number, their number) pairs blocked by a STOP; a START removes the block. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocked: set[tuple[str, str]] = set()

    def apply(self, keyword: str | None, our_number: str, their_number: str) -> None:
        with self._lock:
            if keyword == "STOP":
                self._blocked.add((our_number, their_number))
            elif keyword == "START":
                self._blocked.discard((our_number, their_number))

    def blocked(self, our_number: str | None, their_number: str) -> bool:
        return our_number is not None and (our_number, their_number) in self._blocked

    def list(self) -> list[dict[str, str]]:
        with self._lock:
            return [{"number": ours, "blocked": theirs} for ours, theirs in sorted(self._blocked)]

    def clear(self) -> None:
        with self._lock:
            self._blocked.clear()


def describe(answer: Any) -> dict[str, Any]:
    """What the webhook answered, for the caller of ``/_sim/inbound`` (TwiML bodies are short)."""
    return {"status_code": answer.status_code, "content_type": answer.headers.get("Content-Type", ""),
            "body": answer.text[:2000]}

"""Checks a webhook request passes before anything is stored, in order, failing closed.

Unknown connection (404) -> content type (415) -> body size (413, without reading the rest) ->
Twilio's signature over the public URL (403) -> AccountSid of the connection (403) -> well-formed
fields (400). Only then does the store see the request.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from airflow_provider_twilio_sms.signature import verify_signature

if TYPE_CHECKING:
    from starlette.requests import Request

    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
_ADDRESS = re.compile(r"^(\+[1-9]\d{1,14}|\d{3,8}|[A-Za-z0-9 ]{1,11})$")
SETTINGS_TTL_SECONDS = 30.0


class Refused(Exception):
    """The request is refused with ``status``; ``reason`` goes to the (masked) log, never the caller."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class VerifiedRequest:
    settings: TwilioConnectionSettings
    params: dict[str, str]
    query: dict[str, str]


class SettingsCache:
    """Connection settings per conn_id for a short time, so the hot path skips the secrets backend."""

    def __init__(self, ttl: float = SETTINGS_TTL_SECONDS):
        self.ttl = ttl
        self._entries: dict[str, tuple[float, TwilioConnectionSettings | None]] = {}

    def fresh(self, conn_id: str) -> tuple[bool, TwilioConnectionSettings | None]:
        """(True, settings) when cached and not expired: no lookup, no thread hop."""
        cached = self._entries.get(conn_id)
        if cached and cached[0] > time.monotonic():
            return True, cached[1]
        return False, None

    def get(self, conn_id: str) -> TwilioConnectionSettings | None:
        now = time.monotonic()
        hit, settings = self.fresh(conn_id)
        if hit:
            return settings
        settings = _load(conn_id)
        self._entries[conn_id] = (now + self.ttl, settings)
        return settings

    def clear(self) -> None:
        self._entries.clear()


def _load(conn_id: str) -> TwilioConnectionSettings | None:
    from airflow_provider_twilio_sms.connection import load_settings
    from airflow_provider_twilio_sms.errors import ConnectionConfigError

    try:
        return load_settings(conn_id)
    except ConnectionConfigError:
        return None
    except Exception as err:  # noqa: BLE001 - a missing connection raises the secrets backend's own type
        if type(err).__name__ == "AirflowNotFoundException":
            return None
        raise


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) anything over ``limit`` bytes without reading past it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise Refused(413, f"declared body of {declared} bytes over the {limit} byte cap")
        except ValueError:
            raise Refused(400, "malformed Content-Length") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"body over the {limit} byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def public_url(settings: TwilioConnectionSettings, request: Request, conn_id: str, kind: str) -> str:
    """The URL Twilio called, as it signed it: the connection's public base + our path + the query."""
    query = request.url.query
    if settings.webhook_base_url:
        url = f"{settings.webhook_base_url}/twilio_sms/webhooks/{conn_id}/{kind}"
    else:  # no public base configured: only right when nothing rewrites the URL on the way in
        url = str(request.url.replace(query=""))
    return f"{url}?{query}" if query else url


def verify(settings: TwilioConnectionSettings | None, request: Request, body: bytes, conn_id: str,
           kind: str) -> VerifiedRequest:
    if settings is None:
        raise Refused(404, "unknown connection")
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in (FORM, JSON):
        raise Refused(415, f"content type {content_type or '<none>'} is not form-encoded")
    url = public_url(settings, request, conn_id, kind)
    pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True) if content_type == FORM else None
    signature = request.headers.get("x-twilio-signature")
    raw = body if content_type == JSON else None
    if not verify_signature(url, pairs, signature, settings.webhook_tokens, raw_body=raw):
        raise Refused(403, "signature does not match")
    params = dict(pairs or [])
    if content_type == JSON:
        import json

        try:
            params = {str(k): str(v) for k, v in json.loads(body or b"{}").items()}
        except (ValueError, AttributeError):
            raise Refused(400, "JSON body is not an object") from None
    if params.get("AccountSid") != settings.account_sid:
        raise Refused(403, "AccountSid is not the connection's account")
    if not _SID.match(params.get("MessageSid") or ""):
        raise Refused(400, "MessageSid missing or malformed")
    for name in ("From", "To"):
        if params.get(name) and not _ADDRESS.match(params[name]):
            raise Refused(400, f"{name} is not a phone number, short code or sender ID")
    if kind == "status" and not (params.get("MessageStatus") or params.get("SmsStatus")):
        raise Refused(400, "MessageStatus missing")
    if kind == "inbound" and not (params.get("From") and params.get("To")):
        raise Refused(400, "From or To missing")
    return VerifiedRequest(settings, params, dict(parse_qsl(request.url.query)))

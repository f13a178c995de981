"""The checks a webhook request passes before the store sees it, in this order, failing closed.

1. the conn_id names a usable ``twilio_sms`` connection ........................ else 404, no detail
2. the body is form-encoded (or JSON, which Twilio signs through ``bodySHA256``) . else 415
3. the body is at most ``[twilio_sms] webhook_max_body_bytes``: Content-Length first, then a running
   count while streaming; nothing past the cap is read ........................... else 413
4. the connection can prove its account at all: a real account (not the local stand-in's) is never
   verified with the stand-in's published token, nor by a connection whose ``api_base_url`` is a
   loopback stand-in ............................................................... else 403
5. ``X-Twilio-Signature`` over the connection's public URL + path + query and the form parameters,
   with the Auth Token, the secondary token or the connection's shared key ...... else 403
6. ``AccountSid`` is the connection's account ...................................... else 403
7. the fields the store keeps are well formed (SIDs, numbers, status, lengths) ... else 400

What a verified request may then touch (only the verifying connection's records) is the store's rule:
see README "What a webhook is trusted for".

A :class:`Refused` carries the HTTP status and a reason for the (masked) log line; the caller never
sees the reason.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_twilio_sms.privacy import mask_sid, safe_for_log
from airflow_provider_twilio_sms.webhook.signing import SETTINGS_HEADER, signature_matches
from airflow_provider_twilio_sms.webhook.urls import webhook_path

if TYPE_CHECKING:
    from starlette.requests import Request

    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
KINDS = ("status", "inbound")

MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
# E.164, a WhatsApp address (whatsapp:+E.164, as Twilio writes both To and From on that channel), a short
# code, or an alphanumeric sender ID (up to 11 letters, digits and spaces, one letter at least)
ADDRESS = re.compile(
    r"^((whatsapp:)?\+[1-9]\d{1,14}|\d{3,8}|(?=[A-Za-z0-9 ]*[A-Za-z])[A-Za-z0-9 ]{1,11})$")
_STATUS = re.compile(r"^[a-z_]{1,20}$")  # unknown statuses are stored, but must fit the column
_ERROR_CODE = re.compile(r"^\d{1,9}$")
_NUM_MEDIA = re.compile(r"^\d{1,2}$")
_OPT_OUT_TYPE = re.compile(r"^[A-Za-z]{1,10}$")
_TOKEN = re.compile(r"^[\x21-\x7e]{1,200}$")
_KEY_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Fields that must appear at most once: the store keeps one value of each.
_SINGLE = ("MessageSid", "AccountSid", "MessageStatus", "SmsStatus", "From", "To", "ErrorCode", "OptOutType",
           "NumMedia", "Body")


def form_schema(kind: str) -> dict:
    """The form fields check 6 accepts for ``kind``, as an OpenAPI request body (the routes' documentation;
    Twilio sends more fields than these, and they are kept in the stored payload).
    """

    def text(pattern: re.Pattern | None = None, max_length: int | None = None) -> dict:
        return {"type": "string", **({"pattern": pattern.pattern} if pattern else {}),
                **({"maxLength": max_length} if max_length else {})}

    fields = {"MessageSid": text(MESSAGE_SID), "AccountSid": text(re.compile(r"^AC[0-9a-fA-F]{32}$")),
              "From": text(ADDRESS), "To": text(ADDRESS)}
    if kind == "status":
        fields.update(MessageStatus=text(_STATUS), SmsStatus=text(_STATUS), ErrorCode=text(_ERROR_CODE))
        required = ["MessageSid", "AccountSid", "MessageStatus"]
    else:
        fields.update(Body=text(max_length=1600), NumMedia=text(_NUM_MEDIA), OptOutType=text(_OPT_OUT_TYPE))
        required = ["MessageSid", "AccountSid", "From", "To"]
    schema = {"type": "object", "properties": fields, "required": required,
              "additionalProperties": {"type": "string"}}
    headers = [
        {"name": "X-Twilio-Signature", "in": "header", "required": True, "schema": {"type": "string"},
         "description": "Twilio's signature of the public URL and the form (check 4)"},
        {"name": "I-Twilio-Idempotency-Token", "in": "header", "required": False,
         "schema": text(_TOKEN), "description": "one delivery attempt: a retry carries the same token"},
    ]
    return {"parameters": headers,
            "requestBody": {"required": True, "content": {FORM: {"schema": schema}}}}


class Refused(Exception):
    """The request is refused with ``status``; ``reason`` goes to the masked log, never to the caller."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class VerifiedCallback:
    """A request Twilio signed for this connection's account, with well-formed fields."""

    params: dict[str, str]
    query: dict[str, str]
    idempotency_token: str | None

    @property
    def message_sid(self) -> str:
        return self.params["MessageSid"]

    @property
    def status(self) -> str:
        return (self.params.get("MessageStatus") or self.params.get("SmsStatus") or "").lower()

    @property
    def error_code(self) -> int | None:
        code = self.params.get("ErrorCode")
        return int(code) if code else None

    @property
    def num_media(self) -> int:
        return int(self.params.get("NumMedia") or 0)


def content_kind(request: Request) -> str:
    """``FORM`` or ``JSON``, else 415."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in (FORM, JSON):
        raise Refused(415, f"content type {safe_for_log(content_type or '<none>', 60)} is not form-encoded")
    return content_type


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) anything over ``limit`` bytes without reading past the cap."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Refused(400, "malformed Content-Length")
        if int(declared) > limit:
            raise Refused(413, f"declared body of {int(declared)} bytes is over the {limit} byte cap")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"body over the {limit} byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def signed_url(settings: TwilioConnectionSettings, request: Request, conn_id: str, kind: str) -> str:
    """The URL Twilio called, as it signed it: the connection's public ``webhook_base_url`` + our path +
    the query exactly as received. Without a base URL, the URL this server saw (right only when no proxy
    rewrites scheme, host or path on the way in).
    """
    query = _query(request)
    if settings.webhook_base_url:
        url = f"{settings.webhook_base_url}{webhook_path(conn_id, kind)}"
    else:
        url = str(request.url.replace(query=""))
    return f"{url}?{query}" if query else url


def _query(request: Request) -> str:
    """The query string as received (what ``request.url.query`` gives, without building the URL)."""
    return request.scope.get("query_string", b"").decode()


def check_can_prove_account(settings: TwilioConnectionSettings) -> None:
    """Check 4: refuse (403) a connection that claims a real account but holds the local stand-in's
    published token or talks to a stand-in on a loopback address: anyone can sign with that token, so
    its signatures prove nothing about the real account.
    """
    from airflow_provider_twilio_sms.simulator.auth import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

    if settings.account_sid == TEST_ACCOUNT_SID:
        return
    account = mask_sid(settings.account_sid)
    if TEST_AUTH_TOKEN in (*settings.webhook_tokens, settings.webhook_signing_key_secret):
        raise Refused(403, f"the connection holds the local stand-in's published Auth Token but claims "
                           f"the real account {account}, and anyone can sign with that token: put the "
                           f"account's own Auth Token in the connection, or use the stand-in's account "
                           f"{TEST_ACCOUNT_SID}")
    if settings.api_base_url and _is_loopback(urlsplit(settings.api_base_url).hostname):
        raise Refused(403, f"the connection's api_base_url is a loopback stand-in but it claims the real "
                           f"account {account}: a stand-in connection cannot verify webhooks for a real "
                           f"account; clear api_base_url, or use the stand-in's account {TEST_ACCOUNT_SID}")


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def verify(settings: TwilioConnectionSettings, request: Request, content_type: str, body: bytes, conn_id: str,
           kind: str) -> VerifiedCallback:
    """Checks 4 to 7 (stand-in, signature, account, fields) on a body already read within the cap."""
    check_can_prove_account(settings)
    signature = request.headers.get("x-twilio-signature")
    if not signature or not signature.isascii():
        raise Refused(403, "no usable X-Twilio-Signature")
    url = signed_url(settings, request, conn_id, kind)
    if content_type == FORM:  # (bytes that are not UTF-8 cannot match Twilio's signature: 403 below)
        pairs, raw = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True), None
    else:
        pairs, raw = None, body
    if not signature_matches(settings, url, pairs, signature, request.headers.get(SETTINGS_HEADER), raw):
        raise Refused(403, "signature does not match")
    params = _params(pairs, body)
    if params.get("AccountSid") != settings.account_sid:
        raise Refused(403, "AccountSid is not the connection's account")
    raw_query = _query(request)
    query = dict(parse_qsl(raw_query, keep_blank_values=True)) if raw_query else {}
    token = request.headers.get("i-twilio-idempotency-token")
    _check_fields(kind, params, query, token)
    return VerifiedCallback(params=params, query=query, idempotency_token=token)


def _params(pairs: list[tuple[str, str]] | None, body: bytes) -> dict[str, str]:
    if pairs is not None:
        seen: dict[str, str] = {}
        for name, value in pairs:
            if name in seen and name in _SINGLE:
                raise Refused(400, f"field {safe_for_log(name, 30)} given more than once")
            seen[name] = value
        return seen
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        raise Refused(400, "JSON body is not valid JSON") from None
    if not isinstance(document, dict):
        raise Refused(400, "JSON body is not an object")
    return {str(k): "" if v is None else str(v) for k, v in document.items()}


def _check_fields(kind: str, p: dict[str, str], query: dict[str, str], token: str | None) -> None:
    if not MESSAGE_SID.fullmatch(p.get("MessageSid") or ""):
        raise Refused(400, "MessageSid missing or malformed")
    if any("\x00" in value for value in p.values()):
        raise Refused(400, "a field contains a NUL character")
    for name in ("From", "To"):
        if p.get(name) and not ADDRESS.fullmatch(p[name]):
            raise Refused(400, f"{name} is not an E.164 number, WhatsApp address, short code or sender ID")
    if kind == "status":
        status = (p.get("MessageStatus") or p.get("SmsStatus") or "").lower()
        if not _STATUS.fullmatch(status):
            raise Refused(400, "MessageStatus missing or malformed")
        if p.get("ErrorCode") and not _ERROR_CODE.fullmatch(p["ErrorCode"]):
            raise Refused(400, "ErrorCode is not a number")
    else:
        if not (p.get("From") and p.get("To")):
            raise Refused(400, "From or To missing")
        if p.get("NumMedia") and not _NUM_MEDIA.fullmatch(p["NumMedia"]):
            raise Refused(400, "NumMedia is not a small number")
        if p.get("OptOutType") and not _OPT_OUT_TYPE.fullmatch(p["OptOutType"]):
            raise Refused(400, "OptOutType malformed")
    # ``ik`` (the key itself) is in URLs made before keys were stored by digest; those keys fit 255. A
    # ``team`` in the query is ignored (teams come from stored facts), so it is not checked here.
    if len(query.get("ik", "")) > 255:
        raise Refused(400, "ik in the URL's query is too long")
    if "ik_sha256" in query and not _KEY_SHA256.fullmatch(query["ik_sha256"]):
        raise Refused(400, "ik_sha256 in the URL's query is not a SHA-256 in hex")
    if token is not None and not _TOKEN.fullmatch(token):
        raise Refused(400, "I-Twilio-Idempotency-Token malformed")

"""``/_sim/...``: the JSON endpoints tests and the CLI use to steer and inspect a running stand-in.

Steer:
- ``POST /_sim/faults`` ``{"kind": "429", "to": ..., "account": ..., "endpoint": "create", "count": 1,
  "retry_after": 1, "delay": 2.0}``; ``GET`` lists them; ``DELETE /_sim/faults[/<id>]`` removes.
- ``POST /_sim/outcomes`` ``{"to": "+1...", "status": "undelivered", "error_code": 30003}``.
- ``POST /_sim/numbers`` ``{"number": "+1...", "inbound_url": "http://...", "messaging_service_sid": ...}``.
- ``POST /_sim/callbacks`` ``{"status_delay": 0.05, "duplicate": true, "duplicate_same_token": false,
  "out_of_order": true, "retries": 3, "retry_delay": 0.2, "timeout": 15}`` (``delay`` = ``status_delay``;
  ``retries`` and ``timeout`` null: as each URL's connection overrides say).
- ``POST /_sim/accounts`` ``{"account_sid": "AC...", "auth_token": "...", "secondary_auth_token": ...}``
  or ``{"api_key_sid": "SK...", "api_key_secret": "...", "account_sid": "AC..."}``.
- ``POST /_sim/inbound`` ``{"from": ..., "to": ..., "body": ..., "media_urls": [...]}``: a signed inbound
  message to the number's URL; answers the message SID and what the webhook answered. WhatsApp: ``from`` and
  ``to`` as ``whatsapp:+...`` (and ``profile_name``); it opens the user's 24-hour session window.
- ``POST /_sim/scheduled/release`` ``{"sid": "SM..."}`` (or ``{}``: every one): send scheduled messages now
  instead of at their SendAt; ``GET /_sim/scheduled`` lists those still held.
- ``POST /_sim/reset``: forget messages, records, faults, outcomes, opt-outs (numbers/accounts stay).

Inspect: ``GET /_sim/state`` (summary), ``/_sim/requests`` (counts per endpoint and the parsed create
requests), ``/_sim/messages``, ``/_sim/callbacks`` (each delivery with the answer it got),
``/_sim/inbound``.

Who may call them (:func:`control_refusal`): by default only clients on the loopback interface, even
when the stand-in's Twilio API listens on every address (``--host 0.0.0.0``). Started with a control
token (``--control-token`` or ``TWILIO_SMS_SIMULATOR_CONTROL_TOKEN``), any client may, and every client
must then send ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.simulator.faults import FIELDS as FAULT_FIELDS
from airflow_provider_twilio_sms.simulator.rest_api import Answer

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

MIN_TOKEN_LENGTH = 16
TOKEN_ENV = "TWILIO_SMS_SIMULATOR_CONTROL_TOKEN"


class ControlError(ValueError):
    """A request to the stand-in's control API that it cannot carry out; answered with 400."""


def check_control_token(token: str | None) -> str | None:
    """``token`` if it is usable as the control token (None: loopback clients only); else ValueError."""
    if token is None:
        return None
    if len(token) < MIN_TOKEN_LENGTH or token != token.strip():
        raise ValueError(f"the control token must be at least {MIN_TOKEN_LENGTH} characters without "
                         "surrounding spaces; make one with: python -c 'import secrets; "
                         "print(secrets.token_urlsafe(24))'")
    return token


def is_loopback(host: str) -> bool:
    """Whether a client address is on the loopback interface (127.0.0.0/8, ::1, ::ffff:127.x.y.z)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def control_refusal(client_host: str, authorization: str | None, token: str | None) -> Answer | None:
    """None when this client may use ``/_sim/...``; otherwise the answer that refuses it."""
    if token is None:
        if is_loopback(client_host):
            return None
        return Answer(403, {"error": "the stand-in's control endpoints answer only clients on this machine's "
                                     "loopback interface; to steer it from elsewhere, start it with "
                                     f"--control-token (or {TOKEN_ENV}) and send "
                                     "Authorization: Bearer <token>"})
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    return Answer(401, {"error": "this stand-in's control endpoints need Authorization: Bearer <its control "
                                 f"token> (the --control-token or {TOKEN_ENV} it was started with)"},
                  {"WWW-Authenticate": 'Bearer realm="twilio-sms-simulator-control"'})


def _object(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = json.loads(body)
    except ValueError as err:
        raise ControlError(f"the body is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise ControlError("the body must be a JSON object")
    return value


def _require(payload: dict[str, Any], *names: str) -> list[Any]:
    missing = [name for name in names if not payload.get(name)]
    if missing:
        raise ControlError(f"missing {', '.join(missing)}")
    return [payload[name] for name in names]


def handle_control(sim: TwilioSimulator, method: str, action: str, body: bytes) -> Answer:
    try:
        return _route(sim, method, action.strip("/"), _object(body) if method in ("POST", "PUT") else {})
    except (ControlError, ValueError, TypeError) as err:
        return Answer(400, {"error": f"bad control request: {err}"})


def _route(sim: TwilioSimulator, method: str, action: str, payload: dict[str, Any]) -> Answer:
    head, _, rest = action.partition("/")
    if (method, head) == ("GET", "state"):
        return Answer(200, sim.state())
    if (method, head) == ("GET", "requests"):
        return Answer(200, {"counts": sim.counts(), "creates": sim.creates()})
    if (method, head) == ("GET", "messages"):
        return Answer(200, {"messages": sim.messages()})  # oldest first
    if head == "callbacks":
        if method == "GET":
            return Answer(200, {"callbacks": sim.callbacks()})
        if method == "POST":
            return Answer(200, {"settings": sim.configure_callbacks(**payload)})
    if head == "faults":
        if method == "GET":
            return Answer(200, {"faults": sim.faults()})
        if method == "POST":
            kind = payload.pop("kind", None)
            if not kind:
                raise ControlError("missing kind")
            unknown = set(payload) - set(FAULT_FIELDS)
            if unknown:
                raise ControlError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
            return Answer(200, {"ok": True, "fault": sim.add_fault(str(kind), **payload).as_dict()})
        if method == "DELETE":
            if rest:
                if not rest.isdigit() or not sim.remove_fault(int(rest)):
                    return Answer(404, {"error": f"no fault {rest!r}"})
            else:
                sim.clear_faults()
            return Answer(200, {"ok": True})
    if head == "outcomes":
        if method == "GET":
            return Answer(200, {"outcomes": sim.outcomes()})
        if method == "POST":
            to, status = _require(payload, "to", "status")
            sim.set_outcome(to, status, payload.get("error_code"))
            return Answer(200, {"ok": True})
    if head == "numbers":
        if method == "GET":
            return Answer(200, {"numbers": sim.numbers()})
        if method == "POST":
            number, url = _require(payload, "number", "inbound_url")
            sim.set_inbound_url(number, url, messaging_service_sid=payload.get("messaging_service_sid"))
            return Answer(200, {"ok": True})
    if (method, head) == ("POST", "accounts"):
        if payload.get("api_key_sid"):
            key, secret, account = _require(payload, "api_key_sid", "api_key_secret", "account_sid")
            sim.add_api_key(key, secret, account)
        else:
            account, token = _require(payload, "account_sid", "auth_token")
            sim.add_account(account, token, payload.get("secondary_auth_token"))
        return Answer(200, {"ok": True})
    if head == "inbound":
        if method == "GET":
            return Answer(200, {"inbound": sim.inbound_records()})
        if method == "POST":
            from_, to = _require(payload, "from", "to")
            media = payload.get("media_urls") or []
            if not isinstance(media, list):
                raise ControlError("media_urls must be a list of URLs")
            return Answer(200, sim.send_inbound(from_, to, str(payload.get("body") or ""), media,
                                                account_sid=payload.get("account_sid"),
                                                profile_name=payload.get("profile_name")))
    if head == "scheduled":
        if method == "GET" and not rest:
            return Answer(200, {"scheduled": sim.scheduled()})
        if (method, rest) == ("POST", "release"):
            sid = payload.get("sid")
            if sid is not None and not isinstance(sid, str):
                raise ControlError("sid must be a message SID (a string)")
            return Answer(200, {"released": sim.release_scheduled(sid)})
    if (method, head) == ("POST", "reset"):
        sim.reset()
        return Answer(200, {"ok": True})
    return Answer(404, {"error": f"no control endpoint {method} /_sim/{action}"})

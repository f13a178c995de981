"""Twilio's 2010-04-01 REST endpoints the provider uses, with faults applied on the way.

- ``GET  /2010-04-01/Accounts/{AccountSid}.json``                   fetch the account
- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``          create (201)
- ``GET  /2010-04-01/Accounts/{AccountSid}/Messages.json``          list, filtered and paged
- ``GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``    fetch (404 20404 for another account's)
- ``POST /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``    ``Body=""`` redacts; ``Status=canceled``
  cancels a scheduled message (``scheduling``)
- ``DELETE /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``  204

Every request needs HTTP Basic auth (401 with code 20003 otherwise). Requests are counted per endpoint
(``create``, ``list``, ``fetch``, ``update``, ``delete``, ``account``, and ``unauthorized``) before auth.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from airflow_provider_twilio_sms.privacy import mask_number, mask_sid
from airflow_provider_twilio_sms.simulator.auth import authenticate, primary_token
from airflow_provider_twilio_sms.simulator.errors import (
    TwilioApiError,
    error_body,
    method_not_allowed,
    not_found,
    unauthorized,
)
from airflow_provider_twilio_sms.simulator.messages import API_VERSION, rfc2822
from airflow_provider_twilio_sms.simulator.paging import list_page
from airflow_provider_twilio_sms.simulator.scheduling import check_update_status
from airflow_provider_twilio_sms.simulator.validation import check_create

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.simulator.faults import Fault
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

log = logging.getLogger(__name__)

_ROUTE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+?)"
                    r"(?:(?P<messages>/Messages)(?:/(?P<sid>[^/]+?))?)?\.json$")


@dataclass
class Answer:
    """What the HTTP layer must do: answer ``status`` with ``body`` (JSON), maybe after ``delay``
    seconds, or drop the connection without an answer (``reset``).
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False


def error_answer(err: TwilioApiError, headers: dict[str, str] | None = None) -> Answer:
    return Answer(err.status, err.body(), dict(headers or {}))


class RestApi:
    """Answers Twilio's REST requests (routes in the module docstring) for one stand-in."""

    def __init__(self, sim: TwilioSimulator):
        self.sim = sim

    def handle(self, method: str, path: str, query: str, authorization: str | None, body: bytes) -> Answer:
        match = _ROUTE.match(path)
        if not match:
            return error_answer(not_found(path))
        account, sid = match.group("account"), match.group("sid")
        if not match.group("messages"):
            endpoint = "account"
        elif sid:
            endpoint = {"GET": "fetch", "POST": "update", "DELETE": "delete"}.get(method, "fetch")
        else:
            endpoint = "create" if method == "POST" else "list"
        self.sim._count(endpoint)
        if not authenticate(authorization, account, self.sim.accounts, self.sim.api_keys):
            self.sim._count("unauthorized")
            return error_answer(unauthorized(), {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        allowed = {"account": ("GET",), "fetch": ("GET", "POST", "DELETE"), "update": ("POST",),
                   "delete": ("DELETE",), "list": ("GET",), "create": ("POST",)}[endpoint]
        if method not in allowed:
            return error_answer(method_not_allowed(method))
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            if endpoint == "create":
                return self._create(account, path, body)
            if endpoint == "account":
                return self._faulted("account", account, None, lambda: Answer(200, self._account(account)))
            if endpoint == "list":
                return self._faulted("list", account, params.get("To"), lambda: Answer(
                    200, list_page(self.sim._messages.snapshot(account), params, path)))
            message = self.sim._messages.get(sid)
            if message is None or message["account_sid"] != account:
                return error_answer(not_found(path))
            if endpoint == "fetch":
                return self._faulted("fetch", account, message["to"], lambda: Answer(200, message))
            if endpoint == "delete":
                self.sim._messages.delete(sid)
                return Answer(204)
            return self._update(sid, body)
        except TwilioApiError as err:
            return error_answer(err)

    # -- endpoints ------------------------------------------------------------------------------

    def _account(self, account: str) -> dict[str, Any]:
        base = f"/{API_VERSION}/Accounts/{account}"
        created = rfc2822(self.sim.started_at)
        return {"auth_token": primary_token(self.sim.accounts, account) or "", "date_created": created,
                "date_updated": created, "friendly_name": "Twilio stand-in account",
                "owner_account_sid": account,
                "sid": account, "status": "active", "type": "Full", "uri": f"{base}.json",
                "subresource_uris": {"messages": f"{base}/Messages.json", "keys": f"{base}/Keys.json",
                                     "incoming_phone_numbers": f"{base}/IncomingPhoneNumbers.json"}}

    def _update(self, sid: str, body: bytes) -> Answer:
        form = dict(parse_qsl(_decode(body), keep_blank_values=True))
        if "Status" in form:
            check_update_status(form["Status"])
            return Answer(200, self.sim._scheduled.cancel(sid))
        if form.get("Body") == "":
            return Answer(200, self.sim._messages.redact(sid, self.sim._clock()))
        raise TwilioApiError(20001, "The stand-in only supports redacting a message (Body=\"\") and "
                                    "canceling a scheduled one (Status=canceled)")

    def _create(self, account: str, path: str, body: bytes) -> Answer:
        form = parse_qsl(_decode(body), keep_blank_values=True)
        to = next((value for key, value in form if key == "To"), None)
        fault = self.sim._faults.take("create", account, to)
        record: dict[str, Any] = {"account_sid": account, "form": form,
                                  "fault": fault.kind if fault else None}
        if fault is not None and fault.kind in ("429", "500_before", "503_before", "reset_before"):
            answer = _fault_answer(fault)
            self.sim._record_create(record, answer, None)
            return answer
        try:
            request = check_create(form, self.sim._clock())
            service_number = None
            if request.messaging_service_sid and not request.from_:
                service_number = self.sim._service_number(request.messaging_service_sid, request.channel)
            if self.sim._opt_outs.blocked(request.from_ or service_number, request.to):
                raise TwilioApiError(21610, "Attempt to send to unsubscribed recipient")
        except TwilioApiError as err:
            log.debug("Twilio stand-in refused a message to %s: %s", mask_number(to), err.code)
            answer = error_answer(err)
            if fault is not None and fault.kind == "500_after":
                answer = _fault_answer(fault)
            elif fault is not None and fault.kind in ("slow", "reset_after"):
                answer = _fault_answer(fault, answer)
            self.sim._record_create(record, answer, None)
            return answer
        message = self.sim._messages.add_outbound(account, request, self.sim._clock(), service_number)
        if request.send_at is not None:
            self.sim._scheduled.hold(message["sid"], request.send_at)
        else:
            self.sim._lifecycle.plan(message,
                                     self.sim._session_outcome(request, request.from_ or service_number))
        log.debug("Twilio stand-in accepted %s to %s", mask_sid(message["sid"]), mask_number(request.to))
        answer = Answer(201, message)
        if fault is not None and fault.kind in ("500_after", "slow", "reset_after"):
            answer = _fault_answer(fault, answer)
        self.sim._record_create(record, answer, message)
        return answer

    def _faulted(self, endpoint: str, account: str, to: str | None, answer: Any) -> Answer:
        fault = self.sim._faults.take(endpoint, account, to)
        if fault is None:
            return answer()
        if fault.kind in ("slow", "reset_after"):
            return _fault_answer(fault, answer())
        return _fault_answer(fault)


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise TwilioApiError(20001, "The request body is not valid UTF-8") from None


def _fault_answer(fault: Fault, normal: Answer | None = None) -> Answer:
    """The answer a fault makes of a request (``normal`` is what it would have been)."""
    if fault.kind == "429":
        return Answer(429, error_body(20429, "Too Many Requests", 429),
                      {"Retry-After": str(fault.retry_after)})
    if fault.kind in ("500_before", "500_after"):
        return Answer(500, error_body(20500, "An internal server error has occurred", 500))
    if fault.kind == "503_before":
        return Answer(503, error_body(20503, "Service is unavailable. Please try again", 503))
    if fault.kind in ("reset_before", "reset_after"):
        return Answer(reset=True)
    if fault.kind != "slow" or normal is None:
        raise ValueError(f"fault {fault.kind!r} has no answer of its own and none was passed to delay")
    normal.delay = fault.delay
    return normal


def request_id() -> str:
    return "RQ" + secrets.token_hex(16)

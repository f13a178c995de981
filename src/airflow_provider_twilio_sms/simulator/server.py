"""A local stand-in for Twilio's Messages API: Twilio's REST shape, its errors and faults, signed callbacks.

Run it from tests (``with TwilioSimulator() as sim: sim.base_url``) or with
``airflow twilio-sms simulator``. It speaks what the provider uses of the 2010-04-01 API:

- ``POST/GET /2010-04-01/Accounts/{AccountSid}/Messages.json``, ``GET .../Messages/{Sid}.json``,
  ``GET /2010-04-01/Accounts/{AccountSid}.json``; HTTP Basic auth by Auth Token or API key.
- Twilio's magic test numbers and validation errors, with Twilio's error body and codes.
- Faults on demand: 429 with Retry-After, 500/503 before accepting, 500 after accepting, slow answers,
  connection resets before or after accepting.
- Status callbacks signed as Twilio signs them (``X-Twilio-Signature``, ``I-Twilio-Idempotency-Token``),
  sent -> delivered/undelivered/failed, optionally duplicated or out of order, retried on 5xx.
- Inbound messages to a configured URL per number, signed the same way.
- ``/_sim/...`` control endpoints: faults, numbers, outcomes, inbound, state, reset.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import re
import secrets
import socket
import struct
import threading
import time
from base64 import b64decode
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from airflow_provider_twilio_sms.privacy import mask_number
from airflow_provider_twilio_sms.segments import count_segments
from airflow_provider_twilio_sms.signature import compute_signature
from airflow_provider_twilio_sms.simulator.magic_numbers import check_create
from airflow_provider_twilio_sms.store.api import opt_out_keyword

log = logging.getLogger(__name__)

TEST_ACCOUNT_SID = "AC" + "0" * 31 + "1"
TEST_AUTH_TOKEN = "simulator-auth-token-0001"
API_VERSION = "2010-04-01"
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+?)(?P<rest>/Messages(?:/(?P<sid>[^/]+?))?)?\.json$")
FAULT_KINDS = ("429", "500_before", "503_before", "500_after", "slow", "reset_before", "reset_after")


def _rfc2822(moment: datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S +0000")


def _error(code: int, message: str, status: int = 400) -> tuple[int, dict]:
    return status, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status}


@dataclass
class Fault:
    """One injected fault. Applies to message creates matching ``to``/``account``; ``count`` times (None: always)."""

    kind: str
    to: str | None = None
    account: str | None = None
    count: int | None = None
    retry_after: int = 1
    delay: float = 2.0

    def matches(self, account: str, to: str | None) -> bool:
        return (self.to is None or self.to == to) and (self.account is None or self.account == account)


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    url: str = field(compare=False)
    params: dict = field(compare=False)
    token: str = field(compare=False)
    idempotency_token: str = field(compare=False)
    attempt: int = field(compare=False, default=1)


class TwilioSimulator:
    """The stand-in server. Thread-safe; every method may be called while it serves."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, accounts: dict[str, str] | None = None,
                 api_keys: dict[str, tuple[str, str]] | None = None, callback_delay: float = 0.05,
                 callback_retries: int = 3, callback_retry_delay: float = 0.2):
        self.accounts = dict(accounts or {TEST_ACCOUNT_SID: TEST_AUTH_TOKEN})
        self.api_keys = dict(api_keys or {})  # SK... -> (secret, account sid)
        self.callback_delay = callback_delay
        self.callback_retries = callback_retries
        self.callback_retry_delay = callback_retry_delay
        self.duplicate_callbacks = False
        self.out_of_order = False
        self._lock = threading.RLock()
        self._messages: dict[str, dict[str, Any]] = {}
        self._faults: list[Fault] = []
        self._outcomes: dict[str, tuple[str, int | None]] = {}  # To -> (final status, error code)
        self._inbound_urls: dict[str, str] = {}  # our number -> URL
        self._counts: Counter = Counter()
        self._creates: list[dict[str, Any]] = []
        self._callbacks: list[dict[str, Any]] = []
        self._jobs: list[_Job] = []
        self._seq = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def account_sid(self) -> str:
        return next(iter(self.accounts))

    @property
    def auth_token(self) -> str:
        return self.accounts[self.account_sid]

    def start(self) -> TwilioSimulator:
        for target in (self._server.serve_forever, self._callback_worker):
            thread = threading.Thread(target=target, daemon=True, name=f"twilio-sim-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TwilioSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- configuration --------------------------------------------------------------------------

    def add_fault(self, kind: str, *, to: str | None = None, account: str | None = None, count: int | None = 1,
                  retry_after: int = 1, delay: float = 2.0) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._faults.append(Fault(kind, to, account, count, retry_after, delay))

    def set_outcome(self, to: str, status: str, error_code: int | None = None) -> None:
        """Final status of messages to ``to``: delivered (default), undelivered or failed (with ErrorCode)."""
        with self._lock:
            self._outcomes[to] = (status, error_code)

    def set_inbound_url(self, number: str, url: str) -> None:
        with self._lock:
            self._inbound_urls[number] = url

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._faults.clear()
            self._outcomes.clear()
            self._counts.clear()
            self._creates.clear()
            self._callbacks.clear()
            self._jobs.clear()
            self.duplicate_callbacks = self.out_of_order = False

    # -- inspection -----------------------------------------------------------------------------

    def count(self, endpoint: str) -> int:
        """Requests received per endpoint: ``create``, ``list``, ``fetch``, ``account``, ``unauthorized``."""
        with self._lock:
            return self._counts[endpoint]

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in self._messages.values()]

    def callbacks(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._callbacks]

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"counts": dict(self._counts), "messages": len(self._messages),
                    "callbacks": [{k: v for k, v in c.items() if k != "params"} for c in self._callbacks],
                    "faults": [f.__dict__ for f in self._faults]}

    # -- inbound --------------------------------------------------------------------------------

    def send_inbound(self, from_: str, to: str, body: str, media_urls: list[str] | None = None,
                     account_sid: str | None = None) -> dict[str, Any]:
        """POST a signed inbound message to the URL configured for ``to``; returns its answer."""
        import requests

        with self._lock:
            url = self._inbound_urls.get(to)
        if not url:
            raise ValueError(f"no inbound URL configured for {mask_number(to)}: set one with set_inbound_url")
        account = account_sid or self.account_sid
        sid = "SM" + secrets.token_hex(16)
        media_urls = media_urls or []
        params = {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": account, "From": from_,
                  "To": to, "Body": body, "NumMedia": str(len(media_urls)), "NumSegments": str(count_segments(body)[0]),
                  "ApiVersion": API_VERSION, "SmsStatus": "received"}
        for i, media in enumerate(media_urls):
            params[f"MediaUrl{i}"] = media
            params[f"MediaContentType{i}"] = "image/jpeg"
        keyword = _opt_out_type(body)
        if keyword:
            params["OptOutType"] = keyword
        headers = {"X-Twilio-Signature": compute_signature(url, params, self.accounts[account]),
                   "I-Twilio-Idempotency-Token": secrets.token_hex(16), "User-Agent": "TwilioProxy/1.1"}
        response = requests.post(url, data=params, headers=headers, timeout=15)
        with self._lock:
            self._counts["inbound_sent"] += 1
        return {"message_sid": sid, "status_code": response.status_code, "body": response.text}

    # -- REST handling --------------------------------------------------------------------------

    def _authenticate(self, header: str | None, account: str) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = b64decode(header[6:]).decode("utf-8").partition(":")
        except ValueError:
            return False
        if user.startswith("SK"):
            secret, owner = self.api_keys.get(user, (None, None))
            return bool(secret) and secrets.compare_digest(secret, password) and owner == account
        token = self.accounts.get(user)
        return bool(token) and secrets.compare_digest(token, password) and user == account

    def _take_fault(self, account: str, to: str | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(account, to):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _create(self, account: str, form: list[tuple[str, str]]) -> tuple[int, dict]:
        params: dict[str, Any] = {}
        media = []
        for key, value in form:
            if key == "MediaUrl":
                media.append(value)
            else:
                params[key] = value
        problem = check_create(params, media)
        if problem:
            return _error(*problem)
        now = datetime.now(timezone.utc)
        sid = "SM" + secrets.token_hex(16)
        body = params.get("Body", "")
        segments, _ = count_segments(body)
        message = {
            "sid": sid, "account_sid": account, "api_version": API_VERSION, "body": body,
            "date_created": _rfc2822(now), "date_updated": _rfc2822(now), "date_sent": None,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": params.get("From") or "+15005550006", "messaging_service_sid": params.get("MessagingServiceSid"),
            "num_media": str(len(media)), "num_segments": str(segments), "price": None, "price_unit": "USD",
            "status": "queued" if not params.get("MessagingServiceSid") else "accepted", "to": params["To"],
            "uri": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json",
            "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}/Media.json"},
            "_created": now.timestamp(), "_callback": params.get("StatusCallback"),
        }
        with self._lock:
            self._messages[sid] = message
            self._creates.append({"sid": sid, "to": params["To"], "from": params.get("From"), "body": body,
                                  "status_callback": params.get("StatusCallback")})
            self._schedule_lifecycle(message)
        return 201, self._public(message)

    def _schedule_lifecycle(self, message: dict[str, Any]) -> None:
        """sent, then the final status: both applied to the message and called back (queued never is)."""
        final, code = self._outcomes.get(message["to"], ("delivered", None))
        steps = [("sent", None), (final, code)]
        if self.out_of_order:
            steps.reverse()
        for i, (status, error_code) in enumerate(steps, start=1):
            due = time.monotonic() + self.callback_delay * i
            self._push(_Job(due, next(self._seq), "", {"_apply": status, "_sid": message["sid"],
                                                       "_code": error_code}, "", ""))

    def _push(self, job: _Job) -> None:
        heapq.heappush(self._jobs, job)
        self._wake.notify_all()

    def _apply_status(self, sid: str, status: str, error_code: int | None) -> None:
        with self._lock:
            message = self._messages.get(sid)
            if message is None:
                return
            now = datetime.now(timezone.utc)
            from airflow_provider_twilio_sms.store.status import status_rank

            if status_rank(status) > status_rank(message["status"]):
                message.update(status=status, date_updated=_rfc2822(now), error_code=error_code,
                               error_message=None if error_code is None else f"Twilio error {error_code}")
                if status == "sent":
                    message["date_sent"] = _rfc2822(now)
            url = message.get("_callback")
            if not url:
                return
            token = self.accounts[message["account_sid"]]
            params = {"MessageSid": sid, "SmsSid": sid, "SmsStatus": status, "MessageStatus": status,
                      "AccountSid": message["account_sid"], "From": message["from"], "To": message["to"],
                      "ApiVersion": API_VERSION}
            if error_code is not None:
                params["ErrorCode"] = str(error_code)
            if status == "delivered":
                params["RawDlrDoneDate"] = now.strftime("%y%m%d%H%M")
            copies = 2 if self.duplicate_callbacks else 1
            for _ in range(copies):
                self._push(_Job(time.monotonic(), next(self._seq), url, params, token, secrets.token_hex(16)))

    def _callback_worker(self) -> None:
        import requests

        session = requests.Session()
        while True:
            with self._lock:
                while not self._stopping and (not self._jobs or self._jobs[0].due > time.monotonic()):
                    timeout = (self._jobs[0].due - time.monotonic()) if self._jobs else None
                    self._wake.wait(timeout)
                if self._stopping:
                    return
                job = heapq.heappop(self._jobs)
            if "_apply" in job.params:
                self._apply_status(job.params["_sid"], job.params["_apply"], job.params["_code"])
                continue
            self._deliver(session, job)

    def _deliver(self, session, job: _Job) -> None:
        headers = {"X-Twilio-Signature": compute_signature(job.url, job.params, job.token),
                   "I-Twilio-Idempotency-Token": job.idempotency_token, "User-Agent": "TwilioProxy/1.1",
                   "Content-Type": "application/x-www-form-urlencoded"}
        try:
            response = session.post(job.url, data=urlencode(job.params), headers=headers, timeout=15)
            code: int | None = response.status_code
        except Exception as err:  # noqa: BLE001 - an unreachable webhook is a result to record
            code = None
            log.info("Callback to %s failed: %s", urlsplit(job.url).path, type(err).__name__)
        with self._lock:
            self._callbacks.append({"url": job.url, "status": job.params.get("MessageStatus"),
                                    "sid": job.params.get("MessageSid"), "answer": code, "attempt": job.attempt,
                                    "idempotency_token": job.idempotency_token, "params": dict(job.params)})
            if (code is None or code >= 500) and job.attempt <= self.callback_retries:
                retry = _Job(time.monotonic() + self.callback_retry_delay * job.attempt, next(self._seq), job.url,
                             job.params, job.token, job.idempotency_token, job.attempt + 1)
                self._push(retry)

    def _list(self, account: str, query: dict[str, str], path: str) -> dict[str, Any]:
        def parse(value: str) -> datetime:
            value = value.replace("Z", "+00:00")
            moment = datetime.fromisoformat(value) if "T" in value else datetime.fromisoformat(value + "T00:00:00+00:00")
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

        with self._lock:
            rows = [m for m in self._messages.values() if m["account_sid"] == account]
        if query.get("To"):
            rows = [m for m in rows if m["to"] == query["To"]]
        if query.get("From"):
            rows = [m for m in rows if m["from"] == query["From"]]
        for key, keep in (("DateSent>", lambda t, b: t >= b), ("DateSent<", lambda t, b: t <= b)):
            if query.get(key):
                bound = parse(query[key]).timestamp()
                rows = [m for m in rows if keep(m["_created"], bound)]
        if query.get("DateSent"):
            day = parse(query["DateSent"]).date()
            rows = [m for m in rows if datetime.fromtimestamp(m["_created"], timezone.utc).date() == day]
        rows.sort(key=lambda m: m["_created"], reverse=True)
        size = max(1, min(1000, int(query.get("PageSize", 50))))
        page = max(0, int(query.get("Page", 0)))
        chunk = rows[page * size:(page + 1) * size]
        base = {k: v for k, v in query.items() if k not in ("Page", "PageToken")}

        def uri(p: int) -> str:
            return f"{path}?{urlencode({**base, 'PageSize': size, 'Page': p, 'PageToken': f'PA{p}'})}"

        return {"messages": [self._public(m) for m in chunk], "page": page, "page_size": size,
                "start": page * size, "end": page * size + max(0, len(chunk) - 1), "uri": uri(page),
                "first_page_uri": uri(0), "previous_page_uri": uri(page - 1) if page else None,
                "next_page_uri": uri(page + 1) if (page + 1) * size < len(rows) else None}

    @staticmethod
    def _public(message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if not k.startswith("_")}

    def handle(self, request: _Handler) -> None:  # noqa: C901 - one router for a small API
        parts = urlsplit(request.path)
        if parts.path.startswith("/_sim/"):
            self._control(request, parts.path[len("/_sim/"):])
            return
        match = _PATH.match(parts.path)
        if not match:
            request.reply(*_error(20404, "The requested resource was not found", 404))
            return
        account, rest, sid = match.group("account"), match.group("rest"), match.group("sid")
        endpoint = ("account" if not rest else "fetch" if sid else "create" if request.command == "POST" else "list")
        with self._lock:
            self._counts[endpoint] += 1
        if not self._authenticate(request.headers.get("Authorization"), account):
            with self._lock:
                self._counts["unauthorized"] += 1
            request.reply(*_error(20003, "Authenticate", 401), headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
            return
        if endpoint == "account":
            request.reply(200, {"sid": account, "friendly_name": "Simulated account", "status": "active",
                                "type": "Full", "uri": f"/{API_VERSION}/Accounts/{account}.json"})
        elif endpoint == "fetch":
            with self._lock:
                message = self._messages.get(sid)
            if message is None or message["account_sid"] != account:
                request.reply(*_error(20404, f"The requested resource {parts.path} was not found", 404))
            else:
                request.reply(200, self._public(message))
        elif endpoint == "list":
            request.reply(200, self._list(account, dict(parse_qsl(parts.query)), parts.path))
        else:
            form = parse_qsl(request.read_body().decode("utf-8"), keep_blank_values=True)
            self._create_with_faults(request, account, form)

    def _create_with_faults(self, request: _Handler, account: str, form: list[tuple[str, str]]) -> None:
        fault = self._take_fault(account, dict(form).get("To"))
        kind = fault.kind if fault else None
        if kind == "429":
            request.reply(*_error(20429, "Too Many Requests", 429), headers={"Retry-After": str(fault.retry_after)})
        elif kind in ("500_before", "503_before"):
            status = 500 if kind == "500_before" else 503
            request.reply(*_error(20500 if status == 500 else 20503, "Internal Server Error", status))
        elif kind == "reset_before":
            request.reset()
        else:
            status, payload = self._create(account, form)
            if kind == "slow":
                time.sleep(fault.delay)
            if kind == "reset_after":
                request.reset()
            elif kind == "500_after":
                request.reply(*_error(20500, "Internal Server Error", 500))
            else:
                request.reply(status, payload)

    def _control(self, request: _Handler, action: str) -> None:
        body = json.loads(request.read_body() or b"{}") if request.command == "POST" else {}
        try:
            if action == "state":
                request.reply(200, self.state())
            elif action == "reset":
                self.reset()
                request.reply(200, {"ok": True})
            elif action == "faults":
                self.add_fault(body.pop("kind"), **body)
                request.reply(200, {"ok": True})
            elif action == "outcomes":
                self.set_outcome(body["to"], body["status"], body.get("error_code"))
                request.reply(200, {"ok": True})
            elif action == "numbers":
                self.set_inbound_url(body["number"], body["inbound_url"])
                request.reply(200, {"ok": True})
            elif action == "callbacks":
                self.duplicate_callbacks = bool(body.get("duplicate", self.duplicate_callbacks))
                self.out_of_order = bool(body.get("out_of_order", self.out_of_order))
                request.reply(200, {"ok": True})
            elif action == "inbound":
                request.reply(200, self.send_inbound(body["from"], body["to"], body.get("body", ""),
                                                     body.get("media_urls"), body.get("account_sid")))
            else:
                request.reply(404, {"error": f"unknown control action {action!r}"})
        except (KeyError, TypeError, ValueError) as err:
            request.reply(400, {"error": f"bad control request: {err}"})


def _opt_out_type(body: str) -> str | None:
    keyword = opt_out_keyword(body)
    if keyword:
        return keyword
    return "HELP" if body.strip().upper() in ("HELP", "INFO") else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    simulator: TwilioSimulator

    def log_message(self, fmt, *args):  # requests carry phone numbers: no access log
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def setup(self) -> None:
        super().setup()
        # Small request/response pairs on keep-alive connections: without this, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def reply(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self._headers_buffer.append(b"\r\n" + data)  # headers and body leave in one write
        self.flush_headers()

    def reset(self) -> None:
        """Drop the connection with a TCP reset and no HTTP answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def do_GET(self):
        self.simulator.handle(self)

    def do_POST(self):
        self.simulator.handle(self)


def _handler_for(simulator: TwilioSimulator) -> type[_Handler]:
    return type("SimulatorHandler", (_Handler,), {"simulator": simulator})

"""A local stand-in for Twilio's Messages API: a real HTTP server, so the whole provider runs offline.

    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

    with TwilioSimulator() as sim:            # 127.0.0.1, a free port
        client = Client(sim.account_sid, sim.auth_token, environment={"X": "1"})
        client.api.base_url = sim.base_url

or ``airflow twilio-sms simulator`` from a shell. What it plays (each in its own module):

- Twilio's REST shape and auth (``rest_api``, ``auth``), message resources (``messages``), list filters and
  paging (``paging``), create validation and magic test numbers (``validation``, ``magic_numbers``),
  segment counting (``encoding``), Twilio's error bodies (``errors``);
- faults on demand (``faults``): 429 + Retry-After, 5xx before/after accepting, slow answers, resets;
- statuses that advance over time (``lifecycle``) and signed, retried status callbacks (``callbacks``);
- signed inbound messages with OptOutType, and the opt-outs they cause (``inbound``);
- WhatsApp (``whatsapp:+...`` addresses), Content templates and the 24-hour session window (``content``);
- ``/_sim/...`` control and inspection endpoints (``control``).

Memory is bounded: the newest ``max_messages`` messages and ``max_records`` records of each kind are kept.
Logs never carry a full phone number, a body or a token.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

from airflow_provider_twilio_sms.privacy import mask_number
from airflow_provider_twilio_sms.simulator.auth import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    Tokens,
    primary_token,
)
from airflow_provider_twilio_sms.simulator.callbacks import (
    CallbackSender,
    ConnectionOverrides,
    idempotency_token,
    signed_headers,
    status_params,
)
from airflow_provider_twilio_sms.simulator.content import OUTSIDE_WINDOW, SessionWindows
from airflow_provider_twilio_sms.simulator.control import check_control_token, control_refusal, handle_control
from airflow_provider_twilio_sms.simulator.encoding import segment_count
from airflow_provider_twilio_sms.simulator.errors import error_body
from airflow_provider_twilio_sms.simulator.faults import Fault, FaultBook
from airflow_provider_twilio_sms.simulator.inbound import OptOutList, describe, inbound_params, opt_out_type
from airflow_provider_twilio_sms.simulator.lifecycle import Lifecycle, Outcome, Scheduler, utc_now
from airflow_provider_twilio_sms.simulator.magic_numbers import VALID_FROM
from airflow_provider_twilio_sms.simulator.messages import MessageBook, new_sid
from airflow_provider_twilio_sms.simulator.rest_api import Answer, RestApi, request_id
from airflow_provider_twilio_sms.simulator.scheduling import ScheduledMessages
from airflow_provider_twilio_sms.simulator.validation import form_to_params

__all__ = ["TEST_ACCOUNT_SID", "TEST_AUTH_TOKEN", "SimulatorServer", "TwilioSimulator"]

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = 1_000_000


class TwilioSimulator:
    """The stand-in. Every method is thread-safe and may be called while it serves.

    :param host: address to listen on (127.0.0.1).
    :param port: port, 0 for a free one (see :attr:`base_url`).
    :param accounts: Account SID -> Auth Token, or (primary, secondary) tokens; default: one test account
        (:data:`TEST_ACCOUNT_SID` / :data:`TEST_AUTH_TOKEN`). The first account is :attr:`account_sid`.
    :param api_keys: API key SID (``SK...``) -> (secret, Account SID).
    :param numbers: our number -> inbound URL, or ``{"inbound_url": ..., "messaging_service_sid": ...}``.
    :param callback_delay: seconds between a message's status steps (sent, then the final status).
    :param callback_retries: retries of a failed callback for every URL; default None: as the URL's
        ``#rc=``/``#rp=`` connection overrides say, as Twilio does (see ``callbacks``).
        ``callback_retry_delay`` is the first backoff (doubling); ``callback_timeout`` how long to wait for
        an answer (default None: the URL's ``#ct=``/``#rt=``, else Twilio's 5 s to connect, 15 s to answer).
    :param max_messages: messages kept (oldest forgotten first); ``max_records``: records kept per kind.
    :param clock: returns the current time (timezone-aware), for tests that need other days.
    :param control_token: None (default): the ``/_sim/...`` control endpoints answer only loopback clients.
        A token (16+ characters): they answer any client that sends ``Authorization: Bearer <token>``, and
        no other.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 accounts: Mapping[str, Tokens] | None = None,
                 api_keys: Mapping[str, tuple[str, str]] | None = None,
                 numbers: Mapping[str, str | Mapping[str, Any]] | None = None, callback_delay: float = 0.05,
                 callback_retries: int | None = None, callback_retry_delay: float = 0.2,
                 callback_timeout: float | None = None,
                 callback_workers: int = 4, max_messages: int = 10_000, max_records: int = 10_000,
                 clock: Callable[[], datetime] | None = None, control_token: str | None = None):
        self._control_token = check_control_token(control_token)
        self.accounts: dict[str, Tokens] = dict(accounts or {TEST_ACCOUNT_SID: TEST_AUTH_TOKEN})
        if not self.accounts:
            raise ValueError("the stand-in needs at least one account")
        self.api_keys: dict[str, tuple[str, str]] = dict(api_keys or {})
        self._clock = clock or utc_now
        self.started_at = self._clock()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._counts: Counter = Counter()
        self._create_records: deque[dict[str, Any]] = deque(maxlen=max_records)
        self._inbound_records: deque[dict[str, Any]] = deque(maxlen=max_records)
        self._numbers: dict[str, dict[str, Any]] = {}
        self._messages = MessageBook(max_messages)
        self._faults = FaultBook()
        self._opt_outs = OptOutList()
        self._windows = SessionWindows()
        self._scheduler = Scheduler(is_alive=self._messages.exists, compact_at=max(1000, 4 * max_messages))
        self._callbacks = CallbackSender(self._scheduler, self._signing_token, workers=callback_workers,
                                         max_records=max_records)
        self._callbacks.settings.update(retries=callback_retries, retry_delay=callback_retry_delay,
                                        timeout=callback_timeout)
        self._lifecycle = Lifecycle(self._scheduler, self._messages.advance, self._on_status, self._clock)
        self._lifecycle.status_delay = callback_delay
        self._scheduled = ScheduledMessages(advance=self._messages.advance, on_status=self._on_status,
                                            start=self._lifecycle.plan, call_later=self._scheduler.call_later,
                                            clock=self._clock, exists=self._messages.exists,
                                            max_held=max_messages)
        self._rest = RestApi(self)
        for number, config in (numbers or {}).items():
            if isinstance(config, str):
                self.set_inbound_url(number, config)
            else:
                self.set_inbound_url(number, config["inbound_url"],
                                     messaging_service_sid=config.get("messaging_service_sid"))
        self._connections: set[socket.socket] = set()
        self._server = _Server((host, port), _handler_for(self))
        self._serving: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        host = self._server.server_address[0]  # str for an AF_INET server; typeshed allows bytes too
        return host if isinstance(host, str) else bytes(host).decode()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def control_is_remote(self) -> bool:
        """Whether clients off the loopback interface may use the control endpoints (with the token)."""
        return self._control_token is not None

    @property
    def account_sid(self) -> str:
        return next(iter(self.accounts))

    @property
    def auth_token(self) -> str:
        return primary_token(self.accounts, self.account_sid) or ""

    def start(self) -> TwilioSimulator:
        if self._serving is not None:
            return self
        self._scheduler.start()
        self._callbacks.start()
        self._serving = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                         name="twilio-sim-http", daemon=True)
        self._serving.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._serving is not None:
            self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # idle keep-alive connections would keep their threads waiting
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._scheduler.stop()
        self._callbacks.stop()

    def __enter__(self) -> TwilioSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- steering -------------------------------------------------------------------------------

    def add_fault(self, kind: str, *, to: str | None = None, account: str | None = None,
                  endpoint: str = "create", count: int | None = 1, retry_after: int = 1,
                  delay: float = 2.0) -> Fault:
        """Make the next ``count`` matching requests fail as ``kind`` (see :mod:`.faults`)."""
        fault = self._faults.add(kind, to=to, account=account, endpoint=endpoint, count=count,
                                 retry_after=retry_after, delay=delay)
        log.info("Twilio stand-in: fault %s set (to %s, endpoint %s, count %s)", kind,
                 mask_number(to) if to else "any", endpoint, count)
        return fault

    def remove_fault(self, fault_id: int) -> bool:
        return self._faults.remove(fault_id)

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        return self._faults.list()

    def set_outcome(self, to: str, status: str = "delivered", error_code: int | None = None) -> None:
        """Final status of messages to ``to``: delivered, undelivered or failed (with an ErrorCode)."""
        self._lifecycle.set_outcome(to, status, error_code)

    def outcomes(self) -> dict[str, dict[str, Any]]:
        return self._lifecycle.outcomes()

    def set_inbound_url(self, number: str, url: str, *, messaging_service_sid: str | None = None,
                        account_sid: str | None = None) -> None:
        """Where inbound messages to our ``number`` are posted (its "A message comes in" webhook)."""
        with self._lock:
            self._numbers[number] = {"inbound_url": url, "messaging_service_sid": messaging_service_sid,
                                     "account_sid": account_sid}

    def numbers(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {number: dict(config) for number, config in self._numbers.items()}

    def add_account(self, account_sid: str, auth_token: str, secondary_auth_token: str | None = None) -> None:
        tokens = (auth_token, secondary_auth_token) if secondary_auth_token else auth_token
        self.accounts[account_sid] = tokens

    def add_api_key(self, key_sid: str, secret: str, account_sid: str) -> None:
        if not key_sid.startswith("SK"):
            raise ValueError("an API key SID starts with SK")
        self.api_keys[key_sid] = (secret, account_sid)

    def configure_callbacks(self, **settings: Any) -> dict[str, Any]:
        """Change ``status_delay`` (alias ``delay``), ``out_of_order``, ``duplicate``,
        ``duplicate_same_token``, ``retries``, ``retry_delay``, ``timeout``; returns them all.
        """
        delay = settings.pop("status_delay", settings.pop("delay", None))
        out_of_order = settings.pop("out_of_order", None)
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
                raise ValueError(f"status_delay must be a number of seconds >= 0, not {delay!r}")
            self._lifecycle.status_delay = float(delay)
        if out_of_order is not None:
            if not isinstance(out_of_order, bool):
                raise ValueError(f"out_of_order must be true or false, not {out_of_order!r}")
            self._lifecycle.out_of_order = out_of_order
        self._callbacks.settings.update(**settings)
        return self.callback_settings()

    def callback_settings(self) -> dict[str, Any]:
        s = self._callbacks.settings
        return {"status_delay": self._lifecycle.status_delay, "out_of_order": self._lifecycle.out_of_order,
                "duplicate": s.duplicate, "duplicate_same_token": s.duplicate_same_token,
                "retries": s.retries, "retry_delay": s.retry_delay, "timeout": s.timeout}

    # Attribute-style access to the common settings (sim.callback_delay = 0.3).
    callback_delay = property(lambda self: self._lifecycle.status_delay,
                              lambda self, v: self.configure_callbacks(status_delay=v))
    out_of_order = property(lambda self: self._lifecycle.out_of_order,
                            lambda self, v: self.configure_callbacks(out_of_order=v))
    duplicate_callbacks = property(lambda self: self._callbacks.settings.duplicate,
                                   lambda self, v: self.configure_callbacks(duplicate=v))

    def reset(self) -> None:
        """Forget messages, records, faults, outcomes, opt-outs and pending steps; keep accounts, numbers
        and callback settings.
        """
        self._scheduler.clear()
        self._scheduled.clear()
        self._messages.clear()
        self._faults.clear()
        self._lifecycle.clear()
        self._opt_outs.clear()
        self._windows.clear()
        self._callbacks.clear()
        with self._lock:
            self._counts.clear()
            self._create_records.clear()
            self._inbound_records.clear()

    def release_scheduled(self, sid: str | None = None) -> list[str]:
        """Send scheduled messages now instead of at their SendAt (so tests need not wait 15 minutes):
        ``sid``, or every one held. Returns the SIDs released (a canceled or already released one is not).
        """
        if sid is None:
            return self._scheduled.release_all()
        return [sid] if self._scheduled.release(sid) else []

    def scheduled(self) -> list[dict[str, str]]:
        """The messages held until their SendAt: ``[{"sid", "send_at"}]``."""
        return self._scheduled.held()

    # -- inbound --------------------------------------------------------------------------------

    def send_inbound(self, from_: str, to: str, body: str = "", media_urls: list[str] | None = None, *,
                     account_sid: str | None = None, profile_name: str | None = None) -> dict[str, Any]:
        """POST a signed inbound message from ``from_`` to our number ``to``'s inbound URL.

        WhatsApp: ``from_`` and ``to`` are ``whatsapp:+...`` addresses (``to``'s inbound URL is its own, else
        its number's); the message carries ``ProfileName`` (``profile_name``) and ``WaId``, and opens the
        24-hour session window in which free-form messages back to ``from_`` go out.

        Returns ``{"message_sid", "status_code", "content_type", "body"}`` (what the webhook answered;
        ``status_code`` None and ``error`` when it could not be reached).
        """
        import requests

        whatsapp = from_.startswith("whatsapp:")
        if whatsapp != to.startswith("whatsapp:"):
            raise ValueError("an inbound WhatsApp message goes from a whatsapp: address to a whatsapp: "
                             "address")
        with self._lock:
            config = dict(self._numbers.get(to) or self._numbers.get(to.removeprefix("whatsapp:")) or {})
        if not config.get("inbound_url"):
            raise ValueError(f"no inbound URL configured for {mask_number(to)}: set one with set_inbound_url "
                             "or POST /_sim/numbers")
        account = account_sid or config.get("account_sid") or self.account_sid
        auth_token = primary_token(self.accounts, account)
        if auth_token is None:
            raise ValueError(f"unknown account {account!r}")
        media = [str(url) for url in media_urls or []]
        now = self._clock()
        sid = new_sid("MM" if media else "SM")
        segments = 1 if whatsapp else segment_count(body)[0]
        service = config.get("messaging_service_sid")
        params = inbound_params(sid, account, from_=from_, to=to, body=body, media_urls=media,
                                num_segments=segments, messaging_service_sid=service,
                                profile_name=profile_name)
        self._messages.add_inbound(sid, account, now, from_=from_, to=to, body=body, num_media=len(media),
                                   num_segments=segments, messaging_service_sid=service)
        if whatsapp:
            self._windows.opened(to, from_, now)
        else:
            self._opt_outs.apply(opt_out_type(body), to, from_)
        url = config["inbound_url"]
        target, overrides = ConnectionOverrides.split(url)  # one attempt: no retries for inbound here
        timeout = self._callbacks.settings.timeout
        token = idempotency_token()
        result: dict[str, Any] = {"message_sid": sid}
        try:
            with requests.Session() as session:
                session.trust_env = False
                answer = session.post(target, data=urlencode(params),
                                      headers=signed_headers(target, params, auth_token, token),
                                      timeout=(overrides.connect_timeout, overrides.read_timeout)
                                      if timeout is None else timeout, allow_redirects=False)
            result.update(describe(answer))
        except requests.RequestException as err:
            result.update(status_code=None, error=type(err).__name__)
        log.info("Twilio stand-in: inbound %s from %s to %s answered %s", sid, mask_number(from_),
                 mask_number(to), result.get("status_code") or result.get("error"))
        with self._lock:
            self._counts["inbound_sent"] += 1
            self._inbound_records.append({"url": url, "sid": sid, "params": params,
                                          "idempotency_token": token, "answer": result.get("status_code"),
                                          "error": result.get("error"), "response_body": result.get("body"),
                                          "at": now.isoformat()})
        return result

    # -- inspection -----------------------------------------------------------------------------

    def count(self, endpoint: str) -> int:
        """Requests received per endpoint: ``create``, ``list``, ``fetch``, ``update``, ``delete``,
        ``account``; ``unauthorized`` for those refused; ``inbound_sent`` for inbound messages posted.
        """
        with self._lock:
            return self._counts[endpoint]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def messages(self) -> list[dict[str, Any]]:
        """Every message kept (all accounts, outbound and inbound), oldest first, as
        ``GET .../Messages/{Sid}.json`` shows it.
        """
        return [m.resource for m in reversed(self._messages.snapshot())]

    def message(self, sid: str) -> dict[str, Any] | None:
        return self._messages.get(sid)

    def creates(self) -> list[dict[str, Any]]:
        """Every create request received (authenticated), oldest first: what was asked (``params``,
        and ``to``/``from``/``body``/``status_callback``...), the answer (``status_code``,
        ``error_code``, ``sid``) and the fault applied, if any.
        """
        with self._lock:
            return [dict(r) for r in self._create_records]

    def callbacks(self) -> list[dict[str, Any]]:
        """Every status callback delivery attempt, oldest first, with the ``answer`` it got (None: no
        answer, see ``error``), ``attempt``, ``idempotency_token``, ``duplicate`` and ``params``.
        """
        return self._callbacks.records()

    def wait_for_callbacks(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The callback records once at least ``count`` attempts were made, or at the timeout."""
        return self._callbacks.wait(count, timeout)

    def inbound_records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._inbound_records]

    def state(self) -> dict[str, Any]:
        callbacks = self._callbacks.records()
        with self._lock:
            counts = dict(self._counts)
            creates, inbound = len(self._create_records), len(self._inbound_records)
        return {"base_url": self.base_url, "account_sid": self.account_sid, "counts": counts,
                "messages": len(self._messages), "creates": creates, "inbound": inbound,
                "callbacks": {"attempts": len(callbacks),
                              "by_answer": dict(Counter(str(c["answer"]) for c in callbacks))},
                "faults": self._faults.list(), "outcomes": self.outcomes(), "numbers": self.numbers(),
                "opt_outs": self._opt_outs.list(), "whatsapp_sessions": self._windows.list(),
                "callback_settings": self.callback_settings()}

    # -- internals used by the REST layer -------------------------------------------------------

    def _count(self, endpoint: str) -> None:
        with self._lock:
            self._counts[endpoint] += 1

    def _record_create(self, record: dict[str, Any], answer: Answer, message: dict[str, Any] | None) -> None:
        params = form_to_params(record.pop("form"))
        body = answer.body if isinstance(answer.body, dict) else {}
        record.update(
            at=self._clock().isoformat(), params=params, to=params.get("To"), **{"from": params.get("From")},
            body=params.get("Body"), status_callback=params.get("StatusCallback"),
            messaging_service_sid=params.get("MessagingServiceSid"),
            media_urls=list(params.get("MediaUrl") or []),
            sid=message["sid"] if message else None,
            status_code=None if answer.reset else answer.status,
            error_code=None if message else body.get("code"),
        )
        with self._lock:
            self._create_records.append(record)

    def _service_number(self, messaging_service_sid: str, channel: str = "sms") -> str:
        """The sender a Messaging Service picks for a message on ``channel``: a number of the service on that
        channel, else (WhatsApp) one of its numbers as a WhatsApp address, else the magic valid sender.
        """
        prefix = "whatsapp:" if channel == "whatsapp" else ""
        with self._lock:
            numbers = [number for number, config in self._numbers.items()
                       if config.get("messaging_service_sid") == messaging_service_sid]
        same = [n for n in numbers if n.startswith("whatsapp:") == bool(prefix)]
        if same:
            return same[0]
        return prefix + (numbers[0] if numbers else VALID_FROM).removeprefix("whatsapp:")

    def _session_outcome(self, request: Any, sender: str | None) -> Outcome | None:
        """How a WhatsApp message ends when Twilio must refuse it for the session window: free-form (or an
        unapproved template) to a user who has not written to ``sender`` in 24 hours fails with 63016.
        """
        if request.channel != "whatsapp" or (request.template and request.template.whatsapp_approved):
            return None
        if self._windows.is_open(sender, request.to, self._clock()):
            return None
        return Outcome("failed", OUTSIDE_WINDOW)

    def _signing_token(self, account_sid: str) -> str | None:
        return primary_token(self.accounts, account_sid)

    def _on_status(self, sid: str, status: str, error_code: int | None, snapshot: dict[str, Any]) -> None:
        url = self._messages.callback_url(sid)
        if url:
            params = status_params(snapshot, status, error_code, self._clock())
            self._callbacks.send(url, params, snapshot["account_sid"], sid)

    def _serve_request(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            handler.close_connection = True
            handler.answer(Answer(413, {"code": 20001, "message": "Request body too large", "status": 413}))
            return
        body = handler.rfile.read(length) if length > 0 else b""
        path, _, query = handler.path.partition("?")
        if path.startswith("/_sim/"):
            answer = (control_refusal(handler.client_address[0], handler.headers.get("Authorization"),
                                      self._control_token)
                      or handle_control(self, handler.command, path[len("/_sim/"):], body))
        else:
            answer = self._rest.handle(handler.command, path, query, handler.headers.get("Authorization"),
                                       body)
        if answer.delay and self._stopped.wait(answer.delay):
            answer = Answer(reset=True)  # stopping: do not hold the thread for the rest of the delay
        if answer.reset:
            handler.reset()
        else:
            handler.answer(answer)


SimulatorServer = TwilioSimulator


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:  # socketserver's signature
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return  # a client that went away (after a timeout or a reset fault) is not a server error
        log.exception("Twilio stand-in: error while serving a request")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TwilioStandIn/1.0"
    simulator: TwilioSimulator
    _headers_buffer: list[bytes]  # the base class's own, filled by send_header; answer() adds the body

    def log_message(self, format: str, *args: Any) -> None:  # request lines carry numbers
        pass

    def setup(self) -> None:
        super().setup()
        # Small request/answer pairs on keep-alive connections: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.simulator._lock:
            self.simulator._connections.add(self.connection)

    def finish(self) -> None:
        with self.simulator._lock:
            self.simulator._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _dispatch(self) -> None:
        try:
            self.simulator._serve_request(self)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # answer like Twilio would, keep serving
            log.exception("Twilio stand-in: unexpected error for %s %s", self.command,
                          self.path.split("?")[0])
            try:
                self.answer(Answer(500, error_body(20500, "An internal server error has occurred", 500)))
            except OSError:
                self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = _dispatch

    def answer(self, answer: Answer) -> None:
        data = b"" if answer.status == 204 or answer.body is None else json.dumps(answer.body).encode("utf-8")
        phrase = HTTPStatus(answer.status).phrase if answer.status in HTTPStatus._value2member_map_ else ""
        self.send_response_only(answer.status, phrase)
        self.send_header("Date", self.date_time_string())
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Twilio-Request-Id", request_id())
        for key, value in answer.headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n" + data)  # headers and body leave in one write
        self.flush_headers()

    def reset(self) -> None:
        """Drop the connection with a TCP reset and no HTTP answer."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


def _handler_for(simulator: TwilioSimulator) -> type[_Handler]:
    return type("TwilioSimulatorHandler", (_Handler,), {"simulator": simulator})

"""``TwilioSmsHook`` against real local HTTP servers: the project's Twilio stand-in, and a tiny scripted
server for answers the stand-in does not give (any error code, broken bodies, list pages with given
dates). No twilio-python class is mocked: every test goes through twilio-python, requests and a socket.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_twilio_sms import __version__
from airflow_provider_twilio_sms.errors import (
    ConnectionConfigError,
    InvalidMessageError,
    OptedOutError,
    PermanentTwilioError,
    RetryableTwilioError,
    UnknownOutcomeError,
)
from airflow_provider_twilio_sms.hooks.twilio_sms import USER_AGENT, TwilioSmsHook

TO = "+14155550123"
OURS = "+15005550006"
SERVICE = "MG" + "b" * 32
ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "c0ffee" + "0" * 26


# --- a tiny scripted Twilio -----------------------------------------------------------------------

def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(timezone.utc), usegmt=False).replace("-0000", "+0000")


def message_json(*, sid: str | None = None, to: str = TO, from_: str = OURS, body: str = "hello",
                 status: str = "queued", created: datetime | None = None, sent: datetime | None = None,
                 **more: Any) -> dict[str, Any]:
    created = created or datetime.now(timezone.utc)
    sid = sid or "SM" + hashlib.md5(f"{to}{body}{created}".encode()).hexdigest()  # an id
    return {"sid": sid, "account_sid": ACCOUNT, "api_version": "2010-04-01", "body": body, "to": to,
            "from": from_, "status": status, "direction": "outbound-api", "num_segments": "1",
            "num_media": "0",
            "date_created": _rfc2822(created), "date_updated": _rfc2822(created),
            "date_sent": _rfc2822(sent) if sent else None, "error_code": None, "error_message": None,
            "price": None, "price_unit": "USD", "messaging_service_sid": None,
            "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json", **more}


def twilio_error(code: int, message: str, status: int = 400) -> dict[str, Any]:
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


@dataclass
class Reply:
    status: int = 200
    body: Any = None           # JSON-serialisable, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False        # drop the connection with a TCP reset after reading the request


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    form: dict[str, list[str]]
    peer: tuple[str, int]  # the client's address: one per TCP connection


class FakeTwilio:
    """Answers each request with the next scripted :class:`Reply` (or a plausible default) and records it."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.replies: list[Reply] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                with fake._lock:
                    fake.seen.append(Seen(self.command, parts.path, parse_qs(parts.query),
                                          {k.lower(): v for k, v in self.headers.items()}, parse_qs(raw),
                                          self.client_address))
                    reply = (fake.replies.pop(0) if fake.replies
                             else fake._default(self.command, parts.path, raw))
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.reset:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    @staticmethod
    def _default(method: str, path: str, raw: str) -> Reply:
        if method == "POST":
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            return Reply(201, message_json(to=form.get("To", TO), from_=form.get("From", OURS),
                                           body=form.get("Body", "")))
        if path.endswith("/Messages.json"):
            return Reply(200, list_page([]))
        if path == f"/2010-04-01/Accounts/{ACCOUNT}.json":
            return Reply(200, {"sid": ACCOUNT, "status": "active", "friendly_name": "fake"})
        return Reply(200, message_json(sid=path.rsplit("/", 1)[-1].removesuffix(".json")))

    def __enter__(self) -> FakeTwilio:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def list_page(messages: list[dict[str, Any]]) -> dict[str, Any]:
    uri = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json?PageSize=50&Page=0"
    return {"messages": messages, "page": 0, "page_size": 50, "start": 0, "end": max(0, len(messages) - 1),
            "uri": uri, "first_page_uri": uri, "next_page_uri": None, "previous_page_uri": None}


@pytest.fixture
def fake_twilio():
    with FakeTwilio() as server:
        yield server


def define_conn(monkeypatch, conn_id: str = "twilio_sms_default", *, login: str = ACCOUNT,
                password: str | None = TOKEN, **extra: Any) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "twilio_sms", "login": login, "password": password,
        "extra": {k: v for k, v in extra.items() if v is not None}}))
    return conn_id


@pytest.fixture
def fake_conn(fake_twilio, monkeypatch):
    """``twilio_sms_default`` pointing at the scripted server; call it again to change extras."""

    def configure(**extra: Any) -> None:
        define_conn(monkeypatch, **{"from_number": OURS, "api_base_url": fake_twilio.base_url, **extra})

    configure()
    return configure


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the hook as Airflow sees it ------------------------------------------------------------------

def test_hook_metadata_matches_the_connection_type():
    assert TwilioSmsHook.conn_name_attr == "twilio_conn_id"
    assert TwilioSmsHook.default_conn_name == "twilio_sms_default"
    assert TwilioSmsHook.conn_type == "twilio_sms"
    assert TwilioSmsHook.hook_name == "Twilio SMS"
    assert TwilioSmsHook(twilio_conn_id="other").twilio_conn_id == "other"


def test_creating_a_hook_reads_no_connection(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", raising=False)
    TwilioSmsHook()  # no connection exists: nothing is looked up until used


@pytest.mark.parametrize("timeout", [0, -1])
def test_timeout_must_be_positive(timeout):
    with pytest.raises(ValueError, match="timeout"):
        TwilioSmsHook(timeout=timeout)


def test_the_client_is_isolated_tagged_and_has_an_explicit_timeout(fake_conn, fake_twilio, monkeypatch):
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    # What twilio-python would otherwise pick up from the process environment:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "9" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "environment-token")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    hook = TwilioSmsHook(timeout=7)
    client = hook.get_conn()
    assert isinstance(client, Client)
    assert client is hook.client
    assert (client.username, client.password, client.account_sid) == (ACCOUNT, TOKEN, ACCOUNT)
    assert client.region is None
    assert client.edge is None
    assert client.api.base_url == fake_twilio.base_url
    assert isinstance(client.http_client, TwilioHttpClient)
    assert client.http_client.timeout == 7
    assert f"airflow-provider-twilio-sms/{__version__}" == USER_AGENT
    assert USER_AGENT in client.user_agent_extensions

    hook.send_message(TO, "hello")
    request = fake_twilio.seen[-1]
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert USER_AGENT in request.headers["user-agent"]
    basic = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {basic}"


@pytest.mark.parametrize(("extra", "host"), [
    ({}, "https://api.twilio.com"),
    ({"region": "ie1"}, "https://api.dublin.ie1.twilio.com"),
    ({"region": "au1", "edge": "sydney"}, "https://api.sydney.au1.twilio.com"),
    ({"region": "us1"}, "https://api.us1.twilio.com"),
    ({"edge": "ashburn"}, "https://api.ashburn.us1.twilio.com"),
])
def test_region_and_edge_set_twilios_host(monkeypatch, extra, host):
    define_conn(monkeypatch, **extra)
    hook = TwilioSmsHook()
    url = hook.client.api.v2010.account.messages._uri
    assert hook.client.get_hostname("https://api.twilio.com" + url) == host + url
    assert hook.api_url == host


def test_an_api_base_url_overrides_region_and_edge(monkeypatch):
    define_conn(monkeypatch, region="ie1", edge="dublin", api_base_url="http://127.0.0.1:4010")
    client = TwilioSmsHook().client
    assert client.region is None
    assert client.edge is None
    assert client.api.base_url == "http://127.0.0.1:4010"


# --- one client per connection and process ---------------------------------------------------------

def test_hooks_of_one_connection_share_a_client_and_its_tcp_connection(fake_conn, fake_twilio):
    first, second = TwilioSmsHook(), TwilioSmsHook()  # two tasks, one after the other, in one process
    first.send_message(TO, "one")
    second.send_message(TO, "two")
    assert second.client is first.client
    assert fake_twilio.seen[-1].peer == fake_twilio.seen[-2].peer  # no new TCP connection for the second


def test_a_changed_credential_timeout_or_connection_gets_a_client_of_its_own(fake_conn, fake_twilio,
                                                                            monkeypatch):
    before = TwilioSmsHook().client
    assert TwilioSmsHook(timeout=5).client is not before
    other = define_conn(monkeypatch, "twilio_sms_other", from_number=OURS, api_base_url=fake_twilio.base_url)
    assert TwilioSmsHook(twilio_conn_id=other).client is not before

    rotated_token = "rotated" + "1" * 25
    define_conn(monkeypatch, password=rotated_token, from_number=OURS, api_base_url=fake_twilio.base_url)
    rotated = TwilioSmsHook()
    rotated.send_message(TO, "after the rotation")
    assert rotated.client is not before
    basic = base64.b64encode(f"{ACCOUNT}:{rotated_token}".encode()).decode()
    assert fake_twilio.seen[-1].headers["authorization"] == f"Basic {basic}"
    assert TwilioSmsHook().client is rotated.client  # the rotated client is the one kept now


def test_a_forked_child_never_uses_its_parents_client_or_connection(fake_conn, fake_twilio):
    from conftest import in_forked_child

    parent = TwilioSmsHook()
    parent.send_message(TO, "from the parent")

    def child_task() -> bool:  # in the child: a task of a prefork worker
        child = TwilioSmsHook()
        fresh = child.client is not parent.client
        child.send_message(TO, "from the child")
        return fresh

    assert in_forked_child(child_task) == (b"1", 0)
    parent.send_message(TO, "from the parent again")  # its connection was left alone by the child
    parent_peer, child_peer, again_peer = (seen.peer for seen in fake_twilio.seen[-3:])
    assert child_peer != parent_peer
    assert again_peer == parent_peer


# --- sending (against the project's Twilio stand-in) ----------------------------------------------

def test_send_returns_plain_json_without_the_body(twilio_conn, twilio_sim):
    twilio_conn(default_region="US")
    result = TwilioSmsHook().send_message("(415) 555-0123", "Your code is 482913")
    assert json.loads(json.dumps(result)) == result  # plain JSON for XCom
    assert "body" not in result
    assert "482913" not in json.dumps(result)
    assert result["sid"].startswith("SM")
    assert result["status"] == "queued"
    assert result["to"] == TO
    assert result["from"] == OURS
    assert result["account_sid"] == twilio_sim.account_sid
    assert (result["segments"], result["encoding"], result["num_segments"]) == (1, "GSM-7", 1)
    assert datetime.fromisoformat(result["date_created"]).tzinfo is not None
    assert {"error_code", "error_message", "price", "price_unit", "messaging_service_sid"} <= set(result)
    [created] = twilio_sim.messages()
    assert created["to"] == TO
    assert created["body"] == "Your code is 482913"


def test_segments_are_counted_from_the_body_sent(twilio_conn, twilio_sim):
    result = TwilioSmsHook().send_message(TO, "ж" * 71)
    assert (result["segments"], result["encoding"], result["num_segments"]) == (2, "UCS-2", 2)


def test_the_sender_comes_from_the_caller_or_the_connection(twilio_conn, twilio_sim):
    hook = TwilioSmsHook()
    assert hook.send_message(TO, "a")["from"] == OURS
    assert hook.send_message(TO, "b", from_="ACME")["from"] == "ACME"
    via_service = hook.send_message(TO, "c", messaging_service_sid=SERVICE)
    assert via_service["messaging_service_sid"] == SERVICE
    assert via_service["status"] == "accepted"
    twilio_conn(from_number=None, messaging_service_sid=SERVICE)
    assert TwilioSmsHook().send_message(TO, "d")["messaging_service_sid"] == SERVICE


def test_media_status_callback_and_validity_period_reach_twilio(fake_conn, fake_twilio):
    hook = TwilioSmsHook()
    hook.send_message(TO, None, media_url="https://example.com/a.jpg",
                      status_callback="https://airflow.example.com/cb", validity_period=600)
    form = fake_twilio.seen[-1].form
    assert form["MediaUrl"] == ["https://example.com/a.jpg"]
    assert "Body" not in form
    assert form["StatusCallback"] == ["https://airflow.example.com/cb"]
    assert form["ValidityPeriod"] == ["600"]
    hook.send_message(TO, "two", media_url=["https://example.com/a.jpg", "https://example.com/b.png"])
    assert fake_twilio.seen[-1].form["MediaUrl"] == ["https://example.com/a.jpg", "https://example.com/b.png"]


def test_an_api_key_authenticates_instead_of_the_auth_token(monkeypatch):
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

    key_sid, secret = "SK" + "1" * 32, "api-key-secret"
    with TwilioSimulator(api_keys={key_sid: (secret, ACCOUNT)}, accounts={ACCOUNT: TOKEN}) as sim:
        define_conn(monkeypatch, password=None, api_key_sid=key_sid, api_key_secret=secret, from_number=OURS,
                    api_base_url=sim.base_url)
        assert TwilioSmsHook().send_message(TO, "hi")["account_sid"] == ACCOUNT
        define_conn(monkeypatch, password=None, api_key_sid=key_sid, api_key_secret="wrong", from_number=OURS,
                    api_base_url=sim.base_url)
        with pytest.raises(PermanentTwilioError) as caught:
            TwilioSmsHook().send_message(TO, "hi")
        assert caught.value.code == 20003
        assert sim.count("unauthorized") == 1


# --- nothing leaves for a message that cannot be sent ---------------------------------------------

@pytest.mark.parametrize(("call", "error", "needle"), [
    (lambda h: h.send_message("not a number", "hi"), InvalidMessageError, "not a valid phone number"),
    (lambda h: h.send_message("2025550147", "hi"), InvalidMessageError, "default_region"),
    (lambda h: h.send_message(TO, "a" * 1601), InvalidMessageError, "1601 characters"),
    (lambda h: h.send_message(TO, "hi", media_url=[f"https://e.com/{i}" for i in range(11)]),
     InvalidMessageError, "11 media URLs"),
    (lambda h: h.send_message(TO, ""), InvalidMessageError, "no body"),
    (lambda h: h.send_message(TO, "hi", from_="Not-A-Sender!"), InvalidMessageError,
     "not a valid phone number"),
    (lambda h: h.send_message(TO, "hi", messaging_service_sid="MG123"), InvalidMessageError, "MG followed"),
    (lambda h: h.send_message(TO, "hi", status_callback="ftp://x"), InvalidMessageError, "status_callback"),
    (lambda h: h.send_message(TO, "hi", validity_period=36001), InvalidMessageError, "validity_period"),
    (lambda h: h.send_message(TO, "hi", validity_period=0), InvalidMessageError, "validity_period"),
    (lambda h: h.fetch_message("SM123"), InvalidMessageError, "not a message SID"),
    (lambda h: h.list_messages(to="12"), InvalidMessageError, "not a valid phone number"),
])
def test_invalid_requests_fail_before_any_http_request(fake_conn, fake_twilio, call, error, needle):
    with pytest.raises(error, match=needle):
        call(TwilioSmsHook())
    assert fake_twilio.seen == []


def test_no_sender_anywhere_fails_before_any_http_request(fake_conn, fake_twilio):
    fake_conn(from_number=None)
    with pytest.raises(ConnectionConfigError, match="no sender is configured"):
        TwilioSmsHook().send_message(TO, "hi")
    assert fake_twilio.seen == []


def test_a_bad_connection_fails_before_any_http_request(fake_conn, fake_twilio, monkeypatch):
    define_conn(monkeypatch, login="AC123", api_base_url=fake_twilio.base_url)
    with pytest.raises(ConnectionConfigError, match="Account SID"):
        TwilioSmsHook().send_message(TO, "hi")
    assert fake_twilio.seen == []


# --- Twilio's refusals ----------------------------------------------------------------------------

@pytest.mark.parametrize(("to", "from_", "error", "code"), [
    ("+15005550001", OURS, PermanentTwilioError, 21211),
    ("+15005550002", OURS, PermanentTwilioError, 21612),
    ("+15005550003", OURS, PermanentTwilioError, 21408),
    ("+15005550009", OURS, PermanentTwilioError, 21614),
    (TO, "+15005550007", PermanentTwilioError, 21606),
    ("+15005550004", OURS, OptedOutError, 21610),
    (TO, "+15005550008", RetryableTwilioError, 21611),
])
def test_twilios_magic_numbers_are_classified(twilio_conn, twilio_sim, to, from_, error, code):
    with pytest.raises(error) as caught:
        TwilioSmsHook().send_message(to, "hi", from_=from_)
    assert type(caught.value) is error
    assert caught.value.code == code
    assert caught.value.http_status == 400
    assert str(code) in str(caught.value)
    assert to not in str(caught.value)
    assert from_ not in str(caught.value)
    assert twilio_sim.count("create") == 1  # the hook never retries


@pytest.mark.parametrize("code", [21211, 21212, 21408, 21606, 21612, 21614, 21617, 21623, 20003, 20404])
def test_other_client_errors_are_permanent_and_described(fake_conn, fake_twilio, code):
    from airflow_provider_twilio_sms.errors import describe_error_code

    status = {20003: 401, 20404: 404}.get(code, 400)
    fake_twilio.script(Reply(status, twilio_error(code, f"The 'To' number {TO} is refused", status)))
    with pytest.raises(PermanentTwilioError) as caught:
        TwilioSmsHook().send_message(TO, "hi")
    assert type(caught.value) is PermanentTwilioError
    assert (caught.value.code, caught.value.http_status) == (code, status)
    assert describe_error_code(code) in str(caught.value)
    assert TO not in str(caught.value)
    assert caught.value.more_info == f"https://www.twilio.com/docs/errors/{code}"


def test_an_unknown_code_points_to_twilios_docs(fake_conn, fake_twilio):
    fake_twilio.script(Reply(400, twilio_error(21999, f"Something about {TO}")))
    with pytest.raises(PermanentTwilioError, match=r"https://www.twilio.com/docs/errors/21999") as caught:
        TwilioSmsHook().send_message(TO, "hi")
    assert TO not in str(caught.value)


def test_a_problem_details_error_is_classified_too(fake_conn, fake_twilio):
    fake_twilio.script(Reply(400, {"type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid To",
                                   "status": 400, "code": 21211, "detail": f"{TO} is invalid"}))
    with pytest.raises(PermanentTwilioError) as caught:
        TwilioSmsHook().send_message(TO, "hi")
    assert caught.value.code == 21211


def test_429_is_retryable_with_retry_after(twilio_conn, twilio_sim):
    twilio_sim.add_fault("429", retry_after=7)
    with pytest.raises(RetryableTwilioError) as caught:
        TwilioSmsHook().send_message(TO, "hi")
    assert (caught.value.code, caught.value.http_status, caught.value.retry_after) == (20429, 429, 7.0)
    assert twilio_sim.count("create") == 1
    assert twilio_sim.messages() == []


@pytest.mark.parametrize(("code", "retry_after"), [(30001, "3"), (21611, None), (20429, "soon")])
def test_queue_full_codes_are_retryable(fake_conn, fake_twilio, code, retry_after):
    headers = {"Retry-After": retry_after} if retry_after else {}
    fake_twilio.script(Reply(400 if code != 20429 else 429, twilio_error(code, "queue full"), headers))
    with pytest.raises(RetryableTwilioError) as caught:
        TwilioSmsHook().send_message(TO, "hi")
    assert caught.value.code == code
    assert caught.value.retry_after == (3.0 if retry_after == "3" else None)


def test_retry_after_may_be_an_http_date(fake_conn, fake_twilio):
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    fake_twilio.script(Reply(429, twilio_error(20429, "Too Many Requests", 429),
                             {"Retry-After": format_datetime(when, usegmt=True)}))
    with pytest.raises(RetryableTwilioError) as caught:
        TwilioSmsHook().send_message(TO, "hi")
    assert 25 <= caught.value.retry_after <= 31


def test_retry_after_is_read_from_this_threads_own_response(fake_conn, fake_twilio):
    """Headers are kept per thread: a 429 in one thread is not read as another thread's Retry-After."""
    hook = TwilioSmsHook()
    fake_twilio.script(Reply(429, twilio_error(20429, "Too Many Requests", 429), {"Retry-After": "9"}))
    with pytest.raises(RetryableTwilioError) as caught:
        hook.send_message(TO, "hi")
    assert caught.value.retry_after == 9.0
    seen = []

    def other():
        seen.append(hook.client.http_client.last_headers)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [{}]


# --- unknown outcomes: the request left, no clear answer came back ---------------------------------

@pytest.mark.parametrize("fault", ["500_before", "503_before", "500_after", "reset_before", "reset_after"])
def test_a_5xx_or_reset_after_sending_is_an_unknown_outcome(twilio_conn, twilio_sim, fault):
    twilio_sim.add_fault(fault)
    with pytest.raises(UnknownOutcomeError, match="may exist"):
        TwilioSmsHook().send_message(TO, "hi")
    assert twilio_sim.count("create") == 1
    # "after" faults did create the message; the hook cannot tell the two apart, hence "unknown"
    assert len(twilio_sim.messages()) == (1 if fault.endswith("after") else 0)


def test_a_read_timeout_after_sending_is_an_unknown_outcome(twilio_conn, twilio_sim):
    twilio_sim.add_fault("slow", delay=2.0)
    started = time.monotonic()
    with pytest.raises(UnknownOutcomeError, match=r"did not answer within 0.5 s"):
        TwilioSmsHook(timeout=0.5).send_message(TO, "hi")
    assert time.monotonic() - started < 1.9
    assert twilio_sim.count("create") == 1


def test_an_unreadable_answer_to_a_create_is_an_unknown_outcome(fake_conn, fake_twilio):
    fake_twilio.script(Reply(201, b"<html>proxy page</html>"))
    with pytest.raises(UnknownOutcomeError):
        TwilioSmsHook().send_message(TO, "hi")


# --- the request never left: safe to try again -------------------------------------------------

def test_connection_refused_is_retryable(monkeypatch):
    define_conn(monkeypatch, from_number=OURS, api_base_url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(RetryableTwilioError, match="never left") as caught:
        TwilioSmsHook().send_message(TO, "hi")
    assert caught.value.http_status is None
    assert caught.value.code is None


def test_a_dns_failure_is_retryable(monkeypatch):
    define_conn(monkeypatch, from_number=OURS, api_base_url="https://twilio-sms-test.invalid")
    with pytest.raises(RetryableTwilioError, match="never left"):
        TwilioSmsHook().send_message(TO, "hi")


def test_a_connect_timeout_is_retryable(monkeypatch):
    # A listening socket whose accept queue is full drops new SYNs: connecting times out.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(server.getsockname())
        fillers.append(filler)
    try:
        define_conn(monkeypatch, from_number=OURS, api_base_url=f"http://127.0.0.1:{server.getsockname()[1]}")
        with pytest.raises(RetryableTwilioError, match="never left"):
            TwilioSmsHook(timeout=0.5).send_message(TO, "hi")
    finally:
        for sock in (*fillers, server):
            sock.close()


def test_a_rejected_tls_certificate_is_retryable(monkeypatch, tmp_path):
    """The handshake fails before anything is sent (a self-signed certificate is not trusted)."""
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    with FakeTwilio() as fake:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        fake._server.socket = context.wrap_socket(fake._server.socket, server_side=True)
        port = fake._server.server_address[1]
        define_conn(monkeypatch, from_number=OURS, api_base_url=f"https://localhost:{port}")
        with pytest.raises(RetryableTwilioError, match="never left"):
            TwilioSmsHook(timeout=5).send_message(TO, "hi")
        assert fake.seen == []


# --- reading: always safe to repeat ---------------------------------------------------------------

def test_fetch_message(twilio_conn, twilio_sim):
    hook = TwilioSmsHook()
    sent = hook.send_message(TO, "hello")
    fetched = hook.fetch_message(sent["sid"])
    assert fetched["sid"] == sent["sid"]
    assert fetched["to"] == TO
    assert "body" not in fetched
    with pytest.raises(PermanentTwilioError) as caught:
        hook.fetch_message("SM" + "0" * 32)
    assert caught.value.code == 20404


@pytest.mark.parametrize("reply", [
    Reply(500, twilio_error(20500, "Internal Server Error", 500)),
    Reply(503, twilio_error(20503, "Service Unavailable", 503)),
    Reply(200, message_json(), delay=1.5),
    Reply(reset=True),
    Reply(200, b"not json"),
])
def test_failed_reads_are_retryable_never_unknown(fake_conn, fake_twilio, reply):
    fake_twilio.script(reply)
    with pytest.raises(RetryableTwilioError):
        TwilioSmsHook(timeout=0.5).fetch_message("SM" + "a" * 32)
    assert len(fake_twilio.seen) == 1


def test_list_messages_gives_body_hashes_not_bodies(twilio_conn, twilio_sim):
    hook = TwilioSmsHook()
    hook.send_message(TO, "Your code is 111111")
    hook.send_message("+14155550124", "Your code is 222222")
    listed = hook.list_messages(to=TO, from_=OURS)
    assert [m["to"] for m in listed] == [TO]
    assert listed[0]["body_sha256"] == hashlib.sha256(b"Your code is 111111").hexdigest()
    assert "body" not in listed[0]
    assert "111111" not in json.dumps(listed)
    assert hook.list_messages(to=TO, include_body=True)[0]["body"] == "Your code is 111111"


def test_list_messages_keeps_messages_still_queued_in_the_window(fake_conn, fake_twilio):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    since = now - timedelta(minutes=5)
    fake_twilio.script(Reply(200, list_page([
        message_json(sid="SM" + "1" * 32, body="queued, created after", created=now - timedelta(minutes=1)),
        message_json(sid="SM" + "2" * 32, body="sent after", created=now - timedelta(minutes=2),
                     sent=now - timedelta(minutes=2), status="delivered"),
        message_json(sid="SM" + "3" * 32, body="created before, sent after",
                     created=now - timedelta(minutes=9), sent=now - timedelta(minutes=4), status="sent"),
        message_json(sid="SM" + "4" * 32, body="sent before", created=now - timedelta(hours=2),
                     sent=now - timedelta(hours=2), status="delivered"),
        message_json(sid="SM" + "5" * 32, body="queued, created before", created=now - timedelta(hours=1)),
    ])))
    listed = TwilioSmsHook().list_messages(to=TO, from_=OURS, date_sent_after=since, limit=20)
    assert [m["sid"][2] for m in listed] == ["1", "2", "3"]
    query = fake_twilio.seen[-1].query
    assert query["To"] == [TO]
    assert query["From"] == [OURS]
    assert query["PageSize"] == ["20"]
    assert not [k for k in query if k.startswith("DateSent")]  # Twilio's day-granular filter is not used


def test_list_messages_accepts_a_naive_moment_as_utc(fake_conn, fake_twilio):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    fake_twilio.script(Reply(200, list_page([message_json(created=now - timedelta(minutes=1))])))
    naive = (now - timedelta(minutes=5)).replace(tzinfo=None)
    assert len(TwilioSmsHook().list_messages(to=TO, date_sent_after=naive)) == 1


def _page_with_next(messages: list[dict[str, Any]]) -> dict[str, Any]:
    page = list_page(messages)
    page["next_page_uri"] = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json?PageSize=50&Page=1&PageToken=PAx"
    return page


@pytest.mark.parametrize("failing", [
    Reply(500, twilio_error(20500, "Internal Server Error", 500)),
    Reply(503, b"<html>Service Unavailable</html>"),
    Reply(429, twilio_error(20429, "Too Many Requests", 429), headers={"Retry-After": "3"}),
    Reply(200, message_json(), delay=1.5),
    Reply(reset=True),
])
@pytest.mark.parametrize("page", [1, 2])
def test_a_failed_list_page_is_retryable_never_twilio_pythons_exception(fake_conn, fake_twilio, failing,
                                                                         page):
    """twilio-python raises its bare ``TwilioException("Unable to fetch page")`` for a list page that is
    not a 200, on the first page and on every next one."""
    if page == 2:
        fake_twilio.script(Reply(200, _page_with_next([message_json()])))
    fake_twilio.script(failing)
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    for walk in (lambda h: h.messages_since(since, to=TO), lambda h: h.list_messages(to=TO, limit=100)):
        with pytest.raises(RetryableTwilioError) as caught:
            walk(TwilioSmsHook(timeout=0.5))
        if failing.status == 429:
            assert caught.value.code == 20429
            assert caught.value.retry_after == 3
        if page == 2:
            fake_twilio.script(Reply(200, _page_with_next([message_json()])))
        fake_twilio.script(failing)
    assert [s.query.get("Page", ["0"])[0] for s in fake_twilio.seen] == ["0", "1"][:page] * 2


def test_a_refused_list_page_is_permanent(fake_conn, fake_twilio):
    fake_twilio.script(Reply(401, twilio_error(20003, "Authenticate", 401)))
    with pytest.raises(PermanentTwilioError) as caught:
        TwilioSmsHook().messages_since(datetime.now(timezone.utc), to=TO)
    assert caught.value.code == 20003


def test_messages_since_asks_for_the_claim_day_then_walks_back_to_the_moment(fake_conn, fake_twilio):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    since = now - timedelta(minutes=30)
    sent = message_json(sid="SM" + "1" * 32, created=now - timedelta(minutes=20),
                        sent=now - timedelta(minutes=19), status="delivered")
    queued = message_json(sid="SM" + "2" * 32, created=now - timedelta(minutes=1))
    before = message_json(sid="SM" + "3" * 32, created=now - timedelta(hours=2),
                          sent=now - timedelta(minutes=5), status="sent")
    older = message_json(sid="SM" + "4" * 32, created=now - timedelta(hours=3), sent=now - timedelta(hours=3))
    fake_twilio.script(
        Reply(200, _page_with_next([sent])), Reply(200, list_page([before])),  # DateSent>= the day, 2 pages
        Reply(200, _page_with_next([queued])),  # then newest first, without a date
        Reply(200, _page_with_next([sent, before, older])),
    )
    found = TwilioSmsHook().messages_since(since, to=TO, from_=OURS, page_size=50)
    assert sorted(m["sid"][2] for m in found) == ["1", "2"]  # created since; each once
    assert found[0]["body"] == "hello"
    assert found[0]["body_sha256"]
    walks = [s.query for s in fake_twilio.seen]
    assert len(walks) == 4  # it stopped at the page that reached before ``since``: not a fifth
    assert walks[0]["DateSent>"] == [since.date().isoformat()]
    assert walks[0]["To"] == [TO]
    assert walks[0]["From"] == [OURS]
    assert walks[0]["PageSize"] == ["50"]
    assert "DateSent>" not in walks[2]
    assert walks[2]["To"] == [TO]


# --- test_connection: never raises, never leaks ---------------------------------------------------

def test_test_connection_succeeds(twilio_conn, twilio_sim):
    expected = f"Connected to Twilio account AC…{twilio_sim.account_sid[-4:]}"
    assert TwilioSmsHook().test_connection() == (True, expected)
    assert twilio_sim.count("account") == 1


def test_test_connection_reports_a_bad_sid_without_a_request(twilio_sim, monkeypatch):
    define_conn(monkeypatch, login="AC-not-a-sid", password="secret-token-123",
                api_base_url=twilio_sim.base_url)
    ok, reason = TwilioSmsHook().test_connection()
    assert not ok
    assert "'login' (Account SID)" in reason
    assert "AC followed by 32 hex" in reason
    # Airflow's Test button tests a copy under a random connection id: the reason names the field only
    assert reason.startswith("Field 'login'")
    assert "twilio_sms_default" not in reason
    assert twilio_sim.count("account") == 0


def test_test_connection_reports_failed_authentication(twilio_sim, monkeypatch):
    define_conn(monkeypatch, login=twilio_sim.account_sid, password="wrong-token-987",
                api_base_url=twilio_sim.base_url)
    ok, reason = TwilioSmsHook().test_connection()
    assert not ok
    assert "20003" in reason
    assert "wrong-token-987" not in reason


def test_test_connection_reports_an_unreachable_twilio(monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}"
    define_conn(monkeypatch, api_base_url=url)
    ok, reason = TwilioSmsHook().test_connection()
    assert not ok
    assert reason.startswith(f"Cannot reach Twilio at {url}")


def test_test_connection_reports_a_suspended_account(fake_conn, fake_twilio):
    fake_twilio.script(Reply(200, {"sid": ACCOUNT, "status": "suspended"}))
    ok, reason = TwilioSmsHook().test_connection()
    assert not ok
    assert "suspended" in reason


def test_test_connection_never_raises(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_TWILIO_SMS_MISSING", raising=False)
    ok, reason = TwilioSmsHook(twilio_conn_id="twilio_sms_missing").test_connection()
    assert not ok
    assert "twilio_sms_missing" in reason


def test_test_connection_never_echoes_a_secret(fake_conn, fake_twilio):
    fake_twilio.script(Reply(403, twilio_error(20403, f"Forbidden for {TOKEN}", 403)))
    ok, reason = TwilioSmsHook().test_connection()
    assert not ok
    assert TOKEN not in reason
    assert "20403" in reason


# --- logs -------------------------------------------------------------------------------------------

def test_logs_mask_numbers_and_never_show_bodies_or_tokens(twilio_conn, twilio_sim, caplog, capfd):
    import logging

    body = "Your code is 482913"
    with caplog.at_level(logging.DEBUG):
        hook = TwilioSmsHook()
        sent = hook.send_message(TO, body)
        hook.fetch_message(sent["sid"])
        hook.list_messages(to=TO)
        with pytest.raises(PermanentTwilioError):
            hook.send_message("+15005550001", body)
    ours = [r.getMessage() for r in caplog.records
            if r.name.startswith(("airflow_provider_twilio_sms", "twilio", "airflow.task.hooks"))]
    output = capfd.readouterr()
    text = "\n".join([*ours, output.out, output.err])
    assert "***0123" in text  # the send was logged, masked
    for secret in ("4155550123", "5005550001", "482913", twilio_sim.auth_token):
        assert secret not in text


def test_fetch_statuses_of_many_messages_reads_pages_then_fetches_a_bounded_few(twilio_conn, twilio_sim):
    hook = TwilioSmsHook()
    listed = [hook.send_message(TO, f"n{i}")["sid"] for i in range(6)]
    gone = ["SM" + f"{i:032x}" for i in range(12)]  # not at Twilio: never in a page, 404 when fetched
    before = twilio_sim.counts()
    found = hook.fetch_statuses(listed + gone, max_pages=2, max_fetches=3)
    assert {sid for sid, message in found.items() if message} == set(listed)
    assert found[listed[0]]["status"]
    assert [sid for sid, message in found.items() if message is None] == gone[:3]  # asked: Twilio has none
    after = twilio_sim.counts()
    assert after.get("list", 0) - before.get("list", 0) == 1  # the only page
    assert after.get("fetch", 0) - before.get("fetch", 0) == 3  # the budget, not 12
    assert hook.fetch_statuses([listed[0]])[listed[0]]["sid"] == listed[0]
    assert twilio_sim.count("list") == after.get("list", 0)  # one SID: fetched, no page

"""The stand-in behaves like Twilio, checked with twilio-python's own client and RequestValidator."""

from __future__ import annotations

import http.server
import threading
import time
from urllib.parse import parse_qsl

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

OURS = "+15005550006"
TO = "+14155550123"


def client(sim, timeout=None):
    c = Client(sim.account_sid, sim.auth_token, environment={"ISOLATED": "1"},
               http_client=TwilioHttpClient(timeout=timeout))
    c.api.base_url = sim.base_url
    return c


class Receiver:
    """A webhook endpoint that records what it is sent and answers with scripted statuses."""

    def __init__(self, answers=()):
        self.got, self.answers = [], list(answers)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                receiver.got.append((self.path, dict(parse_qsl(body)), dict(self.headers)))
                code = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"

    def wait(self, n, timeout=5):
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.got


def test_create_fetch_and_list_with_paging(twilio_sim):
    c = client(twilio_sim)
    sids = [c.messages.create(to=TO, from_=OURS, body=f"hello {i}").sid for i in range(5)]
    assert len(set(sids)) == 5 and all(s.startswith("SM") and len(s) == 34 for s in sids)
    fetched = c.messages(sids[0]).fetch()
    assert fetched.to == TO and fetched.from_ == OURS and fetched.body == "hello 0" and fetched.num_segments == "1"
    assert [m.sid for m in c.messages.list(to=TO, page_size=2)] == list(reversed(sids))
    assert c.messages.list(to="+14155550199") == []
    assert twilio_sim.count("create") == 5 and twilio_sim.count("list") >= 3  # 3 pages of 2


def test_segments_and_encoding(twilio_sim):
    c = client(twilio_sim)
    assert c.messages.create(to=TO, from_=OURS, body="a" * 161).num_segments == "2"
    assert c.messages.create(to=TO, from_=OURS, body="ж" * 71).num_segments == "2"


def test_auth_wrong_token_and_other_accounts_message(twilio_sim):
    bad = Client(twilio_sim.account_sid, "wrong", environment={"ISOLATED": "1"})
    bad.api.base_url = twilio_sim.base_url
    with pytest.raises(TwilioRestException) as err:
        bad.messages.create(to=TO, from_=OURS, body="x")
    assert err.value.status == 401 and err.value.code == 20003
    sid = client(twilio_sim).messages.create(to=TO, from_=OURS, body="x").sid
    other = "AC" + "9" * 32
    twilio_sim.accounts[other] = "other-token"
    c2 = Client(other, "other-token", environment={"ISOLATED": "1"})
    c2.api.base_url = twilio_sim.base_url
    with pytest.raises(TwilioRestException) as err:
        c2.messages(sid).fetch()
    assert err.value.status == 404


def test_api_key_auth(twilio_sim):
    twilio_sim.api_keys["SK" + "1" * 32] = ("key-secret", twilio_sim.account_sid)
    c = Client("SK" + "1" * 32, "key-secret", twilio_sim.account_sid, environment={"ISOLATED": "1"})
    c.api.base_url = twilio_sim.base_url
    assert c.messages.create(to=TO, from_=OURS, body="x").status == "queued"


@pytest.mark.parametrize("to,from_,body,code", [
    ("+15005550001", OURS, "x", 21211), ("+15005550002", OURS, "x", 21612), ("+15005550003", OURS, "x", 21408),
    ("+15005550004", OURS, "x", 21610), ("+15005550009", OURS, "x", 21614), (TO, "+15005550001", "x", 21212),
    (TO, "+15005550007", "x", 21606), (TO, "+15005550008", "x", 21611), (TO, OURS, "x" * 1601, 21617),
    (TO, OURS, "", 21602), ("12", OURS, "x", 21211),
])
def test_magic_numbers_and_validation(twilio_sim, to, from_, body, code):
    with pytest.raises(TwilioRestException) as err:
        client(twilio_sim).messages.create(to=to, from_=from_, body=body)
    assert (err.value.status, err.value.code) == (400, code)
    assert twilio_sim.messages() == []


def test_missing_to_is_21604(twilio_sim):
    auth = (twilio_sim.account_sid, twilio_sim.auth_token)
    r = requests.post(f"{twilio_sim.base_url}/2010-04-01/Accounts/{twilio_sim.account_sid}/Messages.json",
                      data={"From": OURS, "Body": "x"}, auth=auth)
    assert r.status_code == 400 and r.json()["code"] == 21604 and r.json()["more_info"].endswith("/21604")


class TestFaults:
    def test_429_with_retry_after_then_success(self, twilio_sim):
        twilio_sim.add_fault("429", count=1, retry_after=3)
        auth = (twilio_sim.account_sid, twilio_sim.auth_token)
        url = f"{twilio_sim.base_url}/2010-04-01/Accounts/{twilio_sim.account_sid}/Messages.json"
        first = requests.post(url, data={"To": TO, "From": OURS, "Body": "x"}, auth=auth)
        assert first.status_code == 429 and first.json()["code"] == 20429 and first.headers["Retry-After"] == "3"
        assert requests.post(url, data={"To": TO, "From": OURS, "Body": "x"}, auth=auth).status_code == 201
        assert len(twilio_sim.messages()) == 1

    @pytest.mark.parametrize("kind,status", [("500_before", 500), ("503_before", 503)])
    def test_5xx_before_accepting_creates_nothing(self, twilio_sim, kind, status):
        twilio_sim.add_fault(kind)
        with pytest.raises(TwilioRestException) as err:
            client(twilio_sim).messages.create(to=TO, from_=OURS, body="x")
        assert err.value.status == status and twilio_sim.messages() == []

    def test_500_after_accepting_the_message_exists_and_is_delivered(self, twilio_sim):
        twilio_sim.add_fault("500_after")
        c = client(twilio_sim)
        with pytest.raises(TwilioRestException) as err:
            c.messages.create(to=TO, from_=OURS, body="x")
        assert err.value.status == 500
        time.sleep(0.3)
        [message] = c.messages.list(to=TO)
        assert message.status == "delivered"

    def test_slow_answer_times_the_client_out_but_the_message_exists(self, twilio_sim):
        twilio_sim.add_fault("slow", delay=1.0)
        with pytest.raises(requests.exceptions.ReadTimeout):
            client(twilio_sim, timeout=0.3).messages.create(to=TO, from_=OURS, body="x")
        assert len(twilio_sim.messages()) == 1

    @pytest.mark.parametrize("kind,created", [("reset_before", 0), ("reset_after", 1)])
    def test_connection_reset(self, twilio_sim, kind, created):
        twilio_sim.add_fault(kind)
        with pytest.raises(requests.exceptions.ConnectionError):
            client(twilio_sim).messages.create(to=TO, from_=OURS, body="x")
        assert len(twilio_sim.messages()) == created

    def test_fault_scoped_to_a_number_and_set_over_http(self, twilio_sim):
        r = requests.post(f"{twilio_sim.base_url}/_sim/faults", json={"kind": "503_before", "to": "+14155550100",
                                                                      "count": None})
        assert r.status_code == 200
        c = client(twilio_sim)
        assert c.messages.create(to=TO, from_=OURS, body="x").sid
        for _ in range(2):
            with pytest.raises(TwilioRestException):
                c.messages.create(to="+14155550100", from_=OURS, body="x")


class TestCallbacks:
    def test_sent_then_delivered_signed_like_twilio_never_queued(self, twilio_sim):
        hook = Receiver()
        sid = client(twilio_sim).messages.create(to=TO, from_=OURS, body="x", status_callback=hook.url).sid
        got = hook.wait(2)
        assert [p["MessageStatus"] for _, p, _ in got] == ["sent", "delivered"]
        validator = RequestValidator(twilio_sim.auth_token)
        for _, params, headers in got:
            assert params["MessageSid"] == sid and params["AccountSid"] == twilio_sim.account_sid
            assert validator.validate(hook.url, params, headers["X-Twilio-Signature"])
            assert headers["I-Twilio-Idempotency-Token"]
        time.sleep(0.2)
        assert len(hook.got) == 2

    def test_undelivered_carries_the_error_code(self, twilio_sim):
        twilio_sim.set_outcome(TO, "undelivered", 30003)
        hook = Receiver()
        client(twilio_sim).messages.create(to=TO, from_=OURS, body="x", status_callback=hook.url)
        final = hook.wait(2)[-1][1]
        assert final["MessageStatus"] == "undelivered" and final["ErrorCode"] == "30003"

    def test_duplicated_and_out_of_order(self, twilio_sim):
        twilio_sim.duplicate_callbacks = twilio_sim.out_of_order = True
        hook = Receiver()
        client(twilio_sim).messages.create(to=TO, from_=OURS, body="x", status_callback=hook.url)
        statuses = [p["MessageStatus"] for _, p, _ in hook.wait(4)]
        assert statuses == ["delivered", "delivered", "sent", "sent"]

    def test_5xx_is_retried_with_the_same_idempotency_token_4xx_is_not(self, twilio_sim):
        twilio_sim.callback_delay = 0.3  # the retry (after 0.2 s) comes before "delivered"
        hook = Receiver(answers=[503, 200, 400])
        client(twilio_sim).messages.create(to=TO, from_=OURS, body="x", status_callback=hook.url)
        got = hook.wait(3)
        time.sleep(0.5)
        assert len(hook.got) == 3
        assert [p["MessageStatus"] for _, p, _ in got] == ["sent", "sent", "delivered"]
        assert got[0][2]["I-Twilio-Idempotency-Token"] == got[1][2]["I-Twilio-Idempotency-Token"]
        assert got[2][2]["I-Twilio-Idempotency-Token"] != got[0][2]["I-Twilio-Idempotency-Token"]
        assert [c["answer"] for c in twilio_sim.callbacks()] == [503, 200, 400]


class TestInbound:
    @pytest.mark.parametrize("body,opt", [("YES", "START"), ("STOP", "STOP"), ("help", "HELP"),
                                          ("code 123", None)])
    def test_signed_inbound_with_opt_out_type(self, twilio_sim, body, opt):
        hook = Receiver()
        twilio_sim.set_inbound_url(OURS, hook.url)
        r = requests.post(f"{twilio_sim.base_url}/_sim/inbound", json={"from": TO, "to": OURS, "body": body})
        assert r.status_code == 200 and r.json()["status_code"] == 200
        [(_, params, headers)] = hook.wait(1)
        assert RequestValidator(twilio_sim.auth_token).validate(hook.url, params, headers["X-Twilio-Signature"])
        assert params["From"] == TO and params["To"] == OURS and params["Body"] == body
        assert params["NumMedia"] == "0" and params["MessageSid"].startswith("SM")
        assert params.get("OptOutType") == opt

    def test_inbound_without_a_configured_url_is_refused(self, twilio_sim):
        r = requests.post(f"{twilio_sim.base_url}/_sim/inbound", json={"from": TO, "to": OURS, "body": "x"})
        assert r.status_code == 400 and "no inbound URL" in r.json()["error"]


CONTRACT_CASES = [
    ("valid minimal", {"To": TO, "From": OURS, "Body": "hi"}, True),
    ("valid with messaging service", {"To": TO, "MessagingServiceSid": "MG" + "a" * 32, "Body": "hi"}, True),
    ("valid with validity period", {"To": TO, "From": OURS, "Body": "hi", "ValidityPeriod": "600"}, True),
    ("missing To", {"From": OURS, "Body": "hi"}, False),
    ("validity period not a number", {"To": TO, "From": OURS, "Body": "hi", "ValidityPeriod": "abc"}, False),
]


@pytest.mark.parametrize("name,form,accepted", CONTRACT_CASES, ids=[c[0] for c in CONTRACT_CASES])
def test_agrees_with_twilios_contract_on_accept_or_reject(twilio_sim, prism_url, name, form, accepted):
    for base in (twilio_sim.base_url, prism_url):
        r = requests.post(f"{base}/2010-04-01/Accounts/{twilio_sim.account_sid}/Messages.json", data=form,
                          auth=(twilio_sim.account_sid, twilio_sim.auth_token))
        assert (200 <= r.status_code < 300) == accepted, f"{base} answered {r.status_code} for {name}"


def test_bad_account_sid_is_refused_by_both(twilio_sim, prism_url):
    for base in (twilio_sim.base_url, prism_url):
        r = requests.post(f"{base}/2010-04-01/Accounts/not-an-account/Messages.json",
                          data={"To": TO, "From": OURS, "Body": "x"}, auth=("not-an-account", "x"))
        assert 400 <= r.status_code < 500

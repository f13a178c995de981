"""Inbound messages: signed as Twilio signs them, with OptOutType, and the opt-outs they cause."""

from __future__ import annotations

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from simulator_testing import (  # noqa: F401 - receiver_fixture provides the "receiver" fixture
    OURS,
    TO,
    receiver_fixture,
    twilio_client,
)


def _inbound(sim, body, **extra):
    r = requests.post(f"{sim.base_url}/_sim/inbound", json={"from": TO, "to": OURS, "body": body, **extra})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(("body", "opt_out_type"), [
    ("STOP", "STOP"), ("stopall", "STOP"), (" Unsubscribe ", "STOP"), ("cancel", "STOP"), ("End", "STOP"),
    ("QUIT", "STOP"), ("START", "START"), ("yes", "START"), ("Unstop", "START"), ("HELP", "HELP"),
    ("info", "HELP"), ("Stop please", None), ("YES 123", None), ("code 123", None), ("", None),
])
def test_signed_inbound_with_opt_out_type(twilio_sim, receiver, body, opt_out_type):
    twilio_sim.set_inbound_url(OURS, receiver.url)
    answer = _inbound(twilio_sim, body)
    assert answer["status_code"] == 200
    assert answer["body"] == "<Response/>"
    [(path, params, headers)] = receiver.wait(1)
    validator = RequestValidator(twilio_sim.auth_token)
    assert validator.validate(receiver.url, params, headers["X-Twilio-Signature"])
    assert headers["User-Agent"] == "TwilioProxy/1.1"
    assert headers["I-Twilio-Idempotency-Token"]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert (params["From"], params["To"], params["Body"]) == (TO, OURS, body)
    assert params["MessageSid"] == params["SmsSid"] == params["SmsMessageSid"] == answer["message_sid"]
    assert params["MessageSid"].startswith("SM")
    assert len(params["MessageSid"]) == 34
    assert (params["AccountSid"], params["ApiVersion"], params["SmsStatus"]) == (
        twilio_sim.account_sid, "2010-04-01", "received")
    assert (params["NumMedia"], params["NumSegments"]) == ("0", "1")
    assert params.get("OptOutType") == opt_out_type
    assert "MessagingServiceSid" not in params
    assert params["FromCountry"] == "US"


def test_inbound_media_and_messaging_service(twilio_sim, receiver):
    service = "MG" + "d" * 32
    twilio_sim.set_inbound_url(OURS, receiver.url, messaging_service_sid=service)
    urls = ["https://example.com/a.png", "https://example.com/b.jpg?size=2"]
    answer = _inbound(twilio_sim, "see pictures", media_urls=urls)
    [(_, params, headers)] = receiver.wait(1)
    validator = RequestValidator(twilio_sim.auth_token)
    assert validator.validate(receiver.url, params, headers["X-Twilio-Signature"])
    assert params["MessageSid"].startswith("MM")
    assert params["MessageSid"] == answer["message_sid"]
    assert params["NumMedia"] == "2"
    assert params["MessagingServiceSid"] == service
    assert (params["MediaUrl0"], params["MediaContentType0"]) == (urls[0], "image/png")
    assert (params["MediaUrl1"], params["MediaContentType1"]) == (urls[1], "image/jpeg")


def test_an_inbound_message_is_listed_like_twilio_lists_it(twilio_sim, receiver):
    twilio_sim.set_inbound_url(OURS, receiver.url)
    sid = _inbound(twilio_sim, "hello back")["message_sid"]
    [message] = twilio_client(twilio_sim).messages.list(from_=TO)
    assert (message.sid, message.direction, message.status, message.to) == (sid, "inbound", "received", OURS)


def test_stop_blocks_sending_to_that_person_until_start(twilio_sim, receiver):
    twilio_sim.set_inbound_url(OURS, receiver.url)
    client = twilio_client(twilio_sim)
    _inbound(twilio_sim, "STOP")
    with pytest.raises(TwilioRestException) as err:
        client.messages.create(to=TO, from_=OURS, body="are you there?")
    assert (err.value.status, err.value.code) == (400, 21610)
    assert client.messages.create(to="+14155550100", from_=OURS, body="others are fine").sid
    _inbound(twilio_sim, "START")
    assert client.messages.create(to=TO, from_=OURS, body="welcome back").sid


def test_the_cli_json_api_refuses_an_unconfigured_number_and_reports_an_unreachable_webhook(twilio_sim):
    r = requests.post(f"{twilio_sim.base_url}/_sim/inbound", json={"from": TO, "to": OURS, "body": "x"})
    assert r.status_code == 400
    assert "no inbound URL" in r.json()["error"]
    assert OURS not in r.json()["error"]
    twilio_sim.set_inbound_url(OURS, "http://127.0.0.1:9/inbound")
    answer = _inbound(twilio_sim, "x")
    assert answer["status_code"] is None
    assert answer["error"] == "ConnectionError"
    assert twilio_sim.inbound_records()[-1]["answer"] is None


def test_numbers_can_be_configured_over_http(twilio_sim, receiver):
    base = twilio_sim.base_url
    r = requests.post(f"{base}/_sim/numbers", json={"number": OURS, "inbound_url": receiver.url})
    assert r.status_code == 200
    assert requests.get(f"{base}/_sim/numbers").json()["numbers"][OURS]["inbound_url"] == receiver.url
    assert _inbound(twilio_sim, "hi")["status_code"] == 200
    assert twilio_sim.count("inbound_sent") == 1

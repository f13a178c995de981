"""Scheduled messages in the stand-in: held until SendAt (or released early by the control API), then the
usual lifecycle with signed callbacks; canceled with Status=canceled only while scheduled (else 30409)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from simulator_testing import (  # noqa: F401 - receiver_fixture provides the "receiver" fixture
    TO,
    receiver_fixture,
    twilio_client,
    wait_until,
)

SERVICE = "MG" + "b" * 32


def _schedule(sim, callback=None, ahead=timedelta(hours=1)):
    return twilio_client(sim).messages.create(
        to=TO, messaging_service_sid=SERVICE, body="see you tomorrow", schedule_type="fixed",
        send_at=datetime.now(timezone.utc) + ahead, status_callback=callback)


def _statuses(got):
    return [params["MessageStatus"] for _, params, _ in got]


def test_a_scheduled_message_is_held_then_released_with_signed_callbacks(twilio_sim, receiver):
    message = _schedule(twilio_sim, receiver.url)
    assert message.status == "scheduled"
    assert message.date_sent is None
    assert twilio_sim.scheduled() == [{"sid": message.sid, "send_at": message_send_at(twilio_sim)}]
    time.sleep(0.3)  # several status delays: nothing moves before SendAt
    assert twilio_client(twilio_sim).messages(message.sid).fetch().status == "scheduled"
    assert receiver.got == []

    answer = requests.post(f"{twilio_sim.base_url}/_sim/scheduled/release", json={"sid": message.sid},
                           timeout=5)
    assert answer.json() == {"released": [message.sid]}
    got = receiver.wait(3)
    assert _statuses(got) == ["queued", "sent", "delivered"]  # "scheduled", the initial status, never is
    validator = RequestValidator(twilio_sim.auth_token)
    for _, params, headers in got:
        assert validator.validate(receiver.url, params, headers["X-Twilio-Signature"])
        assert params["MessagingServiceSid"] == SERVICE
        assert params["From"]  # the service picked its sender when the message left
    fetched = twilio_client(twilio_sim).messages(message.sid).fetch()
    assert (fetched.status, fetched.date_sent is not None) == ("delivered", True)
    assert twilio_sim.scheduled() == []
    assert twilio_sim.release_scheduled(message.sid) == []  # released once only


def message_send_at(sim) -> str:
    return sim.scheduled()[0]["send_at"]


def test_cancel_while_scheduled_then_30409(twilio_sim, receiver):
    message = _schedule(twilio_sim, receiver.url)
    client = twilio_client(twilio_sim)
    canceled = client.messages(message.sid).update(status="canceled")
    assert canceled.status == "canceled"
    assert _statuses(receiver.wait(1)) == ["canceled"]
    assert twilio_sim.release_scheduled() == []  # a canceled message is never sent
    time.sleep(0.2)
    assert client.messages(message.sid).fetch().status == "canceled"
    assert _statuses(receiver.got) == ["canceled"]
    with pytest.raises(TwilioRestException) as err:
        client.messages(message.sid).update(status="canceled")
    assert (err.value.status, err.value.code) == (400, 30409)


def test_a_released_or_immediate_message_cannot_be_canceled(twilio_sim):
    client = twilio_client(twilio_sim)
    released = _schedule(twilio_sim)
    twilio_sim.release_scheduled()
    now = client.messages.create(to=TO, messaging_service_sid=SERVICE, body="now")
    for sid in (released.sid, now.sid):
        with pytest.raises(TwilioRestException) as err:
            client.messages(sid).update(status="canceled")
        assert err.value.code == 30409
    wait_until(lambda: client.messages(released.sid).fetch().status == "delivered")


def test_an_update_to_another_status_is_refused(twilio_sim):
    message = _schedule(twilio_sim)
    answer = requests.post(f"{twilio_sim.base_url}/2010-04-01/Accounts/{twilio_sim.account_sid}/Messages/"
                           f"{message.sid}.json", data={"Status": "sent"},
                           auth=(twilio_sim.account_sid, twilio_sim.auth_token), timeout=5)
    assert (answer.status_code, answer.json()["code"]) == (400, 20001)
    assert twilio_sim.scheduled()[0]["sid"] == message.sid  # still held


def test_scheduling_refusals_carry_twilios_codes(twilio_sim):
    client = twilio_client(twilio_sim)
    base = {"to": TO, "messaging_service_sid": SERVICE, "body": "x", "schedule_type": "fixed"}
    with pytest.raises(TwilioRestException) as err:
        client.messages.create(**base)
    assert err.value.code == 35111
    for ahead in (timedelta(minutes=10), timedelta(days=36)):
        with pytest.raises(TwilioRestException) as err:
            client.messages.create(**base, send_at=datetime.now(timezone.utc) + ahead)
        assert err.value.code == 35114
    assert twilio_sim.count("create") == 3
    assert twilio_sim.messages() == []


def test_the_control_api_lists_and_releases_every_held_message(twilio_sim):
    sids = {_schedule(twilio_sim).sid for _ in range(3)}
    listed = requests.get(f"{twilio_sim.base_url}/_sim/scheduled", timeout=5).json()["scheduled"]
    assert {m["sid"] for m in listed} == sids
    released = requests.post(f"{twilio_sim.base_url}/_sim/scheduled/release", json={}, timeout=5).json()
    assert set(released["released"]) == sids
    bad = requests.post(f"{twilio_sim.base_url}/_sim/scheduled/release", json={"sid": 5}, timeout=5)
    assert bad.status_code == 400
    twilio_sim.reset()
    assert twilio_sim.scheduled() == []

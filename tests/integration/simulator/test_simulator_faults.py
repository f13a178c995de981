"""Faults on demand, as twilio-python (and so the provider's hook) meets them."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from twilio.base.exceptions import TwilioRestException

from simulator_testing import OURS, TO, messages_url, twilio_client, wait_until


def test_429_carries_code_20429_and_retry_after_and_creates_nothing(twilio_sim):
    twilio_sim.add_fault("429", retry_after=3)
    client = twilio_client(twilio_sim)
    with pytest.raises(TwilioRestException) as err:
        client.messages.create(to=TO, from_=OURS, body="x")
    assert (err.value.status, err.value.code) == (429, 20429)
    assert client.http_client._test_only_last_response.headers["Retry-After"] == "3"
    assert twilio_sim.messages() == []
    assert twilio_sim.faults() == []  # used up
    assert client.messages.create(to=TO, from_=OURS, body="x").status == "queued"


@pytest.mark.parametrize(("kind", "status", "code"), [("500_before", 500, 20500), ("503_before", 503, 20503)])
def test_5xx_before_accepting_creates_no_message(twilio_sim, kind, status, code):
    twilio_sim.add_fault(kind)
    with pytest.raises(TwilioRestException) as err:
        twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x")
    assert (err.value.status, err.value.code) == (status, code)
    assert twilio_sim.messages() == []
    assert twilio_sim.creates()[0]["fault"] == kind
    assert twilio_sim.creates()[0]["status_code"] == status


def test_500_after_accepting_the_message_exists_and_is_delivered(twilio_sim):
    twilio_sim.add_fault("500_after")
    client = twilio_client(twilio_sim)
    with pytest.raises(TwilioRestException) as err:
        client.messages.create(to=TO, from_=OURS, body="the one")
    assert err.value.status == 500
    [listed] = client.messages.list(to=TO)
    assert listed.body == "the one"
    wait_until(lambda: client.messages(listed.sid).fetch().status == "delivered")
    assert twilio_sim.creates()[0]["sid"] == listed.sid


def test_a_slow_answer_times_the_client_out_but_the_message_exists(twilio_sim):
    twilio_sim.add_fault("slow", delay=1.0)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        twilio_client(twilio_sim, timeout=0.2).messages.create(to=TO, from_=OURS, body="x")
    assert time.monotonic() - started < 0.9
    assert len(twilio_sim.messages()) == 1


def test_a_slow_answer_does_not_hold_up_other_clients(twilio_sim):
    twilio_sim.add_fault("slow", to="+14155550100", delay=1.0)
    slow = threading.Thread(target=lambda: twilio_client(twilio_sim).messages.create(
        to="+14155550100", from_=OURS, body="slow"))
    slow.start()
    wait_until(lambda: twilio_sim.count("create") == 1)
    started = time.monotonic()
    twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="fast")
    assert time.monotonic() - started < 0.5
    slow.join(5)


@pytest.mark.parametrize(("kind", "created"), [("reset_before", 0), ("reset_after", 1)])
def test_a_connection_reset_is_a_connection_error(twilio_sim, kind, created):
    twilio_sim.add_fault(kind)
    with pytest.raises(requests.exceptions.ConnectionError):
        twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x")
    assert len(twilio_sim.messages()) == created
    assert twilio_sim.creates()[0]["status_code"] is None
    assert twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x").sid  # still serving


def test_a_fault_scoped_to_a_number_hits_only_that_number_until_cleared(twilio_sim):
    r = requests.post(f"{twilio_sim.base_url}/_sim/faults",
                      json={"kind": "503_before", "to": "+14155550100", "count": None})
    assert r.status_code == 200
    assert r.json()["fault"]["count"] is None
    client = twilio_client(twilio_sim)
    for _ in range(3):
        with pytest.raises(TwilioRestException):
            client.messages.create(to="+14155550100", from_=OURS, body="x")
        assert client.messages.create(to=TO, from_=OURS, body="x").sid
    assert requests.delete(f"{twilio_sim.base_url}/_sim/faults").status_code == 200
    assert client.messages.create(to="+14155550100", from_=OURS, body="x").sid


def test_a_fault_scoped_to_an_account_spares_the_others(twilio_sim):
    other = "AC" + "7" * 32
    twilio_sim.add_account(other, "other-token")
    twilio_sim.add_fault("429", account=other, count=None)
    assert twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x").sid
    with pytest.raises(TwilioRestException) as err:
        twilio_client(twilio_sim, account_sid=other, auth_token="other-token").messages.create(
            to=TO, from_=OURS, body="x")
    assert err.value.status == 429


def test_the_next_n_requests_fail_then_it_clears(twilio_sim):
    twilio_sim.add_fault("503_before", count=2)
    client = twilio_client(twilio_sim)
    outcomes = []
    for _ in range(3):
        try:
            client.messages.create(to=TO, from_=OURS, body="x")
            outcomes.append("ok")
        except TwilioRestException as err:
            outcomes.append(err.status)
    assert outcomes == [503, 503, "ok"]


def test_faults_on_fetch_and_list(twilio_sim):
    client = twilio_client(twilio_sim)
    sid = client.messages.create(to=TO, from_=OURS, body="x").sid
    twilio_sim.add_fault("503_before", endpoint="fetch")
    with pytest.raises(TwilioRestException) as err:
        client.messages(sid).fetch()
    assert err.value.status == 503
    assert client.messages(sid).fetch().sid == sid
    twilio_sim.add_fault("429", endpoint="any", retry_after=5)
    r = requests.get(messages_url(twilio_sim), auth=(twilio_sim.account_sid, twilio_sim.auth_token))
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "5"


def test_unauthenticated_requests_do_not_use_up_a_fault(twilio_sim):
    twilio_sim.add_fault("429")
    assert requests.post(messages_url(twilio_sim), data={"To": TO}).status_code == 401
    assert len(twilio_sim.faults()) == 1


@pytest.mark.parametrize(("payload", "message"), [
    ({"kind": "418"}, "unknown fault kind"), ({"kind": "429", "count": 0}, "count"),
    ({"kind": "slow", "delay": -1}, "delay"), ({"kind": "429", "endpoint": "calls"}, "endpoint"),
    ({"kind": "429", "colour": "red"}, "unknown fault field"), ({}, "missing kind"),
])
def test_a_bad_fault_is_refused_with_the_reason(twilio_sim, payload, message):
    r = requests.post(f"{twilio_sim.base_url}/_sim/faults", json=payload)
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert twilio_sim.faults() == []

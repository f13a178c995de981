"""``/_sim/...``: what tests read and steer on a running stand-in; bounded memory."""

from __future__ import annotations

import pytest
import requests
from twilio.base.exceptions import TwilioRestException

from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

from simulator_testing import (  # noqa: F401 - receiver_fixture provides the "receiver" fixture
    OURS,
    TO,
    messages_url,
    receiver_fixture,
    twilio_client,
    wait_until,
)


def _get(sim, path):
    r = requests.get(f"{sim.base_url}/_sim/{path}")
    assert r.status_code == 200, r.text
    return r.json()


def test_requests_shows_counts_and_every_parsed_create(twilio_sim):
    client = twilio_client(twilio_sim)
    sid = client.messages.create(to=TO, from_=OURS, body="hi", status_callback="https://example.com/cb",
                                 media_url=["https://example.com/1.jpg", "https://example.com/2.jpg"]).sid
    with pytest.raises(TwilioRestException):
        client.messages.create(to="+15005550001", from_=OURS, body="no")
    client.messages(sid).fetch()
    client.messages.list()
    requests.get(messages_url(twilio_sim))  # no credentials
    seen = _get(twilio_sim, "requests")
    assert seen["counts"] == {"create": 2, "fetch": 1, "list": 2, "unauthorized": 1}
    ok, refused = seen["creates"]
    assert (ok["sid"], ok["status_code"], ok["to"], ok["from"], ok["body"]) == (sid, 201, TO, OURS, "hi")
    assert ok["status_callback"] == "https://example.com/cb"
    assert len(ok["media_urls"]) == 2
    assert ok["params"]["MediaUrl"] == ok["media_urls"]
    assert ok["fault"] is None
    assert (refused["sid"], refused["status_code"], refused["error_code"]) == (None, 400, 21211)


def test_callbacks_lists_each_delivery_with_its_answer(twilio_sim, receiver):
    twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x", status_callback=receiver.url)
    twilio_sim.wait_for_callbacks(2)
    delivered = _get(twilio_sim, "callbacks")["callbacks"]
    assert [(c["status"], c["answer"], c["attempt"], c["url"]) for c in delivered] == [
        ("sent", 200, 1, receiver.url), ("delivered", 200, 1, receiver.url)]
    assert _get(twilio_sim, "state")["callbacks"] == {"attempts": 2, "by_answer": {"200": 2}}


def test_outcomes_and_callback_settings_over_http(twilio_sim, receiver):
    base = twilio_sim.base_url
    assert requests.post(f"{base}/_sim/outcomes", json={"to": TO, "status": "undelivered",
                                                       "error_code": 30007}).status_code == 200
    settings = requests.post(f"{base}/_sim/callbacks", json={"delay": 0.01, "retries": 1}).json()["settings"]
    assert settings["status_delay"] == 0.01
    assert settings["retries"] == 1
    twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x", status_callback=receiver.url)
    assert receiver.wait(2)[-1][1]["ErrorCode"] == "30007"
    assert requests.post(f"{base}/_sim/outcomes", json={"to": TO, "status": "lost"}).status_code == 400
    assert requests.post(f"{base}/_sim/callbacks", json={"retries": "many"}).status_code == 400
    assert requests.post(f"{base}/_sim/callbacks", json={"colour": 1}).status_code == 400


def test_accounts_can_be_added_over_http(twilio_sim):
    account = "AC" + "4" * 32
    r = requests.post(f"{twilio_sim.base_url}/_sim/accounts",
                      json={"account_sid": account, "auth_token": "tok"})
    assert r.status_code == 200
    assert twilio_client(twilio_sim, account_sid=account, auth_token="tok").messages.list() == []


def test_reset_forgets_messages_records_and_faults(twilio_sim):
    client = twilio_client(twilio_sim)
    client.messages.create(to=TO, from_=OURS, body="x")
    twilio_sim.add_fault("429")
    assert requests.post(f"{twilio_sim.base_url}/_sim/reset").status_code == 200
    state = _get(twilio_sim, "state")
    assert (state["messages"], state["creates"], state["counts"], state["faults"]) == (0, 0, {}, [])
    assert client.messages.create(to=TO, from_=OURS, body="x").sid


def test_unknown_and_malformed_control_requests(twilio_sim):
    base = twilio_sim.base_url
    assert requests.get(f"{base}/_sim/nothing").status_code == 404
    r = requests.post(f"{base}/_sim/faults", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "not JSON" in r.json()["error"]
    assert requests.post(f"{base}/_sim/numbers", json={"number": OURS}).status_code == 400
    r = requests.get(f"{base}/2010-04-01/Accounts/{twilio_sim.account_sid}/Calls.json",
                     auth=(twilio_sim.account_sid, twilio_sim.auth_token))
    assert r.status_code == 404
    assert r.json()["code"] == 20404


def test_memory_is_bounded_the_oldest_messages_and_records_go_first():
    with TwilioSimulator(max_messages=5, max_records=5, callback_delay=0.01) as sim:
        client = twilio_client(sim)
        sids = [client.messages.create(to=TO, from_=OURS, body=f"m{i}").sid for i in range(12)]
        assert [m["sid"] for m in sim.messages()] == sids[-5:]
        assert [c["sid"] for c in sim.creates()] == sids[-5:]
        with pytest.raises(TwilioRestException) as err:
            client.messages(sids[0]).fetch()
        assert err.value.status == 404
        wait_until(lambda: len(sim._scheduler) == 0)  # steps for forgotten messages do not linger
        assert sim.count("create") == 12

"""The stand-in's WhatsApp and Content templates: what Twilio accepts and refuses, the 24-hour session window
(63016), the statuses called back (sent, delivered, read) signed as Twilio signs them, inbound WhatsApp."""

from __future__ import annotations

import json

import pytest
import requests
from twilio.base.exceptions import TwilioRestException

from airflow_provider_twilio_sms.signature import compute_signature
from airflow_provider_twilio_sms.simulator.content import (
    APPOINTMENT_REMINDER,
    ORDER_SHIPPED,
    SESSION_REPLY,
    TEST_TEMPLATES,
)

from simulator_testing import OURS, TO, messages_url, receiver_fixture, twilio_client, wait_until

receiver = receiver_fixture
WA_OURS, WA_TO = f"whatsapp:{OURS}", f"whatsapp:{TO}"


def _statuses(sim, sid: str, count: int) -> list[dict]:
    records = sim.wait_for_callbacks(count, timeout=5)
    return [r for r in records if r["params"]["MessageSid"] == sid]


def test_a_template_outside_the_session_window_goes_out_and_is_read(twilio_sim, receiver):
    client = twilio_client(twilio_sim)
    message = client.messages.create(to=WA_TO, from_=WA_OURS, content_sid=APPOINTMENT_REMINDER,
                                     content_variables=json.dumps({"1": "5/6", "2": "9am"}),
                                     status_callback=receiver.url)
    assert (message.to, message.from_, message.status) == (WA_TO, WA_OURS, "queued")
    assert message.num_segments == "1"
    assert message.body == "Your appointment is on 5/6 at 9am."
    got = receiver.wait(3)
    assert [params["MessageStatus"] for _, params, _ in got] == ["sent", "delivered", "read"]
    for path, params, headers in got:  # signed as Twilio signs: the URL it called and the form
        url = receiver.base + path
        assert headers["X-Twilio-Signature"] == compute_signature(url, params, twilio_sim.auth_token)
        assert (params["To"], params["From"], params["ChannelPrefix"], params["ChannelToAddress"]) == \
            (WA_TO, WA_OURS, "whatsapp", TO)
    assert client.messages(message.sid).fetch().status == "read"


def test_free_form_whatsapp_outside_the_window_fails_with_63016_and_inside_it_goes_out(twilio_sim, receiver):
    client = twilio_client(twilio_sim)
    outside = client.messages.create(to=WA_TO, from_=WA_OURS, body="Hello", status_callback=receiver.url)
    assert outside.status == "queued"  # Twilio accepts it, then fails it
    _, params, _ = receiver.wait(1)[0]
    assert (params["MessageStatus"], params["ErrorCode"]) == ("failed", "63016")
    assert client.messages(outside.sid).fetch().error_code == 63016

    twilio_sim.set_inbound_url(WA_OURS, receiver.url)
    answer = twilio_sim.send_inbound(WA_TO, WA_OURS, "hi there", profile_name="Ada")
    assert answer["status_code"] == 200
    inside = client.messages.create(to=WA_TO, from_=WA_OURS, body="Hello again", status_callback=receiver.url)
    wait_until(lambda: client.messages(inside.sid).fetch().status == "read")
    # a template WhatsApp has not approved is free-form for the window's rule
    twilio_sim.reset()
    unapproved = client.messages.create(to=WA_TO, from_=WA_OURS, content_sid=SESSION_REPLY)
    wait_until(lambda: client.messages(unapproved.sid).fetch().status == "failed")
    assert client.messages(unapproved.sid).fetch().error_code == 63016


def test_inbound_whatsapp_carries_the_profile_and_no_opt_out(twilio_sim, receiver):
    twilio_sim.set_inbound_url(WA_OURS, receiver.url)
    twilio_sim.send_inbound(WA_TO, WA_OURS, "STOP", profile_name="Ada")
    path, params, headers = receiver.wait(1)[0]
    assert (params["From"], params["To"], params["ProfileName"], params["WaId"], params["NumSegments"]) == \
        (WA_TO, WA_OURS, "Ada", TO.lstrip("+"), "1")
    assert "OptOutType" not in params  # Twilio's opt-out keywords are SMS only
    assert headers["X-Twilio-Signature"] == compute_signature(receiver.base + path, params,
                                                              twilio_sim.auth_token)
    client = twilio_client(twilio_sim)
    assert client.messages.create(to=WA_TO, from_=WA_OURS, body="still open").status == "queued"
    with pytest.raises(ValueError, match="whatsapp: address"):
        twilio_sim.send_inbound(TO, WA_OURS, "mixed")


def test_an_sms_template_is_filled_in_and_counted_in_segments(twilio_sim):
    message = twilio_client(twilio_sim).messages.create(
        to=TO, from_=OURS, content_sid=ORDER_SHIPPED, content_variables=json.dumps({"name": "Ada"}))
    assert message.body == "Hi Ada, your order 12345 has shipped."  # a missing variable takes the sample
    assert message.num_segments == "1"
    long = twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, content_sid=ORDER_SHIPPED,
                                                     content_variables=json.dumps({"name": "x" * 200}))
    assert long.num_segments == "2"
    wa = twilio_client(twilio_sim).messages.create(to=WA_TO, from_=WA_OURS, content_sid=ORDER_SHIPPED,
                                                   content_variables=json.dumps({"name": "x" * 1500}))
    assert wa.num_segments == "1"  # WhatsApp is not sent in segments


@pytest.mark.parametrize(("form", "code"), [
    ({"To": WA_TO, "From": OURS, "Body": "x"}, 21910),
    ({"To": TO, "From": WA_OURS, "Body": "x"}, 21910),
    ({"To": WA_TO, "From": WA_TO, "Body": "x"}, 63031),
    ({"To": TO, "From": OURS, "ContentVariables": '{"1": "x"}', "Body": "x"}, 21654),
    ({"To": TO, "From": OURS, "ContentSid": "HX" + "f" * 32}, 21655),
    ({"To": TO, "From": OURS, "ContentSid": APPOINTMENT_REMINDER, "ContentVariables": "not json"}, 21656),
    ({"To": TO, "From": OURS, "ContentSid": APPOINTMENT_REMINDER, "ContentVariables": '{"1": ""}'}, 21656),
    ({"To": TO, "From": OURS, "ContentSid": APPOINTMENT_REMINDER, "ContentVariables": '{"1": null}'}, 21656),
    ({"To": TO, "From": OURS, "ContentSid": APPOINTMENT_REMINDER, "ContentVariables": '["x"]'}, 21656),
    ({"To": "whatsapp:+15005550001", "From": WA_OURS, "Body": "x"}, 21211),
    ({"To": WA_TO, "From": "whatsapp:ACME", "Body": "x"}, 21212),
])
def test_twilios_refusals(twilio_sim, form, code):
    answer = requests.post(messages_url(twilio_sim), data=form, auth=(twilio_sim.account_sid,
                                                                      twilio_sim.auth_token), timeout=10)
    assert (answer.status_code, answer.json()["code"]) == (400, code), answer.text


def test_a_messaging_service_picks_its_whatsapp_sender(twilio_sim, receiver):
    service = "MG" + "c" * 32
    twilio_sim.set_inbound_url(WA_OURS, receiver.url, messaging_service_sid=service)
    twilio_sim.set_inbound_url(OURS, receiver.url, messaging_service_sid=service)
    client = twilio_client(twilio_sim)
    message = client.messages.create(to=WA_TO, messaging_service_sid=service,
                                     content_sid=APPOINTMENT_REMINDER)
    sms = client.messages.create(to=TO, messaging_service_sid=service, body="hi")
    wait_until(lambda: client.messages(message.sid).fetch().status == "read")
    assert client.messages(message.sid).fetch().from_ == WA_OURS
    wait_until(lambda: client.messages(sms.sid).fetch().status == "delivered")
    assert client.messages(sms.sid).fetch().from_ == OURS


def test_read_receipts_off_and_read_on_sms_refused(twilio_sim):
    twilio_sim.set_outcome(WA_TO, "delivered")
    client = twilio_client(twilio_sim)
    message = client.messages.create(to=WA_TO, from_=WA_OURS, content_sid=APPOINTMENT_REMINDER)
    wait_until(lambda: client.messages(message.sid).fetch().status == "delivered")
    with pytest.raises(ValueError, match="WhatsApp only"):
        twilio_sim.set_outcome(TO, "read")
    with pytest.raises(TwilioRestException):
        client.messages.create(to=WA_TO, from_=OURS, body="x")


def test_the_templates_are_documented_with_their_samples():
    for sid, template in TEST_TEMPLATES.items():
        assert sid.startswith("HX")
        assert len(sid) == 34
        assert "{{" not in template.render({})  # every placeholder has a sample

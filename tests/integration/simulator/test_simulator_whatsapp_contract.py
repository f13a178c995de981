"""WhatsApp and Content templates against Twilio's published OpenAPI contract, with Prism.

As in test_simulator_contract.py: requests the contract can judge are accepted or refused by both; Twilio's
documented rules beyond it (21654, 21655, 21656, 21910, 63031) are accepted by Prism and refused by the
stand-in with Twilio's code; and every answer about a WhatsApp or template message (create, fetch once
``read``, a list filtered by a ``whatsapp:`` address) matches the contract's response schemas.
"""

from __future__ import annotations

import json
import time

import pytest
import requests
from test_simulator_contract import _post, _violations

from airflow_provider_twilio_sms.simulator.content import APPOINTMENT_REMINDER, ORDER_SHIPPED
from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

from conftest import running_prism
from simulator_testing import OURS, TO, twilio_client

pytestmark = pytest.mark.prism

WA_OURS, WA_TO = f"whatsapp:{OURS}", f"whatsapp:{TO}"
VARIABLES = json.dumps({"1": "5/6", "2": "9am"})

AGREED = [
    ("whatsapp template", {"To": WA_TO, "From": WA_OURS, "ContentSid": APPOINTMENT_REMINDER,
                           "ContentVariables": VARIABLES}, True),
    ("whatsapp free-form", {"To": WA_TO, "From": WA_OURS, "Body": "hi"}, True),
    ("sms template with variables", {"To": TO, "From": OURS, "ContentSid": ORDER_SHIPPED,
                                     "ContentVariables": '{"name": "Ada"}'}, True),
    ("whatsapp through a service", {"To": WA_TO, "MessagingServiceSid": "MG" + "a" * 32,
                                    "ContentSid": APPOINTMENT_REMINDER}, True),
    ("content sid malformed", {"To": WA_TO, "From": WA_OURS, "ContentSid": "HXnothex"}, False),
]

BEYOND_CONTRACT = [
    ("whatsapp to, sms from", {"To": WA_TO, "From": OURS, "Body": "x"}, 21910),
    ("same whatsapp from and to", {"To": WA_TO, "From": WA_TO, "Body": "x"}, 63031),
    ("variables without a template", {"To": TO, "From": OURS, "Body": "x", "ContentVariables": VARIABLES},
     21654),
    ("unknown template", {"To": TO, "From": OURS, "ContentSid": "HX" + "e" * 32}, 21655),
    ("variables not json", {"To": TO, "From": OURS, "ContentSid": APPOINTMENT_REMINDER,
                            "ContentVariables": "{1: x}"}, 21656),
]


@pytest.mark.parametrize(("name", "form", "accepted"), AGREED, ids=[c[0] for c in AGREED])
def test_the_stand_in_and_the_contract_agree(twilio_sim, prism_url, name, form, accepted):
    for base in (twilio_sim.base_url, prism_url):
        r = _post(base, twilio_sim.account_sid, twilio_sim.auth_token, form)
        assert (200 <= r.status_code < 300) == accepted, f"{base} answered {r.status_code}: {r.text[:300]}"


@pytest.mark.parametrize(("name", "form", "code"), BEYOND_CONTRACT, ids=[c[0] for c in BEYOND_CONTRACT])
def test_twilios_rules_beyond_the_contract(twilio_sim, prism_url, name, form, code):
    contract = _post(prism_url, twilio_sim.account_sid, twilio_sim.auth_token, form)
    assert 200 <= contract.status_code < 300, "the contract now rejects this too: move it to AGREED"
    r = _post(twilio_sim.base_url, twilio_sim.account_sid, twilio_sim.auth_token, form)
    assert (r.status_code, r.json()["code"]) == (400, code), r.text


def test_whatsapp_answers_match_twilios_response_schemas():
    with TwilioSimulator(callback_delay=0.01) as sim, \
            running_prism("proxy", sim.base_url, "--errors") as proxy:
        auth = (sim.account_sid, sim.auth_token)
        base = f"{proxy}/2010-04-01/Accounts/{sim.account_sid}"
        created = requests.post(f"{base}/Messages.json", auth=auth, data={
            "To": WA_TO, "From": WA_OURS, "ContentSid": APPOINTMENT_REMINDER, "ContentVariables": VARIABLES})
        failed = requests.post(f"{base}/Messages.json", auth=auth,
                               data={"To": WA_TO, "From": WA_OURS, "Body": "outside the window"})
        assert (created.status_code, failed.status_code) == (201, 201)
        assert _violations(created) == []
        assert _violations(failed) == []
        client = twilio_client(sim)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
                client.messages(created.json()["sid"]).fetch().status != "read"
                or client.messages(failed.json()["sid"]).fetch().status != "failed"):
            time.sleep(0.02)
        answers = {
            "fetch read": requests.get(f"{base}/Messages/{created.json()['sid']}.json", auth=auth),
            "fetch failed 63016": requests.get(f"{base}/Messages/{failed.json()['sid']}.json", auth=auth),
            "list by whatsapp address": requests.get(f"{base}/Messages.json", params={"To": WA_TO},
                                                     auth=auth),
        }
        assert answers["fetch read"].json()["status"] == "read"
        assert answers["fetch failed 63016"].json()["error_code"] == 63016
        # (through Prism a list answer with Twilio's relative *_uri fields is replaced by its violations: see
        # _violations; the stand-in's own answer shows the filter by a whatsapp: address)
        direct = requests.get(f"{sim.base_url}/2010-04-01/Accounts/{sim.account_sid}/Messages.json",
                              params={"To": WA_TO}, auth=auth).json()
        assert {m["sid"] for m in direct["messages"]} == {created.json()["sid"], failed.json()["sid"]}
        for name, answer in answers.items():
            assert _violations(answer) == [], f"{name}: {_violations(answer)}"

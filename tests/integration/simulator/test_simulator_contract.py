"""The stand-in against Twilio's published OpenAPI contract, with Prism (a validator nobody here wrote).

1. Requests: Prism mocking the contract and the stand-in agree on accept (2xx) or reject (4xx) for
   create requests the contract can judge (types, formats, enums, SID patterns, auth).
2. Beyond the contract: Twilio's documented business rules (no body 21602, no sender 21603, 1600
   characters 21617, number formats 21211, validity period range 21624, callback URL rules 21609...)
   cannot be written in OpenAPI, so Prism accepts those requests; the stand-in must refuse each with
   Twilio's code. It may be stricter than the contract only where Twilio documents a rule.
3. Answers: Prism as a validating proxy in front of the stand-in checks every answer against the
   contract's response schemas (message, list page, account).

Prism cannot parse a form-encoded array (it refuses even one valid ``MediaUrl``: "must be array"), so
media requests are checked against the stand-in alone (test_simulator.py).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

from conftest import running_prism
from simulator_testing import OURS, TO, twilio_client

pytestmark = pytest.mark.prism

SEND_AT = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
MG = "MG" + "a" * 32

AGREED = [
    ("valid minimal", {"To": TO, "From": OURS, "Body": "hi"}, True),
    ("valid with a messaging service", {"To": TO, "MessagingServiceSid": MG, "Body": "hi"}, True),
    ("valid with validity period", {"To": TO, "From": OURS, "Body": "hi", "ValidityPeriod": "600"}, True),
    ("valid with status callback", {"To": TO, "From": OURS, "Body": "hi",
                                    "StatusCallback": "https://example.com/cb?team=a"}, True),
    ("valid booleans", {"To": TO, "From": OURS, "Body": "hi", "ProvideFeedback": "true",
                        "SmartEncoded": "false"}, True),
    ("valid enums and numbers", {"To": TO, "From": OURS, "Body": "hi", "ContentRetention": "retain",
                                 "AddressRetention": "obfuscate", "RiskCheck": "disable", "Attempt": "2",
                                 "MaxPrice": "0.5"}, True),
    ("valid scheduled", {"To": TO, "MessagingServiceSid": MG, "Body": "hi", "ScheduleType": "fixed",
                         "SendAt": SEND_AT}, True),
    ("valid content template", {"To": TO, "From": OURS, "ContentSid": "HX" + "0" * 31 + "1"}, True),
    ("unknown parameter ignored", {"To": TO, "From": OURS, "Body": "hi", "Colour": "blue"}, True),
    ("missing To", {"From": OURS, "Body": "hi"}, False),
    ("validity period not a number", {"To": TO, "From": OURS, "Body": "hi", "ValidityPeriod": "abc"}, False),
    ("validity period a fraction", {"To": TO, "From": OURS, "Body": "hi", "ValidityPeriod": "1.5"}, False),
    ("boolean not true/false", {"To": TO, "From": OURS, "Body": "hi", "ProvideFeedback": "maybe"}, False),
    ("boolean capitalised", {"To": TO, "From": OURS, "Body": "hi", "SmartEncoded": "True"}, False),
    ("attempt not an integer", {"To": TO, "From": OURS, "Body": "hi", "Attempt": "x"}, False),
    ("max price not a number", {"To": TO, "From": OURS, "Body": "hi", "MaxPrice": "cheap"}, False),
    ("schedule type not fixed", {"To": TO, "From": OURS, "Body": "hi", "ScheduleType": "later"}, False),
    ("send at not a date", {"To": TO, "From": OURS, "Body": "hi", "SendAt": "tomorrow"}, False),
    ("content retention unknown", {"To": TO, "From": OURS, "Body": "hi", "ContentRetention": "ever"}, False),
    ("risk check unknown", {"To": TO, "From": OURS, "Body": "hi", "RiskCheck": "maybe"}, False),
    ("traffic type unknown", {"To": TO, "From": OURS, "Body": "hi", "TrafficType": "paid"}, False),
    ("messaging service sid malformed", {"To": TO, "MessagingServiceSid": "MG123", "Body": "hi"}, False),
    ("application sid malformed", {"To": TO, "From": OURS, "Body": "hi", "ApplicationSid": "AP1"}, False),
    ("content sid malformed", {"To": TO, "From": OURS, "ContentSid": "HX1"}, False),
    ("status callback not a URL", {"To": TO, "From": OURS, "Body": "hi", "StatusCallback": "a url"}, False),
    ("status callback relative", {"To": TO, "From": OURS, "Body": "hi", "StatusCallback": "/cb"}, False),
]

BEYOND_CONTRACT = [
    ("missing Body", {"To": TO, "From": OURS}, 21602),
    ("missing From and MessagingServiceSid", {"To": TO, "Body": "hi"}, 21603),
    ("empty To", {"To": "", "From": OURS, "Body": "hi"}, 21604),
    ("body over 1600 characters", {"To": TO, "From": OURS, "Body": "x" * 1601}, 21617),
    ("To not a phone number", {"To": "12", "From": OURS, "Body": "hi"}, 21211),
    ("To is the magic invalid number", {"To": "+15005550001", "From": OURS, "Body": "hi"}, 21211),
    ("From not owned (magic)", {"To": TO, "From": "+15005550007", "Body": "hi"}, 21606),
    ("validity period too long", {"To": TO, "From": OURS, "Body": "hi", "ValidityPeriod": "36001"}, 21624),
    ("status callback host with underscore", {"To": TO, "From": OURS, "Body": "hi",
                                              "StatusCallback": "http://my_host/cb"}, 21609),
    ("status callback not http", {"To": TO, "From": OURS, "Body": "x", "StatusCallback": "ftp://h/c"}, 21609),
    ("scheduled too soon", {"To": TO, "MessagingServiceSid": MG, "Body": "hi", "ScheduleType": "fixed",
                            "SendAt": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}, 35114),
    ("scheduled too late", {"To": TO, "MessagingServiceSid": MG, "Body": "hi", "ScheduleType": "fixed",
                            "SendAt": (datetime.now(timezone.utc) + timedelta(days=36)).strftime(
                                "%Y-%m-%dT%H:%M:%SZ")}, 35114),
    ("scheduled without SendAt", {"To": TO, "MessagingServiceSid": MG, "Body": "hi", "ScheduleType": "fixed"},
     35111),
]


def _post(base: str, account: str, token: str, form: dict) -> requests.Response:
    return requests.post(f"{base}/2010-04-01/Accounts/{account}/Messages.json", data=form,
                         auth=(account, token), timeout=30)


@pytest.mark.parametrize(("name", "form", "accepted"), AGREED, ids=[c[0] for c in AGREED])
def test_the_stand_in_and_the_contract_agree_on_accept_or_reject(twilio_sim, prism_url, name, form, accepted):
    for base in (twilio_sim.base_url, prism_url):
        r = _post(base, twilio_sim.account_sid, twilio_sim.auth_token, form)
        assert (200 <= r.status_code < 300) == accepted, \
            f"{base} answered {r.status_code} for {name}: {r.text[:300]}"
        assert r.status_code < 500


def test_both_refuse_a_malformed_account_sid_and_missing_credentials(twilio_sim, prism_url):
    for base in (twilio_sim.base_url, prism_url):
        r = _post(base, "not-an-account", "x", {"To": TO, "From": OURS, "Body": "x"})
        assert 400 <= r.status_code < 500, f"{base} answered {r.status_code}"
        r = requests.post(f"{base}/2010-04-01/Accounts/{twilio_sim.account_sid}/Messages.json",
                          data={"To": TO, "From": OURS, "Body": "x"}, timeout=30)
        assert r.status_code == 401, f"{base} answered {r.status_code} without credentials"


@pytest.mark.parametrize(("name", "form", "code"), BEYOND_CONTRACT, ids=[c[0] for c in BEYOND_CONTRACT])
def test_twilios_documented_rules_beyond_the_contract(twilio_sim, prism_url, name, form, code):
    contract = _post(prism_url, twilio_sim.account_sid, twilio_sim.auth_token, form)
    assert 200 <= contract.status_code < 300, "the contract now rejects this too: move it to AGREED"
    r = _post(twilio_sim.base_url, twilio_sim.account_sid, twilio_sim.auth_token, form)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == code, r.text


# --- the stand-in's answers, validated by Prism as a proxy ----------------------------------------

@pytest.fixture(scope="module")
def proxied_sim():
    """A stand-in behind Prism in proxy mode with --errors: an answer that violates Twilio's response
    schemas comes back as 500 with the violations in ``sl-violations``."""
    with TwilioSimulator(callback_delay=0.01) as sim, running_prism("proxy", sim.base_url, "--errors") as url:
        yield sim, url


def _violations(response: requests.Response) -> list[dict]:
    """The contract violations Prism found in an answer (with --errors it replaces a violating answer
    by a 500 listing them)."""
    found = json.loads(response.headers.get("sl-violations") or "[]")
    if response.status_code == 500 and "VIOLATIONS" in response.json().get("type", ""):
        found = found or response.json().get("validation", [])
    elif response.status_code >= 300:
        return [{"severity": "Error", "message": f"answered {response.status_code}: {response.text[:300]}"}]
    # Twilio's own examples carry relative paths ("/2010-04-01/...") in the list answer's *uri fields,
    # which its schema marks format "uri" (absolute): the contract contradicts itself there.
    return [v for v in found if v.get("severity") == "Error"
            and not (v.get("code") == "format" and v["location"][-1].endswith("uri"))]


def test_every_answer_matches_twilios_response_schemas(proxied_sim):
    sim, proxy = proxied_sim
    auth = (sim.account_sid, sim.auth_token)
    base = f"{proxy}/2010-04-01/Accounts/{sim.account_sid}"
    form = {"To": TO, "From": OURS, "Body": "hi ✓", "StatusCallback": "http://127.0.0.1:9/cb"}
    created = requests.post(f"{base}/Messages.json", data=form, auth=auth)
    service = requests.post(f"{base}/Messages.json", data={"To": TO, "MessagingServiceSid": MG, "Body": "hi"},
                            auth=auth)
    assert (created.status_code, service.status_code) == (201, 201)
    assert _violations(created) == []
    assert _violations(service) == []
    for _ in range(3):
        requests.post(f"{base}/Messages.json", data={"To": TO, "From": OURS, "Body": "more"}, auth=auth)
    sid = created.json()["sid"]
    client = twilio_client(sim)
    deadline = time.monotonic() + 5
    while client.messages(sid).fetch().status != "delivered" and time.monotonic() < deadline:
        time.sleep(0.02)
    answers = {
        "fetch delivered": requests.get(f"{base}/Messages/{sid}.json", auth=auth),
        "list page 0": requests.get(f"{base}/Messages.json", params={"PageSize": 2, "To": TO}, auth=auth),
        "list filtered": requests.get(f"{base}/Messages.json", params={"DateSent>": "2020-01-01"}, auth=auth),
        "account": requests.get(f"{proxy}/2010-04-01/Accounts/{sim.account_sid}.json", auth=auth),
    }
    page = requests.get(f"{sim.base_url}/2010-04-01/Accounts/{sim.account_sid}/Messages.json",
                        params={"PageSize": 2, "To": TO}, auth=auth).json()
    answers["list page 1"] = requests.get(proxy + page["next_page_uri"], auth=auth)
    for name, answer in answers.items():
        assert _violations(answer) == [], f"{name}: {_violations(answer)}"


def test_scheduling_and_canceling_answers_match_the_contract(proxied_sim):
    """A scheduled message, its fetch, its cancel (``Status=canceled``) and the canceled fetch, through
    Prism validating every answer; and a status other than canceled is refused by both."""
    sim, proxy = proxied_sim
    auth = (sim.account_sid, sim.auth_token)
    base = f"{proxy}/2010-04-01/Accounts/{sim.account_sid}"
    created = requests.post(f"{base}/Messages.json", auth=auth, data={
        "To": TO, "MessagingServiceSid": MG, "Body": "tomorrow", "ScheduleType": "fixed", "SendAt": SEND_AT})
    assert created.status_code == 201
    assert created.json()["status"] == "scheduled"
    sid = created.json()["sid"]
    answers = {
        "create scheduled": created,
        "fetch scheduled": requests.get(f"{base}/Messages/{sid}.json", auth=auth),
        "cancel": requests.post(f"{base}/Messages/{sid}.json", data={"Status": "canceled"}, auth=auth),
        "fetch canceled": requests.get(f"{base}/Messages/{sid}.json", auth=auth),
    }
    for name, answer in answers.items():
        assert _violations(answer) == [], f"{name}: {_violations(answer)}"
    assert answers["cancel"].json()["status"] == answers["fetch canceled"].json()["status"] == "canceled"


def test_the_stand_in_and_the_contract_refuse_an_update_to_another_status(twilio_sim, prism_url):
    client = twilio_client(twilio_sim)
    sid = client.messages.create(to=TO, messaging_service_sid=MG, body="x", schedule_type="fixed",
                                 send_at=datetime.now(timezone.utc) + timedelta(days=1)).sid
    for base in (twilio_sim.base_url, prism_url):
        r = requests.post(f"{base}/2010-04-01/Accounts/{twilio_sim.account_sid}/Messages/{sid}.json",
                          data={"Status": "sent"}, auth=(twilio_sim.account_sid, twilio_sim.auth_token),
                          timeout=30)
        assert 400 <= r.status_code < 500, f"{base} answered {r.status_code}: {r.text[:300]}"

"""The hook against Twilio's published OpenAPI contract, served by Prism (a peer nobody here wrote).

Prism answers 422 to any request that breaks the contract (a missing ``To``, a malformed AccountSid,
``ValidityPeriod=abc``, ...) and 401 without Basic auth, so every 2xx below also proves that the request
the hook built is one Twilio's API accepts. The answers are the contract's own examples.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from airflow_provider_twilio_sms.errors import PermanentTwilioError
from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook

pytestmark = pytest.mark.prism

ACCOUNT = "AC" + "0123456789abcdef" * 2
EXAMPLE_SID = "SM" + "a" * 32  # the contract's example message


@pytest.fixture
def prism_conn(prism_url, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", json.dumps({
        "conn_type": "twilio_sms", "login": ACCOUNT, "password": "f" * 32,
        "extra": {"from_number": "+15005550006", "api_base_url": prism_url}}))
    return prism_url


def test_send_message_returns_the_parsed_message(prism_conn):
    result = TwilioSmsHook().send_message("+14155550123", "Your code is 123456")
    assert json.loads(json.dumps(result)) == result
    assert result["sid"] == EXAMPLE_SID
    assert result["status"] == "queued"
    assert result["account_sid"].startswith("AC")
    assert result["to"]
    assert result["from"]
    assert result["num_segments"] == 1
    assert (result["segments"], result["encoding"]) == (1, "GSM-7")  # ours, from the body we sent
    assert datetime.fromisoformat(result["date_created"]).tzinfo is not None
    assert result["error_code"] is None
    assert "body" not in result


def test_every_option_the_hook_sends_is_in_the_contract(prism_conn):
    # MediaUrl is left out: Twilio (and twilio-python) send it as repeated form fields, which Prism does
    # not read as the contract's array (it answers 422 even for two URLs). The unit tests check that
    # media URLs reach the stand-in as repeated MediaUrl fields.
    result = TwilioSmsHook().send_message(
        "+14155550123", "Ünïcödé 👍" * 3, from_="+15005550006", messaging_service_sid="MG" + "b" * 32,
        status_callback="https://airflow.example.com/twilio_sms/webhooks/twilio_sms_default/status",
        validity_period=3600)
    assert result["sid"] == EXAMPLE_SID
    assert (result["segments"], result["encoding"]) == (1, "UCS-2")


def test_fetch_message_is_in_the_contract(prism_conn):
    fetched = TwilioSmsHook().fetch_message(EXAMPLE_SID)
    assert fetched["sid"].startswith("SM")
    assert fetched["status"]
    assert "body" not in fetched


def test_list_messages_is_in_the_contract(prism_conn):
    listed = TwilioSmsHook().list_messages(to="+14155550123", from_="+15005550006", limit=5)
    assert listed, "the contract's example page has messages"
    assert all(len(m["body_sha256"]) == 64 and "body" not in m for m in listed)


def test_test_connection_fetches_the_account(prism_conn):
    ok, message = TwilioSmsHook().test_connection()
    assert ok, message
    assert message.startswith("Connected to Twilio account AC…")


def test_a_request_the_contract_rejects_is_a_permanent_error(prism_conn):
    """Prism's 422 (here for an AccountSid that breaks the contract's pattern) is not retried or hidden."""
    hook = TwilioSmsHook()
    with pytest.raises(PermanentTwilioError) as caught:
        hook._call(lambda: hook.client.api.v2010.accounts("AC-invalid").messages.create(
            to="+14155550123", from_="+15005550006", body="hi"), creates=True)
    assert caught.value.http_status == 422

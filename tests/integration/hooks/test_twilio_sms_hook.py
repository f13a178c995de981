"""TwilioSmsHook against Twilio's OpenAPI contract (Prism) and the local stand-in."""

from __future__ import annotations

import json

import pytest

from airflow_provider_twilio_sms.errors import (
    ConnectionConfigError,
    InvalidMessageError,
    OptedOutError,
    PermanentTwilioError,
    RetryableTwilioError,
    UnknownOutcomeError,
)
from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook

TO = "+14155550123"


def test_send_message_against_twilios_contract(prism_url, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", json.dumps({
        "conn_type": "twilio_sms", "login": "AC" + "a" * 32, "password": "token",
        "extra": {"from_number": "+15005550006", "api_base_url": prism_url}}))
    result = TwilioSmsHook().send_message(TO, "Hello from the contract test",
                                          status_callback="https://airflow.example.com/cb")
    assert result["sid"].startswith("SM")
    assert len(result["sid"]) == 34
    assert result["status"]
    assert result["account_sid"].startswith("AC")
    assert set(result) >= {
        "sid",
        "status",
        "to",
        "from",
        "num_segments",
        "segments",
        "encoding",
        "date_created",
        "error_code",
        "price",
    }
    assert "body" not in result


def test_sender_path_against_twilios_contract(prism_url, monkeypatch, store_conn):
    from airflow_provider_twilio_sms.sending import SendRequest, SmsSender

    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", json.dumps({
        "conn_type": "twilio_sms", "login": "AC" + "a" * 32, "password": "token",
        "extra": {"from_number": "+15005550006", "api_base_url": prism_url}}))
    result = SmsSender(TwilioSmsHook(), store_conn).send(
        SendRequest(to=TO, body="hi", idempotency_key="contract")
    )
    assert result["sid"].startswith("SM")
    assert not result["already_sent"]


@pytest.mark.parametrize(("to", "body", "media", "match"), [
    ("+1999", "hi", None, "not a valid phone number"),
    ("not a number", "hi", None, "not a valid phone number"),
    (TO, "x" * 1601, None, "1600"),
    (TO, "hi", [f"https://example.com/{i}.jpg" for i in range(11)], "at most 10"),
])
def test_invalid_input_fails_before_any_http_request(twilio_sim, twilio_conn, to, body, media, match):
    with pytest.raises(InvalidMessageError, match=match) as err:
        TwilioSmsHook().send_message(to, body, media_url=media)
    assert twilio_sim.count("create") == 0
    assert to not in str(err.value), "the number given must not appear in clear in the error"


@pytest.mark.parametrize(("to", "error", "code"), [
    ("+15005550001", PermanentTwilioError, 21211), ("+15005550004", OptedOutError, 21610),
    ("+15005550009", PermanentTwilioError, 21614), ("+15005550003", PermanentTwilioError, 21408),
])
def test_twilio_errors_are_classified(twilio_sim, twilio_conn, to, error, code):
    with pytest.raises(error) as err:
        TwilioSmsHook().send_message(to, "hi")
    assert err.value.code == code
    assert str(code) in str(err.value)


def test_429_is_retryable_with_retry_after(twilio_sim, twilio_conn):
    twilio_sim.add_fault("429", retry_after=7)
    with pytest.raises(RetryableTwilioError) as err:
        TwilioSmsHook().send_message(TO, "hi")
    assert err.value.retry_after == 7
    assert err.value.code == 20429


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500_after", UnknownOutcomeError),
        ("reset_after", UnknownOutcomeError),
        ("slow", UnknownOutcomeError),
        ("reset_before", UnknownOutcomeError),
    ],
)
def test_no_answer_after_the_request_left_is_an_unknown_outcome(twilio_sim, twilio_conn, fault, error):
    twilio_sim.add_fault(fault, delay=1.0)
    with pytest.raises(error):
        TwilioSmsHook(timeout=0.4).send_message(TO, "hi")


def test_connection_refused_is_retryable(twilio_conn):
    twilio_conn(api_base_url="http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(RetryableTwilioError, match="never left"):
        TwilioSmsHook(timeout=2).send_message(TO, "hi")


def test_test_connection_reports_success_and_failure_without_raising(twilio_sim, twilio_conn, monkeypatch):
    ok, message = TwilioSmsHook().test_connection()
    assert ok
    assert "Connected" in message
    assert twilio_sim.auth_token not in message
    monkeypatch.setenv("AIRFLOW_CONN_BAD_TOKEN", json.dumps({
        "conn_type": "twilio_sms", "login": twilio_sim.account_sid, "password": "wrong-token",
        "extra": {"from_number": "+15005550006", "api_base_url": twilio_sim.base_url}}))
    ok, message = TwilioSmsHook(twilio_conn_id="bad_token").test_connection()
    assert not ok
    assert "20003" in message
    assert "wrong-token" not in message
    monkeypatch.setenv("AIRFLOW_CONN_BAD_SID", json.dumps({"conn_type": "twilio_sms", "login": "AC123",
                                                           "password": "x"}))
    ok, message = TwilioSmsHook(twilio_conn_id="bad_sid").test_connection()
    assert not ok
    assert "'login' (Account SID)" in message
    assert "'bad_sid'" not in message  # the Test button's random connection id would only confuse


@pytest.mark.parametrize(("extra", "field"), [({"region": "mars1"}, "region"), ({"edge": "atlantis"}, "edge"),
                                         ({"default_region": "XX"}, "default_region"),
                                         ({"rate_limit": "lots"}, "rate_limit"),
                                         ({"webhook_base_url": "http://example.com"}, "webhook_base_url"),
                                         ({"api_key_sid": "SK" + "1" * 32}, "api_key_secret")])
def test_bad_connection_fields_are_named(twilio_conn, extra, field):
    twilio_conn(**extra)
    with pytest.raises(ConnectionConfigError) as err:
        TwilioSmsHook().settings  # noqa: B018
    assert err.value.field == field
    assert "'twilio_sms_default'" in str(err.value)


def test_missing_sender_is_a_clear_error(twilio_sim, twilio_conn):
    twilio_conn(from_number=None)
    with pytest.raises(ConnectionConfigError, match="no sender"):
        TwilioSmsHook().send_message(TO, "hi")
    assert twilio_sim.count("create") == 0

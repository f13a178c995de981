"""The webhook's signature check agrees with twilio-python's own RequestValidator: Auth Token (HMAC-SHA1)
and shared keys (HMAC-SHA256 or HMAC-SHA1, named by X-Twilio-Webhooks-Signature-Settings)."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator, get_signature_algorithm

from airflow_provider_twilio_sms.connection import TwilioConnectionSettings
from airflow_provider_twilio_sms.signature import verify_signature
from airflow_provider_twilio_sms.webhook.signing import parse_signature_settings, signature_matches

URL = "https://airflow.example.com/twilio_sms/webhooks/tw/status?ik=order-1"
PARAMS = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered", "Body": "héllo wörld + 1", "Empty": ""}
KEY_ID = "webhooks_sharedkey_abc"
SETTINGS = TwilioConnectionSettings(conn_id="tw", account_sid="AC" + "1" * 32, auth_token="primary",
                                    secondary_auth_token="secondary", webhook_signing_key_sid=KEY_ID,
                                    webhook_signing_key_secret="shared-secret")


@pytest.mark.parametrize("header", [
    "key=webhooks_sharedkey_abc,algorithm=HMAC_SHA256", "algorithm=HMAC_SHA1, key=x", "key=x", "", "garbage",
    "key=,algorithm=", " key = k , algorithm = hmac_sha256 "])
def test_settings_header_is_read_like_twilio_python(header):
    assert parse_signature_settings(header)[1] == get_signature_algorithm(header).upper()


@pytest.mark.parametrize("algorithm", ["HMAC_SHA256", "HMAC_SHA1"])
@pytest.mark.parametrize("url", [URL, URL.replace(".com/", ".com:443/")])
def test_shared_key_signature_matches_request_validator(algorithm, url):
    signature = RequestValidator("shared-secret").compute_signature(url, PARAMS, algorithm)
    pairs = list(PARAMS.items())
    assert verify_signature(URL, pairs, signature, ["shared-secret"], algorithm=algorithm)
    assert not verify_signature(URL, pairs, signature, ["other-secret"], algorithm=algorithm)
    extra = pairs + [("Extra", "1")]
    assert not verify_signature(URL, extra, signature, ["shared-secret"], algorithm=algorithm)
    other = "HMAC_SHA1" if algorithm == "HMAC_SHA256" else "HMAC_SHA256"
    assert not verify_signature(URL, pairs, signature, ["shared-secret"], algorithm=other)


def test_shared_key_json_body_needs_its_signed_hash():
    body = b'{"MessageSid": "SM1"}'
    validator = RequestValidator("shared-secret")
    url = f"{URL}&bodySHA256={validator.compute_hash(body.decode())}"
    signature = validator.compute_signature(url, {}, "HMAC_SHA256")
    assert verify_signature(url, None, signature, ["shared-secret"], algorithm="HMAC_SHA256", raw_body=body)
    assert not verify_signature(url, None, signature, ["shared-secret"], algorithm="HMAC_SHA256",
                                raw_body=body + b" ")
    unhashed = validator.compute_signature(URL, {}, "HMAC_SHA256")
    assert not verify_signature(
        URL, None, unhashed, ["shared-secret"], algorithm="HMAC_SHA256", raw_body=body
    )


@pytest.mark.parametrize("signature", ["sïgnature", "\udcff", "x" * 28])
def test_a_malformed_signature_is_simply_wrong(signature):
    # Non-ASCII or surrogate characters must not raise (hmac.compare_digest refuses non-ASCII str).
    assert verify_signature(URL, list(PARAMS.items()), signature, ["primary"]) is False


def test_an_unknown_algorithm_verifies_nothing():
    signature = RequestValidator("primary").compute_signature(URL, PARAMS)
    assert verify_signature(URL, list(PARAMS.items()), signature, ["primary"]) is True
    assert verify_signature(URL, list(PARAMS.items()), signature, ["primary"], algorithm="HMAC_MD5") is False


def _headers_for(token, algorithm=None, key=KEY_ID):
    signed_with = algorithm if algorithm in (None, "HMAC_SHA1", "HMAC_SHA256") else "HMAC_SHA256"
    signature = RequestValidator(token).compute_signature(URL, PARAMS, signed_with)
    settings_header = f"key={key},algorithm={algorithm}" if algorithm else None
    return signature, settings_header


@pytest.mark.parametrize(("token", "algorithm", "key", "accepted"), [
    ("primary", None, None, True),
    ("secondary", None, None, True),
    ("shared-secret", "HMAC_SHA256", KEY_ID, True),
    ("shared-secret", "HMAC_SHA1", KEY_ID, True),
    ("shared-secret", None, None, False),  # the shared secret without the header is not an Auth Token
    ("primary", "HMAC_SHA1", KEY_ID, False),  # naming the shared key means the shared key signed it
    ("shared-secret", "HMAC_SHA256", "webhooks_sharedkey_other", False),
    ("shared-secret", "HMAC_SHA512", KEY_ID, False),
    ("wrong", None, None, False),
])
def test_connection_decides_which_secret_may_sign(token, algorithm, key, accepted):
    signature, settings_header = _headers_for(token, algorithm, key)
    pairs = list(PARAMS.items())
    assert signature_matches(SETTINGS, URL, pairs, signature, settings_header, None) is accepted


def test_a_connection_without_a_shared_key_refuses_shared_key_requests():
    plain = TwilioConnectionSettings(conn_id="tw", account_sid="AC" + "1" * 32, auth_token="primary")
    signature, header = _headers_for("primary", "HMAC_SHA1")
    assert not signature_matches(plain, URL, list(PARAMS.items()), signature, header, None)

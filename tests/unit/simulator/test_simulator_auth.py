"""HTTP Basic auth as Twilio takes it."""

from __future__ import annotations

from base64 import b64encode

from airflow_provider_twilio_sms.simulator.auth import authenticate, primary_token

AC, AC2, SK = "AC" + "1" * 32, "AC" + "2" * 32, "SK" + "3" * 32
ACCOUNTS = {AC: ("primary", "secondary"), AC2: "two"}
KEYS = {SK: ("key-secret", AC)}


def _basic(user, password):
    return "Basic " + b64encode(f"{user}:{password}".encode()).decode()


def test_account_tokens():
    assert authenticate(_basic(AC, "primary"), AC, ACCOUNTS, KEYS)
    assert authenticate(_basic(AC, "secondary"), AC, ACCOUNTS, KEYS)
    assert not authenticate(_basic(AC, "wrong"), AC, ACCOUNTS, KEYS)
    assert not authenticate(_basic(AC2, "two"), AC, ACCOUNTS, KEYS)  # another account's URL
    assert primary_token(ACCOUNTS, AC) == "primary"
    assert primary_token(ACCOUNTS, AC2) == "two"
    assert primary_token(ACCOUNTS, "AC404") is None


def test_api_keys():
    assert authenticate(_basic(SK, "key-secret"), AC, ACCOUNTS, KEYS)
    assert not authenticate(_basic(SK, "key-secret"), AC2, ACCOUNTS, KEYS)
    assert not authenticate(_basic(SK, "nope"), AC, ACCOUNTS, KEYS)
    assert not authenticate(_basic("SK" + "9" * 32, "key-secret"), AC, ACCOUNTS, KEYS)


def test_malformed_headers():
    for header in (None, "", "Bearer x", "Basic !!!", "Basic " + b64encode(b"no-colon").decode(),
                   "Basic " + b64encode(b"\xff\xfe:x").decode()):
        assert not authenticate(header, AC, ACCOUNTS, KEYS)

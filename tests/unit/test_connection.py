"""``twilio_sms`` connection settings read the way Airflow stores them, with one clear error per problem."""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid

import pytest

from airflow_provider_twilio_sms import crypto
from airflow_provider_twilio_sms.connection import (
    SECRET_EXTRAS,
    TwilioConnectionSettings,
    load_settings,
)
from airflow_provider_twilio_sms.errors import ConnectionConfigError, EncryptionError, InvalidMessageError

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "f" * 32
KEY_SID = "SK" + "a" * 32
SERVICE = "MG" + "b" * 32
KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
def conn(monkeypatch, request):
    """Define a connection through ``AIRFLOW_CONN_<ID>`` (as Airflow's own provider tests do)."""

    def define(conn_id: str | None = None, *, login=SID, password=TOKEN, conn_type="twilio_sms", **extra):
        conn_id = conn_id or f"twilio_{uuid.uuid4().hex[:10]}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
            {"conn_type": conn_type, "login": login, "password": password, "extra": extra}))
        return conn_id

    return define


@pytest.fixture
def keyring(monkeypatch):
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS", json.dumps({"k1": KEY}))
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ACTIVE_KEY_ID", "k1")
    crypto.clear_keyring_cache()
    yield
    crypto.clear_keyring_cache()


def config_error(conn_id: str) -> ConnectionConfigError:
    with pytest.raises(ConnectionConfigError) as caught:
        load_settings(conn_id)
    return caught.value


# --- reading ------------------------------------------------------------------------------------

def test_a_full_connection_is_read(conn):
    conn_id = conn(from_number="(415) 555-0123", messaging_service_sid=SERVICE, api_key_sid=KEY_SID,
                   api_key_secret="key-secret", region="IE1", edge="Dublin", default_region="us",
                   webhook_base_url="https://airflow.example.com/", secondary_auth_token="e" * 32,
                   webhook_signing_key_sid="HK" + "c" * 32, webhook_signing_key_secret="signing-secret",
                   rate_limit="100/1h", api_base_url=None)
    s = load_settings(conn_id)
    assert (s.conn_id, s.account_sid, s.auth_token) == (conn_id, SID, TOKEN)
    assert s.from_number == "(415) 555-0123"
    assert s.messaging_service_sid == SERVICE
    assert (s.api_key_sid, s.api_key_secret) == (KEY_SID, "key-secret")
    assert (s.region, s.edge, s.default_region) == ("ie1", "dublin", "US")
    assert s.webhook_base_url == "https://airflow.example.com"
    assert s.webhook_tokens == [TOKEN, "e" * 32]
    assert s.credentials == (KEY_SID, "key-secret")  # the API key is preferred to the Auth Token
    assert (s.parsed_rate_limit.count, s.parsed_rate_limit.window_seconds) == (100, 3600)
    assert s.api_base_url is None


def test_the_minimal_connection_is_an_account_sid_and_auth_token(conn):
    s = load_settings(conn())
    assert s.credentials == (SID, TOKEN)
    assert s.from_number is None
    assert s.region is None
    assert s.api_edge is None
    assert s.parsed_rate_limit is None


def test_an_api_key_replaces_the_auth_token(conn):
    s = load_settings(conn(password=None, api_key_sid=KEY_SID, api_key_secret="key-secret"))
    assert s.auth_token is None
    assert s.credentials == (KEY_SID, "key-secret")
    assert s.webhook_tokens == []


def test_extras_under_airflows_legacy_prefix_are_read(conn):
    s = load_settings(conn(**{"extra__twilio_sms__from_number": "+14155550123",
                              "extra__twilio_sms__region": "au1",
                              "extra__twilio_sms__rate_limit": "5/1m",
                              "rate_limit": "", "edge": "sydney",
                              "extra__twilio_sms__edge": "tokyo"}))
    assert s.from_number == "+14155550123"
    assert s.region == "au1"
    assert s.rate_limit == "5/1m"   # the plain name was empty: the legacy one fills it
    assert s.edge == "sydney"       # both set: the plain name wins


def test_settings_are_frozen_and_never_print_secrets(conn):
    s = load_settings(conn(api_key_sid=KEY_SID, api_key_secret="key-secret-xyz",
                           secondary_auth_token="e" * 32))
    for text in (repr(s), str(s)):
        assert TOKEN not in text
        assert "key-secret-xyz" not in text
        assert "e" * 32 not in text
    with pytest.raises(AttributeError):
        s.auth_token = "other"  # type: ignore[misc]
    assert s.redact(f"token {TOKEN} and key-secret-xyz") == "token *** and ***"


@pytest.mark.parametrize(("rate_limit", "expected"), [
    ("100/1h", (100, 3600)), ("5/1m", (5, 60)), ("10/30s", (10, 30)), ("1/d", (1, 86400)),
    (" 7 / 2 m ", (7, 120)),
])
def test_rate_limits_parse_into_count_and_seconds(conn, rate_limit, expected):
    limit = load_settings(conn(rate_limit=rate_limit)).parsed_rate_limit
    assert (limit.count, limit.window_seconds) == expected


# --- regions and edges --------------------------------------------------------------------------

@pytest.mark.parametrize(("region", "edge", "api_edge"), [
    ("ie1", None, "dublin"), ("au1", None, "sydney"), ("jp1", None, "tokyo"), ("us1", None, None),
    (None, "ashburn", "ashburn"), ("ie1", "dublin", "dublin"), ("au1", "sydney-ix", "sydney-ix"),
])
def test_a_region_without_an_edge_gets_the_regions_own_edge(conn, region, edge, api_edge):
    assert load_settings(conn(region=region, edge=edge)).api_edge == api_edge


def test_a_retired_region_id_says_what_to_use_instead(conn):
    error = config_error(conn(region="us2"))
    assert error.field == "region"
    assert "28 April 2026" in str(error)
    assert "umatilla" in str(error)
    assert "ie1" in str(error)


# --- one clear error per problem ----------------------------------------------------------------

@pytest.mark.parametrize(("settings", "field", "needle"), [
    ({"login": "AC123"}, "login", "AC followed by 32 hex"),
    ({"login": ""}, "login", "AC followed by 32 hex"),
    ({"login": "SK" + "0" * 32}, "login", "AC followed by 32 hex"),
    ({"password": ""}, "password", "neither an Auth Token nor an API key"),
    ({"api_key_sid": "SK123", "api_key_secret": "x"}, "api_key_sid", "SK followed by 32 hex"),
    ({"api_key_sid": KEY_SID}, "api_key_secret", "needs both its SID and secret"),
    ({"api_key_secret": "x"}, "api_key_sid", "needs both its SID and secret"),
    ({"messaging_service_sid": "MG1"}, "messaging_service_sid", "MG followed by 32 hex"),
    ({"region": "eu1"}, "region", "unknown region 'eu1'"),
    ({"edge": "paris"}, "edge", "unknown edge 'paris'"),
    ({"default_region": "USA"}, "default_region", "not a country code"),
    ({"from_number": "12-34"}, "from_number", "not a valid phone number"),
    ({"from_number": "2025550147"}, "from_number", "set default_region on the connection"),
    ({"webhook_base_url": "http://airflow.example.com"}, "webhook_base_url", "plain http"),
    ({"webhook_base_url": "airflow.example.com"}, "webhook_base_url", "not an https URL"),
    ({"webhook_base_url": "https://airflow.example.com/?a=1"}, "webhook_base_url", "query or fragment"),
    ({"api_base_url": "ftp://127.0.0.1:8099"}, "api_base_url", "not an https URL"),
    ({"api_base_url": "https://127.0.0.1:notaport"}, "api_base_url", "not a URL"),
    ({"webhook_signing_key_sid": "HK" + "0" * 32}, "webhook_signing_key_secret", "needs both"),
    ({"rate_limit": "100 per hour"}, "rate_limit", "is not a rate limit"),
    ({"rate_limit": "0/1h"}, "rate_limit", "count at least 1"),
    ({"rate_limit": "5/1w"}, "rate_limit", "units s, m, h, d"),
])
def test_each_problem_is_one_error_naming_the_field_and_the_fix(conn, settings, field, needle):
    login = settings.pop("login", SID)
    password = settings.pop("password", TOKEN)
    error = config_error(conn(login=login, password=password, **settings))
    assert error.field == field
    message = str(error)
    assert needle in message
    assert f"field {field!r}" in message
    assert error.conn_id in message


def test_credentials_in_a_url_are_refused_without_echoing_them(conn):
    error = config_error(conn(api_base_url="https://user:hunter2@127.0.0.1:8099"))
    assert error.field == "api_base_url"
    assert "credentials" in str(error)
    assert "hunter2" not in str(error)


def test_plain_http_is_allowed_only_to_the_local_machine(conn):
    for url in ("http://127.0.0.1:8099", "http://localhost:4010", "http://[::1]:4010"):
        assert load_settings(conn(api_base_url=url, webhook_base_url=url)).api_base_url == url


def test_a_connection_of_another_type_is_refused(conn):
    error = config_error(conn(conn_type="http"))
    assert error.field == "conn_type"
    assert "twilio_sms" in str(error)


# --- senders ------------------------------------------------------------------------------------

def test_a_missing_sender_is_an_error_only_when_sending_without_one(conn):
    s = load_settings(conn())  # no from_number, no messaging_service_sid: still a valid connection
    with pytest.raises(ConnectionConfigError, match="no sender is configured") as caught:
        s.resolve_sender()
    assert caught.value.field == "from_number"
    assert s.resolve_sender("+14155550123") == ("+14155550123", None)
    assert s.resolve_sender(messaging_service_sid=SERVICE) == (None, SERVICE)


def test_the_callers_sender_wins_then_the_from_number_then_the_service(conn):
    both = load_settings(conn(from_number="+15005550006", messaging_service_sid=SERVICE))
    assert both.resolve_sender() == ("+15005550006", None)
    assert both.resolve_sender(messaging_service_sid=SERVICE) == (None, SERVICE)
    assert both.resolve_sender("ACME") == ("ACME", None)
    assert both.resolve_sender("ACME", SERVICE) == ("ACME", SERVICE)
    service_only = load_settings(conn(messaging_service_sid=SERVICE))
    assert service_only.resolve_sender() == (None, SERVICE)
    local = load_settings(conn(from_number="(415) 555-0123", default_region="US"))
    assert local.resolve_sender() == ("+14155550123", None)


def test_a_malformed_sender_from_the_caller_is_a_message_error(conn):
    s = load_settings(conn(from_number="+15005550006"))
    with pytest.raises(InvalidMessageError, match="MG followed by 32 hex"):
        s.resolve_sender(messaging_service_sid="MG123")
    with pytest.raises(InvalidMessageError, match="not a valid phone number"):
        s.resolve_sender("+1202555")


# --- secrets ------------------------------------------------------------------------------------

def test_secret_extra_names_are_the_ones_airflow_redacts():
    from airflow._shared.secrets_masker import should_hide_value_for_key

    assert SECRET_EXTRAS == ("api_key_secret", "secondary_auth_token", "webhook_signing_key_secret")
    assert all(should_hide_value_for_key(name) for name in SECRET_EXTRAS)


def test_encrypted_secrets_are_decrypted_and_registered_with_the_masker(conn, keyring):
    from airflow.sdk.log import mask_logs

    suffix = base64.b16encode(os.urandom(6)).decode()
    # Wholly random values: the masker is process-wide, and another test may have registered a word
    # like "token" as a secret, which would mask part of a value such as "token-<suffix>".
    plain = {
        field: base64.b16encode(os.urandom(12)).decode()
        for field in ("password", "api_key_secret", "secondary_auth_token", "webhook_signing_key_secret")
    }
    conn_id = f"twilio_enc_{suffix.lower()}"
    encrypted = {field: crypto.encrypt_extra(value, conn_id, field) for field, value in plain.items()}
    conn(conn_id, password=encrypted.pop("password"), api_key_sid=KEY_SID,
         webhook_signing_key_sid="HK" + "0" * 32, **encrypted)
    s = load_settings(conn_id)
    assert (s.auth_token, s.api_key_secret, s.secondary_auth_token, s.webhook_signing_key_secret) == (
        plain["password"], plain["api_key_secret"], plain["secondary_auth_token"],
        plain["webhook_signing_key_secret"])
    for value in plain.values():
        assert mask_logs(None, "info", {"event": f"x {value} y"})["event"] == "x *** y"


def test_a_value_encrypted_for_another_connection_fails_clearly(conn, keyring):
    value = crypto.encrypt_extra("key-secret", "some_other_conn", "api_key_secret")
    conn_id = conn(api_key_sid=KEY_SID, api_key_secret=value)
    with pytest.raises(EncryptionError) as caught:
        load_settings(conn_id)
    assert conn_id in str(caught.value)
    assert "api_key_secret" in str(caught.value)


def test_an_unknown_encryption_version_is_never_sent_as_plain_text(conn, keyring):
    with pytest.raises(EncryptionError):
        load_settings(conn(api_key_sid=KEY_SID, api_key_secret="enc:v9:k1:AAAA"))


def test_a_plain_text_secret_extra_works_and_warns_once_per_connection_and_field(conn, caplog):
    conn_id = conn(api_key_sid=KEY_SID, api_key_secret="plain-key-secret",
                   secondary_auth_token="plain-second")
    with caplog.at_level(logging.WARNING, logger="airflow_provider_twilio_sms.connection"):
        for _ in range(3):
            assert load_settings(conn_id).api_key_secret == "plain-key-secret"
    warnings = [r.getMessage() for r in caplog.records if "plain text" in r.getMessage()]
    assert len(warnings) == 2  # one per field, however often the connection is read
    assert any("api_key_secret" in w for w in warnings)
    assert any("secondary_auth_token" in w for w in warnings)
    assert not any("plain-key-secret" in w or "plain-second" in w for w in warnings)
    assert all(conn_id in w and "airflow twilio-sms encrypt" in w for w in warnings)


def test_the_plain_auth_token_in_the_password_field_does_not_warn(conn, caplog):
    with caplog.at_level(logging.WARNING, logger="airflow_provider_twilio_sms.connection"):
        load_settings(conn())
    assert not [r for r in caplog.records if "plain text" in r.getMessage()]


def test_from_connection_accepts_airflows_connection_model():
    from airflow.models.connection import Connection

    model = Connection(conn_id="twilio_model", conn_type="twilio_sms", login=SID, password=TOKEN,
                       extra=json.dumps({"from_number": "+15005550006"}))
    s = TwilioConnectionSettings.from_connection(model)
    assert s.conn_id == "twilio_model"
    assert s.from_number == "+15005550006"

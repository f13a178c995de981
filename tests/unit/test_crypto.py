"""Encrypted connection secrets: the enc:v1 format, the keyring from Airflow config, rotation, masking."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys

import pytest

from airflow_provider_twilio_sms import crypto
from airflow_provider_twilio_sms.crypto import (
    ENC_PREFIX,
    Keyring,
    decrypt_extra,
    encrypt_extra,
    is_encrypted,
    reencrypt,
    register_secret,
)
from airflow_provider_twilio_sms.errors import EncryptionError

CONN, FIELD = "twilio_qa", "api_key_secret"
SECRET = "sk-secret-Value-0123456789"
K1 = base64.b64encode(bytes(range(32))).decode()
K1_OTHER = base64.b64encode(bytes(range(100, 132))).decode()
K2 = base64.b64encode(bytes(range(50, 82))).decode()
ALL_KEYS = (K1, K1_OTHER, K2)


def ring(active: str | None = None, **keys: str) -> Keyring:
    return Keyring.from_json(json.dumps(keys), active)


def assert_clean(message: str, *, secrets=(SECRET,)) -> None:
    """No plaintext and no key (standard or URL-safe base64, or the raw hex) in an error message."""
    for secret in secrets:
        assert secret not in message
    for key in ALL_KEYS:
        raw = base64.b64decode(key)
        for form in (key, key.rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="), raw.hex()):
            assert form not in message


def decrypt_error(value: str, conn_id: str = CONN, field: str = FIELD, keyring: Keyring | None = None) -> str:
    with pytest.raises(EncryptionError) as info:
        decrypt_extra(value, conn_id, field, keyring if keyring is not None else ring(k1=K1))
    message = str(info.value)
    assert_clean(message)
    return message


def _blob(value: str) -> tuple[str, bytearray]:
    head, _, payload = value.rpartition(":")
    return head, bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _with_blob(head: str, blob: bytes) -> str:
    return f"{head}:{base64.urlsafe_b64encode(bytes(blob)).decode().rstrip('=')}"


@pytest.fixture(autouse=True)
def no_key_config(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AIRFLOW__TWILIO_SMS__"):
            monkeypatch.delenv(name)


# --- the format ----------------------------------------------------------------------------------

@pytest.mark.parametrize("plaintext", [SECRET, "ü€漢字 and spaces", "x", "a" * 5000])
def test_round_trip(plaintext):
    keyring = ring(k1=K1)
    value = encrypt_extra(plaintext, CONN, FIELD, keyring)
    assert value.startswith(f"{ENC_PREFIX}k1:")
    assert is_encrypted(value)
    assert len(plaintext) < 5 or plaintext not in value
    assert decrypt_extra(value, CONN, FIELD, keyring) == plaintext


def test_value_is_url_safe_and_nonce_is_fresh_each_time():
    keyring = ring(k1=K1)
    values = {encrypt_extra(SECRET, CONN, FIELD, keyring) for _ in range(50)}
    assert len(values) == 50
    nonces = {bytes(_blob(v)[1][:12]) for v in values}
    assert len(nonces) == 50
    for value in values:
        payload = value.split(":", 3)[3]
        assert set(payload) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert len(_blob(value)[1]) == 12 + len(SECRET.encode()) + 16


def test_surrounding_whitespace_of_a_stored_value_is_ignored():
    keyring = ring(k1=K1)
    value = encrypt_extra(SECRET, CONN, FIELD, keyring)
    assert decrypt_extra(f"  {value}\n", CONN, FIELD, keyring) == SECRET


def test_is_encrypted():
    assert is_encrypted("enc:v1:k1:abc")
    assert is_encrypted("enc:v2:k1:abc")  # a newer format is still "encrypted": never used as a plain secret
    assert not is_encrypted("plain-secret")
    assert not is_encrypted("encrypted-looking")
    assert not is_encrypted(None)
    assert not is_encrypted(42)


def test_unknown_format_version_fails_clearly():
    message = decrypt_error("enc:v2:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert "'v2'" in message
    assert "Upgrade the provider" in message
    assert CONN in message
    assert FIELD in message


def test_encrypt_refuses_empty_and_already_encrypted_values():
    keyring = ring(k1=K1)
    with pytest.raises(EncryptionError, match="empty"):
        encrypt_extra("", CONN, FIELD, keyring)
    value = encrypt_extra(SECRET, CONN, FIELD, keyring)
    with pytest.raises(EncryptionError, match="already encrypted"):
        encrypt_extra(value, CONN, FIELD, keyring)


# --- tampering and misuse ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("part", "index"),
    [("nonce", 0), ("nonce", 11), ("ciphertext", 12), ("ciphertext", 20), ("tag", -16), ("tag", -1)],
)
def test_tampered_value_fails_naming_connection_field_and_key(part, index):
    keyring = ring(k1=K1)
    head, blob = _blob(encrypt_extra(SECRET, CONN, FIELD, keyring))
    blob[index] ^= 0x01
    message = decrypt_error(_with_blob(head, blob), keyring=keyring)
    assert f"Connection {CONN!r}" in message
    assert f"field {FIELD!r}" in message
    assert "'k1'" in message
    assert "altered" in message


def test_truncated_or_mangled_values_fail_clearly():
    keyring = ring(k1=K1)
    value = encrypt_extra(SECRET, CONN, FIELD, keyring)
    head, blob = _blob(value)
    assert "too short" in decrypt_error(_with_blob(head, blob[:20]), keyring=keyring)
    assert "base64" in decrypt_error(value[:-1] + "!", keyring=keyring)
    assert "malformed" in decrypt_error("enc:v1:" + value.split(":", 3)[3], keyring=keyring)
    assert "malformed" in decrypt_error("enc:v1:bad id:AAAA", keyring=keyring)


def test_key_id_swapped_to_another_key_in_the_ring_fails():
    keyring = ring("k2", k1=K1, k2=K2)
    value = encrypt_extra(SECRET, CONN, FIELD, keyring)
    assert value.startswith("enc:v1:k2:")
    message = decrypt_error(value.replace("enc:v1:k2:", "enc:v1:k1:"), keyring=keyring)
    assert "'k1'" in message


@pytest.mark.parametrize(("conn_id", "field"), [("twilio_other", FIELD), (CONN, "secondary_auth_token"),
                                            (CONN, "password"), ("Twilio_QA", FIELD)])
def test_value_moved_to_another_connection_or_field_fails(conn_id, field):
    keyring = ring(k1=K1)
    value = encrypt_extra(SECRET, CONN, FIELD, keyring)
    message = decrypt_error(value, conn_id, field, keyring)
    assert repr(conn_id) in message
    assert repr(field) in message
    assert "another connection or field" in message


@pytest.mark.parametrize(("first", "second"), [(("ab", "c"), ("a", "bc")), (("a:b", "c"), ("a", "b:c")),
                                           (('a","b', "c"), ("a", 'b","c'))])
def test_associated_data_has_no_concatenation_collisions(first, second):
    keyring = ring(k1=K1)
    value = encrypt_extra(SECRET, *first, keyring)
    assert decrypt_extra(value, *first, keyring) == SECRET
    with pytest.raises(EncryptionError):
        decrypt_extra(value, *second, keyring)


def test_wrong_key_under_the_same_id_fails():
    value = encrypt_extra(SECRET, CONN, FIELD, ring(k1=K1))
    message = decrypt_error(value, keyring=ring(k1=K1_OTHER))
    assert "'k1'" in message
    assert "is not the one it was encrypted with" in message


def test_unknown_key_id_fails_listing_the_known_ids():
    value = encrypt_extra(SECRET, CONN, FIELD, ring(k1=K1))
    message = decrypt_error(value, keyring=ring(k2=K2))
    assert "'k1'" in message
    assert "not in [twilio_sms] encryption_keys" in message
    assert "k2" in message
    assert f"--conn-id {CONN} --field {FIELD}" in message


def test_no_keys_configured_fails_with_the_fix():
    value = encrypt_extra(SECRET, CONN, FIELD, ring(k1=K1))
    message = decrypt_error(value, keyring=Keyring.from_config())
    assert "no encryption keys configured: set [twilio_sms] encryption_keys" in message
    assert "airflow twilio-sms generate-key" in message
    assert "'k1'" in message
    with pytest.raises(EncryptionError, match="no encryption keys configured"):
        encrypt_extra(SECRET, CONN, FIELD)


def test_error_attributes_name_connection_field_and_key_id():
    value = encrypt_extra(SECRET, CONN, FIELD, ring(k1=K1))
    with pytest.raises(EncryptionError) as info:
        decrypt_extra(value, CONN, FIELD, ring(k1=K1_OTHER))
    assert (info.value.conn_id, info.value.field, info.value.key_id) == (CONN, FIELD, "k1")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# --- rotation ------------------------------------------------------------------------------------

def test_rotation_k1_to_k2_then_retiring_k1():
    before = ring(k1=K1)
    old_api, old_token = (encrypt_extra(SECRET, CONN, f, before) for f in (FIELD, "secondary_auth_token"))

    during = ring("k2", k2=K2, k1=K1)  # k2 added and active, k1 kept: old values still decrypt
    assert decrypt_extra(old_api, CONN, FIELD, during) == SECRET
    assert encrypt_extra(SECRET, CONN, FIELD, during).startswith("enc:v1:k2:")

    rotated = reencrypt(old_api, CONN, FIELD, during)
    assert rotated is not None
    assert rotated.startswith("enc:v1:k2:")
    assert reencrypt(rotated, CONN, FIELD, during) is None  # idempotent

    after = ring(k2=K2)  # k1 retired
    assert decrypt_extra(rotated, CONN, FIELD, after) == SECRET
    message = decrypt_error(old_token, CONN, "secondary_auth_token", after)
    assert "'k1'" in message
    assert "secondary_auth_token" in message
    assert "rotate-keys" in message


def test_reencrypt_checks_values_already_under_the_active_key():
    keyring = ring(k1=K1)
    head, blob = _blob(encrypt_extra(SECRET, CONN, FIELD, keyring))
    blob[-1] ^= 0x80
    with pytest.raises(EncryptionError, match="altered"):
        reencrypt(_with_blob(head, blob), CONN, FIELD, keyring)


def test_several_keys_without_an_active_one_still_decrypt_but_cannot_encrypt():
    value = encrypt_extra(SECRET, CONN, FIELD, ring(k1=K1))
    keyring = ring(k1=K1, k2=K2)
    assert keyring.active_key_id is None
    assert decrypt_extra(value, CONN, FIELD, keyring) == SECRET
    with pytest.raises(EncryptionError, match="active_key_id is not set"):
        encrypt_extra(SECRET, CONN, FIELD, keyring)


def test_single_key_is_active_by_default():
    assert ring(k1=K1).active_key_id == "k1"


# --- malformed keyrings --------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "fragment"), [
    ("{k1: x", "not valid JSON"),
    (f'["{K1}"]', "must be a JSON object"),
    ('{"k1": 42}', "not a string"),
    ('{"k1": "not base64 at all!"}', "not valid base64"),
    (json.dumps({"k1": base64.b64encode(b"0" * 16).decode()}), "decodes to 16 bytes, not 32"),
    (json.dumps({"k1": base64.b64encode(b"0" * 33).decode()}), "decodes to 33 bytes, not 32"),
    (json.dumps({K1: "k1"}), "key id of entry 1 is not valid"),  # id and key swapped
    (json.dumps({"k1": K1, "bad id": K2}), "key id of entry 2 is not valid"),
])
def test_malformed_keyring_is_refused_without_showing_keys(raw, fragment):
    with pytest.raises(EncryptionError) as info:
        Keyring.from_json(raw)
    message = str(info.value)
    assert fragment in message
    assert "[twilio_sms] encryption_keys" in message
    assert_clean(message)
    assert info.value.__cause__ is None


def test_active_key_id_missing_from_the_ring():
    with pytest.raises(EncryptionError) as info:
        Keyring.from_json(json.dumps({"k1": K1}), "k2")
    assert "active_key_id is 'k2'" in str(info.value)
    assert "(it has: k1)" in str(info.value)
    with pytest.raises(EncryptionError, match="active_key_id is 'k2'"):
        Keyring.from_json("", "k2")
    with pytest.raises(EncryptionError) as info:
        Keyring.from_json(json.dumps({"k1": K1}), K2)  # a key pasted as the active id is not shown
    assert "not a valid key id" in str(info.value)
    assert_clean(str(info.value))


def test_keys_in_url_safe_base64_and_with_whitespace_are_accepted():
    raw = bytes(range(200, 232))
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    keyring = Keyring.from_json(json.dumps({"k1": f" {urlsafe}\n"}))
    value = encrypt_extra(SECRET, CONN, FIELD, keyring)
    same = Keyring.from_json(json.dumps({"k1": base64.b64encode(raw).decode()}))
    assert decrypt_extra(value, CONN, FIELD, same) == SECRET


def test_keyring_repr_shows_ids_never_keys():
    keyring = ring("k2", k1=K1, k2=K2)
    assert repr(keyring) == "Keyring(key_ids=['k1', 'k2'], active_key_id='k2')"
    assert_clean(repr(keyring))


def test_new_key_is_random_32_bytes_in_standard_base64():
    keys = {crypto.new_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 32
        Keyring.from_json(json.dumps({"k1": key}))


# --- Airflow config ------------------------------------------------------------------------------

def test_keyring_from_env_var(monkeypatch):
    value = encrypt_extra(SECRET, CONN, FIELD, ring(k1=K1))
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS", json.dumps({"k2": K2, "k1": K1}))
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ACTIVE_KEY_ID", "k2")
    keyring = Keyring.from_config()
    assert keyring.key_ids == ("k2", "k1")
    assert keyring.active_key_id == "k2"
    assert decrypt_extra(value, CONN, FIELD) == SECRET  # keyring=None reads the config
    assert encrypt_extra(SECRET, CONN, FIELD).startswith("enc:v1:k2:")


def test_keyring_from_a_command(monkeypatch, tmp_path):
    """``_CMD`` works because the option is declared sensitive in the provider's config."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"k1": K1}))
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS_CMD", f"cat {keys}")
    assert Keyring.from_config().key_ids == ("k1",)


def test_a_config_value_is_parsed_once_and_a_changed_one_is_picked_up(monkeypatch):
    crypto.clear_keyring_cache()
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS", json.dumps({"k1": K1}))
    first = Keyring.from_config()
    assert Keyring.from_config() is first
    assert crypto._parse_keyring.cache_info().misses == 1
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS", json.dumps({"k2": K2, "k1": K1}))
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ACTIVE_KEY_ID", "k2")
    assert Keyring.from_config().active_key_id == "k2"  # rotation needs no restart


def test_malformed_config_fails_on_use_naming_the_option(monkeypatch):
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS", '{"k1": "' + K1[:20] + '"}')
    value = encrypt_extra(SECRET, CONN, FIELD, ring(k1=K1))
    with pytest.raises(EncryptionError) as info:
        decrypt_extra(value, CONN, FIELD)
    assert "[twilio_sms] encryption_keys: key 'k1'" in str(info.value)
    assert K1[:20] not in str(info.value)


def test_importing_crypto_does_not_import_cryptography():
    code = ("import sys, airflow_provider_twilio_sms.crypto as c; "
            "assert not any(m.startswith('cryptography') for m in sys.modules), 'cryptography imported'; "
            "c.Keyring.from_json('{}'); c.is_encrypted('enc:v1:k:x'); "
            "assert not any(m.startswith('cryptography') for m in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr


# --- masking -------------------------------------------------------------------------------------

def test_registered_secret_is_redacted_by_the_task_log_processor():
    from airflow.sdk.log import mask_logs

    secret = "decrypted-" + base64.b16encode(os.urandom(8)).decode()
    before = mask_logs(None, "info", {"event": f"the value is {secret}"})
    assert secret in before["event"]  # the test can fail: nothing masks it yet
    register_secret(secret, "api_key_secret")
    after = mask_logs(None, "info", {"event": f"the value is {secret}", "extra": [secret]})
    assert secret not in json.dumps(after)
    assert after["event"] == "the value is ***"


def test_registered_secret_is_redacted_in_stdlib_log_records():
    from airflow._shared.secrets_masker import SecretsMasker, _secrets_masker

    secret = "decrypted-" + base64.b16encode(os.urandom(8)).decode()
    register_secret(secret, name="secondary_auth_token")  # masked even if no sensitive names are configured
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "auth with %s failed", (secret,), None)
    was = SecretsMasker.is_log_masking_enabled()
    SecretsMasker.enable_log_masking()
    try:
        _secrets_masker().filter(record)
    finally:
        if not was:
            SecretsMasker.disable_log_masking()
    assert secret not in record.getMessage()
    assert "***" in record.getMessage()


async def _aregister(secret):
    await crypto.aregister_secret(secret)


def test_async_register_masks_too():
    import asyncio

    from airflow.sdk.log import mask_logs

    secret = "decrypted-" + base64.b16encode(os.urandom(8)).decode()
    asyncio.run(_aregister(secret))
    assert mask_logs(None, "info", {"event": secret})["event"] == "***"

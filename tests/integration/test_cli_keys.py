"""The real ``airflow twilio-sms generate-key | encrypt | rotate-keys`` commands against a real metadata DB.

Each rotate-keys test works on its own copy of the session's migrated SQLite database, so tests do
not see each other's connections and nobody waits for a second ``airflow db migrate``.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import select
import sqlite3
import time

import pytest

from airflow_provider_twilio_sms.crypto import Keyring, decrypt_extra, encrypt_extra

from conftest import airflow_bin, run_airflow

K1 = base64.b64encode(os.urandom(32)).decode()
K2 = base64.b64encode(os.urandom(32)).decode()
K_UNKNOWN = base64.b64encode(os.urandom(32)).decode()
ACCOUNT = "AC" + "0123456789abcdef" * 2
API_SECRET = "api-key-secret-Plain-0001"
PASSWORD = "auth-token-Plain-0002"
LEGACY_SECRET = "signing-secret-Plain-0003"
PLAIN_TOKEN = "secondary-token-Plain-0004"
OTHER_SECRET = "http-secret-Plain-0005"
PLAINTEXTS = (API_SECRET, PASSWORD, LEGACY_SECRET, PLAIN_TOKEN, OTHER_SECRET)


def keys_env(active: str | None = None, **keys: str) -> dict[str, str]:
    env = {"AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS": json.dumps(keys)}
    if active:
        env["AIRFLOW__TWILIO_SMS__ACTIVE_KEY_ID"] = active
    return env


def assert_no_secrets(*outputs: str) -> None:
    for output in outputs:
        for secret in (*PLAINTEXTS, K1, K2, K_UNKNOWN):
            assert secret not in output


@pytest.fixture
def db_env(airflow_home, tmp_path) -> dict[str, str]:
    """Env for the CLI on a private copy of the session's migrated metadata DB."""
    source = airflow_home["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    target = tmp_path / "airflow.db"
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return {**airflow_home, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{target}"}


def stored_connection(env: dict[str, str], conn_id: str) -> tuple[dict, str | None]:
    """(extra, password) of a connection as stored in the DB, Fernet-decrypted like Airflow does."""
    from cryptography.fernet import Fernet

    fernet = Fernet(env["AIRFLOW__CORE__FERNET_KEY"].encode())
    path = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        extra, extra_enc, password, password_enc = db.execute(
            "SELECT extra, is_extra_encrypted, password, is_encrypted FROM connection WHERE conn_id = ?",
            (conn_id,)).fetchone()
    if extra and extra_enc:
        extra = fernet.decrypt(extra.encode()).decode()
    if password and password_enc:
        password = fernet.decrypt(password.encode()).decode()
    return json.loads(extra) if extra else {}, password


def add_connection(env: dict[str, str], conn_id: str, extra: dict, *, conn_type: str = "twilio_sms",
                   password: str | None = None) -> None:
    args = ["connections", "add", conn_id, "--conn-type", conn_type, "--conn-login", ACCOUNT,
            "--conn-extra", json.dumps(extra)]
    if password:
        args += ["--conn-password", password]
    result = run_airflow(args, env)
    assert result.returncode == 0, result.stderr[-2000:]


def counts(stdout: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^([a-z][a-z ()-]+): (\d+)$", stdout, re.M)}


# --- generate-key --------------------------------------------------------------------------------

def test_generate_key_prints_a_usable_key_and_the_config_lines(airflow_home):
    result = run_airflow(["twilio-sms", "generate-key"], airflow_home)
    assert result.returncode == 0, result.stderr
    key_id = re.search(r"^Key id: (\S+)$", result.stdout, re.M).group(1)
    assert re.fullmatch(r"k20\d{6}", key_id)
    line = re.search(r"^AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS='(.*)'$", result.stdout, re.M).group(1)
    ring = json.loads(line)
    assert list(ring) == [key_id]
    assert len(base64.b64decode(ring[key_id], validate=True)) == 32
    assert re.search(rf"^AIRFLOW__TWILIO_SMS__ACTIVE_KEY_ID={key_id}$", result.stdout, re.M)
    assert re.search(rf"^active_key_id = {key_id}$", result.stdout, re.M)
    keyring = Keyring.from_json(line, key_id)  # what the lines configure works
    assert decrypt_extra(encrypt_extra("x" * 10, "c", "f", keyring), "c", "f", keyring) == "x" * 10


def test_generate_key_with_an_existing_ring_never_prints_the_old_keys(airflow_home):
    env = {**airflow_home, **keys_env("k1", k1=K1)}
    result = run_airflow(["twilio-sms", "generate-key", "--key-id", "k2"], env)
    assert result.returncode == 0, result.stderr
    assert_no_secrets(result.stdout, result.stderr)
    line = re.search(r"^AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS='(.*)'$", result.stdout, re.M).group(1)
    ring = json.loads(line)
    assert list(ring) == ["k2", "k1"]
    assert ring["k1"] == "<keep the current value of k1>"
    taken = run_airflow(["twilio-sms", "generate-key", "--key-id", "k1"], env)
    assert taken.returncode == 1
    assert "already in [twilio_sms] encryption_keys" in taken.stderr
    assert_no_secrets(taken.stdout, taken.stderr)


# --- encrypt -------------------------------------------------------------------------------------

def test_encrypt_reads_stdin_and_prints_only_the_encrypted_value(airflow_home):
    env = {**airflow_home, **keys_env(k1=K1)}
    result = run_airflow(["twilio-sms", "encrypt", "--conn-id", "twilio_qa", "--field", "api_key_secret"],
                         env, input=API_SECRET + "\n")
    assert result.returncode == 0, result.stderr
    assert_no_secrets(result.stdout, result.stderr)
    value = result.stdout.strip()
    assert result.stdout.count("\n") == 1
    assert value.startswith("enc:v1:k1:")
    keyring = Keyring.from_json(json.dumps({"k1": K1}))
    assert decrypt_extra(value, "twilio_qa", "api_key_secret", keyring) == API_SECRET  # newline stripped


def test_encrypt_refuses_empty_values_unknown_fields_and_missing_keys(airflow_home):
    env = {**airflow_home, **keys_env(k1=K1)}
    empty = run_airflow(["twilio-sms", "encrypt", "--conn-id", "c", "--field", "api_key_secret"], env,
                        input="\n")
    assert empty.returncode == 1
    assert empty.stdout == ""
    assert "is empty" in empty.stderr
    field = run_airflow(["twilio-sms", "encrypt", "--conn-id", "c", "--field", "from_number"], env,
                        input=API_SECRET)
    assert field.returncode == 1
    assert field.stdout == ""
    assert "'from_number' is not a secret field" in field.stderr
    assert "api_key_secret" in field.stderr
    no_keys = run_airflow(["twilio-sms", "encrypt", "--conn-id", "c", "--field", "api_key_secret"],
                          airflow_home, input=API_SECRET)
    assert no_keys.returncode == 1
    assert no_keys.stdout == ""
    assert "no encryption keys configured: set [twilio_sms] encryption_keys" in no_keys.stderr
    assert_no_secrets(empty.stdout, empty.stderr, field.stdout, field.stderr, no_keys.stdout, no_keys.stderr)


def test_encrypt_on_a_terminal_does_not_echo_the_secret(airflow_home):
    env = {**os.environ, **airflow_home, **keys_env(k1=K1)}
    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal
        os.execve(airflow_bin(), [airflow_bin(), "twilio-sms", "encrypt", "--conn-id", "c", "--field",
                                  "secondary_auth_token"], env)
    output = b""
    sent = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        if not sent and b"not echoed" in output:
            os.write(fd, PLAIN_TOKEN.encode() + b"\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = output.decode(errors="replace")
    assert sent, text[-2000:]
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert PLAIN_TOKEN not in text
    value = re.search(r"enc:v1:k1:[A-Za-z0-9_-]+", text).group(0)
    keyring = Keyring.from_json(json.dumps({"k1": K1}))
    assert decrypt_extra(value, "c", "secondary_auth_token", keyring) == PLAIN_TOKEN


# --- rotate-keys ---------------------------------------------------------------------------------

def test_rotate_keys_re_encrypts_with_the_active_key_idempotently(db_env):
    k1 = Keyring.from_json(json.dumps({"k1": K1}))
    old = {
        "api": encrypt_extra(API_SECRET, "tw_main", "api_key_secret", k1),
        "password": encrypt_extra(PASSWORD, "tw_main", "password", k1),
        "legacy": encrypt_extra(LEGACY_SECRET, "tw_legacy", "webhook_signing_key_secret", k1),
    }
    add_connection(db_env, "tw_main", {"api_key_secret": old["api"], "secondary_auth_token": PLAIN_TOKEN,
                                       "from_number": "+15005550006"}, password=old["password"])
    add_connection(db_env, "tw_legacy", {"extra__twilio_sms__webhook_signing_key_secret": old["legacy"]})
    add_connection(db_env, "not_twilio", {"token": old["api"], "api_key_secret": OTHER_SECRET},
                   conn_type="http")
    before = {c: stored_connection(db_env, c) for c in ("tw_main", "tw_legacy", "not_twilio")}
    env = {**db_env, **keys_env("k2", k2=K2, k1=K1)}

    dry = run_airflow(["twilio-sms", "rotate-keys", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert_no_secrets(dry.stdout, dry.stderr)
    assert counts(dry.stdout) == {"connections scanned": 2, "would re-encrypt": 3, "already current": 0,
                                  "plain text (not touched)": 1, "failed": 0}
    assert "Dry run: nothing was changed." in dry.stdout
    assert {c: stored_connection(db_env, c) for c in before} == before

    first = run_airflow(["twilio-sms", "rotate-keys"], env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert_no_secrets(first.stdout, first.stderr)
    assert counts(first.stdout) == {"connections scanned": 2, "re-encrypted": 3, "already current": 0,
                                    "plain text (not touched)": 1, "failed": 0}
    assert "tw_main api_key_secret: re-encrypted 'k1' -> 'k2'" in first.stdout
    assert "tw_main secondary_auth_token: plain text, not touched" in first.stdout

    k2_only = Keyring.from_json(json.dumps({"k2": K2}))  # k1 retired after the rotation
    extra, password = stored_connection(db_env, "tw_main")
    assert extra["api_key_secret"].startswith("enc:v1:k2:")
    assert password.startswith("enc:v1:k2:")
    assert decrypt_extra(extra["api_key_secret"], "tw_main", "api_key_secret", k2_only) == API_SECRET
    assert decrypt_extra(password, "tw_main", "password", k2_only) == PASSWORD
    assert extra["secondary_auth_token"] == PLAIN_TOKEN
    assert extra["from_number"] == "+15005550006"
    legacy, _ = stored_connection(db_env, "tw_legacy")
    value = legacy["extra__twilio_sms__webhook_signing_key_secret"]
    assert decrypt_extra(value, "tw_legacy", "webhook_signing_key_secret", k2_only) == LEGACY_SECRET
    assert stored_connection(db_env, "not_twilio") == before["not_twilio"]

    second = run_airflow(["twilio-sms", "rotate-keys"], env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert counts(second.stdout) == {"connections scanned": 2, "re-encrypted": 0, "already current": 3,
                                     "plain text (not touched)": 1, "failed": 0}
    assert stored_connection(db_env, "tw_main") == (extra, password)


def test_rotate_keys_reports_values_it_cannot_decrypt_and_exits_1(db_env):
    unknown = Keyring.from_json(json.dumps({"k0": K_UNKNOWN}))
    k1 = Keyring.from_json(json.dumps({"k1": K1}))
    lost = encrypt_extra(API_SECRET, "tw_broken", "api_key_secret", unknown)
    good = encrypt_extra(PLAIN_TOKEN, "tw_broken", "secondary_auth_token", k1)
    add_connection(db_env, "tw_broken", {"api_key_secret": lost, "secondary_auth_token": good})
    env = {**db_env, **keys_env("k2", k2=K2, k1=K1)}

    result = run_airflow(["twilio-sms", "rotate-keys"], env)
    assert result.returncode == 1
    assert_no_secrets(result.stdout, result.stderr)
    assert counts(result.stdout) == {"connections scanned": 1, "re-encrypted": 1, "already current": 0,
                                     "plain text (not touched)": 0, "failed": 1}
    assert "Connection 'tw_broken', field 'api_key_secret'" in result.stderr
    assert "'k0'" in result.stderr
    extra, _ = stored_connection(db_env, "tw_broken")
    assert extra["api_key_secret"] == lost  # left as it was
    assert extra["secondary_auth_token"].startswith("enc:v1:k2:")  # the rest was still rotated


def test_rotate_keys_needs_an_active_key(db_env):
    result = run_airflow(["twilio-sms", "rotate-keys"], {**db_env, **keys_env(k2=K2, k1=K1)})
    assert result.returncode == 1
    assert "active_key_id is not set" in result.stderr
    assert_no_secrets(result.stdout, result.stderr)

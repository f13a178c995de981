"""``airflow twilio-sms generate-key | encrypt | rotate-keys``: the keys behind ``enc:v1`` secrets.

Nothing here prints or logs a secret value, except ``generate-key`` printing the new key it made.
Errors go to stderr and exit with status 1.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections import Counter
from typing import Any, NoReturn

from airflow_provider_twilio_sms.crypto import (
    ACTIVE_OPTION,
    KEYS_OPTION,
    Keyring,
    encrypt_extra,
    is_encrypted,
    is_valid_key_id,
    key_id_of,
    new_key,
    reencrypt,
)
from airflow_provider_twilio_sms.errors import EncryptionError

CONN_TYPE = "twilio_sms"
# The UI may store extras under Airflow's legacy prefix; the field name bound into ciphertext is bare.
_LEGACY_PREFIX = "extra__twilio_sms__"
_ENV_KEYS = "AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS"
_ENV_ACTIVE = "AIRFLOW__TWILIO_SMS__ACTIVE_KEY_ID"


def _fail(message: str) -> NoReturn:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(1)


def _secret_fields() -> tuple[str, ...]:
    from airflow_provider_twilio_sms.connection import SECRET_EXTRAS

    return tuple(SECRET_EXTRAS)


def _field_name(key: str) -> str:
    return key[len(_LEGACY_PREFIX):] if key.startswith(_LEGACY_PREFIX) else key


def _configured_keyring() -> Keyring:
    try:
        return Keyring.from_config()
    except EncryptionError as err:
        _fail(str(err))


# --- generate-key --------------------------------------------------------------------------------

def _existing_key_ids() -> tuple[str, ...]:
    """Ids already in the configured ring (none when the config is missing or unreadable)."""
    try:
        return Keyring.from_config().key_ids
    except Exception:  # noqa: BLE001 - a broken ring must not stop making a new key
        return ()


def generate_key(args) -> None:
    """Print a new random AES-256 key with its id, and the config lines that add it to the keyring."""
    existing = _existing_key_ids()
    key_id = (getattr(args, "key_id", None) or "").strip()
    if key_id:
        if not is_valid_key_id(key_id):
            _fail("--key-id is not a valid key id: use letters, digits, '_', '.' or '-' (at most 32, "
                  "starting with a letter or digit), e.g. k20261122")
        if key_id in existing:
            _fail(f"key id {key_id!r} is already in [twilio_sms] {KEYS_OPTION}: choose another --key-id "
                  "(a key id must never name two different keys)")
    else:
        base = "k" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
        key_id, n = base, 1
        while key_id in existing:
            n += 1
            key_id = f"{base}-{n}"
    key = new_key()
    ring: dict[str, str] = {key_id: key}
    for old in existing:  # placeholders only: never print a key that already exists
        ring[old] = f"<keep the current value of {old}>"
    ring_json = json.dumps(ring)

    print(f"Key id: {key_id}")
    print(f"Key:    {key}")
    print()
    print(f"Add it to [twilio_sms] {KEYS_OPTION} and make it the active key, on every Airflow component")
    print("(scheduler, workers, triggerer, api-server). Keep the older keys in the ring until")
    print("`airflow twilio-sms rotate-keys` has re-encrypted every value, then remove them.")
    print()
    print("As environment variables:")
    print(f"{_ENV_KEYS}='{ring_json}'")
    print(f"{_ENV_ACTIVE}={key_id}")
    print()
    print("Or in airflow.cfg:")
    print("[twilio_sms]")
    print(f"{KEYS_OPTION} = {ring_json}")
    print(f"{ACTIVE_OPTION} = {key_id}")
    print()
    print("Keep the key in a secrets manager: with a secrets backend, set "
          f"{_ENV_KEYS}_SECRET to the secret's path instead.")


# --- encrypt -------------------------------------------------------------------------------------

def _read_secret(prompt: str) -> str:
    """The secret from stdin: without echo on a terminal, else all of stdin minus one trailing newline."""
    if sys.stdin is None:
        _fail("no standard input to read the secret from: pipe it in, e.g. "
              "`printf %s \"$SECRET\" | airflow twilio-sms encrypt ...`")
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt)
    value = sys.stdin.read()
    if value.endswith("\r\n"):
        return value[:-2]
    if value.endswith("\n"):
        return value[:-1]
    return value


def encrypt(args) -> None:
    """Read a secret from stdin and print it encrypted for ``--conn-id``/``--field``, nothing else."""
    conn_id = (args.conn_id or "").strip()
    field = _field_name((args.field or "").strip())
    allowed = (*_secret_fields(), "password")
    if not conn_id:
        _fail("--conn-id is empty: give the id of the twilio_sms connection the secret belongs to "
              "(it is bound into the ciphertext)")
    if field not in allowed:
        _fail(f"--field {field!r} is not a secret field of a twilio_sms connection: use one of "
              f"{', '.join(allowed)}")
    keyring = _configured_keyring()
    try:
        keyring.require_active()
    except EncryptionError as err:
        _fail(str(err))
    value = _read_secret(f"Secret for {field} of connection {conn_id} (not echoed): ")
    if value == "" or not value.strip():
        _fail(f"the secret for {field} of connection {conn_id!r} is empty: pipe the value in, e.g. "
              f"`printf %s \"$SECRET\" | airflow twilio-sms encrypt --conn-id {conn_id} --field {field}`")
    if value != value.strip():
        print("Warning: the secret starts or ends with whitespace, which is encrypted as part of it.",
              file=sys.stderr)
    try:
        encrypted = encrypt_extra(value, conn_id, field, keyring)
    except EncryptionError as err:
        _fail(str(err))
    print(encrypted)


# --- rotate-keys ---------------------------------------------------------------------------------

class _Rotation:
    """Counts and per-value report lines of one ``rotate-keys`` run (names and key ids, never values)."""

    def __init__(self, keyring: Keyring, dry_run: bool):
        self.keyring, self.dry_run = keyring, dry_run
        self.active = keyring.require_active()
        self.counts: Counter[str] = Counter()

    def value(self, conn_id: str, field: str, value: str) -> str | None:
        """The re-encrypted value, or ``None`` when it stays as it is."""
        if not is_encrypted(value):
            if field != "password":  # a plain password is Airflow's normal (Fernet) case
                self.counts["plain"] += 1
                print(f"  {conn_id} {field}: plain text, not touched (encrypt it with `airflow twilio-sms "
                      f"encrypt --conn-id {conn_id} --field {field}`)")
            return None
        try:
            new = reencrypt(value, conn_id, field, self.keyring)
        except EncryptionError as err:
            self.counts["failed"] += 1
            print(f"  {conn_id} {field}: FAILED")
            print(f"Error: {err}", file=sys.stderr)
            return None
        if new is None:
            self.counts["current"] += 1
            print(f"  {conn_id} {field}: already under key {self.active!r}")
            return None
        self.counts["reencrypted"] += 1
        old = key_id_of(value, conn_id, field)
        verb = "would re-encrypt" if self.dry_run else "re-encrypted"
        print(f"  {conn_id} {field}: {verb} {old!r} -> {self.active!r}")
        return new

    def connection(self, conn: Any) -> None:
        conn_id = conn.conn_id
        self.counts["connections"] += 1
        try:
            raw = conn.extra
            extra = json.loads(raw) if raw else {}
        except Exception as err:  # noqa: BLE001 - Fernet or JSON problems; never show the content
            self.counts["failed"] += 1
            print(f"  {conn_id} extra: FAILED")
            print(f"Error: Connection {conn_id!r}: its extras cannot be read ({type(err).__name__}); check "
                  "[core] fernet_key and the connection's Extra JSON", file=sys.stderr)
            extra = None
        if isinstance(extra, dict):
            changed = False
            secret_fields = _secret_fields()
            for key in list(extra):
                field = _field_name(key)
                value = extra[key]
                if field not in secret_fields or not isinstance(value, str) or not value.strip():
                    continue
                new = self.value(conn_id, field, value)
                if new is not None:
                    extra[key] = new
                    changed = True
            if changed and not self.dry_run:
                conn.set_extra(json.dumps(extra))
        elif extra is not None:
            self.counts["failed"] += 1
            print(f"  {conn_id} extra: FAILED")
            print(f"Error: Connection {conn_id!r}: its Extra is not a JSON object; fix it in the UI or with "
                  "`airflow connections`", file=sys.stderr)
        try:
            password = conn.password
        except Exception as err:  # noqa: BLE001
            self.counts["failed"] += 1
            print(f"  {conn_id} password: FAILED")
            print(f"Error: Connection {conn_id!r}: its password cannot be read ({type(err).__name__}); "
                  "check [core] fernet_key", file=sys.stderr)
            return
        if password and is_encrypted(password):
            new = self.value(conn_id, "password", password)
            if new is not None and not self.dry_run:
                conn.password = new

    def summary(self) -> None:
        c = self.counts
        verb = "would re-encrypt" if self.dry_run else "re-encrypted"
        print(f"Active key: {self.active!r}")
        print(f"connections scanned: {c['connections']}")
        print(f"{verb}: {c['reencrypted']}")
        print(f"already current: {c['current']}")
        print(f"plain text (not touched): {c['plain']}")
        print(f"failed: {c['failed']}")
        if self.dry_run:
            print("Dry run: nothing was changed.")
        print("Only connections stored in Airflow's metadata database are rotated: re-encrypt connections "
              "kept in environment variables or a secrets backend where they are stored.")


def rotate_keys(args) -> None:
    """Re-encrypt every encrypted secret of every twilio_sms connection in the metadata DB (active key)."""
    keyring = _configured_keyring()
    try:
        rotation = _Rotation(keyring, dry_run=bool(getattr(args, "dry_run", False)))
    except EncryptionError as err:
        _fail(str(err))

    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (select(Connection).where(Connection.conn_type == CONN_TYPE).order_by(Connection.conn_id)
                 .with_for_update())
        for conn in session.scalars(query).all():
            rotation.connection(conn)
        if rotation.dry_run:
            session.rollback()
    rotation.summary()
    if rotation.counts["failed"]:
        print(f"Error: {rotation.counts['failed']} value(s) could not be re-encrypted (see above); the "
              "others were handled. Fix the keyring or encrypt those secrets again, then run rotate-keys "
              "again.",
              file=sys.stderr)
        sys.exit(1)

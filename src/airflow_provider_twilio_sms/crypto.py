"""Encrypted connection secrets: the ``enc:v1:<key-id>:<base64>`` format and the keyring behind it.

A secret extra (or the password) of a ``twilio_sms`` connection may hold AES-256-GCM ciphertext::

    enc:v1:<key-id>:<base64url(nonce || ciphertext || tag)>

* ``key-id`` names the key in ``[twilio_sms] encryption_keys``, so decryption picks the right key and
  keys rotate without downtime: add the new key and make it active, run
  ``airflow twilio-sms rotate-keys``, then drop the old key.
* The nonce is 96 random bits, fresh for every value.
* The associated data binds the format version, connection id, field name and key id, encoded as a
  JSON array (no concatenation collisions): a value copied to another connection or field, or
  relabelled with another key id, fails to decrypt.
* The base64 alphabet is URL-safe without padding, so a value survives inside a connection URI.

The keys live only in Airflow's configuration (``AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS`` and its
``_CMD``/``_SECRET`` variants work), never in the metadata database. Error messages name the
connection, field and key id, never a value or a key. ``cryptography`` is imported only when a value
is actually encrypted or decrypted: DAG files import this module through the hook.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.errors import EncryptionError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

ENC_PREFIX = "enc:v1:"
VERSION = "v1"
SECTION = "twilio_sms"
KEYS_OPTION = "encryption_keys"
ACTIVE_OPTION = "active_key_id"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

_KEYS_SETTING = f"[{SECTION}] {KEYS_OPTION}"
_ACTIVE_SETTING = f"[{SECTION}] {ACTIVE_OPTION}"
# At most 32 characters: a 32-byte key in base64 is 43-44 characters, so a key pasted where an id
# belongs is never a valid id, and only valid ids are ever shown in a message.
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_KEY_ID_RULE = "letters, digits, '_', '.' or '-', at most 32 characters, starting with a letter or digit"
_ANY_VERSION = re.compile(r"enc:v\d+:")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_GENERATE_HINT = "generate one with `airflow twilio-sms generate-key`"
NO_KEYS_MESSAGE = (f"no encryption keys configured: set {_KEYS_SETTING} ({_GENERATE_HINT}), "
                   f"e.g. AIRFLOW__TWILIO_SMS__ENCRYPTION_KEYS='{{\"k1\": \"<base64 of 32 bytes>\"}}'")


def _error(message: str, *, conn_id: str | None = None, field: str | None = None,
           key_id: str | None = None) -> EncryptionError:
    err = EncryptionError(message)
    err.conn_id, err.field, err.key_id = conn_id, field, key_id  # type: ignore[attr-defined]
    return err


def is_valid_key_id(key_id: object) -> bool:
    """Key ids are letters, digits, ``_``, ``.`` and ``-`` (at most 32, starting with a letter or digit)."""
    return isinstance(key_id, str) and _KEY_ID.fullmatch(key_id) is not None


def _where(conn_id: str, field: str) -> str:
    return f"Connection {conn_id!r}, field {field!r}"


def is_encrypted(value: Any) -> bool:
    """Whether ``value`` is written in an ``enc:vN:`` format (any version, so newer ones fail clearly).

    A value in a version this provider does not know must never be mistaken for a plain-text secret:
    :func:`decrypt_extra` then raises an error saying so.
    """
    return isinstance(value, str) and _ANY_VERSION.match(value.strip()) is not None


def _decode_key(key_id: str, encoded: Any) -> bytes:
    fix = f"Set it to the base64 of {KEY_BYTES} random bytes ({_GENERATE_HINT})"
    if not isinstance(encoded, str):
        raise _error(f"{_KEYS_SETTING}: key {key_id!r} is not a string. {fix}", key_id=key_id)
    text = "".join(encoded.split())
    # Accept standard and URL-safe base64, with or without padding; reject anything else.
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _error(f"{_KEYS_SETTING}: key {key_id!r} is not valid base64. {fix}", key_id=key_id) from None
    if len(raw) != KEY_BYTES:
        raise _error(f"{_KEYS_SETTING}: key {key_id!r} decodes to {len(raw)} bytes, not {KEY_BYTES} "
                     f"(AES-256 needs {KEY_BYTES}). {fix}", key_id=key_id)
    return raw


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _associated_data(conn_id: str, field: str, key_id: str) -> bytes:
    """What a ciphertext is bound to; JSON so no two (conn id, field, key id) triples encode alike."""
    return json.dumps(["twilio_sms", "enc", VERSION, conn_id, field, key_id], ensure_ascii=True,
                      separators=(",", ":")).encode("ascii")


class Keyring:
    """Versioned AES-256 keys by id, plus the id that encrypts new values.

    Build it with :meth:`from_config` (Airflow config) or :meth:`from_json`. Its ``repr`` shows key ids,
    never keys.
    """

    __slots__ = ("_keys", "_active_key_id", "_ciphers")

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str | None = None):
        for number, (key_id, key) in enumerate(keys.items(), 1):
            if not is_valid_key_id(key_id):
                raise _invalid_key_id(number)
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise _error(f"{_KEYS_SETTING}: key {key_id!r} is not {KEY_BYTES} bytes. Use "
                             f"{KEY_BYTES} random bytes ({_GENERATE_HINT})", key_id=key_id)
        active = (active_key_id or "").strip() or None
        if active is None and len(keys) == 1:
            active = next(iter(keys))
        if active is not None and not is_valid_key_id(active):
            raise _error(f"{_ACTIVE_SETTING} is not a valid key id (use {_KEY_ID_RULE}). Set it to the id "
                         f"of a key in {KEYS_OPTION}, not to a key")
        if active is not None and active not in keys:
            known = ", ".join(sorted(keys)) or "none"
            raise _error(f"{_ACTIVE_SETTING} is {active!r} but {_KEYS_SETTING} has no key with that id "
                         f"(it has: {known}). Add the key to {KEYS_OPTION} or set {ACTIVE_OPTION} to one "
                         "of its ids", key_id=active)
        self._keys: dict[str, bytes] = dict(keys)
        self._active_key_id = active
        self._ciphers: dict[str, AESGCM] = {}

    def __repr__(self) -> str:
        return f"Keyring(key_ids={list(self._keys)!r}, active_key_id={self._active_key_id!r})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @property
    def active_key_id(self) -> str | None:
        """The id that encrypts new values; ``None`` with no keys, or several keys and none active."""
        return self._active_key_id

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @classmethod
    def from_json(cls, raw: str | None, active_key_id: str | None = None) -> Keyring:
        """Parse the ``encryption_keys`` JSON object (key id -> base64 of 32 bytes); empty means no keys."""
        return _parse_keyring(raw or "", active_key_id or "")

    @classmethod
    def from_config(cls) -> Keyring:
        """The keyring in ``[twilio_sms] encryption_keys`` and ``active_key_id``, read through Airflow config.

        Airflow's config is read every call (so a changed environment variable or secret takes effect
        without a restart), but a given config value is parsed only once.
        """
        from airflow.configuration import conf

        raw = conf.get(SECTION, KEYS_OPTION, fallback=None) or ""
        active = conf.get(SECTION, ACTIVE_OPTION, fallback=None) or ""
        return _parse_keyring(raw, active)

    def require_active(self) -> str:
        """The active key id, or an error saying how to configure one."""
        if not self._keys:
            raise _error(NO_KEYS_MESSAGE)
        if self._active_key_id is None:
            raise _error(f"{_KEYS_SETTING} has several keys ({', '.join(sorted(self._keys))}) and "
                         f"{_ACTIVE_SETTING} is not set. Set it to the id of the key that should encrypt "
                         "new values (usually the newest)")
        return self._active_key_id

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            cipher = self._ciphers[key_id] = AESGCM(self._keys[key_id])
        return cipher


@functools.lru_cache(maxsize=8)
def _parse_keyring(raw: str, active_key_id: str) -> Keyring:
    """Parse once per distinct config value (the cache key is the config text itself)."""
    raw = raw.strip()
    if not raw:
        if active_key_id.strip():
            return Keyring({}, active_key_id)  # raises: the active id is not in the (empty) ring
        return Keyring({})
    example = '{"k2": "<base64 of 32 bytes>", "k1": "<base64 of 32 bytes>"}'
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as err:
        # err.msg and the position only: the document itself holds keys.
        raise _error(f"{_KEYS_SETTING} is not valid JSON ({err.msg} at line {err.lineno} column "
                     f"{err.colno}). Write a JSON object of key id to base64 key, e.g. {example}") from None
    if not isinstance(parsed, dict):
        raise _error(f"{_KEYS_SETTING} must be a JSON object of key id to base64 key, not a "
                     f"{type(parsed).__name__}, e.g. {example}")
    if not parsed:
        return Keyring({}, active_key_id)
    keys = {}
    for number, (key_id, value) in enumerate(parsed.items(), 1):
        if not is_valid_key_id(key_id):
            raise _invalid_key_id(number)
        keys[key_id] = _decode_key(key_id, value)
    return Keyring(keys, active_key_id)


def _invalid_key_id(number: int) -> EncryptionError:
    # The id itself is not shown: an id that breaks the rule may well be a key pasted the wrong way round.
    return _error(f"{_KEYS_SETTING}: the key id of entry {number} is not valid (use {_KEY_ID_RULE}); the "
                  'object maps ids to keys, e.g. {"k20261122": "<base64 of 32 bytes>"}')


def clear_keyring_cache() -> None:
    """Forget parsed keyrings (tests; a process that wants old keys out of memory)."""
    _parse_keyring.cache_clear()


def new_key() -> str:
    """A fresh random AES-256 key, standard base64 (what ``encryption_keys`` holds)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def parse_value(value: str, conn_id: str, field: str) -> tuple[str, bytes, bytes]:
    """Split an ``enc:v1`` value into (key id, nonce, ciphertext with tag); errors never show the value."""
    where = _where(conn_id, field)
    fix = ("Encrypt the secret again with `airflow twilio-sms encrypt "
           f"--conn-id {conn_id} --field {field}` and store the printed value")
    text = value.strip() if isinstance(value, str) else ""
    if not text.startswith(ENC_PREFIX):
        version = _ANY_VERSION.match(text)
        if version:
            found = version.group(0)[4:-1]
            raise _error(f"{where}: the value is encrypted in format {found!r}, which this version of "
                         f"airflow-provider-twilio-sms does not read (it reads {VERSION}). Upgrade the "
                         "provider, or encrypt the secret again with this version", conn_id=conn_id,
                         field=field)
        raise _error(f"{where}: the value is not an encrypted value ({ENC_PREFIX}<key-id>:<base64>)",
                     conn_id=conn_id, field=field)
    key_id, sep, payload = text[len(ENC_PREFIX):].partition(":")
    if not sep or not _KEY_ID.fullmatch(key_id):
        raise _error(f"{where}: the encrypted value is malformed (expected {ENC_PREFIX}<key-id>:<base64> "
                     f"with a key id of {_KEY_ID_RULE}). {fix}", conn_id=conn_id,
                     field=field)
    if not _B64URL.fullmatch(payload) or len(payload) % 4 == 1:
        raise _error(f"{where}: the encrypted value under key {key_id!r} is not valid base64 (truncated "
                     f"or altered?). {fix}", conn_id=conn_id, field=field, key_id=key_id)
    blob = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise _error(f"{where}: the encrypted value under key {key_id!r} is too short to be AES-GCM "
                     f"ciphertext (truncated?). {fix}", conn_id=conn_id, field=field, key_id=key_id)
    return key_id, blob[:NONCE_BYTES], blob[NONCE_BYTES:]


def key_id_of(value: str, conn_id: str = "?", field: str = "?") -> str:
    """The key id an ``enc:v1`` value names (no decryption)."""
    return parse_value(value, conn_id, field)[0]


def encrypt_extra(plaintext: str, conn_id: str, field: str, keyring: Keyring | None = None) -> str:
    """Encrypt a secret for ``field`` of connection ``conn_id`` with the active key: ``enc:v1:<id>:<b64>``."""
    if not isinstance(plaintext, str) or plaintext == "":
        raise _error(f"{_where(conn_id, field)}: nothing to encrypt (the value is empty)", conn_id=conn_id,
                     field=field)
    if is_encrypted(plaintext):
        raise _error(f"{_where(conn_id, field)}: the value is already encrypted; store it as it is",
                     conn_id=conn_id, field=field)
    if not conn_id or not field:
        raise _error("A connection id and a field name are needed to encrypt a value (they are bound "
                     "into the ciphertext)", conn_id=conn_id, field=field)
    keyring = keyring if keyring is not None else Keyring.from_config()
    key_id = keyring.require_active()
    nonce = os.urandom(NONCE_BYTES)
    sealed = keyring._cipher(key_id).encrypt(nonce, plaintext.encode("utf-8"),
                                             _associated_data(conn_id, field, key_id))
    return f"{ENC_PREFIX}{key_id}:{_b64url(nonce + sealed)}"


def decrypt_extra(value: str, conn_id: str, field: str, keyring: Keyring | None = None) -> str:
    """Decrypt an ``enc:v1`` value of ``field`` of ``conn_id``; the key is picked by the id in the value.

    Raises :class:`EncryptionError` naming the connection, field and key id (never the value or a key)
    when no keys are configured, the key id is unknown, the key is wrong, or the value was altered or
    copied from another connection or field.
    """
    key_id, nonce, sealed = parse_value(value, conn_id, field)
    where = _where(conn_id, field)
    keyring = keyring if keyring is not None else Keyring.from_config()
    if not len(keyring):
        raise _error(f"{where}: the value is encrypted with key {key_id!r} but {NO_KEYS_MESSAGE}",
                     conn_id=conn_id, field=field, key_id=key_id)
    if key_id not in keyring:
        raise _error(f"{where}: the value is encrypted with key {key_id!r}, which is not in "
                     f"{_KEYS_SETTING} (it has: {', '.join(sorted(keyring.key_ids))}). Add key {key_id!r} "
                     "back to the keyring (then run `airflow twilio-sms rotate-keys`), or encrypt the secret "
                     f"again with `airflow twilio-sms encrypt --conn-id {conn_id} --field {field}`",
                     conn_id=conn_id, field=field, key_id=key_id)
    from cryptography.exceptions import InvalidTag

    try:
        plain = keyring._cipher(key_id).decrypt(nonce, sealed, _associated_data(conn_id, field, key_id))
    except InvalidTag:
        raise _error(f"{where}: the value does not decrypt with key {key_id!r}: the key configured as "
                     f"{key_id!r} is not the one it was encrypted with, or the value was altered, or it was "
                     "encrypted for another connection or field. Check the key in "
                     f"{_KEYS_SETTING}, or encrypt the secret again with `airflow twilio-sms encrypt "
                     f"--conn-id {conn_id} --field {field}`", conn_id=conn_id, field=field,
                     key_id=key_id) from None
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:  # authenticated, so only a bug could get here; still never show bytes
        raise _error(f"{where}: the value under key {key_id!r} decrypted to bytes that are not UTF-8 text",
                     conn_id=conn_id, field=field, key_id=key_id) from None


def reencrypt(value: str, conn_id: str, field: str, keyring: Keyring) -> str | None:
    """The value encrypted with the active key, or ``None`` when it already is (and decrypts).

    Every value is decrypted first, so a damaged value under the active key is reported, not skipped.
    """
    active = keyring.require_active()
    plaintext = decrypt_extra(value, conn_id, field, keyring)
    if key_id_of(value, conn_id, field) == active:
        return None
    return encrypt_extra(plaintext, conn_id, field, keyring)


def register_secret(value: str | None, name: str | None = None) -> None:
    """Register a decrypted secret with Airflow's secrets maskers so it shows as ``***`` in logs.

    Registers with the task SDK masker (``airflow.sdk.log.mask_secret``, which also tells the
    supervisor when running inside a task) and, when Airflow core is installed, with the core masker
    used by the api-server, scheduler and CLI. ``name`` is accepted for the caller's readability only:
    Airflow would mask a *named* value only when the name is in its sensitive-names list, which is
    not configured in every process, and a decrypted secret must be masked regardless of its name.
    """
    if not value or not isinstance(value, str):
        return
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow without the task SDK
        pass
    else:
        mask_secret(value)
    _mask_in_core(value)


async def aregister_secret(value: str | None, name: str | None = None) -> None:
    """:func:`register_secret` for async code (triggers, async tasks): avoids the SDK's sync comms."""
    if not value or not isinstance(value, str):
        return
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # the task SDK before 1.3 (Airflow 3.2) has no amask_secret: its mask_secret
        # is documented safe in async code, and without it the SDK masker misses this value.
        try:
            from airflow.sdk.log import mask_secret
        except ImportError:  # pragma: no cover - Airflow without the task SDK
            pass
        else:
            mask_secret(value)
    else:
        await amask_secret(value)
    _mask_in_core(value)


def _mask_in_core(value: str) -> None:
    """The value in the masker of Airflow core's processes too (api-server, scheduler, CLI)."""
    try:
        from airflow._shared.secrets_masker import mask_secret as mask_secret_core
    except ImportError:  # a worker with only the task SDK installed
        return
    mask_secret_core(value)

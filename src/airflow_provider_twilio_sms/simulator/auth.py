"""Who may call the stand-in: HTTP Basic auth as Twilio takes it.

Either ``AccountSid:AuthToken`` (the primary token, or the secondary one while a rotation is under way)
or ``ApiKeySid:ApiKeySecret`` (``SK...``) for a key that belongs to the account in the URL. Twilio signs
webhooks with the account's primary Auth Token.
"""

from __future__ import annotations

import binascii
import secrets
from base64 import b64decode
from collections.abc import Mapping

# An account's tokens: "primary" or ("primary", "secondary").
Tokens = str | tuple[str, ...] | list[str]

TEST_ACCOUNT_SID = "AC" + "0" * 31 + "1"
TEST_AUTH_TOKEN = "simulator-auth-token-0001"


def tokens_of(value: Tokens | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [token for token in value if token]


def primary_token(accounts: Mapping[str, Tokens], account_sid: str) -> str | None:
    tokens = tokens_of(accounts.get(account_sid))
    return tokens[0] if tokens else None


def _matches(candidates: list[str], given: str) -> bool:
    found = False
    for candidate in candidates:  # compare with every one: time does not tell which matched
        if secrets.compare_digest(candidate.encode(), given.encode()):
            found = True
    return found


def authenticate(header: str | None, account_sid: str, accounts: Mapping[str, Tokens],
                 api_keys: Mapping[str, tuple[str, str]]) -> bool:
    """True when the ``Authorization`` header grants access to ``account_sid``'s resources."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, sep, password = b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    if not sep:
        return False
    if user.startswith("SK"):
        secret, owner = api_keys.get(user, (None, None))
        if not secret or owner != account_sid:
            return False
        return _matches([secret], password)
    return user == account_sid and _matches(tokens_of(accounts.get(user)), password)

"""Settings of a ``twilio_sms`` connection, validated on use with one clear error per problem.

Login is the Account SID, password the Auth Token; the extras are declared (with labels) in
``get_provider_info.py``. Secret values may be encrypted as ``enc:v1:<key-id>:<base64>``
(see ``crypto.py``); they are decrypted here and registered with Airflow's secrets masker.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_twilio_sms.errors import ConnectionConfigError

log = logging.getLogger(__name__)

# Extras whose values are secrets: redacted by Airflow's UI (their names contain "secret"/"token"),
# encryptable as ``enc:v1:<key-id>:<base64>``, registered with ``mask_secret`` once decrypted.
SECRET_EXTRAS: tuple[str, ...] = ("api_key_secret", "secondary_auth_token", "webhook_signing_key_secret")

_SID = {"AC": "Account SID", "MG": "Messaging Service SID", "SK": "API key SID"}
# Twilio's regions and edge locations (twilio-python applies them to the API host).
REGIONS = frozenset({"us1", "us2", "ie1", "au1", "jp1", "sg1", "br1", "de1"})
EDGES = frozenset({"ashburn", "dublin", "frankfurt", "sao-paulo", "singapore", "sydney", "tokyo", "umatilla",
                   "ashburn-ix", "frankfurt-ix", "london-ix", "san-jose-ix", "singapore-ix", "sydney-ix",
                   "tokyo-ix", "roaming"})
_warned_plaintext: set[tuple[str, str]] = set()


def _sid_ok(value: str | None, prefix: str) -> bool:
    return bool(value) and re.fullmatch(prefix + r"[0-9a-fA-F]{32}", value or "") is not None


@dataclass(frozen=True)
class TwilioConnectionSettings:
    """Everything the hook, operator and webhook need from one ``twilio_sms`` connection."""

    conn_id: str
    account_sid: str
    auth_token: str | None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    api_key_sid: str | None = None
    api_key_secret: str | None = None
    region: str | None = None
    edge: str | None = None
    default_region: str | None = None
    webhook_base_url: str | None = None
    secondary_auth_token: str | None = None
    webhook_signing_key_sid: str | None = None
    webhook_signing_key_secret: str | None = None
    rate_limit: str | None = None
    api_base_url: str | None = None

    def __repr__(self) -> str:  # never print secrets
        return f"TwilioConnectionSettings(conn_id={self.conn_id!r}, account_sid={self.account_sid!r})"

    @property
    def webhook_tokens(self) -> list[str]:
        """Tokens that may sign Twilio's webhooks to this account: the Auth Token, then the secondary."""
        return [t for t in (self.auth_token, self.secondary_auth_token) if t]

    def require_sender(self) -> None:
        raise ConnectionConfigError(self.conn_id, "from_number", "no sender is configured",
                                    "Set the extra from_number (or messaging_service_sid) on the connection, "
                                    "or pass from_ / messaging_service_sid to the operator")

    @classmethod
    def from_connection(cls, conn: Any) -> TwilioConnectionSettings:
        conn_id = conn.conn_id
        extra = dict(conn.extra_dejson or {})
        prefix = "extra__twilio_sms__"
        for key in list(extra):  # the UI may store extras under Airflow's legacy prefix
            if key.startswith(prefix):
                extra.setdefault(key[len(prefix):], extra.pop(key))

        def text(name: str) -> str | None:
            value = extra.get(name)
            if value is None or str(value).strip() == "":
                return None
            return str(value).strip()

        def secret(name: str, value: str | None) -> str | None:
            if not value:
                return None
            from airflow_provider_twilio_sms.crypto import decrypt_extra, is_encrypted, register_secret

            if is_encrypted(value):  # any enc:vN: value: an unknown version fails clearly, never goes out as-is
                value = decrypt_extra(value, conn_id, name)
            elif name != "password" and (conn_id, name) not in _warned_plaintext:
                _warned_plaintext.add((conn_id, name))
                log.warning("Connection %s stores the secret extra %s in plain text; encrypt it with "
                            "`airflow twilio-sms encrypt --conn-id %s --field %s`", conn_id, name, conn_id, name)
            register_secret(value)  # masked in task, triggerer, api-server and CLI logs alike
            return value

        account_sid = (conn.login or "").strip()
        if not _sid_ok(account_sid, "AC"):
            raise ConnectionConfigError(conn_id, "login", "the Account SID must be AC followed by 32 hex characters",
                                        "Copy it from the Twilio console (Account Info) into the Login field")
        settings = cls(
            conn_id=conn_id,
            account_sid=account_sid,
            auth_token=secret("password", conn.password or None),
            from_number=text("from_number"),
            messaging_service_sid=text("messaging_service_sid"),
            api_key_sid=text("api_key_sid"),
            api_key_secret=secret("api_key_secret", text("api_key_secret")),
            region=(text("region") or "").lower() or None,
            edge=(text("edge") or "").lower() or None,
            default_region=(text("default_region") or "").upper() or None,
            webhook_base_url=(text("webhook_base_url") or "").rstrip("/") or None,
            secondary_auth_token=secret("secondary_auth_token", text("secondary_auth_token")),
            webhook_signing_key_sid=text("webhook_signing_key_sid"),
            webhook_signing_key_secret=secret("webhook_signing_key_secret", text("webhook_signing_key_secret")),
            rate_limit=text("rate_limit"),
            api_base_url=(text("api_base_url") or "").rstrip("/") or None,
        )
        settings._validate()
        return settings

    def _validate(self) -> None:
        def fail(field: str, problem: str, fix: str):
            raise ConnectionConfigError(self.conn_id, field, problem, fix)

        if not self.auth_token and not (self.api_key_sid and self.api_key_secret):
            fail("password", "neither an Auth Token nor an API key SID and secret is set",
                 "Put the Auth Token in the Password field, or set the extras api_key_sid and api_key_secret")
        if self.api_key_sid and not _sid_ok(self.api_key_sid, "SK"):
            fail("api_key_sid", "an API key SID must be SK followed by 32 hex characters",
                 "Copy it from the Twilio console (API keys)")
        if bool(self.api_key_sid) != bool(self.api_key_secret):
            fail("api_key_secret" if self.api_key_sid else "api_key_sid", "an API key needs both its SID and secret",
                 "Set both api_key_sid and api_key_secret, or neither")
        if self.messaging_service_sid and not _sid_ok(self.messaging_service_sid, "MG"):
            fail("messaging_service_sid", "a Messaging Service SID must be MG followed by 32 hex characters",
                 "Copy it from the Twilio console (Messaging > Services)")
        if self.region and self.region not in REGIONS:
            fail("region", f"unknown region {self.region!r}", f"Use one of {', '.join(sorted(REGIONS))}, or leave it empty")
        if self.edge and self.edge not in EDGES:
            fail("edge", f"unknown edge {self.edge!r}", f"Use one of {', '.join(sorted(EDGES))}, or leave it empty")
        if self.default_region:
            from airflow_provider_twilio_sms.phone import is_valid_region

            if not is_valid_region(self.default_region):
                fail("default_region", f"{self.default_region!r} is not a country code",
                     "Use an ISO 3166 code such as US, GB or DE")
        if self.from_number:
            from airflow_provider_twilio_sms.errors import InvalidMessageError
            from airflow_provider_twilio_sms.phone import normalize_number

            try:
                normalize_number(self.from_number, self.default_region, sender=True)
            except InvalidMessageError as err:
                fail("from_number", str(err), "Use your Twilio number in E.164, a short code or a sender ID")
        for field, url in (("webhook_base_url", self.webhook_base_url), ("api_base_url", self.api_base_url)):
            if url:
                parts = urlsplit(url)
                local = parts.hostname in ("127.0.0.1", "localhost", "::1")
                if parts.scheme not in ("https", "http") or not parts.hostname or (parts.scheme == "http" and not local):
                    fail(field, f"{url!r} is not an https URL", "Give an https:// URL (http only for 127.0.0.1/localhost)")
        if self.rate_limit:
            from airflow_provider_twilio_sms.rate_limit import parse_rate_limit

            try:
                parse_rate_limit(self.rate_limit)
            except ValueError as err:
                fail("rate_limit", str(err), "Fix or clear the rate_limit extra")


def load_settings(conn_id: str) -> TwilioConnectionSettings:
    """Read and validate a ``twilio_sms`` connection (task, triggerer, api-server or CLI)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if (conn.conn_type or "") != "twilio_sms":
        raise ConnectionConfigError(conn_id, "conn_type", f"the connection has type {conn.conn_type!r}",
                                    "Use a connection of type twilio_sms (Twilio SMS)")
    return TwilioConnectionSettings.from_connection(conn)

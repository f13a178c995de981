"""Settings of a ``twilio_sms`` connection, validated on use with one clear error per problem.

Login is the Account SID, password the Auth Token; the extras are declared (with labels) in
``get_provider_info.py``. Secret values may be encrypted as ``enc:v1:<key-id>:<base64>``
(see ``crypto.py``); they are decrypted here and registered with Airflow's secrets maskers.

Nothing here runs at import time: the settings are read when a hook, the webhook app or the CLI
first needs them, never while a DAG file is parsed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_twilio_sms.errors import ConnectionConfigError, InvalidMessageError

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.rate_limit import RateLimit

log = logging.getLogger(__name__)

CONN_TYPE = "twilio_sms"
# The UI form of older Airflow versions stored extras as ``extra__<conn_type>__<name>``.
LEGACY_EXTRA_PREFIX = f"extra__{CONN_TYPE}__"

# Extras whose values are secrets: redacted by Airflow's UI (their names contain "secret"/"token"),
# encryptable as ``enc:v1:<key-id>:<base64>``, registered with ``mask_secret`` once decrypted.
SECRET_EXTRAS: tuple[str, ...] = ("api_key_secret", "secondary_auth_token", "webhook_signing_key_secret")

# Twilio's processing regions and the edge each one is reached through (api.<edge>.<region>.twilio.com).
# A region given alone gets its edge: the api.<region>.twilio.com hosts stopped working on 28 April 2026.
REGION_EDGES: dict[str, str | None] = {"us1": None, "ie1": "dublin", "au1": "sydney", "jp1": "tokyo"}
REGIONS = frozenset(REGION_EDGES)
# Legacy region-style ids that were edge selectors, not processing regions.
LEGACY_REGION_IDS = {"us2": "umatilla", "de1": "frankfurt", "br1": "sao-paulo", "sg1": "singapore"}
EDGES = frozenset({
    "ashburn", "dublin", "frankfurt", "sao-paulo", "singapore", "sydney", "tokyo", "umatilla", "roaming",
    # private (Interconnect) edges
    "ashburn-ix", "frankfurt-ix", "london-ix", "san-jose-ix", "singapore-ix", "sydney-ix", "tokyo-ix",
})
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_warned_plaintext: set[tuple[str, str]] = set()


def _sid_ok(value: str | None, prefix: str) -> bool:
    return value is not None and re.fullmatch(prefix + r"[0-9a-fA-F]{32}", value) is not None


@dataclass(frozen=True)
class TwilioConnectionSettings:
    """Everything the hook, operator and webhook need from one ``twilio_sms`` connection.

    Build it with :meth:`from_connection` (or :func:`load_settings`), which validates every field.
    ``repr`` never shows a secret.
    """

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

    # -- derived values -------------------------------------------------------------------------

    @property
    def credentials(self) -> tuple[str, str]:
        """``(username, password)`` for Twilio's Basic auth: the API key when set, else the Auth Token."""
        if self.api_key_sid and self.api_key_secret:
            return self.api_key_sid, self.api_key_secret
        return self.account_sid, self.auth_token or ""

    @property
    def api_edge(self) -> str | None:
        """The edge the REST client uses: the one configured, else the region's own (``ie1`` -> dublin)."""
        if self.edge:
            return self.edge
        return REGION_EDGES.get(self.region) if self.region else None

    @property
    def webhook_tokens(self) -> list[str]:
        """Tokens that may sign Twilio's webhooks to this account: the Auth Token, then the secondary."""
        return [t for t in (self.auth_token, self.secondary_auth_token) if t]

    @property
    def signer(self) -> str:
        """Who this connection proves itself to be, for the store: a fingerprint (SHA-256, not reversible)
        of the Account SID and the secret that signs the account's webhooks (the Auth Token, else the
        webhook signing key, else the API key secret).

        Messages and events carry it so that a webhook event touches only records of its own signer (or its
        own connection): a connection that copies an Account SID with a token of its own choosing is a
        stranger to the account's real connections. Connections holding the same token are one signer.
        """
        import hashlib

        secret = self.auth_token or self.webhook_signing_key_secret or self.api_key_secret or ""
        fingerprint = hashlib.sha256(f"twilio_sms signer v1\x00{self.account_sid}\x00{secret}".encode())
        return fingerprint.hexdigest()[:32]

    @property
    def parsed_rate_limit(self) -> RateLimit | None:
        """The ``rate_limit`` extra as ``RateLimit(count, window_seconds)``, or None when not set."""
        if not self.rate_limit:
            return None
        from airflow_provider_twilio_sms.rate_limit import parse_rate_limit

        return parse_rate_limit(self.rate_limit, source=f"connection {self.conn_id!r} extra rate_limit")

    def secrets(self) -> list[str]:
        return [s for s in (self.auth_token, self.api_key_secret, self.secondary_auth_token,
                            self.webhook_signing_key_secret) if s]

    def redact(self, text: str) -> str:
        """``text`` with every secret of this connection replaced by ``***`` (for UI messages)."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    # -- senders --------------------------------------------------------------------------------

    def require_sender(self) -> None:
        """Raise the error for "no sender": neither ``from_number`` nor ``messaging_service_sid`` is set."""
        raise ConnectionConfigError(self.conn_id, "from_number", "no sender is configured",
                                    "Set the extra from_number (or messaging_service_sid) on the connection, "
                                    "or pass from_ / messaging_service_sid to the operator")

    def resolve_sender(self, from_: str | None = None,
                       messaging_service_sid: str | None = None) -> tuple[str | None, str | None]:
        """``(From, MessagingServiceSid)`` for one message, validated and normalised.

        What the caller gives wins; else the connection's ``from_number``, else its
        ``messaging_service_sid``. Neither anywhere raises :class:`ConnectionConfigError`; a malformed
        sender given by the caller raises :class:`InvalidMessageError`.
        """
        from_ = (from_ or "").strip() or None
        messaging_service_sid = (messaging_service_sid or "").strip() or None
        if not (from_ or messaging_service_sid):
            from_ = self.from_number
            messaging_service_sid = None if from_ else self.messaging_service_sid
        if not (from_ or messaging_service_sid):
            self.require_sender()
        if messaging_service_sid and not _sid_ok(messaging_service_sid, "MG"):
            raise InvalidMessageError("the messaging_service_sid is not MG followed by 32 hex characters: "
                                      "copy it from the Twilio console (Messaging > Services)")
        if from_:
            from airflow_provider_twilio_sms.channels import normalize_address

            from_ = normalize_address(from_, self.default_region, sender=True)
        return from_, messaging_service_sid

    # -- building -------------------------------------------------------------------------------

    @classmethod
    def from_connection(cls, conn: Any) -> TwilioConnectionSettings:
        """Read, decrypt and validate an Airflow connection (``airflow.sdk`` or ``airflow.models``)."""
        conn_id = str(conn.conn_id)
        extra = _extras(conn)

        def text(name: str) -> str | None:
            value = extra.get(name)
            return None if value is None or str(value).strip() == "" else str(value).strip()

        def secret(name: str, value: str | None) -> str | None:
            if not value:
                return None
            from airflow_provider_twilio_sms.crypto import decrypt_extra, is_encrypted, register_secret

            # Any enc:vN: value is decrypted: an unknown version fails clearly, never goes out as it is.
            if is_encrypted(value):
                value = decrypt_extra(value.strip(), conn_id, name)
            elif name != "password" and (conn_id, name) not in _warned_plaintext:
                _warned_plaintext.add((conn_id, name))
                log.warning("Connection %s stores the secret extra %s in plain text; encrypt it with "
                            "`airflow twilio-sms encrypt --conn-id %s --field %s`",
                            conn_id, name, conn_id, name)
            register_secret(value, name)  # masked in task, triggerer, api-server and CLI logs alike
            return value

        account_sid = (conn.login or "").strip()
        if not _sid_ok(account_sid, "AC"):
            raise ConnectionConfigError(
                conn_id,
                "login",
                "the Account SID must be AC followed by 32 hex characters",
                "Copy it from the Twilio console (Account Info) into the Account SID (login) field",
            )
        settings = cls(
            conn_id=conn_id,
            account_sid=account_sid,
            auth_token=secret("password", (conn.password or "").strip() or None),
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
            webhook_signing_key_secret=secret("webhook_signing_key_secret",
                                              text("webhook_signing_key_secret")),
            rate_limit=text("rate_limit"),
            api_base_url=(text("api_base_url") or "").rstrip("/") or None,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConnectionConfigError` for the first field that is wrong, saying how to fix it."""

        def fail(field: str, problem: str, fix: str):
            raise ConnectionConfigError(self.conn_id, field, problem, fix)

        if not _sid_ok(self.account_sid, "AC"):
            fail("login", "the Account SID must be AC followed by 32 hex characters",
                 "Copy it from the Twilio console (Account Info) into the Account SID (login) field")
        if self.api_key_sid and not _sid_ok(self.api_key_sid, "SK"):
            fail("api_key_sid", "an API key SID must be SK followed by 32 hex characters",
                 "Copy it from the Twilio console (API keys & tokens)")
        if bool(self.api_key_sid) != bool(self.api_key_secret):
            fail("api_key_secret" if self.api_key_sid else "api_key_sid",
                 "an API key needs both its SID and secret",
                 "Set both api_key_sid and api_key_secret, or neither")
        if not self.auth_token and not self.api_key_sid:
            fail(
                "password",
                "neither an Auth Token nor an API key is set",
                "Put the Auth Token in the Auth Token (password) field, "
                "or set the extras api_key_sid and api_key_secret",
            )
        if self.messaging_service_sid and not _sid_ok(self.messaging_service_sid, "MG"):
            fail("messaging_service_sid", "a Messaging Service SID must be MG followed by 32 hex characters",
                 "Copy it from the Twilio console (Messaging > Services)")
        if self.region in LEGACY_REGION_IDS:
            fail("region", f"{self.region!r} is a retired edge id, not a processing region "
                           f"(api.{self.region}.twilio.com stopped working on 28 April 2026)",
                 f"Leave region empty for US1, or use one of {', '.join(sorted(REGIONS))}; "
                 f"to pick the {LEGACY_REGION_IDS[self.region]} edge set edge instead")
        if self.region and self.region not in REGIONS:
            fail("region", f"unknown region {self.region!r}",
                 f"Use one of {', '.join(sorted(REGIONS))}, or leave it empty for US1")
        if self.edge and self.edge not in EDGES:
            fail("edge", f"unknown edge {self.edge!r}",
                 f"Use one of {', '.join(sorted(EDGES))}, or leave it empty")
        if self.default_region:
            from airflow_provider_twilio_sms.phone import is_valid_region

            if not is_valid_region(self.default_region):
                fail("default_region", f"{self.default_region!r} is not a country code phone numbers know",
                     "Use an ISO 3166 country code such as US, GB or DE, or leave it empty")
        if self.from_number:
            from airflow_provider_twilio_sms.channels import normalize_address

            try:
                normalize_address(self.from_number, self.default_region, sender=True)
            except InvalidMessageError as err:
                fail("from_number", str(err), "Use your Twilio number in E.164, a short code, a sender ID or "
                                              "a WhatsApp sender (whatsapp:+14155238886)")
        for field, url in (("webhook_base_url", self.webhook_base_url), ("api_base_url", self.api_base_url)):
            problem = _url_problem(url) if url else None
            if problem:
                fail(field, problem, "Give an https:// URL without credentials, query or fragment "
                                     "(http only for 127.0.0.1 or localhost)")
        if bool(self.webhook_signing_key_sid) != bool(self.webhook_signing_key_secret):
            fail("webhook_signing_key_secret" if self.webhook_signing_key_sid else "webhook_signing_key_sid",
                 "a webhook signing key needs both its SID and secret", "Set both, or neither")
        if self.rate_limit:
            from airflow_provider_twilio_sms.rate_limit import parse_rate_limit

            try:
                parse_rate_limit(self.rate_limit)
            except ValueError as err:
                fail("rate_limit", str(err), "Fix or clear the rate_limit extra")


def _extras(conn: Any) -> dict[str, Any]:
    """The connection's extras, names under the legacy ``extra__twilio_sms__`` prefix read as plain ones.

    When both spellings are set, the plain one wins unless it is empty.
    """
    raw = dict(getattr(conn, "extra_dejson", None) or {})
    extra = {k: v for k, v in raw.items() if not k.startswith(LEGACY_EXTRA_PREFIX)}
    for key, value in raw.items():
        if key.startswith(LEGACY_EXTRA_PREFIX):
            name = key[len(LEGACY_EXTRA_PREFIX):]
            if extra.get(name) in (None, ""):
                extra[name] = value
    return extra


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a base URL, or None. A URL with credentials in it is never echoed."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "the value is not a URL" if "@" in url else f"{url!r} is not a URL"
    if parts.username or parts.password or "@" in parts.netloc:
        return "the URL carries credentials, which would end up in logs"
    if parts.scheme not in ("https", "http") or not host:
        return f"{url!r} is not an https URL"
    if parts.query or parts.fragment:
        return f"{url!r} has a query or fragment; give the base URL only"
    if parts.scheme == "http" and host not in _LOCAL_HOSTS:
        return f"{url!r} is plain http to a host other than 127.0.0.1/localhost"
    return None


def load_settings(conn_id: str) -> TwilioConnectionSettings:
    """Read and validate a ``twilio_sms`` connection (task, triggerer, api-server or CLI)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if (conn.conn_type or "").replace("-", "_") != CONN_TYPE:
        raise ConnectionConfigError(conn_id, "conn_type", f"the connection has type {conn.conn_type!r}",
                                    "Use a connection of type twilio_sms (Twilio SMS)")
    return TwilioConnectionSettings.from_connection(conn)

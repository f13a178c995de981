"""Which secret signed a webhook, and whether ``X-Twilio-Signature`` matches it.

Two schemes, same string to sign (the URL Twilio called + the sorted form parameters; JSON bodies
bind their hash through ``bodySHA256`` in the query):

- the classic one: HMAC-SHA1 keyed with the account's Auth Token (or the secondary token during a
  rotation), checked by :func:`airflow_provider_twilio_sms.signature.verify_signature`;
- Twilio's shared keys (Webhooks configuration API, public beta): the request carries
  ``X-Twilio-Webhooks-Signature-Settings: key=<shared key id>,algorithm=HMAC_SHA256`` (or
  ``HMAC_SHA1``) and is signed with that key's secret. The connection names the one key it trusts
  (extras ``webhook_signing_key_sid`` / ``webhook_signing_key_secret``); a request naming any other
  key, or an algorithm not listed here, is refused.

Every candidate (token x URL with/without default port) is computed and compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_twilio_sms.signature import body_sha256, url_variants, verify_signature

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings

SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


def parse_signature_settings(value: str | None) -> tuple[str | None, str]:
    """``"key=K,algorithm=HMAC_SHA256"`` -> ``("K", "HMAC_SHA256")``; no algorithm means HMAC_SHA1."""
    key, algorithm = None, "HMAC_SHA1"
    for part in (value or "").split(","):
        name, sep, item = part.partition("=")
        if not sep or not item.strip():
            continue
        if name.strip().lower() == "key":
            key = item.strip()
        elif name.strip().lower() == "algorithm":
            algorithm = item.strip().upper()
    return key, algorithm


def _signature(url: str, pairs: list[tuple[str, str]] | None, secret: str, digest) -> str:
    by_name: dict[str, set[str]] = {}
    for name, value in pairs or ():
        by_name.setdefault(name, set()).add(value)
    payload = url + "".join(name + value for name in sorted(by_name) for value in sorted(by_name[name]))
    mac = hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), digest)
    return base64.b64encode(mac.digest()).decode("ascii")


def verify_shared_key_signature(url: str, pairs: list[tuple[str, str]] | None, signature: str | None,
                                secret: str, algorithm: str, raw_body: bytes | None = None) -> bool:
    """True when ``signature`` is the shared key's ``algorithm`` signature of this request.

    The same rules as :func:`~airflow_provider_twilio_sms.signature.verify_signature`: ``bodySHA256``
    in the query must match the raw body (and then the form parameters are not signed); a JSON body
    without it is refused.
    """
    digest = ALGORITHMS.get(algorithm)
    if not signature or digest is None or not secret:
        return False
    expected_body_hash = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)).get("bodySHA256")
    if expected_body_hash is not None:
        if raw_body is None or not hmac.compare_digest(body_sha256(raw_body), expected_body_hash.lower()):
            return False
        pairs = None
    elif raw_body is not None and pairs is None:
        return False
    given = signature.encode("utf-8", "replace")
    matched = False
    for candidate in url_variants(url):  # every candidate is computed: the time does not tell which matched
        if hmac.compare_digest(_signature(candidate, pairs, secret, digest).encode("ascii"), given):
            matched = True
    return matched


def signature_matches(settings: TwilioConnectionSettings, url: str, pairs: list[tuple[str, str]] | None,
                      signature: str | None, settings_header: str | None, raw_body: bytes | None) -> bool:
    """Whether the request was signed by this connection's account: shared key when the request says
    so (and the connection trusts that key), else the Auth Token or secondary token."""
    if settings_header is not None:
        key, algorithm = parse_signature_settings(settings_header)
        trusted = settings.webhook_signing_key_sid
        if not (key and trusted and settings.webhook_signing_key_secret
                and hmac.compare_digest(key.encode("utf-8", "replace"), trusted.encode("utf-8"))):
            return False
        return verify_shared_key_signature(url, pairs, signature, settings.webhook_signing_key_secret,
                                           algorithm, raw_body)
    # One token at a time: the Auth Token signs nearly every request, so the secondary is only tried when
    # it fails. Each comparison is constant-time; which token matched is no secret.
    return any(verify_signature(url, pairs, signature, [token], raw_body=raw_body)
               for token in settings.webhook_tokens)

"""Which secret signed a webhook, and whether ``X-Twilio-Signature`` matches it.

Two schemes, same string to sign (the URL Twilio called + the sorted form parameters; JSON bodies
bind their hash through ``bodySHA256`` in the query):

- the classic one: HMAC-SHA1 keyed with the account's Auth Token (or the secondary token during a
  rotation);
- Twilio's shared keys (Webhooks configuration API, public beta): the request carries
  ``X-Twilio-Webhooks-Signature-Settings: key=<shared key id>,algorithm=HMAC_SHA256`` (or
  ``HMAC_SHA1``) and is signed with that key's secret. The connection names the one key it trusts
  (extras ``webhook_signing_key_sid`` / ``webhook_signing_key_secret``); a request naming any other
  key, or an algorithm not listed here, is refused.

Both are checked by :func:`airflow_provider_twilio_sms.signature.verify_signature`, which computes
every candidate (secret x URL with/without default port) and compares each in constant time.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from airflow_provider_twilio_sms.signature import verify_signature

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings

SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"


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


def signature_matches(settings: TwilioConnectionSettings, url: str, pairs: list[tuple[str, str]] | None,
                      signature: str | None, settings_header: str | None, raw_body: bytes | None) -> bool:
    """Whether the request was signed by this connection's account: shared key when the request says
    so (and the connection trusts that key), else the Auth Token or secondary token.
    """
    if settings_header is not None:
        key, algorithm = parse_signature_settings(settings_header)
        trusted = settings.webhook_signing_key_sid
        if not (key and trusted and settings.webhook_signing_key_secret
                and hmac.compare_digest(key.encode("utf-8", "replace"), trusted.encode("utf-8"))):
            return False
        return verify_signature(url, pairs, signature, [settings.webhook_signing_key_secret],
                                raw_body=raw_body, algorithm=algorithm)
    # One token at a time: the Auth Token signs nearly every request, so the secondary is only tried when
    # it fails. Each comparison is constant-time; which token matched is no secret.
    return any(verify_signature(url, pairs, signature, [token], raw_body=raw_body)
               for token in settings.webhook_tokens)

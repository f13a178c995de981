"""Twilio request signatures: ``X-Twilio-Signature``.

Twilio signs a webhook request with a secret (the account's Auth Token, or a shared signing key's
secret): an HMAC (SHA-1 classically, SHA-256 with shared keys) over the full URL it called followed by
every POST parameter name and value, sorted by name, base64-encoded. JSON bodies are not part of that
string: Twilio adds ``bodySHA256`` (hex SHA-256 of the raw body) to the query instead.

Both the local stand-in (which signs as Twilio does) and the webhook app (which verifies) use this
module, so the two can never drift apart; tests check both sides against twilio-python's own
``RequestValidator``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

Params = Mapping[str, object] | Iterable[tuple[str, str]]

_DEFAULT_PORTS = {"https": 443, "http": 80}
ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


def _pairs(params: Params | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    if isinstance(params, Mapping):
        pairs: list[tuple[str, str]] = []
        for key, value in params.items():
            if isinstance(value, (list, tuple)):
                pairs.extend((key, str(v)) for v in value)
            else:
                pairs.append((key, str(value)))
        return pairs
    return [(str(k), str(v)) for k, v in params]


def _signed_params(params: Params | None) -> str:
    """The form parameters as Twilio appends them to the URL it signs: each name followed by its value,
    sorted by name then value (a repeated name with the same value counts once).
    """
    return "".join(name + value for name, value in sorted(set(_pairs(params))))


def _sign(payload: str, secret: str, algorithm: str) -> str:
    mac = hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), ALGORITHMS[algorithm])
    return base64.b64encode(mac.digest()).decode("ascii")


def compute_signature(url: str, params: Params | None, secret: str, algorithm: str = "HMAC_SHA1") -> str:
    """Return the base64 ``X-Twilio-Signature`` Twilio would send for ``url`` and form ``params``.

    ``algorithm`` is a key of :data:`ALGORITHMS` (a ``KeyError`` otherwise).
    """
    return _sign(url + _signed_params(params), secret, algorithm)


def body_sha256(body: bytes) -> str:
    """Hex SHA-256 of a raw body, as Twilio puts it in the ``bodySHA256`` query parameter."""
    return hashlib.sha256(body).hexdigest()


def url_variants(url: str) -> list[str]:
    """The URL as given, plus the same URL with the scheme's default port added or removed.

    Twilio may or may not include ``:443``/``:80`` when signing, so a verifier must try both. The variants
    of the part before the query are computed once per such part (a webhook's URLs differ by query only).
    """
    base, separator, query = url.partition("?")
    return [variant + separator + query for variant in _base_variants(base)]


@functools.lru_cache(maxsize=256)
def _base_variants(url: str) -> tuple[str, ...]:
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    variants = [url]
    if parts.port is None and default is not None:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    elif parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return tuple(variants)


def verify_signature(
    url: str,
    params: Params | None,
    signature: str | None,
    secrets: Iterable[str],
    raw_body: bytes | None = None,
    algorithm: str = "HMAC_SHA1",
) -> bool:
    """True when ``signature`` is Twilio's ``algorithm`` signature of this request under any of ``secrets``.

    ``params`` are the form parameters (empty for a JSON body). When the URL's query carries
    ``bodySHA256`` the raw body must hash to it, and a JSON body without that parameter is refused:
    skipping the body check is exactly the forgery hole a verifier must not have. Comparisons are
    constant-time and on bytes (a signature with non-ASCII characters is simply wrong). An algorithm
    not in :data:`ALGORITHMS` verifies nothing.

    Candidates are tried until one matches: which one matched (a URL with or without its default port,
    the first secret or the next) is no secret, and a request that matches none is checked against all.
    """
    if not signature or algorithm not in ALGORITHMS:
        return False
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)) if "?" in url else {}
    expected_body_hash = query.get("bodySHA256")
    if expected_body_hash is not None:
        if raw_body is None or not hmac.compare_digest(body_sha256(raw_body), expected_body_hash.lower()):
            return False
        params = None
    elif raw_body is not None and params is None:
        return False
    given = signature.encode("utf-8", "replace")
    signed_params = _signed_params(params)
    for secret in secrets:
        if not secret:
            continue
        for candidate in url_variants(url):
            computed = _sign(candidate + signed_params, secret, algorithm).encode("ascii")
            if hmac.compare_digest(computed, given):
                return True
    return False

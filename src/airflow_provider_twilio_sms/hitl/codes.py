"""Reply codes: the short code an SMS for a human-in-the-loop request carries, and how a reply names it.

Four characters of an alphabet without the look-alikes 0/O, 1/I/L, so a code read off a phone screen is
typed right, and at least one of them a digit, so that no word ("WHAT time is it?") reads as a code; a
reply starts with it (``K7QX 1``), in any case. Uniqueness among one number's pending
requests is the store's job (:meth:`~airflow_provider_twilio_sms.store.api.SmsStore.open_hitl_request`).
"""

from __future__ import annotations

import re
import secrets

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 4
_DIGITS = "".join(c for c in ALPHABET if c.isdigit())
# A code (with a digit among its characters: the lookahead), then a separator or the end, then the answer.
_CODE = rf"(?=[{ALPHABET}]{{0,{CODE_LENGTH - 1}}}[{_DIGITS}])[{ALPHABET}]{{{CODE_LENGTH}}}"
_REPLY = re.compile(rf"\s*#?({_CODE})(?:\s+|[:.,;]\s*|$)(.*)", re.DOTALL | re.IGNORECASE)


def new_code() -> str:
    """A random reply code (``secrets``: codes must not be guessable from one another)."""
    while True:
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        if any(c in _DIGITS for c in code):
            return code


def split_reply(body: str | None) -> tuple[str, str] | None:
    """``"k7qx approve"`` -> ``("K7QX", "approve")``; None when the body does not start with a code."""
    match = _REPLY.fullmatch(body or "")
    if match is None:
        return None
    return match.group(1).upper(), match.group(2).strip()

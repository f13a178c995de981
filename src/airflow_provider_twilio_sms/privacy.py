"""Masking of personal data and request values before they reach a log, an exception or XCom.

Phone numbers keep their last four digits, SIDs their prefix and last four characters; anything taken
from a request is stripped of control characters so it cannot forge log lines.
"""

from __future__ import annotations

import re

# C0 and C1 controls (NEL U+0085 ends a line in some log viewers), the Unicode line and paragraph
# separators, and the bidirectional overrides and isolates that make a line read differently from its bytes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def mask_number(number: object) -> str:
    """``+15551234567`` -> ``***4567``; anything shorter than five characters is fully hidden."""
    if number is None:
        return "<none>"
    text = str(number)
    digits = re.sub(r"\D", "", text)
    if len(digits) < 5:
        return "***"
    return "***" + digits[-4:]


def mask_sid(sid: object) -> str:
    """``SM0123...cdef`` -> ``SM…cdef``: enough to find the message, not enough to guess it."""
    if sid is None:
        return "<none>"
    text = safe_for_log(sid, limit=64)
    if len(text) <= 8:
        return text
    return f"{text[:2]}…{text[-4:]}"


def safe_for_log(value: object, limit: int = 80) -> str:
    """Render a value taken from a request so that it is one short line with no control characters."""
    text = _CONTROL.sub("?", str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"

"""Masking of personal data and request values before they reach a log, an exception or XCom.

Phone numbers keep their last four digits, SIDs their prefix and last four characters; anything taken
from a request is stripped of control characters so it cannot forge log lines.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


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

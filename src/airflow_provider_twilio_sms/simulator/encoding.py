"""How many SMS segments Twilio bills for a body: GSM-7 160 (153 a part), else UCS-2 70 (67 a part).

Kept apart from the provider's own ``segments`` module on purpose: the stand-in plays Twilio, so it
counts on its own and a mistake in the provider's count shows up as a disagreement in tests.

GSM-7 extension characters take two septets (escape + character) and an escape pair is never split
between two parts; in UCS-2 a character outside the Basic Multilingual Plane is a surrogate pair of two
UTF-16 code units, never split either. With ``SmartEncoded=true`` Twilio first replaces common Unicode
look-alikes (curly quotes, dashes, ellipsis, non-breaking space) by their GSM-7 equivalents.
"""

from __future__ import annotations

GSM7 = "GSM-7"
UCS2 = "UCS-2"

_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXTENSION = frozenset("\f^{}\\[~]|€")
_LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}
_SMART = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u2026": "...", "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u200b": "",
    "\u2022": "-", "\u02c6": "^", "\u02dc": "~",
})


def smart_encode(body: str) -> str:
    """What Twilio sends for ``body`` with ``SmartEncoded=true``."""
    return body.translate(_SMART)


def _units(body: str) -> tuple[str, list[int]]:
    """The encoding and, per character, the units it takes (septets or UTF-16 code units)."""
    septets = []
    for char in body:
        if char in _BASIC:
            septets.append(1)
        elif char in _EXTENSION:
            septets.append(2)
        else:
            return UCS2, [2 if ord(char) > 0xFFFF else 1 for char in body]
    return GSM7, septets


def segment_count(body: str) -> tuple[int, str]:
    """``(segments, encoding)``. An empty body (media only) is one segment, as Twilio reports it."""
    encoding, units = _units(body or "")
    single, part = _LIMITS[encoding]
    if sum(units) <= single:
        return 1, encoding
    parts, used = 1, 0
    for size in units:
        if used + size > part:  # an escape or surrogate pair never straddles two parts
            parts, used = parts + 1, 0
        used += size
    return parts, encoding

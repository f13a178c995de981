"""SMS segment counting (GSM-7 and UCS-2) and the limits Twilio checks before it accepts a message.

Carriers bill and Twilio throttles by segment: 160 GSM-7 characters fit one SMS, 153 each once split
(the rest is the concatenation header); any character outside GSM-7 makes the whole message UCS-2:
70 UTF-16 code units, 67 per part. Extension characters (``{ } [ ] ~ \\ | ^ €`` and form feed) take
two GSM-7 septets and an escape pair is never split across parts; neither is a UTF-16 surrogate pair.
"""

from __future__ import annotations

from airflow_provider_twilio_sms.errors import InvalidMessageError

MAX_BODY_CHARS = 1600
MAX_MEDIA = 10

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")


def _gsm_units(body: str) -> list[int] | None:
    """Septets per character, or None when a character is not in GSM-7."""
    units = []
    for char in body:
        if char in _GSM_BASIC:
            units.append(1)
        elif char in _GSM_EXTENSION:
            units.append(2)
        else:
            return None
    return units


def _ucs2_units(body: str) -> list[int]:
    return [2 if ord(char) > 0xFFFF else 1 for char in body]


def _parts(units: list[int], single: int, multi: int) -> int:
    total = sum(units)
    if total <= single:
        return 1 if units else 1
    parts, used = 1, 0
    for size in units:  # an escape pair or surrogate pair never straddles two parts
        if used + size > multi:
            parts, used = parts + 1, 0
        used += size
    return parts


def count_segments(body: str) -> tuple[int, str]:
    """(segments, encoding) where encoding is ``"GSM-7"`` or ``"UCS-2"``. An empty body is one segment."""
    gsm = _gsm_units(body)
    if gsm is not None:
        return _parts(gsm, 160, 153), "GSM-7"
    return _parts(_ucs2_units(body), 70, 67), "UCS-2"


def validate_message(body: str | None, media_urls: list[str] | None = None) -> None:
    """Refuse what Twilio would refuse, before any request: no content, too long, too many media."""
    media_urls = media_urls or []
    if not body and not media_urls:
        raise InvalidMessageError("the message has no body and no media URL: give a body (or media_url) to send")
    if body and len(body) > MAX_BODY_CHARS:
        raise InvalidMessageError(f"the body is {len(body)} characters; Twilio accepts at most {MAX_BODY_CHARS} "
                                  "(error 21617): shorten it or split it into several messages")
    if len(media_urls) > MAX_MEDIA:
        raise InvalidMessageError(f"{len(media_urls)} media URLs given; Twilio accepts at most {MAX_MEDIA} "
                                  "(error 21623)")
    for url in media_urls:
        if not str(url).startswith(("https://", "http://")):
            raise InvalidMessageError("a media URL is not an http(s) URL (error 21620): give public URLs")

r"""SMS segment counting (GSM-7 and UCS-2) and the limits Twilio checks before it accepts a message.

Carriers bill and Twilio throttles by segment: 160 GSM-7 characters fit one SMS, 153 each once split
(the rest is the concatenation header); any character outside GSM-7 makes the whole message UCS-2:
70 UTF-16 code units, 67 per part. Extension characters (``{ } [ ] ~ \ | ^ €`` and form feed) take
two GSM-7 septets and an escape pair is never split across parts; neither is a UTF-16 surrogate pair
(a character outside the Basic Multilingual Plane, such as most emoji).
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_twilio_sms.errors import InvalidMessageError

GSM_7 = "GSM-7"
UCS_2 = "UCS-2"
MAX_BODY_CHARS = 1600
MAX_MEDIA = 10

# (single-part capacity, capacity of each part of a concatenated message), in septets / code units
_CAPACITY = {GSM_7: (160, 153), UCS_2: (70, 67)}

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
            units.append(2)  # escape + character: one pair, never split
        else:
            return None
    return units


def _ucs2_units(body: str) -> list[int]:
    """UTF-16 code units per character: two (a surrogate pair, never split) above U+FFFF."""
    return [2 if ord(char) > 0xFFFF else 1 for char in body]


def _parts(units: list[int], single: int, multi: int) -> int:
    if sum(units) <= single:
        return 1
    parts, used = 1, 0
    for size in units:
        if used + size > multi:  # the pair moves whole to the next part
            parts, used = parts + 1, 0
        used += size
    return parts


def count_segments(body: str | None) -> tuple[int, str]:
    """``(segments, encoding)``, encoding ``"GSM-7"`` or ``"UCS-2"``. An empty body is one segment.

    >>> count_segments("a" * 161)
    (2, 'GSM-7')
    >>> count_segments("Ok 👍")
    (1, 'UCS-2')
    """
    body = body or ""
    gsm = _gsm_units(body)
    if gsm is not None:
        return _parts(gsm, *_CAPACITY[GSM_7]), GSM_7
    return _parts(_ucs2_units(body), *_CAPACITY[UCS_2]), UCS_2


def message_units(to: str | None, body: str | None, content_sid: str | None = None) -> tuple[int, str | None]:
    """``(units, encoding)`` of one message: what a ``"segments"`` rate limit counts, and what is recorded
    before Twilio answers (Twilio's own ``num_segments`` replaces it once it does).

    - SMS with a body: its segments and encoding (:func:`count_segments`);
    - WhatsApp: one unit, encoding None. WhatsApp is priced per message (or conversation), never by GSM-7 or
      UCS-2 segments, and a 1600-character WhatsApp message is still one message;
    - a Content template on SMS: one unit, encoding None. Its text is Twilio's to fill in, so it is not
      known here; Twilio's answer carries the real segment count, which the store then records.
    """
    from airflow_provider_twilio_sms.channels import WHATSAPP, channel_of

    if channel_of(to) == WHATSAPP or content_sid:
        return 1, None
    return count_segments(body)


def validate_message(body: str | None, media_urls: Sequence[str] | None = None) -> None:
    """Refuse what Twilio would refuse, before any request: no content, too long, too many media.

    Raises :class:`InvalidMessageError` saying what to change; the body itself is never quoted.
    """
    media_urls = list(media_urls or [])
    if not body and not media_urls:
        raise InvalidMessageError("the message has no body and no media URL (Twilio error 21602): "
                                  "give a body, or media_url")
    if body and len(body) > MAX_BODY_CHARS:
        raise InvalidMessageError(f"the body is {len(body)} characters; Twilio accepts at most "
                                  f"{MAX_BODY_CHARS} (error 21617): shorten it or split it into several "
                                  "messages")
    if len(media_urls) > MAX_MEDIA:
        raise InvalidMessageError(f"{len(media_urls)} media URLs given; Twilio accepts at most {MAX_MEDIA} "
                                  "(error 21623): send the rest in another message")
    for position, url in enumerate(media_urls, start=1):
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise InvalidMessageError(f"media URL number {position} is not an http(s) URL (Twilio error "
                                      "21620): give public URLs Twilio can fetch")

"""Phone numbers: validated and normalised to E.164 before any store row or HTTP request."""

from __future__ import annotations

import re

from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.privacy import mask_number

_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ALPHA_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
# Twilio's magic test numbers are not real, allocated numbers; accept them as Twilio's test API does.
_TWILIO_TEST_PREFIX = "+1500555"


def normalize_number(value: object, default_region: str | None = None, *, sender: bool = False) -> str:
    """``"(415) 555-0123"`` with region US -> ``"+14155550123"``.

    With ``sender=True`` short codes (``"12345"``) and alphanumeric sender IDs (``"ACME"``) are also
    accepted, as Twilio accepts them for ``From``. Raises :class:`InvalidMessageError` naming the
    masked number and the fix.
    """
    text = str(value or "").strip()
    if sender and (_SHORT_CODE.match(text) or _ALPHA_SENDER.match(text)):
        return text
    if not text:
        raise InvalidMessageError("a phone number is empty: give the recipient in E.164, like +14155550123")
    if text.startswith("whatsapp:"):
        raise InvalidMessageError("WhatsApp addresses are not supported by this SMS provider")
    compact = re.sub(r"[\s().-]", "", text)
    if compact.startswith(_TWILIO_TEST_PREFIX) and re.fullmatch(r"\+\d{11}", compact):
        return compact
    import phonenumbers

    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else (default_region or None))
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        hint = ("write it in E.164 like +14155550123" if default_region or text.startswith("+")
                else "write it in E.164 like +14155550123, or set default_region on the connection")
        raise InvalidMessageError(f"{mask_number(text)} is not a valid phone number: {hint}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_valid_region(region: str) -> bool:
    import phonenumbers

    return region.upper() in phonenumbers.SUPPORTED_REGIONS

"""Phone numbers: validated and normalised to E.164 before any store row or HTTP request.

``phonenumbers`` (a large metadata package) is imported only when a number is actually checked:
DAG files import the hook, which imports this module.
"""

from __future__ import annotations

import functools
import re

from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.privacy import mask_number

# Short codes are 3 to 8 digits depending on the country (5-6 in the US).
_SHORT_CODE = re.compile(r"\d{3,8}")
# Alphanumeric sender IDs: at most 11 of A-Z, a-z, 0-9 and space, with at least one letter.
_ALPHA_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
# Twilio's magic test numbers (+1 500 555 00xx) are not allocated numbers; Twilio's test API takes them.
_TWILIO_TEST_NUMBER = re.compile(r"\+1500555\d{4}")
_SEPARATORS = re.compile(r"[\s().\-/]")
EXAMPLE = "+14155550123"


def normalize_number(value: object, default_region: str | None = None, *, sender: bool = False) -> str:
    """``"(415) 555-0123"`` with ``default_region="US"`` -> ``"+14155550123"``.

    A number written with a leading ``+`` is read as international whatever ``default_region`` says.
    With ``sender=True`` (a ``From``), short codes (``"12345"``) and alphanumeric sender IDs
    (``"ACME"``) are returned as given, as Twilio accepts them there. Raises
    :class:`InvalidMessageError` naming the masked number and the fix.
    """
    return _normalize(str(value).strip() if value is not None else "", default_region, sender)


@functools.lru_cache(maxsize=4096)
def _normalize(text: str, default_region: str | None, sender: bool) -> str:
    """:func:`normalize_number` on the stripped text; answers are cached (``phonenumbers`` takes tens of
    microseconds a number, and a sender checks the same few numbers again and again); refusals are not.
    """
    role = "sender" if sender else "recipient"
    if not text:
        raise InvalidMessageError(f"the {role} phone number is empty: write it in E.164 like {EXAMPLE}")
    if sender and (_SHORT_CODE.fullmatch(text) or _ALPHA_SENDER.fullmatch(text)):
        return text
    if ":" in text:  # whatsapp:+1..., messenger:..., tel:...
        raise InvalidMessageError(f"the {role} {mask_number(text)} is a channel address, not a phone number: "
                                  f"write the number in E.164 like {EXAMPLE} (a message's recipient and "
                                  f"sender may also be WhatsApp addresses like whatsapp:{EXAMPLE})")
    compact = _SEPARATORS.sub("", text)
    if _TWILIO_TEST_NUMBER.fullmatch(compact):
        return compact
    import phonenumbers

    region = (default_region or "").strip().upper() or None
    try:
        parsed = phonenumbers.parse(text, None if compact.startswith("+") else region)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        if compact.startswith("+") or region:
            hint = f"write it in E.164 like {EXAMPLE}"
        else:
            hint = f"write it in E.164 like {EXAMPLE}, or set default_region on the connection"
        if sender:
            hint += " (a short code or an alphanumeric sender ID of at most 11 characters also works)"
        raise InvalidMessageError(f"the {role} {mask_number(text)} is not a valid phone number: {hint}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_valid_region(region: str) -> bool:
    """Whether ``region`` is an ISO 3166 country code ``phonenumbers`` knows (``"US"``, ``"gb"``)."""
    import phonenumbers

    return str(region).strip().upper() in phonenumbers.SUPPORTED_REGIONS

"""Twilio's magic test numbers and the number formats it accepts.

With Twilio's test credentials these numbers make a create fail on purpose, so a pipeline can exercise
each refusal offline; the stand-in honours them for every account:

- To ``+15005550001`` invalid (21211), ``...02`` cannot be routed (21612), ``...03`` no international
  permission (21408), ``...04`` opted out / blocked (21610), ``...09`` not SMS-capable (21614);
- From ``+15005550001`` invalid (21212), ``...07`` not owned by the account (21606), ``...08`` SMS queue
  full (21611); ``+15005550006`` is a valid sender.
"""

from __future__ import annotations

import re

VALID_FROM = "+15005550006"

MAGIC_TO: dict[str, tuple[int, str]] = {
    "+15005550001": (21211, "Invalid 'To' Phone Number: +15005550001"),
    "+15005550002": (21612, "The 'To' phone number: +15005550002, is not currently reachable using the "
                            "'From' phone number via SMS."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region indicated by "
                            "the 'To' number: +15005550003."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
MAGIC_FROM: dict[str, tuple[int, str]] = {
    "+15005550001": (21212, "Invalid From Number (caller ID): +15005550001"),
    "+15005550007": (21606, "The From phone number +15005550007 is not a valid, SMS-capable inbound phone "
                            "number or short code for your account."),
    "+15005550008": (21611, "This 'From' number has exceeded the maximum number of queued messages"),
}

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ALPHANUMERIC = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_CHANNELS = ("whatsapp:", "messenger:", "rcs:")
_MAGIC_PREFIX = "+1500555"


def _channel_free(address: str) -> str:
    for prefix in _CHANNELS:
        if address.startswith(prefix):
            return address[len(prefix):]
    return address


def is_valid_recipient(address: str) -> bool:
    """An E.164 number that exists in the numbering plan (or a magic test number), maybe channel-prefixed."""
    number = _channel_free(address)
    if not _E164.match(number):
        return False
    if number.startswith(_MAGIC_PREFIX):
        return True
    import phonenumbers  # only when a request is checked: the package imports nothing heavy

    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return False


def is_valid_sender(address: str) -> bool:
    """A valid number, a short code, or an alphanumeric sender ID (1-11 characters, one letter at least)."""
    return (is_valid_recipient(address) or bool(_SHORT_CODE.match(address))
            or bool(_ALPHANUMERIC.match(address)))


def country_of(number: str) -> str:
    """ISO country of a number ("US"), or "" when unknown: Twilio's FromCountry/ToCountry."""
    number = _channel_free(number)
    if not _E164.match(number):
        return ""
    import phonenumbers

    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number, None)) or ""
    except phonenumbers.NumberParseException:
        return ""

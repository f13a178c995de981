"""What Twilio refuses when a message is created: validation errors and its magic test numbers.

The magic numbers behave as they do with Twilio's test credentials, so a pipeline can exercise each
refusal offline: To +15005550001 invalid (21211), ...02 unroutable (21612), ...03 no permission for
the region (21408), ...04 opted out (21610), ...09 not SMS-capable (21614); From ...01 invalid (21212),
...07 not owned (21606), ...08 queue full (21611).
"""

from __future__ import annotations

import re

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")

MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number: +15005550002, is not currently reachable using the 'From' "
                            "phone number via SMS."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region indicated by the "
                            "'To' number: +15005550003."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
MAGIC_FROM = {
    "+15005550001": (21212, "The 'From' number +15005550001 is not a valid phone number, shortcode, or "
                            "alphanumeric sender ID."),
    "+15005550007": (21606, "The 'From' phone number provided is not a valid, message-capable Twilio phone "
                            "number for this destination/account."),
    "+15005550008": (21611, "This 'From' number has exceeded the maximum number of queued messages"),
}


def _valid_number(number: str) -> bool:
    if not _E164.match(number):
        return False
    if number.startswith("+1500555"):
        return True
    import phonenumbers

    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return False


def check_create(params: dict[str, str], media: list[str]) -> tuple[int, str] | None:
    """(error code, message) Twilio would answer with 400 for this create request, or None to accept."""
    to, sender, service = params.get("To"), params.get("From"), params.get("MessagingServiceSid")
    body = params.get("Body")
    if not to:
        return 21604, "A 'To' phone number is required."
    if not sender and not service:
        return 21603, "A 'From' phone number is required."
    if not body and not media:
        return 21602, "Message body is required."
    if body and len(body) > 1600:
        return 21617, "The concatenated message body exceeds the 1600 character limit."
    if len(media) > 10:
        return 21623, "Number of media files exceeds allowed limit."
    if params.get("ValidityPeriod") is not None:
        period = params["ValidityPeriod"]
        if not period.isdigit() or not 1 <= int(period) <= 36000:
            return 21624, "Invalid ValidityPeriod value"
    if sender in MAGIC_FROM:
        return MAGIC_FROM[sender]
    if sender and not service and not (_valid_number(sender) or re.fullmatch(r"\d{3,8}|[A-Za-z0-9 ]{1,11}", sender)):
        return 21212, f"The 'From' number {sender} is not a valid phone number, shortcode, or alphanumeric sender ID."
    if to in MAGIC_TO:
        return MAGIC_TO[to]
    if not _valid_number(to):
        return 21211, f"The 'To' number {to} is not a valid phone number."
    return None

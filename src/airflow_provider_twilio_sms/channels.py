"""Channels: SMS numbers and ``whatsapp:`` addresses, through the same Messages API.

Twilio sends WhatsApp through the Messages API with the channel written into the address:
``To=whatsapp:+14155550123``, ``From=whatsapp:+14155238886``. The number part is a phone number like any
other, so it is validated and normalised to E.164 exactly as an SMS number is (:func:`.normalize_number`)
and the prefix is kept (written in lower case, as Twilio writes it). Stored rows, status callbacks and
inbound messages keep the whole address: an SMS reply from ``+14155550123`` and a WhatsApp reply from
``whatsapp:+14155550123`` are different senders, and a sensor waiting for one never takes the other.

A message goes out on one channel: a WhatsApp recipient needs a WhatsApp sender (or a Messaging Service
that has one), and an SMS recipient an SMS sender.
"""

from __future__ import annotations

from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.phone import EXAMPLE, normalize_number
from airflow_provider_twilio_sms.privacy import mask_number

SMS = "sms"
WHATSAPP = "whatsapp"
CHANNELS = (SMS, WHATSAPP)
WHATSAPP_PREFIX = "whatsapp:"
# Other channel addresses Twilio's Messages API knows; this provider does not send on them.
_OTHER_PREFIXES = ("messenger:", "rcs:", "tel:", "sms:", "mms:")


def channel_of(address: object) -> str:
    """``"whatsapp"`` for a ``whatsapp:`` address, else ``"sms"`` (numbers, short codes, sender IDs)."""
    return WHATSAPP if str(address or "").strip().lower().startswith(WHATSAPP_PREFIX) else SMS


def number_part(address: object) -> str:
    """The address without its ``whatsapp:`` prefix: ``whatsapp:+14155550123`` -> ``+14155550123``."""
    text = str(address or "").strip()
    return text[len(WHATSAPP_PREFIX):] if text.lower().startswith(WHATSAPP_PREFIX) else text


def normalize_address(value: object, default_region: str | None = None, *, sender: bool = False) -> str:
    """An SMS number (see :func:`.normalize_number`) or a ``whatsapp:`` address with its number normalised.

    ``"WhatsApp:+1 (415) 555-0123"`` -> ``"whatsapp:+14155550123"``. A WhatsApp address is always a phone
    number, also as a sender (no short codes or sender IDs on WhatsApp). Raises
    :class:`InvalidMessageError` naming the masked address and the fix.
    """
    text = str(value).strip() if value is not None else ""
    role = "sender" if sender else "recipient"
    lowered = text.lower()
    if lowered.startswith(WHATSAPP_PREFIX):
        number = text[len(WHATSAPP_PREFIX):].strip()
        if not number:
            raise InvalidMessageError(f"the {role} address {text[:len(WHATSAPP_PREFIX)]!r} has no number: "
                                      f"write it as whatsapp:{EXAMPLE}")
        try:
            return WHATSAPP_PREFIX + normalize_number(number, default_region)
        except InvalidMessageError:
            raise InvalidMessageError(
                f"the {role} {mask_number(WHATSAPP_PREFIX + number)} is not a valid phone number on WhatsApp "
                f"(no short codes or sender IDs there): write it as whatsapp:{EXAMPLE}, the number in E.164 "
                "(or national with the connection's default_region)") from None
    if lowered.startswith(_OTHER_PREFIXES):
        raise InvalidMessageError(
            f"the {role} {mask_number(text)} is a {lowered.split(':', 1)[0]}: address; this provider sends "
            f"SMS and WhatsApp only: write an SMS number in E.164 like {EXAMPLE}, or a WhatsApp address like "
            f"whatsapp:{EXAMPLE}")
    return normalize_number(text, default_region, sender=sender)


def check_same_channel(to: str, from_: str | None) -> str:
    """The message's channel, after checking that the sender is on the recipient's channel.

    A Messaging Service may hold senders of both channels: Twilio picks the one matching ``To``. A fixed
    ``From`` on the other channel than ``To`` is refused here, with the fix (Twilio would refuse it too).
    """
    channel = channel_of(to)
    if from_ and channel_of(from_) != channel:
        if channel == WHATSAPP:
            fix = (f"send from your WhatsApp sender (from_='whatsapp:{EXAMPLE}'), or through a Messaging "
                   "Service that has one (messaging_service_sid=..., without from_)")
        else:
            fix = (f"send from an SMS number (from_='{EXAMPLE}'), or write the recipient as "
                   f"whatsapp:{EXAMPLE} to send on WhatsApp")
        raise InvalidMessageError(
            f"the recipient {mask_number(to)} is on {channel} but the sender {mask_number(from_)} is on "
            f"{channel_of(from_)}: a message goes out on one channel; {fix}")
    return channel

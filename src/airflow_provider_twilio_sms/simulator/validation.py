"""What Twilio checks when a message is created: the contract's types first, then its business rules.

Type and format checks follow Twilio's published OpenAPI description of ``POST .../Messages.json``
(integers, ``true``/``false`` booleans, enums, SID patterns, ISO 8601 ``SendAt``); the business rules
follow Twilio's documented errors (21602 no body, 21603 no sender, 21604 no To, 21617 body over 1600
characters, 21623 over 10 media, 21624 validity period, 21609 status callback URL, 21211/21212 number
formats, 21266 To equals From (63031 on WhatsApp), 21910 From and To on different channels, 35111 no SendAt,
35114 scheduling window, Content templates 21654/21655/21656: see ``content``) and its magic test numbers
(checked on the number part of a ``whatsapp:`` address too). A ``ScheduleType=fixed`` without a Messaging
Service is sent at once, as Twilio documents (error 35111's page); the provider refuses such a request
before it leaves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from airflow_provider_twilio_sms.channels import channel_of, number_part
from airflow_provider_twilio_sms.simulator.content import Template, check_content
from airflow_provider_twilio_sms.simulator.errors import TwilioApiError, invalid_parameter
from airflow_provider_twilio_sms.simulator.magic_numbers import (
    MAGIC_FROM,
    MAGIC_TO,
    is_valid_recipient,
    is_valid_sender,
)

MAX_BODY_CHARS = 1600
MAX_MEDIA = 10
MAX_VALIDITY_PERIOD = 36000
SCHEDULE_MIN = timedelta(minutes=15)
SCHEDULE_MAX = timedelta(days=35)

_SID_PATTERNS = {"MessagingServiceSid": "MG", "ApplicationSid": "AP", "ContentSid": "HX"}
_BOOLEANS = ("ProvideFeedback", "ForceDelivery", "SmartEncoded", "ShortenUrls", "SendAsMms")
_INTEGERS = ("Attempt", "ValidityPeriod")
_ENUMS = {
    "ContentRetention": ("retain", "discard"),
    "AddressRetention": ("retain", "obfuscate"),
    "TrafficType": ("free",),
    "ScheduleType": ("fixed",),
    "RiskCheck": ("enable", "disable"),
}
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$")


@dataclass
class CreateRequest:
    """A create request Twilio accepted, with what the stand-in needs to play the message out."""

    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    media_urls: list[str] = field(default_factory=list)
    status_callback: str | None = None
    smart_encoded: bool = False
    shorten_urls: bool = False
    send_at: datetime | None = None  # set only for a message Twilio schedules
    validity_period: int | None = None
    params: dict[str, str | list[str]] = field(default_factory=dict)
    channel: str = "sms"  # or "whatsapp": the channel of To (and From)
    template: Template | None = None  # the Content template (ContentSid) it sends, if any
    content_variables: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """What the recipient gets: the template filled in, else the body."""
        return self.template.render(self.content_variables) if self.template else self.body


def form_to_params(form: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Form pairs as a dict; a repeated name (``MediaUrl``, ``PersistentAction``) becomes a list."""
    params: dict[str, str | list[str]] = {}
    for key, value in form:
        if key in params:
            existing = params[key]
            params[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        elif key in ("MediaUrl", "PersistentAction"):
            params[key] = [value]
        else:
            params[key] = value
    return params


def parse_iso8601(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def valid_callback_url(url: str) -> bool:
    """Twilio's rule for StatusCallback: a full http(s) URL, a hostname without underscores, <= 4000 chars."""
    if len(url) > 4000:
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    hostname = parts.hostname
    return parts.scheme in ("http", "https") and bool(hostname and _HOSTNAME.match(hostname))


def _check_types(params: dict[str, str | list[str]]) -> None:
    """What Twilio's OpenAPI contract rejects: wrong types, formats, enum values and SID patterns."""
    for name, prefix in _SID_PATTERNS.items():
        value = params.get(name)
        if isinstance(value, str) and not re.fullmatch(prefix + r"[0-9a-fA-F]{32}", value):
            if name == "MessagingServiceSid":
                raise TwilioApiError(21701, f"The Messaging Service Sid {value} is invalid.")
            raise invalid_parameter(f"Invalid {name}: {value}")
    for name in _BOOLEANS:
        value = params.get(name)
        if value is not None and value not in ("true", "false"):
            raise invalid_parameter(f"Invalid {name}: {value!r} is not true or false")
    for name in _INTEGERS:
        value = params.get(name)
        if isinstance(value, str) and not _INTEGER.match(value):
            if name == "ValidityPeriod":
                raise TwilioApiError(21624, f"Invalid validity period value: {value}")
            raise invalid_parameter(f"Invalid {name}: {value!r} is not an integer")
    value = params.get("MaxPrice")
    if isinstance(value, str) and not _NUMBER.match(value):
        raise invalid_parameter(f"Invalid MaxPrice: {value!r} is not a number")
    for name, allowed in _ENUMS.items():
        value = params.get(name)
        if value is not None and value not in allowed:
            raise invalid_parameter(f"Invalid {name}: {value!r}; one of {', '.join(allowed)}")
    value = params.get("SendAt")
    if isinstance(value, str) and parse_iso8601(value) is None:
        raise TwilioApiError(35114, f"SendAt {value!r} is not a valid ISO 8601 timestamp")
    callback = params.get("StatusCallback")
    if isinstance(callback, str) and not valid_callback_url(callback):
        raise TwilioApiError(21609, "Invalid 'StatusCallback'")
    for name, value in params.items():
        if isinstance(value, list) and name not in ("MediaUrl", "PersistentAction"):
            raise invalid_parameter(f"{name} was given more than once")


def check_create(form: list[tuple[str, str]], now: datetime) -> CreateRequest:
    """The request Twilio would accept, or :class:`TwilioApiError` with the code Twilio answers."""
    params = form_to_params(form)
    to = params.get("To")
    if not to:
        raise TwilioApiError(21604, "A 'To' phone number is required.")
    _check_types(params)
    template, variables = check_content(params)
    to = str(to)
    sender = params.get("From") or None
    service = params.get("MessagingServiceSid") or None
    body = str(params.get("Body") or "")
    media = list(params.get("MediaUrl") or [])
    if not sender and not service:
        raise TwilioApiError(21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a "
                                    "message")
    if not body and not media and not params.get("ContentSid"):
        raise TwilioApiError(21602, "Message body is required.")
    if params.get("ShortenUrls") == "true" and not service:
        raise invalid_parameter("ShortenUrls requires a MessagingServiceSid (a Messaging Service with Link "
                                "Shortening configured)")
    if len(body) > MAX_BODY_CHARS:
        raise TwilioApiError(21617, "The concatenated message body exceeds the 1600 character limit.")
    if len(media) > MAX_MEDIA:
        raise TwilioApiError(21623, "Number of media files exceeds allowed limit.")
    validity = params.get("ValidityPeriod")
    if validity is not None and not 1 <= int(str(validity)) <= MAX_VALIDITY_PERIOD:
        raise TwilioApiError(21624, f"Invalid validity period value: {validity}")
    channel = channel_of(to)
    if isinstance(sender, str):
        if number_part(sender) in MAGIC_FROM:
            raise TwilioApiError(*MAGIC_FROM[number_part(sender)])
        if not is_valid_sender(sender) or (channel_of(sender) == "whatsapp"
                                           and not is_valid_recipient(sender)):
            raise TwilioApiError(21212, f"Invalid From Number (caller ID): {sender}")
        if channel_of(sender) != channel:
            raise TwilioApiError(21910, "Invalid 'From' and 'To' pair. 'From' and 'To' should be of the same "
                                        "channel")
    if number_part(to) in MAGIC_TO:
        raise TwilioApiError(*MAGIC_TO[number_part(to)])
    if not is_valid_recipient(to):
        raise TwilioApiError(21211, f"Invalid 'To' Phone Number: {to}")
    if sender == to:
        if channel == "whatsapp":
            raise TwilioApiError(63031, "Channels message cannot have same 'From' and 'To'")
        raise TwilioApiError(21266, "'To' and 'From' number cannot be the same")
    send_at = None
    if params.get("ScheduleType") == "fixed" and service:  # without a service Twilio sends at once
        if not params.get("SendAt"):
            raise TwilioApiError(35111, "SendAt timestamp is missing")
        send_at = parse_iso8601(str(params["SendAt"]))
        if send_at is None or not SCHEDULE_MIN <= send_at - now <= SCHEDULE_MAX:
            raise TwilioApiError(35114, "Scheduling does not support this timestamp: SendAt must be between "
                                        "15 minutes and 35 days in the future")
    return CreateRequest(
        to=to, from_=str(sender) if sender else None, messaging_service_sid=str(service) if service else None,
        body=body, media_urls=[str(m) for m in media],
        status_callback=str(params["StatusCallback"]) if params.get("StatusCallback") else None,
        smart_encoded=params.get("SmartEncoded") == "true", shorten_urls=params.get("ShortenUrls") == "true",
        send_at=send_at,
        validity_period=int(str(validity)) if validity is not None else None, params=params,
        channel=channel, template=template, content_variables=variables,
    )

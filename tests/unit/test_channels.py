"""WhatsApp addresses are validated and normalised like SMS numbers, keep their prefix, and a message stays on
one channel; what a rate limit in segments counts for each channel."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.channels import (
    channel_of,
    check_same_channel,
    normalize_address,
    number_part,
)
from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.segments import message_units


@pytest.mark.parametrize(("given", "region", "expected"), [
    ("whatsapp:+14155550123", None, "whatsapp:+14155550123"),
    ("WhatsApp:+1 (415) 555-0123", None, "whatsapp:+14155550123"),
    (" whatsapp: (415) 555-0123 ", "US", "whatsapp:+14155550123"),
    ("whatsapp:+15005550006", None, "whatsapp:+15005550006"),  # Twilio's magic test number
    ("+14155550123", None, "+14155550123"),
])
def test_the_number_part_is_normalised_to_e164_and_the_prefix_kept(given, region, expected):
    assert normalize_address(given, region) == expected
    assert channel_of(expected) == ("whatsapp" if "whatsapp" in expected else "sms")
    assert number_part(expected) == "+14155550123" or expected.endswith("5005550006")


@pytest.mark.parametrize(("given", "sender", "expected"), [
    ("whatsapp:", False, "has no number"),
    ("whatsapp:+1415", False, "not a valid phone number"),
    ("whatsapp:ACME", True, "not a valid phone number"),  # no sender IDs on WhatsApp
    ("whatsapp:12345", True, "not a valid phone number"),  # nor short codes
    ("messenger:1234567890", False, "SMS and WhatsApp only"),
    ("rcs:+14155550188", False, "SMS and WhatsApp only"),
])
def test_bad_addresses_are_refused_naming_the_fix_never_the_number(given, sender, expected):
    with pytest.raises(InvalidMessageError, match=expected) as caught:
        normalize_address(given, sender=sender)
    assert "4155550188" not in str(caught.value)
    assert "whatsapp:+" in str(caught.value)  # the example of what to write


def test_an_sms_sender_stays_an_sms_sender():
    assert normalize_address("ACME", sender=True) == "ACME"
    assert normalize_address("12345", sender=True) == "12345"


def test_one_channel_per_message():
    assert check_same_channel("whatsapp:+14155550123", "whatsapp:+15005550006") == "whatsapp"
    assert check_same_channel("whatsapp:+14155550123", None) == "whatsapp"  # a Messaging Service picks
    assert check_same_channel("+14155550123", "ACME") == "sms"
    with pytest.raises(InvalidMessageError, match="from_='whatsapp:") as caught:
        check_same_channel("whatsapp:+14155550188", "+15005550006")
    assert "whatsapp:***0188" in str(caught.value)
    with pytest.raises(InvalidMessageError, match="write the recipient as whatsapp:"):
        check_same_channel("+14155550188", "whatsapp:+15005550006")


def test_what_a_segments_rate_limit_counts():
    long = "x" * 500
    assert message_units("+14155550123", long) == (4, "GSM-7")
    assert message_units("whatsapp:+14155550123", long) == (1, None)  # WhatsApp: one message
    assert message_units("+14155550123", None, "HX" + "0" * 32) == (1, None)  # template: text not known

"""Numbers become E.164 before anything else happens; what cannot be fixed is refused with the fix."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.phone import is_valid_region, normalize_number


@pytest.mark.parametrize(("value", "region", "expected"), [
    ("+14155550123", None, "+14155550123"),
    ("+1 (415) 555-0123", None, "+14155550123"),
    ("  +1.415.555.0123 ", None, "+14155550123"),
    ("(415) 555-0123", "US", "+14155550123"),
    ("415 555 0123", "us", "+14155550123"),
    ("020 7946 0000", "GB", "+442079460000"),
    ("0491 570 156", "AU", "+61491570156"),
    ("+442079460000", "US", "+442079460000"),  # a leading + wins over default_region
    ("+15005550006", None, "+15005550006"),    # Twilio's magic test numbers
    ("+1 500 555 0004", None, "+15005550004"),
])
def test_numbers_are_normalised_to_e164(value, region, expected):
    assert normalize_number(value, region) == expected


@pytest.mark.parametrize(("value", "region", "hint"), [
    ("2025550147", None, "set default_region on the connection"),
    ("+1202555", None, "E.164 like +14155550123"),
    ("+99912345678", None, "E.164 like +14155550123"),
    ("not a number", "US", "E.164 like +14155550123"),
    ("123", "US", "E.164 like +14155550123"),
])
def test_invalid_numbers_name_the_masked_number_and_the_fix(value, region, hint):
    with pytest.raises(InvalidMessageError, match="is not a valid phone number") as caught:
        normalize_number(value, region)
    message = str(caught.value)
    assert hint in message
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) >= 5:
        assert digits not in message
        assert f"***{digits[-4:]}" in message


def test_default_region_is_only_suggested_when_it_would_help():
    with pytest.raises(InvalidMessageError) as caught:
        normalize_number("555", "US")
    assert "default_region" not in str(caught.value)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_empty_numbers_are_refused(value):
    with pytest.raises(InvalidMessageError, match="empty"):
        normalize_number(value)


def test_channel_addresses_are_refused_without_echoing_the_number():
    with pytest.raises(InvalidMessageError, match="channel address") as caught:
        normalize_number("whatsapp:+12025550147")
    assert "2025550147" not in str(caught.value)


@pytest.mark.parametrize("sender", ["12345", "898211", "ACME", "Acme Shop", "Shop24", "A"])
def test_short_codes_and_alphanumeric_sender_ids_are_accepted_as_senders(sender):
    assert normalize_number(sender, sender=True) == sender


@pytest.mark.parametrize("sender", ["12345", "ACME"])
def test_short_codes_and_sender_ids_are_not_recipients(sender):
    with pytest.raises(InvalidMessageError):
        normalize_number(sender, "US")


@pytest.mark.parametrize("sender", ["TwelveChars1", "ACME-SHOP", "Ünïcode"])
def test_sender_ids_twilio_refuses_are_refused(sender):
    with pytest.raises(InvalidMessageError, match="sender ID of at most 11 characters"):
        normalize_number(sender, sender=True)


def test_a_sender_phone_number_is_normalised_too():
    assert normalize_number("(415) 555-0123", "US", sender=True) == "+14155550123"


def test_regions_are_checked_against_phonenumbers():
    assert is_valid_region("US")
    assert is_valid_region("gb")
    assert is_valid_region(" de ")
    assert not is_valid_region("XX")
    assert not is_valid_region("USA")
    assert not is_valid_region("")

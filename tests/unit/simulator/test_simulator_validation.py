"""What the stand-in accepts and refuses on create, with Twilio's codes, before any HTTP is involved."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_twilio_sms.simulator.errors import TwilioApiError
from airflow_provider_twilio_sms.simulator.magic_numbers import MAGIC_FROM, MAGIC_TO, is_valid_sender
from airflow_provider_twilio_sms.simulator.validation import check_create, form_to_params, valid_callback_url

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
TO, OURS, MG = "+14155550123", "+15005550006", "MG" + "a" * 32


def _code(form) -> int | None:
    pairs = list(form.items()) if isinstance(form, dict) else form
    try:
        check_create(pairs, NOW)
    except TwilioApiError as err:
        refused = err
    else:
        return None
    assert refused.status == 400
    assert refused.body()["more_info"].endswith(str(refused.code))
    return refused.code


@pytest.mark.parametrize(("to", "code"), [(number, code) for number, (code, _) in MAGIC_TO.items()])
def test_magic_to_numbers(to, code):
    assert _code({"To": to, "From": OURS, "Body": "x"}) == code


@pytest.mark.parametrize(("sender", "code"), [(number, code) for number, (code, _) in MAGIC_FROM.items()])
def test_magic_from_numbers(sender, code):
    assert _code({"To": TO, "From": sender, "Body": "x"}) == code


@pytest.mark.parametrize(("form", "code"), [
    ({"To": TO, "From": OURS, "Body": "hi"}, None),
    ({"To": TO, "MessagingServiceSid": MG, "Body": "hi"}, None),
    ({"To": TO, "From": "ACME Corp", "Body": "hi"}, None),  # alphanumeric sender ID
    ({"To": TO, "From": "55555", "Body": "hi"}, None),  # short code
    ({"To": "whatsapp:" + TO, "From": "whatsapp:" + OURS, "Body": "hi"}, None),
    ({"To": TO, "From": OURS, "ContentSid": "HX" + "0" * 31 + "1"}, None),
    ({"To": TO, "From": OURS, "ContentSid": "HX" + "1" * 32}, 21655),  # no such template
    ({"To": TO, "From": OURS, "Body": "x" * 1600}, None),
    ({"To": TO, "From": OURS, "Body": "x", "ValidityPeriod": "36000"}, None),
    ({"From": OURS, "Body": "x"}, 21604),
    ({"To": TO, "Body": "x"}, 21603),
    ({"To": TO, "From": OURS}, 21602),
    ({"To": TO, "From": OURS, "Body": ""}, 21602),
    ({"To": TO, "From": OURS, "Body": "x" * 1601}, 21617),
    ({"To": TO, "From": OURS, "Body": "x", "ValidityPeriod": "36001"}, 21624),
    ({"To": TO, "From": OURS, "Body": "x", "ValidityPeriod": "-1"}, 21624),
    ({"To": "+999123", "From": OURS, "Body": "x"}, 21211),
    ({"To": "+1 415 555 0123", "From": OURS, "Body": "x"}, 21211),
    ({"To": TO, "From": "+1", "Body": "x"}, 21212),
    ({"To": TO, "From": "A name far too long", "Body": "x"}, 21212),
    ({"To": TO, "From": TO, "Body": "x"}, 21266),
    ({"To": TO, "From": OURS, "Body": "x", "StatusCallback": "https://" + "a" * 4000 + ".com/"}, 21609),
    ({"To": TO, "From": OURS, "Body": "x", "ShortenUrls": "yes"}, 20001),
    ({"To": TO, "From": OURS, "Body": "x", "AddressRetention": "keep"}, 20001),
    ([("To", TO), ("To", "+14155550124"), ("From", OURS), ("Body", "x")], 20001),
])
def test_create_rules(form, code):
    assert _code(form) == code


def test_ten_media_urls_are_fine_eleven_are_not():
    base = [("To", TO), ("From", OURS)]
    media = [("MediaUrl", f"https://example.com/{i}.png") for i in range(11)]
    assert _code(base + media[:10]) is None
    assert _code(base + media) == 21623


def test_scheduling_needs_a_messaging_service_and_a_send_time_in_the_window():
    def form(send_at, **extra):
        return {"To": TO, "MessagingServiceSid": MG, "Body": "x", "ScheduleType": "fixed",
                "SendAt": send_at.strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}

    request = check_create(list(form(NOW + timedelta(hours=2)).items()), NOW)
    assert request.send_at == NOW + timedelta(hours=2)
    assert _code(form(NOW + timedelta(minutes=14))) == 35114
    assert _code(form(NOW + timedelta(days=36))) == 35114
    without_service = {**form(NOW + timedelta(hours=2)), "From": OURS}
    without_service.pop("MessagingServiceSid")
    assert check_create(list(without_service.items()), NOW).send_at is None  # Twilio sends it at once


def test_the_accepted_request_carries_what_the_message_needs():
    form = [("To", TO), ("From", OURS), ("Body", "hi"), ("MediaUrl", "https://e.com/a.png"),
            ("StatusCallback", "https://e.com/cb"), ("SmartEncoded", "true"), ("ValidityPeriod", "60")]
    request = check_create(form, NOW)
    assert (request.to, request.from_, request.body) == (TO, OURS, "hi")
    assert request.media_urls == ["https://e.com/a.png"]
    assert request.status_callback == "https://e.com/cb"
    assert request.smart_encoded
    assert request.validity_period == 60


def test_helpers():
    assert form_to_params([("MediaUrl", "a"), ("To", "b")]) == {"MediaUrl": ["a"], "To": "b"}
    assert valid_callback_url("http://127.0.0.1:8080/x?y=1")
    assert not valid_callback_url("http://host:99999/")
    assert is_valid_sender("MyShop")
    assert not is_valid_sender("12")
    assert not is_valid_sender("!!")

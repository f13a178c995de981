"""Checks of a schedule before anything is sent: send_at's forms, Twilio's window with a margin, the
Messaging Service it needs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pendulum
import pytest

from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.scheduling import (
    SCHEDULE_REFUSALS,
    check_window,
    parse_send_at,
    scheduled_sender,
)

NOW = datetime(2026, 12, 5, 9, 0, 0, tzinfo=timezone.utc)
SERVICE = "MG" + "a" * 32


@pytest.mark.parametrize(("given", "expected"), [
    ("2026-12-06T09:00:00Z", datetime(2026, 12, 6, 9, tzinfo=timezone.utc)),
    ("2026-12-06T10:00:00+01:00", datetime(2026, 12, 6, 9, tzinfo=timezone.utc)),
    (" 2026-12-06T09:00:00.5z ", datetime(2026, 12, 6, 9, 0, 0, 500000, tzinfo=timezone.utc)),
    (datetime(2026, 12, 6, 9, tzinfo=timezone.utc), datetime(2026, 12, 6, 9, tzinfo=timezone.utc)),
    (pendulum.datetime(2026, 12, 6, 10, tz="Europe/Paris"), datetime(2026, 12, 6, 9, tzinfo=timezone.utc)),
    (None, None),
    ("", None),
])
def test_send_at_is_an_aware_moment_in_utc(given, expected):
    assert parse_send_at(given) == expected


@pytest.mark.parametrize(("given", "words"), [
    ("2026-12-06T09:00:00", "has no time zone"),
    (datetime(2026, 12, 6, 9), "has no time zone"),
    ("tomorrow at nine", "is not an ISO 8601 moment"),
    (1765011600, "not int"),
])
def test_an_unclear_send_at_is_refused_with_the_fix(given, words):
    with pytest.raises(InvalidMessageError, match=words) as err:
        parse_send_at(given)
    assert "2026-12-24T09:00:00Z" in str(err.value) or "aware datetime" in str(err.value)


@pytest.mark.parametrize(("delta", "ok"), [
    (timedelta(minutes=15), False),  # Twilio's edge: too close once the request travels
    (timedelta(minutes=16) - timedelta(seconds=1), False),
    (timedelta(minutes=16), True),
    (timedelta(days=1), True),
    (timedelta(days=35) - timedelta(minutes=1), True),
    (timedelta(days=35) - timedelta(seconds=59), False),
    (timedelta(days=35), False),
    (-timedelta(hours=1), False),
])
def test_the_window_is_twilios_with_a_minute_of_margin_each_side(delta, ok):
    if ok:
        assert check_window(NOW + delta, NOW) == NOW + delta
    else:
        with pytest.raises(InvalidMessageError, match="Nothing was sent"):
            check_window(NOW + delta, NOW)


def test_the_refusal_says_how_far_ahead_it_was_and_on_which_clock():
    with pytest.raises(InvalidMessageError) as err:
        check_window(NOW + timedelta(minutes=5, seconds=30), NOW)
    text = str(err.value)
    assert "is 5 min 30 s from now (2026-12-05T09:00:00+00:00 on this machine's clock)" in text
    assert "at least 16 min ahead, or leave send_at out to send at once" in text
    with pytest.raises(InvalidMessageError, match=r"is 40 d from now .* at most 35 days ahead"):
        check_window(NOW + timedelta(days=40), NOW)


def test_microseconds_are_dropped_as_twilio_receives_whole_seconds():
    assert check_window(NOW + timedelta(hours=1, microseconds=999999), NOW) == NOW + timedelta(hours=1)


class Settings:
    conn_id = "twilio_sms_default"

    def __init__(self, messaging_service_sid=None, from_number="+15005550006"):
        self.messaging_service_sid, self.from_number = messaging_service_sid, from_number

    def resolve_sender(self, from_, messaging_service_sid):
        return from_, messaging_service_sid


def test_a_messaging_service_is_required_and_the_connections_is_used():
    with pytest.raises(InvalidMessageError, match="send_at needs a Messaging Service") as err:
        scheduled_sender(Settings(), None, None)  # a from_number alone: Twilio would send at once
    assert "connection 'twilio_sms_default'" in str(err.value)
    assert scheduled_sender(Settings(SERVICE), None, None) == (None, SERVICE)
    other = "MG" + "b" * 32
    assert scheduled_sender(Settings(SERVICE), "+15005550006", other) == ("+15005550006", other)


def test_refusal_codes_are_twilios_scheduling_codes_only():
    assert {35111, 35114, 35115, 35118} <= SCHEDULE_REFUSALS
    assert not SCHEDULE_REFUSALS & {21211, 21610, 30409}

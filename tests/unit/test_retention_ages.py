"""Purge ages (``30d``, ``12h``, ``90m``) and ``[twilio_sms] retention_days``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_twilio_sms.errors import ConnectionConfigError
from airflow_provider_twilio_sms.retention import configured_age, format_age, parse_age


@pytest.mark.parametrize(("text", "age"), [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90)),
    (" 7D ", timedelta(days=7)), ("1 h", timedelta(hours=1)),
])
def test_an_age_is_a_whole_number_and_a_unit(text, age):
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["30", "30x", "0d", "-1d", "1.5d", "", "d", "30 days", "1d12h", "9999999d"])
def test_anything_else_is_refused_naming_the_value_and_the_format(text):
    with pytest.raises(ValueError, match="is not an age") as caught:
        parse_age(text)
    assert repr(text) in str(caught.value)
    assert "30d, 12h or 90m" in str(caught.value)


@pytest.mark.parametrize(("age", "text"), [
    (timedelta(days=30), "30d"), (timedelta(hours=36), "36h"), (timedelta(minutes=90), "90m"),
    (timedelta(hours=24), "1d"),
])
def test_an_age_is_shown_in_its_largest_whole_unit(age, text):
    assert format_age(age) == text
    assert parse_age(format_age(age)) == age


def test_the_configured_age_is_retention_days(monkeypatch):
    monkeypatch.delenv("AIRFLOW__TWILIO_SMS__RETENTION_DAYS", raising=False)
    assert configured_age() == timedelta(days=30)
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__RETENTION_DAYS", "90")
    assert configured_age() == timedelta(days=90)


@pytest.mark.parametrize(("value", "problem"), [
    ("0", "0 days keeps nothing"), ("-3", "-3 days keeps nothing"), ("a month", "not a whole number"),
])
def test_a_bad_retention_days_names_the_option_and_the_fix(monkeypatch, value, problem):
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__RETENTION_DAYS", value)
    with pytest.raises(ConnectionConfigError, match="retention_days") as caught:
        configured_age()
    assert problem in str(caught.value)
    assert "AIRFLOW__TWILIO_SMS__RETENTION_DAYS" in str(caught.value)

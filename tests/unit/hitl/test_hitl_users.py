"""Phone number -> Airflow user mappings: validated, normalised to E.164, errors that name the fix."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.hitl.users import HitlUser, admin_users, parse_users


def test_numbers_are_normalised_and_users_read_both_ways():
    users = parse_users({"(415) 555-0101": "alice", "+1 415 555 0102": {"id": 7, "name": "Bob"}}, "US")
    assert users == {"+14155550101": HitlUser("alice", "alice"), "+14155550102": HitlUser("7", "Bob")}


def test_json_text_as_config_options_are_written():
    assert parse_users('{"+14155550101": "alice"}') == {"+14155550101": HitlUser("alice", "alice")}
    assert parse_users("") == {}
    assert parse_users(None) == {}


@pytest.mark.parametrize(("mapping", "message"), [
    ({"not a number": "alice"}, "not a valid phone number"),
    ({"4155550101": "alice"}, "default_region"),
    ({"+14155550101": ""}, "neither an Airflow user id"),
    ({"+14155550101": {"name": "Alice"}}, "neither an Airflow user id"),
    ({"+14155550101": {"id": "a", "role": "admin"}}, "unknown keys"),
    ({"+14155550101": "alice", "+1 (415) 555-0101": "bob"}, "twice"),
    ('{"+14155550101": ', "not valid JSON"),
    (["+14155550101"], "must map phone numbers"),
])
def test_bad_mappings_are_refused_with_the_fix_and_no_number_in_clear(mapping, message):
    with pytest.raises(InvalidMessageError) as err:
        parse_users(mapping, source="users")
    assert message in str(err.value)
    assert "4155550101" not in str(err.value)


def test_the_same_user_written_twice_is_fine():
    assert parse_users({"+14155550101": "alice", "+1 415-555-0101": "alice"}) == {
        "+14155550101": HitlUser("alice", "alice")}


def test_the_admin_mapping_comes_from_the_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__HITL_USERS", '{"+14155550102": "bob"}')
    assert admin_users() == {"+14155550102": HitlUser("bob", "bob")}
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__HITL_USERS", '{"+1415": "bob"}')
    with pytest.raises(InvalidMessageError, match=r"\[twilio_sms\] hitl_users"):
        admin_users()

"""Reply codes: how they look and how a reply names one."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.hitl.codes import ALPHABET, CODE_LENGTH, new_code, split_reply


def test_codes_are_short_random_and_free_of_look_alikes():
    codes = {new_code() for _ in range(500)}
    assert len(codes) > 490
    for code in codes:
        assert len(code) == CODE_LENGTH
        assert set(code) <= set(ALPHABET)
        assert any(c.isdigit() for c in code)
    assert not set("01OIL") & set(ALPHABET)


@pytest.mark.parametrize(("body", "parts"), [
    ("K7QX 1", ("K7QX", "1")),
    ("k7qx approve", ("K7QX", "approve")),
    ("  #K7QX: Reason=Late ", ("K7QX", "Reason=Late")),
    ("abc2 yes", ("ABC2", "yes")),
    ("2345", ("2345", "")),
    ("K7QX", ("K7QX", "")),
    ("K7QX\nline two", ("K7QX", "line two")),
])
def test_a_reply_starts_with_its_code_in_any_case(body, parts):
    assert split_reply(body) == parts


@pytest.mark.parametrize("body", [None, "", "yes", "STOP", "K7QXY 1", "K0QX 1", "1234 1",
                                  "hello there", "WHAT time?", "Test 1"])
def test_other_messages_carry_no_code(body):
    assert split_reply(body) is None

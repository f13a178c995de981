"""Content templates: the SID and variables checked as Twilio checks them, variables sent as canonical
JSON, and the digest of what a message says covering the template and its values."""

from __future__ import annotations

import json

import pytest

from airflow_provider_twilio_sms.content import (
    check_template_message,
    content_digest,
    content_variables_json,
    validate_content_sid,
)
from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.store.claims import body_digest

SID = "HX" + "0123456789abcdef" * 2


def test_a_content_sid_is_hx_and_32_hex():
    assert validate_content_sid(f" {SID} ") == SID
    for bad in ("HX123", "MG" + "0" * 32, "HX" + "g" * 32, "", None):
        with pytest.raises(InvalidMessageError, match="21655"):
            validate_content_sid(bad)


def test_variables_become_canonical_json_of_strings():
    assert content_variables_json({"2": "3pm", "1": "12/1"}) == '{"1":"12/1","2":"3pm"}'
    assert content_variables_json({1: "a"}) == '{"1":"a"}'
    assert content_variables_json('{"name": "Zoë", "order": "42"}') == '{"name":"Zoë","order":"42"}'
    assert content_variables_json(None) is None
    assert content_variables_json({}) is None
    assert json.loads(content_variables_json({f"v{i}": "x" for i in range(100)}))["v99"] == "x"


@pytest.mark.parametrize(("variables", "expected"), [
    ("{not json", "not valid JSON"),
    ('["a"]', "not a mapping"),
    ({"0": "a"}, "positive number"),
    ({"first name": "a"}, "no spaces"),
    ({"x" * 17: "a"}, "at most 16"),
    ({"_x": "a"}, "starting with a letter"),
    ({"1": 5}, "as a string"),
    ({"1": None}, "as a string"),
    ({"1": " "}, "empty"),
    ({"1": "x" * 1601}, "at most 1600"),
    ({f"v{i}": "x" for i in range(101)}, "at most 100"),
])
def test_bad_variables_are_refused_naming_the_key_never_the_value(variables, expected):
    with pytest.raises(InvalidMessageError, match=expected) as caught:
        content_variables_json(variables)
    assert "secret-value" not in str(caught.value)


def test_a_template_goes_without_body_or_media_and_variables_need_a_template():
    check_template_message(SID, '{"1":"a"}', None, [])
    check_template_message(None, None, "hi", [])
    with pytest.raises(InvalidMessageError, match="21654"):
        check_template_message(None, '{"1":"a"}', "hi", [])
    with pytest.raises(InvalidMessageError, match="leave body and media_url out"):
        check_template_message(SID, None, "hi", [])
    with pytest.raises(InvalidMessageError, match="with media_url"):
        check_template_message(SID, None, None, ["https://example.com/a.png"])


def test_the_digest_covers_the_template_and_its_values_and_is_unchanged_for_bodies():
    assert content_digest("hi") == body_digest("hi")
    assert content_digest(None, SID, '{"1":"a"}') != content_digest(None, SID, '{"1":"b"}')
    assert content_digest(None, SID, None) != content_digest(None, "HX" + "1" * 32, None)
    assert content_digest(None, SID, None) != content_digest("")

"""Reading SMS answers to HITL requests, and the instructions the SMS gives."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.hitl.answers import Answer, AnswerError, how_to_answer, parse_answer

APPROVAL = ["Approve", "Reject"]
REGIONS = ["eu", "us", "asia"]
ENTRY = {"reason": {"value": "", "schema": {"type": "string"}},
         "count": {"value": 1, "schema": {"type": "integer"}}}


@pytest.mark.parametrize(("text", "chosen"), [
    ("1", ["Approve"]), ("2", ["Reject"]), ("approve", ["Approve"]), ("REJECT", ["Reject"]),
    ("  Reject  ", ["Reject"]),
])
def test_one_option_by_number_or_name_in_any_case(text, chosen):
    assert parse_answer(text, options=APPROVAL, multiple=False, params=None) == Answer(chosen)


def test_several_options_only_when_the_request_allows_them():
    answer = parse_answer("1, ASIA,1", options=REGIONS, multiple=True, params=None)
    assert answer.chosen_options == ["eu", "asia"]
    with pytest.raises(AnswerError, match="only one"):
        parse_answer("1,2", options=APPROVAL, multiple=False, params=None)


@pytest.mark.parametrize("text", ["", "3", "0", "maybe", "approve please"])
def test_what_names_no_option_is_refused_with_the_choices(text):
    with pytest.raises(AnswerError) as err:
        parse_answer(text, options=APPROVAL, multiple=False, params=None)
    assert "1 Approve, 2 Reject" in str(err.value)


def test_an_option_whose_name_has_a_comma():
    options = ["Yes, ship it", "No"]
    assert parse_answer("yes,  ship it", options=options, multiple=True, params=None).chosen_options == [
        "Yes, ship it"]


def test_entry_fields_are_named_converted_and_defaulted():
    answer = parse_answer("Reason=late shipment; count=3", options=["OK"], multiple=False, params=ENTRY)
    assert answer == Answer(["OK"], {"reason": "late shipment", "count": 3})
    assert parse_answer("reason=x", options=["OK"], multiple=False, params=ENTRY).params_input == {
        "reason": "x", "count": 1}
    on_lines = parse_answer("reason=a\ncount=2", options=["OK"], multiple=False, params=ENTRY)
    assert on_lines.params_input == {"reason": "a", "count": 2}


def test_entry_fields_refusals_say_what_to_send():
    with pytest.raises(AnswerError, match="count must be a whole number"):
        parse_answer("count=many", options=["OK"], multiple=False, params=ENTRY)
    with pytest.raises(AnswerError, match="name=value"):
        parse_answer("just words", options=["OK"], multiple=False, params=ENTRY)
    with pytest.raises(AnswerError, match="Please give reason"):
        parse_answer("", options=["OK"], multiple=False,
                     params={"reason": {"value": None, "schema": {"type": "string"}}})


def test_one_field_takes_the_whole_free_text():
    params = {"note": {"value": None, "schema": {"type": ["null", "string"]}}}
    answer = parse_answer("ship it; then = celebrate", options=["OK"], multiple=False, params=params)
    assert answer.params_input == {"note": "ship it; then = celebrate"}
    assert parse_answer("NOTE=hello", options=["OK"], multiple=False, params=params).params_input == {
        "note": "hello"}


def test_options_and_fields_together():
    params = {"why": {"value": None, "schema": {"type": "string"}},
              "urgent": {"value": False, "schema": {"type": "boolean"}},
              "tags": {"value": None, "schema": {"type": "array"}}}
    answer = parse_answer("2; why=broken build; urgent=yes; tags=a, b", options=APPROVAL, multiple=False,
                          params=params)
    assert answer == Answer(["Reject"], {"why": "broken build", "urgent": True, "tags": ["a", "b"]})
    with pytest.raises(AnswerError, match="choice"):
        parse_answer("", options=APPROVAL, multiple=False, params=params)


def test_the_instructions_name_the_code_and_each_option():
    assert how_to_answer("K7QX", APPROVAL, False, None) == 'Reply "K7QX 1" for Approve, "K7QX 2" for Reject.'
    assert '"K7QX 1,2"' in how_to_answer("K7QX", REGIONS, True, None)
    assert how_to_answer("K7QX", ["OK"], False, ENTRY) == 'Reply "K7QX reason=...; count=...".'
    assert how_to_answer("K7QX", ["OK"], False, {"note": {}}) == 'Reply "K7QX your text".'

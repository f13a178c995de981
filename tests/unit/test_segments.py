"""Segment counting decides what a message costs and how fast it may go: known vectors, both encodings."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.segments import count_segments, validate_message

EMOJI = "\U0001F600"  # outside the BMP: a UTF-16 surrogate pair


@pytest.mark.parametrize(("body", "expected"), [
    ("", (1, "GSM-7")),
    (None, (1, "GSM-7")),
    ("a", (1, "GSM-7")),
    ("a" * 160, (1, "GSM-7")),
    ("a" * 161, (2, "GSM-7")),
    ("a" * 306, (2, "GSM-7")),
    ("a" * 307, (3, "GSM-7")),
    ("a" * 459, (3, "GSM-7")),
    ("a" * 460, (4, "GSM-7")),
    ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\n\r", (1, "GSM-7")),
    ("ж" * 70, (1, "UCS-2")),
    ("ж" * 71, (2, "UCS-2")),
    ("ж" * 134, (2, "UCS-2")),
    ("ж" * 135, (3, "UCS-2")),
])
def test_known_vectors(body, expected):
    assert count_segments(body) == expected


@pytest.mark.parametrize("char", ["€", "{", "}", "[", "]", "~", "\\", "|", "^", "\f"])
def test_extension_characters_count_double_in_gsm(char):
    assert count_segments(char * 80) == (1, "GSM-7")      # 160 septets
    assert count_segments(char * 81) == (2, "GSM-7")      # 162 septets
    assert count_segments("a" * 159 + char) == (2, "GSM-7")


def test_an_escape_pair_is_never_split_across_parts():
    # 152 plain septets, then a 2-septet euro: 154 > 153, so the euro opens part two.
    body = "a" * 152 + "€" + "a" * 152
    # Part 1: 152 (euro does not fit), part 2: euro (2) + 151 = 153, part 3: 1.
    assert count_segments(body) == (3, "GSM-7")
    # Without the split rule it would be 306 septets = 2 parts.
    assert count_segments("a" * 306) == (2, "GSM-7")


def test_one_character_outside_gsm_makes_the_whole_message_ucs2():
    assert count_segments("a" * 69 + "ж") == (1, "UCS-2")
    assert count_segments("a" * 70 + "ж") == (2, "UCS-2")
    assert count_segments("Your code is 123456 " + EMOJI) == (1, "UCS-2")
    assert count_segments("`") == (1, "UCS-2")  # the backtick is not in GSM-7


def test_surrogate_pairs_count_two_code_units_and_are_never_split():
    assert count_segments(EMOJI * 35) == (1, "UCS-2")   # 70 code units
    assert count_segments(EMOJI * 36) == (2, "UCS-2")   # 72 code units
    # 66 units then a pair: 68 > 67, the pair opens part two (66 | 2+...).
    assert count_segments("ж" * 66 + EMOJI + "ж" * 66) == (3, "UCS-2")
    assert count_segments("ж" * 67 + "ж" * 67) == (2, "UCS-2")


def test_validate_message_accepts_the_limits():
    validate_message("a" * 1600)
    validate_message(None, ["https://example.com/a.jpg"])
    validate_message("hi", [f"https://example.com/{i}.jpg" for i in range(10)])


@pytest.mark.parametrize(("body", "media", "needle"), [
    ("a" * 1601, None, "1601 characters"),
    ("hi", [f"https://example.com/{i}.jpg" for i in range(11)], "11 media URLs"),
    (None, None, "no body"),
    ("", [], "no body"),
    ("hi", ["ftp://example.com/a.jpg"], r"not an http\(s\) URL"),
])
def test_validate_message_refuses_what_twilio_refuses(body, media, needle):
    with pytest.raises(InvalidMessageError, match=needle) as caught:
        validate_message(body, media)
    if body:
        assert body not in str(caught.value)  # the body is never quoted back

"""Segment counting as Twilio bills it: the stand-in's own count, independent of the provider's."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.simulator.encoding import GSM7, UCS2, segment_count, smart_encode


@pytest.mark.parametrize(("body", "expected"), [
    ("", (1, GSM7)),
    ("a" * 160, (1, GSM7)), ("a" * 161, (2, GSM7)), ("a" * 306, (2, GSM7)), ("a" * 307, (3, GSM7)),
    ("a" * 1530, (10, GSM7)), ("a" * 1531, (11, GSM7)),
    ("{" * 80, (1, GSM7)),  # extension characters take two septets: 160
    ("{" * 81, (2, GSM7)),
    ("a" * 152 + "€" + "a" * 10, (2, GSM7)),  # the escape pair would straddle septet 153: it moves on
    ("ж" * 70, (1, UCS2)), ("ж" * 71, (2, UCS2)), ("ж" * 134, (2, UCS2)), ("ж" * 135, (3, UCS2)),
    ("a" * 69 + "ж", (1, UCS2)),  # one non-GSM character makes the whole message UCS-2
    ("😀" * 35, (1, UCS2)), ("😀" * 36, (2, UCS2)),  # a surrogate pair counts two code units
    ("a" * 66 + "😀" + "a" * 5, (2, UCS2)),
    ("Ça coûte 5€ à Zürich", (1, UCS2)),  # û is not GSM-7
    ("Ça coute 5€ à Zürich", (1, GSM7)),
])
def test_segments(body, expected):
    assert segment_count(body) == expected


def test_a_surrogate_pair_is_never_split_between_parts():
    # 66 units then a pair: the pair does not fit in the first 67-unit part, so it opens the second
    assert segment_count("a" * 66 + "😀" + "a" * 65)[0] == 2  # 66 | 2 + 65
    assert segment_count("a" * 66 + "😀" + "a" * 66)[0] == 3  # split anywhere else it would fit two parts


def test_smart_encoding_turns_look_alikes_into_gsm7():
    body = "It\u2019s \u201cdone\u201d \u2013 thanks\u2026"
    assert segment_count(body)[1] == UCS2
    assert smart_encode(body) == 'It\'s "done" - thanks...'
    assert segment_count(smart_encode(body))[1] == GSM7

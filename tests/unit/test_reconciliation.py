"""Which of Twilio's messages may be the one an interrupted send created, when its text is not ours."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.reconciliation import may_be_rewritten
from airflow_provider_twilio_sms.simulator.encoding import smart_encode
from airflow_provider_twilio_sms.simulator.messages import shorten_links

OURS = "It\u2019s \u201cdone\u201d \u2014 see https://example.com/a?b=1 \u2026 code 482913"


@pytest.mark.parametrize("theirs", [
    smart_encode(OURS),                                   # Smart Encoding
    shorten_links(OURS),                                  # Link Shortening
    shorten_links(smart_encode(OURS)),                    # both
    smart_encode(OURS) + "\nReply STOP to unsubscribe",   # Advanced Opt-Out's line
    "",                                                   # the body is not shown (redaction)
    None,
])
def test_what_twilio_may_have_made_of_our_text_is_a_candidate(theirs):
    assert may_be_rewritten(OURS, theirs)


@pytest.mark.parametrize("theirs", [
    "It's \"done\" - see https://twil.io/x ... code 482914",  # another code
    "Reminder: your appointment is tomorrow",
    "code 482913",                                          # part of ours only
])
def test_other_words_or_numbers_are_another_message(theirs):
    assert not may_be_rewritten(OURS, theirs)


def test_a_media_only_send_matches_only_exactly():
    assert not may_be_rewritten(None, "anything")
    assert not may_be_rewritten("", "")


def test_a_text_of_only_a_link_may_be_any_message_to_the_number():
    assert may_be_rewritten("https://example.com/x", "Reminder: your appointment is tomorrow")

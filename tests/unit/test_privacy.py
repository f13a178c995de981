"""What reaches a log from a request or a message: masked numbers and SIDs, one clean line."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.privacy import mask_number, mask_sid, safe_for_log


@pytest.mark.parametrize(("number", "masked"), [
    ("+14155550123", "***0123"), ("whatsapp:+447700900123", "whatsapp:***0123"), ("+1234", "***"),
    (None, "<none>")])
def test_numbers_keep_only_their_last_four_digits(number, masked):
    assert mask_number(number) == masked


def test_sids_keep_prefix_and_last_four():
    assert mask_sid("SM" + "0" * 28 + "cdef") == "SM…cdef"
    assert mask_sid("SM\n1") == "SM?1"


@pytest.mark.parametrize("char", ["\n", "\r", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029",
                                  "\u202e", "\u2066"])
def test_request_values_cannot_start_a_new_log_line_or_reorder_it(char):
    forged = f"SM1{char}INFO webhook accepted"
    cleaned = safe_for_log(forged)
    assert char not in cleaned
    assert cleaned == "SM1?INFO webhook accepted"


def test_long_values_are_cut_to_one_short_line():
    assert safe_for_log("x" * 200, limit=10) == "x" * 9 + "…"
    assert safe_for_log("héllo wörld") == "héllo wörld"  # printable non-ASCII is kept

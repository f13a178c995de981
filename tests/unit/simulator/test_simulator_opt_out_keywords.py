"""Inbound keywords and the opt-out list they drive."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.simulator.inbound import (
    OptOutList,
    inbound_params,
    media_content_type,
    opt_out_type,
)


@pytest.mark.parametrize(("body", "kind"), [
    ("STOP", "STOP"), ("stop", "STOP"), ("  StopAll\n", "STOP"), ("UNSUBSCRIBE", "STOP"), ("cancel", "STOP"),
    ("END", "STOP"), ("quit", "STOP"), ("REVOKE", "STOP"), ("optout", "STOP"),
    ("START", "START"), ("Yes", "START"), ("UNSTOP", "START"), ("help", "HELP"), ("INFO", "HELP"),
    ("stop please", None), ("please stop", None), ("yes!", None), ("STOP STOP", None), (None, None),
    ("", None),
])
def test_opt_out_type(body, kind):
    assert opt_out_type(body) == kind


def test_stop_blocks_that_pair_only_and_start_lifts_it():
    book = OptOutList()
    book.apply("STOP", "+1ours", "+1them")
    assert book.blocked("+1ours", "+1them")
    assert not book.blocked("+1other", "+1them")
    assert not book.blocked(None, "+1them")
    book.apply("HELP", "+1ours", "+1them")
    assert book.blocked("+1ours", "+1them")
    book.apply("START", "+1ours", "+1them")
    assert not book.blocked("+1ours", "+1them")
    assert book.list() == []


def test_inbound_params():
    params = inbound_params("MM" + "0" * 32, "AC1", from_="+14155550100", to="+15005550006", body="STOP",
                            media_urls=["https://e.com/x.gif"], num_segments=1, messaging_service_sid=None)
    assert params["OptOutType"] == "STOP"
    assert params["MediaContentType0"] == "image/gif"
    assert params["NumMedia"] == "1"
    assert "MessagingServiceSid" not in params
    assert params["FromCountry"] == "US"
    assert media_content_type("https://e.com/file") == "image/jpeg"

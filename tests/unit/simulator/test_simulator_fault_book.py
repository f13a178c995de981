"""Which requests a fault hits, and how often."""

from __future__ import annotations

import pytest

from airflow_provider_twilio_sms.simulator.faults import FaultBook


def test_scope_count_and_order():
    book = FaultBook()
    book.add("429", to="+1", count=2)
    book.add("503_before", account="AC2", endpoint="any", count=None)
    book.add("slow", endpoint="fetch", delay=0.5)
    assert book.take("create", "AC1", "+2") is None
    assert book.take("create", "AC1", "+1").kind == "429"
    assert book.take("create", "AC2", "+1").kind == "429"  # first added, first served
    assert book.take("create", "AC2", "+1").kind == "503_before"  # the 429 is used up
    assert book.take("list", "AC2", None).kind == "503_before"
    assert book.take("fetch", "AC1", "+1").kind == "slow"
    assert [f["kind"] for f in book.list()] == ["503_before"]
    assert book.list()[0]["hits"] == 2


def test_any_endpoint_remove_and_clear():
    book = FaultBook()
    fault = book.add("reset_before", endpoint="any")
    assert book.take("account", "AC1", None).id == fault.id
    second = book.add("500_after")
    assert book.remove(second.id)
    assert not book.remove(second.id)
    book.add("429", count=None)
    book.clear()
    assert book.list() == []
    assert book.take("create", "AC1", None) is None


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"kind": "404"}, "unknown fault kind '404'"),
    ({"kind": "429", "count": -1}, "count must be a positive integer"),
    ({"kind": "429", "count": True}, "count must be a positive integer"),
    ({"kind": "slow", "delay": 10_000}, "delay must be between 0 and"),
    ({"kind": "429", "retry_after": 1.5}, "retry_after must be a whole number"),
    ({"kind": "429", "endpoint": "Messages"}, "unknown endpoint 'Messages'"),
    ({"kind": "429", "region": "us1"}, r"unknown fault field\(s\): region"),
])
def test_invalid_faults(kwargs, says):
    with pytest.raises(ValueError, match=says):
        FaultBook().add(**kwargs)

"""The timer, the outcome rules and the message book behind statuses that advance over time."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from airflow_provider_twilio_sms.simulator.lifecycle import Lifecycle, Outcome, Scheduler
from airflow_provider_twilio_sms.simulator.messages import MessageBook
from airflow_provider_twilio_sms.simulator.validation import CreateRequest

NOW = datetime(2026, 2, 1, tzinfo=timezone.utc)


def test_the_scheduler_runs_calls_in_due_order_and_survives_a_failing_one():
    scheduler = Scheduler()
    scheduler.start()
    ran, done = [], threading.Event()
    try:
        scheduler.call_later(0.06, lambda: (ran.append("late"), done.set()))
        scheduler.call_later(0.02, lambda: 1 / 0)
        scheduler.call_later(0.01, ran.append, "early")
        assert done.wait(2)
        assert ran == ["early", "late"]
    finally:
        scheduler.stop()


def test_the_scheduler_drops_entries_of_gone_keys_when_it_grows():
    alive = {"keep"}
    scheduler = Scheduler(is_alive=lambda key: key in alive, compact_at=10)
    for i in range(30):
        scheduler.call_later(3600, print, key="keep" if i % 10 == 0 else f"gone{i}")
    assert len(scheduler) <= 12


@pytest.mark.parametrize(("status", "code", "says"), [
    ("lost", None, "outcome status must be one of"),
    ("delivered", 30003, "a delivered message carries no error code"),
    ("undelivered", "30003", "error_code must be an integer"),
])
def test_invalid_outcomes(status, code, says):
    with pytest.raises(ValueError, match=says):
        Outcome(status, code)


def test_outcome_defaults():
    assert Outcome("undelivered").error_code == 30003
    assert Outcome("failed").error_code == 30008


def _request(**kw):
    return CreateRequest(**{"to": "+14155550123", "from_": "+15005550006", "messaging_service_sid": None,
                            "body": "hi", **kw})


def test_status_only_moves_forward_and_terminal_states_stay():
    book = MessageBook()
    sid = book.add_outbound("AC1", _request(), NOW, None)["sid"]
    assert book.advance(sid, "delivered", None, NOW)["status"] == "delivered"
    assert book.advance(sid, "sent", None, NOW)["status"] == "delivered"
    assert book.advance(sid, "undelivered", 30003, NOW)["status"] == "delivered"
    assert book.get(sid)["error_code"] is None
    assert book.get(sid)["date_sent"] is not None
    failed = book.add_outbound("AC1", _request(), NOW, None)["sid"]
    message = book.advance(failed, "failed", 30008, NOW)
    assert (message["status"], message["error_code"], message["date_sent"]) == ("failed", 30008, None)
    assert book.advance("SM" + "0" * 32, "sent", None, NOW) is None


def test_the_book_keeps_the_newest_messages_only():
    book = MessageBook(max_messages=3)
    sids = [book.add_outbound("AC1", _request(), NOW, None)["sid"] for _ in range(5)]
    assert [m.resource["sid"] for m in book.snapshot()] == list(reversed(sids[2:]))
    assert not book.exists(sids[0])
    assert len(book) == 3


def test_a_lifecycle_plays_sent_then_the_outcome():
    book = MessageBook()
    scheduler = Scheduler()
    steps = []
    lifecycle = Lifecycle(scheduler, book.advance,
                          lambda sid, status, code, snapshot: steps.append((status, code)), clock=lambda: NOW)
    lifecycle.status_delay = 0.01
    lifecycle.set_outcome("+14155550123", "undelivered", 30006)
    message = book.add_outbound("AC1", _request(), NOW, None)
    assert lifecycle.plan(message) == [("sent", None), ("undelivered", 30006)]
    scheduler.start()
    try:
        deadline = time.monotonic() + 2
        while len(steps) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        scheduler.stop()
    assert steps == [("sent", None), ("undelivered", 30006)]
    assert book.get(message["sid"])["status"] == "undelivered"

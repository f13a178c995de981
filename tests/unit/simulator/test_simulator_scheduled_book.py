"""The stand-in's held messages: released by the timer at SendAt, once; release and cancel race fairly."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_twilio_sms.simulator.errors import TwilioApiError
from airflow_provider_twilio_sms.simulator.lifecycle import Scheduler
from airflow_provider_twilio_sms.simulator.scheduling import ScheduledMessages, check_update_status

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=timezone.utc)


class Recorder:
    def __init__(self):
        self.steps, self.callbacks, self.started = [], [], []
        self.lock = threading.Lock()

    def advance(self, sid, status, error_code, now):
        with self.lock:
            self.steps.append((sid, status))
        return {"sid": sid, "status": status}

    def on_status(self, sid, status, error_code, snapshot):
        with self.lock:
            self.callbacks.append((sid, status))

    def start(self, snapshot):
        with self.lock:
            self.started.append(snapshot["sid"])


@pytest.fixture
def book():
    scheduler = Scheduler()
    scheduler.start()
    rec = Recorder()
    held = ScheduledMessages(advance=rec.advance, on_status=rec.on_status, start=rec.start,
                             call_later=scheduler.call_later, clock=lambda: NOW, exists=lambda sid: True)
    yield held, rec
    scheduler.stop()


def test_the_timer_releases_a_message_at_its_send_at(book):
    held, rec = book
    held.hold("SM1", NOW + timedelta(seconds=0.15))
    held.hold("SM2", NOW + timedelta(hours=1))
    assert rec.steps == []
    deadline = time.monotonic() + 5
    while not rec.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.steps == [("SM1", "queued")]
    assert rec.callbacks == [("SM1", "queued")]
    assert rec.started == ["SM1"]
    assert [m["sid"] for m in held.held()] == ["SM2"]


def _race(held, sid):
    """Release and cancel ``sid`` at the same moment from two threads; what each got."""
    outcomes = []
    barrier = threading.Barrier(2)

    def release():
        barrier.wait()
        outcomes.append("released" if held.release(sid) else "not released")

    def cancel():
        barrier.wait()
        try:
            held.cancel(sid)
            outcomes.append("canceled")
        except TwilioApiError as err:
            outcomes.append(err.code)

    threads = [threading.Thread(target=release), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_release_and_cancel_race_exactly_one_wins(book):
    held, rec = book
    for round_ in range(50):
        sid = f"SM{round_}"
        held.hold(sid, NOW + timedelta(hours=1))
        outcomes = _race(held, sid)
        assert sorted(map(str, outcomes)) in (["30409", "released"], ["canceled", "not released"])
    assert held.held() == []


def test_only_canceled_is_an_update_status():
    check_update_status("canceled")
    with pytest.raises(TwilioApiError) as err:
        check_update_status("queued")
    assert err.value.code == 20001

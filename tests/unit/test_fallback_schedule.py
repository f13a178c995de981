"""When a status sensor asks Twilio again: due after fallback_after, backing off, bounded, never once done."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_twilio_sms.status_fallback import FallbackSchedule, finishing_statuses

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)
ENDS = finishing_statuses(["delivered"], ["failed", "undelivered"])


def test_not_due_before_fallback_after_then_due_while_nothing_ends_the_wait():
    schedule = FallbackSchedule(T0, ENDS, interval=10, max_interval=60)
    assert not schedule.due("sent", T0 - timedelta(seconds=1))
    assert schedule.due("sent", T0)
    assert schedule.due(None, T0)
    assert schedule.due("queued", T0)
    assert not schedule.due("delivered", T0)
    assert not schedule.due("FAILED", T0)


def test_the_interval_doubles_up_to_the_maximum():
    schedule = FallbackSchedule(T0, ENDS, interval=10, max_interval=60)
    now, gaps = T0, []
    for _ in range(6):
        schedule.asked(now)
        gaps.append((schedule.due_at - now).total_seconds())
        assert not schedule.due("sent", schedule.due_at - timedelta(microseconds=1))
        now = schedule.due_at
    assert gaps == [10, 20, 40, 60, 60, 60]
    assert schedule.asks == 6


@pytest.mark.parametrize(("interval", "maximum"), [(0, 10), (-1, 10), (20, 10)])
def test_intervals_must_make_sense(interval, maximum):
    with pytest.raises(ValueError, match="fallback interval"):
        FallbackSchedule(T0, ENDS, interval=interval, max_interval=maximum)

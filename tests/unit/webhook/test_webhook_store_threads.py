"""The webhook's store threads: at most N calls at once, a call that waits too long for a thread never
starts, and a call that started is always waited for (never left running for an answered request)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from airflow_provider_twilio_sms.webhook.store_threads import StoreThreads, StoreThreadsBusy


def test_a_call_returns_its_result_and_raises_its_error():
    threads = StoreThreads(2)

    def fail():
        raise LookupError("from the store")

    async def main():
        ran_on = await threads.run(lambda: threading.current_thread().name, 5)
        assert ran_on.startswith("twilio-sms-store")
        with pytest.raises(LookupError, match="from the store"):
            await threads.run(fail, 5)

    asyncio.run(main())


def test_no_more_calls_run_at_once_than_threads():
    threads, running, peak, lock = StoreThreads(3), [0], [0], threading.Lock()

    def call():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    async def main():
        await asyncio.gather(*(threads.run(call, 10) for _ in range(12)))

    asyncio.run(main())
    assert peak[0] == 3


def test_a_call_that_waits_too_long_for_a_thread_never_starts():
    threads, release, started = StoreThreads(1), threading.Event(), []

    async def main():
        busy = asyncio.ensure_future(threads.run(lambda: release.wait(10), 10))
        await asyncio.sleep(0.05)
        begun = time.monotonic()
        with pytest.raises(StoreThreadsBusy, match="1 threads, all busy"):
            await threads.run(lambda: started.append(True), 0.2)
        waited = time.monotonic() - begun
        release.set()
        await busy
        await threads.run(lambda: None, 1)  # the thread is free again; the cancelled call still never ran
        return waited

    waited = asyncio.run(main())
    assert 0.2 <= waited < 2
    assert started == []
    assert isinstance(StoreThreadsBusy("x"), TimeoutError)  # the receiver answers 503 for it


def test_a_started_call_is_waited_for_even_when_the_request_is_cancelled():
    threads, finished = StoreThreads(1), []

    def slow():
        time.sleep(0.3)
        finished.append(time.monotonic())

    async def main():
        task = asyncio.ensure_future(threads.run(slow, 5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    cancelled_at = asyncio.run(main())
    assert len(finished) == 1
    assert finished[0] <= cancelled_at  # the task ended only after the call had returned


def test_at_least_one_thread():
    with pytest.raises(ValueError, match="at least one thread"):
        StoreThreads(0)

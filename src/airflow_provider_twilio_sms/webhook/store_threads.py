"""The worker threads the webhook's store calls run on, at most as many as the store keeps connections.

A store call blocks (the database driver), so the event loop hands it to a thread and awaits its result.
This is on every callback's path, so it is kept to one ``ThreadPoolExecutor.submit`` and one wake-up of
the loop when the result is there: anyio's ``to_thread.run_sync`` with a ``CapacityLimiter`` and a cancel
scope cost four times as much of the event loop's time per call, and the event loop is what a webhook
server runs out of first.

Two rules, as before:

- a call that waited for a thread longer than ``wait_seconds`` (every thread busy on a database that
  hangs) never starts: :class:`StoreThreadsBusy`, so the request is answered and Twilio retries;
- a call that started is always waited for, even when the awaiting task is cancelled: a thread is never
  left working for a request that was answered (the store's own deadline, :mod:`..store.deadline`, ends
  it). Otherwise every new request on a hung database would start another thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class StoreThreadsBusy(TimeoutError):
    """Every store thread stayed busy for as long as the call could wait: it was not started."""


class StoreThreads:
    """At most ``size`` threads running store calls; see the module docstring."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"store calls need at least one thread, not {size!r}")
        self.size = size
        self._pid = os.getpid()
        self._executor = self._new_executor()

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="twilio-sms-store")

    async def run(self, call: Callable[[], T], wait_seconds: float) -> T:
        """``call()`` on one of the threads; raises what it raised, or :class:`StoreThreadsBusy` when no
        thread took it within ``wait_seconds``.
        """
        if self._pid != os.getpid():  # a forked child: the parent's threads are not here
            self._pid, self._executor = os.getpid(), self._new_executor()
        return await wait_for_job(self._executor.submit(call), wait_seconds,
                                  f"no store thread was free within {wait_seconds:g} s "
                                  f"({self.size} threads, all busy)")


async def wait_for_job(job: Future[T], wait_seconds: float, busy: str) -> T:
    """The outcome of ``job``, a call handed to a thread: raises what it raised, or
    :class:`StoreThreadsBusy` (with the message ``busy``) when it had not started within ``wait_seconds``
    (it is then cancelled and never runs). A job that started is waited for, even when the awaiting task is
    cancelled (see :func:`_outcome`).
    """
    gave_up: list[bool] = []

    def give_up() -> None:
        if job.cancel():  # only a call that has not started
            gave_up.append(True)

    timer = asyncio.get_running_loop().call_later(wait_seconds, give_up)
    try:
        return await _outcome(job)
    except asyncio.CancelledError:
        if gave_up:
            raise StoreThreadsBusy(busy) from None
        raise
    finally:
        timer.cancel()


async def _outcome(job: Future[T]) -> T:
    """The job's result. When the awaiting task is cancelled while the job runs, the job is waited for
    first (cancellation only reaches a job that has not started), and the cancellation passed on after.
    """
    waiter = asyncio.wrap_future(job)
    try:
        return await waiter
    except asyncio.CancelledError:
        if job.cancelled():
            raise
        while not job.done():
            try:
                await asyncio.wrap_future(job)
            except asyncio.CancelledError:
                continue
            except Exception:  # noqa: BLE001 - the call's own failure: the cancellation wins
                break
        raise

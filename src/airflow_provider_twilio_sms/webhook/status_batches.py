"""Group commit of status callbacks: one writer thread per store writes the callbacks that arrived while it
was busy in one transaction (:meth:`SmsStore.record_status_events`).

SQLite has one writer at a time anyway: on the store's threads (:mod:`.store_threads`) every callback
queued on the write lock, and each paid a transaction and a turn of the lock of its own, plus the thread
hand-offs around it. Here the callbacks queue in memory instead, and the writer takes every one waiting
(up to :data:`MAX_BATCH`) in one transaction, so the cost of a transaction is shared by a batch that grows
with the load.

What does not change, callback by callback:

- each is stored, deduplicated and applied exactly as :meth:`SmsStore.record_status_event` does it, in the
  order the callbacks were queued, and its request is answered only once its transaction committed (never
  200 before the commit: the answer waits for the batch);
- each keeps its own deadline (``[twilio_sms] webhook_store_deadline_seconds``, counted from when it was
  queued): one still queued when it passes is never written and its request gets 503, as when every store
  thread stays busy; the batch's transaction runs within the earliest deadline of its callbacks;
- a batch that fails is written again one callback at a time, each within its own deadline, so one bad
  callback (a value too long, a constraint) fails only itself;
- a request whose task is cancelled while its callback is queued withdraws it; once its batch started, the
  batch is waited for (nothing keeps running for a request that was answered).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.store.deadline import StoreDeadlineExceeded, deadline
from airflow_provider_twilio_sms.webhook.store_threads import wait_for_job

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.store.api import SmsStore

log = logging.getLogger(__name__)
# Callbacks per transaction at most: enough to share a commit among every request a server has in
# flight, small enough that one transaction stays short (a few ms on SQLite).
MAX_BATCH = 64
_starting = threading.Lock()


def _after_fork_in_child() -> None:
    global _starting
    _starting = threading.Lock()  # another thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Callback:
    __slots__ = ("ends", "job", "kwargs")

    def __init__(self, kwargs: Mapping[str, Any], ends: float):
        self.kwargs, self.ends = kwargs, ends
        self.job: Future[bool] = Future()


class StatusBatches:
    """The writer thread of one webhook app's store, and the callbacks waiting for it.

    ``open_store`` returns the store to write to (opened on first use; it may change between batches, e.g.
    when the app is pointed at another store). The thread is started by the first callback, and again in a
    forked child (the parent's is not there).
    """

    def __init__(self, open_store: Callable[[], SmsStore], max_batch: int = MAX_BATCH):
        if max_batch < 1:
            raise ValueError(f"a batch holds at least one callback, not {max_batch!r}")
        self._open_store, self.max_batch = open_store, max_batch
        self._pid: int | None = None
        self._queue: deque[_Callback] = deque()
        self._ready = threading.Condition()

    async def record(self, kwargs: Mapping[str, Any], seconds: float) -> bool:
        """Store one status callback (:meth:`SmsStore.record_status_event`'s keyword arguments) within
        ``seconds``; True: stored, False: a duplicate. Raises what its write raised, or a TimeoutError
        (:class:`StoreDeadlineExceeded`, :class:`.StoreThreadsBusy`) past the deadline.
        """
        callback = _Callback(kwargs, time.monotonic() + seconds)
        queue, ready = self._writer()
        with ready:
            queue.append(callback)
            ready.notify()
        # The margin lets the writer report the deadline itself; the wait only ends a callback never taken.
        return await wait_for_job(callback.job, seconds + 1,
                                  f"the status writer did not take the callback within {seconds:g} s")

    def _writer(self) -> tuple[deque[_Callback], threading.Condition]:
        """The writer's queue and condition, its thread started on first use and in a forked child."""
        if self._pid != os.getpid():
            with _starting:
                if self._pid != os.getpid():
                    queue, ready = deque[_Callback](), threading.Condition()
                    threading.Thread(target=self._run, args=(queue, ready), daemon=True,
                                     name="twilio-sms-status-writer").start()
                    self._queue, self._ready, self._pid = queue, ready, os.getpid()
        return self._queue, self._ready

    def _run(self, queue: deque[_Callback], ready: threading.Condition) -> None:
        while True:
            with ready:
                while not queue:
                    ready.wait()
                taken = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
            batch = [c for c in taken if c.job.set_running_or_notify_cancel()]  # withdrawn ones skipped
            try:
                self._write(batch)
            except BaseException as err:  # never leave a request without its answer
                for callback in batch:
                    if not callback.job.done():
                        callback.job.set_exception(err)
                log.exception("The status writer failed; it goes on with the next batch")

    def _write(self, batch: list[_Callback]) -> None:
        now = time.monotonic()
        live = []
        for callback in batch:
            if callback.ends <= now:
                callback.job.set_exception(StoreDeadlineExceeded(
                    "the store's deadline passed while the callback waited for the status writer"))
            else:
                live.append(callback)
        if len(live) > 1:
            try:
                with deadline(min(c.ends for c in live) - now):
                    stored = self._open_store().record_status_events([c.kwargs for c in live])
            except Exception as err:  # noqa: BLE001 - written again one by one: each gets its own outcome
                log.warning("A batch of %d status callbacks failed (%s); writing them one at a time",
                            len(live), type(err).__name__)
            else:
                for callback, outcome in zip(live, stored, strict=True):
                    callback.job.set_result(outcome)
                return
        for callback in live:
            try:
                with deadline(callback.ends - time.monotonic()):
                    callback.job.set_result(self._open_store().record_status_event(**callback.kwargs))
            except Exception as err:  # noqa: BLE001 - this callback's outcome: its request answers 503
                callback.job.set_exception(err)

"""The webhook app factory: one FastAPI app, mounted in the api-server or served on its own.

Building the app opens no database and reads no connection: the store and each connection's settings
are resolved by the first request that needs them (the plugin builds the app inside the api-server
only, and only when ``[twilio_sms] webhook_enabled`` is true).

- ``mode="api-server"``: routes at ``/webhooks/...``, ``/api/...`` and the "Twilio SMS" page at
  ``/ui/``, for the plugin to mount at ``/twilio_sms``. The read API uses Airflow's authentication. The
  store is the store connection, else Airflow's metadata database (where ``airflow db migrate`` created
  the tables).
- ``mode="standalone"``: the same routes at ``/twilio_sms`` (their documentation at
  ``/twilio_sms/docs``), so the public URLs are the same either way. The read API wants
  ``[twilio_sms] webhook_api_token``. The store is ``store_url``, else the store connection (never guessed
  from Airflow's own database setting).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from fastapi import FastAPI

from airflow_provider_twilio_sms import __version__, config
from airflow_provider_twilio_sms.store.deadline import deadline
from airflow_provider_twilio_sms.webhook.connections import ConnectionCache
from airflow_provider_twilio_sms.webhook.urls import URL_PREFIX

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.webhook.status_batches import StatusBatches
    from airflow_provider_twilio_sms.webhook.store_threads import StoreThreads

log = logging.getLogger(__name__)
T = TypeVar("T")
MODES = ("api-server", "standalone")
DEFAULT_MAX_BODY_BYTES = 65_536
DEFAULT_STORE_DEADLINE_SECONDS = 10.0
# Twilio gives up after 15 s: a longer deadline would only turn a 503 that Twilio retries into a timeout.
MAX_STORE_DEADLINE_SECONDS = 14.0
# Stores whose status callbacks are written in batches by one writer thread (:mod:`.status_batches`).
BATCHED_DIALECTS = frozenset({"sqlite"})


class AppState:
    """What the routes share: the mode, the body cap, the connection cache and the lazily opened store."""

    def __init__(self, mode: str, store_url: str | None, max_body_bytes: int,
                 store_deadline_seconds: float = DEFAULT_STORE_DEADLINE_SECONDS):
        self.mode, self.store_url, self.max_body_bytes = mode, store_url, max_body_bytes
        self.store_deadline_seconds = store_deadline_seconds
        self.connections = ConnectionCache()
        self._store: SmsStore | None = None
        self._lock = threading.Lock()
        self._store_threads: StoreThreads | None = None
        self._status_batches: StatusBatches | None = None

    def store_threads(self) -> StoreThreads:
        """The threads store calls run on: as many as a PostgreSQL store keeps connections in its pool
        (``POOL_SIZE``), so that a steady stream of calls never opens (and closes) a connection beyond those.
        (SQLite writers queue on one lock before they take a connection.) Made on first use.
        """
        if self._store_threads is None:
            from airflow_provider_twilio_sms.store.engine import POOL_SIZE
            from airflow_provider_twilio_sms.webhook.store_threads import StoreThreads

            with self._lock:
                if self._store_threads is None:
                    self._store_threads = StoreThreads(POOL_SIZE)
        return self._store_threads

    def store(self) -> SmsStore:
        """The store, opened on first use; a failure is not cached, the next request tries again."""
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    from airflow_provider_twilio_sms.store.locate import get_store

                    self._store = get_store(url=self.store_url, allow_metadata_db=self.mode == "api-server")
                store = self._store
        return store

    async def run_store_call(self, call: Callable[[SmsStore], T]) -> T:
        """``call(store)`` in a worker thread, within ``store_deadline_seconds`` (opening the store included).

        The deadline is enforced inside the store (:mod:`..store.deadline`): past it the call's connection
        is interrupted and the thread returns, so the thread is waited for, never abandoned (a thread left
        blocked on a hung database holds on, and every later request would start another). Store calls run
        on at most as many threads as the store keeps connections (:meth:`store_threads`); requests beyond
        wait for one, up to the same deadline. Raises what the call raised; TimeoutError
        (StoreDeadlineExceeded, StoreThreadsBusy) past the deadline.
        """
        seconds = self.store_deadline_seconds
        ends = time.monotonic() + seconds

        def run() -> T:
            with deadline(ends - time.monotonic()):
                return call(self.store())

        # The margin lets the store report its own deadline; the wait only ends a call that never started.
        return await self.store_threads().run(run, seconds + 1)

    async def record_status(self, **callback) -> bool:
        """Store one status callback (:meth:`SmsStore.record_status_event`'s arguments) within
        ``store_deadline_seconds``, as :meth:`run_store_call` would; on a store of :data:`BATCHED_DIALECTS`
        once it is open, in a batch with the callbacks arriving meanwhile (:mod:`.status_batches`).
        """
        store = self._store
        if store is None or getattr(store, "dialect", None) not in BATCHED_DIALECTS:
            return await self.run_store_call(lambda opened: opened.record_status_event(**callback))
        if self._status_batches is None:
            from airflow_provider_twilio_sms.webhook.status_batches import StatusBatches

            with self._lock:
                if self._status_batches is None:
                    self._status_batches = StatusBatches(self.store)
        return await self._status_batches.record(callback, self.store_deadline_seconds)

    def use_store(self, store: SmsStore) -> None:
        """Write to ``store`` from now on (the CLI opens it before serving)."""
        with self._lock:
            self._store = store

    def reset(self) -> None:
        """Forget the store and the cached connections (they are looked up again on the next request)."""
        with self._lock:
            self._store = None
        self.connections.clear()


def _max_body_bytes() -> int:
    try:
        value = config.get_int("webhook_max_body_bytes")
    except ValueError as err:  # a bad option must not stop the api-server from starting
        log.error("%s; using %d", err, DEFAULT_MAX_BODY_BYTES)
        return DEFAULT_MAX_BODY_BYTES
    if value < 1024:
        log.error("[twilio_sms] webhook_max_body_bytes = %d is too small for a Twilio webhook; using %d",
                  value, DEFAULT_MAX_BODY_BYTES)
        return DEFAULT_MAX_BODY_BYTES
    return value


def _store_deadline_seconds() -> float:
    try:
        value = config.get_float("webhook_store_deadline_seconds", minimum=0.1)
    except ValueError as err:  # a bad option must not stop the api-server from starting
        log.error("%s; using %g", err, DEFAULT_STORE_DEADLINE_SECONDS)
        return DEFAULT_STORE_DEADLINE_SECONDS
    if value > MAX_STORE_DEADLINE_SECONDS:
        log.error("[twilio_sms] webhook_store_deadline_seconds = %g is longer than Twilio waits for an "
                  "answer (15 s); using %g", value, MAX_STORE_DEADLINE_SECONDS)
        return MAX_STORE_DEADLINE_SECONDS
    return value


def create_app(mode: str = "api-server", store_url: str | None = None) -> FastAPI:
    """The webhook routes and the read API; see the module docstring for the two modes."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'api-server' or 'standalone', not {mode!r}")
    from airflow_provider_twilio_sms.webhook.auth import viewer_for
    from airflow_provider_twilio_sms.webhook.read_api import build_router
    from airflow_provider_twilio_sms.webhook.receiver import router as webhook_router

    state = AppState(mode, store_url, _max_body_bytes(), _store_deadline_seconds())
    # Standalone: the routes at URL_PREFIX of this one app, rather than this app mounted there in a root app
    # (a second middleware stack and a Mount on every callback's path).
    prefix = URL_PREFIX if mode == "standalone" else ""
    app = FastAPI(title="Twilio SMS webhooks", version=__version__,
                  description="Twilio status callbacks and inbound SMS, signature-verified and stored; "
                              "a read API on the stored messages.",
                  openapi_url=f"{prefix}/openapi.json", docs_url=f"{prefix}/docs",
                  redoc_url=f"{prefix}/redoc")
    app.state.twilio_sms = state
    app.include_router(webhook_router, prefix=prefix)
    app.include_router(build_router(viewer_for(mode)), prefix=prefix)
    if mode == "api-server":
        from airflow_provider_twilio_sms.webhook.ui import build_router as build_ui_router

        app.include_router(build_ui_router())  # the page signs in with Airflow's session cookie
    return app

"""The webhook app factory: one FastAPI app, mounted in the api-server or served on its own.

Building the app opens no database and reads no connection: the store and each connection's settings
are resolved by the first request that needs them (the plugin builds the app inside the api-server
only, and only when ``[twilio_sms] webhook_enabled`` is true).

- ``mode="api-server"``: routes at ``/webhooks/...``, ``/api/...`` and the "Twilio SMS" page at
  ``/ui/``, for the plugin to mount at ``/twilio_sms``. The read API uses Airflow's authentication. The
  store is the store connection, else Airflow's metadata database (where ``airflow db migrate`` created
  the tables).
- ``mode="standalone"``: the same app mounted at ``/twilio_sms`` of a bare root app, so the public URLs
  are the same either way. The read API wants ``[twilio_sms] webhook_api_token``. The store is
  ``store_url``, else the store connection (never guessed from Airflow's own database setting).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from fastapi import FastAPI

from airflow_provider_twilio_sms import __version__, config
from airflow_provider_twilio_sms.webhook.connections import ConnectionCache

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.store.api import SmsStore

log = logging.getLogger(__name__)
URL_PREFIX = "/twilio_sms"
MODES = ("api-server", "standalone")
DEFAULT_MAX_BODY_BYTES = 65_536


class AppState:
    """What the routes share: the mode, the body cap, the connection cache and the lazily opened store."""

    def __init__(self, mode: str, store_url: str | None, max_body_bytes: int):
        self.mode, self.store_url, self.max_body_bytes = mode, store_url, max_body_bytes
        self.connections = ConnectionCache()
        self._store: SmsStore | None = None
        self._lock = threading.Lock()

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


def create_app(mode: str = "api-server", store_url: str | None = None) -> FastAPI:
    """The webhook routes and the read API; see the module docstring for the two modes."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'api-server' or 'standalone', not {mode!r}")
    from airflow_provider_twilio_sms.webhook.auth import viewer_for
    from airflow_provider_twilio_sms.webhook.read_api import build_router
    from airflow_provider_twilio_sms.webhook.receiver import router as webhook_router

    state = AppState(mode, store_url, _max_body_bytes())
    app = FastAPI(title="Twilio SMS webhooks", version=__version__,
                  description="Twilio status callbacks and inbound SMS, signature-verified and stored; "
                              "a read API on the stored messages.")
    app.state.twilio_sms = state
    app.include_router(webhook_router)
    app.include_router(build_router(viewer_for(mode)))
    if mode == "api-server":
        from airflow_provider_twilio_sms.webhook.ui import build_router as build_ui_router

        app.include_router(build_ui_router())  # the page signs in with Airflow's session cookie
        return app
    root = FastAPI(title="Twilio SMS webhooks (standalone)", version=__version__, docs_url=None,
                   redoc_url=None, openapi_url=None)
    root.state.twilio_sms = state
    root.mount(URL_PREFIX, app)
    return root

"""The webhook app factory: one FastAPI app, mounted in the api-server or served on its own.

Building the app touches no database and reads no connection: the store and each connection's
settings are resolved at the first request that needs them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI

from airflow_provider_twilio_sms import __version__, config
from airflow_provider_twilio_sms.webhook.verification import SettingsCache

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.store.api import SmsStore

URL_PREFIX = "/twilio_sms"


@dataclass
class AppState:
    mode: str
    store_url: str | None
    max_body_bytes: int
    settings: SettingsCache = field(default_factory=SettingsCache)
    _store: SmsStore | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def store(self) -> SmsStore:
        """The store, opened on first use: an explicit URL, else the store connection, else Airflow's DB."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from airflow_provider_twilio_sms.store.locate import get_store

                    self._store = get_store(url=self.store_url, allow_metadata_db=True)
        return self._store


def create_app(mode: str = "api-server", store_url: str | None = None) -> FastAPI:
    """The app with the webhook routes and the read API.

    ``mode="api-server"``: routes at ``/webhooks/...`` and ``/api/...``, for the plugin to mount at
    ``/twilio_sms``; the read API uses Airflow's authentication. ``mode="standalone"``: the same app
    mounted under ``/twilio_sms`` of a bare app (so public URLs are the same either way); the read
    API wants ``[twilio_sms] webhook_api_token``.
    """
    if mode not in ("api-server", "standalone"):
        raise ValueError(f"mode must be 'api-server' or 'standalone', not {mode!r}")
    from airflow_provider_twilio_sms.webhook.read_api import router as read_router
    from airflow_provider_twilio_sms.webhook.receiver import router as webhook_router

    app = FastAPI(title="Twilio SMS webhooks", version=__version__,
                  description="Twilio status callbacks and inbound SMS, verified and stored; a read API.")
    app.state.twilio_sms = AppState(mode=mode, store_url=store_url,
                                    max_body_bytes=config.get_int("webhook_max_body_bytes"))
    app.include_router(webhook_router)
    app.include_router(read_router)
    if mode == "api-server":
        return app
    root = FastAPI(title="Twilio SMS webhooks (standalone)", version=__version__, docs_url=None, redoc_url=None)
    root.state.twilio_sms = app.state.twilio_sms
    root.mount(URL_PREFIX, app)
    return root

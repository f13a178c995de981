"""The Airflow plugin: mounts the webhook app at ``/twilio_sms`` inside the api-server.

Every Airflow component imports plugins, workers included, so nothing is built here at import time:
``fastapi_apps`` is computed on first access, which only the api-server (and ``airflow plugins``)
makes. ``[twilio_sms] webhook_enabled = False`` leaves the api-server untouched.
"""

from __future__ import annotations

from functools import cached_property

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/twilio_sms"


class TwilioSmsPlugin(AirflowPlugin):
    """Twilio SMS: webhook receiver and read API, mounted in the api-server."""

    name = "twilio_sms"

    @cached_property
    def fastapi_apps(self) -> list[dict]:  # type: ignore[override]
        from airflow_provider_twilio_sms import config

        if not config.get_bool("webhook_enabled"):
            return []
        from airflow_provider_twilio_sms.webhook.app import create_app

        return [{"app": create_app(mode="api-server"), "url_prefix": URL_PREFIX, "name": "Twilio SMS webhooks"}]

"""The Airflow plugin: mounts the webhook app at ``/twilio_sms`` inside the api-server, and adds the
"Twilio SMS" page to Airflow's UI (Browse menu) as an external view of ``/twilio_sms/ui/``.

Every Airflow component imports plugins, workers included, so nothing is built here at import time:
``fastapi_apps`` and ``external_views`` are computed on first access, which only the api-server (and
``airflow plugins``) makes. ``[twilio_sms] webhook_enabled = False`` leaves the api-server and the UI
untouched.
"""

from __future__ import annotations

from functools import cached_property

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_twilio_sms import scheduled_marks

UI_ROUTE = "twilio_sms"  # the page's address in Airflow's UI: /plugin/twilio_sms


def _enabled() -> bool:
    from airflow_provider_twilio_sms import config

    return config.get_bool("webhook_enabled")


def _base_path() -> str:
    """The path Airflow is served under (``[api] base_url``), so the page's URL works behind a prefix."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class TwilioSmsPlugin(AirflowPlugin):
    """Twilio SMS: webhook receiver, read API and the messages page, in the api-server; scheduled messages
    canceled when a person marks their run or task failed.
    """

    name = "twilio_sms"
    # Marks as failed in the UI cancel what the run still has scheduled (read scheduled_marks.py).
    listeners = [scheduled_marks]

    @cached_property
    def fastapi_apps(self) -> list[dict]:  # type: ignore[override]
        if not _enabled():
            return []
        from airflow_provider_twilio_sms.webhook.app import create_app
        from airflow_provider_twilio_sms.webhook.urls import URL_PREFIX

        return [{"app": create_app(mode="api-server"), "url_prefix": URL_PREFIX,
                 "name": "Twilio SMS webhooks"}]

    @cached_property
    def external_views(self) -> list[dict]:  # type: ignore[override]
        if not _enabled():
            return []
        from airflow_provider_twilio_sms.webhook.urls import URL_PREFIX

        return [{
            "name": "Twilio SMS",
            "href": f"{_base_path()}{URL_PREFIX}/ui/",
            "url_route": UI_ROUTE,
            "destination": "nav",
            "category": "browse",
        }]

"""The plugin's "Twilio SMS" page entry: in Airflow's Browse menu at /plugin/twilio_sms, following the path
Airflow is served under, and absent when the webhook app is switched off (the page would not exist)."""

from __future__ import annotations

from airflow_provider_twilio_sms.plugins.twilio_sms import TwilioSmsPlugin


def test_the_page_is_a_browse_menu_view_of_the_mounted_app(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://localhost:8080")
    [view] = TwilioSmsPlugin().external_views
    assert view == {"name": "Twilio SMS", "href": "/twilio_sms/ui/", "url_route": "twilio_sms",
                    "destination": "nav", "category": "browse"}


def test_the_page_follows_airflow_behind_a_path_prefix(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://example.com/airflow/")
    assert TwilioSmsPlugin().external_views[0]["href"] == "/airflow/twilio_sms/ui/"


def test_no_page_and_no_app_when_the_webhook_app_is_off(monkeypatch):
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__WEBHOOK_ENABLED", "False")
    plugin = TwilioSmsPlugin()
    assert plugin.external_views == []
    assert plugin.fastapi_apps == []

"""Airflow 3.3 knows the package: provider discovery, CLI, db migrate (SQLite and PostgreSQL), UI metadata."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, inspect, text

from airflow_provider_twilio_sms.store.migrate import VERSION_TABLE, head_revision

from conftest import _create_pg_database, _drop_pg_database, run_airflow

TABLES = {"twilio_sms_message", "twilio_sms_event", "twilio_sms_opt_out", "twilio_sms_rate_pool",
          "twilio_sms_rate_slot"}


def _tables_and_version(url: str) -> tuple[set[str], list]:
    engine = create_engine(url)
    try:
        names = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        return names, versions
    finally:
        engine.dispose()


def test_providers_list_shows_the_package(airflow_home):
    result = run_airflow(["providers", "list", "-o", "plain"], airflow_home)
    assert result.returncode == 0, result.stderr
    assert "airflow-provider-twilio-sms" in result.stdout


@pytest.mark.parametrize("lazy_discover_providers", ["True", "False"])
def test_the_plugin_is_registered_once(airflow_home, lazy_discover_providers):
    """``airflow plugins --verbose`` (logs shown) loads the plugin once and warns of no duplicate, whether or
    not Airflow also reads the provider info's plugins (``[core] lazy_discover_providers``)."""
    env = {**airflow_home, "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": lazy_discover_providers}
    result = run_airflow(["plugins", "--verbose", "-o", "json"], env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "already registered" not in output, output[-3000:]
    (listing,) = [line for line in result.stdout.splitlines() if line.startswith("[{")]
    assert [p["name"] for p in json.loads(listing)].count("twilio_sms") == 1


def test_cli_group_is_registered(airflow_home):
    result = run_airflow(["twilio-sms", "--help"], airflow_home)
    assert result.returncode == 0, result.stderr
    for command in ("generate-key", "encrypt", "rotate-keys", "db", "simulator", "webhook", "forget"):
        assert command in result.stdout


def test_db_migrate_on_sqlite_creates_our_tables_once(airflow_home):
    url = airflow_home["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    names, versions = _tables_and_version(url)
    assert names >= TABLES
    assert VERSION_TABLE in names
    assert versions == [head_revision()]
    again = run_airflow(["db", "migrate"], airflow_home)
    assert again.returncode == 0, again.stderr
    assert "Migrated the twilio_sms tables" not in again.stdout + again.stderr
    assert _tables_and_version(url) == (names, versions)


def test_db_migrate_on_postgresql_creates_our_tables_once(airflow_home, pg_server_url):
    url = _create_pg_database(pg_server_url)
    try:
        env = {**airflow_home, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}
        first = run_airflow(["db", "migrate"], env, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        names, versions = _tables_and_version(url)
        assert names >= TABLES
        assert versions == [head_revision()]
        second = run_airflow(["db", "migrate"], env, timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "Migrated the twilio_sms tables" not in second.stdout + second.stderr
        assert _tables_and_version(url) == (names, versions)
    finally:
        _drop_pg_database(pg_server_url, url)


def test_twilio_sms_db_migrate_and_check_on_a_separate_store(airflow_home, tmp_path):
    url = f"sqlite:///{tmp_path / 'separate.db'}"
    behind = run_airflow(["twilio-sms", "db", "check", "--store-url", url], airflow_home)
    assert behind.returncode == 1
    assert "airflow twilio-sms db migrate" in behind.stderr
    done = run_airflow(["twilio-sms", "db", "migrate", "--store-url", url], airflow_home)
    assert done.returncode == 0, done.stderr
    assert "migrated from <empty> to" in done.stdout
    current = run_airflow(["twilio-sms", "db", "check", "--store-url", url], airflow_home)
    assert current.returncode == 0
    assert "newest revision" in current.stdout
    assert _tables_and_version(url)[0] >= TABLES


@pytest.fixture
def api_client(airflow_home, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    return TestClient(create_app())


def test_api_server_offers_the_connection_form(api_client):
    response = api_client.get("/ui/connections/hook_meta")
    assert response.status_code == 200
    meta = next(h for h in response.json() if h["connection_type"] == "twilio_sms")
    assert meta["hook_name"] == "Twilio SMS"
    standard = meta["standard_fields"]
    assert standard["login"]["title"] == "Account SID"
    assert standard["password"]["title"] == "Auth Token"
    assert standard["host"]["hidden"]
    assert standard["port"]["hidden"]
    extra = meta["extra_fields"]
    expected = {"from_number", "messaging_service_sid", "api_key_sid", "api_key_secret", "region", "edge",
                "default_region", "webhook_base_url", "secondary_auth_token", "rate_limit", "api_base_url",
                "webhook_signing_key_sid", "webhook_signing_key_secret"}
    assert expected <= set(extra)
    assert all(extra[name]["schema"].get("title") for name in expected)
    secret = {name for name, field in extra.items() if field["schema"].get("format") == "password"}
    assert secret == {"api_key_secret", "secondary_auth_token", "webhook_signing_key_secret"}


def test_secret_extras_are_redacted_by_airflow(api_client):
    body = {
        "connection_id": "twilio_redaction_check",
        "conn_type": "twilio_sms",
        "login": "AC" + "a" * 32,
        "password": "tok",
        "extra": '{"api_key_secret": "s3cr3t-value", "secondary_auth_token": "other-tok", '
        # A number no other test uses: the log/secrets masker is process-wide, and a number another
        # test registered with it (a recipient, a reply sender) would show as *** here too.
        '"from_number": "+12025550143"}',
    }
    created = api_client.post("/api/v2/connections", json=body)
    assert created.status_code in (200, 201), created.text
    try:
        shown = api_client.get("/api/v2/connections/twilio_redaction_check").json()
        assert "s3cr3t-value" not in shown["extra"]
        assert "other-tok" not in shown["extra"]
        assert "+12025550143" in shown["extra"]
    finally:
        api_client.delete("/api/v2/connections/twilio_redaction_check")


def test_airflow_plugins_lists_the_plugin_with_its_app(airflow_home):
    result = run_airflow(["plugins", "-o", "json"], airflow_home)
    assert result.returncode == 0, result.stderr
    [plugin] = [p for p in json.loads(result.stdout) if p["name"] == "twilio_sms"]
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/twilio_sms"]


def test_webhook_disabled_leaves_the_api_server_untouched(airflow_home):
    result = run_airflow(
        ["plugins", "-o", "json"], {**airflow_home, "AIRFLOW__TWILIO_SMS__WEBHOOK_ENABLED": "False"}
    )
    [plugin] = [p for p in json.loads(result.stdout) if p["name"] == "twilio_sms"]
    assert plugin["fastapi_apps"] == []

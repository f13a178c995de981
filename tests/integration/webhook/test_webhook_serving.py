"""How the app is served: `airflow twilio-sms webhook serve` (uvicorn, real CLI), and the plugin, which builds
the app lazily, only when enabled, without touching a database or a connection until a request comes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pytest
import requests

from conftest import airflow_bin, free_port
from webhook_testing import (
    FORM,
    SID,
    STATUS,
    event_count,
    inbound_params,
    make_client,
    metadata_db_connection,
    migrated_sqlite_store,
    post,
    sign,
    status_params,
    use_store,
)


def _wait_listening(proc: subprocess.Popen, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    pytest.fail("serve did not listen in time")


def test_cli_serve_stores_signed_callbacks(airflow_home, tmp_path, monkeypatch):
    """The connection lives in Airflow's metadata database, as one made in the UI: the server finds it."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = migrated_sqlite_store(url)
    port = free_port()
    monkeypatch.delenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", raising=False)
    remove_connection = metadata_db_connection("twilio_sms_default")
    env = {**os.environ, **airflow_home}
    proc = subprocess.Popen([airflow_bin(), "twilio-sms", "webhook", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--store-url", url], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_listening(proc, f"{base}/twilio_sms/api/health")
        params = status_params("delivered")
        headers = {**FORM, **sign(STATUS, params)}
        answer = requests.post(f"{base}{STATUS}", data=params, headers=headers, timeout=10)
        assert answer.status_code == 200
        assert answer.json() == {"success": True, "processed": 1}
        assert requests.post(f"{base}{STATUS}", data=params, headers=FORM, timeout=10).status_code == 403
        assert requests.get(f"{base}/twilio_sms/api/messages", timeout=10).status_code == 401
        assert event_count(store) == 1
        assert store.status_history(SID)[0]["status"] == "delivered"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        remove_connection()
    output = proc.stdout.read()
    assert "/twilio_sms/webhooks/" in output
    assert "auth-token" not in output


def test_serve_without_a_store_says_what_to_do(monkeypatch, capsys):
    from airflow_provider_twilio_sms.cli.webhook import serve

    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__STORE_CONN_ID", "no_such_store")
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")  # what serve() sets; undone after the test
    with pytest.raises(SystemExit) as exited:
        serve(argparse.Namespace(host="127.0.0.1", port=free_port(), store_url=None))
    assert "no_such_store" in str(exited.value)
    assert "AIRFLOW_CONN_NO_SUCH_STORE" in str(exited.value)


def test_plugin_builds_nothing_at_import_and_nothing_when_disabled(monkeypatch):
    code = ("import json, sys; import airflow_provider_twilio_sms.plugins.twilio_sms; "
            "print(json.dumps(sorted(m for m in sys.modules "
            "if m.startswith('airflow_provider_twilio_sms.webhook'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []

    from airflow_provider_twilio_sms.plugins.twilio_sms import TwilioSmsPlugin

    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__WEBHOOK_ENABLED", "False")
    assert TwilioSmsPlugin().fastapi_apps == []
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__WEBHOOK_ENABLED", "True")
    [mounted] = TwilioSmsPlugin().fastapi_apps
    assert mounted["url_prefix"] == "/twilio_sms"


def test_building_the_app_reads_no_connection_and_opens_no_database(monkeypatch, tmp_path):
    from airflow.models.connection import Connection

    from airflow_provider_twilio_sms.store import locate
    from airflow_provider_twilio_sms.webhook.app import create_app

    calls: list[str] = []

    def forbidden(name):
        def record(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called while building the app")
        return record

    monkeypatch.setattr(Connection, "get_connection_from_secrets", forbidden("get_connection_from_secrets"))
    monkeypatch.setattr(Connection, "get_team_name", forbidden("get_team_name"))
    monkeypatch.setattr(locate, "get_store", forbidden("get_store"))
    for mode in ("api-server", "standalone"):
        create_app(mode)
    create_app("standalone", store_url=f"sqlite:///{tmp_path}/never-created/store.db")
    assert calls == []
    assert not (tmp_path / "never-created").exists()


def test_api_server_finds_connections_made_in_the_ui_with_their_team(request, airflow_home, monkeypatch,
                                                                    tmp_path):
    """A connection kept in the metadata database is found; with multi-team on, one owned by a team too (a
    lookup without its team would miss it), and inbound messages belong to that team."""
    from airflow.models.team import Team
    from airflow.utils.session import create_session

    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    with create_session() as session:
        session.merge(Team(name="team_a"))
    request.addfinalizer(metadata_db_connection("twilio_team_a", team="team_a"))
    store = use_store(monkeypatch, migrated_sqlite_store(f"sqlite:///{tmp_path / 'store.db'}"))
    client = make_client("api-server", request)

    path = "/twilio_sms/webhooks/twilio_team_a/inbound"
    params = inbound_params("hello team")
    assert post(client, path, params, sign(path, params)).status_code == 200
    [row] = store.list_inbound(number=params["To"])
    assert (row["conn_id"], row["team"], row["body"]) == ("twilio_team_a", "team_a", "hello team")

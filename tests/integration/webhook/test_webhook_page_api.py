"""What the "Twilio SMS" page reads, through the real api-server app with the plugin: the summary over a
period, messages with their timelines, opt-outs (all closed without Airflow auth, team-filtered with
multi-team, numbers masked), and the page's own files."""

from __future__ import annotations

import pytest

from webhook_testing import (
    ACCOUNT,
    CONN_ID,
    INBOUND,
    STATUS,
    inbound_params,
    make_client,
    migrated_sqlite_store,
    post_signed,
    send_row,
    status_params,
    twilio_connection,
    use_store,
)

API = "/twilio_sms/api"


@pytest.fixture
def db(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection())
    return use_store(monkeypatch, migrated_sqlite_store(f"sqlite:///{tmp_path / 'store.db'}"))


@pytest.fixture
def client(request, db):
    return make_client("api-server", request)


def token(username="admin", role="admin", teams=None) -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role, teams=teams))
    return {"Authorization": f"Bearer {jwt}"}


def deliver(client, sid: str, *statuses: str, error_code: int | None = None) -> None:
    for status in statuses:
        extra = {"ErrorCode": str(error_code)} if error_code and status in ("failed", "undelivered") else {}
        assert post_signed(client, STATUS, status_params(status, sid=sid, **extra)).status_code == 200


@pytest.mark.parametrize("path", ["/summary", "/opt-outs", "/messages?include_history=true"])
def test_page_endpoints_need_airflow_auth(client, path):
    assert client.get(f"{API}{path}").status_code == 401


def test_summary_delivery_rate_and_failures_with_twilio_meaning(client, db):
    send_row(db, "k1", sid="SM" + "1" * 32)
    send_row(db, "k2", sid="SM" + "2" * 32)
    deliver(client, "SM" + "1" * 32, "sent", "delivered")
    deliver(client, "SM" + "2" * 32, "sent", "undelivered", error_code=30003)
    answer = client.get(f"{API}/summary?period=24h", headers=token())
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert summary["total"] == 2
    assert summary["delivery_rate"] == 0.5
    assert summary["failures_by_error_code"] == [
        {"error_code": 30003, "count": 1, "meaning": "the destination handset is unreachable"}]
    old = client.get(f"{API}/summary?since=2020-01-01T00:00:00&until=2020-02-01T00:00:00", headers=token())
    assert old.json()["total"] == 0


@pytest.mark.parametrize("query", ["period=0h", "period=7w", "period=abc",
                                   "since=2026-01-02T00:00:00&until=2026-01-01T00:00:00",
                                   "since=2020-01-01T00:00:00&until=2026-01-01T00:00:00"])
def test_summary_refuses_a_bad_period(client, db, query):
    assert client.get(f"{API}/summary?{query}", headers=token()).status_code == 422


def test_messages_with_timelines_in_one_call(client, db):
    send_row(db, "k1", sid="SM" + "1" * 32)
    deliver(client, "SM" + "1" * 32, "sent", "delivered")
    send_row(db, "k2", sid="SM" + "2" * 32)
    page = client.get(f"{API}/messages?include_history=true", headers=token()).json()["messages"]
    history = {m["sid"]: [h["status"] for h in m["history"]] for m in page}
    assert history == {"SM" + "1" * 32: ["sent", "delivered"], "SM" + "2" * 32: []}
    assert all(m["to"].startswith("***") and "body" not in m for m in page)
    plain = client.get(f"{API}/messages", headers=token()).json()["messages"]
    assert all("history" not in m for m in plain)


def test_opt_outs_masked_and_team_filtered(client, db, monkeypatch, airflow_home):
    from airflow.models.team import Team
    from airflow.utils.session import create_session

    from webhook_testing import metadata_db_connection, signer_of

    with create_session() as session:
        for name in ("team_a", "team_b"):
            session.merge(Team(name=name))
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    monkeypatch.delenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT")
    remove = metadata_db_connection(CONN_ID, team="team_a")
    try:
        stop = post_signed(client, INBOUND, inbound_params("STOP", sid="SM" + "5" * 32, From="+14155550177"))
        assert stop.status_code == 200, stop.text
        alice = client.get(f"{API}/opt-outs", headers=token("alice", "viewer", ["team_a"])).json()["opt_outs"]
        assert alice == [{"number": "***0177", "keyword": "STOP", "team": "team_a", "conn_id": CONN_ID,
                          "updated_at": alice[0]["updated_at"]}]
        bob = client.get(f"{API}/opt-outs", headers=token("bob", "viewer", ["team_b"])).json()["opt_outs"]
        assert bob == []
        summary = client.get(f"{API}/summary", headers=token("bob", "viewer", ["team_b"])).json()
        assert summary["opt_outs"] == 0
        assert summary["inbound"] == 0
        alice_summary = client.get(f"{API}/summary", headers=token("alice", "viewer", ["team_a"])).json()
        assert alice_summary["opt_outs"] == 1
    finally:
        remove()
    assert db.is_opted_out(ACCOUNT, "+14155550177", signer=signer_of())


def test_the_page_is_served_with_a_strict_content_security_policy(client):
    page = client.get("/twilio_sms/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Twilio SMS" in page.text
    assert 'src="app.js"' in page.text
    policy = page.headers["content-security-policy"]
    for directive in ("default-src 'none'", "connect-src 'self'", "frame-ancestors 'self'"):
        assert directive in policy
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = client.get(f"/twilio_sms/ui/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
    assert client.get("/twilio_sms/ui/../api/summary").status_code in (401, 404)
    assert client.get("/twilio_sms/ui/secrets.py").status_code == 404
    redirect = client.get("/twilio_sms/ui", follow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["location"].endswith("ui/")


def test_the_standalone_app_has_no_page(request, db):
    assert make_client("standalone", request).get("/twilio_sms/ui/").status_code == 404


def test_the_plugin_adds_the_page_to_airflow_browse_menu(client):
    answer = client.get("/api/v2/plugins", headers=token())
    assert answer.status_code == 200, answer.text
    [plugin] = [p for p in answer.json()["plugins"] if p["name"] == "twilio_sms"]
    [view] = plugin["external_views"]
    assert view["name"] == "Twilio SMS"
    assert view["category"] == "browse"
    assert view["url_route"] == "twilio_sms"
    assert view["href"].endswith("/twilio_sms/ui/")
    assert view["destination"] == "nav"

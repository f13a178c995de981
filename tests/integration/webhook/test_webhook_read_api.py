"""The read API: closed to unauthenticated callers (Airflow's auth in the api-server, a bearer token
standalone), a message with its status history, filters and pages, and team isolation with multi-team."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airflow_provider_twilio_sms.webhook.read_api import NOT_STORED

from webhook_testing import (
    ACCOUNT,
    API_TOKEN,
    CONN_ID,
    INBOUND,
    SID,
    STATUS,
    THEM,
    inbound_params,
    make_client,
    migrated_sqlite_store,
    post_signed,
    send_row,
    status_params,
    twilio_connection,
    use_store,
)

MESSAGES = "/twilio_sms/api/messages"


@pytest.fixture
def db(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection())
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__WEBHOOK_API_TOKEN", API_TOKEN)
    return use_store(monkeypatch, migrated_sqlite_store(f"sqlite:///{tmp_path / 'store.db'}"))


@pytest.fixture(params=["api-server", "standalone"])
def client(request, db):
    return make_client(request.param, request)


def airflow_token(username="admin", role="admin", teams=None) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role, teams=teams))


def auth(client) -> dict[str, str]:
    standalone = getattr(client.app.state, "twilio_sms", None) is not None
    return {"Authorization": f"Bearer {API_TOKEN if standalone else airflow_token()}"}


@pytest.mark.parametrize("path", [MESSAGES, f"{MESSAGES}/{SID}", f"{MESSAGES}?direction=inbound"])
def test_unauthenticated_callers_are_refused(client, path):
    assert client.get(path).status_code == 401
    refused = client.get(path, headers={"Authorization": "Bearer not-a-valid-token"}).status_code
    assert refused in (401, 403)  # Airflow answers 403 for a token it cannot decode
    assert client.get(path, headers={"Authorization": f"Basic {API_TOKEN}"}).status_code == 401


def test_standalone_read_api_is_closed_without_a_configured_token(request, db, monkeypatch):
    monkeypatch.delenv("AIRFLOW__TWILIO_SMS__WEBHOOK_API_TOKEN")
    client = make_client("standalone", request)
    assert client.get(MESSAGES, headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get(MESSAGES, headers={"Authorization": "Bearer ünïcode".encode()}).status_code == 401


def test_a_message_with_its_status_history(client, db):
    send_row(db, "order-1", body="secret body")
    for status in ("sent", "delivered", "sent"):
        post_signed(client, STATUS, status_params(status))
    headers = auth(client)
    [listed] = client.get(MESSAGES, headers=headers).json()["messages"]
    assert listed["sid"] == SID
    assert listed["to"] == "***0123"
    assert "body" not in listed
    one = client.get(f"{MESSAGES}/{SID}", headers=headers).json()
    assert one["status"] == "delivered"
    assert [h["status"] for h in one["history"]] == ["sent", "delivered"]  # the late "sent" is a duplicate
    assert client.get(f"{MESSAGES}/{SID}?include_body=true", headers=headers).json()["body"] == "secret body"
    assert client.get(f"{MESSAGES}/SM{'0' * 32}", headers=headers).status_code == 404
    assert client.get("/twilio_sms/api/health").json() == {"status": "ok"}


def test_an_outbound_text_not_stored_says_so_and_a_media_only_message_does_not(client, db):
    """With [twilio_sms] store_outbound_bodies off the row keeps only the text's SHA-256: the body comes as
    null with ``body_not_stored``; a message sent without text (media only) just has no body."""
    not_kept, media_only, kept = "SM" + "1" * 32, "SM" + "2" * 32, "SM" + "3" * 32
    send_row(db, "not-kept", sid=not_kept, body="Your code is 424242", store_body=False)
    send_row(db, "media-only", sid=media_only, body=None)
    send_row(db, "kept", sid=kept, body="Your code is 515151")
    headers = auth(client)
    page = client.get(f"{MESSAGES}?include_body=true", headers=headers).json()["messages"]
    listed = {m["sid"]: m for m in page}
    assert (listed[not_kept]["body"], listed[not_kept]["body_not_stored"]) == (None, NOT_STORED)
    assert (listed[media_only]["body"], "body_not_stored" in listed[media_only]) == (None, False)
    assert (listed[kept]["body"], "body_not_stored" in listed[kept]) == ("Your code is 515151", False)
    one = client.get(f"{MESSAGES}/{not_kept}?include_body=true", headers=headers).json()
    assert (one["body"], one["body_not_stored"]) == (None, NOT_STORED)
    assert "body_not_stored" not in client.get(f"{MESSAGES}/{not_kept}", headers=headers).json()
    assert "424242" not in client.get(f"{MESSAGES}?include_body=true", headers=headers).text


def test_filters_and_pages(client, db):
    sids = [f"SM{i:032x}" for i in range(1, 6)]
    for i, sid in enumerate(sids):
        send_row(db, f"k{i}", sid=sid)
    post_signed(client, STATUS, status_params("delivered", sid=sids[0]))
    post_signed(client, INBOUND, inbound_params("hello"))
    headers = auth(client)

    def get(query):
        response = client.get(f"{MESSAGES}?{query}", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    assert [m["sid"] for m in get("status=delivered")["messages"]] == [sids[0]]
    assert len(get(f"number={THEM}")["messages"]) == 5  # "+" in a query string arrives as a space
    assert get("number=%2B19995550000")["messages"] == []
    assert get(f"since={(datetime.now(timezone.utc) + timedelta(hours=1)).isoformat().replace('+', '%2B')}")[
        "messages"] == []
    [inbound] = get("direction=inbound&include_body=true")["messages"]
    assert (inbound["direction"], inbound["body"], inbound["from"]) == ("inbound", "hello", "***0123")
    first = get("limit=2")
    second = get(f"limit=2&before_id={first['next_before_id']}")
    third = get(f"limit=2&before_id={second['next_before_id']}")
    pages = [m["sid"] for page in (first, second, third) for m in page["messages"]]
    assert pages == sids[::-1]
    assert third["next_before_id"] is None
    assert client.get(f"{MESSAGES}?direction=sideways", headers=headers).status_code == 422


def test_airflow_token_from_the_login_endpoint_works(request, db, airflow_home):
    client = make_client("api-server", request)
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    password = json.loads(Path(SimpleAuthManager.get_generated_password_file()).read_text())["admin"]
    login = client.post("/auth/token", json={"username": "admin", "password": password})
    assert login.status_code in (200, 201), login.text
    token = login.json()["access_token"]
    assert client.get(MESSAGES, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_multi_team_callers_see_their_teams_messages_only(request, db, airflow_home, monkeypatch):
    from airflow.models.team import Team
    from airflow.utils.session import create_session

    with create_session() as session:
        for name in ("team_a", "team_b"):
            session.merge(Team(name=name))
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    client = make_client("api-server", request)
    by_team = {"team_a": "SM" + "a" * 32, "team_b": "SM" + "b" * 32, None: "SM" + "c" * 32}
    for team, sid in by_team.items():
        send_row(db, f"key-{team}", sid=sid, team=team)

    def visible(token):
        response = client.get(MESSAGES, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        return {m["sid"] for m in response.json()["messages"]}

    alice = airflow_token("alice", "viewer", ["team_a"])
    assert visible(alice) == {by_team["team_a"], by_team[None]}
    assert visible(airflow_token("bob", "user", ["team_b"])) == {by_team["team_b"], by_team[None]}
    assert visible(airflow_token()) == set(by_team.values())  # admin
    hidden = client.get(f"{MESSAGES}/{by_team['team_b']}", headers={"Authorization": f"Bearer {alice}"})
    assert hidden.status_code == 404
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "False")
    assert visible(alice) == set(by_team.values())  # without multi-team, teams do not partition


# (query, the parameter the 422 names, what its message says is allowed)
OUT_OF_RANGE = [
    ("/messages?before_id=9223372036854775808", "before_id", "9223372036854775807"),  # 2^63: a 500 on SQLite
    ("/messages?before_id=0", "before_id", "greater than or equal to 1"),
    ("/messages?limit=501", "limit", "500"),
    ("/messages?since=0001-01-01T00:00:00%2B14:00", "since", "1970-01-01T00:00:00Z and 9999-12-31"),  # year 0
    ("/messages?direction=inbound&since=0001-01-01T00:00:00%2B14:00", "since", "1970-01-01T00:00:00Z"),
    ("/messages?since=9999-12-31T23:59:59-14:00", "since", "1970-01-01T00:00:00Z"),  # year 10000 in UTC
    ("/messages?since=1969-12-31T23:59:59Z", "since", "1970-01-01T00:00:00Z"),
    ("/messages?number=%00", "number", "E.164"),
    ("/messages?number=4155550123", "number", "E.164 number like +14155550123 (write + as %2B)"),
    ("/messages?number=%2B1" + "5" * 40, "number", "at most 32 characters"),
    ("/messages?status=%00", "status", "'delivered'"),
    ("/messages?status=received", "status", "'undelivered'"),  # an inbound status
    ("/messages?direction=sideways", "direction", "'outbound' or 'inbound'"),
    ("/messages?include_body=maybe", "include_body", "boolean"),
    (f"/messages/SM{'0' * 31}%00", "sid", "(SM|MM)[0-9a-fA-F]{32}"),
    (f"/messages/SM{'0' * 32}{'0' * 200}", "sid", "at most 34 characters"),
    ("/summary?since=0001-01-01T00:00:00%2B14:00&until=0001-01-02T00:00:00", "since", "1970-01-01T00:00:00Z"),
    ("/summary?until=0001-01-01T00:00:00&period=366d", "until", "1970-01-01T00:00:00Z"),
    ("/summary?period=0h", "period", "1 hour to 366 days"),
    ("/summary?period=367d", "period", "1 hour to 366 days"),
    ("/summary?period=10000h", "period", "at most 5 characters"),
    ("/summary?period=1000d", "period", "1 hour to 366 days"),
    ("/summary?period=7w", "period", "1 hour to 366 days"),
    ("/summary?since=2026-01-02T00:00:00&until=2026-01-01T00:00:00", "since", "before until"),
    ("/summary?since=2020-01-01T00:00:00&until=2026-01-01T00:00:00", "since", "at most 366 days"),
    ("/opt-outs?limit=0", "limit", "greater than or equal to 1"),
]
# Edges that are allowed.
IN_RANGE = [
    "/messages?before_id=9223372036854775807", "/messages?direction=inbound&before_id=9223372036854775807",
    "/messages?since=1970-01-01T00:00:00Z", "/messages?since=9999-12-31T00:00:00",
    "/messages?since=2026-01-01T00:00:00%2B14:00", f"/messages?number={THEM}",
    "/messages?number=%2B14155550123",
    "/messages?status=delivered&limit=500", "/summary?until=1970-01-02T00:00:00&period=366d",
    "/summary?until=9999-12-31T00:00:00Z&period=1h", "/summary?period=366d", "/summary?period=8784h",
    "/opt-outs?limit=500",
    f"/messages/{SID}?include_body=true",
]


@pytest.fixture
def any_db(monkeypatch, store):
    """The read API's store on SQLite and on PostgreSQL."""
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection())
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__WEBHOOK_API_TOKEN", API_TOKEN)
    return use_store(monkeypatch, store)


@pytest.mark.parametrize("mode", ["api-server", "standalone"])
def test_out_of_range_parameters_are_a_422_naming_the_parameter_and_its_range(request, any_db, mode):
    from fastapi.testclient import TestClient

    client = TestClient(make_client(mode, request).app, raise_server_exceptions=False)
    send_row(any_db, "range-1", body="secret body")
    headers = auth(client)
    for query, parameter, allowed in OUT_OF_RANGE:
        answer = client.get(f"/twilio_sms/api{query}", headers=headers)
        assert answer.status_code == 422, f"{query} -> {answer.status_code} {answer.text[:300]}"
        named = [e for e in answer.json()["detail"] if e["loc"][-1] == parameter]
        assert named, f"{query}: the 422 does not name {parameter}: {answer.text[:300]}"
        assert any(allowed in e["msg"] for e in named), f"{query}: {named[0]['msg']!r} lacks {allowed!r}"
    for query in IN_RANGE:
        answer = client.get(f"/twilio_sms/api{query}", headers=headers)
        assert answer.status_code == 200, f"{query} -> {answer.status_code} {answer.text[:300]}"


def _bodies(client, headers, query: str = "") -> dict[str, tuple[str | None, str | None]]:
    """sid -> (body, body_withheld) of outbound and inbound messages and of each outbound message alone."""
    seen = {}
    for direction in ("outbound", "inbound"):
        answer = client.get(f"{MESSAGES}?direction={direction}&include_body=true{query}", headers=headers)
        assert answer.status_code == 200, answer.text
        for m in answer.json()["messages"]:
            seen[m["sid"]] = (m["body"], m.get("body_withheld"))
            if direction == "outbound":
                one = client.get(f"{MESSAGES}/{m['sid']}?include_body=true", headers=headers).json()
                assert (one["body"], one.get("body_withheld")) == seen[m["sid"]]
    return seen


def _inbound_row(store, sid: str, conn_id: str, body: str, team: str | None = None) -> None:
    assert store.record_inbound(account_sid=ACCOUNT, conn_id=conn_id, message_sid=sid, from_number=THEM,
                                to_number="+15005550006", body=body, payload={"Body": body}, team=team)


@pytest.mark.parametrize(("role", "readable"),
                         [("admin", True), ("op", True), ("user", False), ("viewer", False)])
def test_bodies_only_for_callers_who_may_read_the_connection(request, db, airflow_home, role, readable):
    client = make_client("api-server", request)
    send_row(db, "otp-1", body="Your code is 424242")
    _inbound_row(db, "SM" + "9" * 32, CONN_ID, "my code is 424242")
    headers = {"Authorization": f"Bearer {airflow_token(role, role)}"}
    bodies = _bodies(client, headers)
    assert set(bodies) == {SID, "SM" + "9" * 32}  # every message is listed, whoever asks
    if readable:
        assert bodies == {SID: ("Your code is 424242", None), "SM" + "9" * 32: ("my code is 424242", None)}
    else:
        assert all(body is None and CONN_ID in why for body, why in bodies.values()), bodies
        listed = client.get(f"{MESSAGES}?include_body=true&include_history=true", headers=headers).text
        assert "424242" not in listed
    plain = client.get(MESSAGES, headers=headers).json()["messages"]
    assert all("body" not in m and "body_withheld" not in m for m in plain)


def test_bodies_follow_each_message_connection_and_its_team(request, db, airflow_home, monkeypatch):
    """Multi-team: a caller reads the bodies of the connections of their own teams (as an Op or above);
    a message they may see (no team) on another team's connection comes without its body."""
    from airflow.models.team import Team
    from airflow.utils.session import create_session

    from webhook_testing import metadata_db_connection

    with create_session() as session:
        for name in ("team_a", "team_b"):
            session.merge(Team(name=name))
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    removers = [metadata_db_connection(conn_id, team=team) for conn_id, team in (("sms_a", "team_a"),
                                                                                  ("sms_b", "team_b"))]
    request.addfinalizer(lambda: [remove() for remove in removers])
    client = make_client("api-server", request)
    a, b, b_shared = "SM" + "a" * 32, "SM" + "b" * 32, "SM" + "c" * 32
    send_row(db, "a", sid=a, team="team_a", conn_id="sms_a", body="body a")
    send_row(db, "b", sid=b, team="team_b", conn_id="sms_b", body="body b")
    send_row(db, "shared", sid=b_shared, team=None, conn_id="sms_b", body="body shared")
    _inbound_row(db, "SM" + "d" * 32, "sms_a", "reply a", team="team_a")
    _inbound_row(db, "SM" + "e" * 32, "sms_b", "reply b", team=None)

    def bodies(username, role, teams):
        found = _bodies(client, {"Authorization": f"Bearer {airflow_token(username, role, teams)}"})
        return {sid: body for sid, (body, _) in found.items()}

    assert bodies("alice", "op", ["team_a"]) == {a: "body a", b_shared: None, "SM" + "d" * 32: "reply a",
                                                 "SM" + "e" * 32: None}
    assert bodies("bob", "op", ["team_b"]) == {b: "body b", b_shared: "body shared",
                                               "SM" + "e" * 32: "reply b"}
    both = bodies("carol", "op", ["team_a", "team_b"])
    assert both == {a: "body a", b: "body b", b_shared: "body shared", "SM" + "d" * 32: "reply a",
                    "SM" + "e" * 32: "reply b"}
    assert set(bodies("dave", "viewer", ["team_a", "team_b"]).values()) == {None}
    assert None not in bodies("admin", "admin", None).values()


def test_standalone_token_reads_every_body(request, db):
    client = make_client("standalone", request)
    send_row(db, "otp-1", body="Your code is 424242")
    assert _bodies(client, auth(client)) == {SID: ("Your code is 424242", None)}

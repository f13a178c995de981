"""Twilio's webhooks through the real api-server app (plugin) and the standalone app, into the store."""

from __future__ import annotations

import json
import threading
from urllib.parse import urlencode

import pytest
import requests
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.api import SmsStore, make_scope
from conftest import free_port

ACCOUNT = "AC" + "6" * 32
TOKEN = "primary-auth-token"
SECONDARY = "secondary-auth-token"
BASE = "https://airflow.example.com"
SID = "SM" + "7" * 32
API_TOKEN = "read-api-token"


@pytest.fixture
def conn(monkeypatch, store_conn):
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", json.dumps({
        "conn_type": "twilio_sms", "login": ACCOUNT, "password": TOKEN,
        "extra": {"from_number": "+15005550006", "webhook_base_url": BASE, "secondary_auth_token": SECONDARY}}))
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__WEBHOOK_API_TOKEN", API_TOKEN)
    return store_conn


def _plugin_state():
    from airflow import plugins_manager

    apps, _ = plugins_manager.get_fastapi_plugins()
    [mounted] = [a for a in apps if a["url_prefix"] == "/twilio_sms"]
    return mounted["app"].state.twilio_sms


@pytest.fixture(params=["api-server", "standalone"])
def client(request, conn):
    if request.param == "standalone":
        from airflow_provider_twilio_sms.webhook.app import create_app

        yield TestClient(create_app("standalone"))
        return
    request.getfixturevalue("airflow_home")
    from airflow.api_fastapi.app import create_app

    app = create_app()
    state = _plugin_state()  # built once per process by Airflow: point it at this test's store
    state._store, state.settings = None, type(state.settings)()
    yield TestClient(app)
    state._store = None


def sign(path, params, token=TOKEN, url=None):
    url = url or f"{BASE}{path}"
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def status_params(status="delivered", **extra):
    return {"MessageSid": SID, "SmsSid": SID, "MessageStatus": status, "SmsStatus": status, "AccountSid": ACCOUNT,
            "From": "+15005550006", "To": "+14155550123", "ApiVersion": "2010-04-01", **extra}


def inbound_params(body="YES", sid="SM" + "8" * 32, **extra):
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": ACCOUNT, "From": "+14155550123",
            "To": "+15005550006", "Body": body, "NumMedia": "0", "ApiVersion": "2010-04-01", **extra}


STATUS = "/twilio_sms/webhooks/twilio_sms_default/status"
INBOUND = "/twilio_sms/webhooks/twilio_sms_default/inbound"


def post(client, path, params, headers=None, query=""):
    full = f"{path}?{query}" if query else path
    return client.post(full, content=urlencode(params),
                       headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})


def event_count(store: SmsStore) -> int:
    with store.engine.connect() as c:
        return c.execute(select(func.count()).select_from(t.event)).scalar()


def test_signed_status_callback_is_stored_and_a_duplicate_is_not(client, conn):
    params = status_params()
    headers = {**sign(STATUS, params), "I-Twilio-Idempotency-Token": "tok-1"}
    first = post(client, STATUS, params, headers)
    assert first.status_code == 200 and first.json() == {"success": True, "processed": 1}
    again = post(client, STATUS, params, headers)
    assert again.json() == {"success": True, "processed": 0}
    assert [h["status"] for h in conn.status_history(SID)] == ["delivered"]


def test_signed_inbound_is_stored_and_answered_with_twiml(client, conn):
    params = inbound_params("Your code is 123456")
    response = post(client, INBOUND, params, sign(INBOUND, params))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml") and "<Response/>" in response.text
    [row] = conn.find_inbound(to_number="+15005550006")
    assert row["body"] == "Your code is 123456" and row["from_number"] == "+14155550123"


def test_stop_updates_the_opt_out_list(client, conn):
    params = inbound_params("STOP", OptOutType="STOP")
    assert post(client, INBOUND, params, sign(INBOUND, params)).status_code == 200
    assert conn.is_opted_out(ACCOUNT, "+14155550123")


def test_secondary_token_and_default_port_are_accepted(client, conn):
    params = status_params("sent")
    assert post(client, STATUS, params, sign(STATUS, params, token=SECONDARY)).json()["processed"] == 1
    params = status_params("delivered")
    with_port = sign(STATUS, params, url=f"https://airflow.example.com:443{STATUS}")
    assert post(client, STATUS, params, with_port).json()["processed"] == 1


def test_callback_links_to_the_send_by_the_key_in_the_query_when_the_sid_was_lost(client, conn):
    claim = conn.claim(scope=make_scope(ACCOUNT), idempotency_key="order-7", account_sid=ACCOUNT,
                       conn_id="twilio_sms_default", to_number="+14155550123", body="hi")
    params = status_params("delivered")
    query = "ik=order-7"
    headers = sign(STATUS, params, url=f"{BASE}{STATUS}?{query}")
    assert post(client, STATUS, params, headers, query=query).json()["processed"] == 1
    row = conn.get_message(message_id=claim.message_id)
    assert row["sid"] == SID and row["status"] == "delivered"


def test_delivered_then_sent_leaves_delivered(client, conn):
    claim = conn.claim(scope=make_scope(ACCOUNT), idempotency_key="k", account_sid=ACCOUNT, conn_id="c",
                       to_number="+14155550123", body="hi")
    conn.record_sent(claim, {"sid": SID, "status": "queued"})
    for status in ("delivered", "sent"):
        params = status_params(status)
        assert post(client, STATUS, params, sign(STATUS, params)).status_code == 200
    assert conn.get_message(sid=SID)["status"] == "delivered"
    assert len(conn.status_history(SID)) == 2


def _refusals():
    good = status_params()
    tampered = dict(good, MessageStatus="failed")
    extra = dict(good, Injected="1")
    return [
        ("no signature", STATUS, good, {}, {"Content-Type": "application/x-www-form-urlencoded"}, 403),
        ("wrong token", STATUS, good, sign(STATUS, good, token="nope"), None, 403),
        ("tampered parameter", STATUS, tampered, sign(STATUS, good), None, 403),
        ("extra parameter", STATUS, extra, sign(STATUS, good), None, 403),
        ("url mismatch", STATUS, good, sign(STATUS, good, url=f"https://evil.example.com{STATUS}"), None, 403),
        ("wrong account", STATUS, dict(good, AccountSid="AC" + "f" * 32),
         sign(STATUS, dict(good, AccountSid="AC" + "f" * 32)), None, 403),
        ("unknown conn id", "/twilio_sms/webhooks/nope/status", good,
         sign("/twilio_sms/webhooks/nope/status", good), None, 404),
        ("malformed MessageSid", STATUS, dict(good, MessageSid="SM123"),
         sign(STATUS, dict(good, MessageSid="SM123")), None, 400),
        ("bad phone format", STATUS, dict(good, To="not a number!"), sign(STATUS, dict(good, To="not a number!")),
         None, 400),
    ]


@pytest.mark.parametrize("name,path,params,headers,override,code", _refusals(), ids=[r[0] for r in _refusals()])
def test_refusals_leave_the_store_unchanged(client, conn, name, path, params, headers, override, code):
    if override is not None:
        response = client.post(path, content=urlencode(params), headers=override)
    else:
        response = post(client, path, params, headers)
    assert response.status_code == code
    assert event_count(conn) == 0


def test_wrong_content_type_is_415(client, conn):
    params = status_params()
    response = client.post(STATUS, content=json.dumps(params),
                           headers={"Content-Type": "text/plain", **sign(STATUS, params)})
    assert response.status_code == 415 and event_count(conn) == 0


def test_oversize_body_is_413(client, conn, monkeypatch):
    params = status_params(Body="x" * 70_000)
    response = post(client, STATUS, params, sign(STATUS, params))
    assert response.status_code == 413 and event_count(conn) == 0


def test_store_outage_gives_503_and_the_retry_is_stored(client, conn, tmp_path):
    state = client.app.state.twilio_sms if hasattr(client.app.state, "twilio_sms") else _plugin_state()
    params = status_params()
    headers = sign(STATUS, params)
    state._store = SmsStore(f"sqlite:///{tmp_path}/no-tables-here.db")  # the store has no tables: writes fail
    assert post(client, STATUS, params, headers).status_code == 503
    state._store = None
    assert post(client, STATUS, params, headers).json()["processed"] == 1
    assert event_count(conn) == 1


def test_read_api_refuses_unauthenticated_callers(client, conn):
    assert client.get("/twilio_sms/api/messages").status_code == 401
    assert client.get(f"/twilio_sms/api/messages/{SID}").status_code == 401


def _auth_headers(client):
    if hasattr(client.app.state, "twilio_sms"):  # standalone
        return {"Authorization": f"Bearer {API_TOKEN}"}
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    return {"Authorization": f"Bearer {token}"}


def test_read_api_returns_a_message_with_its_status_history(client, conn):
    claim = conn.claim(scope=make_scope(ACCOUNT), idempotency_key="k", account_sid=ACCOUNT, conn_id="c",
                       to_number="+14155550123", body="secret body")
    conn.record_sent(claim, {"sid": SID, "status": "queued"})
    for status in ("sent", "delivered"):
        params = status_params(status)
        post(client, STATUS, params, sign(STATUS, params))
    headers = _auth_headers(client)
    listed = client.get("/twilio_sms/api/messages", headers=headers)
    assert listed.status_code == 200, listed.text
    [message] = listed.json()["messages"]
    assert message["to"] == "***0123" and "body" not in message
    one = client.get(f"/twilio_sms/api/messages/{SID}", headers=headers).json()
    assert one["status"] == "delivered" and [h["status"] for h in one["history"]] == ["sent", "delivered"]
    with_body = client.get(f"/twilio_sms/api/messages/{SID}?include_body=true", headers=headers).json()
    assert with_body["body"] == "secret body"
    assert client.get("/twilio_sms/api/health").json() == {"status": "ok"}


def test_fifty_concurrent_copies_of_one_callback_make_one_event(conn):
    import uvicorn

    from airflow_provider_twilio_sms.webhook.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app("standalone"), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        pass
    params = status_params()
    headers = {**sign(STATUS, params), "Content-Type": "application/x-www-form-urlencoded",
               "I-Twilio-Idempotency-Token": "same"}
    answers = []
    start = threading.Barrier(50)

    def hit():
        start.wait()
        answers.append(requests.post(f"http://127.0.0.1:{port}{STATUS}", data=urlencode(params), headers=headers,
                                     timeout=30).json()["processed"])

    threads = [threading.Thread(target=hit) for _ in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    server.should_exit = True
    thread.join(timeout=10)
    assert sorted(answers) == [0] * 49 + [1]
    assert event_count(conn) == 1

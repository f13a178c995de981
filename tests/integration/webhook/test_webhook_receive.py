"""Twilio-signed status callbacks and inbound messages, posted to the real api-server app (plugin mounted at
/twilio_sms) and to the standalone app, land in the store on SQLite and PostgreSQL with its semantics:
stored once, status only forward, linked to the send, opt-outs applied."""

from __future__ import annotations

import json

import pytest
from twilio.request_validator import RequestValidator

from webhook_testing import (
    ACCOUNT,
    BASE,
    INBOUND,
    OURS,
    SID,
    SIGNING_KEY_SECRET,
    SIGNING_KEY_SID,
    STATUS,
    THEM,
    TOKEN,
    event_count,
    inbound_params,
    make_client,
    post,
    post_signed,
    send_row,
    sign,
    signer_of,
    status_params,
    twilio_connection,
    use_store,
)


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection())


@pytest.fixture
def db(store, monkeypatch):
    """The migrated store (SQLite, then PostgreSQL), found by the app through the store connection."""
    return use_store(monkeypatch, store)


@pytest.fixture(params=["api-server", "standalone"])
def client(request, db):
    return make_client(request.param, request)


@pytest.fixture
def standalone(request, db):
    return make_client("standalone", request)


# --- both apps, both databases ------------------------------------------------------------------

def test_status_callback_is_stored_once(client, db):
    send_row(db, "order-1")
    params = status_params("delivered")
    first = post_signed(client, STATUS, params, headers={"I-Twilio-Idempotency-Token": "attempt-1"})
    assert first.status_code == 200
    assert first.json() == {"success": True, "processed": 1}
    # Twilio's retry of the same delivery (same token), then the same status under a new token.
    again = post_signed(client, STATUS, params, headers={"I-Twilio-Idempotency-Token": "attempt-1"})
    other = post_signed(client, STATUS, params, headers={"I-Twilio-Idempotency-Token": "attempt-2"})
    assert again.json() == other.json() == {"success": True, "processed": 0}
    assert [h["status"] for h in db.status_history(SID)] == ["delivered"]
    assert db.get_message(sid=SID)["status"] == "delivered"


def test_inbound_message_is_stored_once_and_answered_with_twiml(client, db):
    params = inbound_params("Your code is 123456")
    for _ in range(2):
        response = post_signed(client, INBOUND, params)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/xml")
        assert response.text.endswith("<Response/>")
    [row] = db.list_inbound(number=OURS)
    assert (row["body"], row["from_number"]) == ("Your code is 123456", THEM)
    assert row["message_sid"] == params["MessageSid"]


def test_delivered_then_sent_leaves_delivered_with_both_in_history(client, db):
    send_row(db, "order-2")
    for status in ("delivered", "sent"):
        assert post_signed(client, STATUS, status_params(status)).json()["processed"] == 1
    assert db.get_message(sid=SID)["status"] == "delivered"
    assert [h["status"] for h in db.status_history(SID)] == ["delivered", "sent"]


# --- storage semantics, both databases ------------------------------------------------------------

def test_callback_finds_its_send_by_the_key_in_the_query_when_the_sid_was_lost(standalone, db):
    claim = send_row(db, "order-7", sid=None, team="growth")  # the send's response never came back
    assert post_signed(standalone, STATUS, status_params("sent"), query="ik=order-7").json()["processed"] == 1
    row = db.get_message(message_id=claim.message_id)
    assert (row["sid"], row["status"]) == (SID, "sent")
    # The same key in two teams' scopes of one connection: which message is meant cannot be known from the
    # callback (its team is never taken from the URL), so neither is linked.
    other = "SM" + "9" * 32
    send_row(db, "order-8", sid=None, team="growth")
    send_row(db, "order-8", sid=None, team="qa")
    post_signed(standalone, STATUS, status_params("sent", sid=other), query="ik=order-8&team=qa")
    assert db.get_message(sid=other) is None


def test_callback_finds_a_long_keyed_send_by_the_keys_digest_in_the_query(standalone, db):
    """Keys of any length: the URL carries the key's SHA-256 (what the operator puts there); two keys
    sharing their first 255 characters stay two messages."""
    from hashlib import sha256

    shared = "order/" + "x" * 300
    mine, other = send_row(db, shared + "-a", sid=None), send_row(db, shared + "-b", sid=None)
    query = f"ik_sha256={sha256((shared + '-a').encode()).hexdigest()}"
    assert post_signed(standalone, STATUS, status_params("sent"), query=query).json()["processed"] == 1
    assert db.get_message(message_id=mine.message_id)["sid"] == SID
    assert db.get_message(message_id=other.message_id)["sid"] is None


def test_unknown_status_is_stored_and_moves_nothing(standalone, db):
    send_row(db, "order-3")
    assert post_signed(standalone, STATUS, status_params("teleported")).json()["processed"] == 1
    assert db.get_message(sid=SID)["status"] == "queued"
    assert [h["status"] for h in db.status_history(SID)] == ["teleported"]


def test_opt_out_keywords_update_the_opt_out_list(standalone, db):
    post_signed(standalone, INBOUND, inbound_params("STOP", sid="SM" + "1" * 32, OptOutType="STOP"))
    assert db.is_opted_out(ACCOUNT, THEM, signer=signer_of())
    post_signed(standalone, INBOUND, inbound_params("start", sid="SM" + "2" * 32, OptOutType="START"))
    assert not db.is_opted_out(ACCOUNT, THEM, signer=signer_of())
    post_signed(standalone, INBOUND, inbound_params("unsubscribe", sid="SM" + "3" * 32))  # no OptOutType
    assert db.is_opted_out(ACCOUNT, THEM, signer=signer_of())


def test_error_code_of_a_failed_delivery_is_kept(standalone, db):
    send_row(db, "order-4")
    post_signed(standalone, STATUS, status_params("undelivered", ErrorCode="30003"))
    row = db.get_message(sid=SID)
    assert (row["status"], row["error_code"]) == ("undelivered", 30003)


# --- signatures Twilio may use: SQLite is enough ------------------------------------------------

@pytest.fixture
def sqlite_client(request, monkeypatch, tmp_path):
    from webhook_testing import migrated_sqlite_store

    store = use_store(monkeypatch, migrated_sqlite_store(f"sqlite:///{tmp_path / 'store.db'}"))
    return make_client(request.param, request), store


@pytest.mark.parametrize("sqlite_client", ["api-server", "standalone"], indirect=True)
def test_secondary_token_and_the_default_port_are_accepted(sqlite_client):
    client, store = sqlite_client
    from webhook_testing import SECONDARY

    assert post(client, STATUS, status_params("sent"), sign(STATUS, status_params("sent"),
                                                               token=SECONDARY)).json()["processed"] == 1
    params = status_params("delivered")
    with_port = sign(STATUS, params, url=f"https://airflow.example.com:443{STATUS}")
    assert post(client, STATUS, params, with_port).json()["processed"] == 1
    assert event_count(store) == 2


@pytest.mark.parametrize("sqlite_client", ["standalone"], indirect=True)
@pytest.mark.parametrize("algorithm", ["HMAC_SHA256", "HMAC_SHA1"])
def test_shared_key_signatures_are_accepted(sqlite_client, algorithm):
    client, store = sqlite_client
    params = status_params("delivered")
    signature = RequestValidator(SIGNING_KEY_SECRET).compute_signature(f"{BASE}{STATUS}", params, algorithm)
    headers = {"X-Twilio-Signature": signature,
               "X-Twilio-Webhooks-Signature-Settings": f"key={SIGNING_KEY_SID},algorithm={algorithm}"}
    assert post(client, STATUS, params, headers).json() == {"success": True, "processed": 1}
    assert event_count(store) == 1


@pytest.mark.parametrize("sqlite_client", ["standalone"], indirect=True)
def test_json_body_is_accepted_when_its_hash_is_signed(sqlite_client):
    client, store = sqlite_client
    body = json.dumps(status_params("delivered"))
    validator = RequestValidator(TOKEN)
    query = f"bodySHA256={validator.compute_hash(body)}"
    headers = {"Content-Type": "application/json",
               "X-Twilio-Signature": validator.compute_signature(f"{BASE}{STATUS}?{query}", {})}
    assert client.post(f"{STATUS}?{query}", content=body, headers=headers).json()["processed"] == 1
    assert event_count(store) == 1


@pytest.mark.parametrize("sqlite_client", ["api-server", "standalone"], indirect=True)
def test_without_a_public_base_url_the_url_the_server_sees_is_verified(sqlite_client, monkeypatch):
    client, store = sqlite_client
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection(webhook_base_url=None))
    params = status_params("delivered")
    seen = f"http://testserver{STATUS}?ik=k1"  # what TestClient requests; no proxy in between
    accepted = post(client, STATUS, params, sign(STATUS, params, url=seen), query="ik=k1")
    assert accepted.json()["processed"] == 1
    assert post(client, STATUS, params, sign(STATUS, params), query="ik=k1").status_code == 403  # public URL
    assert event_count(store) == 1

"""An event verified for one connection touches only that connection's own records (README "What a webhook
is trusted for"), on SQLite and PostgreSQL, through the real webhook app.

Every forged request here is signed with twilio-python's own RequestValidator and the token of the
connection it is posted to, so it passes the signature check: what is tested is what the store lets a
verified event touch. The production connection ``twilio_sms_default`` holds ACCOUNT and TOKEN; the others:

- ``copycat``: the same Account SID with a token of the attacker's choosing;
- ``other_team``: another account and token (another team's connection);
- ``sibling``: the same Account SID and the same token (one signer: a second connection of the account);
- ``dev_stand_in``: the real Account SID with the local stand-in's published token;
- ``dev_loopback``: the real Account SID, its own token, and ``api_base_url`` on a loopback stand-in.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from airflow_provider_twilio_sms.simulator.auth import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from airflow_provider_twilio_sms.store import tables as t

from webhook_testing import (
    ACCOUNT,
    BASE,
    CONN_ID,
    INBOUND,
    OURS,
    SID,
    STATUS,
    THEM,
    TOKEN,
    inbound_params,
    make_client,
    post_signed,
    send_row,
    signer_of,
    snapshot,
    status_params,
    twilio_connection,
    use_store,
)

OTHER_ACCOUNT = "AC" + "b" * 32
ATTACKER_TOKEN = "token-of-the-attackers-choosing"
OTHER_TOKEN = "other-teams-token"
RECEIVER = "airflow_provider_twilio_sms.webhook.receiver"

CONNECTIONS = {  # conn_id: (Account SID, Auth Token, extras)
    "copycat": (ACCOUNT, ATTACKER_TOKEN, {}),
    "other_team": (OTHER_ACCOUNT, OTHER_TOKEN, {}),
    "sibling": (ACCOUNT, TOKEN, {}),
    "dev_stand_in": (ACCOUNT, TEST_AUTH_TOKEN, {}),
    "dev_loopback": (ACCOUNT, "dev-token", {"api_base_url": "http://127.0.0.1:8765"}),
    "stand_in": (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, {"api_base_url": "http://127.0.0.1:8765"}),
}
FORGERS = ["copycat", "other_team"]


def path(conn_id: str, kind: str) -> str:
    return f"/twilio_sms/webhooks/{conn_id}/{kind}"


def account_of(conn_id: str) -> str:
    return CONNECTIONS[conn_id][0] if conn_id in CONNECTIONS else ACCOUNT


def token_of(conn_id: str) -> str:
    return CONNECTIONS[conn_id][1] if conn_id in CONNECTIONS else TOKEN


def forge(client, conn_id: str, kind: str, params: dict, query: str = ""):
    """POST ``params`` to ``conn_id``'s webhook, signed with that connection's token for its account."""
    params = {**params, "AccountSid": account_of(conn_id)}
    return post_signed(client, path(conn_id, kind), params, query=query, token=token_of(conn_id))


@pytest.fixture
def db(store, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection())
    for conn_id, (account, token, extra) in CONNECTIONS.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
            "conn_type": "twilio_sms", "login": account, "password": token,
            "extra": {"from_number": OURS, "webhook_base_url": BASE, **extra}}))
    url = store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_STORE", json.dumps({"conn_type": "generic",
                                                                "extra": {"sqlalchemy_url": url}}))
    return use_store(monkeypatch, store)


@pytest.fixture
def client(request, db):
    return make_client("standalone", request)


def events(db, **where) -> list[dict]:
    e = t.event
    with db.engine.connect() as conn:
        rows = conn.execute(select(e).where(*(e.c[k] == v for k, v in where.items())).order_by(e.c.id)).all()
    return [dict(r._mapping) for r in rows]


# --- status callbacks -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["standalone", "api-server"])
@pytest.mark.parametrize("forger", FORGERS)
def test_a_status_verified_by_another_connection_never_touches_the_message(request, db, mode, forger):
    from airflow_provider_twilio_sms.sensors.sms import SmsStatusSensor

    client = make_client(mode, request)
    send_row(db, "order-1")
    forged = forge(client, forger, "status", status_params("failed", ErrorCode="30007"))
    assert forged.status_code == 200  # stored as that connection's own event ...
    row = db.get_message(sid=SID)
    assert (row["status"], row["error_code"]) == ("queued", None)  # ... which touches nothing of ours
    [event] = events(db, message_sid=SID)
    assert (event["conn_id"], event["message_id"]) == (forger, None)
    # Not in the message's history, not counted as a callback (the sensor's fallback still asks Twilio).
    assert db.status_history(SID) == []
    assert db.message_states([SID])[SID]["events"] == 0
    sensor = SmsStatusSensor(task_id="wait", message_sid=SID, store_conn_id="sensor_store", deferrable=False,
                             fallback_after=None)
    assert not sensor.poke({"ti": None, "dag_run": None}).is_done  # no AirflowFailException "failed"
    # The production connection's own callback does move it.
    assert post_signed(client, STATUS, status_params("delivered")).json()["processed"] == 1
    assert db.get_message(sid=SID)["status"] == "delivered"


@pytest.mark.parametrize("forger", [*FORGERS, "sibling"])
def test_a_status_of_another_connection_never_links_a_send_whose_answer_was_lost(client, db, forger):
    """The idempotency key in the URL links a SID-less message only for the connection that sent it; a
    sibling (same account, same token) is another connection: status events are per connection."""
    claim = send_row(db, "order-2", sid=None)
    forged = forge(client, forger, "status", status_params("undelivered"), query="ik=order-2")
    assert forged.status_code == 200
    row = db.get_message(message_id=claim.message_id)
    assert (row["sid"], row["status"]) == (None, None)
    assert post_signed(client, STATUS, status_params("sent"), query="ik=order-2").json()["processed"] == 1
    assert db.get_message(message_id=claim.message_id)["sid"] == SID


# --- inbound replies --------------------------------------------------------------------------------


def _sent(db, **kw):
    """A SendSmsOperator result for the reply sensor's in_reply_to (its XCom), and the stored message."""
    send_row(db, "ask-1", **kw)
    return {"sid": SID, "idempotency_key": "ask-1", "account_sid": ACCOUNT}


def _reply_sensor(**kw):
    from airflow_provider_twilio_sms.sensors.sms import SmsReplySensor

    return SmsReplySensor(
        task_id="wait_reply",
        in_reply_to="send",
        keywords=["YES", "NO"],
        store_conn_id="sensor_store",
        deferrable=False,
        **kw,
    )


def _context(sent):
    class TI:
        map_index = -1

        def xcom_pull(self, task_ids):
            return {"send": sent}.get(task_ids)

    return {
        "ti": TI(),
        "dag_run": SimpleNamespace(
            start_date=datetime.now(timezone.utc) - timedelta(minutes=1), team_name=None
        ),
    }


@pytest.mark.parametrize("forger", FORGERS)
def test_a_yes_verified_by_another_connection_or_account_does_not_satisfy_a_reply_sensor(client, db, forger):
    ctx = _context(_sent(db))
    sensor = _reply_sensor()
    assert forge(client, forger, "inbound", inbound_params("YES", sid="SM" + "a" * 32)).status_code == 200
    assert not sensor.poke(ctx).is_done
    assert post_signed(client, INBOUND, inbound_params("no thanks", sid="SM" + "b" * 32)).status_code == 200
    found = sensor.poke(ctx)
    assert found.is_done
    assert (found.xcom_value["message_sid"], found.xcom_value["keyword"]) == ("SM" + "b" * 32, "NO")


def test_a_reply_through_a_sibling_connection_of_the_same_signer_counts(client, db):
    """Same Account SID and same token: one signer, so a number whose inbound webhook names another
    connection of the account still answers messages sent with this one."""
    ctx = _context(_sent(db))
    assert forge(client, "sibling", "inbound", inbound_params("YES", sid="SM" + "c" * 32)).status_code == 200
    assert _reply_sensor().poke(ctx).xcom_value["message_sid"] == "SM" + "c" * 32


def test_a_reply_to_a_number_the_message_was_not_sent_from_does_not_count(client, db):
    """Not named by the issue: the same account and connection, but the reply went to another of our
    numbers (or another Messaging Service) than the one the message came from."""
    ctx = _context(_sent(db))
    elsewhere = inbound_params("YES", sid="SM" + "d" * 32, To="+14155559999")
    assert post_signed(client, INBOUND, elsewhere).status_code == 200
    assert not _reply_sensor().poke(ctx).is_done
    assert post_signed(client, INBOUND, inbound_params("yes", sid="SM" + "e" * 32)).status_code == 200
    assert _reply_sensor().poke(ctx).xcom_value["message_sid"] == "SM" + "e" * 32


def test_a_reply_to_a_messaging_service_message_is_matched_by_its_service(client, db):
    service, other_service = "MG" + "1" * 32, "MG" + "2" * 32
    ctx = _context(_sent(db, from_number=None, messaging_service_sid=service))  # the service picks the number
    wrong = inbound_params("YES", sid="SM" + "f" * 32, To="+14155558888", MessagingServiceSid=other_service)
    assert post_signed(client, INBOUND, wrong).status_code == 200
    assert not _reply_sensor().poke(ctx).is_done
    right = inbound_params("YES", sid="SM" + "0" * 31 + "1", To="+14155558888", MessagingServiceSid=service)
    assert post_signed(client, INBOUND, right).status_code == 200
    assert _reply_sensor().poke(ctx).xcom_value["message_sid"] == right["MessageSid"]


# --- opt-outs ---------------------------------------------------------------------------------------


def _claim_to_them(db, key: str):
    """The claim the send path makes before every send to THEM from the production connection."""
    from airflow_provider_twilio_sms.store.claims import make_scope

    return db.claim(scope=make_scope(ACCOUNT), idempotency_key=key, account_sid=ACCOUNT, conn_id=CONN_ID,
                    signer=signer_of(), to_number=THEM, body="hi", refuse_opted_out=True)


@pytest.mark.parametrize("forger", FORGERS)
def test_a_stop_verified_by_another_account_or_token_does_not_opt_out(client, db, forger):
    assert (
        forge(
            client, forger, "inbound", inbound_params("STOP", sid="SM" + "a" * 32, OptOutType="STOP")
        ).status_code
        == 200
    )
    claim = _claim_to_them(db, "after-stop")
    assert claim.outcome == "new"  # what the send path asks before every send
    assert not db.is_opted_out(ACCOUNT, THEM, signer=signer_of())
    # The STOP the production connection verifies does opt the recipient out.
    assert (
        post_signed(
            client, INBOUND, inbound_params("STOP", sid="SM" + "b" * 32, OptOutType="STOP")
        ).status_code
        == 200
    )
    assert db.is_opted_out(ACCOUNT, THEM, signer=signer_of())
    assert _claim_to_them(db, "after-real-stop").outcome == "opted_out"


def test_a_copycats_start_does_not_undo_the_accounts_stop(client, db):
    assert post_signed(client, INBOUND, inbound_params("STOP", sid="SM" + "a" * 32)).status_code == 200
    assert (
        forge(client, "copycat", "inbound", inbound_params("START", sid="SM" + "b" * 32)).status_code == 200
    )
    assert db.is_opted_out(ACCOUNT, THEM, signer=signer_of())


# --- teams --------------------------------------------------------------------------------------------


def test_the_team_of_an_event_comes_from_stored_facts_never_from_the_query(client, db):
    send_row(db, "order-3", team="growth")
    # status: the message's team, whatever the (signed) query says
    assert post_signed(client, STATUS, status_params("sent"), query="ik=order-3&team=qa").status_code == 200
    [status] = events(db, kind="status")
    assert status["team"] == "growth"
    # a callback about a message that is not ours: the connection's team (none here), not the query's
    other = "SM" + "c" * 32
    assert post_signed(client, STATUS, status_params("sent", sid=other), query="team=qa").status_code == 200
    assert events(db, message_sid=other)[0]["team"] is None
    # inbound: the team of the message it answers, else the connection's
    assert (
        post_signed(client, INBOUND, inbound_params("YES", sid="SM" + "d" * 32), query="team=qa").status_code
        == 200
    )
    assert (
        post_signed(
            client, INBOUND, inbound_params("hi", sid="SM" + "e" * 32, From="+14155550999"), query="team=qa"
        ).status_code
        == 200
    )
    teams = {r["message_sid"]: r["team"] for r in events(db, kind="inbound")}
    assert teams == {"SM" + "d" * 32: "growth", "SM" + "e" * 32: None}


def test_an_inbound_never_takes_the_team_of_another_connections_message(client, db):
    send_row(db, "order-4", team="growth")
    assert (
        forge(
            client, "copycat", "inbound", inbound_params("YES", sid="SM" + "f" * 32), query="team=growth"
        ).status_code
        == 200
    )
    [row] = events(db, kind="inbound")
    assert (row["team"], row["message_id"]) == (None, None)


# --- connections that cannot prove a real account -----------------------------------------------------


@pytest.mark.parametrize(
    ("conn_id", "why"), [("dev_stand_in", "published Auth Token"), ("dev_loopback", "loopback stand-in")]
)
@pytest.mark.parametrize("kind", ["status", "inbound"])
def test_a_stand_in_connection_cannot_verify_webhooks_for_a_real_account(
    client, db, caplog, conn_id, why, kind
):
    send_row(db, "order-5")
    before = snapshot(db)
    params = status_params("failed") if kind == "status" else inbound_params("STOP", OptOutType="STOP")
    with caplog.at_level(logging.WARNING, logger=RECEIVER):
        refused = forge(client, conn_id, kind, params)
    assert refused.status_code == 403
    assert refused.content == b""
    assert snapshot(db) == before
    [line] = [r.getMessage() for r in caplog.records if r.name == RECEIVER]
    assert why in line
    assert conn_id in line
    assert "(HTTP 403)" in line
    assert TEST_AUTH_TOKEN not in line
    assert ACCOUNT not in line


def test_the_stand_in_account_itself_is_still_verified_by_a_stand_in_connection(client, db):
    response = forge(client, "stand_in", "status", status_params("delivered"))
    assert response.json() == {"success": True, "processed": 1}

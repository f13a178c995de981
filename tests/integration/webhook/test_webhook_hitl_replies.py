"""The inbound route's human-in-the-loop step on the real api-server app and the standalone app (SQLite
and PostgreSQL): what a reply with a reply code is answered, and that every inbound message is stored
whatever that step finds. The full path through a real scheduler is tests/integration/hitl/."""

from __future__ import annotations

import re
import uuid
from html import unescape

import pytest

from airflow_provider_twilio_sms.webhook.hitl_replies import TRY_AGAIN

from conftest import free_port
from webhook_testing import (
    ACCOUNT,
    CONN_ID,
    INBOUND,
    OURS,
    THEM,
    inbound_params,
    make_client,
    post_signed,
    signer_of,
    twilio_connection,
    use_store,
)

STRANGER = "+14155550199"


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection())


@pytest.fixture
def db(store, monkeypatch):
    return use_store(monkeypatch, store)


def _request(db, code="K7QX") -> str:
    """A HITL request texted to THEM (mapped to alice) for a task instance Airflow does not know."""
    return db.open_hitl_request(account_sid=ACCOUNT, conn_id=CONN_ID, signer=signer_of(),
                                ti_id=str(uuid.uuid4()), dag_id="d", run_id="r", task_id="t", map_index=-1,
                                to_number=THEM,
                                users={THEM: {"id": "alice", "name": "alice"}}, new_code=lambda: code)


def _reply(client, body, sender=THEM, sid=None):
    sid = sid or "SM" + uuid.uuid4().hex
    answer = post_signed(client, INBOUND, inbound_params(body, sid=sid, From=sender))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    found = re.search(r"<Message>(.*)</Message>", answer.text, re.DOTALL)
    return unescape(found.group(1)) if found else None


def _pending(db, code="K7QX"):
    rows = db.hitl_requests_by_code(account_sid=ACCOUNT, conn_id=CONN_ID, signer=signer_of(), code=code)
    return [r for r in rows if r["pending_code"]]


@pytest.mark.parametrize("mode", ["api-server", "standalone"])
def test_a_message_with_no_known_code_is_answered_as_before(db, request, mode):
    client = make_client(mode, request)
    _request(db)
    assert _reply(client, "AB2D 1") is None  # code-like, but no request holds it
    assert _reply(client, "Yes please") is None
    assert len(db.list_inbound(number=OURS)) == 2


@pytest.mark.parametrize("mode", ["api-server", "standalone"])
def test_an_unmapped_number_is_refused_and_nothing_changes(db, request, mode):
    client = make_client(mode, request)
    _request(db)
    assert "may not answer" in _reply(client, "K7QX 1", sender=STRANGER)
    assert len(_pending(db)) == 1
    assert len(db.list_inbound(number=OURS)) == 1


def test_inside_the_api_server_a_request_airflow_no_longer_holds_is_over(db, request):
    client = make_client("api-server", request)
    _request(db)
    assert "timed out" in _reply(client, "k7qx approve")
    assert _pending(db) == []  # settled: the code is free again for this number


def test_standalone_without_the_rest_api_configured_asks_to_send_again(db, request):
    client = make_client("standalone", request)
    _request(db)
    assert _reply(client, "K7QX 1") == TRY_AGAIN
    assert len(_pending(db)) == 1
    assert len(db.list_inbound(number=OURS)) == 1  # the reply itself is stored


def test_standalone_with_airflow_unreachable_asks_to_send_again(db, request, monkeypatch):
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__HITL_API_URL", nothing_listens)
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__HITL_API_TOKEN", "token")
    client = make_client("standalone", request)
    _request(db)
    assert _reply(client, "K7QX 1") == TRY_AGAIN
    assert len(_pending(db)) == 1


def test_airflow_gets_only_what_is_left_of_twilios_wait():
    import time

    from airflow_provider_twilio_sms.webhook.hitl_replies import (
        AIRFLOW_DEADLINE_SECONDS,
        REQUEST_BUDGET_SECONDS,
        _airflow_seconds,
    )

    now = time.monotonic()
    assert _airflow_seconds(None) == _airflow_seconds(now) == AIRFLOW_DEADLINE_SECONDS
    assert 2.5 < _airflow_seconds(now - (REQUEST_BUDGET_SECONDS - 3)) <= 3
    assert _airflow_seconds(now - 60) == 0.1

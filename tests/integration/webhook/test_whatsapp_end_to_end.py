"""WhatsApp and Content templates end to end, on SQLite and PostgreSQL: the example DAG through dag.test(),
the stand-in, its signed callbacks (sent, delivered, read) and inbound WhatsApp reply into the webhook app
(uvicorn) and the store, the reply sensor, and a free-form message inside the session window; then what
happens outside it (63016) and what the hook refuses before any request.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from sqlalchemy import select

from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.operators.sms import SendSmsOperator
from airflow_provider_twilio_sms.sensors.sms import SmsStatusSensor
from airflow_provider_twilio_sms.store import tables as t

from conftest import REPO, dag_test, free_port
from webhook_testing import API_TOKEN, ServedApp

OURS, CUSTOMER = "whatsapp:+15005550006", "whatsapp:+14155550100"
TEMPLATE = "HX00000000000000000000000000000001"


@pytest.fixture
def whatsapp_env(airflow_home, twilio_sim, twilio_conn, store_conn, monkeypatch):
    """The stand-in, the standalone webhook app on a loopback port writing to the test's store, and the
    connection sending from a WhatsApp sender with that app as its webhook base URL."""
    from airflow_provider_twilio_sms.webhook.app import create_app

    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__WEBHOOK_API_TOKEN", API_TOKEN)
    with ServedApp(create_app("standalone"), free_port()) as served:
        twilio_conn(from_number=OURS, webhook_base_url=served.url(""))
        twilio_sim.set_inbound_url(OURS, served.url("/twilio_sms/webhooks/twilio_sms_default/inbound"))
        twilio_sim.served = served
        yield twilio_sim, store_conn


def _rows(store, table, *where):
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).where(*where).order_by(table.c.id))]


def _wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.05)
    return found


def _reply_once_reminded(sim, body: str) -> threading.Thread:
    """The customer answers on WhatsApp as soon as the template reached them."""
    def run():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(c["params"].get("ContentSid") and c["sid"] for c in sim.creates()):
                sim.send_inbound(CUSTOMER, OURS, body, profile_name="Ada")
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_example_dag_reminds_with_a_template_reads_the_answer_and_replies_free_form(whatsapp_env):
    from airflow.dag_processing.dagbag import DagBag

    sim, store = whatsapp_env
    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    assert bag.import_errors == {}
    replier = _reply_once_reminded(sim, "confirm.")
    run = dag_test(bag.dags["twilio_sms_whatsapp"])
    replier.join(timeout=5)
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"remind": "success", "delivered": "success", "answer": "success", "decide": "success",
                      "thank": "success", "offer_times": "skipped"}

    creates = [c for c in sim.creates() if c["sid"]]
    assert [(c["to"], c["from"]) for c in creates] == [(CUSTOMER, OURS)] * 2
    assert creates[0]["params"]["ContentSid"] == TEMPLATE
    assert json.loads(creates[0]["params"]["ContentVariables"]) == {"1": "12/1", "2": "3pm"}
    assert "Body" not in creates[0]["params"]
    assert creates[1]["params"]["Body"] == "Thanks, see you then!"  # inside the window: it goes out

    sent = _wait_for(lambda: len([r for r in _rows(store, t.message) if r["status"] == "read"]) == 2 and
                     _rows(store, t.message))
    assert {(r["channel"], r["to_number"], r["from_number"], r["num_segments"], r["encoding"])
            for r in sent} == {("whatsapp", CUSTOMER, OURS, 1, None)}
    events = _rows(store, t.event)
    statuses = [e["status"] for e in events if e["kind"] == "status" and e["message_sid"] == sent[0]["sid"]]
    assert statuses == ["sent", "delivered", "read"]
    [inbound] = [e for e in events if e["kind"] == "inbound"]
    assert (inbound["channel"], inbound["from_number"], inbound["to_number"], inbound["opt_out_type"]) == \
        ("whatsapp", CUSTOMER, OURS, None)
    assert {e["channel"] for e in events} == {"whatsapp"}
    assert json.loads(inbound["payload"])["ProfileName"] == "Ada"
    # the read API says the channel and masks the address, keeping its channel
    for direction in ("outbound", "inbound"):
        page = requests.get(sim.served.url("/twilio_sms/api/messages"), params={"direction": direction},
                            headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10).json()
        customer = "to" if direction == "outbound" else "from"
        assert {(m["channel"], m[customer]) for m in page["messages"]} == {("whatsapp", "whatsapp:***0100")}
    # a filter by address, its + unescaped as people type it (it arrives as a space)
    for number, found in ((CUSTOMER, 2), ("+14155550100", 0)):
        page = requests.get(sim.served.url(f"/twilio_sms/api/messages?number={number}"),
                            headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10).json()
        assert len(page["messages"]) == found, page


def test_free_form_outside_the_window_fails_with_63016_and_says_what_to_do(whatsapp_env):
    from airflow.sdk import DAG

    sim, store = whatsapp_env
    with DAG("wa_outside_window", schedule=None) as dag:
        SendSmsOperator(task_id="send", to=CUSTOMER, body="Your order shipped") >> SmsStatusSensor(
            task_id="wait", from_task="send", mode="reschedule", poke_interval=1, timeout=60)
    run = dag_test(dag)
    assert run.state == "failed"
    [wait] = [ti for ti in run.get_task_instances() if ti.task_id == "wait"]
    assert wait.state == "failed"
    [row] = _rows(store, t.message)
    assert (row["status"], row["error_code"], row["channel"]) == ("failed", 63016, "whatsapp")


def test_an_sms_template_counts_one_unit_until_twilio_answers_and_the_digest_covers_its_variables(
        whatsapp_env, twilio_conn):
    from airflow.sdk import DAG

    sim, store = whatsapp_env
    twilio_conn(from_number="+15005550006")
    with DAG("sms_template", schedule=None) as dag:
        for name in ("Ada", "Grace"):
            SendSmsOperator(task_id=f"to_{name}", to="+14155550123", content_sid="HX" + "0" * 31 + "2",
                            content_variables={"name": name}, rate_limit="1/1h", rate_limit_unit="segments",
                            pool=f"pool_{name}")
    assert dag_test(dag).state == "success"
    rows = _rows(store, t.message)
    assert {(r["channel"], r["num_segments"]) for r in rows} == {("sms", 1)}
    assert len({r["body_sha256"] for r in rows}) == 2  # same template, other values: another message
    assert {c["params"]["ContentVariables"] for c in sim.creates()} == {'{"name":"Ada"}', '{"name":"Grace"}'}


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"to": CUSTOMER, "body": "x", "from_": "+15005550006"}, "is on whatsapp but the sender"),
    ({"to": "+14155550177", "body": "x"}, "is on sms but the sender"),  # the connection's sender is WhatsApp
    ({"to": CUSTOMER, "content_sid": "HX123"}, "not a Content template SID"),
    ({"to": CUSTOMER, "content_sid": TEMPLATE, "body": "x"}, "leave body and media_url out"),
    ({"to": CUSTOMER, "body": "x", "content_variables": {"1": "a"}}, "without content_sid"),
    ({"to": CUSTOMER, "content_sid": TEMPLATE, "content_variables": {"1": 5}}, "as a string"),
    ({"to": CUSTOMER, "content_sid": TEMPLATE, "content_variables": {"first name": "a"}}, "no spaces"),
    ({"to": "messenger:+14155550177", "body": "x"}, "SMS and WhatsApp only"),
])
def test_the_hook_refuses_before_any_request(whatsapp_env, kwargs, expected):
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook

    sim, _ = whatsapp_env
    kwargs = dict(kwargs)
    to = kwargs.pop("to")
    with pytest.raises(InvalidMessageError, match=expected) as caught:
        TwilioSmsHook().send_message(to, **kwargs)
    assert "4155550177" not in str(caught.value)  # the numbers given are masked
    assert "4155550100" not in str(caught.value)
    assert sim.count("create") == 0

"""SendSmsOperator in real Airflow: dag.test() with the example DAGs, block_orm_access, failure modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from hashlib import sha256
from types import SimpleNamespace

import pytest

from airflow_provider_twilio_sms.operators.sms import SendSmsOperator

from conftest import REPO, dag_test


@pytest.fixture
def airflow_env(airflow_home, twilio_conn, store_conn, twilio_sim):
    return twilio_sim, store_conn


def _dag(name):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    assert bag.import_errors == {}
    return bag.dags[name]


def test_every_example_dag_loads_without_import_errors(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    assert bag.import_errors == {}
    assert "twilio_sms_bulk_mapped" in bag.dags
    assert bag.dags["twilio_sms_purge"].schedule == "@daily"


def test_init_does_no_work_and_every_user_input_is_templated():
    op = SendSmsOperator(task_id="t", to="{{ params.phone }}", body="not validated here", rate_limit="??",
                         on_rate_limit="whatever")  # nothing is checked until execute
    for name in (
        "to",
        "body",
        "twilio_conn_id",
        "from_",
        "messaging_service_sid",
        "media_url",
        "idempotency_key",
        "rate_limit",
        "validity_period",
        "status_callback",
        "store_conn_id",
    ):
        assert name in op.template_fields
    assert op.to == "{{ params.phone }}"


def test_mapped_sends_under_a_team_pool_rate_limit_with_dag_test(airflow_env):
    sim, store = airflow_env
    run = _dag("twilio_sms_bulk_mapped").test(run_conf={"rate_limit": "5/3s"})
    assert run.state == "success"
    assert sim.count("create") == 7
    rows = store.list_messages(limit=20)
    assert len(rows) == 7
    assert len({r["idempotency_key"] for r in rows}) == 7
    assert {r["map_index"] for r in rows} == set(range(7))
    assert {r["pool"] for r in rows} == {"sms_team_qa"}
    from datetime import datetime

    arrived = sorted(datetime.fromisoformat(c["at"]) for c in sim.creates())  # when they reached "Twilio"
    assert len(arrived) == 7
    assert all((arrived[i + 5] - arrived[i]).total_seconds() >= 3 for i in range(2)), "6 sends within 3 s"


def test_the_status_callback_carries_the_idempotency_key(airflow_env, twilio_conn):
    sim, _ = airflow_env
    twilio_conn(webhook_base_url="https://airflow.example.com")
    from airflow.sdk import DAG

    with DAG("cb_dag", schedule=None) as dag:
        SendSmsOperator(task_id="send", to="+14155550123", body="hi", idempotency_key="order-42")
    dag_test(dag)
    [create] = sim.creates()
    # With Twilio's connection overrides, so that a 503 from the webhook (store unavailable) is retried.
    assert create["status_callback"] == ("https://airflow.example.com/twilio_sms/webhooks/twilio_sms_default/status"
                                         f"?ik_sha256={sha256(b'order-42').hexdigest()}#rc=5&rp=ct,rt,5xx")


def test_a_user_status_callback_gets_the_key_and_keeps_its_query_and_overrides(airflow_env):
    sim, _ = airflow_env
    from airflow.sdk import DAG

    url = "https://hooks.example.com/sms/status?source=qa&ik=stale&ik_sha256=stale#rc=5&rp=all"
    with DAG("user_cb_dag", schedule=None) as dag:
        SendSmsOperator(task_id="send", to="+14155550123", body="hi", idempotency_key="order 43",
                        status_callback=url)
    dag_test(dag)
    [create] = sim.creates()
    assert create["status_callback"] == ("https://hooks.example.com/sms/status?source=qa"
                                         f"&ik_sha256={sha256(b'order 43').hexdigest()}#rc=5&rp=all")


def test_permanent_error_fails_without_airflow_retries(airflow_env):
    sim, _ = airflow_env
    from airflow.sdk import DAG

    with DAG("perm_dag", schedule=None, default_args={"retries": 3}) as dag:
        SendSmsOperator(task_id="send", to="+15005550009", body="hi")
    run = dag_test(dag)
    assert run.state == "failed"
    assert sim.count("create") == 1


def test_xcom_holds_what_downstream_needs_and_no_full_number(airflow_env):
    sim, _ = airflow_env
    from airflow.sdk import DAG, task

    seen = {}
    with DAG("xcom_dag", schedule=None) as dag:
        sent = SendSmsOperator(task_id="send", to="+14155550123", body="hi")

        @task
        def after(result):
            seen.update(result)

        after(sent.output)
    assert dag_test(dag).state == "success"
    assert set(seen) >= {"sid", "status", "idempotency_key", "segments", "to", "sent_at"}
    assert seen["to"] == "***0123"
    assert "4155550123" not in json.dumps(seen)


def test_send_path_works_after_block_orm_access(airflow_env, tmp_path):
    """The task path never touches Airflow's ORM: it runs with the task SDK's block in place."""
    sim, store = airflow_env
    script = tmp_path / "blocked.py"
    script.write_text(textwrap.dedent("""
        from types import SimpleNamespace
        from airflow.sdk.execution_time.supervisor import block_orm_access
        block_orm_access()
        from airflow import settings
        assert "airflow-db-not-allowed" in str(settings.SQL_ALCHEMY_CONN)
        from airflow_provider_twilio_sms.operators.sms import SendSmsOperator
        ti = SimpleNamespace(dag_id="d", task_id="send", run_id="r1", map_index=-1, try_number=1)
        op = SendSmsOperator(task_id="send", to="+14155550123", body="hello", rate_limit="10/1m",
                             on_rate_limit="fail")
        result = op.execute({"ti": ti, "dag_run": SimpleNamespace(team_name=None)})
        assert result["sid"].startswith("SM"), result
        print("SENT", result["sid"])
    """))
    env = {**os.environ}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SENT SM" in done.stdout
    assert sim.count("create") == 1


@pytest.mark.parametrize("option", [None, "False", "True"])
def test_the_text_is_kept_only_with_store_outbound_bodies(airflow_env, monkeypatch, option):
    """The operator and the notifier keep the message text in the store only when [twilio_sms]
    store_outbound_bodies is on (default off); its SHA-256 always."""
    from types import SimpleNamespace

    from airflow.sdk import DAG

    from airflow_provider_twilio_sms.notifications.sms import SmsNotifier

    _, store = airflow_env
    if option is not None:
        monkeypatch.setenv("AIRFLOW__TWILIO_SMS__STORE_OUTBOUND_BODIES", option)
    with DAG("bodies_dag", schedule=None) as dag:
        SendSmsOperator(task_id="send", to="+14155550123", body="Your code is 909090")
    assert dag_test(dag).state == "success"
    SmsNotifier(to="+14155550124", body="DAG failed: 808080").send(
        {"dag_run": SimpleNamespace(dag_id="etl", run_id="run-1", team_name=None),
         "ti": SimpleNamespace(dag_id="etl", task_id="load", run_id="run-1", map_index=-1)})
    kept = {row["to_number"]: (row["body"], row["body_sha256"]) for row in store.list_messages()}
    texts = {"+14155550123": "Your code is 909090", "+14155550124": "DAG failed: 808080"}
    assert kept == {to: (text if option == "True" else None, sha256(text.encode()).hexdigest())
                    for to, text in texts.items()}


def test_notifier_sends_once_per_run_even_when_called_twice(airflow_env):
    from types import SimpleNamespace

    from airflow_provider_twilio_sms.notifications.sms import SmsNotifier

    sim, _ = airflow_env
    notifier = SmsNotifier(to="+14155550123", body="DAG failed")
    context = {"dag_run": SimpleNamespace(dag_id="etl", run_id="run-1", team_name=None),
               "ti": SimpleNamespace(dag_id="etl", task_id="load", run_id="run-1", map_index=-1)}
    first = notifier.send(context)
    assert notifier.notify(context) is None  # Airflow's entry point: the same path, no second SMS
    again = notifier.send(context)
    assert first["sid"] == again["sid"]
    assert again["already_sent"]
    assert sim.count("create") == 1


def test_notifier_messages_get_status_callbacks_too(airflow_env, twilio_conn):
    from types import SimpleNamespace

    from airflow_provider_twilio_sms.notifications.sms import SmsNotifier

    sim, store = airflow_env
    twilio_conn(webhook_base_url="https://airflow.example.com/")
    context = {"dag_run": SimpleNamespace(dag_id="etl", run_id="run-2", team_name=None),
               "ti": SimpleNamespace(dag_id="etl", task_id="load", run_id="run-2", map_index=-1)}
    result = SmsNotifier(to="+14155550123", body="DAG failed").send(context)
    [create] = sim.creates()
    assert create["status_callback"] == ("https://airflow.example.com/twilio_sms/webhooks/twilio_sms_default/status"
                                         f"?ik_sha256={sha256(result['idempotency_key'].encode()).hexdigest()}"
                                         "#rc=5&rp=ct,rt,5xx")



NOTIFIER_CONTEXT = {"dag_run": SimpleNamespace(dag_id="etl", run_id="run-3", team_name=None),
                    "ti": SimpleNamespace(dag_id="etl", task_id="load", run_id="run-3", map_index=-1)}
APPOINTMENT = "HX00000000000000000000000000000001"  # the stand-in's approved "appointment" template


def test_notifier_sends_a_whatsapp_template_rendered_from_the_context(airflow_env):
    """A business-initiated WhatsApp message needs an approved template: the notifier sends one, its
    variables rendered by Airflow's notifier call, through the operator's idempotent path (once)."""
    from airflow_provider_twilio_sms.content import content_digest
    from airflow_provider_twilio_sms.notifications.sms import SmsNotifier

    sim, store = airflow_env
    notifier = SmsNotifier(to="WhatsApp:+1 (415) 555-0123", from_="whatsapp:+15005550006",
                           content_sid="{{ params.template }}",
                           content_variables={"1": "{{ params.day }}", "2": "3pm"})
    assert notifier({**NOTIFIER_CONTEXT, "params": {"template": APPOINTMENT, "day": "12/1"}}) is None
    [create] = sim.creates()
    params = create["params"]
    assert (params["To"], params["From"], params["ContentSid"]) == (
        "whatsapp:+14155550123", "whatsapp:+15005550006", APPOINTMENT)
    assert json.loads(params["ContentVariables"]) == {"1": "12/1", "2": "3pm"}
    assert "Body" not in params
    [row] = store.list_messages(limit=10)
    assert (row["sid"], row["channel"], row["to_number"]) == (
        create["sid"], "whatsapp", "whatsapp:+14155550123")
    assert row["body_sha256"] == content_digest(None, APPOINTMENT, params["ContentVariables"])
    # the approved template goes out although the customer never wrote (no 63016)
    deadline = time.monotonic() + 10
    while sim.message(create["sid"])["status"] != "read" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (sim.message(create["sid"])["status"], sim.message(create["sid"])["error_code"]) == ("read", None)
    assert sim.message(create["sid"])["body"] == "Your appointment is on 12/1 at 3pm."
    again = notifier.send(NOTIFIER_CONTEXT)  # a callback run twice: no second message
    assert (again["sid"], again["already_sent"]) == (create["sid"], True)
    assert sim.count("create") == 1


@pytest.mark.parametrize(("arguments", "words"), [
    ({"content_sid": APPOINTMENT, "content_variables": {"1": "12/1", "2": "3pm"}, "body": "Hi"},
     "content_sid was given with a body"),
    ({"content_variables": {"1": "12/1"}, "body": "Hi"}, "content_variables was given without content_sid"),
    ({"content_sid": "HX123"}, "is not a Content template SID"),
    ({"body": "Hi", "send_at": "2026-12-24T09:00:00"}, "has no time zone"),
    ({"body": "Hi", "send_at": (datetime.now(timezone.utc) + timedelta(hours=20)).isoformat()},
     "send_at needs a Messaging Service"),
])
def test_notifier_refuses_what_the_operator_refuses_before_anything_is_sent(airflow_env, arguments, words):
    from airflow_provider_twilio_sms.errors import InvalidMessageError
    from airflow_provider_twilio_sms.notifications.sms import SmsNotifier

    sim, store = airflow_env
    notifier = SmsNotifier(to="whatsapp:+14155550123", from_="whatsapp:+15005550006", **arguments)
    with pytest.raises(InvalidMessageError, match=words):
        notifier(dict(NOTIFIER_CONTEXT))
    assert sim.count("create") == 0
    assert store.list_messages(limit=10) == []


def test_notifier_schedules_through_a_messaging_service(airflow_env):
    from airflow_provider_twilio_sms.notifications.sms import SmsNotifier

    sim, store = airflow_env
    service = "MG" + "5" * 32
    send_at = (datetime.now(timezone.utc) + timedelta(hours=20)).replace(microsecond=0)
    result = SmsNotifier(to="+14155550123", body="Reminder", messaging_service_sid=service,
                         send_at=send_at.isoformat()).send(NOTIFIER_CONTEXT)
    assert (result["status"], result["send_at"]) == ("scheduled", send_at.isoformat())
    assert sim.creates()[0]["params"]["MessagingServiceSid"] == service
    assert store.get_message(sid=result["sid"])["status"] == "scheduled"


def test_a_send_failed_by_the_rate_limit_leaves_no_pending_row(airflow_env):
    """on_rate_limit="fail": the task fails, nothing reached Twilio, and no claimed row is left for the
    messages page to count as pending."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowException

    sim, store = airflow_env

    def execute(task_id):
        ti = SimpleNamespace(dag_id="d", task_id=task_id, run_id="r1", map_index=-1, try_number=1)
        op = SendSmsOperator(task_id=task_id, to="+14155550123", body="hello", rate_limit="1/1m",
                             on_rate_limit="fail")
        return op.execute({"ti": ti, "dag_run": SimpleNamespace(team_name=None)})

    assert execute("first")["sid"].startswith("SM")
    with pytest.raises(AirflowException, match="rate limit 1 per 60 s"):
        execute("second")
    assert [r["send_state"] for r in store.list_messages(limit=10)] == ["sent"]
    assert sim.count("create") == 1

"""What a send leaves in Airflow's own tables, read back after a real ``dag.test()`` run: the rendered
template fields (``rendered_task_instance_fields``) hold the recipient masked, and a recipient passed as a
Variable's name keeps the number out of ``dag_run.conf`` too."""

from __future__ import annotations

import json
import uuid

import pytest

from airflow_provider_twilio_sms.operators.sms import SendSmsOperator

from conftest import dag_test

NUMBER = "+14155550188"


@pytest.fixture
def airflow_env(airflow_home, twilio_conn, twilio_sim, sqlite_url, monkeypatch):
    """Airflow's own tables are what these tests read: the store is SQLite here (it is not under test)."""
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    upgrade_url(sqlite_url)
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_STORE_DEFAULT",
                       json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": sqlite_url}}))
    return twilio_sim, SmsStore(sqlite_url)


@pytest.fixture
def dag_id(request) -> str:
    """A DAG id of this test alone (each test runs once per store database)."""
    return f"{request.node.originalname}_{uuid.uuid4().hex[:8]}"


def stored(dag_id: str) -> tuple[list[dict], list[dict]]:
    """The rendered fields and the run confs Airflow stored for ``dag_id``."""
    from airflow.models.dagrun import DagRun
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        fields = [r.rendered_fields for r in session.query(RenderedTaskInstanceFields)
                  .filter(RenderedTaskInstanceFields.dag_id == dag_id)]
        confs = [r.conf for r in session.query(DagRun).filter(DagRun.dag_id == dag_id)]
    return fields, confs


def test_the_rendered_recipient_is_stored_masked(airflow_env, dag_id):
    sim, store = airflow_env
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None, params={"phone": "+14155550100"}) as dag:
        SendSmsOperator(task_id="send", to="{{ params.phone }}", body="Your code is 998877")
    assert dag_test(dag, run_conf={"phone": NUMBER}).state == "success"
    [create] = sim.creates()
    assert create["to"] == NUMBER  # the real number went to Twilio
    [fields], [conf] = stored(dag_id)
    assert fields["to"] == "***"
    assert NUMBER[1:] not in json.dumps(fields)
    assert conf == {"phone": NUMBER}  # a number passed in the run's conf is kept there, by Airflow: see below


def test_mapped_sends_store_every_recipient_masked(airflow_env, dag_id):
    sim, _ = airflow_env
    from airflow.sdk import DAG

    numbers = ["+14155550161", "+14155550162"]
    with DAG(dag_id, schedule=None) as dag:
        SendSmsOperator.partial(task_id="send", body="hello").expand(to=numbers)
    assert dag_test(dag).state == "success"
    assert sorted(c["to"] for c in sim.creates()) == numbers
    fields, _ = stored(dag_id)
    assert len(fields) == 2
    assert all(f["to"] == "***" for f in fields)


def test_a_variable_reference_keeps_the_number_out_of_the_run_conf(airflow_env, dag_id, monkeypatch):
    sim, _ = airflow_env
    from airflow.sdk import DAG

    monkeypatch.setenv("AIRFLOW_VAR_QA_PHONE", NUMBER)
    with DAG(dag_id, schedule=None) as dag:
        SendSmsOperator(task_id="send", to="{{ var.value[dag_run.conf['recipient']] }}", body="hi")
    assert dag_test(dag, run_conf={"recipient": "qa_phone"}).state == "success"
    [create] = sim.creates()
    assert create["to"] == NUMBER
    [fields], [conf] = stored(dag_id)
    assert conf == {"recipient": "qa_phone"}
    assert fields["to"] == "***"


def test_the_reply_sensor_stores_its_numbers_masked(airflow_env, dag_id):
    from airflow.sdk import DAG

    from airflow_provider_twilio_sms.sensors.sms import SmsReplySensor

    with DAG(dag_id, schedule=None, params={"approver": NUMBER}) as dag:
        SmsReplySensor(task_id="wait", from_number="{{ params.approver }}", to_number="+15005550006",
                       keywords=["YES"], deferrable=False, mode="poke", poke_interval=0.2, timeout=0.5)
    dag_test(dag)  # no reply comes, the sensor times out: the rendered fields are stored before it pokes
    [fields], _ = stored(dag_id)
    assert fields["from_number"] == "***"
    assert fields["to_number"] == "***"
    assert NUMBER[1:] not in json.dumps(fields)

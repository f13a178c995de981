"""Scheduled sends in real Airflow (dag.test()): the example DAG's cancel path, a retried task that must
not schedule twice, the failure-callback notifier, the status sensor on a scheduled message, and the
``airflow twilio-sms cancel`` command; the store on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from airflow_provider_twilio_sms.operators.sms import SendSmsOperator

from conftest import REPO, dag_test, run_airflow

SERVICE = "MG" + "5" * 32
TO = "+14155550123"


@pytest.fixture
def airflow_env(airflow_home, twilio_conn, store_conn, twilio_sim):
    twilio_conn(messaging_service_sid=SERVICE)
    return twilio_sim, store_conn


def _example():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    assert bag.import_errors == {}
    return bag.dags["twilio_sms_scheduled_reminder"]


def test_the_example_cancels_its_reminder_when_the_booking_falls_through(airflow_env):
    sim, store = airflow_env
    run = _example().test(run_conf={"phone": TO, "hours_ahead": 20, "booking_confirmed": False})
    assert run.state == "failed"  # the booking check failed; the reminder must not go out
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["schedule_reminder"] == "success"
    assert states["cancel_reminder"] == "success"
    assert states["wait_delivered"] == "upstream_failed"
    [row] = store.list_messages(limit=10)
    assert row["status"] == "canceled"
    assert row["send_at"] - row["created_at"] > timedelta(hours=19)
    assert sim.message(row["sid"])["status"] == "canceled"
    assert sim.scheduled() == []
    params = sim.creates()[0]["params"]
    assert (params["ScheduleType"], params["MessagingServiceSid"]) == ("fixed", SERVICE)


def test_a_retried_task_returns_its_scheduled_message_and_never_schedules_twice(airflow_env):
    sim, store = airflow_env
    from airflow.sdk import DAG, task

    class CrashesAfterScheduling(SendSmsOperator):
        def execute(self, context):
            result = super().execute(context)
            if context["ti"].try_number == 1:
                raise RuntimeError("the worker died after Twilio scheduled the message")
            return result

    seen = []
    with DAG("retry_scheduled", schedule=None,
             default_args={"retries": 1, "retry_delay": timedelta(seconds=0)}) as dag:
        sent = CrashesAfterScheduling(
            task_id="send", to=TO, body="Reminder",
            send_at="{{ (dag_run.run_after + macros.timedelta(hours=2)).isoformat() }}")

        @task
        def after(result):
            seen.append(result)

        after(sent.output)
    run = dag_test(dag)
    assert run.state == "success"
    assert sim.count("create") == 1
    [result] = seen
    assert (result["status"], result["already_sent"]) == ("scheduled", True)
    assert result["sid"] == sim.messages()[0]["sid"]
    assert result["send_at"].endswith("+00:00")
    assert store.get_message(sid=result["sid"])["status"] == "scheduled"


def test_a_bad_send_at_fails_the_task_at_once_and_sends_nothing(airflow_env, twilio_conn):
    sim, store = airflow_env
    twilio_conn(messaging_service_sid=None)
    from airflow.sdk import DAG

    with DAG("bad_schedule", schedule=None, default_args={"retries": 2}) as dag:
        SendSmsOperator(task_id="send", to=TO, body="x", send_at="2026-12-24T09:00:00")
        SendSmsOperator(task_id="no_service", to=TO, body="x",
                        send_at="{{ (dag_run.run_after + macros.timedelta(days=1)).isoformat() }}")
    run = dag_test(dag)
    assert run.state == "failed"
    assert {ti.task_id: ti.try_number for ti in run.get_task_instances()} == {"send": 1, "no_service": 1}
    assert sim.count("create") == 0
    assert store.list_messages(limit=10) == []


def test_the_failure_notifier_cancels_what_the_run_still_has_scheduled(airflow_env):
    sim, store = airflow_env
    from airflow.sdk import DAG, task

    from airflow_provider_twilio_sms.notifications.scheduled import CancelScheduledSmsNotifier

    with DAG("notifier_cancels", schedule=None) as dag:
        send = SendSmsOperator(task_id="send", to=TO, body="Reminder",
                               send_at="{{ (dag_run.run_after + macros.timedelta(days=2)).isoformat() }}")

        @task(on_failure_callback=CancelScheduledSmsNotifier(task_ids="send"))
        def deploy():
            raise RuntimeError("the deploy failed")

        send >> deploy()
    run = dag_test(dag)
    assert run.state == "failed"
    [row] = store.list_messages(limit=10)
    assert row["status"] == "canceled"
    assert sim.message(row["sid"])["status"] == "canceled"


def test_the_status_sensor_waits_through_scheduled_and_fails_clearly_on_canceled(airflow_env):
    sim, store = airflow_env
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.scheduling import cancel_scheduled_message
    from airflow_provider_twilio_sms.sending import SendRequest, SmsSender
    from airflow_provider_twilio_sms.sensors.sms import SmsStatusSensor
    from airflow_provider_twilio_sms.store.base import utcnow

    def schedule(key):
        return SmsSender(TwilioSmsHook(), store).send(SendRequest(
            to=TO, body="x", idempotency_key=key, messaging_service_sid=SERVICE,
            send_at=utcnow() + timedelta(hours=1)))

    first, second = schedule("s1"), schedule("s2")
    sensor = SmsStatusSensor(task_id="wait", message_sid=first["sid"], fallback_after=0)
    assert not sensor.poke({}).is_done  # scheduled: not done, and Twilio is not asked before send_at
    assert sim.count("fetch") == 0
    # its moment comes: Twilio's statuses move it on as the webhook would store them
    sim.release_scheduled(first["sid"])
    for status in ("queued", "sent", "delivered"):
        store.record_status_event(account_sid=sim.account_sid, conn_id="twilio_sms_default",
                                  message_sid=first["sid"], status=status, payload={"MessageStatus": status})
        done = sensor.poke({})
        assert done.is_done == (status == "delivered")
    assert done.xcom_value["status"] == "delivered"

    cancel_scheduled_message(TwilioSmsHook(), store, sid=second["sid"])
    with pytest.raises(AirflowFailException,
                       match="was canceled before its scheduled time: nothing was sent"):
        SmsStatusSensor(task_id="wait2", message_sid=second["sid"]).poke({})


def test_the_cancel_command_by_key_by_sid_and_by_run(airflow_env, twilio_conn):
    sim, store = airflow_env
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.sending import SendRequest, SmsSender
    from airflow_provider_twilio_sms.store.base import utcnow

    def schedule(key, run_id="r1"):
        return SmsSender(TwilioSmsHook(), store).send(SendRequest(
            to=TO, body="x", idempotency_key=key, messaging_service_sid=SERVICE, dag_id="d", task_id="t",
            run_id=run_id, send_at=utcnow() + timedelta(hours=1)))

    by_key, by_sid, run_a, run_b = schedule("k1", "r0"), schedule("k2", "r0"), schedule("k3"), schedule("k4")
    env = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW")}
    done = run_airflow(["twilio-sms", "cancel", "--idempotency-key", "k1"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "canceled, was to be sent at" in done.stdout
    assert by_key["sid"] not in done.stdout  # masked
    done = run_airflow(["twilio-sms", "cancel", "--sid", by_sid["sid"], "--conn-id", "twilio_sms_default"],
                       env)
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_airflow(["twilio-sms", "cancel", "--dag-id", "d", "--run-id", "r1"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count(": canceled") == 2
    assert {sim.message(m["sid"])["status"] for m in (by_key, by_sid, run_a, run_b)} == {"canceled"}
    assert {store.get_message(sid=m["sid"])["status"] for m in (by_key, by_sid, run_a, run_b)} == {"canceled"}
    again = run_airflow(["twilio-sms", "cancel", "--idempotency-key", "k1"], env)
    assert again.returncode == 0
    assert "already canceled" in again.stdout
    wrong = run_airflow(["twilio-sms", "cancel", "--sid", by_sid["sid"], "--idempotency-key", "k1"], env)
    assert wrong.returncode == 1
    assert "exactly one way" in wrong.stderr
    unknown = run_airflow(["twilio-sms", "cancel", "--idempotency-key", "nope"], env)
    assert unknown.returncode == 1
    assert "no message was sent with this idempotency key" in unknown.stderr
    assert "4155550123" not in done.stdout + again.stdout


def _marked_failed(dag_id: str, run_id: str, *, task_id: str | None = None) -> None:
    """What Airflow's UI does on "Mark as failed": the code path behind PATCH .../dagRuns/{run} (a run) or
    PATCH .../taskInstances/{task} (one task), listeners included."""
    from airflow.api_fastapi.core_api.datamodels.task_instances import PatchTaskInstanceBody
    from airflow.api_fastapi.core_api.services.public.dag_run import patch_dag_run_state
    from airflow.api_fastapi.core_api.services.public.task_instances import _patch_task_instance_state
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one()
        dag = DBDagBag().get_dag_for_run(run, session=session)
        if task_id is None:
            patch_dag_run_state(dag=dag, dag_run=run, state=DagRunState.FAILED, session=session)
        else:
            body = PatchTaskInstanceBody(new_state="failed")
            _patch_task_instance_state(task_id, run_id, dag, body, body.model_dump(), session)


def _two_reminders(store, dag_id: str):
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None) as dag:
        for name in ("first", "second"):
            SendSmsOperator(task_id=name, to=TO, body=f"{name} reminder",
                            send_at="{{ (dag_run.run_after + macros.timedelta(days=1)).isoformat() }}")
    run = dag_test(dag)
    assert run.state == "success"
    scheduled = {row["task_id"]: row for row in store.scheduled_messages(dag_id=dag_id, run_id=run.run_id)}
    assert set(scheduled) == {"first", "second"}
    return run, scheduled


def test_marking_a_task_then_its_run_failed_in_the_ui_cancels_what_each_still_has_scheduled(airflow_env):
    sim, store = airflow_env
    run, sent = _two_reminders(store, "marked_failed")

    _marked_failed(run.dag_id, run.run_id, task_id="first")  # a person marks one sending task failed
    assert sim.message(sent["first"]["sid"])["status"] == "canceled"
    assert store.get_message(sid=sent["first"]["sid"])["status"] == "canceled"
    assert sim.message(sent["second"]["sid"])["status"] == "scheduled"  # the other task's is not touched

    _marked_failed(run.dag_id, run.run_id)  # then the whole run
    assert sim.message(sent["second"]["sid"])["status"] == "canceled"
    assert store.get_message(sid=sent["second"]["sid"])["status"] == "canceled"
    assert sim.count("create") == 2


def test_marks_cancel_nothing_when_the_option_is_off(airflow_env, monkeypatch):
    sim, store = airflow_env
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__CANCEL_SCHEDULED_WHEN_MARKED_FAILED", "False")
    run, sent = _two_reminders(store, "marked_failed_kept")
    _marked_failed(run.dag_id, run.run_id)
    assert {sim.message(row["sid"])["status"] for row in sent.values()} == {"scheduled"}

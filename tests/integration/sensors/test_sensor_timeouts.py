"""Sensors in real task runs (dag.test): a reply that never comes times out; an undelivered message fails."""

from __future__ import annotations

import threading
import time

from airflow_provider_twilio_sms.operators.sms import SendSmsOperator
from airflow_provider_twilio_sms.sensors.sms import SmsReplySensor, SmsStatusSensor

from conftest import dag_test


def _states(run):
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_reply_sensor_times_out_when_no_reply_comes(airflow_home, twilio_conn, store_conn):
    from airflow.sdk import DAG

    with DAG("reply_timeout", schedule=None) as dag:
        SmsReplySensor(
            task_id="wait",
            to_number="+15005550006",
            keywords=["YES"],
            poke_interval=0.5,
            timeout=2,
            mode="poke",
        )
    started = time.monotonic()
    run = dag_test(dag)
    assert run.state == "failed"
    assert _states(run)["wait"] == "failed"
    assert time.monotonic() - started < 60


def test_undelivered_message_fails_the_status_sensor(airflow_home, twilio_conn, store_conn, twilio_sim):
    """The stand-in reports 30003; its callback (stored as the webhook would) fails the sensor at once."""
    from airflow.sdk import DAG

    twilio_sim.set_outcome("+14155550177", "undelivered", 30003)
    store = store_conn

    def webhook_standin():  # what the webhook stores for the stand-in's callbacks (tested on its own)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for message in twilio_sim.messages():
                if message["status"] == "undelivered":
                    store.record_status_event(
                        account_sid=message["account_sid"],
                        conn_id="twilio_sms_default",
                        message_sid=message["sid"],
                        status="undelivered",
                        error_code=30003,
                        payload={"MessageStatus": "undelivered"},
                    )
                    return
            time.sleep(0.1)

    threading.Thread(target=webhook_standin, daemon=True).start()
    with DAG("undelivered", schedule=None) as dag:
        send = SendSmsOperator(task_id="send", to="+14155550177", body="hello")
        wait = SmsStatusSensor(task_id="wait", from_task="send", poke_interval=0.5, timeout=60, mode="poke")
        send >> wait
    run = dag_test(dag)
    states = _states(run)
    assert states == {"send": "success", "wait": "failed"}

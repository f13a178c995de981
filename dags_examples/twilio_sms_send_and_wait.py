"""Send an order notification and wait until the carrier reports it delivered.

The status sensor reads the delivery statuses Twilio posts to the webhook; an ``undelivered`` or
``failed`` status fails it at once with Twilio's error code. It pokes in ``reschedule`` mode, so it
gives its worker slot back between pokes.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_provider_twilio_sms.operators.sms import SendSmsOperator
from airflow_provider_twilio_sms.sensors.sms import SmsStatusSensor

with DAG(
    dag_id="twilio_sms_send_and_wait",
    schedule=None,
    catchup=False,
    tags=["twilio_sms", "example"],
    params={"phone": Param("+14155550100", type="string"), "order": Param("A-1001", type="string")},
) as dag:
    send = SendSmsOperator(
        task_id="send",
        to="{{ params.phone }}",
        body="Your order {{ params.order }} has shipped.",
    )
    delivered = SmsStatusSensor(
        task_id="wait_delivered",
        from_task="send",
        mode="reschedule",
        poke_interval=1,
        timeout=300,
    )
    send >> delivered

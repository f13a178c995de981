"""Schedule an appointment reminder with Twilio, cancel it if the booking falls through.

``send_at`` makes Twilio hold the message until then (15 minutes to 35 days ahead; it needs a Messaging
Service: the connection's ``messaging_service_sid`` here, or the operator's). A retried or cleared task
returns the message it already scheduled instead of scheduling a second one. When the booking check fails,
``cancel_reminder`` (trigger rule ``one_failed``) cancels it at Twilio and records ``canceled``; the status
sensor waits through ``scheduled`` until the reminder is delivered.

Offline, the demo's stand-in releases held messages at once instead of after ``hours_ahead`` hours.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_twilio_sms.operators.scheduled import CancelScheduledSmsOperator
from airflow_provider_twilio_sms.operators.sms import SendSmsOperator
from airflow_provider_twilio_sms.sensors.sms import SmsStatusSensor

with DAG(
    dag_id="twilio_sms_scheduled_reminder",
    schedule=None,
    catchup=False,
    tags=["twilio_sms", "example"],
    params={
        "phone": Param("+14155550100", type="string"),
        "hours_ahead": Param(20, type="integer", minimum=1, maximum=24 * 35 - 1),
        "booking_confirmed": Param(True, type="boolean"),
    },
) as dag:
    remind = SendSmsOperator(
        task_id="schedule_reminder",
        to="{{ params.phone }}",
        body="Reminder: your appointment is tomorrow at 10:00. Reply C to cancel.",
        send_at="{{ (dag_run.run_after + macros.timedelta(hours=params.hours_ahead)).isoformat() }}",
    )

    @task
    def check_booking(**context) -> str:
        if not context["params"]["booking_confirmed"]:
            raise AirflowFailException("the booking was canceled: the reminder must not go out")
        return "confirmed"

    checked = check_booking()
    cancel = CancelScheduledSmsOperator(task_id="cancel_reminder", task_ids=["schedule_reminder"],
                                        trigger_rule="one_failed")
    delivered = SmsStatusSensor(task_id="wait_delivered", from_task="schedule_reminder", mode="reschedule",
                                poke_interval=1, timeout=600)
    remind >> checked >> [cancel, delivered]

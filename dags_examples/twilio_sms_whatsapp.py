"""Appointment reminder on WhatsApp: an approved Content template, the customer's answer, a free-form reply.

WhatsApp lets a business start a conversation only with a template WhatsApp approved (``content_sid``);
once the customer answers, a 24-hour session window is open and free-form text (``body``) goes out too.
Outside it Twilio fails free-form WhatsApp messages with error 63016.

Offline, the stand-in's test template ``HX00000000000000000000000000000001`` is the approved
"appointment_reminder" (``Your appointment is on {{1}} at {{2}}.``). The connection sends from a WhatsApp
sender: its ``from_number`` extra written ``whatsapp:+15005550006`` (or give ``from_=`` here, or send through
a Messaging Service that has a WhatsApp sender).
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from airflow_provider_twilio_sms.operators.sms import SendSmsOperator
from airflow_provider_twilio_sms.sensors.sms import SmsReplySensor, SmsStatusSensor

with DAG(
    dag_id="twilio_sms_whatsapp",
    schedule=None,
    catchup=False,
    tags=["twilio_sms", "whatsapp", "example"],
    params={
        "customer": Param("whatsapp:+14155550100", type="string"),
        "template": Param("HX00000000000000000000000000000001", type="string"),
        "day": Param("12/1", type="string"),
        "time": Param("3pm", type="string"),
    },
) as dag:
    remind = SendSmsOperator(
        task_id="remind",
        to="{{ params.customer }}",
        content_sid="{{ params.template }}",
        content_variables={"1": "{{ params.day }}", "2": "{{ params.time }}"},
    )
    # WhatsApp reports read after delivered; a wait for delivered ends at either.
    delivered = SmsStatusSensor(task_id="delivered", from_task="remind", mode="reschedule", poke_interval=1,
                                timeout=300)
    answer = SmsReplySensor(task_id="answer", in_reply_to="remind", keywords=["CONFIRM", "RESCHEDULE"],
                            mode="poke", poke_interval=1, timeout=300)

    @task.branch
    def decide(reply: dict) -> str:
        return "thank" if reply["keyword"] == "CONFIRM" else "offer_times"

    # The customer just wrote: the session window is open, so free-form text goes out.
    thank = SendSmsOperator(task_id="thank", to="{{ params.customer }}", body="Thanks, see you then!")
    offer_times = SendSmsOperator(task_id="offer_times", to="{{ params.customer }}",
                                  body="No problem: reply with a day and time that suit you.")

    remind >> delivered
    remind >> answer
    decide(answer.output) >> [thank, offer_times]

"""Approval by SMS: text the on-call person, wait for YES or NO, branch on the answer.

The reply sensor only counts replies from the person we texted, to the number we texted from, after
we texted; a STOP fails it at once instead of waiting out the timeout.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from airflow_provider_twilio_sms.operators.sms import SendSmsOperator
from airflow_provider_twilio_sms.sensors.sms import SmsReplySensor

with DAG(
    dag_id="twilio_sms_approval",
    schedule=None,
    catchup=False,
    tags=["twilio_sms", "example"],
    params={"approver": Param("+14155550100", type="string")},
) as dag:
    ask = SendSmsOperator(
        task_id="ask", to="{{ params.approver }}", body="Reply YES to approve the deploy, NO to stop it"
    )
    answer = SmsReplySensor(task_id="wait_answer", in_reply_to="ask", keywords=["YES", "NO"], mode="poke",
                            poke_interval=1, timeout=300)

    @task.branch
    def decide(reply: dict) -> str:
        # "keyword" is the entry of keywords the reply's first word matched (any case: "yes." counts)
        return "deploy" if reply["keyword"] == "YES" else "stop"

    @task
    def deploy() -> str:
        return "deployed"

    @task
    def stop() -> str:
        return "stopped"

    ask >> answer
    decide(answer.output) >> [deploy(), stop()]

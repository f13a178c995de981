"""Bulk notification: one mapped SendSmsOperator per recipient, all under one team pool's rate limit.

Each mapped instance has its own idempotency key (dag, task, run, map index, recipient), so a retry of
one instance never re-sends another's message, and the pool's limit (here 5 per minute) holds across
every worker. With ``on_rate_limit="defer"`` a task that finds no free slot gives its worker back and
resumes when the window frees up.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_provider_twilio_sms.operators.sms import SendSmsOperator

# Mapped over a literal list, not an upstream task's XCom, so that no phone number is stored in XCom.
RECIPIENTS = ["+14155550101", "+14155550102", "+14155550103", "+14155550104", "+14155550105",
              "+14155550106", "+14155550107"]

with DAG(
    dag_id="twilio_sms_bulk_mapped",
    schedule=None,
    catchup=False,
    tags=["twilio_sms", "example"],
    params={
        "message": Param("Your order has shipped.", type="string"),
        "rate_limit": Param("5/1m", type="string", description="COUNT/WINDOW for the team pool"),
    },
) as dag:
    SendSmsOperator.partial(
        task_id="notify_customers",
        body="{{ params.message }}",
        pool="sms_team_qa",
        rate_limit="{{ params.rate_limit }}",
        on_rate_limit="defer",
    ).expand(to=RECIPIENTS)

"""Human-in-the-loop by SMS: Airflow's own approval and branch operators, answered by text message.

Each HITL task texts the approver its subject, the numbered options and a reply code ("Reply "K7QX 1" for
Approve, ..."); the reply goes through Twilio to the provider's inbound webhook, which answers the request
through Airflow's HITL API as the Airflow user the phone belongs to. The request stays answerable in
Airflow's UI too: the first answer wins.

Who answers from which phone: ``users=`` below, or ``[twilio_sms] hitl_users`` for an admin's mapping. The
connection's inbound webhook URL at Twilio must be ``<api-server>/twilio_sms/webhooks/<conn_id>/inbound``.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLBranchOperator
from airflow.sdk import DAG

from airflow_provider_twilio_sms.notifications.hitl import SmsHitlNotifier

APPROVER_PHONE = "+14155550101"  # the approver's phone
APPROVER = {"id": "alice", "name": "alice"}  # the Airflow user of that phone

with DAG(
    dag_id="twilio_sms_hitl",
    schedule=None,
    catchup=False,
    is_paused_upon_creation=False,
    tags=["twilio_sms", "example", "hitl"],
) as dag:
    by_sms = SmsHitlNotifier(to=APPROVER_PHONE, users={APPROVER_PHONE: APPROVER["id"]})
    approve = ApprovalOperator(
        task_id="approve_release",
        subject="Release {{ run_id }} to production?",
        body="All checks passed.",
        assigned_users=[APPROVER],
        notifiers=[by_sms],
        response_timeout=timedelta(hours=4),
    )
    rollout = HITLBranchOperator(
        task_id="choose_rollout",
        subject="How should {{ run_id }} roll out?",
        options=["Canary", "Everyone"],
        options_mapping={"Canary": "canary", "Everyone": "everyone"},
        assigned_users=[APPROVER],
        notifiers=[by_sms],
    )
    approve >> rollout >> [EmptyOperator(task_id="canary"), EmptyOperator(task_id="everyone")]

"""DAGs the human-in-the-loop end-to-end test copies into its Airflow's dags folder (with the example DAG).

Alice (+14155550101) is the approver, mapped by the notifiers; Bob (+14155550102) is mapped only by the
admin (``[twilio_sms] hitl_users``) and assigned nothing; Mallory (+14155550103) is mapped by nobody.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLBranchOperator, HITLEntryOperator
from airflow.sdk import DAG, Param

from airflow_provider_twilio_sms.notifications.hitl import SmsHitlNotifier

ALICE, BOB = "+14155550101", "+14155550102"
ALICE_USER = {"id": "alice", "name": "alice"}


def notifier(*to: str) -> SmsHitlNotifier:
    return SmsHitlNotifier(to=list(to), users={ALICE: "alice"})


with DAG(dag_id="hitl_sms_approval", schedule=None, catchup=False, is_paused_upon_creation=False,
         max_active_runs=8) as approval_dag:
    ApprovalOperator(task_id="approval", subject="Deploy {{ run_id }}?", assigned_users=[ALICE_USER],
                     notifiers=[notifier(ALICE, BOB)]) >> EmptyOperator(task_id="deploy")

with DAG(dag_id="hitl_sms_entry", schedule=None, catchup=False, is_paused_upon_creation=False) as entry_dag:
    HITLEntryOperator(task_id="entry", subject="Why {{ run_id }}?", notifiers=[notifier(ALICE)],
                      params={"reason": Param("", type="string"), "count": Param(1, type="integer")})

with DAG(dag_id="hitl_sms_multiple", schedule=None, catchup=False,
         is_paused_upon_creation=False) as multi_dag:
    choose = HITLBranchOperator(task_id="choose", subject="Regions for {{ run_id }}?",
                                options=["eu", "us", "asia"], multiple=True, notifiers=[notifier(ALICE)])
    choose >> [EmptyOperator(task_id="eu"), EmptyOperator(task_id="us"), EmptyOperator(task_id="asia")]

with DAG(dag_id="hitl_sms_timeout", schedule=None, catchup=False,
         is_paused_upon_creation=False) as timeout_dag:
    ApprovalOperator(task_id="approval", subject="Quick {{ run_id }}?", defaults="Reject",
                     response_timeout=timedelta(seconds=2), notifiers=[notifier(ALICE)])

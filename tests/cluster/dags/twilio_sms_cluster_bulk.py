"""The cluster tests' bulk run: one mapped SendSmsOperator per recipient, in one team pool under one rate
limit, retried by Airflow when a worker dies or the store is briefly unreachable.

The number of recipients comes from ``TWILIO_SMS_CLUSTER_SENDS`` (default 200) in the DAG processor's
environment; the recipients are fictional numbers (555-01xx style, never a real phone).
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, Param

from airflow_provider_twilio_sms.operators.sms import SendSmsOperator

SENDS = int(os.environ.get("TWILIO_SMS_CLUSTER_SENDS", "200"))
RECIPIENTS = [f"+1415555{1000 + i:04d}" for i in range(SENDS)]

with DAG(
    dag_id="twilio_sms_cluster_bulk",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["twilio_sms", "cluster-test"],
    params={"rate_limit": Param("20/10s", type="string"), "message": Param("Cluster test.", type="string")},
) as dag:
    SendSmsOperator.partial(
        task_id="notify",
        body="{{ params.message }}",
        pool="sms_team_cluster",
        rate_limit="{{ params.rate_limit }}",
        on_rate_limit="defer",
        retries=3,
        retry_delay=timedelta(seconds=6),
    ).expand(to=RECIPIENTS)

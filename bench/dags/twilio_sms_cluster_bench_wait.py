"""bench/cluster.py's deferred sensors: status sensors waiting on messages whose status never comes, so
that they stay deferred on the triggerer while the bench counts the store queries it makes.

How many: ``TWILIO_SMS_CLUSTER_WAITS`` (default 500) in the DAG processor's environment. The SIDs are
made up (``SM`` + 32 hex digits); no Twilio fallback during the bench (``fallback_after`` an hour).
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from airflow_provider_twilio_sms.sensors.sms import SmsStatusSensor

WAITS = int(os.environ.get("TWILIO_SMS_CLUSTER_WAITS", "500"))
SIDS = [f"SM{i:032x}" for i in range(WAITS)]

with DAG(dag_id="twilio_sms_cluster_bench_wait", schedule=None, catchup=False,
         tags=["twilio_sms", "bench"]) as dag:
    SmsStatusSensor.partial(task_id="wait", deferrable=True, poll_interval=5, timeout=3600,
                            fallback_after=3600).expand(message_sid=SIDS)

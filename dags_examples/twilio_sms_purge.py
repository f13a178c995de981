"""Daily retention: delete what the Twilio SMS store holds for longer than ``[twilio_sms] retention_days``.

The task calls the same store method as ``airflow twilio-sms db purge``: webhook events, finished
messages, reply waits and idle rate-limit pools older than the retention go, in batches of 5 000 rows per
transaction, so the store stays available to senders and webhooks while it runs. Opt-outs stay. The
rows deleted per table go to XCom (counts only, nothing personal).

A purged message's idempotency key is forgotten: keep the retention far longer than any task can still be
retried or cleared (the default is 30 days).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task


@dag(
    dag_id="twilio_sms_purge",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["twilio_sms", "example", "retention"],
)
def twilio_sms_purge():
    @task
    def purge() -> dict[str, int]:
        # Imported when the task runs, not when the DAG file is parsed.
        from airflow_provider_twilio_sms.retention import configured_age
        from airflow_provider_twilio_sms.store.locate import get_store

        return get_store().purge(configured_age())

    purge()


twilio_sms_purge()

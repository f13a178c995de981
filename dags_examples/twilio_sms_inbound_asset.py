"""Run a DAG when an SMS asks for it: inbound SMS as asset events (Airflow 3 event-driven scheduling).

Someone texts ``deploy billing`` to your Twilio number; the webhook app stores the verified message; the
triggerer's ``SmsInboundEventTrigger`` finds it and emits one asset event for it; the scheduler runs this
DAG. Offline, with the local stand-in (``airflow twilio-sms simulator`` forwarding our number's messages to
the webhook)::

    airflow twilio-sms simulator reply --from +14155550100 --to +15005550006 --body "deploy billing"

The event carries the message SID and what the pattern captured, never the text or the sender's number
(the trigger's ``include_body`` / ``include_from_number`` add them). When several messages arrive before
the scheduler creates the run, one run sees them all: iterate over the triggering events.
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_twilio_sms.triggers.inbound_events import SmsInboundEventTrigger

deploy_requests = Asset("twilio_sms_deploy_requests", watchers=[AssetWatcher(
    name="twilio_sms_deploy_requests",
    trigger=SmsInboundEventTrigger(
        to_number="+15005550006",  # your Twilio number (the stand-in's test sender)
        pattern=r"^\s*deploy\s+(?P<service>[a-z0-9_-]+)\s*$",
        twilio_conn_id="twilio_sms_default",
        poll_interval=2,
    ),
)])

with DAG(
    dag_id="twilio_sms_inbound_asset",
    schedule=[deploy_requests],
    catchup=False,
    tags=["twilio_sms", "example"],
) as dag:

    @task
    def deploy(triggering_asset_events=None) -> list[dict]:
        """One deploy per message: the service the sender named, and the message's SID to trace it."""
        asked = []
        for event in triggering_asset_events[deploy_requests]:
            payload = event.extra["payload"]
            asked.append({"service": payload["named_groups"]["service"],
                          "message_sid": payload["message_sid"]})
        return asked

    deploy()

"""``airflow twilio-sms webhook serve``: the webhook app on its own, for Airflows Twilio cannot reach."""

from __future__ import annotations


def serve(args) -> None:
    import uvicorn

    from airflow_provider_twilio_sms.webhook.app import URL_PREFIX, create_app

    app = create_app(mode="standalone", store_url=args.store_url)
    print(f"Twilio SMS webhooks on http://{args.host}:{args.port}{URL_PREFIX}/webhooks/<conn_id>/status|inbound")
    # access_log off: request lines carry nothing secret, but keep logs to our own masked lines
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")

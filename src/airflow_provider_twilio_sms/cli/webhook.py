"""``airflow twilio-sms webhook serve``: the webhook app on its own, for Airflows Twilio cannot reach.

The store is ``--store-url``, else the store connection (``[twilio_sms] store_conn_id``). Both are
checked before the server starts, so a wrong setup fails here with what to fix rather than with 503s.
"""

from __future__ import annotations

import os
import sys


def serve(args) -> None:
    # A server process, like the api-server: connection lookups (the store's and each twilio_sms one)
    # include Airflow's metadata database after the secrets backend and AIRFLOW_CONN_* variables.
    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
    import uvicorn

    from airflow_provider_twilio_sms.errors import ConnectionConfigError
    from airflow_provider_twilio_sms.store.locate import get_store
    from airflow_provider_twilio_sms.webhook.app import create_app
    from airflow_provider_twilio_sms.webhook.urls import webhook_path

    try:
        store = get_store(url=args.store_url)
    except ConnectionConfigError as err:
        sys.exit(f"Cannot serve Twilio webhooks: {err}")
    try:
        store.check_ready()
    except Exception as err:  # noqa: BLE001 - report and serve anyway: requests answer 503 until it is back
        print(f"Warning: the store does not answer yet ({type(err).__name__}); webhooks get 503 until it "
              "does. Run `airflow twilio-sms db migrate` if its tables do not exist.", file=sys.stderr)
    app = create_app(mode="standalone", store_url=args.store_url)
    app.state.twilio_sms.use_store(store)
    print(f"Twilio SMS webhooks on http://{args.host}:{args.port}{webhook_path('<conn_id>', 'status')} "
          f"and .../inbound; store: {store.dialect}", flush=True)
    # No access log: our own lines are masked; uvicorn's would carry every query string.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")

"""``airflow twilio-sms simulator [serve|reply|fault|status]``."""

from __future__ import annotations

import json
import signal
import sys
import threading


def _url(args) -> str:
    return (args.url or f"http://127.0.0.1:{args.port}").rstrip("/")


def _post(args, action: str, payload: dict) -> dict:
    import requests

    response = requests.post(f"{_url(args)}/_sim/{action}", json=payload, timeout=30)
    if response.status_code != 200:
        sys.exit(f"simulator refused {action}: {response.status_code} {response.text}")
    return response.json()


def run(args) -> None:
    action = getattr(args, "action", None) or "serve"
    if action == "serve":
        _serve(args)
    elif action == "reply":
        if not (args.from_ and args.to):
            sys.exit("reply needs --from (the sender) and --to (your Twilio number with an inbound URL)")
        answer = _post(args, "inbound", {"from": args.from_, "to": args.to, "body": args.body or ""})
        print(f"inbound message {answer['message_sid']} delivered; the webhook answered {answer['status_code']}")
    elif action == "fault":
        if not args.fault:
            sys.exit('fault needs --fault JSON, e.g. --fault \'{"kind": "429", "count": 2}\'')
        _post(args, "faults", json.loads(args.fault))
        print("fault set")
    else:
        import requests

        print(json.dumps(requests.get(f"{_url(args)}/_sim/state", timeout=30).json(), indent=2))


def _serve(args) -> None:
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

    sim = TwilioSimulator(host=args.host, port=args.port).start()
    print(f"Twilio stand-in listening on {sim.base_url}")
    print(f"  account SID: {sim.account_sid}")
    print(f"  auth token:  {sim.auth_token}")
    print(f"  use it with a twilio_sms connection whose extra api_base_url is {sim.base_url}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    sim.stop()

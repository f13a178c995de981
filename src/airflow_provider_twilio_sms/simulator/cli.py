"""``airflow twilio-sms simulator [serve|reply|fault|status]``.

- ``serve`` (default): run the stand-in on ``--host``/``--port`` until SIGINT or SIGTERM; prints its base
  URL and the test account's SID and Auth Token. ``--inbound-url +15005550006=http://.../inbound``
  (repeatable) sets where inbound messages to that number go; ``--callback-delay`` the seconds between
  a send and its status callbacks.
- ``reply --from +1555... --to <our number> --body YES [--media-url URL ...]``: the running stand-in
  posts a signed inbound message to the inbound URL of ``--to`` (``serve --inbound-url``, or
  ``POST /_sim/numbers``).
- ``fault --fault '{"kind": "429", "count": 2}'`` sets a fault (``--fault clear`` removes them all).
- ``status``: what the running stand-in received and sent, as JSON.

The last three talk to ``--url`` (default ``http://127.0.0.1:<--port>``).

It is a developer tool, not Twilio, and says so when it starts. Its control endpoints (``/_sim/...``)
answer only loopback clients unless ``serve`` gets ``--control-token`` (or the environment variable
``TWILIO_SMS_SIMULATOR_CONTROL_TOKEN``); then every client must send that token, which ``reply``,
``fault`` and ``status`` take the same way.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any


def _url(args: Any) -> str:
    if getattr(args, "url", None):
        return str(args.url).rstrip("/")
    host = getattr(args, "host", None) or "127.0.0.1"
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    return f"http://{host}:{args.port}"


def _control_token(args: Any) -> str | None:
    from airflow_provider_twilio_sms.simulator.control import TOKEN_ENV

    return getattr(args, "control_token", None) or os.environ.get(TOKEN_ENV) or None


def _call(args: Any, method: str, action: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    import requests

    url = f"{_url(args)}/_sim/{action}"
    token = _control_token(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.request(method, url, json=payload, headers=headers, timeout=30)
    except requests.ConnectionError:
        sys.exit(f"no Twilio stand-in answers at {_url(args)}: start one with `airflow twilio-sms simulator "
                 f"serve --port {args.port}` or pass --url")
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.text[:500]}
    if response.status_code != 200:
        sys.exit(f"the stand-in refused {action}: {answer.get('error', answer)}")
    return answer


def run(args: Any) -> None:
    action = getattr(args, "action", None) or "serve"
    if action == "serve":
        _serve(args)
    elif action == "reply":
        _reply(args)
    elif action == "fault":
        _fault(args)
    elif action == "status":
        print(json.dumps(_masked(_call(args, "GET", "state")), indent=2))
    else:
        sys.exit(f"unknown simulator action {action!r}: serve, reply, fault or status")


def _masked(state: dict[str, Any]) -> dict[str, Any]:
    """The state for a terminal: phone numbers keep their last four digits (the JSON API has them whole)."""
    from airflow_provider_twilio_sms.privacy import mask_number

    state = dict(state)
    for key in ("outcomes", "numbers"):
        state[key] = {mask_number(number): value for number, value in (state.get(key) or {}).items()}
    state["opt_outs"] = [{k: mask_number(v) for k, v in pair.items()} for pair in state.get("opt_outs") or []]
    state["faults"] = [{**fault, "to": mask_number(fault["to"]) if fault.get("to") else None}
                       for fault in state.get("faults") or []]
    return state


def _reply(args: Any) -> None:
    if not (args.from_ and args.to):
        sys.exit("reply needs --from (the sender's number) and --to (our number, which has an inbound URL)")
    media = list(getattr(args, "media_url", None) or [])
    if len(media) > 10:
        sys.exit(f"reply takes at most 10 --media-url (Twilio's limit), not {len(media)}")
    answer = _call(args, "POST", "inbound", {"from": args.from_, "to": args.to, "body": args.body or "",
                                             "media_urls": media})
    code = answer.get("status_code")
    if code is None:
        sys.exit(f"inbound message {answer['message_sid']} could not be delivered: the webhook did not "
                 f"answer ({answer.get('error')})")
    print(f"inbound message {answer['message_sid']} delivered; the webhook answered {code}")
    if not 200 <= int(code) < 300:
        sys.exit(1)


def _fault(args: Any) -> None:
    if not args.fault:
        sys.exit('fault needs --fault JSON, e.g. --fault \'{"kind": "429", "count": 2}\', or --fault clear')
    if args.fault.strip() == "clear":
        _call(args, "DELETE", "faults")
        print("faults cleared")
        return
    try:
        payload = json.loads(args.fault)
    except ValueError as err:
        sys.exit(f"--fault is not JSON: {err}")
    if not isinstance(payload, dict):
        sys.exit('--fault must be a JSON object such as {"kind": "503_before", "count": 1}')
    fault = _call(args, "POST", "faults", payload)["fault"]
    scope = ", ".join(f"{k}={fault[k]}" for k in ("to", "account", "endpoint", "count")
                      if fault.get(k) is not None)
    print(f"fault {fault['id']} set: {fault['kind']} ({scope})")


def _inbound_urls(values: list[str] | None) -> dict[str, str]:
    """``["+15005550006=http://host/inbound", ...]`` -> ``{number: url}``, or exit naming the bad one."""
    from airflow_provider_twilio_sms.channels import normalize_address
    from airflow_provider_twilio_sms.errors import InvalidMessageError
    from airflow_provider_twilio_sms.privacy import mask_number

    numbers: dict[str, str] = {}
    for value in values or []:
        number, sep, url = value.partition("=")
        if not sep or not url.strip().startswith(("http://", "https://")):
            sys.exit(f"--inbound-url for {mask_number(number)} is not NUMBER=URL with an http(s) URL; e.g. "
                     "--inbound-url +15005550006=http://127.0.0.1:8080/twilio_sms/webhooks/twilio_sms_default/inbound")
        try:
            numbers[normalize_address(number.strip())] = url.strip()
        except InvalidMessageError as err:
            sys.exit(f"--inbound-url: {err}")
    return numbers


def _serve(args: Any) -> None:
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

    options: dict[str, Any] = {"numbers": _inbound_urls(getattr(args, "inbound_url", None))}
    delay = getattr(args, "callback_delay", None)
    if delay is not None:
        if delay < 0:
            sys.exit(f"--callback-delay must be 0 or more seconds, not {delay}")
        options["callback_delay"] = delay
    try:
        sim = TwilioSimulator(
            host=args.host or "127.0.0.1", port=args.port, control_token=_control_token(args), **options
        ).start()
    except OSError as err:
        sys.exit(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}")
    except ValueError as err:
        sys.exit(f"--control-token: {err}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("This is NOT Twilio: a local stand-in for developing and testing. It sends no SMS to any phone, "
          "and its test account and token work nowhere else.")
    print(f"Twilio stand-in listening on {sim.base_url}", flush=True)
    print(f"  account SID: {sim.account_sid}")
    print(f"  auth token:  {sim.auth_token}")
    print(f"  point a twilio_sms connection at it: login/password above, extra api_base_url={sim.base_url}")
    who = ("any client sending Authorization: Bearer <the control token>" if sim.control_is_remote
           else "clients on this machine's loopback interface only")
    print(f"  control: {sim.base_url}/_sim/state ({who}); stop with Ctrl-C", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        print("Twilio stand-in stopped", flush=True)

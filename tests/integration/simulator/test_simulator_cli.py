"""``airflow twilio-sms simulator``: serve, fault, reply and status.

``fault``, ``reply`` and ``status`` go through Airflow's own argument parser (so the command's
registration and arguments are checked) in this process, which saves an Airflow start-up each; ``serve``
runs the same ``run()`` in a process of its own, so that SIGTERM really ends it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from twilio.request_validator import RequestValidator

from airflow_provider_twilio_sms.simulator import cli
from airflow_provider_twilio_sms.simulator.server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

from conftest import free_port
from simulator_testing import Receiver

SERVE = """
import argparse, logging
logging.basicConfig(level=logging.INFO)
from airflow_provider_twilio_sms.simulator.cli import run
run(argparse.Namespace(action="serve", host="127.0.0.1", port={port}, url=None, from_=None, to=None,
                       body=None, fault=None, inbound_url=["+1 500-555-0006={inbound_url}"],
                       callback_delay=0.5))
"""


def _airflow_cli():
    """Run ``airflow twilio-sms simulator ...`` through Airflow's own parser, in this process."""
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()

    def run(*argv: str) -> None:
        args = parser.parse_args(["twilio-sms", "simulator", *argv])
        args.func(args)

    return run


def _wait_until_serving(server: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/_sim/state", timeout=1)
            return
        except requests.ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the stand-in did not start: {server.communicate()[0][-2000:]}")
            time.sleep(0.2)


def test_cli_serves_takes_faults_and_sends_signed_replies(capsys):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hook = Receiver()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE.format(port=port, inbound_url=hook.url)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        airflow_cli = _airflow_cli()  # while the server starts
        _wait_until_serving(server, port)
        airflow_cli("fault", "--port", str(port), "--fault",
                    json.dumps({"kind": "429", "count": 1, "to": "+14155550100"}))
        assert "fault 1 set: 429" in capsys.readouterr().out
        [fault] = requests.get(f"{base}/_sim/state", timeout=5).json()["faults"]
        assert (fault["kind"], fault["to"]) == ("429", "+14155550100")
        airflow_cli("fault", "--port", str(port), "--fault", "clear")
        assert requests.get(f"{base}/_sim/faults", timeout=5).json()["faults"] == []

        # serve --inbound-url set the number's inbound URL (normalised to E.164); --callback-delay is kept
        state = requests.get(f"{base}/_sim/state", timeout=5).json()
        assert state["numbers"]["+15005550006"]["inbound_url"] == hook.url
        unchanged = requests.post(f"{base}/_sim/callbacks", json={}, timeout=5).json()["settings"]
        assert unchanged["status_delay"] == 0.5
        airflow_cli("reply", "--port", str(port), "--from", "+14155550100", "--to", "+15005550006",
                    "--body", "YES", "--media-url", "https://example.com/a.png",
                    "--media-url", "https://example.com/b.png")
        assert "the webhook answered 200" in capsys.readouterr().out
        [(_, params, headers)] = hook.wait(1)
        assert params["Body"] == "YES"
        assert params["OptOutType"] == "START"
        assert params["NumMedia"] == "2"
        assert params["MediaUrl1"] == "https://example.com/b.png"
        assert RequestValidator(TEST_AUTH_TOKEN).validate(hook.url, params, headers["X-Twilio-Signature"])

        airflow_cli("status", "--url", base)
        printed = capsys.readouterr().out
        state = json.loads(printed)
        assert state["counts"]["inbound_sent"] == 1
        assert state["account_sid"] == TEST_ACCOUNT_SID
        assert list(state["numbers"]) == ["***0006"]
        assert "+15005550006" not in printed
    finally:
        hook.close()
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=20)
    assert server.returncode == 0, out[-2000:]
    assert out.startswith("This is NOT Twilio: a local stand-in")
    assert "sends no SMS" in out
    assert "control: " in out
    assert "loopback interface only" in out
    assert f"listening on {base}" in out
    assert TEST_ACCOUNT_SID in out
    assert f"auth token:  {TEST_AUTH_TOKEN}" in out
    assert "stopped" in out
    assert "+14155550100" not in out  # numbers are masked in its log lines


def _args(**kwargs):
    defaults = {"action": "serve", "host": "127.0.0.1", "port": 1, "url": None, "from_": None, "to": None,
                "body": None, "fault": None, "media_url": None, "inbound_url": None, "callback_delay": None,
                "control_token": None}
    return argparse.Namespace(**{**defaults, **kwargs})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"action": "reply"}, "reply needs --from"),
    ({"action": "fault"}, "fault needs --fault"),
    ({"action": "fault", "fault": "{oops"}, "--fault is not JSON"),
    ({"action": "status"}, "no Twilio stand-in answers at http://127.0.0.1:1"),
    ({"inbound_url": ["+15005550006"]}, "is not NUMBER=URL"),
    ({"inbound_url": ["+15005550006=ftp://x"]}, "is not NUMBER=URL"),
    ({"inbound_url": ["12=http://127.0.0.1/x"]}, "--inbound-url: "),
    ({"callback_delay": -1.0}, "--callback-delay must be 0 or more"),
    ({"control_token": "short"}, "--control-token: the control token must be at least 16 characters"),
    ({"action": "reply", "from_": "+14155550100", "to": "+15005550006", "media_url": ["https://e.x/m"] * 11},
     "at most 10 --media-url"),
])
def test_cli_errors_say_what_to_do(kwargs, message):
    with pytest.raises(SystemExit) as stop:
        cli.run(_args(**kwargs))
    assert message in str(stop.value)


def test_cli_reports_a_refused_fault_and_a_webhook_that_failed(twilio_sim, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.run(_args(action="fault", url=twilio_sim.base_url, fault=json.dumps({"kind": "teapot"})))
    assert "unknown fault kind" in str(stop.value)
    hook = Receiver(answers=[403])
    twilio_sim.set_inbound_url("+15005550006", hook.url)
    with pytest.raises(SystemExit) as stop:
        cli.run(_args(action="reply", url=twilio_sim.base_url, from_="+14155550100", to="+15005550006",
                      body="hi"))
    assert stop.value.code == 1
    assert "the webhook answered 403" in capsys.readouterr().out
    hook.close()

"""``airflow twilio-sms simulator``: serve, fault, reply and status through the real Airflow CLI."""

from __future__ import annotations

import json
import subprocess
import time

import requests
from twilio.request_validator import RequestValidator

from conftest import airflow_bin, free_port, run_airflow
from test_simulator import Receiver


def test_cli_serves_takes_faults_and_sends_signed_replies(airflow_home):
    import os

    port = free_port()
    server = subprocess.Popen([airflow_bin(), "twilio-sms", "simulator", "--port", str(port)],
                              env={**os.environ, **airflow_home}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                state = requests.get(f"{base}/_sim/state", timeout=1).json()
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "the simulator did not start"
                time.sleep(0.3)
        assert state["messages"] == 0
        fault = run_airflow(["twilio-sms", "simulator", "fault", "--port", str(port),
                             "--fault", json.dumps({"kind": "429", "count": 1})], airflow_home)
        assert fault.returncode == 0, fault.stderr
        assert requests.get(f"{base}/_sim/state", timeout=5).json()["faults"][0]["kind"] == "429"

        hook = Receiver()
        requests.post(f"{base}/_sim/numbers", json={"number": "+15005550006", "inbound_url": hook.url}, timeout=5)
        reply = run_airflow(["twilio-sms", "simulator", "reply", "--port", str(port), "--from", "+14155550100",
                             "--to", "+15005550006", "--body", "YES"], airflow_home)
        assert reply.returncode == 0 and "the webhook answered 200" in reply.stdout, reply.stderr
        [(_, params, headers)] = hook.wait(1)
        from airflow_provider_twilio_sms.simulator.server import TEST_AUTH_TOKEN

        assert params["Body"] == "YES" and params["OptOutType"] == "START"
        assert RequestValidator(TEST_AUTH_TOKEN).validate(hook.url, params, headers["X-Twilio-Signature"])
        status = run_airflow(["twilio-sms", "simulator", "status", "--port", str(port)], airflow_home)
        assert json.loads(status.stdout)["counts"]["inbound_sent"] == 1
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=20)
    assert f"listening on {base}" in out and "auth token" in out

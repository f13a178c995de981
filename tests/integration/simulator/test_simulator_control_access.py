"""Who may steer the stand-in: ``/_sim/...`` answers loopback clients only, unless it was started with a
control token; then every client must present it. Twilio's REST API on the same port is unaffected.

Requests from another host are played through the real HTTP handler with a non-loopback client address
(``finish_request`` on the server end of a TCP connection over 127.0.0.1): no traffic leaves this machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
import requests

from airflow_provider_twilio_sms.simulator import cli
from airflow_provider_twilio_sms.simulator.control import TOKEN_ENV, is_loopback
from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

from conftest import free_port
from simulator_testing import OURS, TO, twilio_client

TOKEN = "control-token-for-tests-0123456789"
ELSEWHERE = ("198.51.100.7", 40123)  # TEST-NET-2: an address that is not this machine's loopback


def _from_elsewhere(sim, method: str, path: str, headers: dict[str, str] | None = None,
                    client=ELSEWHERE) -> tuple[int, dict]:
    """One HTTP request handled by the stand-in's own server as if it came from ``client``."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    lines = [f"{method} {path} HTTP/1.1", "Host: stand-in", "Content-Length: 0", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    theirs.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    serving = threading.Thread(target=sim._server.finish_request, args=(ours, client), daemon=True)
    serving.start()
    serving.join(10)
    ours.close()
    raw = b""
    theirs.settimeout(10)
    while chunk := theirs.recv(65536):
        raw += chunk
    theirs.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("198.51.100.7", False), ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("2001:db8::1", False),
    ("0.0.0.0", False), ("", False), ("localhost", False),
])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_by_default_control_answers_loopback_and_refuses_other_hosts():
    with TwilioSimulator(host="0.0.0.0") as sim:  # the REST API on every address; control still local only
        assert requests.get(f"{sim.base_url}/_sim/state", timeout=5).status_code == 200
        for method, path in (("GET", "/_sim/state"), ("POST", "/_sim/reset"), ("DELETE", "/_sim/faults")):
            status, body = _from_elsewhere(sim, method, path)
            assert status == 403
            assert "loopback" in body["error"]
            assert "--control-token" in body["error"]
        # A token is no way in while none was configured.
        status, _ = _from_elsewhere(sim, "GET", "/_sim/state", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 403
        assert _from_elsewhere(sim, "GET", "/_sim/state", client=("127.0.0.1", 5))[0] == 200


def test_with_a_token_every_client_must_present_it():
    with TwilioSimulator(control_token=TOKEN) as sim:
        url = f"{sim.base_url}/_sim/state"
        wrong = [{}, {"Authorization": "Bearer " + TOKEN[:-1] + "x"}, {"Authorization": TOKEN},
                 {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}]
        for headers in wrong:
            refused = requests.get(url, headers=headers, timeout=5)
            assert refused.status_code == 401
            assert "Bearer" in refused.headers["WWW-Authenticate"]
            assert TOKEN not in refused.text
            assert _from_elsewhere(sim, "GET", "/_sim/state", headers)[0] == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert requests.get(url, headers=good, timeout=5).status_code == 200
        status, state = _from_elsewhere(sim, "GET", "/_sim/state", good)
        assert status == 200
        assert state["account_sid"] == sim.account_sid
        # Twilio's API on the same port needs Twilio's credentials only, not the control token.
        assert twilio_client(sim).messages.create(to=TO, from_=OURS, body="hi").sid.startswith("SM")


@pytest.mark.parametrize("token", ["", "fifteen-chars-x", " " + TOKEN])
def test_a_weak_token_is_refused_at_start(token):
    with pytest.raises(ValueError, match="at least 16 characters"):
        TwilioSimulator(control_token=token)


SERVE = """
import argparse
from airflow_provider_twilio_sms.simulator.cli import run
run(argparse.Namespace(action="serve", host="127.0.0.1", port={port}, url=None, inbound_url=None,
                       callback_delay=None, control_token=None))
"""


def test_cli_serve_takes_the_token_from_the_environment_and_the_clients_send_it(capsys, monkeypatch):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVE.format(port=port)],
                              env={**os.environ, TOKEN_ENV: TOKEN}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    args = argparse_namespace(port=port)
    try:
        banner = [server.stdout.readline() for _ in range(6)]  # up to the "control:" line: it is serving
        assert banner[0].startswith("This is NOT Twilio"), banner
        assert "(any client sending Authorization: Bearer <the control token>)" in banner[-1], banner
        monkeypatch.delenv(TOKEN_ENV, raising=False)
        with pytest.raises(SystemExit) as refused:
            cli.run(args)
        assert "refused state" in str(refused.value)
        assert "Bearer" in str(refused.value)
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        cli.run(args)
        assert json.loads(capsys.readouterr().out)["counts"] == {}
        monkeypatch.delenv(TOKEN_ENV)
        cli.run(argparse_namespace(port=port, control_token=TOKEN))
        assert "account_sid" in capsys.readouterr().out
    finally:
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=20)
    assert TOKEN not in "".join(banner) + out


def argparse_namespace(**kwargs):
    import argparse

    return argparse.Namespace(**{"action": "status", "url": None, "host": None, "control_token": None,
                                 **kwargs})

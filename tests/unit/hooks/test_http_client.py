"""The hook's HTTP client reads proxy settings from the environment once per hook, and still honours them:
requests through a real forwarding proxy on 127.0.0.1, to the project's Twilio stand-in."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

TO = "+14155550123"


class ForwardingProxy(ThreadingHTTPServer):
    """An HTTP proxy for plain-HTTP targets: forwards absolute-URI requests and records their paths."""

    daemon_threads = True

    def __init__(self):
        self.seen: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _forward(self):
        target = urlsplit(self.path)  # a proxy is sent the absolute URI
        self.server.seen.append(target.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")
        }
        upstream.request(
            self.command, target.path + (f"?{target.query}" if target.query else ""), body, headers
        )
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_POST = _forward

    def log_message(self, *args):
        pass


@pytest.fixture
def sim_conn(monkeypatch):
    with TwilioSimulator(callback_delay=3600) as sim:
        monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", json.dumps({
            "conn_type": "twilio_sms", "login": sim.account_sid, "password": sim.auth_token,
            "extra": {"from_number": "+15005550006", "api_base_url": sim.base_url}}))
        for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        yield sim


def test_an_http_proxy_in_the_environment_carries_every_request_of_the_hook(sim_conn, monkeypatch):
    with ForwardingProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        hook = TwilioSmsHook()
        sent = [hook.send_message(TO, f"Your code is {i}") for i in range(3)]
        fetched = hook.fetch_message(sent[0]["sid"])
    assert fetched["sid"] == sent[0]["sid"]
    assert len(proxy.seen) == 4
    assert all(path.startswith("/2010-04-01/Accounts/") for path in proxy.seen)


def test_no_proxy_bypasses_it(sim_conn, monkeypatch):
    with ForwardingProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        TwilioSmsHook().send_message(TO, "hello")
    assert proxy.seen == []


def test_the_environment_is_read_once_per_hook_so_a_new_hook_sees_a_change(sim_conn, monkeypatch):
    with ForwardingProxy() as proxy:
        hook = TwilioSmsHook()
        hook.send_message(TO, "before the proxy is set")
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        hook.send_message(TO, "same hook: still direct")
        assert proxy.seen == []
        TwilioSmsHook().send_message(TO, "a new hook (a new task): through the proxy")
    assert len(proxy.seen) == 1

"""Helpers for the stand-in's tests: a twilio-python client pointed at it, and a webhook receiver."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

import pytest
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

OURS = "+15005550006"  # Twilio's valid magic From
TO = "+14155550123"


def twilio_client(sim, timeout: float | None = None, account_sid: str | None = None,
                  auth_token: str | None = None) -> Client:
    """twilio-python's own client, isolated from os.environ, talking to the stand-in."""
    client = Client(account_sid or sim.account_sid, auth_token or sim.auth_token,
                    environment={"ISOLATED": "1"}, http_client=TwilioHttpClient(timeout=timeout))
    client.api.base_url = sim.base_url
    return client


def messages_url(sim, account_sid: str | None = None) -> str:
    return f"{sim.base_url}/2010-04-01/Accounts/{account_sid or sim.account_sid}/Messages.json"


def wait_until(condition: Callable[[], object], timeout: float = 5.0, interval: float = 0.01):
    """Poll ``condition`` until it is truthy (returned) or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


class Receiver:
    """A webhook endpoint on a free port: records every POST and answers with scripted statuses.

    ``answers`` are consumed one per request (then 200); an answer may be ``("sleep", seconds, status)``
    to answer late. Form bodies are parsed keeping blank values, as a webhook must to check signatures.
    """

    def __init__(self, answers=()):
        self.got: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.answers = list(answers)
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with receiver._lock:
                    receiver.got.append((self.path, dict(parse_qsl(body, keep_blank_values=True)),
                                         dict(self.headers)))
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                if isinstance(answer, tuple):
                    _, seconds, answer = answer
                    time.sleep(seconds)
                try:
                    self.send_response(answer)
                    self.send_header("Content-Type", "text/xml")
                    payload = b"<Response/>"
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/hook?x=1"

    def wait(self, n: int, timeout: float = 5.0):
        """The first requests once ``n`` arrived (fails at the deadline)."""
        wait_until(lambda: len(self.got) >= n, timeout)
        return list(self.got)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(name="receiver")
def receiver_fixture():
    """A started ``Receiver``, closed after the test. Test modules import this function to use the fixture
    (its own name differs, so a test's ``receiver`` parameter does not shadow the import)."""
    hook = Receiver()
    yield hook
    hook.close()

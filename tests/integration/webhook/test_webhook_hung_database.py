"""The webhook survives a database that hangs, and recovers at once.

The real server (`airflow twilio-sms webhook serve`, uvicorn in its own process) writes to a store that
stops answering: PostgreSQL behind a proxy that stops forwarding (a hung server: TCP still acknowledges,
nothing answers), or SQLite with its write lock held by another process. Signed callbacks sent at 10/s
meanwhile each get 503 within the store deadline (never a hang up to Twilio's 15 s), the server's thread
count stays bounded, and within 5 s of the database answering again callbacks get 200.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from urllib.parse import urlencode

import pytest
import requests
from sqlalchemy.engine import make_url
from test_webhook_serving import _wait_listening

from airflow_provider_twilio_sms.store.engine import MAX_OVERFLOW, POOL_SIZE
from airflow_provider_twilio_sms.store.migrate import upgrade_url

from conftest import StallingProxy, airflow_bin, free_port
from webhook_testing import FORM, STATUS, sign, status_params, twilio_connection

DEADLINE = 4  # [twilio_sms] webhook_store_deadline_seconds for the server under test
CONNECT_TIMEOUT = 2
HANG_CALLBACKS, RATE = 50, 10.0


@pytest.fixture(params=["postgres", "sqlite"])
def hanging_store(request, tmp_path):
    """(the store URL the server uses, hang(), answer_again())."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        upgrade_url(url)
        parsed = make_url(url)
        proxy = StallingProxy(parsed.port or 5432)
        through = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        yield through, proxy.stall, proxy.resume
        proxy.close()
        return
    path = tmp_path / "store.db"
    upgrade_url(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    yield (f"sqlite:///{path}", lambda: holder.execute("BEGIN IMMEDIATE"), lambda: holder.execute("ROLLBACK"))
    holder.close()


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def _post(base: str, n: int) -> tuple[int, float]:
    params = status_params("delivered", sid=f"SM{n:032d}")
    started = time.monotonic()
    headers = {**FORM, **sign(STATUS, params)}
    answer = requests.post(f"{base}{STATUS}", data=urlencode(params), headers=headers, timeout=30)
    return answer.status_code, time.monotonic() - started


def test_callbacks_get_503_within_the_deadline_while_the_store_hangs_and_200_once_it_answers(
        airflow_home, hanging_store, monkeypatch):
    url, hang, answer_again = hanging_store
    port = free_port()
    env = {**os.environ, **airflow_home, "AIRFLOW_CONN_TWILIO_SMS_DEFAULT": twilio_connection(),
           "AIRFLOW__TWILIO_SMS__WEBHOOK_STORE_DEADLINE_SECONDS": str(DEADLINE),
           "AIRFLOW__TWILIO_SMS__STORE_CONNECT_TIMEOUT_SECONDS": str(CONNECT_TIMEOUT),
           "AIRFLOW__TWILIO_SMS__STORE_STATEMENT_TIMEOUT_SECONDS": "2"}
    proc = subprocess.Popen([airflow_bin(), "twilio-sms", "webhook", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--store-url", url], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_listening(proc, f"{base}/twilio_sms/api/health")
        assert [_post(base, n)[0] for n in range(3)] == [200] * 3
        baseline = _threads(proc.pid)

        hang()
        answers: list[tuple[int, float]] = []
        peak = [baseline]
        sending = threading.Event()
        sending.set()

        def sample():
            while sending.is_set():
                peak[0] = max(peak[0], _threads(proc.pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        senders = []
        for n in range(100, 100 + HANG_CALLBACKS):
            sender = threading.Thread(target=lambda n=n: answers.append(_post(base, n)), daemon=True)
            sender.start()
            senders.append(sender)
            time.sleep(1 / RATE)
        for sender in senders:
            sender.join(30)
        sending.clear()
        sampler.join()

        answer_again()
        answering = time.monotonic()
        first_200 = None
        n = 1000
        while time.monotonic() - answering < 15:
            code, _ = _post(base, n)
            n += 1
            if code == 200:
                first_200 = time.monotonic() - answering
                break
            time.sleep(0.2)
        after = [_post(base, n + i)[0] for i in range(1, 6)]
    finally:
        proc.terminate()
        proc.wait(timeout=20)

    codes = sorted({code for code, _ in answers})
    slowest = max(took for _, took in answers)
    print(f"hang: {HANG_CALLBACKS} callbacks at {RATE:g}/s, slowest 503 {slowest:.2f} s, threads "
          f"{baseline} -> peak {peak[0]}; first 200 {first_200} s after the database answered again")
    assert len(answers) == HANG_CALLBACKS
    assert codes == [503], codes
    # Within the deadline (a connection opened during the hang may add its connect timeout), far from
    # Twilio's 15 s.
    assert slowest < DEADLINE + CONNECT_TIMEOUT + 2, slowest
    # Threads: store calls run on at most as many threads as the pool has connections, whatever arrives.
    assert peak[0] <= baseline + POOL_SIZE + MAX_OVERFLOW + 2, (baseline, peak[0])
    assert first_200 is not None
    assert first_200 < 5, first_200
    assert after == [200] * 5

"""Rate limits hold where they matter: for the requests as they reach Twilio (the stand-in, counted by
arrival), from worker processes whose clocks disagree, with slow first requests and 429 backoffs."""

from __future__ import annotations

import multiprocessing as mp
import os
from datetime import datetime

from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
from airflow_provider_twilio_sms.rate_limit import parse_rate_limit
from airflow_provider_twilio_sms.sending import RateLimited, RetryPolicy, SendRequest, SmsSender
from airflow_provider_twilio_sms.store.api import SmsStore

from conftest import skew_store_clock

# Forked from a fresh server process, not from this one: a worker inherits no lock another thread of the
# test session held at the fork; the server imports the heavy modules once.
CTX = mp.get_context("forkserver")
CTX.set_forkserver_preload(
    [
        "airflow_provider_twilio_sms.sending",
        "airflow_provider_twilio_sms.hooks.twilio_sms",
        "airflow_provider_twilio_sms.store.api",
        "twilio.rest",
        "psycopg2",
    ]
)
LIMIT = "2/1s"
SKEWS = (0.0, 1.0, -1.0, 1.0)  # seconds each worker's clock is off


def _skew_and_slow_down(skew: float) -> None:
    """In a worker: its wall clock ``skew`` seconds off (what Python reads: ``time.time``, the store's
    ``utcnow``); its first request slow twice over: building the client takes 0.6 s (imports, TLS set-up),
    and the first POST waits 0.4 s inside the client before its bytes go out (a connection being opened)."""
    import time

    from airflow_provider_twilio_sms.hooks import http_client

    real_time, real_class = time.time, http_client.http_client_class
    time.time = lambda: real_time() + skew
    skew_store_clock(skew)

    def slow_class():
        time.sleep(0.6)
        base = real_class()

        class SlowFirstRequest(base):
            first = True

            def request(self, *args, **kwargs):
                if SlowFirstRequest.first:
                    SlowFirstRequest.first = False
                    time.sleep(0.4)
                return super().request(*args, **kwargs)

        return SlowFirstRequest

    http_client.http_client_class = slow_class


def _worker(url, twilio_conn_json, start, out, index):
    import faulthandler
    import os
    import time

    from airflow_provider_twilio_sms.store import base

    faulthandler.dump_traceback_later(90, exit=True)  # a stuck worker says where, and the test fails
    os.environ["AIRFLOW_CONN_TWILIO_SMS_DEFAULT"] = twilio_conn_json  # the fork server's environment is older
    _skew_and_slow_down(SKEWS[index])
    sender = SmsSender(TwilioSmsHook(timeout=5), SmsStore(url), lease_seconds=30,
                       retry=RetryPolicy(max_attempts=5, base_seconds=0.05, cap_seconds=0.2))
    start.wait()
    try:
        for n in range(2):
            request = SendRequest(to="+14155550123", body=f"code {index}{n}", idempotency_key=f"w{index}-{n}",
                                  rate_limit=parse_rate_limit(LIMIT), pool="qa")
            while isinstance(result := sender.send(request), RateLimited):
                wait = getattr(result, "wait_seconds", None)
                time.sleep(
                    wait
                    if wait is not None
                    else max(0.0, (result.next_free_at - base.utcnow()).total_seconds())
                )
            out.put("sent" if not result["already_sent"] else "again")
    except Exception as err:  # noqa: BLE001
        out.put(f"error: {type(err).__name__}: {err}")


def test_creates_reach_twilio_within_the_limit_in_every_window(twilio_conn, store_conn, twilio_sim):
    sim, store = twilio_sim, store_conn
    sim.add_fault(
        "429", count=2, retry_after=0
    )  # two requests refused: their retries need slots of their own
    url = store.engine.url.render_as_string(hide_password=False)
    start, out = CTX.Event(), CTX.Queue()
    conn = os.environ["AIRFLOW_CONN_TWILIO_SMS_DEFAULT"]
    procs = [CTX.Process(target=_worker, args=(url, conn, start, out, i)) for i in range(len(SKEWS))]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
    outcomes = [out.get(timeout=5) for _ in range(2 * len(procs))]
    assert outcomes == ["sent"] * len(outcomes), outcomes
    limit = parse_rate_limit(LIMIT)
    arrived = sorted(datetime.fromisoformat(c["at"]) for c in sim.creates())
    assert len(arrived) == 2 * len(procs) + 2  # every message once, and the two refused requests
    crowded = [
        (arrived[i].isoformat(), arrived[i + limit.count].isoformat())
        for i in range(len(arrived) - limit.count)
        if (arrived[i + limit.count] - arrived[i]).total_seconds() < limit.window_seconds
    ]
    assert not crowded, (
        f"more than {limit.count} creates reached Twilio within {limit.window_seconds} s: {crowded}"
    )

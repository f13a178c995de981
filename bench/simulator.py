"""Benchmark: message creates per second the local Twilio stand-in handles from 8 concurrent clients.

The stand-in runs in its own process; 8 client threads (each with its own twilio-python client and
keep-alive session) create messages for a bounded time. Prints creates/s and errors.

    .venv/bin/python bench/simulator.py [--seconds 5] [--clients 8]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import threading
import time


def _serve(port_out, stop):
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

    sim = TwilioSimulator(callback_delay=3600).start()
    port_out.put((sim.base_url, sim.account_sid, sim.auth_token))
    stop.wait()
    sim.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    from airflow_provider_twilio_sms.hooks.twilio_sms import _quiet_twilio_logger

    ctx = mp.get_context("spawn")
    port_out, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(port_out, stop))
    server.start()
    base_url, account, token = port_out.get(timeout=60)
    counts, errors = [0] * args.clients, [0] * args.clients
    deadline = time.monotonic() + args.seconds

    def client_loop(i):
        client = Client(account, token, environment={"BENCH": "1"},
                        http_client=TwilioHttpClient(timeout=10, logger=_quiet_twilio_logger()))
        client.api.base_url = base_url
        while time.monotonic() < deadline:
            try:
                client.messages.create(to="+14155550123", from_="+15005550006", body="load test")
                counts[i] += 1
            except Exception:  # noqa: BLE001
                errors[i] += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    stop.set()
    server.join(timeout=10)
    print(f"stand-in: {sum(counts) / elapsed:,.0f} creates/s from {args.clients} concurrent clients over "
          f"{elapsed:.1f} s, {sum(errors)} errors (goal: >= 200/s, 0 errors)")
    return 0 if sum(errors) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

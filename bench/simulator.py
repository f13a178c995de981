"""Benchmark: message creates per second the local Twilio stand-in handles from concurrent clients.

The stand-in runs in its own process on 127.0.0.1 with its normal settings (statuses advance every
50 ms, so its timer thread works while it serves); N client threads, each with its own twilio-python
client and keep-alive session, create messages for a bounded time. With ``--callbacks`` every message
also has a StatusCallback to a local receiver, so the callback workers run too. Prints creates/s,
errors, latency percentiles, and the stand-in's resident memory before and after (it keeps at most
``--max-messages`` messages, so memory must level off).

    .venv/bin/python bench/simulator.py [--seconds 5] [--clients 8] [--callbacks] [--max-messages 2000]
"""

from __future__ import annotations

import argparse
import http.server
import multiprocessing as mp
import sys
import threading
import time


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _serve(out, stop, max_messages: int) -> None:
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

    sim = TwilioSimulator(max_messages=max_messages, max_records=max_messages).start()
    out.put((sim.base_url, sim.account_sid, sim.auth_token))
    stop.wait()
    out.put(sim.state())
    sim.stop()


def _receiver() -> tuple[http.server.ThreadingHTTPServer, str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/status"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--callbacks", action="store_true", help="give every message a StatusCallback")
    parser.add_argument("--max-messages", type=int, default=2000)
    args = parser.parse_args()
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    from airflow_provider_twilio_sms.hooks.http_client import quiet_twilio_logger

    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(out, stop, args.max_messages))
    server.start()
    base_url, account, token = out.get(timeout=60)
    receiver, callback_url = _receiver() if args.callbacks else (None, None)
    rss_before = _rss_kib(server.pid)
    counts, errors = [0] * args.clients, [0] * args.clients
    latencies: list[list[float]] = [[] for _ in range(args.clients)]
    first_error: list[str] = []
    deadline = time.monotonic() + args.seconds

    def client_loop(i: int) -> None:
        client = Client(account, token, environment={"BENCH": "1"},
                        http_client=TwilioHttpClient(timeout=10, logger=quiet_twilio_logger()))
        client.api.base_url = base_url
        extra = {"status_callback": callback_url} if callback_url else {}
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                client.messages.create(to="+14155550123", from_="+15005550006", body="load test", **extra)
                counts[i] += 1
                latencies[i].append(time.perf_counter() - started)
            except Exception as err:  # noqa: BLE001 - counted and reported
                errors[i] += 1
                if not first_error:
                    first_error.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    time.sleep(0.3)  # let the last statuses (and callbacks) go out
    rss_after = _rss_kib(server.pid)
    stop.set()
    state = out.get(timeout=30)
    server.join(timeout=10)
    if receiver is not None:
        receiver.shutdown()
    lat = sorted(x for per_client in latencies for x in per_client) or [0.0]

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

    total = sum(counts)
    print(f"stand-in: {total / elapsed:,.0f} creates/s from {args.clients} concurrent clients over "
          f"{elapsed:.1f} s, {sum(errors)} errors (goal: >= 200/s, 0 errors)")
    print(f"  latency p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms; stand-in RSS "
          f"{rss_before / 1024:.0f} MiB -> {rss_after / 1024:.0f} MiB; messages kept {state['messages']} "
          f"(max {args.max_messages}) of {total}"
          + (f"; callbacks {state['callbacks']['by_answer']}" if args.callbacks else ""))
    if first_error:
        print(f"  first error: {first_error[0]}")
    return 0 if sum(errors) == 0 and total / elapsed >= 200 else 1


if __name__ == "__main__":
    sys.exit(main())

"""A small load balancer for the local cluster (scripts/cluster.py): what an ingress or cloud load
balancer does in front of several api-server replicas, on 127.0.0.1.

    python scripts/ingress.py --listen 8080 --upstream 127.0.0.1:8081 --upstream 127.0.0.1:8082

It forwards each TCP connection to the next upstream, round robin, among those whose
``/api/v2/monitor/health`` answered 200 in the last second (the readiness probe), trying the next one when
a connect fails; with none ready it tries them all. A replica that is stopping or still starting gets no
new connections, so a rolling restart of the replicas loses no request that arrives meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

Upstream = tuple[str, int]


class Ingress:
    def __init__(self, listen_port: int, upstreams: list[Upstream],
                 probe_path: str = "/api/v2/monitor/health"):
        self.upstreams = upstreams
        self.ready: set[Upstream] = set()
        self.probe_path = probe_path
        self.server = socket.create_server(("127.0.0.1", listen_port))
        self._turn = itertools.count()
        self._stop = threading.Event()

    def probe(self) -> None:
        while not self._stop.is_set():
            ready = set()
            for host, port in self.upstreams:
                try:
                    url = f"http://{host}:{port}{self.probe_path}"
                    with urllib.request.urlopen(url, timeout=1) as answer:
                        if answer.status == 200:
                            ready.add((host, port))
                except (urllib.error.URLError, OSError):
                    pass
            self.ready = ready
            self._stop.wait(1.0)

    def serve(self) -> None:
        threading.Thread(target=self.probe, name="ingress-probe", daemon=True).start()
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._route, args=(client,), daemon=True).start()

    def _route(self, client: socket.socket) -> None:
        n = next(self._turn)
        order = [self.upstreams[(n + k) % len(self.upstreams)] for k in range(len(self.upstreams))]
        ready = [u for u in order if u in self.ready] or order
        for upstream in ready:
            try:
                server = socket.create_connection(upstream, timeout=2)
            except OSError:
                continue
            server.settimeout(None)
            threading.Thread(target=_pump, args=(server, client), daemon=True).start()
            _pump(client, server)
            return
        client.close()

    def stop(self) -> None:
        self._stop.set()
        self.server.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        src.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", action="append", required=True, help="HOST:PORT, repeatable")
    args = parser.parse_args()
    upstreams = [(u.rsplit(":", 1)[0], int(u.rsplit(":", 1)[1])) for u in args.upstream]
    ingress = Ingress(args.listen, upstreams)
    signal.signal(signal.SIGTERM, lambda *_: ingress.stop())
    print(f"ingress listening on 127.0.0.1:{args.listen} for {', '.join(args.upstream)}", flush=True)
    ingress.serve()
    time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A local Airflow cluster on 127.0.0.1, as teams deploy it on several machines: separate services on
Airflow's own distributed engine (CeleryExecutor), PostgreSQL and Redis, with the local Twilio stand-in.

    python scripts/cluster.py start [--root DIR] [--workers 2] [--concurrency 3] [--api-workers 2]
    python scripts/cluster.py status [--root DIR]
    python scripts/cluster.py stop [--root DIR]

(``bash scripts/cluster.sh ...`` runs it from the project's .venv.) ``start`` prints where everything is
and returns once every component is healthy; the cluster keeps running until ``stop``. The tests
(tests/cluster/) and the bench (bench/cluster.py) use :class:`Cluster` directly.

What runs, each process in its own process group, its output in ``<root>/logs/<component>.log``:

- PostgreSQL (the server on 127.0.0.1:5432, started with ``pg_ctlcluster`` when it does not answer):
  two scratch databases, dropped and created again on each start: Airflow's metadata database (also the
  Celery result backend) and the provider's store (its own database, as docs/deployment.md recommends).
- Redis as the Celery broker: the server on 127.0.0.1:6379 (one database number of its own, emptied
  on start), or a ``redis-server`` started on a free port when none answers.
- ``airflow scheduler``, ``airflow dag-processor``, ``airflow triggerer``, ``airflow api-server
  --workers N`` replicas (with this provider's webhook plugin) behind ``scripts/ingress.py``, a load
  balancer routing only to replicas whose health endpoint answers, and ``airflow celery worker``
  processes, each
  with its own hostname (``w1@%h``, ``w2@%h``) and concurrency, all serving the default queue.
- The local Twilio stand-in (``airflow twilio-sms simulator serve``), sending its signed status
  callbacks and inbound messages to the api-server's webhook.

Every process started is stopped by its process group (SIGTERM, then SIGKILL), by :meth:`Cluster.stop`,
at interpreter exit, or by ``stop`` from another shell (PIDs in ``<root>/cluster.json``). Start-up is
bounded: a component that exits or is not healthy in time fails the start with its name and log tail.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUR_NUMBER = "+15005550006"  # the stand-in's valid From, and our number for inbound messages
PG_ADMIN_URL = os.environ.get("TWILIO_SMS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_DB = 7  # not 0: a shared Redis server keeps its default database for whoever else uses it
ADMIN_USER = "admin"
STOP_GRACE = 20.0


class ClusterError(RuntimeError):
    """The cluster could not start (or do what was asked): the message names the component and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_json(method: str, url: str, body: Any = None, token: str | None = None,
               timeout: float = 10.0) -> tuple[int, Any]:
    """``(status, decoded JSON or text)`` of one HTTP request; the status is 0 when nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


# --- the parts the machine provides -------------------------------------------------------------------

def _pg_admin_engine():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


def ensure_postgres() -> None:
    """PostgreSQL answers at :data:`PG_ADMIN_URL`, started with ``pg_ctlcluster`` if it did not; or raise."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    def answers() -> str | None:
        engine = _pg_admin_engine()
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
            return None
        except OperationalError as err:
            return str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        finally:
            engine.dispose()

    problem = answers()
    if problem is None:
        return
    clusters = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") and clusters.is_dir() and any(clusters.iterdir()):
        version = sorted(p.name for p in clusters.iterdir())[0]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                       capture_output=True, timeout=60, check=False)
        deadline = time.monotonic() + 30
        while (problem := answers()) is not None and time.monotonic() < deadline:
            time.sleep(1)
        if problem is None:
            return
    where = PG_ADMIN_URL.rsplit("@", 1)[-1]
    raise ClusterError(f"postgresql: no server answers at {where} ({problem}); start "
                       "one (pg_ctlcluster <version> main start) or set TWILIO_SMS_TEST_PG_URL")


def recreate_databases(*names: str) -> dict[str, str]:
    """Drop (forcing off any session) and create each scratch database; their URLs by name."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return {name: make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
            for name in names}


def drop_databases(*names: str) -> None:
    from sqlalchemy import text

    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@contextlib.contextmanager
def store_outage(cluster: Cluster):
    """The store's database refuses every connection until the block ends (its open sessions are ended
    too), as when its server restarts or the network to it is cut."""
    from sqlalchemy import text

    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{cluster.store_db}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db"),
                         {"db": cluster.store_db})
        yield
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{cluster.store_db}" ALLOW_CONNECTIONS true'))
        engine.dispose()


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_flushdb(port: int, db: int) -> None:
    """Empty the broker's database: tasks queued by an earlier cluster must not reach this one's workers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"SELECT {db}\r\nFLUSHDB\r\n".encode())
        answer = b""
        while answer.count(b"\r\n") < 2:
            chunk = sock.recv(64)
            if not chunk:
                break
            answer += chunk
    if answer.count(b"+OK") != 2:
        raise ClusterError(f"redis: SELECT {db} / FLUSHDB on 127.0.0.1:{port} answered {answer!r}")


# --- processes -------------------------------------------------------------------------------------------

@dataclass
class Component:
    """One long-running process of the cluster."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0

    def start(self) -> None:
        with self.log.open("a") as out:
            out.write(f"\n==== {self.name} start {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n")
            out.flush()
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
        self.started_at = time.time()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the component's whole process group (its task and pool children included)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = STOP_GRACE) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Children that outlived their leader (a killed worker's task processes) go with the group.
        self.signal(signal.SIGKILL)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"


@dataclass
class Cluster:
    """The local cluster; :meth:`start` returns once every component is healthy.

    :param root: folder for AIRFLOW_HOME, logs and the state file (a new temporary folder by default).
    :param workers: number of Celery workers (hostnames ``w1@%h``, ``w2@%h``, ...).
    :param concurrency: task slots per worker.
    :param api_workers: ``airflow api-server --workers``.
    :param api_replicas: api-server processes behind the ingress (2: one can restart while the other serves).
    :param callback_retry_delay: the stand-in's first backoff before retrying a failed callback (doubling, at
        most 5 retries within Twilio's 15 s, as the URL's connection overrides say). Twilio does not publish
        its backoff; 2 s spreads the retries over the 15 s (at 2, 6 and 14 s), the stand-in's 0.2 s default
        gives up after 6 s.
    :param db_prefix: scratch database names ``<prefix>_meta`` and ``<prefix>_store``.
    :param extra_dag_folders: DAG folders besides dags_examples (each its own local DAG bundle).
    :param callback_delay: seconds between a send and each of its status callbacks at the stand-in.
    :param env: more Airflow settings (``AIRFLOW__...``) for every component.
    """

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="twilio-sms-cluster-")))
    workers: int = 2
    concurrency: int = 3
    api_workers: int = 2
    api_replicas: int = 1
    callback_retry_delay: float = 2.0
    db_prefix: str = "twilio_sms_cluster"
    extra_dag_folders: tuple[Path, ...] = ()
    callback_delay: float = 0.5
    env: dict[str, str] = field(default_factory=dict)
    start_timeout: float = 240.0

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.home = self.root / "home"
        self.logs = self.root / "logs"
        self.components: dict[str, Component] = {}
        self.api_port = free_port()  # the ingress: what users, workers and the stand-in call
        self.replica_ports = [free_port() for _ in range(self.api_replicas)]
        self.sim_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.redis_port = 6379
        self.urls: dict[str, str] = {}
        self.admin_password = ""
        self._token: tuple[str, float] | None = None
        self.startup_seconds: dict[str, float] = {}

    # -- configuration ---------------------------------------------------------------------------------

    @property
    def meta_db(self) -> str:
        return f"{self.db_prefix}_meta"

    @property
    def store_db(self) -> str:
        return f"{self.db_prefix}_store"

    @property
    def store_url(self) -> str:
        return self.urls[self.store_db]

    def webhook_url(self, kind: str) -> str:
        from airflow_provider_twilio_sms.webhook.urls import webhook_path

        return f"{self.api_url}{webhook_path('twilio_sms_default', kind)}"

    def airflow_env(self) -> dict[str, str]:
        """The environment every component gets: Airflow's settings, both connections, the token secrets."""
        from airflow_provider_twilio_sms.simulator.auth import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

        meta = self.urls[self.meta_db]
        bundles = [{"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(REPO / "dags_examples"), "refresh_interval": 5}}]
        for i, folder in enumerate(self.extra_dag_folders, start=1):
            bundles.append({"name": f"cluster-dags-{i}",
                            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                            "kwargs": {"path": str(Path(folder).resolve()), "refresh_interval": 5}})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TWILIO_SMS"))}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__FERNET_KEY": "8tSk1lKfN3L7Vt7hOqkqYTGYyuvzx1sM0Y8P0b2nFhw=",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags_examples"),
            "AIRFLOW__CORE__PARALLELISM": str(max(8, 2 * self.workers * self.concurrency)),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(8, 2 * self.workers * self.concurrency)),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "airflow"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__SECRET_KEY": "twilio-sms-cluster-secret-key",
            "AIRFLOW__API_AUTH__JWT_SECRET": "twilio-sms-cluster-jwt-" + "0123456789abcdef" * 3,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/{REDIS_DB}",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
            # A worker that dies (SIGKILL, a lost machine) stops heartbeating its task instances; the
            # scheduler fails them after this many seconds and Airflow's retry runs them elsewhere.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # A task a dead worker had taken from the broker but not started stays queued in Airflow:
            # the scheduler queues it again after this many seconds.
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3600",
            # Sensors wait in the triggerer (the example DAGs' sensors follow this default).
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            "AIRFLOW__TRIGGERER__CAPACITY": "1000",
            "AIRFLOW_CONN_TWILIO_SMS_DEFAULT": json.dumps({
                "conn_type": "twilio_sms", "login": TEST_ACCOUNT_SID, "password": TEST_AUTH_TOKEN,
                "extra": {"from_number": OUR_NUMBER, "api_base_url": self.sim_url,
                          "webhook_base_url": self.api_url}}),
            "AIRFLOW_CONN_TWILIO_SMS_STORE_DEFAULT": json.dumps(
                {"conn_type": "generic", "extra": {"sqlalchemy_url": self.store_url}}),
            **self.env,
        })
        return env

    # -- start ----------------------------------------------------------------------------------------

    def _component(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Component:
        comp = Component(name, argv, env or self._env, self.logs / f"{name}.log")
        self.components[name] = comp
        return comp

    def start(self) -> Cluster:
        started = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        _register_for_exit(self)
        try:
            self._start(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds["total"] = time.monotonic() - started
        return self

    def _start(self, started: float) -> None:
        ensure_postgres()
        self.urls = recreate_databases(self.meta_db, self.store_db)
        if redis_answers(6379):
            self.redis_port = 6379
        elif shutil.which("redis-server"):
            self.redis_port = free_port()
            redis = Component("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port),
                                        "--save", "", "--appendonly", "no", "--dir", str(self.root)],
                              dict(os.environ), self.logs / "redis.log")
            self.components["redis"] = redis
            redis.start()
            self._wait("redis", lambda: redis_answers(self.redis_port), 20)
        else:
            raise ClusterError("redis: nothing answers on 127.0.0.1:6379 and redis-server is not installed "
                               "(apt-get install redis-server)")
        redis_flushdb(self.redis_port, REDIS_DB)
        self._env = self.airflow_env()
        self._write_passwords()
        self._migrate()
        self.startup_seconds["migrate"] = time.monotonic() - started
        airflow = str(BIN / "airflow")
        self._component("simulator", [airflow, "twilio-sms", "simulator", "serve", "--host", "127.0.0.1",
                                      "--port", str(self.sim_port),
                                      "--callback-delay", str(self.callback_delay),
                                      "--inbound-url", f"{OUR_NUMBER}={self.webhook_url('inbound')}"])
        for i, port in enumerate(self.replica_ports, start=1):
            self._component(f"api-server-{i}", [airflow, "api-server", "--host", "127.0.0.1", "--port",
                                                str(port), "--workers", str(self.api_workers)])
        self._component("ingress", [sys.executable, str(REPO / "scripts" / "ingress.py"), "--listen",
                                    str(self.api_port),
                                    *[f"--upstream=127.0.0.1:{port}" for port in self.replica_ports]])
        self._component("scheduler", [airflow, "scheduler"])
        self._component("dag-processor", [airflow, "dag-processor"])
        self._component("triggerer", [airflow, "triggerer"])
        for i in range(1, self.workers + 1):
            self._worker(i)
        self.write_state()
        for comp in self.components.values():
            if comp.proc is None:
                comp.start()
        self.write_state()
        deadline = time.monotonic() + self.start_timeout
        pending = [name for name in self.components if name != "redis"]
        while pending:
            for name in list(pending):
                comp = self.components[name]
                if not comp.alive():
                    code = comp.proc.returncode if comp.proc else "?"
                    raise ClusterError(f"{name} exited with {code} during start-up; its log ({comp.log}) "
                                       f"ends:\n{comp.log_tail()}")
                if self.healthy(name):
                    self.startup_seconds[name] = time.monotonic() - started
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                name = pending[0]
                raise ClusterError(
                    f"{', '.join(pending)} did not become healthy within {self.start_timeout:.0f} s; "
                    f"{name}'s log ({self.components[name].log}) ends:\n{self.components[name].log_tail()}")
            time.sleep(1)
        self.sim("POST", "callbacks", {"retry_delay": self.callback_retry_delay})

    def _worker(self, i: int) -> Component:
        env = dict(self._env)
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())  # each worker serves its logs
        return self._component(f"worker-{i}", [
            str(BIN / "airflow"), "celery", "worker", "--celery-hostname", f"w{i}@%h",
            "--concurrency", str(self.concurrency), "--queues", "default", "--pid",
            str(self.root / f"worker-{i}.pid"), "--without-mingle", "--without-gossip"], env)

    def _write_passwords(self) -> None:
        """The admin's password, written before the api-server starts: its workers would otherwise each
        generate one into the same file."""
        import secrets

        self.admin_password = secrets.token_urlsafe(16)
        path = self.home / "passwords.json"
        path.write_text(json.dumps({ADMIN_USER: self.admin_password}))
        path.chmod(0o600)

    def _migrate(self) -> None:
        """``airflow db migrate`` (Airflow's tables, and the provider's through its DB manager) and the
        store's own database, in parallel."""
        airflow = str(BIN / "airflow")
        jobs = {"airflow db migrate": [airflow, "db", "migrate"],
                "airflow twilio-sms db migrate": [airflow, "twilio-sms", "db", "migrate", "--store-url",
                                                  self.store_url]}
        procs = {}
        for name, argv in jobs.items():
            log = (self.logs / (name.replace(" ", "-") + ".log")).open("w")
            procs[name] = (subprocess.Popen(argv, env=self._env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=REPO), log)
        for name, (proc, log) in procs.items():
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            log.close()
            if proc.returncode != 0:
                text = Path(log.name).read_text(errors="replace")[-3000:]
                raise ClusterError(f"{name} failed (exit {proc.returncode}); {log.name} ends:\n{text}")

    def _wait(self, name: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} did not come up within {timeout:.0f} s (log: {self.logs})")
            time.sleep(0.5)

    # -- health ---------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        status, body = _http_json("GET", f"{self.api_url}/api/v2/monitor/health", timeout=5)
        return body if status == 200 and isinstance(body, dict) else {}

    def healthy(self, name: str, since: float | None = None) -> bool:
        """Whether a component is up: the stand-in and the workers by their ready line, the api-server
        by its health endpoint, scheduler, dag-processor and triggerer by their job's heartbeat there
        (newer than ``since``, epoch seconds, when given: a restarted component's own heartbeat)."""
        comp = self.components[name]
        if not comp.alive():
            return False
        if name == "simulator":
            return "listening on" in comp.log_tail(20000)
        if name.startswith("worker-"):
            text = comp.log.read_text(errors="replace")
            last_start = text.rfind("==== ")
            return " ready." in text[last_start:]
        if name == "redis":
            return redis_answers(self.redis_port)
        health = self.health()
        if name == "ingress":
            return "ingress listening" in comp.log_tail(2000)
        if name.startswith("api-server-"):
            port = self.replica_ports[int(name.rsplit("-", 1)[1]) - 1]
            status, body = _http_json("GET", f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5)
            return status == 200 and isinstance(body, dict) and body.get("metadatabase", {}).get(
                "status") == "healthy"
        key = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}[name]
        part = health.get(key) or {}
        if part.get("status") != "healthy":
            return False
        beat = part.get(f"latest_{key}_heartbeat")
        if beat is None:
            return False
        from datetime import datetime

        return datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp() >= (since or comp.started_at)

    def wait_healthy(self, name: str, timeout: float = 120.0, since: float | None = None) -> float:
        """Seconds until ``name`` is healthy again; ClusterError naming it when it is not in time."""
        started = time.monotonic()
        deadline = started + timeout
        comp = self.components[name]
        while not self.healthy(name, since):
            if not comp.alive():
                raise ClusterError(f"{name} exited with {comp.proc.returncode if comp.proc else '?'}; its "
                                   f"log ({comp.log}) ends:\n{comp.log_tail()}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} was not healthy within {timeout:.0f} s; its log ({comp.log}) "
                                   f"ends:\n{comp.log_tail()}")
            time.sleep(0.5)
        return time.monotonic() - started

    # -- faults ---------------------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL a component's whole process group, as when its machine dies."""
        comp = self.components[name]
        comp.signal(signal.SIGKILL)
        if comp.proc is not None:
            comp.proc.wait(timeout=30)

    def restart(self, name: str, *, kill: bool = False, wait: bool = True) -> float:
        """Stop ``name`` (SIGTERM, or SIGKILL with ``kill``), start it again; seconds until healthy."""
        comp = self.components[name]
        if kill:
            self.kill(name)
        else:
            comp.stop()
        comp.restarts += 1
        comp.start()
        self.write_state()
        return self.wait_healthy(name) if wait else 0.0

    def add_worker(self) -> Component:
        comp = self._worker(len([n for n in self.components if n.startswith("worker-")]) + 1)
        comp.start()
        self.write_state()
        self.wait_healthy(comp.name)
        return comp

    # -- REST API -------------------------------------------------------------------------------------

    def token(self) -> str:
        """A bearer token from ``POST /auth/token``, as a user gets one (renewed before it expires)."""
        if self._token and self._token[1] > time.monotonic():
            return self._token[0]
        deadline = time.monotonic() + 120
        while True:
            status, body = _http_json("POST", f"{self.api_url}/auth/token",
                                      {"username": ADMIN_USER, "password": self.admin_password}, timeout=30)
            if status != 0 or time.monotonic() > deadline:  # 0: no answer (restarting, or overloaded)
                break
            time.sleep(0.5)
        if status not in (200, 201) or not isinstance(body, dict):
            raise ClusterError(f"api-server: POST /auth/token answered {status}: {body}")
        self._token = (body["access_token"], time.monotonic() + 600)
        return self._token[0]

    def api(self, method: str, path: str, body: Any = None, *, expect: tuple[int, ...] = (200,),
            timeout: float = 120.0) -> Any:
        """One REST call on ``/api/v2``; ClusterError unless the status is one of ``expect``. Retries
        while the api-server does not answer at all (a restart, or a loaded 2-core machine where one
        answer took longer than 30 s), up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            status, answer = _http_json(method, f"{self.api_url}/api/v2{path}", body, self.token(),
                                        timeout=30)
            if status in expect:
                return answer
            if status != 0 or time.monotonic() > deadline:
                raise ClusterError(f"api-server: {method} /api/v2{path} answered {status}: {answer}")
            time.sleep(0.5)

    def ensure_pool(self, name: str, slots: int) -> None:
        status, _ = _http_json("GET", f"{self.api_url}/api/v2/pools/{name}", token=self.token())
        body = {"name": name, "slots": slots, "description": "SMS team pool (cluster tests)",
                "include_deferred": False}
        if status == 200:
            self.api("PATCH", f"/pools/{name}", body)
        else:
            self.api("POST", "/pools", body, expect=(200, 201))

    def wait_dag(self, dag_id: str, timeout: float = 120.0) -> None:
        """Until the DAG processor has parsed ``dag_id`` (the REST API knows it), then unpause it."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = _http_json("GET", f"{self.api_url}/api/v2/dags/{dag_id}", token=self.token())
            if status == 200:
                break
            if time.monotonic() > deadline:
                errors = self.api("GET", "/importErrors")
                raise ClusterError(f"dag-processor: DAG {dag_id} not parsed within {timeout:.0f} s "
                                   f"(import errors: {errors}); log: {self.components['dag-processor'].log}")
            time.sleep(1)
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        """``POST /api/v2/dags/{dag_id}/dagRuns``; the run id."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/dags/{dag_id}/dagRuns", body, expect=(200,))["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return answer["task_instances"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300.0) -> str:
        """The run's end state (success or failed); ClusterError when it has not ended in time."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            if time.monotonic() > deadline:
                counts: dict[str, int] = {}
                for ti in self.task_instances(dag_id, run_id):
                    counts[str(ti["state"])] = counts.get(str(ti["state"]), 0) + 1
                raise ClusterError(f"run {dag_id}/{run_id} still {state} after {timeout:.0f} s; task "
                                   f"states {counts}; logs: {self.logs}")
            time.sleep(2)

    # -- the stand-in's control API -------------------------------------------------------------------

    def sim(self, method: str, action: str, body: Any = None) -> Any:
        status, answer = _http_json(method, f"{self.sim_url}/_sim/{action}", body, timeout=30)
        if status != 200:
            raise ClusterError(f"simulator: {method} /_sim/{action} answered {status}: {answer}")
        return answer

    # -- state and stop -------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {"root": str(self.root), "logs": str(self.logs), "api_url": self.api_url,
                "simulator_url": self.sim_url, "redis_port": self.redis_port,
                "databases": [self.meta_db, self.store_db], "admin_user": ADMIN_USER,
                "passwords_file": str(self.home / "passwords.json"),
                "pids": {name: comp.pid for name, comp in self.components.items() if comp.pid},
                "start_ticks": {name: _start_ticks(comp.pid) for name, comp in self.components.items()
                                if comp.pid}}

    def write_state(self) -> None:
        (self.root / "cluster.json").write_text(json.dumps(self.describe(), indent=2))

    def stop(self, drop: bool = False) -> None:
        """Stop every component (the workers first, so no task starts while the rest goes away)."""
        order = sorted(self.components.values(), key=lambda c: (not c.name.startswith("worker-"),
                                                                c.name == "redis"))
        for comp in order:
            try:
                comp.stop()
            except Exception as err:  # noqa: BLE001 - stop the others whatever one did
                print(f"cluster: stopping {comp.name} (pid {comp.pid}): {err}", file=sys.stderr)
        if drop and self.urls:
            with contextlib.suppress(Exception):
                drop_databases(self.meta_db, self.store_db)


_LIVE: list[Cluster] = []


def _register_for_exit(cluster: Cluster) -> None:
    if not _LIVE:
        atexit.register(lambda: [c.stop() for c in list(_LIVE)])
    _LIVE.append(cluster)


def _start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc/<pid>/stat field 22), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _pid_is_ours(pid: int, ticks: int | None) -> bool:
    """Whether ``pid`` is still the process this cluster started (same start time: not a reused PID)."""
    return ticks is not None and _start_ticks(pid) == ticks


def stop_from_state(root: Path) -> list[str]:
    """Stop the cluster recorded in ``<root>/cluster.json`` (from another shell); the names stopped."""
    state = json.loads((root / "cluster.json").read_text())
    stopped = []
    for name, pid in state["pids"].items():
        ticks = state["start_ticks"].get(name)
        if not _pid_is_ours(pid, ticks):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while _pid_is_ours(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        stopped.append(name)
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "twilio-sms-cluster",
                        help="folder for AIRFLOW_HOME, logs and cluster.json (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--api-replicas", type=int, default=1)
    args = parser.parse_args(argv)
    state = args.root / "cluster.json"
    if args.action == "stop":
        if not state.exists():
            print(f"no cluster recorded in {state}")
            return 0
        print("stopped: " + (", ".join(stop_from_state(args.root)) or "nothing was running"))
        return 0
    if args.action == "status":
        if not state.exists():
            print(f"no cluster recorded in {state}")
            return 1
        info = json.loads(state.read_text())
        running = {name: _pid_is_ours(pid, info["start_ticks"].get(name))
                   for name, pid in info["pids"].items()}
        for name, up in running.items():
            print(f"{name:14} pid {info['pids'][name]:>7}  {'running' if up else 'NOT running'}")
        status, health = _http_json("GET", f"{info['api_url']}/api/v2/monitor/health", timeout=5)
        print(f"api-server health ({info['api_url']}): {json.dumps(health) if status == 200 else status}")
        return 0 if all(running.values()) and status == 200 else 1
    if state.exists() and any(_pid_is_ours(pid, json.loads(state.read_text())["start_ticks"].get(name))
                              for name, pid in json.loads(state.read_text())["pids"].items()):
        print(f"a cluster is already running from {args.root}: stop it first (scripts/cluster.sh stop)")
        return 1
    if args.root.exists():
        shutil.rmtree(args.root)
    cluster = Cluster(root=args.root, workers=args.workers, concurrency=args.concurrency,
                      api_workers=args.api_workers, api_replicas=args.api_replicas)
    print(f"starting the cluster; logs under {cluster.logs}", flush=True)
    try:
        cluster.start()
    except ClusterError as err:
        print(f"cluster start FAILED: {err}", file=sys.stderr)
        return 1
    _LIVE.remove(cluster)  # it keeps running after this command; `stop` ends it
    info = cluster.describe()
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in cluster.startup_seconds.items() if k != "total")
    print(f"cluster up in {cluster.startup_seconds['total']:.0f} s ({parts})")
    print(f"  api-server (UI, REST, webhooks, through the ingress): {info['api_url']}  user {ADMIN_USER}, "
          f"password in {info['passwords_file']}")
    print(f"  Twilio stand-in: {info['simulator_url']}   redis: 127.0.0.1:{info['redis_port']}/{REDIS_DB}   "
          f"databases: {', '.join(info['databases'])}")
    print(f"  logs: {info['logs']}   stop with: scripts/cluster.sh stop --root {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

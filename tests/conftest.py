"""Shared fixtures: a throwaway AIRFLOW_HOME, real SQL databases, Prism serving Twilio's contract.

A test that needs a part this machine lacks (PostgreSQL, Prism) is skipped with the reason, unless
``TWILIO_SMS_TEST_REQUIRE`` names that part (CI sets it): then the test fails instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Twilio's OpenAPI contract, vendored with its licence and provenance (tests/contract/twilio-oai/README.md).
TWILIO_OAI = REPO / "tests" / "contract" / "twilio-oai" / "twilio_api_v2010.json"

# Airflow reads AIRFLOW_HOME when first imported: fix it before any test module imports airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="twilio-sms-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags_examples"))
os.environ.setdefault("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(_AIRFLOW_HOME / "logs"))
os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", "8tSk1lKfN3L7Vt7hOqkqYTGYyuvzx1sM0Y8P0b2nFhw=")
# A 64-byte JWT secret for the api-server's HS512 tokens: Airflow's generated one is 16 bytes, and PyJWT
# warns (InsecureKeyLengthWarning) on every token signed with it.
os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", "twilio-sms-tests-jwt-" + "0123456789abcdef" * 3)


# Airflow's deprecation warnings fail the test when this package or a test triggers them; when Airflow's
# own code is the caller (e.g. 3.2.0's connection-form route reading ProvidersManager.hooks) they are
# Airflow's to fix and only shown. Added here, not in pyproject.toml, so that Airflow is imported only after
# the lines above. Later lines win: the module-scoped ignore beats the error.
AIRFLOW_DEPRECATIONS = ("airflow.exceptions.RemovedInAirflow4Warning",
                        "airflow.sdk.exceptions.RemovedInAirflow4Warning",
                        "airflow.exceptions.AirflowProviderDeprecationWarning",
                        "airflow.utils.deprecation_tools.DeprecatedImportWarning")


def pytest_configure(config):
    for category in AIRFLOW_DEPRECATIONS:
        config.addinivalue_line("filterwarnings", f"error::{category}")
        config.addinivalue_line("filterwarnings", f"default::{category}:airflow\\.")


def _required() -> set[str]:
    return {p.strip() for p in os.environ.get("TWILIO_SMS_TEST_REQUIRE", "").split(",") if p.strip()}


def skip_or_fail(part: str, reason: str):
    """Skip because ``part`` is missing here, or fail when this run requires it."""
    if part in _required():
        pytest.fail(f"{part} is required in this run (TWILIO_SMS_TEST_REQUIRE) but {reason}")
    pytest.skip(f"{part} not available: {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StallingProxy:
    """A TCP proxy on 127.0.0.1 in front of a server (PostgreSQL), that can stop forwarding and resume.

    Stalled, it still accepts connections and reads what either side sends, but holds it: to both sides
    the peer looks alive (TCP acknowledges everything) and never answers, as a hung database server, a
    stalled load balancer or a frozen VM does. Resumed, the held bytes go on in order. One thread per
    direction of each connection; everything stops with :meth:`close`.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        import threading

        self.upstream = (upstream_host, upstream_port)
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="stalling-proxy-accept", daemon=True)
        self._acceptor.start()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="stalling-proxy-pump",
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while not self._flowing.wait(0.1):  # hold what was read until the proxy flows again
                    if self._closed:
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:  # one side gone: the other goes too, as with a real peer
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes its pump thread (close alone would not)
                with contextlib.suppress(OSError):
                    sock.close()


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


# --- Airflow ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def airflow_home() -> dict[str, str]:
    """A migrated Airflow metadata DB (SQLite) in the session's AIRFLOW_HOME; env for subprocesses."""
    env = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW")}
    full_env = {**os.environ, **env}
    marker = _AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        result = subprocess.run([airflow_bin(), "db", "migrate"], env=full_env, capture_output=True,
                                text=True, timeout=600, check=False)
        assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout}\n{result.stderr}"
        shutil.copyfile(_AIRFLOW_HOME / "airflow.db", MIGRATED_METADATA_DB)
        marker.write_text("ok")
    return env


# The session's metadata database as `airflow db migrate` left it, before any test wrote to it: what a
# test that runs Airflow's own processes starts from (copied). The session's database itself holds what
# earlier tests did there, e.g. the example DAGs registered paused, whose asset watchers never start.
MIGRATED_METADATA_DB = _AIRFLOW_HOME / "airflow.migrated.db"


def run_airflow(args: list[str], env: dict[str, str], *, input: str | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``airflow`` CLI with ``env`` added to this process's environment."""
    return subprocess.run([airflow_bin(), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          input=input, timeout=timeout, check=False)


# --- SQL databases ------------------------------------------------------------------------------

PG_ADMIN_URL = os.environ.get("TWILIO_SMS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """Admin URL of a reachable PostgreSQL server, or skip/fail with the reason."""
    try:
        import psycopg2  # noqa: F401
        from sqlalchemy import create_engine, text
    except ImportError as err:
        skip_or_fail("postgres", f"driver missing ({err})")
    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as err:  # noqa: BLE001 - any failure means "no server here"
        skip_or_fail("postgres", f"cannot connect to {engine.url.render_as_string(hide_password=True)} "
                                 f"({type(err).__name__}); set TWILIO_SMS_TEST_PG_URL")
    finally:
        engine.dispose()
    return PG_ADMIN_URL


def _create_pg_database(admin_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"twilio_sms_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from airflow_provider_twilio_sms.store import engine as store_engine

    for key in [k for k in store_engine._engines if k == url]:
        store_engine._engines.pop(key).dispose()
    name = make_url(url).database
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def pg_url(pg_server_url):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    url = _create_pg_database(pg_server_url)
    yield url
    _drop_pg_database(pg_server_url, url)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """An empty database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    admin = request.getfixturevalue("pg_server_url")
    url = _create_pg_database(admin)
    yield url
    _drop_pg_database(admin, url)


@pytest.fixture
def store(db_url):
    """A migrated :class:`SmsStore` on SQLite and on PostgreSQL."""
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    upgrade_url(db_url)
    return SmsStore(db_url)


# --- Prism: Twilio's OpenAPI contract -----------------------------------------------------------

@contextlib.contextmanager
def running_prism(mode: str, *extra: str):
    """Prism (``mock`` or ``proxy``) on Twilio's published OpenAPI contract (tests/contract/twilio-oai), on a
    free 127.0.0.1 port, until the block ends: yields its base URL. Skips (fails under CI) without it."""
    prism = REPO / ".tools" / "node_modules" / ".bin" / "prism"
    if not TWILIO_OAI.exists():
        skip_or_fail("prism", f"Twilio's contract is not at {TWILIO_OAI}")
    if not prism.exists():
        skip_or_fail("prism", "Prism is not installed (scripts/bootstrap.sh installs it when npm exists)")
    if shutil.which("node") is None:
        skip_or_fail("prism", "node is not on PATH")
    port = free_port()
    # Prism writes to the log until the block ends (closed in `finally`); it stays on disk to read after.
    log = tempfile.NamedTemporaryFile(prefix=f"prism-{mode}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([str(prism), mode, "-h", "127.0.0.1", "-p", str(port), str(TWILIO_OAI), *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Prism exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"Prism did not listen within 120 s: {Path(log.name).read_text()[-2000:]}")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def prism_url():
    """Base URL of Prism mocking Twilio's published OpenAPI contract (tests/contract/twilio-oai)."""
    with running_prism("mock") as url:
        yield url


# --- The local Twilio stand-in ------------------------------------------------------------------

@pytest.fixture
def twilio_sim():
    """A fresh local Twilio stand-in on a free port (callbacks 50 ms apart)."""
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

    with TwilioSimulator(callback_delay=0.05) as sim:
        yield sim


@pytest.fixture
def twilio_conn(twilio_sim, monkeypatch):
    """``twilio_sms_default`` pointing at the stand-in; returns a function to change its extras."""
    import json

    def configure(**extra):
        extra = {"from_number": "+15005550006", "api_base_url": twilio_sim.base_url, **extra}
        monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", json.dumps({
            "conn_type": "twilio_sms", "login": twilio_sim.account_sid, "password": twilio_sim.auth_token,
            "extra": {k: v for k, v in extra.items() if v is not None}}))

    configure()
    return configure


@pytest.fixture
def store_conn(store, monkeypatch):
    """``twilio_sms_store_default`` pointing at the migrated ``store`` (SQLite and PostgreSQL)."""
    import json

    url = store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_STORE_DEFAULT",
                       json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": url}}))
    return store


def dag_test(dag, **kwargs):
    """``dag.test()`` for a DAG defined in a test: serialise it first, as the DAG processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/dev/null")
    bag.bag_dag(dag)
    sync_bag_to_db(bag, bundle_name="dags-folder", bundle_version=None)
    return dag.test(**kwargs)


# --- MariaDB / MySQL: a database the store refuses ------------------------------------------------------

MYSQL_ADMIN_URL = os.environ.get("TWILIO_SMS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")


@pytest.fixture
def mysql_url():
    """A fresh, empty MariaDB/MySQL database (the local server), dropped afterwards: the store must refuse
    it. Skips (fails under CI) when no server answers."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    try:
        import pymysql  # noqa: F401
    except ImportError:
        skip_or_fail("mysql", "pymysql is not installed (the test extra installs it)")
    admin = create_engine(MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"twilio_sms_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}`"))
    except Exception as err:  # noqa: BLE001 - any failure means "no server here"
        admin.dispose()
        skip_or_fail("mysql", f"cannot connect to {make_url(MYSQL_ADMIN_URL).render_as_string()} "
                              f"({type(err).__name__}); set TWILIO_SMS_TEST_MYSQL_URL")
    try:
        yield make_url(MYSQL_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


# --- a worker's clock ----------------------------------------------------------------------------------

STORE_CLOCK_MODULES = ("base", "claims", "events", "rate_limits", "reads")


def in_forked_child(work) -> tuple[bytes, int]:
    """Run ``work()`` in a forked child, as a prefork worker runs a task; returns what it answered
    (``b"1"``: true, ``b"0"``: false, ``b""``: it raised) and the child's exit status."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, b"1" if work() else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    try:
        return os.read(read_end, 1), status
    finally:
        os.close(read_end)


def skew_store_clock(skew_seconds: float, setattr_=setattr) -> None:
    """The store's ``utcnow`` (every module of ``store/`` that reads it) ``skew_seconds`` off the real
    clock, as on a worker whose clock is wrong. ``setattr_``: pytest's ``monkeypatch.setattr`` to undo it
    after the test."""
    import importlib
    from datetime import datetime, timedelta, timezone

    def skewed() -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=skew_seconds)

    for name in STORE_CLOCK_MODULES:
        setattr_(importlib.import_module(f"airflow_provider_twilio_sms.store.{name}"), "utcnow", skewed)

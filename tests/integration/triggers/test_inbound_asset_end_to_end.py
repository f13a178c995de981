"""Inbound SMS as asset events with a real Airflow: ``airflow dag-processor``, ``scheduler`` (LocalExecutor),
``triggerer`` and ``api-server`` in a throwaway AIRFLOW_HOME, the example DAG ``twilio_sms_inbound_asset``,
and messages sent by the local Twilio stand-in, signed, to the webhook app (``airflow twilio-sms webhook
serve``), which stores them.

Each matching message makes exactly one asset event and one DAG run (whose task reads the event), a
message that does not match makes none, and a message that arrives while the triggerer is stopped fires
once when it is back, with no duplicate of the ones before.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import MIGRATED_METADATA_DB, REPO, airflow_bin, free_port

OURS = "+15005550006"
THEM = "+14155550123"
DAG_ID = "twilio_sms_inbound_asset"
ASSET = "twilio_sms_deploy_requests"


class Process:
    """One Airflow command in its own process group, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path):
        self.name, self.log = name, logs / f"{name}.log"
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def tail(self) -> str:
        return f"--- {self.name} ---\n" + self.log.read_text(errors="replace")[-3000:]


def _query(db: Path, sql: str, *params) -> list[tuple]:
    for _ in range(50):  # Airflow's processes write the same SQLite file
        try:
            with sqlite3.connect(db, timeout=10) as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err):
                raise
            time.sleep(0.1)
    raise AssertionError("the metadata database stayed locked")


# The whole test's budget, start-ups included: no wait goes past it. Five Airflow processes sharing one
# SQLite file start slowly on a busy 2-core machine (the dag-processor's first parse once took 93 s).
BUDGET_SECONDS = 380


def _airflow_state(db: Path) -> str:
    """What Airflow holds about the DAG, its asset and the watcher's trigger: said when a wait runs out."""
    queries = {
        "dag (dag_id, is_paused, is_stale)": "SELECT dag_id, is_paused, is_stale FROM dag",
        "import errors (file, last lines)": "SELECT filename, substr(stacktrace, -600) FROM import_error",
        "assets (name, active)": "SELECT a.name, EXISTS (SELECT 1 FROM asset_active v WHERE v.name = a.name) "
                                 "FROM asset a",
        "watchers (name, trigger)": "SELECT name, trigger_id FROM asset_watcher",
        "triggers (id, classpath, triggerer)": "SELECT id, classpath, triggerer_id FROM trigger",
        "jobs (id, type, state, heartbeat)": "SELECT id, job_type, state, latest_heartbeat FROM job",
    }
    said = []
    for what, sql in queries.items():
        try:
            said.append(f"{what}: {_query(db, sql)}")
        except (sqlite3.Error, AssertionError) as err:
            said.append(f"{what}: unreadable ({err})")
    return "\n".join(said)


def _wait(condition, timeout: float, what: str, processes: list[Process], *, ends_at: float,
          metadata_db: Path) -> None:
    deadline = min(time.monotonic() + timeout, ends_at)
    while not condition():
        dead = [p for p in processes if p.proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(p.tail() for p in processes)
            pytest.fail(f"{what} did not happen in time (at most {timeout:.0f} s, within the test's "
                        f"{BUDGET_SECONDS} s) "
                        f"({', '.join(p.name + ' exited' for p in dead) or 'timeout'}):\n"
                        f"{_airflow_state(metadata_db)}\n{logs}")
        time.sleep(0.5)


@pytest.mark.timeout(BUDGET_SECONDS + 60)
def test_each_matching_sms_runs_the_dag_once_across_a_triggerer_restart(airflow_home, twilio_sim, tmp_path):
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    ends_at = time.monotonic() + BUDGET_SECONDS

    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copy(REPO / "dags_examples" / f"{DAG_ID}.py", home / "dags")
    metadata_db = home / "airflow.db"
    shutil.copyfile(MIGRATED_METADATA_DB, metadata_db)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_url(store_url)
    store = SmsStore(store_url)
    webhook_port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{metadata_db}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": os.environ["AIRFLOW__CORE__FERNET_KEY"],
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": os.environ["AIRFLOW__API_AUTH__JWT_SECRET"],
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
        "AIRFLOW_CONN_TWILIO_SMS_DEFAULT": json.dumps({
            "conn_type": "twilio_sms", "login": twilio_sim.account_sid, "password": twilio_sim.auth_token,
            "extra": {"from_number": OURS, "api_base_url": twilio_sim.base_url,
                      "webhook_base_url": f"http://127.0.0.1:{webhook_port}"}}),
        "AIRFLOW_CONN_TWILIO_SMS_STORE_DEFAULT": json.dumps(
            {"conn_type": "generic", "extra": {"sqlalchemy_url": store_url}}),
    })
    twilio_sim.set_inbound_url(
        OURS, f"http://127.0.0.1:{webhook_port}/twilio_sms/webhooks/twilio_sms_default/inbound")
    airflow = airflow_bin()
    processes = [
        Process("webhook", [airflow, "twilio-sms", "webhook", "serve", "--host", "127.0.0.1",
                            "--port", str(webhook_port), "--store-url", store_url], env, tmp_path),
        Process("api-server", [airflow, "api-server", "--host", "127.0.0.1", "--port", str(api_port),
                               "--workers", "1"], env, tmp_path),
        Process("dag-processor", [airflow, "dag-processor"], env, tmp_path),
        Process("scheduler", [airflow, "scheduler"], env, tmp_path),
        Process("triggerer", [airflow, "triggerer"], env, tmp_path),
    ]

    def watching() -> bool:
        with store.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM twilio_sms_event_watch").scalar() > 0

    def runs() -> list[tuple]:
        return _query(metadata_db, "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id", DAG_ID)

    def asset_events() -> list[dict]:
        rows = _query(metadata_db, "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                                   "WHERE a.name = ? ORDER BY e.id", ASSET)
        return [json.loads(extra) for extra, in rows]

    def send(body: str) -> str:
        answer = twilio_sim.send_inbound(THEM, OURS, body)
        assert answer["status_code"] == 200, answer
        return answer["message_sid"]

    wait = functools.partial(_wait, ends_at=ends_at, metadata_db=metadata_db)
    try:
        wait(watching, 300, "the triggerer opening the watcher", processes)
        sids = [send("deploy billing")]
        wait(lambda: len(runs()) == 1, 90, "the first DAG run", processes)
        send("hello, no deploy today")  # matches nothing: passed in order before the next one fires
        sids.append(send("Deploy payments"))
        wait(lambda: len(runs()) == 2, 90, "the second DAG run", processes)

        processes[-1].stop()  # the triggerer goes away (SIGTERM, as a deploy stops it)...
        sids.append(send("deploy search"))  # ...a message arrives meanwhile...
        time.sleep(3)
        assert len(runs()) == 2
        processes.append(Process("triggerer-2", [airflow, "triggerer"], env, tmp_path))  # ...and it is back
        running = [p for p in processes if p.name != "triggerer"]
        wait(lambda: len(runs()) == 3, 120, "the run for the message sent while the triggerer was down",
             running)
        sids.append(send("deploy api"))
        wait(lambda: len(runs()) == 4, 90, "the fourth DAG run", running)
        wait(lambda: all(state in ("success", "failed") for _, state in runs()), 120, "the runs finishing",
             running)
        time.sleep(6)  # three more polls: nothing else fires

        events = asset_events()
        assert [e["payload"]["message_sid"] for e in events] == sids  # one event each, in order
        assert [e["payload"]["named_groups"]["service"] for e in events] == ["billing", "payments", "search",
                                                                             "api"]
        assert all(e["from_trigger"] for e in events)
        for text in ("deploy billing", "Deploy payments", "deploy search", "deploy api", THEM):
            assert text not in json.dumps(events)  # no text, no sender's number
        assert [state for _, state in runs()] == ["success"] * 4, "\n".join(p.tail() for p in processes)
        xcoms = _query(metadata_db, "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'deploy' "
                                    "ORDER BY dag_run_id", DAG_ID)
        services = ("billing", "payments", "search", "api")
        assert [json.loads(value) for value, in xcoms] == [
            [{"service": service, "message_sid": sid}] for service, sid in zip(services, sids, strict=True)]
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT events FROM twilio_sms_event_watch").scalar() == 4
    finally:
        for process in reversed(processes):
            process.stop()
        store.engine.dispose()

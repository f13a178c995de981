"""SendSmsOperator with every identifier at Airflow's own limit, end to end on SQLite and PostgreSQL: DAG,
task and run ids of 250 characters, map indexes, a pool name of 256, a team name of 50, connection ids of
250, idempotency keys of thousands. Nothing is cut short, a retry after a crash finishes, and a value
over a limit is refused by name before anything is claimed or sent."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import uuid
from hashlib import sha256
from types import SimpleNamespace
from unittest import mock

import pytest

from airflow_provider_twilio_sms.operators.sms import SendSmsOperator, attempt_id_of
from airflow_provider_twilio_sms.store.api import SmsStore

from conftest import dag_test

ID_LEN = 250  # airflow.models.base.ID_LEN: dag_id, task_id, run_id, conn_id
POOL_LEN = 256  # airflow.models.pool.Pool.pool
TEAM_LEN = 50  # airflow.models.team.Team.name
DAG_ID = "dag_" + "d" * (ID_LEN - 4)
TASK_ID = "send_" + "t" * (ID_LEN - 5)
RUN_ID = "manual__" + "r" * (ID_LEN - 8)
POOL = "pool_" + "p" * (POOL_LEN - 5)
TEAM = "team_" + "m" * (TEAM_LEN - 5)
CONN_ID = "twilio_" + "c" * (ID_LEN - 7)
SHARED = "order/" + "k" * 4000  # two keys of 4001 characters, the same but for the last one
CTX = mp.get_context("fork")


def test_airflow_limits_are_what_this_test_uses():
    from airflow.models.base import ID_LEN as airflow_id_len
    from airflow.models.pool import Pool
    from airflow.models.team import Team

    assert (airflow_id_len, Pool.pool.type.length, Team.name.type.length) == (ID_LEN, POOL_LEN, TEAM_LEN)


@pytest.fixture
def env(airflow_home, twilio_conn, store_conn, twilio_sim, monkeypatch):
    """The stand-in under a connection id of 250 characters too, and leases short enough to expire."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", os.environ["AIRFLOW_CONN_TWILIO_SMS_DEFAULT"])
    monkeypatch.setenv("AIRFLOW__TWILIO_SMS__SEND_LEASE_SECONDS", "1")
    return twilio_sim, store_conn


@pytest.fixture
def team_of_the_dags_folder(airflow_home, monkeypatch):
    """Multi-team on, and the dags-folder bundle (dag_test's) owned by a team named at Airflow's limit."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.team import Team, dag_bundle_team_association_table
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    with create_session() as session:
        session.add(Team(name=TEAM))
    monkeypatch.setenv(
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
        json.dumps(
            [
                {
                    "name": "dags-folder",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {},
                    "team_name": TEAM,
                }
            ]
        ),
    )
    DagBundlesManager().sync_bundles_to_db()  # dag.test syncs again, with this config
    yield TEAM
    monkeypatch.delenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST")
    monkeypatch.delenv("AIRFLOW__CORE__MULTI_TEAM")
    DagBundlesManager().sync_bundles_to_db()  # the bundle without a team again, for every later test
    with create_session() as session:
        session.execute(delete(dag_bundle_team_association_table)
                        .where(dag_bundle_team_association_table.c.team_name == TEAM))
        session.execute(delete(Team).where(Team.name == TEAM))


def _rows(store: SmsStore) -> list[dict]:
    return sorted(store.list_messages(limit=50), key=lambda r: r["id"])


def test_every_identifier_at_airflows_limit_end_to_end_with_dag_test(env, team_of_the_dags_folder):
    sim, store = env
    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG, task

    results = []
    with DAG(DAG_ID, schedule=None) as dag:
        mapped = SendSmsOperator.partial(task_id=TASK_ID, body="hi", pool=POOL, twilio_conn_id=CONN_ID,
                                         rate_limit="10/1m").expand(to=["+14155550101", "+14155550102"])
        # Two keys of 4001 characters sharing all but the last: two messages, two recipients.
        first = SendSmsOperator(
            task_id="long_key_a",
            to="+14155550103",
            body="hi",
            idempotency_key=SHARED + "a",
            rate_limit="10/1m",
        )
        second = SendSmsOperator(
            task_id="long_key_b",
            to="+14155550104",
            body="hi",
            idempotency_key=SHARED + "b",
            rate_limit="10/1m",
        )

        @task
        def collect(sent_mapped, sent_first, sent_second):
            results.extend([*sent_mapped, sent_first, sent_second])

        collect(mapped.output, first.output, second.output)

    run_id = f"manual__{uuid.uuid4().hex}".ljust(ID_LEN, "r")  # one per run: Airflow's DB outlives the test
    with mock.patch.object(DagRun, "generate_run_id", return_value=run_id):
        run = dag_test(dag)
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    assert sorted(c["to"] for c in sim.creates()) == ["+14155550101", "+14155550102", "+14155550103",
                                                      "+14155550104"]
    rows = _rows(store)
    sends = [r for r in rows if r["task_id"] == TASK_ID]
    assert {r["map_index"] for r in sends} == {0, 1}
    for row in sends:
        assert (row["dag_id"], row["run_id"], row["pool"], row["team"], row["conn_id"]) == (
            DAG_ID, run_id, POOL, TEAM, CONN_ID)
        ti = SimpleNamespace(dag_id=DAG_ID, task_id=TASK_ID, run_id=run_id, map_index=row["map_index"],
                             try_number=1)
        assert row["attempt_id"] == attempt_id_of(ti)
        assert row["send_state"] == "sent"
    long_rows = {r["task_id"]: r for r in rows if r["task_id"].startswith("long_key_")}
    for suffix in "ab":
        row = long_rows[f"long_key_{suffix}"]
        assert row["idempotency_key"] is None  # too long to keep for display; never kept cut short
        assert row["idempotency_key_sha256"] == sha256((SHARED + suffix).encode()).hexdigest()
    assert {SHARED + "a", SHARED + "b"} <= {r["idempotency_key"] for r in results}  # XCom: the keys whole
    from sqlalchemy import select

    from airflow_provider_twilio_sms.store.tables import rate_slot

    with store.engine.connect() as conn:
        pools = sorted(conn.execute(select(rate_slot.c.pool).where(rate_slot.c.until_us > 0)).scalars())
    assert pools == [f"team:{TEAM}"] * 4


def _ti(try_number: int, **overrides):
    ids = {"dag_id": DAG_ID, "task_id": TASK_ID, "run_id": RUN_ID, "map_index": 2**31 - 1, **overrides}
    return SimpleNamespace(try_number=try_number, **ids)


def _context(ti, team=TEAM):
    return {"ti": ti, "dag_run": SimpleNamespace(team_name=team)}


def _operator(**kw):
    return SendSmsOperator(task_id=TASK_ID, to="+14155550123", body="Your code is 123456", pool=POOL,
                           twilio_conn_id=CONN_ID, rate_limit="10/1m", on_rate_limit="fail", **kw)


def _die_after_twilio_accepted(url):
    from airflow_provider_twilio_sms.store import locate

    store = SmsStore(url)
    store.record_sent = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # the worker dies right here
    with mock.patch.object(locate, "get_store", return_value=store):
        _operator().execute(_context(_ti(1)))


def test_a_retry_after_a_crash_with_every_identifier_at_its_limit_finishes(env, monkeypatch):
    """Try 1 dies after Twilio accepted; try 2 (a new attempt id of the same length) takes the claim
    over, reconciles and records the same message, with no LeaseLostError and no second send."""
    sim, store = env
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    child = CTX.Process(target=_die_after_twilio_accepted, args=(store.engine.url.render_as_string(False),))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    assert sim.count("create") == 1
    result = _operator().execute(_context(_ti(2)))
    assert result["sid"] == sim.messages()[0]["sid"]
    assert result["already_sent"]
    assert sim.count("create") == 1
    [row] = _rows(store)
    assert (row["send_state"], row["attempt_id"]) == ("sent", attempt_id_of(_ti(2)))
    assert (row["dag_id"], row["task_id"], row["run_id"], row["map_index"], row["team"]) == (
        DAG_ID, TASK_ID, RUN_ID, 2**31 - 1, TEAM)


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("dag_id", "d" * 251, 250),
        ("task_id", "t" * 251, 250),
        ("run_id", "r" * 251, 250),
        ("team", "m" * 251, 250),
    ],
)
def test_a_value_over_its_limit_fails_the_task_by_name_before_anything_is_claimed_or_sent(
        env, monkeypatch, field, value, limit):
    from airflow.sdk.exceptions import AirflowFailException

    sim, store = env
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    ti = _ti(1, **{field: value} if field in ("dag_id", "task_id", "run_id") else {})
    op = _operator()
    with pytest.raises(AirflowFailException) as failed:
        op.execute(_context(ti, team=value if field == "team" else TEAM))
    message = str(failed.value)
    assert f"{field} is {len(value)} characters" in message
    assert f"at most {limit}" in message
    assert value not in message
    assert "4155550123" not in message
    assert sim.count("create") == 0
    assert _rows(store) == []


def test_a_messaging_service_sid_too_long_is_refused_by_its_shape_before_anything_is_claimed(env):
    """Longer than a SID can be, so not a SID: the connection's sender check says what one looks like."""
    from airflow.sdk.exceptions import AirflowFailException

    sim, store = env
    op = _operator(messaging_service_sid="MG" + "0" * 33)
    with pytest.raises(AirflowFailException) as failed:
        op.execute(_context(_ti(1), team=TEAM))
    assert "messaging_service_sid is not MG followed by 32 hex characters" in str(failed.value)
    assert sim.count("create") == 0
    assert _rows(store) == []


def test_a_pool_name_over_airflows_limit_fails_by_name_before_anything_is_claimed(env):
    from airflow.sdk.exceptions import AirflowFailException

    sim, store = env
    op = SendSmsOperator(task_id="send", to="+14155550123", body="hi", pool="p" * 257, rate_limit="10/1m")
    with pytest.raises(AirflowFailException, match="pool is 257 characters.*at most 256"):
        op.execute(_context(_ti(1, task_id="send"), team=None))
    assert sim.count("create") == 0
    assert _rows(store) == []


def test_the_notifier_keeps_a_task_id_at_airflows_limit_whole(env):
    """The notifier's key is apart from the operator's ("notifier:" in what is hashed), but its row keeps the
    task id itself: "notifier:" + 250 characters no longer overflows the column (PostgreSQL cut it)."""
    from airflow_provider_twilio_sms.notifications.sms import SmsNotifier

    sim, store = env
    ti = _ti(1)
    context = {"ti": ti, "dag_run": SimpleNamespace(dag_id=DAG_ID, run_id=RUN_ID, team_name=None)}
    first = SmsNotifier(to="+14155550123", body="DAG failed").send(context)
    again = SmsNotifier(to="+14155550123", body="DAG failed").send(context)
    assert again["sid"] == first["sid"]
    assert again["already_sent"]
    assert sim.count("create") == 1
    [row] = _rows(store)
    assert (row["dag_id"], row["task_id"], row["run_id"]) == (DAG_ID, TASK_ID, RUN_ID)

"""Retention and erasure through Airflow: ``airflow twilio-sms db purge`` and ``airflow twilio-sms forget``
(the real CLI, on SQLite and PostgreSQL), and the example DAG that purges daily."""

from __future__ import annotations

import re

import pytest

from airflow_provider_twilio_sms.errors import OptedOutError
from airflow_provider_twilio_sms.store import tables as t

from conftest import REPO, dag_test, run_airflow
from retention_rows import OTHER, THEM, Rows


def _url(store) -> str:
    return store.engine.url.render_as_string(hide_password=False)


def _counts(output: str) -> dict[str, int]:
    """The ``  table  count`` lines the commands print."""
    lines = re.findall(r"^\s+(twilio_sms_\w+|total)\s+(\d+)$", output, re.MULTILINE)
    return {name: int(count) for name, count in lines}


def _seed_old_and_recent(store) -> Rows:
    rows = Rows(store)
    old, recent = rows.ago(days=40), rows.ago(days=5)
    for _ in range(3):
        rows.event(received=old, message_id=rows.message(created=old))
    rows.message(created=old, state="claimed", lease=old)
    rows.event(received=recent, message_id=rows.message(created=recent))
    rows.inbound(received=old)
    rows.reply_wait(created=old)
    rows.opt_out(THEM, updated=old)
    return rows


def test_db_purge_end_to_end(store, airflow_home):
    rows = _seed_old_and_recent(store)
    before = rows.counts()
    args = ["twilio-sms", "db", "purge", "--older-than", "30d", "--store-url", _url(store),
            "--batch-size", "2"]
    dry = run_airflow([*args, "--dry-run"], airflow_home)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "Dry run, nothing deleted" in dry.stdout
    expected = {"twilio_sms_event": 4, "twilio_sms_message": 3, "twilio_sms_reply_wait": 1,
                "twilio_sms_hitl_request": 0, "twilio_sms_rate_slot": 0, "twilio_sms_rate_pool": 0,
                "total": 8}
    assert _counts(dry.stdout) == expected
    assert rows.counts() == before
    done = run_airflow(args, airflow_home)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "deleted what is older than 30d" in done.stdout
    assert "2 rows per transaction" in done.stdout
    assert _counts(done.stdout) == expected
    assert rows.counts() == {**before, "twilio_sms_event": 1, "twilio_sms_message": 2,
                             "twilio_sms_reply_wait": 0}
    assert rows.count(t.opt_out) == 1


def test_db_purge_defaults_to_retention_days(sqlite_url, airflow_home):
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    upgrade_url(sqlite_url)
    rows = Rows(SmsStore(sqlite_url))
    kept = rows.message(created=rows.ago(days=5))
    rows.message(created=rows.ago(days=12))
    env = {**airflow_home, "AIRFLOW__TWILIO_SMS__RETENTION_DAYS": "10"}
    done = run_airflow(["twilio-sms", "db", "purge", "--store-url", sqlite_url], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "older than 10d" in done.stdout
    assert rows.keys(t.message) == {kept}
    bad = run_airflow(["twilio-sms", "db", "purge", "--store-url", sqlite_url],
                      {**airflow_home, "AIRFLOW__TWILIO_SMS__RETENTION_DAYS": "0"})
    assert bad.returncode == 1
    assert "retention_days" in bad.stderr
    assert "1 or more" in bad.stderr


@pytest.mark.parametrize("age", ["30x", "30", "0d", "-1d", "1.5d"])
def test_db_purge_refuses_a_bad_age_naming_it_and_the_format(sqlite_url, airflow_home, age):
    done = run_airflow(["twilio-sms", "db", "purge", f"--older-than={age}", "--store-url", sqlite_url],
                       airflow_home)
    assert done.returncode == 1
    assert f"--older-than {age!r} is not an age" in done.stderr
    assert "30d, 12h or 90m" in done.stderr


def test_db_purge_refuses_a_store_not_migrated_and_a_bad_batch_size(sqlite_url, airflow_home):
    done = run_airflow(["twilio-sms", "db", "purge", "--older-than", "30d", "--store-url", sqlite_url],
                       airflow_home)
    assert done.returncode == 1
    assert "airflow twilio-sms db migrate" in done.stderr
    done = run_airflow(["twilio-sms", "db", "purge", "--batch-size", "0", "--store-url", sqlite_url],
                       airflow_home)
    assert done.returncode == 1
    assert "--batch-size 0 is out of range: give 1 to 10000" in done.stderr


def test_forget_end_to_end_and_the_stop_still_refuses_a_send(store, airflow_home, twilio_sim, twilio_conn):
    """Erase THEM (given with spaces, normalised to E.164): the output names the number masked only, THEM's
    rows go but the opt-out, and a send to THEM after that is still refused before any request."""
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.sending import SendRequest, SmsSender

    rows = Rows(store)
    for number in (THEM, OTHER):
        rows.event(received=rows.ago(days=1), message_id=rows.message(created=rows.ago(days=1), to=number),
                   to=number)
        rows.reply_wait(created=rows.ago(hours=1), from_=number)
        store.record_inbound(account_sid=twilio_sim.account_sid, conn_id="twilio_sms_default",
                             message_sid="SM" + number[-8:] * 4, from_number=number, to_number="+15005550006",
                             body="STOP", payload={"From": number, "To": "+15005550006", "Body": "STOP"})
    others = rows.dump().count(OTHER)
    spaced = "+1 415 555 0123"
    args = ["twilio-sms", "forget", "--number", spaced, "--store-url", _url(store)]
    dry = run_airflow([*args, "--dry-run"], airflow_home)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "would keep 1 opt-out(s) of ***0123" in dry.stdout
    done = run_airflow(args, airflow_home)
    assert done.returncode == 0, done.stderr[-3000:]
    for output in (dry.stdout + dry.stderr, done.stdout + done.stderr):
        assert "5550123" not in output
        assert "415 555" not in output
    assert "erased ***0123" in done.stdout
    expected = {"twilio_sms_event": 2, "twilio_sms_message": 1, "twilio_sms_reply_wait": 1,
                "twilio_sms_hitl_request": 0, "twilio_sms_opt_out": 0, "total": 4}
    assert _counts(dry.stdout) == _counts(done.stdout) == expected
    assert "kept 1 opt-out(s) of ***0123, keyword and message SID cleared" in done.stdout
    assert rows.dump().count(THEM) == 1  # the opt-out's number
    assert rows.dump().count(OTHER) == others
    with pytest.raises(OptedOutError):
        SmsSender(TwilioSmsHook(), store).send(SendRequest(to=THEM, body="Hello again", idempotency_key="k2"))
    assert twilio_sim.count("create") == 0


@pytest.mark.parametrize("number", ["4155550123", "+1415", "+1 415 555 01234"])
def test_forget_refuses_a_number_not_in_e164_without_printing_it(sqlite_url, airflow_home, number):
    done = run_airflow(["twilio-sms", "forget", "--number", number, "--store-url", sqlite_url], airflow_home)
    assert done.returncode == 1
    assert "is not a phone number in E.164" in done.stderr
    assert "+14155550123" in done.stderr  # the example of the format
    assert number not in done.stdout + done.stderr.replace("+14155550123", "")


def test_the_example_dag_purges_with_the_configured_retention(airflow_home, store_conn):
    from airflow.dag_processing.dagbag import DagBag

    rows = _seed_old_and_recent(store_conn)
    before = rows.counts()
    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    assert bag.import_errors == {}
    dag = bag.dags["twilio_sms_purge"]
    assert dag.schedule == "@daily"
    run = dag_test(dag)
    assert run.state == "success"
    assert rows.counts() == {**before, "twilio_sms_event": 1, "twilio_sms_message": 2,
                             "twilio_sms_reply_wait": 0}

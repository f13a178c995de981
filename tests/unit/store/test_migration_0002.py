"""Migration 0002 (covering report indexes) upgrades a store that holds data and downgrades cleanly, on
SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from airflow_provider_twilio_sms.store import migrate
from airflow_provider_twilio_sms.store.api import SmsStore, make_scope

ACCOUNT = "AC" + "2" * 32
NEW = {"ix_twilio_sms_message_created_report", "ix_twilio_sms_message_team_created_report",
       "ix_twilio_sms_event_kind_received"}
OLD = {"ix_twilio_sms_message_created", "ix_twilio_sms_message_team_created"}


def _indexes(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {i["name"] for table in ("twilio_sms_message", "twilio_sms_event")
                for i in found.get_indexes(table)}
    finally:
        engine.dispose()


def test_0002_keeps_the_rows_and_swaps_the_indexes(db_url):
    assert migrate.upgrade_url(db_url, "0001_twilio_sms") == (None, "0001_twilio_sms")
    store = SmsStore(db_url)
    claim = store.claim(scope=make_scope(ACCOUNT, "team_a"), idempotency_key="k", account_sid=ACCOUNT,
                        conn_id="twilio_sms_default", to_number="+14155550100", body="hi", team="team_a")
    store.record_sent(claim, {"sid": "SM" + "3" * 32, "status": "queued", "num_segments": 1})
    assert OLD <= _indexes(db_url) and not NEW & _indexes(db_url)
    assert migrate.upgrade_url(db_url) == ("0001_twilio_sms", "0002_twilio_sms")
    assert NEW <= _indexes(db_url) and not OLD & _indexes(db_url)
    assert store.get_message(sid="SM" + "3" * 32)["team"] == "team_a"
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            from alembic import command

            command.downgrade(migrate.alembic_config(connection=conn), "0001_twilio_sms")
    finally:
        engine.dispose()
    assert OLD <= _indexes(db_url) and not NEW & _indexes(db_url)
    assert store.get_message(sid="SM" + "3" * 32) is not None

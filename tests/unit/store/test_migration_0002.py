"""Migration 0002 (covering report indexes) upgrades a store that holds data and downgrades cleanly, on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import create_engine, inspect, text

from airflow_provider_twilio_sms.store import migrate
from airflow_provider_twilio_sms.store.claims import make_scope

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


def _team_of(url: str, sid: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT team FROM twilio_sms_message WHERE sid = :sid"), {"sid": sid}
            ).scalar()
    finally:
        engine.dispose()


def test_0002_keeps_the_rows_and_swaps_the_indexes(db_url):
    assert migrate.upgrade_url(db_url, "0001_twilio_sms") == (None, "0001_twilio_sms")
    # The row as 0001's schema holds it (today's SmsStore writes today's schema).
    engine = create_engine(db_url)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO twilio_sms_message (scope, idempotency_key, account_sid, conn_id, team, "
                "to_number, body, body_sha256, num_media, send_state, attempt_id, lease_expires_at, sid, "
                "status, status_rank, created_at, updated_at) VALUES (:scope, 'k', :account, "
                "'twilio_sms_default', 'team_a', '+14155550100', 'hi', :digest, 0, 'sent', 'a1', :now, :sid, "
                "'queued', 1, :now, :now)"
            ),
            {
                "scope": make_scope(ACCOUNT, "team_a"),
                "account": ACCOUNT,
                "digest": "0" * 64,
                "now": now,
                "sid": "SM" + "3" * 32,
            },
        )
    engine.dispose()
    assert _indexes(db_url) >= OLD
    assert not NEW & _indexes(db_url)
    assert migrate.upgrade_url(db_url, "0002_twilio_sms") == ("0001_twilio_sms", "0002_twilio_sms")
    assert _indexes(db_url) >= NEW
    assert not OLD & _indexes(db_url)
    assert _team_of(db_url, "SM" + "3" * 32) == "team_a"
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            from alembic import command

            command.downgrade(migrate.alembic_config(connection=conn), "0001_twilio_sms")
    finally:
        engine.dispose()
    assert _indexes(db_url) >= OLD
    assert not NEW & _indexes(db_url)
    assert _team_of(db_url, "SM" + "3" * 32) == "team_a"

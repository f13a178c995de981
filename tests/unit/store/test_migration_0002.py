"""Migration 0002 (covering report indexes) upgrades a store that holds data and downgrades cleanly, on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from migration_testing import downgrade, execute, indexes

from airflow_provider_twilio_sms.store import migrate
from airflow_provider_twilio_sms.store.claims import make_scope

ACCOUNT = "AC" + "2" * 32
NEW = {"ix_twilio_sms_message_created_report", "ix_twilio_sms_message_team_created_report",
       "ix_twilio_sms_event_kind_received"}
OLD = {"ix_twilio_sms_message_created", "ix_twilio_sms_message_team_created"}


def _indexes(url: str) -> set[str]:
    return set(indexes(url, "twilio_sms_message", "twilio_sms_event"))


def _team_of(url: str, sid: str) -> str | None:
    [(team,)] = execute(url, "SELECT team FROM twilio_sms_message WHERE sid = :sid", sid=sid)
    return team


def test_0002_keeps_the_rows_and_swaps_the_indexes(db_url):
    assert migrate.upgrade_url(db_url, "0001_twilio_sms") == (None, "0001_twilio_sms")
    # The row as 0001's schema holds it (today's SmsStore writes today's schema).
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    execute(
        db_url,
        "INSERT INTO twilio_sms_message (scope, idempotency_key, account_sid, conn_id, team, "
        "to_number, body, body_sha256, num_media, send_state, attempt_id, lease_expires_at, sid, "
        "status, status_rank, created_at, updated_at) VALUES (:scope, 'k', :account, "
        "'twilio_sms_default', 'team_a', '+14155550100', 'hi', :digest, 0, 'sent', 'a1', :now, :sid, "
        "'queued', 1, :now, :now)",
        scope=make_scope(ACCOUNT, "team_a"),
        account=ACCOUNT,
        digest="0" * 64,
        now=now,
        sid="SM" + "3" * 32,
    )
    assert _indexes(db_url) >= OLD
    assert not NEW & _indexes(db_url)
    assert migrate.upgrade_url(db_url, "0002_twilio_sms") == ("0001_twilio_sms", "0002_twilio_sms")
    assert _indexes(db_url) >= NEW
    assert not OLD & _indexes(db_url)
    assert _team_of(db_url, "SM" + "3" * 32) == "team_a"
    downgrade(db_url, "0001_twilio_sms")
    assert _indexes(db_url) >= OLD
    assert not NEW & _indexes(db_url)
    assert _team_of(db_url, "SM" + "3" * 32) == "team_a"

"""Migration 0009 (the channel of messages and events) upgrades a store holding messages and events linked to
them, gives every existing row the channel ``sms``, and downgrades cleanly, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from migration_testing import downgrade, execute, inspected

from airflow_provider_twilio_sms.store import migrate

ACCOUNT = "AC" + "9" * 32


def _columns(url: str, table: str) -> dict[str, dict]:
    with inspected(url) as found:
        return {c["name"]: c for c in found.get_columns(table)}


def test_0009_adds_the_channel_keeps_the_rows_and_their_links_and_downgrades(db_url):
    assert migrate.upgrade_url(db_url, "0008_twilio_sms") == (None, "0008_twilio_sms")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    # A sent message and its status callback, as 0008's schema holds them.
    execute(db_url,
            "INSERT INTO twilio_sms_message (scope, idempotency_key_sha256, account_sid, conn_id, to_number, "
            "body_sha256, num_media, send_state, attempt_id, lease_expires_at, sid, status_rank, created_at, "
            "updated_at) VALUES (:s, :k, :a, 'c', '+14155550123', :b, 0, 'sent', 'x', :t, 'SM1', 5, :t, :t)",
            s=f"{ACCOUNT}|", k="0" * 64, a=ACCOUNT, b="1" * 64, t=now)
    message_id = execute(db_url, "SELECT id FROM twilio_sms_message")[0][0]
    execute(db_url,
            "INSERT INTO twilio_sms_event (kind, account_sid, conn_id, dedupe_key, message_sid, message_id, "
            "status, received_at, payload) VALUES ('status', :a, 'c', 'status:SM1:delivered', 'SM1', :m, "
            "'delivered', :t, '{}')", a=ACCOUNT, m=message_id, t=now)
    assert "channel" not in _columns(db_url, "twilio_sms_message")

    assert migrate.upgrade_url(db_url, "0009_twilio_sms") == ("0008_twilio_sms", "0009_twilio_sms")
    for table in ("twilio_sms_message", "twilio_sms_event"):
        assert _columns(db_url, table)["channel"]["nullable"] is False
        assert [tuple(r) for r in execute(db_url, f"SELECT channel FROM {table}")] == [("sms",)]
    assert [tuple(r) for r in execute(db_url, "SELECT message_id FROM twilio_sms_event")] == [(message_id,)]

    downgrade(db_url, "0008_twilio_sms")
    for table in ("twilio_sms_message", "twilio_sms_event"):
        assert "channel" not in _columns(db_url, table)
    assert [tuple(r) for r in execute(db_url, "SELECT message_id FROM twilio_sms_event")] == [(message_id,)]
    assert migrate.upgrade_url(db_url, "0009_twilio_sms") == ("0008_twilio_sms", "0009_twilio_sms")

"""Migration 0008 (replies through a Messaging Service read by an index) upgrades a store that holds
inbound messages and downgrades cleanly, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from migration_testing import downgrade, execute, indexes

from airflow_provider_twilio_sms.store import migrate
from airflow_provider_twilio_sms.store.api import SmsStore
from airflow_provider_twilio_sms.store.inbound import InboundChannel

ACCOUNT = "AC" + "8" * 32
SERVICE = "MG" + "1" * 32
INDEX = "ix_twilio_sms_event_kind_service"


def _event_indexes(url: str) -> dict[str, list[str]]:
    return indexes(url, "twilio_sms_event")


def test_0008_adds_the_service_index_keeps_the_rows_and_downgrades(db_url):
    assert migrate.upgrade_url(db_url, "0007_twilio_sms") == (None, "0007_twilio_sms")
    execute(  # an inbound message as 0007's schema holds it
        db_url,
        "INSERT INTO twilio_sms_event (kind, account_sid, conn_id, dedupe_key, message_sid, from_number, "
        "to_number, messaging_service_sid, body, received_at, payload) VALUES ('inbound', :a, 'c', "
        "'inbound:SM1', 'SM1', '+14155550100', '+15005550006', :s, 'YES', :t, '{}')",
        a=ACCOUNT, s=SERVICE, t=datetime.now(timezone.utc).replace(tzinfo=None))
    assert INDEX not in _event_indexes(db_url)

    assert migrate.upgrade_url(db_url, "0008_twilio_sms") == ("0007_twilio_sms", "0008_twilio_sms")
    assert _event_indexes(db_url)[INDEX] == ["kind", "messaging_service_sid", "id"]
    pages = SmsStore(db_url).read_inbound_channels(
        [(InboundChannel(ACCOUNT, "messaging_service_sid", SERVICE), 0)], page=10)
    assert [row["message_sid"] for row in pages[0]] == ["SM1"]

    downgrade(db_url, "0007_twilio_sms")
    assert INDEX not in _event_indexes(db_url)
    assert migrate.upgrade_url(db_url, "0008_twilio_sms") == ("0007_twilio_sms", "0008_twilio_sms")

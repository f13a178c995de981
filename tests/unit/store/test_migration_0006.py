"""Migration 0006 (rate-limit rings on the database's clock) keeps a window that was full full, on SQLite and
PostgreSQL, and downgrades back to grants."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from migration_testing import downgrade, execute, inspected

from airflow_provider_twilio_sms.store import migrate
from airflow_provider_twilio_sms.store.api import SmsStore


def test_0006_turns_the_grants_in_the_window_into_slots(db_url):
    migrate.upgrade_url(db_url, "0003_twilio_sms")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    execute(db_url, "INSERT INTO twilio_sms_rate_pool (pool, updated_at) VALUES ('team:qa', :now), "
                    "('team:idle', :now)", now=now)
    # 1 + 3 segments a minute ago, 1 two days ago (outside any window that matters)
    execute(db_url, "INSERT INTO twilio_sms_rate_grant (pool, grant_key, cost, granted_at) VALUES "
                    "('team:qa', 'a', 1, :old), ('team:qa', 'b', 1, :recent), ('team:qa', 'c', 3, :recent2)",
            old=now - timedelta(days=2), recent=now - timedelta(seconds=60),
            recent2=now - timedelta(seconds=59))
    assert migrate.upgrade_url(db_url, "0006_twilio_sms") == ("0003_twilio_sms", "0006_twilio_sms")
    store = SmsStore(db_url)
    # 4 units in the last hour already: a limit of 5 per hour has room for one more, not two.
    assert [store.acquire_rate_slot("team:qa", 5, 3600).granted for _ in range(2)] == [True, False]
    # Under 5 per 30 s the recent grants are out of the window again.
    assert all(store.acquire_rate_slot("team:qa", 5, 30).granted for _ in range(4))
    assert store.acquire_rate_slot("team:idle", 1, 60).granted

    downgrade(db_url, "0003_twilio_sms")
    with inspected(db_url) as found:
        names = set(found.get_table_names())
    assert "twilio_sms_rate_grant" in names
    assert "twilio_sms_rate_slot" not in names
    assert execute(db_url, "SELECT count(*) FROM twilio_sms_rate_grant WHERE pool = 'team:qa'") == [(5,)]
    assert migrate.upgrade_url(db_url, "0006_twilio_sms")[1] == "0006_twilio_sms"

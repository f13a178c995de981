"""Migration 0007 (webhook trust: signers, opt-outs per signer, reply waits) upgrades a store that holds
data sensibly and downgrades cleanly, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from migration_testing import downgrade, execute, inspected

from airflow_provider_twilio_sms.store import migrate
from airflow_provider_twilio_sms.store.api import SmsStore

ACCOUNT = "AC" + "3" * 32
STOPPED, OTHER = "+14155550100", "+14155550101"


def test_0007_keeps_opt_outs_for_every_connection_and_downgrades_to_one_row_per_number(db_url):
    assert migrate.upgrade_url(db_url, "0006_twilio_sms") == (None, "0006_twilio_sms")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for number, opted_out in ((STOPPED, True), (OTHER, False)):
        execute(
            db_url,
            "INSERT INTO twilio_sms_opt_out (account_sid, number, opted_out, keyword, updated_at) "
            "VALUES (:a, :n, :o, 'STOP', :t)",
            a=ACCOUNT,
            n=number,
            o=opted_out,
            t=now,
        )
    assert migrate.upgrade_url(db_url, "0007_twilio_sms") == ("0006_twilio_sms", "0007_twilio_sms")
    store = SmsStore(db_url)
    # An opt-out stored before signers were recorded refuses the sends of every connection of the account.
    assert store.is_opted_out(ACCOUNT, STOPPED, signer="a" * 32)
    assert store.is_opted_out(ACCOUNT, STOPPED)
    assert not store.is_opted_out(ACCOUNT, OTHER, signer="a" * 32)
    # Opt-outs of two signers for one number are two rows now; a START of one leaves the other.
    store.set_opt_out(ACCOUNT, OTHER, True, "STOP", signer="b" * 32)
    store.set_opt_out(ACCOUNT, OTHER, False, "START", signer="c" * 32)
    assert store.is_opted_out(ACCOUNT, OTHER, signer="b" * 32)
    assert not store.is_opted_out(ACCOUNT, OTHER, signer="c" * 32)
    wait = store.add_reply_wait(account_sid=ACCOUNT, conn_id="c", from_number=STOPPED)
    assert store.get_reply_wait(wait)["from_number"] == STOPPED

    downgrade(db_url, "0006_twilio_sms")
    rows = dict(execute(db_url, "SELECT number, opted_out FROM twilio_sms_opt_out ORDER BY number"))
    assert {k: bool(v) for k, v in rows.items()} == {
        STOPPED: True,
        OTHER: True,
    }  # opted out if any signer said so
    with inspected(db_url) as found:
        assert "twilio_sms_reply_wait" not in found.get_table_names()
        assert "signer" not in {c["name"] for c in found.get_columns("twilio_sms_message")}
        assert found.get_pk_constraint("twilio_sms_opt_out")["constrained_columns"] == [
            "account_sid",
            "number",
        ]
    assert migrate.upgrade_url(db_url, "0007_twilio_sms") == ("0006_twilio_sms", "0007_twilio_sms")

"""Migration 0013: on SQLite an event or reply-wait id is never handed out twice, even after the newest rows
are deleted, and the event ids continue above every asset watcher's cursor; rows, ids and links are kept;
downgrade restores the tables. PostgreSQL's sequences never went back: nothing changes there."""

from __future__ import annotations

from datetime import datetime, timezone

from migration_testing import downgrade, execute

from airflow_provider_twilio_sms.store import migrate

ACCOUNT = "AC" + "1" * 32


def _event(url: str, n: int, message_id: int | None = None) -> int:
    execute(url,
            "INSERT INTO twilio_sms_event (kind, account_sid, conn_id, dedupe_key, message_sid, message_id, "
            "received_at, payload) VALUES ('inbound', :a, 'c', :d, :s, :m, :t, '{}')",
            a=ACCOUNT, d=f"inbound:SM{n}", s=f"SM{n}", m=message_id, t=datetime.now(timezone.utc).replace(
                tzinfo=None))
    return execute(url, "SELECT max(id) FROM twilio_sms_event")[0][0]


def _wait(url: str) -> int:
    execute(url, "INSERT INTO twilio_sms_reply_wait (account_sid, conn_id, created_at) VALUES (:a, 'c', :t)",
            a=ACCOUNT, t=datetime.now(timezone.utc).replace(tzinfo=None))
    return execute(url, "SELECT max(id) FROM twilio_sms_reply_wait")[0][0]


def _watch(url: str, cursor: int) -> None:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    execute(url, "INSERT INTO twilio_sms_event_watch (watch_key, last_event_id, events, created_at, "
                 "updated_at) VALUES (:k, :c, 0, :t, :t)", k="k" * 64, c=cursor, t=now)


def test_0013_never_reuses_an_id_and_continues_past_every_watchers_cursor(db_url):
    assert migrate.upgrade_url(db_url, "0012_twilio_sms") == (None, "0012_twilio_sms")
    first, newest = _event(db_url, 1), _event(db_url, 2)
    _watch(db_url, newest)  # a watcher has passed the newest message...
    execute(db_url, "DELETE FROM twilio_sms_event WHERE id = :i", i=newest)  # ...which is then erased

    assert migrate.upgrade_url(db_url, "0013_twilio_sms") == ("0012_twilio_sms", "0013_twilio_sms")
    assert [tuple(r) for r in execute(db_url, "SELECT id, message_sid FROM twilio_sms_event")] == [
        (first, "SM1")]
    assert _event(db_url, 3) > newest  # after the watcher's cursor: it sees this message
    wait = _wait(db_url)
    execute(db_url, "DELETE FROM twilio_sms_reply_wait WHERE id = :i", i=wait)
    assert _wait(db_url) > wait  # a sensor still deferred on the deleted wait never reads another's
    newer = _event(db_url, 4)
    execute(db_url, "DELETE FROM twilio_sms_event WHERE id >= :i", i=newer - 1)  # the newest erased again
    assert _event(db_url, 5) > newer

    downgrade(db_url, "0012_twilio_sms")
    assert [tuple(r) for r in execute(db_url, "SELECT message_sid FROM twilio_sms_event ORDER BY id")] == [
        ("SM1",), ("SM5",)]
    assert migrate.upgrade_url(db_url, "0013_twilio_sms") == ("0012_twilio_sms", "0013_twilio_sms")


def test_0013_on_an_empty_store_starts_event_ids_above_a_watchers_cursor(db_url):
    assert migrate.upgrade_url(db_url, "0012_twilio_sms") == (None, "0012_twilio_sms")
    _watch(db_url, 41)  # every event it saw has been purged
    assert migrate.upgrade_url(db_url, "0013_twilio_sms") == ("0012_twilio_sms", "0013_twilio_sms")
    if db_url.startswith("sqlite"):
        assert _event(db_url, 1) == 42

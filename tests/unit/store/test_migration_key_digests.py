"""The key-digest migration (keys by SHA-256) upgrades a store holding sends, linked events and rate grants,
and downgrades cleanly, on SQLite and PostgreSQL: every stored key is still found, and only by itself."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from hashlib import sha256

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from airflow_provider_twilio_sms.store import migrate
from airflow_provider_twilio_sms.store.api import SmsStore
from airflow_provider_twilio_sms.store.claims import make_scope

REVISION = "0003_twilio_sms"  # keys by SHA-256
ACCOUNT = "AC" + "5" * 32
SCOPE = make_scope(ACCOUNT, "team_a")
SID = "SM" + "6" * 32
BEFORE = ScriptDirectory.from_config(migrate.alembic_config()).get_revision(REVISION).down_revision


def _seed(url: str, now: datetime) -> None:
    """A sent message with a linked status event, a claimed one, and the first one's rate grant, written
    the way the store wrote them before 0004 (textual keys)."""
    naive = now.replace(tzinfo=None)
    engine = create_engine(url)
    with engine.begin() as conn:
        for key, sid, state in (("order-1", SID, "sent"), ("order-2", None, "claimed")):
            conn.execute(
                text(
                    "INSERT INTO twilio_sms_message (scope, idempotency_key, account_sid, conn_id, team, "
                    "to_number, body, body_sha256, num_media, send_state, attempt_id, lease_expires_at, sid, "
                    "status, status_rank, created_at, updated_at) VALUES (:scope, :key, :account, "
                    "'twilio_sms_default', 'team_a', '+14155550100', 'hi', :digest, 0, :state, 'a1', :lease, "
                    ":sid, 'queued', 1, :now, :now)"
                ),
                {
                    "scope": SCOPE,
                    "key": key,
                    "account": ACCOUNT,
                    "digest": "0" * 64,
                    "state": state,
                    "now": naive,
                    "lease": naive + timedelta(hours=1),
                    "sid": sid,
                },
            )
        conn.execute(text(
            "INSERT INTO twilio_sms_event (kind, account_sid, conn_id, dedupe_key, message_sid, message_id, "
            "status, received_at, payload) SELECT 'status', :account, 'twilio_sms_default', 'status:x:sent', "
            ":sid, id, 'sent', :now, '{}' FROM twilio_sms_message WHERE sid = :sid"),
            {"account": ACCOUNT, "sid": SID, "now": naive})
        conn.execute(text("INSERT INTO twilio_sms_rate_pool (pool, updated_at) VALUES ('team:team_a', :now)"),
                     {"now": naive})
        conn.execute(text("INSERT INTO twilio_sms_rate_grant (pool, grant_key, cost, granted_at) "
                          "VALUES ('team:team_a', :key, 1, :now)"), {"key": f"{SCOPE}|order-1", "now": naive})
    engine.dispose()


def _one(url: str, sql: str):
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).all()
    finally:
        engine.dispose()


def test_it_gives_stored_rows_their_digests_and_keeps_links_grants_and_answers(db_url):
    migrate.upgrade_url(db_url, BEFORE)
    now = datetime.now(timezone.utc)
    _seed(db_url, now)
    assert migrate.upgrade_url(db_url) == (BEFORE, migrate.head_revision())

    assert sorted(_one(db_url, "SELECT idempotency_key, idempotency_key_sha256 FROM twilio_sms_message")) == [
        (key, sha256(key.encode()).hexdigest()) for key in ("order-1", "order-2")]
    # SQLite recreated the message table: the event is still linked to its message.
    [(linked,)] = _one(db_url, "SELECT e.message_id = m.id FROM twilio_sms_event e JOIN twilio_sms_message m "
                               f"ON m.sid = '{SID}'")
    assert linked in (True, 1)

    store = SmsStore(db_url)
    assert store.get_message(scope=SCOPE, idempotency_key="order-1")["sid"] == SID
    again = store.claim(
        scope=SCOPE,
        idempotency_key="order-1",
        account_sid=ACCOUNT,
        conn_id="twilio_sms_default",
        to_number="+14155550100",
        body="hi",
        team="team_a",
    )
    assert again.outcome == "sent"  # the "already sent" answer survives the upgrade
    # The send's grant, stored before the upgrade (under its textual key), still counts (0006 made it a
    # slot of the pool's ring): the hour's one slot is taken.
    assert not store.acquire_rate_slot("team:team_a", 1, 3600).granted
    # Uniqueness is on the digest now: a long key is a claim of its own, a stored key is still taken.
    long_key = "order-2" + "x" * 400
    assert store.claim(scope=SCOPE, idempotency_key=long_key, account_sid=ACCOUNT, conn_id="c",
                       to_number="+14155550100", body="hi").outcome == "new"
    assert store.claim(scope=SCOPE, idempotency_key="order-2", account_sid=ACCOUNT, conn_id="c",
                       to_number="+14155550100", body="hi", now=now + timedelta(seconds=1)).outcome == "held"

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            command.downgrade(migrate.alembic_config(connection=conn), BEFORE)
    finally:
        engine.dispose()
    keys = sorted(k for (k,) in _one(db_url, "SELECT idempotency_key FROM twilio_sms_message"))
    assert keys == ["order-1", "order-2", "sha256:" + sha256(long_key.encode()).hexdigest()]
    [(still_linked,)] = _one(db_url, "SELECT count(*) FROM twilio_sms_event WHERE message_id IS NOT NULL")
    assert still_linked == 1
    assert migrate.upgrade_url(db_url) == (BEFORE, migrate.head_revision())

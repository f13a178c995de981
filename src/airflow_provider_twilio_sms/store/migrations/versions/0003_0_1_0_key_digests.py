"""Idempotency keys of any length: a message row is found, and kept unique, by its key's SHA-256.

Before, the key itself (VARCHAR(255)) was the unique key, and PostgreSQL cut longer keys to 255 characters,
so two long keys sharing their first 255 characters were one claim. Now:

- ``twilio_sms_message.idempotency_key_sha256`` (hex) holds every row's digest, computed here for the rows
  already stored, and the unique constraint is on (scope, digest); ``idempotency_key`` keeps the key for
  display only when it fits (NULL otherwise).
- ``twilio_sms_rate_grant.grant_key`` holds the SHA-256 of the grant key (scope, idempotency key): stored
  keys are replaced by their digest, so a send resumed across the upgrade still finds its grant.
- The rate-limit pool columns take ``"pool:"`` + an Airflow pool name of 256 characters.

A key PostgreSQL had already cut to 255 characters before this upgrade keeps the digest of what was
stored; such a send could not be retried before either (it failed with "too much contention").

On SQLite the message table is recreated (copy, drop, rename); with foreign keys on, dropping it would set
every event's ``message_id`` to NULL (``ON DELETE SET NULL``), so those links are saved and put back (the
copy keeps row ids).

Revision ID: 0003_twilio_sms
Revises: 0002_twilio_sms
Create Date: 2026-12-04
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0003_twilio_sms"
down_revision = "0002_twilio_sms"
branch_labels = None
depends_on = None

MESSAGE = "twilio_sms_message"
OLD_UNIQUE = "uq_twilio_sms_message_scope_key"
NEW_UNIQUE = "uq_twilio_sms_message_scope_key_sha256"
POOL_TABLES = ("twilio_sms_rate_pool", "twilio_sms_rate_grant")


def _sha256_of(column: str) -> str:
    """SQL for the lowercase hex SHA-256 of ``column``'s UTF-8 text, as ``store.claims.key_digest`` does."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        return f"encode(sha256(convert_to({column}, 'UTF8')), 'hex')"
    if bind.dialect.name == "sqlite":
        dbapi_connection = bind.connection.dbapi_connection
        if dbapi_connection is None:
            raise RuntimeError("the migration's SQLite connection is closed")
        dbapi_connection.create_function(
            "twilio_sms_sha256", 1, lambda text: hashlib.sha256(text.encode("utf-8")).hexdigest(),
            deterministic=True)
        return f"twilio_sms_sha256({column})"
    raise NotImplementedError(f"the twilio_sms store runs on SQLite and PostgreSQL, not {bind.dialect.name}")


@contextmanager
def _events_keep_their_message():
    """Put back every event's ``message_id`` after SQLite recreated the message table (see the docstring)."""
    if op.get_bind().dialect.name != "sqlite":
        yield
        return
    op.execute("CREATE TEMP TABLE twilio_sms_event_link AS "
               "SELECT id, message_id FROM twilio_sms_event WHERE message_id IS NOT NULL")
    yield
    op.execute(
        "UPDATE twilio_sms_event SET message_id = (SELECT link.message_id FROM twilio_sms_event_link "
        "AS link WHERE link.id = twilio_sms_event.id) WHERE id IN (SELECT id FROM twilio_sms_event_link)"
    )
    op.execute("DROP TABLE twilio_sms_event_link")


def _pool_length(length: int) -> None:
    for table in POOL_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("pool", existing_type=sa.String(), type_=sa.String(length),
                               existing_nullable=False)


def upgrade() -> None:
    op.add_column(MESSAGE, sa.Column("idempotency_key_sha256", sa.String(64)))
    op.execute(f"UPDATE {MESSAGE} SET idempotency_key_sha256 = {_sha256_of('idempotency_key')}")
    op.execute(f"UPDATE twilio_sms_rate_grant SET grant_key = {_sha256_of('grant_key')}")
    with _events_keep_their_message(), op.batch_alter_table(MESSAGE) as batch:
        batch.alter_column("idempotency_key_sha256", existing_type=sa.String(64), nullable=False)
        batch.alter_column("idempotency_key", existing_type=sa.String(255), nullable=True)
        batch.drop_constraint(OLD_UNIQUE, type_="unique")
        batch.create_unique_constraint(NEW_UNIQUE, ["scope", "idempotency_key_sha256"])
    _pool_length(300)


def downgrade() -> None:
    # Rate-limit state of pools whose name the old columns cannot hold; it only counts recent sends.
    for table in reversed(POOL_TABLES):
        op.execute(f"DELETE FROM {table} WHERE length(pool) > 256")
    _pool_length(256)
    # A key too long to be kept gets a stand-in that stays unique; grant keys stay digests (a send resumed
    # across the downgrade takes a second grant once).
    op.execute(f"UPDATE {MESSAGE} SET idempotency_key = 'sha256:' || idempotency_key_sha256 "
               "WHERE idempotency_key IS NULL")
    with _events_keep_their_message(), op.batch_alter_table(MESSAGE) as batch:
        batch.drop_constraint(NEW_UNIQUE, type_="unique")
        batch.create_unique_constraint(OLD_UNIQUE, ["scope", "idempotency_key"])
        batch.alter_column("idempotency_key", existing_type=sa.String(255), nullable=False)
        batch.drop_column("idempotency_key_sha256")

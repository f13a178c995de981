"""Rate limits as a ring of slots per pool, on the database's clock, instead of one row per grant.

Before, every decision summed the grants in its window and a refusal read them all, under the pool's lock:
its cost grew with the window (at 1M grants in a day, 68 ms a grant and 382 ms a refusal on PostgreSQL).
Now a pool keeps the last ``limit`` units it granted in ``twilio_sms_rate_slot`` (a ring: ``ring_size``
slots, ``ring_next`` the oldest) and a decision reads and writes one slot per unit, whatever the window
holds. Times are microseconds since the epoch on the database's clock.

Existing grants become slots (a grant of cost N, N slots), oldest first, so a window that was full stays
full across the upgrade; the first decision under a limit resizes the ring to it. The per-grant key
(``grant_key``) is gone: a slot is taken right before each request leaves and belongs to that request.
Downgrade turns the slots back into grants of cost 1.

Revision ID: 0006_twilio_sms
Revises: 0003_twilio_sms
Create Date: 2026-12-04
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0006_twilio_sms"
down_revision = "0003_twilio_sms"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_EPOCH = datetime(1970, 1, 1)
_BATCH = 10_000

_grant = sa.table("twilio_sms_rate_grant", sa.column("id", _ID), sa.column("pool", sa.String),
                  sa.column("grant_key", sa.String), sa.column("cost", sa.Integer),
                  sa.column("granted_at", sa.DateTime))
_slot = sa.table("twilio_sms_rate_slot", sa.column("pool", sa.String), sa.column("slot", sa.Integer),
                 sa.column("until_us", sa.BigInteger))
_pool = sa.table("twilio_sms_rate_pool", sa.column("pool", sa.String), sa.column("ring_size", sa.Integer),
                 sa.column("ring_next", sa.Integer))


def _us(moment: datetime) -> int:
    """A stored naive-UTC timestamp as microseconds since the epoch."""
    moment = moment.replace(tzinfo=None) if moment.tzinfo else moment
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _insert_batched(conn, table, rows) -> None:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            conn.execute(table.insert(), batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)


def upgrade() -> None:
    with op.batch_alter_table("twilio_sms_rate_pool") as batch:
        batch.add_column(sa.Column("ring_size", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("ring_next", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "twilio_sms_rate_slot",
        sa.Column("pool", sa.String(300), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("until_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pool", "slot", name="pk_twilio_sms_rate_slot"),
    )
    conn = op.get_bind()
    sizes: dict[str, int] = {}

    grants = conn.execute(sa.select(_grant.c.pool, _grant.c.cost, _grant.c.granted_at)
                          .order_by(_grant.c.pool, _grant.c.granted_at, _grant.c.id)).all()

    def units():
        for pool, cost, stored_at in grants:
            granted_at = datetime.fromisoformat(stored_at) if isinstance(stored_at, str) else stored_at
            until = _us(granted_at)
            for _ in range(max(1, cost)):
                index = sizes.get(pool, 0)
                sizes[pool] = index + 1
                yield {"pool": pool, "slot": index, "until_us": until}

    _insert_batched(conn, _slot, units())
    for pool, size in sizes.items():
        conn.execute(_pool.update().where(_pool.c.pool == pool).values(ring_size=size, ring_next=0))
    op.drop_index("ix_twilio_sms_rate_grant_pool_time", table_name="twilio_sms_rate_grant")
    op.drop_table("twilio_sms_rate_grant")


def downgrade() -> None:
    op.create_table(
        "twilio_sms_rate_grant",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("pool", sa.String(300), nullable=False),
        sa.Column("grant_key", sa.String(300), nullable=False),
        sa.Column("cost", sa.Integer(), nullable=False),
        sa.Column("granted_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_twilio_sms_rate_grant"),
        sa.UniqueConstraint("pool", "grant_key", name="uq_twilio_sms_rate_grant_pool_key"),
    )
    op.create_index("ix_twilio_sms_rate_grant_pool_time", "twilio_sms_rate_grant", ["pool", "granted_at"])
    conn = op.get_bind()
    rows = conn.execute(sa.select(_slot.c.pool, _slot.c.slot, _slot.c.until_us)
                        .where(_slot.c.until_us > 0))
    _insert_batched(conn, _grant, (
        {"pool": pool, "grant_key": f"slot-{slot}", "cost": 1,
         "granted_at": datetime.fromtimestamp(until / 1e6, timezone.utc).replace(tzinfo=None)}
        for pool, slot, until in rows.all()))
    op.drop_table("twilio_sms_rate_slot")
    with op.batch_alter_table("twilio_sms_rate_pool") as batch:
        batch.drop_column("ring_next")
        batch.drop_column("ring_size")

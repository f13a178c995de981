"""Inbound SMS as asset events: one cursor per watcher, in the store.

``SmsInboundEventTrigger`` (an ``AssetWatcher`` trigger) emits one asset event per matching inbound
message. What it has read to must survive a triggerer restart and be shared by every triggerer that runs
the same watcher, so it lives here, one row per watcher (``watch_key``: SHA-256 of the trigger's class
path and kwargs), and moves only by compare-and-set (``UPDATE ... WHERE last_event_id = <what it read>``).

The watchers read the events through the existing ``(kind, to_number, id)`` and
``(kind, messaging_service_sid, id)`` indexes and the primary key: no new index on ``twilio_sms_event``.

Revision ID: 0011_twilio_sms
Revises: 0010_twilio_sms
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_twilio_sms"
down_revision = "0010_twilio_sms"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "twilio_sms_event_watch",
        sa.Column("watch_key", sa.String(64), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("moved_by", sa.String(36)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("watch_key", name="pk_twilio_sms_event_watch"),
    )


def downgrade() -> None:
    op.drop_table("twilio_sms_event_watch")

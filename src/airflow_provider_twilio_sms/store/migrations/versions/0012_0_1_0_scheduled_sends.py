"""Scheduled messages: the moment Twilio is to send a message (``SendAt``), kept on its row.

A message created with ``ScheduleType=fixed`` waits at Twilio, status ``scheduled``, until ``SendAt``. The
row keeps that moment so a retried task can say when its message goes out (and notice when it asks for
another moment), a status sensor starts asking Twilio only after it, and a person canceling it knows what
is pending. NULL: sent at once.

Revision ID: 0012_twilio_sms
Revises: 0011_twilio_sms
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_twilio_sms"
down_revision = "0011_twilio_sms"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("twilio_sms_message") as batch:
        batch.add_column(sa.Column("send_at", sa.DateTime(), nullable=True))  # naive UTC, as every other
    # What a failed DAG run cancels: its sends still scheduled. Only scheduled sends are in the index.
    op.create_index("ix_twilio_sms_message_scheduled_run", "twilio_sms_message", ["dag_id", "run_id"],
                    postgresql_where=sa.text("send_at IS NOT NULL"),
                    sqlite_where=sa.text("send_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_twilio_sms_message_scheduled_run", table_name="twilio_sms_message")
    with op.batch_alter_table("twilio_sms_message") as batch:
        batch.drop_column("send_at")

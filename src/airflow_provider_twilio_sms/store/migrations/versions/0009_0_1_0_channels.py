"""The channel of each message and webhook event: ``sms`` or ``whatsapp``.

WhatsApp goes through the same Messages API as SMS, with ``whatsapp:+E164`` addresses in To and From. The
addresses are stored whole (so an SMS reply and a WhatsApp reply from one phone are different senders);
``channel`` says which channel a row is on without parsing them, for the read API, the page and reports.
Rows stored before this revision are SMS (the provider refused ``whatsapp:`` addresses until now), which the
server default gives them.

Revision ID: 0009_twilio_sms
Revises: 0008_twilio_sms
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_twilio_sms"
down_revision = "0008_twilio_sms"
branch_labels = None
depends_on = None

TABLES = ("twilio_sms_message", "twilio_sms_event")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("channel", sa.String(10), nullable=False, server_default="sms"))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("channel")

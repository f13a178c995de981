"""Replies through a Messaging Service read by an index, as replies from or to a number already are.

A deferred reply sensor that waits on a Messaging Service (a message sent through one, whose sender
number is not known) reads the inbound messages of that service from its own cursor. Without an index on
the service that read walked the whole event table; with ``(kind, messaging_service_sid, id)`` it reads
only the new messages of the service, as ``ix_twilio_sms_event_kind_from`` and ``_kind_to`` serve replies
from and to a number (see ``store/inbound.py``).

Revision ID: 0008_twilio_sms
Revises: 0007_twilio_sms
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0008_twilio_sms"
down_revision = "0007_twilio_sms"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_twilio_sms_event_kind_service", "twilio_sms_event",
                    ["kind", "messaging_service_sid", "id"])


def downgrade() -> None:
    op.drop_index("ix_twilio_sms_event_kind_service", table_name="twilio_sms_event")

"""Covering indexes for the Twilio SMS page's reports (delivery summary over a period, inbound counts).

The two message indexes on ``created_at`` and ``(team, created_at)`` become covering ones that also hold
what the summary groups by (``status``, ``send_state``, ``error_code``), so a summary reads the index only;
their leading columns are unchanged, so every query that used the old ones can use the new ones. Inbound
counts per period get ``(kind, received_at, team, opt_out_type)``. With 100 000 stored events a 30-day
summary goes from about 105 ms to about 30 ms on SQLite (bench/ui_api.py).

Revision ID: 0002_twilio_sms
Revises: 0001_twilio_sms
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0002_twilio_sms"
down_revision = "0001_twilio_sms"
branch_labels = None
depends_on = None

_REPORTED = ["status", "send_state", "error_code"]


def upgrade() -> None:
    op.create_index("ix_twilio_sms_message_created_report", "twilio_sms_message",
                    ["created_at", "team", *_REPORTED])
    op.create_index("ix_twilio_sms_message_team_created_report", "twilio_sms_message",
                    ["team", "created_at", *_REPORTED])
    op.drop_index("ix_twilio_sms_message_created", table_name="twilio_sms_message")
    op.drop_index("ix_twilio_sms_message_team_created", table_name="twilio_sms_message")
    op.create_index("ix_twilio_sms_event_kind_received", "twilio_sms_event",
                    ["kind", "received_at", "team", "opt_out_type"])


def downgrade() -> None:
    op.drop_index("ix_twilio_sms_event_kind_received", table_name="twilio_sms_event")
    op.create_index("ix_twilio_sms_message_team_created", "twilio_sms_message", ["team", "created_at"])
    op.create_index("ix_twilio_sms_message_created", "twilio_sms_message", ["created_at"])
    op.drop_index("ix_twilio_sms_message_team_created_report", table_name="twilio_sms_message")
    op.drop_index("ix_twilio_sms_message_created_report", table_name="twilio_sms_message")

"""Human-in-the-loop requests answered by SMS: the reply code texted per task instance try and recipient.

``SmsHitlNotifier`` records one row per (task instance try, recipient) with a short reply code, unique
among that number's pending requests (``pending_code`` is NULL once settled); the webhook finds the request
an inbound reply names by its code and answers it through Airflow's own HITL API.

Revision ID: 0010_twilio_sms
Revises: 0009_twilio_sms
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_twilio_sms"
down_revision = "0009_twilio_sms"
branch_labels = None
depends_on = None

# Written out, not imported from store/tables.py: a migration keeps the schema of its own revision.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "twilio_sms_hitl_request",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("conn_id", sa.String(250), nullable=False),
        sa.Column("signer", sa.String(32)),
        sa.Column("ti_id", sa.String(36), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("to_number", sa.String(32), nullable=False),
        sa.Column("code", sa.String(8), nullable=False),
        sa.Column("pending_code", sa.String(8)),
        sa.Column("users", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(20)),
        sa.Column("answer_message_sid", sa.String(34)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_twilio_sms_hitl_request"),
        sa.UniqueConstraint("ti_id", "to_number", name="uq_twilio_sms_hitl_request_ti_to"),
        sa.UniqueConstraint("to_number", "pending_code", name="uq_twilio_sms_hitl_request_to_pending"),
    )
    op.create_index("ix_twilio_sms_hitl_request_code", "twilio_sms_hitl_request", ["code", "id"])
    op.create_index("ix_twilio_sms_hitl_request_created", "twilio_sms_hitl_request", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_twilio_sms_hitl_request_created", table_name="twilio_sms_hitl_request")
    op.drop_index("ix_twilio_sms_hitl_request_code", table_name="twilio_sms_hitl_request")
    op.drop_table("twilio_sms_hitl_request")

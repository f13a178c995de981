"""Initial twilio_sms_* tables: messages, webhook events, opt-outs, rate-limit pools and grants.

Revision ID: 0001_twilio_sms
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_twilio_sms"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "twilio_sms_message",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(300), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("conn_id", sa.String(250), nullable=False),
        sa.Column("team", sa.String(250)),
        sa.Column("pool", sa.String(256)),
        sa.Column("to_number", sa.String(32), nullable=False),
        sa.Column("from_number", sa.String(32)),
        sa.Column("messaging_service_sid", sa.String(34)),
        sa.Column("body", sa.Text()),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("num_media", sa.SmallInteger(), nullable=False),
        sa.Column("send_state", sa.String(16), nullable=False),
        sa.Column("attempt_id", sa.String(100), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=False),
        sa.Column("http_attempted_at", sa.DateTime()),
        sa.Column("sid", sa.String(34)),
        sa.Column("status", sa.String(20)),
        sa.Column("status_rank", sa.SmallInteger(), nullable=False),
        sa.Column("status_updated_at", sa.DateTime()),
        sa.Column("num_segments", sa.SmallInteger()),
        sa.Column("encoding", sa.String(8)),
        sa.Column("error_code", sa.Integer()),
        sa.Column("error_message", sa.Text()),
        sa.Column("dag_id", sa.String(250)),
        sa.Column("task_id", sa.String(250)),
        sa.Column("run_id", sa.String(250)),
        sa.Column("map_index", sa.Integer()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_twilio_sms_message"),
        sa.UniqueConstraint("scope", "idempotency_key", name="uq_twilio_sms_message_scope_key"),
        sa.UniqueConstraint("sid", name="uq_twilio_sms_message_sid"),
    )
    op.create_index("ix_twilio_sms_message_created", "twilio_sms_message", ["created_at"])
    op.create_index("ix_twilio_sms_message_team_created", "twilio_sms_message", ["team", "created_at"])
    op.create_index("ix_twilio_sms_message_to_created", "twilio_sms_message", ["to_number", "created_at"])

    op.create_table(
        "twilio_sms_event",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("conn_id", sa.String(250), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("idempotency_token", sa.String(200)),
        sa.Column("message_sid", sa.String(34), nullable=False),
        sa.Column("message_id", _ID),
        sa.Column("status", sa.String(20)),
        sa.Column("error_code", sa.Integer()),
        sa.Column("from_number", sa.String(32)),
        sa.Column("to_number", sa.String(32)),
        sa.Column("body", sa.Text()),
        sa.Column("num_media", sa.SmallInteger()),
        sa.Column("opt_out_type", sa.String(10)),
        sa.Column("team", sa.String(250)),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_twilio_sms_event"),
        sa.ForeignKeyConstraint(["message_id"], ["twilio_sms_message.id"], ondelete="SET NULL",
                                name="fk_twilio_sms_event_message_id_twilio_sms_message"),
        sa.UniqueConstraint("account_sid", "dedupe_key", name="uq_twilio_sms_event_account_dedupe"),
    )
    op.create_index("ix_twilio_sms_event_message_sid", "twilio_sms_event", ["message_sid", "id"])
    op.create_index("ix_twilio_sms_event_message_id", "twilio_sms_event", ["message_id", "id"])
    op.create_index("ix_twilio_sms_event_kind_to", "twilio_sms_event", ["kind", "to_number", "id"])
    op.create_index("ix_twilio_sms_event_kind_from", "twilio_sms_event", ["kind", "from_number", "id"])
    op.create_index("ix_twilio_sms_event_received", "twilio_sms_event", ["received_at"])

    op.create_table(
        "twilio_sms_opt_out",
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("keyword", sa.String(20)),
        sa.Column("message_sid", sa.String(34)),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_sid", "number", name="pk_twilio_sms_opt_out"),
    )

    op.create_table(
        "twilio_sms_rate_pool",
        sa.Column("pool", sa.String(256), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("pool", name="pk_twilio_sms_rate_pool"),
    )

    op.create_table(
        "twilio_sms_rate_grant",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("pool", sa.String(256), nullable=False),
        sa.Column("grant_key", sa.String(300), nullable=False),
        sa.Column("cost", sa.Integer(), nullable=False),
        sa.Column("granted_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_twilio_sms_rate_grant"),
        sa.UniqueConstraint("pool", "grant_key", name="uq_twilio_sms_rate_grant_pool_key"),
    )
    op.create_index("ix_twilio_sms_rate_grant_pool_time", "twilio_sms_rate_grant", ["pool", "granted_at"])


def downgrade() -> None:
    op.drop_table("twilio_sms_rate_grant")
    op.drop_table("twilio_sms_rate_pool")
    op.drop_table("twilio_sms_opt_out")
    op.drop_table("twilio_sms_event")
    op.drop_table("twilio_sms_message")

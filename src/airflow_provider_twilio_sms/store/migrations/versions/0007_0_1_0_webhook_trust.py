"""Webhook trust: who signed an event, and who sent a message, so events touch only their own records.

- ``signer`` on messages and events: a fingerprint of the secret that signs the connection's webhooks
  (``TwilioConnectionSettings.signer``). Two connections that claim one Account SID with different Auth
  Tokens have different signers, so an event verified with one never matches a message sent with the
  other. Existing rows keep NULL: they are matched by their connection id only.
- ``messaging_service_sid`` on events: an inbound reply to a message sent through a Messaging Service is
  matched by the service when the message's sender number is not known.
- Opt-outs are kept per account AND signer (primary key ``account_sid, signer, number``): a STOP verified
  with another token never refuses this connection's sends. Existing opt-outs get the signer ``''``,
  which every connection of the account honours (as before this migration).
- ``twilio_sms_reply_wait``: what a deferred reply sensor waits for (account, signer, numbers), so the
  trigger's kwargs, stored in Airflow's ``trigger`` table, name a row id instead of phone numbers.

Revision ID: 0007_twilio_sms
Revises: 0006_twilio_sms
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_twilio_sms"
down_revision = "0006_twilio_sms"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("twilio_sms_message") as batch:
        batch.add_column(sa.Column("signer", sa.String(32)))
    with op.batch_alter_table("twilio_sms_event") as batch:
        batch.add_column(sa.Column("signer", sa.String(32)))
        batch.add_column(sa.Column("messaging_service_sid", sa.String(34)))
    with op.batch_alter_table("twilio_sms_opt_out", recreate="always") as batch:
        batch.add_column(sa.Column("signer", sa.String(32), nullable=False, server_default=""))
        batch.drop_constraint("pk_twilio_sms_opt_out", type_="primary")
        batch.create_primary_key("pk_twilio_sms_opt_out", ["account_sid", "signer", "number"])
    op.create_table(
        "twilio_sms_reply_wait",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("conn_id", sa.String(250), nullable=False),
        sa.Column("signer", sa.String(32)),
        sa.Column("from_number", sa.String(32)),
        sa.Column("to_number", sa.String(32)),
        sa.Column("messaging_service_sid", sa.String(34)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_twilio_sms_reply_wait"),
    )


def downgrade() -> None:
    op.drop_table("twilio_sms_reply_wait")
    # Opt-outs of several signers for one number fold into one row: opted out if any signer says so.
    conn = op.get_bind()
    conn.execute(sa.text(
        "DELETE FROM twilio_sms_opt_out WHERE EXISTS (SELECT 1 FROM twilio_sms_opt_out o2 "
        "WHERE o2.account_sid = twilio_sms_opt_out.account_sid AND o2.number = twilio_sms_opt_out.number "
        "AND (o2.opted_out > twilio_sms_opt_out.opted_out OR (o2.opted_out = twilio_sms_opt_out.opted_out "
        "AND o2.signer < twilio_sms_opt_out.signer)))"))
    with op.batch_alter_table("twilio_sms_opt_out", recreate="always") as batch:
        batch.drop_constraint("pk_twilio_sms_opt_out", type_="primary")
        batch.create_primary_key("pk_twilio_sms_opt_out", ["account_sid", "number"])
        batch.drop_column("signer")
    with op.batch_alter_table("twilio_sms_event") as batch:
        batch.drop_column("messaging_service_sid")
        batch.drop_column("signer")
    with op.batch_alter_table("twilio_sms_message") as batch:
        batch.drop_column("signer")

"""SQLite: ids of webhook events and reply waits are never reused (``AUTOINCREMENT``).

Without it SQLite hands out the largest id in the table plus one, so once the newest events are deleted
(``airflow twilio-sms forget``, or a purge that empties the table) the next message gets an id that was
handed out before. The reply sensors and the inbound asset watchers read events *after* an id they have
already seen: a message under a reused id was never seen by them. A reused reply-wait id would point a
still-deferred sensor at another sensor's wait. PostgreSQL's sequences never go back; nothing changes there.

The two tables are rebuilt with ``AUTOINCREMENT`` (rows, ids and indexes kept). The event id sequence
starts above every cursor an asset watcher holds (``twilio_sms_event_watch``), so a watcher whose newest
events were erased before this upgrade still sees the next message. A reply sensor deferred across this
upgrade whose newest events were erased meanwhile keeps its own cursor in Airflow's trigger table: it is
out of reach here; clear that sensor's task to start it afresh.

Revision ID: 0013_twilio_sms
Revises: 0012_twilio_sms
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_twilio_sms"
down_revision = "0012_twilio_sms"
branch_labels = None
depends_on = None

TABLES = ("twilio_sms_event", "twilio_sms_reply_wait")


def _rebuild(autoincrement: bool) -> None:
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    _rebuild(True)
    # Copying the rows set each sequence to the table's largest id; the events' one must also pass every
    # watcher's cursor.
    cursor = bind.execute(sa.text("SELECT max(last_event_id) FROM twilio_sms_event_watch")).scalar()
    if cursor is None:
        return
    seq = bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'twilio_sms_event'")).scalar()
    if seq is None:
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('twilio_sms_event', :c)"),
                     {"c": cursor})
    elif seq < cursor:
        bind.execute(sa.text("UPDATE sqlite_sequence SET seq = :c WHERE name = 'twilio_sms_event'"),
                     {"c": cursor})


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(False)

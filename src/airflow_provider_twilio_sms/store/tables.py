"""The ``twilio_sms_*`` tables, on a private MetaData (never Airflow's ``Base.metadata``).

The schema is created and changed only by the alembic migrations in ``migrations/versions``;
``tests/unit/store/test_migrations.py`` proves these definitions and the migrations agree.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator):
    """Timestamps stored as naive UTC on every backend, returned timezone-aware (UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the twilio_sms store; pass an aware (UTC) datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # SQLite returns text for some expressions (e.g. MIN/MAX)
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


# Outbound messages: one row per idempotency key and scope (account, and team when there is one).
message = Table(
    "twilio_sms_message",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("scope", String(300), nullable=False),
    # Keys come at any length: the row is found, and kept unique, by the key's SHA-256 (hex); the key itself
    # is kept for display only when it fits (else NULL). Never truncated.
    Column("idempotency_key", String(255)),
    Column("idempotency_key_sha256", String(64), nullable=False),
    Column("account_sid", String(34), nullable=False),
    Column("conn_id", String(250), nullable=False),
    # Who the sending connection proves itself to be (TwilioConnectionSettings.signer); NULL before 0007.
    Column("signer", String(32)),
    Column("team", String(250)),
    Column("pool", String(256)),
    Column("to_number", String(32), nullable=False),
    Column("from_number", String(32)),
    Column("messaging_service_sid", String(34)),
    Column("body", Text),
    Column("body_sha256", String(64), nullable=False),
    # "sms" or "whatsapp" (migration 0009): the channel of to_number/from_number ("whatsapp:+..." addresses).
    Column("channel", String(10), nullable=False, server_default="sms"),
    Column("num_media", SmallInteger, nullable=False, default=0),
    # claimed -> sent | failed | unknown; see store/api.py for the state machine.
    Column("send_state", String(16), nullable=False),
    Column("attempt_id", String(100), nullable=False),
    Column("lease_expires_at", UtcDateTime(), nullable=False),
    Column("http_attempted_at", UtcDateTime()),
    Column("sid", String(34)),
    Column("status", String(20)),
    Column("status_rank", SmallInteger, nullable=False, default=0),
    Column("status_updated_at", UtcDateTime()),
    Column("num_segments", SmallInteger),
    Column("encoding", String(8)),
    Column("error_code", Integer),
    Column("error_message", Text),
    Column("dag_id", String(250)),
    Column("task_id", String(250)),
    Column("run_id", String(250)),
    Column("map_index", Integer),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime()),
    # When Twilio is to send a scheduled message (ScheduleType=fixed, migration 0012); NULL: sent at once.
    Column("send_at", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("scope", "idempotency_key_sha256", name="uq_twilio_sms_message_scope_key_sha256"),
    UniqueConstraint("sid", name="uq_twilio_sms_message_sid"),
    # Covering for the page's delivery summary (migration 0002): it reads these indexes only.
    Index("ix_twilio_sms_message_created_report", "created_at", "team", "status", "send_state", "error_code"),
    Index("ix_twilio_sms_message_team_created_report", "team", "created_at", "status", "send_state",
          "error_code"),
    Index("ix_twilio_sms_message_to_created", "to_number", "created_at"),
    # Scheduled sends of a DAG run, what a failed run cancels (migration 0012); only they are indexed.
    Index("ix_twilio_sms_message_scheduled_run", "dag_id", "run_id",
          postgresql_where=text("send_at IS NOT NULL"), sqlite_where=text("send_at IS NOT NULL")),
)

# Webhook events, status callbacks and inbound messages alike, raw payload kept. ``dedupe_key`` makes
# a repeated delivery of the same event a no-op (unique per account).
event = Table(
    "twilio_sms_event",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(10), nullable=False),  # "status" | "inbound"
    Column("account_sid", String(34), nullable=False),
    Column("conn_id", String(250), nullable=False),  # the connection that verified the event
    Column("signer", String(32)),  # its TwilioConnectionSettings.signer; NULL before 0007
    Column("dedupe_key", String(200), nullable=False),
    Column("idempotency_token", String(200)),
    Column("message_sid", String(34), nullable=False),
    Column("message_id", Id, ForeignKey("twilio_sms_message.id", ondelete="SET NULL")),
    Column("status", String(20)),
    Column("error_code", Integer),
    Column("from_number", String(32)),
    Column("to_number", String(32)),
    Column("messaging_service_sid", String(34)),
    Column("body", Text),
    Column("num_media", SmallInteger),
    Column("opt_out_type", String(10)),
    Column("team", String(250)),
    # "sms" or "whatsapp" (migration 0009), read from the event's addresses.
    Column("channel", String(10), nullable=False, server_default="sms"),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("payload", Text, nullable=False),
    UniqueConstraint("account_sid", "dedupe_key", name="uq_twilio_sms_event_account_dedupe"),
    Index("ix_twilio_sms_event_message_sid", "message_sid", "id"),
    Index("ix_twilio_sms_event_message_id", "message_id", "id"),
    Index("ix_twilio_sms_event_kind_to", "kind", "to_number", "id"),
    Index("ix_twilio_sms_event_kind_from", "kind", "from_number", "id"),
    # Replies through a Messaging Service (migration 0008): a waiting sensor reads them by this index.
    Index("ix_twilio_sms_event_kind_service", "kind", "messaging_service_sid", "id"),
    Index("ix_twilio_sms_event_received", "received_at"),
    Index("ix_twilio_sms_event_kind_received", "kind", "received_at", "team", "opt_out_type"),
    # Readers wait for events after an id they have seen: on SQLite an id is never handed out twice even
    # once the newest rows are deleted (migration 0013).
    sqlite_autoincrement=True,
)

# Opt-outs per (account, signer, number), kept up to date by inbound STOP/START verified for that account
# and signer. Signer '' (opt-outs stored before migration 0007) is honoured by every connection of the
# account.
opt_out = Table(
    "twilio_sms_opt_out",
    metadata,
    Column("account_sid", String(34), primary_key=True),
    Column("signer", String(32), primary_key=True, server_default=""),
    Column("number", String(32), primary_key=True),
    Column("opted_out", Boolean, nullable=False),
    Column("keyword", String(20)),
    Column("message_sid", String(34)),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# What a deferred SmsReplySensor waits for: its trigger's kwargs (kept in Airflow's ``trigger`` table) carry
# this row's id, never the phone numbers.
reply_wait = Table(
    "twilio_sms_reply_wait",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_sid", String(34), nullable=False),
    Column("conn_id", String(250), nullable=False),
    Column("signer", String(32)),
    Column("from_number", String(32)),
    Column("to_number", String(32)),
    Column("messaging_service_sid", String(34)),
    Column("created_at", UtcDateTime(), nullable=False),
    sqlite_autoincrement=True,  # a deferred sensor's wait id never names another wait (migration 0013)
)

# Rate limiting (migration 0006): per team pool ("pool:" + an Airflow pool name of at most 256 characters,
# or "team:" + a team name of at most 250 here), one lock row holding a ring of the last ``ring_size``
# units granted (``ring_size`` is the pool's limit; a send costs one unit, or one per segment), and one
# slot row per unit with the latest moment its request can have reached Twilio, in microseconds since the
# epoch on the database's clock. ``ring_next`` is the slot of the oldest unit: the next to be reused.
# A slot not written yet is free. See ``SmsStore.acquire_rate_slot``.
rate_pool = Table(
    "twilio_sms_rate_pool",
    metadata,
    Column("pool", String(300), primary_key=True),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("ring_size", Integer, nullable=False, server_default="0"),
    Column("ring_next", Integer, nullable=False, server_default="0"),
)

rate_slot = Table(
    "twilio_sms_rate_slot",
    metadata,
    Column("pool", String(300), primary_key=True),
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("until_us", BigInteger, nullable=False),
)

# Where each inbound-SMS asset watcher (triggers/inbound_events.py) has read to (migration 0011): the
# id of the last inbound event it has decided on, moved only by a compare-and-set so that two triggerers
# running the same watcher never both emit one message. ``watch_key`` is the SHA-256 (hex) of the
# trigger's class path and kwargs; ``events`` counts the messages it emitted; ``moved_by`` names the trigger
# run that moved it last (a run whose update timed out learns from it whether the update went through).
event_watch = Table(
    "twilio_sms_event_watch",
    metadata,
    Column("watch_key", String(64), primary_key=True),
    Column("last_event_id", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False, server_default="0"),
    Column("moved_by", String(36)),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Human-in-the-loop requests texted by SmsHitlNotifier (migration 0010): one row per Airflow task instance
# try (``ti_id``) and recipient, with the short reply code the SMS carries. ``pending_code`` is that code
# while the request waits for this number's answer and NULL once it is settled (NULLs never collide), so a
# code is unique among one number's pending requests and can be reused after. ``users`` is the DAG author's
# number -> Airflow user mapping (JSON) from the notifier; the Airflow rows themselves are never written here.
hitl_request = Table(
    "twilio_sms_hitl_request",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_sid", String(34), nullable=False),
    Column("conn_id", String(250), nullable=False),
    Column("signer", String(32)),
    Column("ti_id", String(36), nullable=False),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False),
    Column("to_number", String(32), nullable=False),
    Column("code", String(8), nullable=False),
    Column("pending_code", String(8)),
    Column("users", Text, nullable=False),
    Column("state", String(16), nullable=False),  # pending | answered | closed
    Column("outcome", String(20)),  # what settled it: answered, already_answered, timed_out
    Column("answer_message_sid", String(34)),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("ti_id", "to_number", name="uq_twilio_sms_hitl_request_ti_to"),
    UniqueConstraint("to_number", "pending_code", name="uq_twilio_sms_hitl_request_to_pending"),
    Index("ix_twilio_sms_hitl_request_code", "code", "id"),
    Index("ix_twilio_sms_hitl_request_created", "created_at"),
)

"""How waiting reply sensors read inbound messages: each through an index, from its own cursor.

A reply sensor can only be answered by inbound messages from the number it waits on, else to that number,
else through that Messaging Service (:meth:`~airflow_provider_twilio_sms.replies.ReplyCriteria.channels`).
Each is an :class:`InboundChannel`: the messages one ``(kind, <column>, id)`` index of ``twilio_sms_event``
holds in id order. :func:`channel_reads` reads a page of many channels, each after its own cursor, in one
statement whose text does not change with their number (one plan, no limit on bind parameters):

- PostgreSQL: the reads as arrays, ``unnest``-ed, and per read a ``LATERAL`` index scan with ``LIMIT``;
- SQLite: the reads as JSON (``json_each``), and per read a correlated ``IN``
  subquery with ``LIMIT`` on the index.

Where a sensor's reading starts (:func:`cursor_statement`): replies received before its ``since`` never
count, so it starts after the newest inbound message received :data:`CURSOR_MARGIN` before ``since``
(one probe of the ``(kind, received_at)`` index), not at the start of the table.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, bindparam, column, select, text

from airflow_provider_twilio_sms.store import tables as t

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.selectable import Select, TextualSelect

e = t.event

# The columns an index leads with after ``kind`` (ix_twilio_sms_event_kind_from, _kind_to, _kind_service).
CHANNEL_COLUMNS = ("from_number", "to_number", "messaging_service_sid")

# What the matching needs of a message (never its raw payload).
READ_COLUMNS = ("id", "account_sid", "conn_id", "signer", "message_sid", "from_number", "to_number",
                "messaging_service_sid", "body", "opt_out_type", "received_at")

# Event ids follow the order rows were inserted; ``received_at`` is the webhook's clock read just before
# the insert. A message received at or after ``since`` therefore has a higher id than every message
# received this long before ``since``, unless a webhook's insert waited longer than this after reading its
# clock (its store deadline is 14 s at most) or the clocks of two webhook hosts differ by more than the
# rest. The messages of the margin are read again and discarded (they are older than ``since``).
CURSOR_MARGIN = timedelta(minutes=2)


@dataclass(frozen=True)
class InboundChannel:
    """Inbound messages of one account whose ``column`` is ``value``, in id order, read through the
    ``(kind, column, id)`` index. With ``to_number`` or ``messaging_service_sid`` also, only those arriving
    at that number or through that service (checked on the rows the index finds, before the page's limit).
    """

    account_sid: str
    column: str
    value: str
    to_number: str | None = None
    messaging_service_sid: str | None = None

    def __post_init__(self):
        if self.column not in CHANNEL_COLUMNS:
            raise ValueError(f"an inbound channel reads one of {', '.join(CHANNEL_COLUMNS)}, "
                             f"not {self.column!r}")
        if not self.value:
            raise ValueError(f"an inbound channel on {self.column} needs a value")


def _read_columns(alias: str) -> str:
    return ", ".join(f"{alias}.{name}" for name in READ_COLUMNS)


def _page_of(dialect: str, channel_column: str, columns: str) -> str:
    """``columns`` of read ``r``'s page: its channel's messages after its cursor, oldest first.

    On PostgreSQL the channel's value is matched as a range of one value and the page ordered by
    ``(column, id)``: the planner cannot know how common a value read at run time is, and for a column of
    few distinct values (our own numbers, our services) it would walk the primary key from the cursor and
    filter out every other channel's messages. Only the channel's index yields that order, and its scan
    still starts at ``(kind, value, cursor)``. SQLite picks that index for a plain ``=``.
    """
    if dialect == "postgresql":
        match, order = f"x.{channel_column} >= r.wanted AND x.{channel_column} <= r.wanted", \
            f"x.{channel_column}, x.id"
    else:
        match, order = f"x.{channel_column} = r.wanted", "x.id"
    return (
        f"SELECT {columns} FROM twilio_sms_event x WHERE x.kind = 'inbound' AND {match} "
        "AND x.id > r.after_id AND x.account_sid = r.account_sid "
        "AND (r.to_number IS NULL AND r.service IS NULL OR x.to_number = r.to_number "
        f"OR x.messaging_service_sid = r.service) ORDER BY {order} LIMIT :page"
    )


def _postgresql_part(channel_column: str) -> str:
    page = _page_of("postgresql", channel_column, _read_columns("x"))
    return (f"SELECT r.read_index, {_read_columns('m')} FROM r CROSS JOIN LATERAL ({page}) m "
            f"WHERE r.via = '{channel_column}'")


def _sqlite_part(channel_column: str) -> str:
    # CROSS JOIN: SQLite keeps r as the outer loop (else it may scan the event table and look r up).
    return (f"SELECT r.read_index, {_read_columns('m')} FROM r CROSS JOIN twilio_sms_event m "
            f"ON m.id IN ({_page_of('sqlite', channel_column, 'x.id')}) WHERE r.via = '{channel_column}'")


# One read: its position, the channel (column, account, value, arrival filters) and its cursor.
_READ_FIELDS = ("read_index", "via", "account_sid", "wanted", "to_number", "service", "after_id")


@functools.cache
def _reads_statement(dialect: str) -> TextualSelect:
    if dialect == "postgresql":
        types = ("integer", "varchar", "varchar", "varchar", "varchar", "varchar", "bigint")
        arrays = ", ".join(f"CAST(:{name} AS {kind}[])"
                           for name, kind in zip(_READ_FIELDS, types, strict=True))
        source = f"WITH r AS (SELECT * FROM unnest({arrays}) AS r({', '.join(_READ_FIELDS)})) "
        parts = [_postgresql_part(name) for name in CHANNEL_COLUMNS]
    else:
        fields = ", ".join(f"json_extract(value, '$[{i}]') AS {name}" for i, name in enumerate(_READ_FIELDS))
        source = f"WITH r AS (SELECT {fields} FROM json_each(:reads)) "
        parts = [_sqlite_part(name) for name in CHANNEL_COLUMNS]
    clause = text(source + " UNION ALL ".join(parts)).bindparams(bindparam("page", type_=Integer()))
    return clause.columns(column("read_index", Integer()), *(e.c[name] for name in READ_COLUMNS))


def channel_reads(dialect: str, reads: Sequence[tuple[InboundChannel, int]],
                  page: int) -> tuple[TextualSelect, dict[str, Any]]:
    """The statement and parameters that read, for each ``(channel, after_id)`` of ``reads``, at most
    ``page`` of the channel's messages with an id above ``after_id``; each row carries ``read_index``, the
    position of its read in ``reads``.
    """
    rows = [(i, ch.column, ch.account_sid, ch.value, ch.to_number, ch.messaging_service_sid, int(after_id))
            for i, (ch, after_id) in enumerate(reads)]
    params: dict[str, Any] = {"page": int(page)}
    if dialect == "postgresql":
        params.update((name, [row[i] for row in rows]) for i, name in enumerate(_READ_FIELDS))
    else:
        params["reads"] = json.dumps(rows)
    return _reads_statement(dialect), params


def channel_pages(conn: Connection, dialect: str, reads: Sequence[tuple[InboundChannel, int]],
                  page: int) -> list[list[dict[str, Any]]]:
    """Run :func:`channel_reads` on ``conn``: for each read, its rows (oldest first)."""
    pages: list[list[dict[str, Any]]] = [[] for _ in reads]
    stmt, params = channel_reads(dialect, reads, page)
    for row in conn.execute(stmt, params):
        found = dict(row._mapping)
        pages[found.pop("read_index")].append(found)
    for rows in pages:
        rows.sort(key=lambda row: row["id"])
    return pages


@functools.cache
def cursor_statement() -> Select:
    """The id of the newest inbound message received before ``:before`` (a backward probe of
    ix_twilio_sms_event_kind_received), or no row.
    """
    before = bindparam("before", type_=e.c.received_at.type)
    return (select(e.c.id).where(e.c.kind == "inbound", e.c.received_at < before)
            .order_by(e.c.received_at.desc()).limit(1))


@functools.cache
def inbound_page_statement(*, by_signer: bool, to_number: bool, messaging_service_sid: bool,
                           from_number: bool, since: bool) -> Select:
    """What :meth:`~airflow_provider_twilio_sms.store.api.SmsStore.find_inbound` reads for one shape of
    criteria (which of them are given), built once: a poke only binds values (``p_*``), never builds and
    keys a new statement.
    """
    from sqlalchemy import or_

    from airflow_provider_twilio_sms.store.statements import param

    verified = e.c.conn_id == param("p_conn_id", e.c.conn_id)
    if by_signer:
        verified = or_(verified, e.c.signer == param("p_signer", e.c.signer))
    conditions = [e.c.kind == "inbound", e.c.id > param("p_after_id", e.c.id),
                  e.c.account_sid == param("p_account_sid", e.c.account_sid), verified]
    arrived = [e.c.to_number == param("p_to_number", e.c.to_number)] if to_number else []
    if messaging_service_sid:
        service = e.c.messaging_service_sid
        arrived.append(service == param("p_messaging_service_sid", service))
    if arrived:
        conditions.append(or_(*arrived))
    if from_number:
        conditions.append(e.c.from_number == param("p_from_number", e.c.from_number))
    if since:
        conditions.append(e.c.received_at >= param("p_since", e.c.received_at))
    return select(e).where(*conditions).order_by(e.c.id).limit(bindparam("p_limit", type_=Integer()))

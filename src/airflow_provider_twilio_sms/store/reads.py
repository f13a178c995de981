"""Read queries: messages, statuses, inbound messages for the sensors, reply waits, pages of history for
the read API; and the page's reports (:mod:`.reports`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select

from airflow_provider_twilio_sms.store import reports, tables as t
from airflow_provider_twilio_sms.store.base import StoreBase, utcnow
from airflow_provider_twilio_sms.store.claims import key_digest
from airflow_provider_twilio_sms.store.inbound import (
    CURSOR_MARGIN,
    channel_pages,
    cursor_statement,
    inbound_page_statement,
)
from airflow_provider_twilio_sms.store.reports import team_filter
from airflow_provider_twilio_sms.store.status import status_rank

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.store.inbound import InboundChannel


class Reads(StoreBase):
    """What sensors, triggers, the read API and the page read."""

    # -- reads ----------------------------------------------------------------------------------

    def get_message(
        self,
        *,
        sid: str | None = None,
        scope: str | None = None,
        idempotency_key: str | None = None,
        message_id: int | None = None,
    ) -> dict[str, Any] | None:
        m = t.message
        if sid:
            where = m.c.sid == sid
        elif message_id is not None:
            where = m.c.id == message_id
        elif scope and idempotency_key:
            where = and_(m.c.scope == scope, m.c.idempotency_key_sha256 == key_digest(idempotency_key))
        else:
            raise ValueError("get_message needs sid, message_id, or scope and idempotency_key")
        with self._read() as conn:
            return self._row(conn.execute(select(m).where(where)).first())

    def message_ids_by_sid(self, sids: Iterable[str]) -> dict[str, int]:
        """The outbound row of each of these SIDs that a send recorded: ``{sid: row id}``, one query per
        500 SIDs (reconciliation asks about every candidate at once).
        """
        return {sid: row.id for sid, row in self._messages_by_sid(sids, t.message.c.id).items()}

    def message_senders(self, sids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        """The connection each of these SIDs was sent with, and its signer: ``{sid: (conn_id, signer)}``
        for the SIDs a send recorded (the status fallback stores Twilio's answer as the sender's).
        """
        m = t.message
        return {sid: (row.conn_id, row.signer)
                for sid, row in self._messages_by_sid(sids, m.c.conn_id, m.c.signer).items()}

    def _messages_by_sid(self, sids: Iterable[str], *columns) -> dict[str, Any]:
        """``columns`` of the outbound rows of these SIDs, ``{sid: row}``, one query per 500 SIDs."""
        sids = list(dict.fromkeys(s for s in sids if s))
        m = t.message
        found: dict[str, Any] = {}
        with self._read() as conn:
            for chunk in (sids[i:i + 500] for i in range(0, len(sids), 500)):
                found.update((row.sid, row) for row in conn.execute(select(m.c.sid, *columns)
                                                                     .where(m.c.sid.in_(chunk))))
        return found

    def get_inbound(self, message_sid: str, event_id: int | None = None) -> dict[str, Any] | None:
        """The inbound message with this SID (stored once per account, whatever Twilio's retries), or None.
        With ``event_id`` (what a reply sensor matched), that stored row only: another account's event with
        the same SID is not it.
        """
        e = t.event
        where = [e.c.message_sid == message_sid, e.c.kind == "inbound"]
        if event_id is not None:
            where.append(e.c.id == event_id)
        with self._read() as conn:
            return self._row(conn.execute(select(e).where(*where).order_by(e.c.id).limit(1)).first())

    def status_history(self, message_sid: str) -> list[dict[str, Any]]:
        """Every status callback stored for a message, in arrival order: for a message sent by this
        provider, those linked to it (verified by its own connection); else every one with its SID.
        """
        e, m = t.event, t.message
        ours = select(m.c.id).where(m.c.sid == message_sid).scalar_subquery()
        with self._read() as conn:
            rows = conn.execute(
                select(e.c.id, e.c.status, e.c.error_code, e.c.received_at, e.c.idempotency_token)
                .where(e.c.message_sid == message_sid, e.c.kind == "status",
                       or_(ours.is_(None), e.c.message_id == ours))
                .order_by(e.c.id)
            ).all()
        return [dict(r._mapping) for r in rows]

    def message_states(self, sids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Current status of many messages in one round trip (the triggers' batched poll).

        A message sent by this provider has a row whose status only moves forward, and counts the callbacks
        linked to it (verified by its own connection); a message known only from callbacks (sent
        elsewhere) takes the highest-ranked status among its events.
        Each value: ``status``, ``error_code``, ``events`` (how many callbacks are stored).
        """
        sids = list(dict.fromkeys(s for s in sids if s))
        states: dict[str, dict[str, Any]] = {}
        m, e = t.message, t.event
        with self._read() as conn:
            for chunk in (sids[i:i + 500] for i in range(0, len(sids), 500)):
                linked = (select(func.count()).where(e.c.message_id == m.c.id, e.c.kind == "status")
                          .scalar_subquery())
                for ours in conn.execute(select(m.c.sid, m.c.status, m.c.error_code, linked.label("events"))
                                         .where(m.c.sid.in_(chunk))):
                    states[ours.sid] = {"status": ours.status, "error_code": ours.error_code,
                                        "events": ours.events}
                orphans = [sid for sid in chunk if sid not in states]
                if orphans:
                    rows = conn.execute(select(e.c.message_sid, e.c.status, e.c.error_code)
                                        .where(e.c.kind == "status", e.c.message_sid.in_(orphans))
                                        .order_by(e.c.id)).all()
                    for row in rows:
                        best = states.setdefault(
                            row.message_sid, {"status": None, "error_code": None, "events": 0}
                        )
                        best["events"] += 1
                        if status_rank(row.status) > status_rank(best["status"]):
                            best.update(status=row.status, error_code=row.error_code)
        return states

    def read_inbound_channels(self, reads: Sequence[tuple[InboundChannel, int]], *,
                              page: int) -> list[list[dict[str, Any]]]:
        """For each ``(channel, after_id)`` of ``reads``: at most ``page`` inbound messages of the channel
        with an id above ``after_id``, oldest first. One statement, each read through its own index, from its
        own cursor (:func:`.inbound.channel_reads`): what every waiting reply sensor of a triggerer reads in
        a round. The rows hold what the matching needs (:data:`.inbound.READ_COLUMNS`); each sensor keeps
        those verified for its own account and signer
        (:meth:`~airflow_provider_twilio_sms.replies.ReplyCriteria.concerns`).
        """
        if not reads:
            return []
        with self._read() as conn:
            return channel_pages(conn, self.dialect, reads, page)

    def inbound_cursor(self, since: datetime | None) -> int:
        """Where to read inbound messages received at or after ``since`` from: an event id that every such
        message is above (the newest inbound message received :data:`.inbound.CURSOR_MARGIN` before
        ``since``, found by one probe of an index); 0 when there is none, or no ``since``.
        """
        if since is None:
            return 0
        with self._read() as conn:
            found = conn.execute(cursor_statement(), {"before": since - CURSOR_MARGIN}).scalar()
        return int(found or 0)

    def find_inbound(
        self,
        *,
        account_sid: str,
        conn_id: str,
        signer: str | None = None,
        to_number: str | None = None,
        messaging_service_sid: str | None = None,
        from_number: str | None = None,
        since: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Inbound messages verified for ``account_sid`` by connection ``conn_id`` or another connection of
        ``signer``, from ``from_number``, arriving at ``to_number`` or through ``messaging_service_sid``
        (either, when both are given), oldest first, received at or after ``since``.
        """
        if not (to_number or from_number or messaging_service_sid):
            raise ValueError("find_inbound needs to_number or from_number: "
                             "a scan of every message is not allowed")
        statement = inbound_page_statement(
            by_signer=bool(signer), to_number=bool(to_number),
            messaging_service_sid=bool(messaging_service_sid), from_number=bool(from_number),
            since=since is not None)
        values = {"p_conn_id": conn_id, "p_signer": signer, "p_after_id": after_id,
                  "p_account_sid": account_sid, "p_to_number": to_number,
                  "p_messaging_service_sid": messaging_service_sid, "p_from_number": from_number,
                  "p_since": since, "p_limit": limit}
        with self._read() as conn:
            rows = conn.execute(statement, values).all()
        return [dict(r._mapping) for r in rows]

    # -- reply waits (what a deferred reply sensor's trigger reads instead of numbers in its kwargs) ------

    def add_reply_wait(self, *, account_sid: str, conn_id: str, signer: str | None = None,
                       from_number: str | None = None, to_number: str | None = None,
                       messaging_service_sid: str | None = None) -> int:
        """Record who a reply sensor waits on; returns the id its trigger carries instead of the numbers."""
        w = t.reply_wait
        with self._write() as conn:
            key = conn.execute(w.insert().values(
                account_sid=account_sid, conn_id=conn_id, signer=signer, from_number=from_number,
                to_number=to_number, messaging_service_sid=messaging_service_sid, created_at=utcnow())
            ).inserted_primary_key
            if key is None:  # a one-row INSERT always has its key
                raise RuntimeError("the store returned no id for the new reply wait")
            return int(key[0])

    def get_reply_wait(self, wait_id: int) -> dict[str, Any] | None:
        w = t.reply_wait
        with self._read() as conn:
            return self._row(conn.execute(select(w).where(w.c.id == wait_id)).first())

    def drop_reply_wait(self, wait_id: int) -> None:
        """Forget a wait whose sensor finished (its trigger fired)."""
        w = t.reply_wait
        with self._write() as conn:
            conn.execute(w.delete().where(w.c.id == wait_id))

    def list_messages(
        self,
        *,
        status: str | None = None,
        number: str | None = None,
        since: datetime | None = None,
        teams: Iterable[str | None] | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Outbound messages, newest first, for the read API (keyset pagination on ``before_id``)."""
        m = t.message
        return self._newest_first(m, m.c.created_at, [m.c.status == status] if status else [], number=number,
                                  since=since, teams=teams, before_id=before_id, limit=limit)

    def list_inbound(
        self,
        *,
        number: str | None = None,
        since: datetime | None = None,
        teams: Iterable[str | None] | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Inbound messages, newest first, for the read API (keyset pagination on ``before_id``)."""
        e = t.event
        return self._newest_first(e, e.c.received_at, [e.c.kind == "inbound"], number=number, since=since,
                                  teams=teams, before_id=before_id, limit=limit)

    def _newest_first(self, table, time_column, conditions: list, *, number: str | None,
                      since: datetime | None, teams: Iterable[str | None] | None, before_id: int | None,
                      limit: int) -> list[dict[str, Any]]:
        """One page of ``table``, newest first, filtered the way the read API filters."""
        conditions = list(conditions)
        if number:
            conditions.append(or_(table.c.to_number == number, table.c.from_number == number))
        if since is not None:
            conditions.append(time_column >= since)
        if before_id is not None:
            conditions.append(table.c.id < before_id)
        if teams is not None:
            conditions.append(team_filter(table.c.team, teams))
        with self._read() as conn:
            rows = conn.execute(
                select(table).where(*conditions).order_by(table.c.id.desc()).limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    # -- the page's reports (:mod:`.reports`) ---------------------------------------------------

    def delivery_summary(self, *, since: datetime, until: datetime,
                         teams: Iterable[str | None] | None = None) -> dict[str, Any]:
        """See :func:`.reports.delivery_summary`."""
        return reports.delivery_summary(self.engine, since=since, until=until, teams=teams)

    def status_timelines(self, sids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """See :func:`.reports.status_timelines`."""
        return reports.status_timelines(self.engine, sids)

    def opt_outs(self, *, teams: Iterable[str | None] | None = None, limit: int = 100,
                 include_opted_in: bool = False) -> list[dict[str, Any]]:
        """See :func:`.reports.opt_outs`."""
        return reports.opt_outs(self.engine, teams=teams, limit=limit, include_opted_in=include_opted_in)

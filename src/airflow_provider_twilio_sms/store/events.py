"""Webhook events: status callbacks and inbound messages as Twilio delivered them, and the opt-outs they
carry. Only what a connection verified is written, and it touches only that connection's own records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.store.base import StoreBase, utcnow
from airflow_provider_twilio_sms.store.claims import key_digest
from airflow_provider_twilio_sms.store.status import status_rank

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

# Inbound keywords that opt a number out or back in, with or without Twilio's OptOutType.
STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "END", "QUIT", "REVOKE", "OPTOUT", "CANCEL"})
START_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})


def opt_out_keyword(body: str | None) -> str | None:
    """"STOP" or "START" when the whole body is one of Twilio's opt-out or opt-in keywords."""
    words = (body or "").split()
    if len(words) != 1:
        return None
    word = words[0].strip(".!").upper()
    if word in STOP_KEYWORDS:
        return "STOP"
    if word in START_KEYWORDS:
        return "START"
    return None


def event_channel(payload: Mapping[str, Any]) -> str:
    """``whatsapp`` when the event's To or From is a ``whatsapp:`` address (as Twilio writes both on that
    channel), else ``sms``.
    """
    from airflow_provider_twilio_sms.channels import SMS, WHATSAPP, channel_of

    addresses = (payload.get("To"), payload.get("From"))
    return WHATSAPP if any(channel_of(a) == WHATSAPP for a in addresses) else SMS


@dataclass(frozen=True)
class StatusCallback:
    """One status callback as a connection verified it: what :meth:`Events.record_status_event` takes."""

    account_sid: str  # the verifying connection's account
    conn_id: str  # the verifying connection
    message_sid: str
    status: str
    payload: Mapping[str, Any]  # the callback's fields, stored as JSON
    error_code: int | None = None
    idempotency_token: str | None = None  # I-Twilio-Idempotency-Token
    idempotency_key: str | None = None  # the callback URL's ``ik`` (URLs made before keys were digests)
    idempotency_key_sha256: str | None = None  # the callback URL's ``ik_sha256``
    signer: str | None = None  # the verifying connection's signer
    team: str | None = None  # the verifying connection's team
    now: datetime | None = None

    def params(self) -> dict[str, Any]:
        """The bind parameters of the callback's statements."""
        now = self.now or utcnow()
        status = (self.status or "").strip().lower()
        payload = self.payload
        # A retried delivery carries the same I-Twilio-Idempotency-Token and so the same SID and
        # status: the unique (account, "status:SID:status") key dedupes both cases in one statement.
        event = {
            "kind": "status", "account_sid": self.account_sid, "conn_id": self.conn_id, "signer": self.signer,
            "dedupe_key": f"status:{self.message_sid}:{status}", "idempotency_token": self.idempotency_token,
            "message_sid": self.message_sid, "status": status, "error_code": self.error_code,
            "from_number": payload.get("From"), "to_number": payload.get("To"),
            "messaging_service_sid": payload.get("MessagingServiceSid") or None, "body": None,
            "num_media": None,
            "opt_out_type": None, "team": self.team, "channel": event_channel(payload), "received_at": now,
            "payload": json.dumps(dict(payload), sort_keys=True),
        }
        params = {f"v_{k}": v for k, v in event.items()}
        # Which outbound row: by SID, else by the idempotency key of the callback URL (see statements.py).
        key_sha256 = self.idempotency_key_sha256
        if not key_sha256 and self.idempotency_key:
            key_sha256 = key_digest(self.idempotency_key)
        params.update(p_sid=self.message_sid, p_account_sid=self.account_sid, p_conn_id=self.conn_id,
                      p_key_sha256=key_sha256 or None, p_rank=status_rank(status), p_status=status,
                      p_now=now, p_error_code=self.error_code)
        return params


class Events(StoreBase):
    """Status callbacks, inbound messages and opt-outs."""

    # -- webhook events -------------------------------------------------------------------------

    def record_status_event(self, **callback: Any) -> bool:
        """Store one status callback (the fields of :class:`StatusCallback`) verified by connection
        ``conn_id`` of ``account_sid`` (whose ``signer`` it records); advance the message's status if it
        moves forward.

        Returns False (and changes nothing) for a delivery already stored: the same idempotency token,
        or the same message SID and status. The outbound row is one sent under ``account_sid`` by
        ``conn_id``: found by SID, or, when the send's response was lost, by the idempotency key carried in
        the callback URL's query: its SHA-256 (``idempotency_key_sha256``), or the key itself (URLs made
        before keys were stored by digest). The event's team is that message's, else ``team`` (the
        verifying connection's).
        """
        params = StatusCallback(**callback).params()
        if self._sql.status_event_fused is not None:
            with self._write_one() as conn:
                return self._store_status(conn, params)
        with self._write() as conn:
            return self._store_status(conn, params)

    def record_status_events(self, callbacks: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Store several status callbacks in ONE transaction, in the order given; each is a mapping of
        :class:`StatusCallback`'s fields, as :meth:`record_status_event` takes them, and is deduplicated and
        applied exactly as that
        method would (a copy of an earlier callback of the same batch is a duplicate too). Returns one
        "stored" flag per callback, as :meth:`record_status_event` would have returned for it.

        All or nothing: when any callback fails (a value too long, a database error), nothing of the batch
        is written and the error is raised; the caller then writes them one at a time, so that one bad
        callback cannot fail the others. One commit for the batch: on SQLite one turn of the write lock.
        """
        batch = [StatusCallback(**callback).params() for callback in callbacks]
        with self._write() as conn:
            return [self._store_status(conn, params) for params in batch]

    def _store_status(self, conn: Connection, params: dict[str, Any]) -> bool:
        """One status callback's event, and its outbound row advanced, on ``conn``; False: a duplicate."""
        sql = self._sql
        if sql.status_event_fused is not None:
            return conn.execute(sql.status_event_fused, params).first() is not None
        stored = conn.execute(sql.status_event_insert, params).first()
        if stored is None:
            return False
        message_id = stored.message_id
        if message_id is not None:
            conn.execute(sql.apply_status, {**params, "p_id": message_id})
        return True

    def record_inbound(
        self,
        *,
        account_sid: str,
        conn_id: str,
        message_sid: str,
        from_number: str,
        to_number: str,
        body: str | None,
        payload: Mapping[str, Any],
        num_media: int = 0,
        opt_out_type: str | None = None,
        signer: str | None = None,
        team: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Store one inbound message verified by connection ``conn_id`` of ``account_sid`` (once per
        MessageSid) and apply STOP/START to that account's opt-out list for ``signer``.

        The message is linked to the outbound message it answers, if any (same account, same signer or
        connection, sent to ``from_number`` from ``to_number`` or from the payload's Messaging Service), and
        takes its team; else ``team`` (the verifying connection's).

        ``now`` (for tests) must be about the present: reply sensors start reading after the newest message
        received well before their ``since`` (:meth:`inbound_cursor`), which holds because event ids follow
        the order messages arrived in.
        """
        now = now or utcnow()
        keyword = (opt_out_type or "").strip().upper() or opt_out_keyword(body)
        values = {
            "kind": "inbound", "account_sid": account_sid, "conn_id": conn_id, "signer": signer,
            "dedupe_key": f"inbound:{message_sid}", "idempotency_token": None, "message_sid": message_sid,
            "status": "received", "error_code": None, "from_number": from_number, "to_number": to_number,
            "messaging_service_sid": payload.get("MessagingServiceSid") or None, "body": body,
            "num_media": num_media, "opt_out_type": keyword, "team": team, "channel": event_channel(payload),
            "received_at": now,
            "payload": json.dumps(dict(payload), sort_keys=True),
        }
        with self._write() as conn:
            bound = {f"v_{k}": v for k, v in values.items()}
            if not self._insert_ignore(conn, self._sql.inbound_insert, bound):
                return False
            if keyword in ("STOP", "START"):
                self._set_opt_out(conn, account_sid, signer or "", from_number, keyword == "STOP", keyword,
                                  message_sid, now)
            return True

    def _set_opt_out(self, conn: Connection, account_sid: str, signer: str, number: str, opted_out: bool,
                     keyword: str, message_sid: str | None, now: datetime) -> None:
        values = {"opted_out": opted_out, "keyword": keyword, "message_sid": message_sid, "updated_at": now}
        key = {"account_sid": account_sid, "signer": signer, "number": number}
        # One atomic INSERT ... ON CONFLICT DO UPDATE: the latest STOP/START wins.
        conn.execute(self._sql.opt_out_upsert, {**key, **values})

    def set_opt_out(self, account_sid: str, number: str, opted_out: bool, keyword: str = "MANUAL", *,
                    signer: str = "") -> None:
        """Record an opt-out of ``number`` from ``account_sid``: for the connections of ``signer`` only, or,
        with the default ``''``, for every connection of the account.
        """
        with self._write() as conn:
            self._set_opt_out(conn, account_sid, signer, number, opted_out, keyword, None, utcnow())

    def is_opted_out(self, account_sid: str, number: str, *, signer: str = "") -> bool:
        """Whether a send from ``account_sid`` by a connection of ``signer`` to ``number`` is refused."""
        with self._read() as conn:
            return conn.execute(self._sql.opted_out, {"p_account_sid": account_sid, "p_signer": signer,
                                                      "p_number": number}).first() is not None

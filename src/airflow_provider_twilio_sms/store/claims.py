r"""Send claims and what they record: the idempotency of every send.

Correct under concurrent writers on SQLite and PostgreSQL alike: every decision that must be made once
is made by a unique constraint or a compare-and-set ``UPDATE ... WHERE``, never by reading first and
writing after. Transactions are short and never span a network call to Twilio.

Send claims (the idempotency state machine, one row per scope and key)::

    claim() --insert--> claimed --mark_attempt()--> (HTTP to Twilio) --record_sent()-------> sent
                           |                                         \-record_failed()----> failed
                           |                                          \-record_unknown()---> unknown
                           \-- lease expired, or unknown: the next claim() takes it over and must
                               reconcile with Twilio first when an HTTP attempt may have been made.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.base import StoreBase, _string_limits, check_fits, utcnow
from airflow_provider_twilio_sms.store.statements import CLAIM_COLUMNS
from airflow_provider_twilio_sms.store.status import status_rank

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def body_digest(body: str | None) -> str:
    """SHA-256 of a message body: how reconciliation matches a message without reading bodies."""
    from airflow_provider_twilio_sms.content import content_digest

    return content_digest(body)


def key_digest(key: str) -> str:
    """SHA-256 (hex) of an idempotency key, or of a rate grant key: what the store finds and keeps them
    unique by, whatever their length.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def make_scope(account_sid: str, team: str | None = None) -> str:
    """Idempotency keys are unique per Twilio account, and per team when multi-team is on."""
    return f"{account_sid}|{team or ''}"


_MESSAGE_LIMITS = dict(_string_limits(t.message))
_DISPLAY_KEY_LENGTH = _MESSAGE_LIMITS["idempotency_key"]
_CLAIM_LIMITS = tuple((name, limit) for name, limit in _MESSAGE_LIMITS.items() if name in CLAIM_COLUMNS)




def displayed_key(key: str) -> str | None:
    """The idempotency key as stored for display: the key itself when it fits its column, else None
    (never a cut-down key that could be mistaken for another).
    """
    return key if len(key) <= _DISPLAY_KEY_LENGTH else None


def _new_claim_row(values: Mapping[str, Any], new_id: int) -> dict[str, Any]:
    """A new claim's row as the database would return it: timestamps in UTC, every column not given NULL."""
    row = dict.fromkeys(t.message.c.keys())
    row.update((k, v.astimezone(timezone.utc) if isinstance(v, datetime) else v) for k, v in values.items())
    row["id"] = new_id
    return row


class LeaseLostError(RuntimeError):
    """Another attempt took over this send's claim (ours had expired); this attempt must stop."""


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`SmsStore.claim`.

    ``outcome`` is one of:
      - ``new``: the key was free; this attempt owns it and may send.
      - ``resume``: taken over from an attempt that never made an HTTP request; may send.
      - ``reconcile``: taken over from an attempt that may have reached Twilio (it died or got no
        answer); look the message up at Twilio before sending, never re-POST blindly.
      - ``sent`` / ``failed``: done before; ``row`` holds the recorded result. Nothing to send.
      - ``held``: a live attempt elsewhere holds the claim until ``row["lease_expires_at"]``.
      - ``opted_out``: the recipient replied STOP (only with ``refuse_opted_out``); nothing claimed.
    """

    outcome: str
    row: dict[str, Any]
    attempt_id: str

    @property
    def owned(self) -> bool:
        return self.outcome in ("new", "resume", "reconcile")

    @property
    def message_id(self) -> int:
        return self.row["id"]


class Claims(StoreBase):
    """Claims on idempotency keys, and what each send records (see the module docstring)."""

    # -- send claims (idempotency) --------------------------------------------------------------

    def claim(
        self,
        *,
        scope: str,
        idempotency_key: str,
        account_sid: str,
        conn_id: str,
        to_number: str,
        body: str | None,
        signer: str | None = None,
        body_sha256: str | None = None,
        channel: str = "sms",
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        num_media: int = 0,
        lease_seconds: float = 120,
        attempt_id: str | None = None,
        team: str | None = None,
        pool: str | None = None,
        dag_id: str | None = None,
        task_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
        attempting: bool = False,
        refuse_opted_out: bool = False,
        store_body: bool = False,
        send_at: datetime | None = None,
        now: datetime | None = None,
    ) -> Claim:
        """Claim ``idempotency_key`` in ``scope`` for one send attempt. See :class:`Claim`.

        ``attempting=True`` records in the same statement that the HTTP request is about to leave (what
        :meth:`mark_attempt` does), for callers with nothing to decide between claiming and sending.
        ``refuse_opted_out=True`` returns outcome ``opted_out`` (claiming nothing) when ``to_number``
        replied STOP to this account, verified with this ``signer`` (the sending connection's
        :attr:`~airflow_provider_twilio_sms.connection.TwilioConnectionSettings.signer`), checked in the same
        transaction. The body's SHA-256 is always kept (reconciliation matches by it; ``body_sha256``, when
        given, is the digest of what the message says, e.g. a Content template and its variables); the text
        itself only with ``store_body=True`` (``[twilio_sms] store_outbound_bodies``). ``channel`` is ``sms``
        or ``whatsapp``. ``send_at`` (aware) is when Twilio is to send a scheduled message; None for one sent
        at once.
        """
        attempt_id = attempt_id or uuid.uuid4().hex
        now = now or utcnow()
        lease = now + timedelta(seconds=lease_seconds)
        key_sha256 = key_digest(idempotency_key)
        values = {
            "scope": scope, "idempotency_key": displayed_key(idempotency_key),
            "idempotency_key_sha256": key_sha256, "account_sid": account_sid,
            "conn_id": conn_id, "signer": signer, "team": team, "pool": pool, "to_number": to_number,
            "from_number": from_number, "messaging_service_sid": messaging_service_sid,
            "body": body if store_body else None, "body_sha256": body_sha256 or body_digest(body),
            "channel": channel, "num_media": num_media,
            "send_state": "claimed",
            "attempt_id": attempt_id, "lease_expires_at": lease, "status_rank": 0,
            "dag_id": dag_id, "task_id": task_id, "run_id": run_id, "map_index": map_index,
            "created_at": now, "updated_at": now, "http_attempted_at": now if attempting else None,
            "send_at": send_at,
        }
        check_fits(values, _CLAIM_LIMITS)  # before anything is written: nothing claimed, nothing sent
        sql = self._sql
        by_key = {"p_scope": scope, "p_key_sha256": key_sha256}
        with self._write_one() as conn:  # a new key (the usual case): one statement; else the full path below
            inserted = self._claim_insert(conn, values, refuse_opted_out)
        if inserted is not None:
            return Claim("new", inserted, attempt_id)
        for _ in range(20):
            with self._write() as conn:
                inserted = self._claim_insert(conn, values, refuse_opted_out)
                if inserted is not None:
                    return Claim("new", inserted, attempt_id)
                if refuse_opted_out and conn.execute(sql.opted_out, {
                        "p_account_sid": account_sid, "p_signer": signer or "",
                        "p_number": to_number}).first():
                    return Claim("opted_out", {}, attempt_id)
                row = self._row(conn.execute(sql.message_by_key, by_key).first())
                if row is None:  # deleted between the two statements; try again
                    continue
                state = row["send_state"]
                if state in ("sent", "failed"):
                    return Claim(state, row, attempt_id)
                live = state == "claimed" and row["lease_expires_at"] > now
                if live and row["attempt_id"] != attempt_id:
                    return Claim("held", row, attempt_id)
                # Take the claim over, but only if nobody else did in the meantime (compare-and-set).
                taken = conn.execute(sql.take_over(attempting), {
                    "p_id": row["id"], "p_old_attempt": row["attempt_id"], "p_old_state": state,
                    "p_attempt": attempt_id, "p_lease": lease, "p_now": now}).rowcount
                if taken != 1:
                    continue
                outcome = "reconcile" if row["http_attempted_at"] is not None else "resume"
                row.update(attempt_id=attempt_id, lease_expires_at=lease,
                           http_attempted_at=row["http_attempted_at"] or (now if attempting else None))
                return Claim(outcome, row, attempt_id)
        raise RuntimeError(f"could not settle the claim on idempotency key (SHA-256 {key_sha256[:12]}...) in "
                           f"scope {scope!r}: too much contention")

    def _claim_insert(self, conn: Connection, values: dict, refuse_opted_out: bool) -> dict[str, Any] | None:
        """The new claim's row, or None when the key is taken (or, with ``refuse_opted_out``, maybe the
        recipient opted out). PostgreSQL and SQLite decide both in one INSERT ... SELECT ... WHERE NOT
        EXISTS (opt-out) ON CONFLICT DO NOTHING RETURNING id; the row is then what was inserted.
        """
        new_id = conn.execute(self._sql.claim_insert_returning(refuse_opted_out),
                              {f"v_{name}": values[name] for name in CLAIM_COLUMNS}).scalar()
        return None if new_id is None else _new_claim_row(values, new_id)

    def _update_owned(self, conn: Connection, claim: Claim, **values) -> None:
        values["updated_at"] = values.get("updated_at") or utcnow()
        done = conn.execute(self._sql.update_owned,
                            {"p_id": claim.message_id, "p_attempt": claim.attempt_id, **values}).rowcount
        if done != 1:
            raise LeaseLostError(
                f"the claim on message row {claim.message_id} was taken over by another attempt "
                "(this attempt's lease expired); stopping so that only one attempt sends"
            )

    def extend_lease(self, claim: Claim, lease_seconds: float) -> None:
        with self._write_one() as conn:
            self._update_owned(conn, claim, lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))

    def mark_attempt(self, claim: Claim, lease_seconds: float | None = None) -> None:
        """Record, before the HTTP request leaves, that Twilio may be about to create the message."""
        now = utcnow()
        values: dict[str, Any] = {"http_attempted_at": claim.row.get("http_attempted_at") or now}
        if lease_seconds is not None:
            values["lease_expires_at"] = now + timedelta(seconds=lease_seconds)
        with self._write_one() as conn:
            self._update_owned(conn, claim, **values)

    def record_send_at(self, claim: Claim, send_at: datetime | None) -> None:
        """The moment this attempt schedules the message for (a claim resumed from an attempt that asked
        for another, and never reached Twilio).
        """
        with self._write_one() as conn:
            self._update_owned(conn, claim, send_at=send_at)
        claim.row["send_at"] = send_at

    def clear_attempt(self, claim: Claim) -> None:
        """Twilio refused the request before creating anything (e.g. 429): no reconcile needed later."""
        with self._write_one() as conn:
            self._update_owned(conn, claim, http_attempted_at=None)

    def record_sent(self, claim: Claim, result: Mapping[str, Any]) -> dict[str, Any]:
        """Record Twilio's answer (``sid``, ``status``, segments...) and return the stored row.

        A status already advanced by an early callback is kept: the status only moves forward.
        """
        sql = self._sql
        now = utcnow()
        recorded = {
            "send_state": "sent",
            "sid": result["sid"],
            "status_updated_at": now,
            "num_segments": result.get("num_segments"),
            "encoding": result.get("encoding"),
            "error_code": result.get("error_code"),
            "error_message": result.get("error_message"),
            "from_number": result.get("from") or claim.row.get("from_number"),
            "sent_at": now,
            "updated_at": now,
        }
        params = {f"p_{k}": recorded[k]
                  for k in ("sid", "num_segments", "encoding", "error_code", "error_message", "from_number")}
        params.update(p_id=claim.message_id, p_attempt=claim.attempt_id, p_status=result.get("status"),
                      p_rank=status_rank(result.get("status")), p_now=now)
        # The claim's row with what this statement set, and what it RETURNs (SENT_RETURNING): the row as
        # stored, without reading and converting all of its columns back.
        with self._write_one() as conn:
            returned_row = conn.execute(sql.record_sent, params).first()
        row = {**claim.row, **recorded, **returned_row._mapping} if returned_row is not None else None
        if row is None:
            raise LeaseLostError(
                f"the claim on message row {claim.message_id} was taken over by another attempt "
                "(this attempt's lease expired); its result was not recorded by this attempt")
        return row

    def record_failed(self, claim: Claim, error_code: int | None, error_message: str) -> None:
        """Twilio refused the message for good; a later attempt with the same key returns this failure."""
        with self._write_one() as conn:
            self._update_owned(conn, claim, send_state="failed", status="failed",
                               status_rank=status_rank("failed"), error_code=error_code,
                               error_message=error_message)

    def record_unknown(self, claim: Claim) -> None:
        """No answer after the request left: the next attempt must reconcile before sending."""
        with self._write_one() as conn:
            self._update_owned(conn, claim, send_state="unknown", lease_expires_at=utcnow())

    def release(self, claim: Claim) -> None:
        """Give up the claim without sending (e.g. to defer); the next attempt resumes it."""
        with self._write_one() as conn:
            self._update_owned(conn, claim, lease_expires_at=utcnow())

    def withdraw(self, claim: Claim) -> None:
        """Give up the claim of a send that nothing of reached Twilio (turned away by the rate limit): its
        row goes (a later attempt claims the key anew), so no page counts it as pending. A row on which an
        HTTP attempt is recorded stays, released: the next attempt must reconcile.
        """
        with self._write_one() as conn:
            if conn.execute(
                self._sql.withdraw, {"p_id": claim.message_id, "p_attempt": claim.attempt_id}
            ).rowcount:
                return
            self._update_owned(conn, claim, lease_expires_at=utcnow())

"""Human-in-the-loop requests texted by ``SmsHitlNotifier``: the reply code each recipient got, and whether
that number's answer is still awaited.

A code is unique among the pending requests to one number: the unique ``(to_number, pending_code)`` key
decides, not a read before the write (two notifiers texting the same phone at once cannot both take a
code). ``pending_code`` goes back to NULL when the request is settled, so the code can be used again later;
``code`` stays, so that a late reply is still recognised. Only these rows are written here: Airflow's own
HITL rows are answered through Airflow's API (see ``hitl/resolve.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import case, or_, select
from sqlalchemy.exc import IntegrityError

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.base import StoreBase, _string_limits, check_fits, utcnow

h = t.hitl_request
_LIMITS = _string_limits(h)
OUTCOMES = ("answered", "already_answered", "timed_out")
# More attempts than a number can have pending requests colliding by chance: 4 characters of a 31-letter
# alphabet, at least one a digit, leave ~644k codes; a phone with 1000 pending requests collides with
# p ~ 0.0016 per try.
CODE_ATTEMPTS = 32
# How many requests sharing one code a lookup considers (codes are short: several numbers may hold one).
LOOKUP_LIMIT = 50


class CodesExhausted(RuntimeError):
    """No free reply code was found for a number in :data:`CODE_ATTEMPTS` tries."""


class HitlRequests(StoreBase):
    """Reply codes of human-in-the-loop requests, one row per task instance try and recipient."""

    def open_hitl_request(self, *, account_sid: str, conn_id: str, signer: str | None, ti_id: str,
                          dag_id: str, run_id: str, task_id: str, map_index: int, to_number: str,
                          users: Mapping[str, Mapping[str, str]], new_code: Callable[[], str],
                          now: datetime | None = None) -> str:
        """The reply code of task instance try ``ti_id`` for ``to_number``: the one already given (a notifier
        that runs again gets the same code, so its idempotent send texts the same message), else a new code
        from ``new_code()`` not pending for that number. ``users``: the DAG author's number -> Airflow user
        mapping (E.164 keys, ``{"id", "name"}`` values), kept for the webhook.
        """
        now = now or utcnow()
        values: dict[str, Any] = {
            "account_sid": account_sid, "conn_id": conn_id, "signer": signer, "ti_id": ti_id,
            "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": int(map_index),
            "to_number": to_number, "users": json.dumps(dict(users), sort_keys=True), "state": "pending",
            "created_at": now, "updated_at": now,
        }
        check_fits(values, _LIMITS)
        for _ in range(CODE_ATTEMPTS):
            existing = self._hitl_code_of(ti_id, to_number)
            if existing is not None:
                return existing
            code = new_code()
            check_fits({"code": code}, _LIMITS)
            try:
                with self._write() as conn:
                    conn.execute(h.insert().values(**values, code=code, pending_code=code))
                return code
            except IntegrityError:
                continue  # the code is pending for this number, or another notifier just inserted our row
        raise CodesExhausted(f"no free reply code after {CODE_ATTEMPTS} tries: the number has too many "
                             "pending human-in-the-loop requests; answer or clear some")

    def _hitl_code_of(self, ti_id: str, to_number: str) -> str | None:
        with self._read() as conn:
            return conn.execute(select(h.c.code).where(h.c.ti_id == ti_id, h.c.to_number == to_number)
                                ).scalar_one_or_none()

    def hitl_requests_by_code(self, *, account_sid: str, conn_id: str, signer: str | None,
                              code: str) -> list[dict[str, Any]]:
        """The requests texted with reply code ``code`` through ``account_sid`` by ``conn_id`` or another
        connection of the same ``signer`` (what verified the reply): pending ones first, then the newest.
        ``users`` comes back decoded.
        """
        verified = h.c.conn_id == conn_id
        if signer:
            verified = or_(verified, h.c.signer == signer)
        stmt = (select(h).where(h.c.code == code, h.c.account_sid == account_sid, verified)
                .order_by(case((h.c.pending_code.is_(None), 1), else_=0), h.c.id.desc())
                .limit(LOOKUP_LIMIT))
        with self._read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        for row in rows:
            row["users"] = json.loads(row["users"] or "{}")
        return rows

    def settle_hitl_request(self, request_id: int, *, outcome: str, message_sid: str | None,
                            now: datetime | None = None) -> bool:
        """Mark a pending request settled (its code is free again for that number): ``answered`` by the reply
        ``message_sid``, or found ``already_answered`` / ``timed_out`` in Airflow. False when it was not
        pending any more (another reply settled it first).
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        now = now or utcnow()
        with self._write() as conn:
            result = conn.execute(
                h.update().where(h.c.id == int(request_id), h.c.state == "pending")
                .values(state="answered" if outcome == "answered" else "closed", outcome=outcome,
                        pending_code=None, answer_message_sid=message_sid, updated_at=now))
        return result.rowcount == 1

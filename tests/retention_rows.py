"""Rows of the ``twilio_sms_*`` tables written straight into a store with explicit timestamps, for the
retention tests: the store's own API stamps rows with the present, and a purge is about the past.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.claims import body_digest, key_digest

ACCOUNT = "AC" + "7" * 32
CONN_ID = "twilio_sms_default"
THEM = "+14155550123"  # the person forgotten
OTHER = "+14155550188"  # someone else
OURS = "+15005550006"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


class Rows:
    """Writes rows into ``store``'s tables; ``now`` is the moment the test purges at."""

    def __init__(self, store, now: datetime | None = None):
        self.store = store
        self.now = now or datetime.now(timezone.utc)
        self._n = itertools.count(1)

    def ago(self, **delta: float) -> datetime:
        return self.now - timedelta(**delta)

    def _insert(self, table, values: dict[str, Any]) -> Any:
        with self.store.engine.begin() as conn:
            return conn.execute(table.insert().values(**values)).inserted_primary_key[0]

    def message_values(self, *, created: datetime, state: str = "sent", updated: datetime | None = None,
                       lease: datetime | None = None, to: str = THEM, body: str | None = "Your code is 12",
                       sid: str | None = "", n: int | None = None) -> dict[str, Any]:
        """A message row; ``sid=""``: ``SM<n>`` when sent, else none."""
        n = next(self._n) if n is None else n
        key = f"key-{n}"
        return {
            "scope": f"{ACCOUNT}|", "idempotency_key": key, "idempotency_key_sha256": key_digest(key),
            "account_sid": ACCOUNT, "conn_id": CONN_ID, "to_number": to, "from_number": OURS, "body": body,
            "body_sha256": body_digest(body), "num_media": 0, "send_state": state, "attempt_id": f"try-{n}",
            "lease_expires_at": lease or created + timedelta(minutes=2),
            "sid": (f"SM{n:032x}" if state == "sent" else None) if sid == "" else sid,
            "status": "delivered" if state == "sent" else None, "status_rank": 0, "created_at": created,
            "updated_at": updated or created,
        }

    def message(self, **kw) -> int:
        return self._insert(t.message, self.message_values(**kw))

    def messages(self, count: int, **kw) -> None:
        """``count`` messages in one executemany."""
        with self.store.engine.begin() as conn:
            conn.execute(t.message.insert(), [self.message_values(**kw) for _ in range(count)])

    def event_values(self, *, received: datetime, kind: str = "status", message_id: int | None = None,
                     message_sid: str | None = None, from_: str | None = OURS, to: str | None = THEM,
                     body: str | None = None, n: int | None = None) -> dict[str, Any]:
        n = next(self._n) if n is None else n
        payload = {"From": from_, "To": to, "Body": body, "MessageSid": message_sid}
        return {
            "kind": kind, "account_sid": ACCOUNT, "conn_id": CONN_ID, "dedupe_key": f"{kind}:{n}",
            "message_sid": message_sid or f"SM{n:032x}", "message_id": message_id,
            "status": "received" if kind == "inbound" else "delivered", "from_number": from_, "to_number": to,
            "body": body, "received_at": received, "payload": json.dumps(payload),
        }

    def event(self, **kw) -> int:
        return self._insert(t.event, self.event_values(**kw))

    def inbound(self, *, received: datetime, from_: str = THEM, to: str = OURS, body: str = "YES") -> int:
        return self.event(kind="inbound", received=received, from_=from_, to=to, body=body)

    def reply_wait(self, *, created: datetime, from_: str | None = THEM, to: str | None = OURS) -> int:
        return self._insert(t.reply_wait, {"account_sid": ACCOUNT, "conn_id": CONN_ID, "from_number": from_,
                                           "to_number": to, "created_at": created})

    def opt_out(self, number: str, *, opted_out: bool = True, updated: datetime | None = None,
                signer: str = "", keyword: str = "STOP", message_sid: str | None = "SM" + "5" * 32) -> None:
        self._insert(t.opt_out, {"account_sid": ACCOUNT, "signer": signer, "number": number,
                                 "opted_out": opted_out, "keyword": keyword, "message_sid": message_sid,
                                 "updated_at": updated or self.now})

    def pool(self, name: str, *, updated: datetime, slots: list[datetime]) -> None:
        """A rate-limit pool whose ring holds one slot per moment in ``slots`` (what each counts until)."""
        self._insert(t.rate_pool, {"pool": name, "updated_at": updated, "ring_size": max(len(slots), 1),
                                   "ring_next": 0})
        with self.store.engine.begin() as conn:
            if slots:
                conn.execute(t.rate_slot.insert(), [{"pool": name, "slot": i, "until_us": us(until)}
                                                    for i, until in enumerate(slots)])

    # -- reading back ---------------------------------------------------------------------------

    def keys(self, table) -> set:
        """The primary keys left in ``table`` (pool names for the pools, (pool, slot) for the slots)."""
        columns = list(table.primary_key.columns)
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(*columns)).all()
        return {row[0] if len(columns) == 1 else tuple(row) for row in rows}

    def count(self, table) -> int:
        with self.store.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()

    def counts(self) -> dict[str, int]:
        return {table.name: self.count(table) for table in t.metadata.sorted_tables}

    def dump(self) -> str:
        """Every row of every table as text: what a search for a phone number must not find."""
        lines = []
        with self.store.engine.connect() as conn:
            for table in t.metadata.sorted_tables:
                lines += [f"{table.name} {dict(row._mapping)}" for row in conn.execute(select(table))]
        return "\n".join(lines)

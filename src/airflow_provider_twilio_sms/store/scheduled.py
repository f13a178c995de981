"""Scheduled messages still waiting at Twilio: what a failed DAG run or a teardown cancels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, select

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.base import StoreBase


class Scheduled(StoreBase):
    """Reads of scheduled sends (``send_at`` set, status still ``scheduled``)."""

    def scheduled_messages(self, *, dag_id: str, run_id: str, task_ids: Sequence[str] | None = None,
                           conn_id: str | None = None) -> list[dict[str, Any]]:
        """The sends of one DAG run (of ``task_ids`` when given; of ``conn_id`` when given) whose stored
        status is still ``scheduled``, oldest first. A status a callback already moved on (``queued``,
        ``sent``, ``canceled``...) is no longer scheduled, whatever Twilio says later.
        """
        m = t.message
        where = [m.c.dag_id == dag_id, m.c.run_id == run_id, m.c.send_at.is_not(None),  # the partial index
                 m.c.status == "scheduled", m.c.sid.is_not(None)]
        if task_ids:
            where.append(m.c.task_id.in_(list(task_ids)))
        if conn_id:
            where.append(m.c.conn_id == conn_id)
        with self._read() as conn:
            rows = conn.execute(select(m).where(and_(*where)).order_by(m.c.id)).all()
        return [dict(row._mapping) for row in rows]

"""Read-only reports over the store for the "Twilio SMS" page: delivery summary, status timelines, opt-outs.

Every function reads with one or two SQL statements over the ``twilio_sms_*`` tables and never writes.
``teams`` restricts rows to those teams (``None`` among them: rows without a team); ``teams=None``
means every row. Numbers are returned as stored: the read API masks them before they leave.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, and_, func, literal, or_, select

from airflow_provider_twilio_sms.errors import TWILIO_ERROR_MEANINGS
from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.status import FAILURE_STATUSES

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# Statuses that count as "reached the handset" for the delivery rate.
DELIVERED_STATUSES = frozenset({"delivered", "read"})
# Final outcomes: the delivery rate is delivered / (delivered + failed), pending messages excluded.
FINAL_STATUSES = DELIVERED_STATUSES | FAILURE_STATUSES
MAX_TIMELINE_SIDS = 500


def team_filter(column, teams: Iterable[str | None]):
    """Rows of the given teams; ``None`` among them means rows with no team. No teams: no rows."""
    from sqlalchemy import false

    teams = list(teams)
    named = [x for x in teams if x]
    either = [column.in_(named)] if named else []
    if None in teams:
        either.append(column.is_(None))
    return or_(*either) if either else false()


def delivery_summary(engine: Engine, *, since: datetime, until: datetime,
                     teams: Iterable[str | None] | None = None) -> dict[str, Any]:
    """Outbound messages created in ``[since, until)``: counts by status, delivery rate, failures by
    Twilio error code (with its meaning); inbound messages and STOP/START received in the period.
    """
    m, e = t.message, t.event
    status = func.coalesce(m.c.status, m.c.send_state)
    where = [m.c.created_at >= since, m.c.created_at < until]
    inbound_where = [e.c.kind == "inbound", e.c.received_at >= since, e.c.received_at < until]
    if teams is not None:
        teams = list(teams)
        where.append(team_filter(m.c.team, teams))
        inbound_where.append(team_filter(e.c.team, teams))
    with engine.connect() as conn:
        rows = conn.execute(select(status.label("status"), m.c.error_code, func.count().label("n"))
                            .where(*where).group_by(status, m.c.error_code)).all()
        inbound = conn.execute(select(e.c.opt_out_type, func.count().label("n")).where(*inbound_where)
                               .group_by(e.c.opt_out_type)).all()
    by_status: dict[str, int] = {}
    failures: dict[int | None, int] = {}
    for row in rows:
        by_status[row.status] = by_status.get(row.status, 0) + row.n
        if row.status in FAILURE_STATUSES:
            failures[row.error_code] = failures.get(row.error_code, 0) + row.n
    delivered = sum(n for s, n in by_status.items() if s in DELIVERED_STATUSES)
    final = sum(n for s, n in by_status.items() if s in FINAL_STATUSES)
    keywords = {row.opt_out_type: row.n for row in inbound}
    return {
        "since": since.isoformat(), "until": until.isoformat(),
        "total": sum(by_status.values()),
        "by_status": dict(sorted(by_status.items(), key=lambda kv: (-kv[1], kv[0]))),
        "delivered": delivered, "failed": final - delivered, "pending": sum(by_status.values()) - final,
        "delivery_rate": round(delivered / final, 4) if final else None,
        "failures_by_error_code": [
            {"error_code": code, "count": n,
             "meaning": TWILIO_ERROR_MEANINGS.get(code) if code is not None else "no error code reported"}
            for code, n in sorted(failures.items(), key=lambda kv: (-kv[1], kv[0] or 0))
        ],
        "inbound": sum(keywords.values()),
        "opt_outs": keywords.get("STOP", 0), "opt_ins": keywords.get("START", 0),
    }


def status_timelines(engine: Engine, sids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Each message's status callbacks in arrival order, for up to :data:`MAX_TIMELINE_SIDS` SIDs at once.

    The caller passes SIDs of its outbound messages (taken from a team-filtered page): no team filter here.
    Only callbacks linked to the message count (verified by the connection that sent it); another
    connection's events about the same SID are not this message's history.
    """
    sids = list(dict.fromkeys(s for s in sids if s))[:MAX_TIMELINE_SIDS]
    timelines: dict[str, list[dict[str, Any]]] = {sid: [] for sid in sids}
    if not sids:
        return timelines
    e = t.event
    # ``kind`` is checked here, not in SQL: with it in the WHERE clause SQLite's planner prefers an index on
    # ``kind`` and scans every status event (30 ms at 100k events) instead of looking the SIDs up (0.2 ms).
    with engine.connect() as conn:
        rows = conn.execute(select(e.c.message_sid, e.c.kind, e.c.message_id, e.c.status, e.c.error_code,
                                   e.c.received_at)
                            .where(e.c.message_sid.in_(sids)).order_by(e.c.message_sid, e.c.id)).all()
    for row in rows:
        if row.kind != "status" or row.message_id is None:
            continue
        timelines[row.message_sid].append({"status": row.status, "error_code": row.error_code,
                                           "received_at": row.received_at})
    return timelines


def opt_outs(engine: Engine, *, teams: Iterable[str | None] | None = None, limit: int = 100,
             include_opted_in: bool = False) -> list[dict[str, Any]]:
    """Numbers that replied STOP (newest first), with the team of the inbound message that set it.

    An opt-out set by hand (no inbound message) has no team, so everyone who may see messages without a
    team sees it.
    """
    o, e = t.opt_out, t.event
    joined = o.outerjoin(e, and_(e.c.account_sid == o.c.account_sid,
                                 e.c.dedupe_key == literal("inbound:", String) + o.c.message_sid))
    where = [] if include_opted_in else [o.c.opted_out.is_(True)]
    if teams is not None:
        where.append(team_filter(e.c.team, list(teams)))
    with engine.connect() as conn:
        rows = conn.execute(select(o.c.account_sid, o.c.number, o.c.opted_out, o.c.keyword, o.c.message_sid,
                                   o.c.updated_at, e.c.team, e.c.conn_id).select_from(joined).where(*where)
                            .order_by(o.c.updated_at.desc()).limit(limit)).all()
    return [dict(r._mapping) for r in rows]

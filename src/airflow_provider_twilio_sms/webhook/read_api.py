"""The read API for people, tools and the "Twilio SMS" page: messages (with their status timelines),
one message with its status history, a delivery summary over a period, opt-outs, health.

Authentication comes from ``auth.py`` (Airflow's inside the api-server, a bearer token standalone);
every route but ``/health`` shows only the teams the caller may see. Numbers are masked; bodies only
with ``include_body=true``, and only of the messages whose connection the caller may read: the others
come with ``"body": null`` and ``body_withheld`` saying why. An outbound text the store did not keep
(``[twilio_sms] store_outbound_bodies`` off) comes as ``"body": null`` with ``body_not_stored`` saying so.
Pages are newest first: pass the
``next_before_id`` of one page as ``before_id`` to get the next.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from airflow_provider_twilio_sms.privacy import mask_number
from airflow_provider_twilio_sms.store.claims import body_digest
from airflow_provider_twilio_sms.webhook.auth import Visibility
from airflow_provider_twilio_sms.webhook.read_params import (
    BeforeId,
    Limit,
    MessageSid,
    Number,
    OutboundStatus,
    Period,
    PeriodEnd,
    PeriodStart,
    Since,
    period_bounds,
)

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.webhook.auth import ViewerDependency


BODY = "with the message text, for messages whose connection the caller may read (others: body_withheld)"
NOT_STORED = "the store keeps outbound texts only with [twilio_sms] store_outbound_bodies on"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _body(out: dict[str, Any], row: dict[str, Any], readable: frozenset[str] | None) -> dict[str, Any]:
    """Add the body when it was asked for (``readable`` is not None) and the caller may read the message's
    connection; otherwise ``None`` with the reason.
    """
    if readable is None:
        return out
    if row["conn_id"] in readable:
        out["body"] = row["body"]
        # An outbound row keeps its text's SHA-256 always: NULL text with a digest of some text means the
        # text was not stored (a media-only message has the empty text's digest).
        if row["body"] is None and row.get("body_sha256") not in (None, body_digest(None)):
            out["body_not_stored"] = NOT_STORED
    else:
        out["body"] = None
        out["body_withheld"] = f"you may not read connection {row['conn_id']}"
    return out


def _readable(seen: Visibility, include_body: bool, rows: list[dict[str, Any]]) -> frozenset[str] | None:
    """The connections whose bodies go out with ``rows`` (None: bodies not asked for). Blocking."""
    return seen.bodies_readable({r["conn_id"] for r in rows}) if include_body else None


def _outbound(row: dict[str, Any], readable: frozenset[str] | None) -> dict[str, Any]:
    out = {
        "id": row["id"], "sid": row["sid"], "direction": "outbound", "channel": row["channel"],
        "status": row["status"],
        "error_code": row["error_code"], "to": mask_number(row["to_number"]),
        "from": mask_number(row["from_number"]), "segments": row["num_segments"], "team": row["team"],
        "conn_id": row["conn_id"], "dag_id": row["dag_id"], "task_id": row["task_id"],
        "run_id": row["run_id"], "map_index": row["map_index"], "send_state": row["send_state"],
        "created_at": _iso(row["created_at"]), "sent_at": _iso(row["sent_at"]),
        "status_updated_at": _iso(row["status_updated_at"]),
    }
    return _body(out, row, readable)


def _inbound(row: dict[str, Any], readable: frozenset[str] | None) -> dict[str, Any]:
    out = {
        "id": row["id"], "sid": row["message_sid"], "direction": "inbound", "channel": row["channel"],
        "status": "received",
        "from": mask_number(row["from_number"]), "to": mask_number(row["to_number"]),
        "num_media": row["num_media"], "opt_out_type": row["opt_out_type"], "team": row["team"],
        "conn_id": row["conn_id"], "received_at": _iso(row["received_at"]),
    }
    return _body(out, row, readable)


def _timeline(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"status": h["status"], "error_code": h["error_code"], "received_at": _iso(h["received_at"])}
            for h in history]


def build_router(viewer: ViewerDependency) -> APIRouter:
    """The read API's routes, authenticated by ``viewer``."""
    router = APIRouter(prefix="/api")

    @router.get("/health", summary="Whether the store answers (no authentication)")
    async def health(request: Request) -> JSONResponse:
        state = request.app.state.twilio_sms
        try:
            await state.run_store_call(lambda store: store.check_ready())
        except Exception:  # noqa: BLE001 - any failure means "not ready"; the reason goes to the server log
            return JSONResponse({"status": "store unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @router.get("/messages", summary="Messages, newest first")
    async def list_messages(
        request: Request,
        seen: Visibility = Depends(viewer),
        status: OutboundStatus | None = Query(None, description="outbound only: status now"),
        direction: Literal["outbound", "inbound"] = "outbound",
        number: Number = None,
        since: Since = None,
        before_id: BeforeId = None,
        limit: Limit = 50,
        include_body: bool = Query(False, description=BODY),
        include_history: bool = Query(False, description="outbound only: each message's status timeline"),
    ) -> dict[str, Any]:
        store = request.app.state.twilio_sms.store
        teams = seen.teams
        if direction == "outbound":
            def read():
                rows = store().list_messages(status=status.value if status else None, number=number,
                                             since=since, teams=teams, before_id=before_id, limit=limit)
                readable = _readable(seen, include_body, rows)
                if not include_history:
                    return rows, readable, None
                return rows, readable, store().status_timelines([r["sid"] for r in rows])

            rows, readable, timelines = await anyio.to_thread.run_sync(read)
            items = [_outbound(r, readable) for r in rows]
            if timelines is not None:
                for item in items:
                    item["history"] = _timeline(timelines.get(item["sid"], []))
        else:
            def read_inbound():
                rows = store().list_inbound(number=number, since=since, teams=teams, before_id=before_id,
                                            limit=limit)
                return rows, _readable(seen, include_body, rows)

            rows, readable = await anyio.to_thread.run_sync(read_inbound)
            items = [_inbound(r, readable) for r in rows]
        return {"messages": items, "next_before_id": items[-1]["id"] if len(items) == limit else None}

    @router.get("/messages/{sid}", summary="One outbound message with its full status history")
    async def get_message(request: Request, sid: MessageSid, seen: Visibility = Depends(viewer),
                          include_body: bool = Query(False, description=BODY)) -> dict[str, Any]:
        store = request.app.state.twilio_sms.store

        def read():
            row = store().get_message(sid=sid)
            if row is None or (seen.teams is not None and row["team"] not in seen.teams):
                return None, None, []
            return row, _readable(seen, include_body, [row]), store().status_history(sid)

        row, readable, history = await anyio.to_thread.run_sync(read)
        if row is None:
            raise HTTPException(404, "No such message")
        message = _outbound(row, readable)
        message["history"] = _timeline(history)
        return message

    @router.get("/summary", summary="Delivery summary of the outbound messages created in a period")
    async def summary(
        request: Request,
        seen: Visibility = Depends(viewer),
        period: Period = "24h",
        since: PeriodStart = None,
        until: PeriodEnd = None,
    ) -> dict[str, Any]:
        start, end = period_bounds(period, since, until)
        store = request.app.state.twilio_sms.store
        return await anyio.to_thread.run_sync(
            lambda: store().delivery_summary(since=start, until=end, teams=seen.teams))

    @router.get("/opt-outs", summary="Numbers that replied STOP, newest first")
    async def list_opt_outs(
        request: Request,
        seen: Visibility = Depends(viewer),
        limit: Limit = 100,
    ) -> dict[str, Any]:
        store = request.app.state.twilio_sms.store
        rows = await anyio.to_thread.run_sync(lambda: store().opt_outs(teams=seen.teams, limit=limit))
        return {"opt_outs": [{"number": mask_number(r["number"]), "keyword": r["keyword"], "team": r["team"],
                              "conn_id": r["conn_id"], "updated_at": _iso(r["updated_at"])} for r in rows]}

    return router

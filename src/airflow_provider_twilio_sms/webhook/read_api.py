"""The read API for people and tools: messages, one message with its status history, health.

Authentication comes from ``auth.py`` (Airflow's inside the api-server, a bearer token standalone).
Numbers are masked; bodies only with ``include_body=true``. Pages are newest first: pass the
``next_before_id`` of one page as ``before_id`` to get the next.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from airflow_provider_twilio_sms.privacy import mask_number
from airflow_provider_twilio_sms.webhook.auth import Visibility

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.webhook.auth import ViewerDependency


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _outbound(row: dict[str, Any], include_body: bool) -> dict[str, Any]:
    out = {
        "id": row["id"], "sid": row["sid"], "direction": "outbound", "status": row["status"],
        "error_code": row["error_code"], "to": mask_number(row["to_number"]),
        "from": mask_number(row["from_number"]), "segments": row["num_segments"], "team": row["team"],
        "conn_id": row["conn_id"], "dag_id": row["dag_id"], "task_id": row["task_id"],
        "run_id": row["run_id"], "map_index": row["map_index"], "send_state": row["send_state"],
        "created_at": _iso(row["created_at"]), "sent_at": _iso(row["sent_at"]),
        "status_updated_at": _iso(row["status_updated_at"]),
    }
    if include_body:
        out["body"] = row["body"]
    return out


def _inbound(row: dict[str, Any], include_body: bool) -> dict[str, Any]:
    out = {
        "id": row["id"], "sid": row["message_sid"], "direction": "inbound", "status": "received",
        "from": mask_number(row["from_number"]), "to": mask_number(row["to_number"]),
        "num_media": row["num_media"], "opt_out_type": row["opt_out_type"], "team": row["team"],
        "conn_id": row["conn_id"], "received_at": _iso(row["received_at"]),
    }
    if include_body:
        out["body"] = row["body"]
    return out


def _number(value: str | None) -> str | None:
    """A number from the query string: ``?number=+1415...`` arrives as `` 1415...`` (``+`` means space)."""
    if value is None or not value.strip():
        return None
    return "+" + value.strip() if value.startswith(" ") else value.strip()


def _aware(value: datetime | None) -> datetime | None:
    """``since`` without a zone is UTC, as every time the store keeps."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def build_router(viewer: ViewerDependency) -> APIRouter:
    """The read API's routes, authenticated by ``viewer``."""
    router = APIRouter(prefix="/api")

    @router.get("/health", summary="Whether the store answers (no authentication)")
    async def health(request: Request) -> JSONResponse:
        state = request.app.state.twilio_sms
        try:
            await anyio.to_thread.run_sync(lambda: state.store().check_ready())
        except Exception:  # noqa: BLE001 - any failure means "not ready"; the reason goes to the server log
            return JSONResponse({"status": "store unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @router.get("/messages", summary="Messages, newest first")
    async def list_messages(
        request: Request,
        seen: Visibility = Depends(viewer),  # noqa: B008
        status: str | None = Query(None, max_length=20, description="outbound only: current status"),
        direction: str = Query("outbound", pattern="^(outbound|inbound)$"),
        number: str | None = Query(None, max_length=32, description="E.164 number it went to or came from"),
        since: datetime | None = Query(None, description="created (outbound) or received (inbound) since"),
        before_id: int | None = Query(None, ge=1, description="page: next_before_id of the previous page"),
        limit: int = Query(50, ge=1, le=500),
        include_body: bool = False,
    ) -> dict[str, Any]:
        store = request.app.state.twilio_sms.store
        teams = seen.teams
        if direction == "outbound":
            rows = await anyio.to_thread.run_sync(lambda: store().list_messages(
                status=status, number=_number(number), since=_aware(since), teams=teams, before_id=before_id,
                limit=limit))
            items = [_outbound(r, include_body) for r in rows]
        else:
            rows = await anyio.to_thread.run_sync(lambda: store().list_inbound(
                number=_number(number), since=_aware(since), teams=teams, before_id=before_id, limit=limit))
            items = [_inbound(r, include_body) for r in rows]
        return {"messages": items, "next_before_id": items[-1]["id"] if len(items) == limit else None}

    @router.get("/messages/{sid}", summary="One outbound message with its full status history")
    async def get_message(request: Request, sid: str, seen: Visibility = Depends(viewer),  # noqa: B008
                          include_body: bool = False) -> dict[str, Any]:
        store = request.app.state.twilio_sms.store

        def read():
            row = store().get_message(sid=sid)
            if row is None or (seen.teams is not None and row["team"] not in seen.teams):
                return None, []
            return row, store().status_history(sid)

        row, history = await anyio.to_thread.run_sync(read)
        if row is None:
            raise HTTPException(404, "No such message")
        message = _outbound(row, include_body)
        message["history"] = [{"status": h["status"], "error_code": h["error_code"],
                               "received_at": _iso(h["received_at"])} for h in history]
        return message

    return router

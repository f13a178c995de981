"""The read API for people and the UI: messages, their status history, health.

Inside the api-server it uses Airflow's own authentication (a JWT, as every Airflow API), and with
multi-team on shows a caller only their teams' messages. Standalone it wants the bearer token from
``[twilio_sms] webhook_api_token``. Numbers are masked; bodies only when asked for.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_twilio_sms.privacy import mask_number

ALL_TEAMS = None  # the caller may see every message


async def _airflow_viewer(request: Request) -> set[str | None] | None:
    """Authenticate with Airflow; return the teams the caller may see (None: all)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, oauth2_scheme

    user = await get_user(request, await oauth2_scheme(request), await bearer_scheme(request))
    from airflow_provider_twilio_sms import config

    if not config.airflow_multi_team():
        return ALL_TEAMS
    from airflow.api_fastapi.app import get_auth_manager

    teams = await run_in_threadpool(lambda: get_auth_manager().get_authorized_teams(user=user, method="GET"))
    return {*teams, None}


async def _token_viewer(request: Request) -> set[str | None] | None:
    from airflow_provider_twilio_sms import config

    expected = config.get("webhook_api_token")
    given = request.headers.get("authorization", "")
    if not expected:
        raise HTTPException(401, "the read API is disabled: set [twilio_sms] webhook_api_token")
    if not given.lower().startswith("bearer ") or not hmac.compare_digest(given[7:].strip(), expected):
        raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
    return ALL_TEAMS


async def viewer(request: Request) -> set[str | None] | None:
    mode = request.app.state.twilio_sms.mode
    return await (_airflow_viewer(request) if mode == "api-server" else _token_viewer(request))


def _outbound(row: dict[str, Any], include_body: bool) -> dict[str, Any]:
    out = {
        "sid": row["sid"], "direction": "outbound", "status": row["status"], "error_code": row["error_code"],
        "to": mask_number(row["to_number"]), "from": mask_number(row["from_number"]),
        "segments": row["num_segments"], "team": row["team"], "dag_id": row["dag_id"], "task_id": row["task_id"],
        "run_id": row["run_id"], "send_state": row["send_state"], "id": row["id"],
        "created_at": row["created_at"].isoformat(), "sent_at": row["sent_at"].isoformat() if row["sent_at"] else None,
    }
    if include_body:
        out["body"] = row["body"]
    return out


def _inbound(row: dict[str, Any], include_body: bool) -> dict[str, Any]:
    out = {"sid": row["message_sid"], "direction": "inbound", "status": "received", "id": row["id"],
           "from": mask_number(row["from_number"]), "to": mask_number(row["to_number"]),
           "opt_out_type": row["opt_out_type"], "team": row["team"], "received_at": row["received_at"].isoformat()}
    if include_body:
        out["body"] = row["body"]
    return out


router = APIRouter(prefix="/api")


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    try:
        await run_in_threadpool(lambda: request.app.state.twilio_sms.store().check_ready())
    except Exception:  # noqa: BLE001
        return JSONResponse({"status": "store unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/messages")
async def list_messages(
    request: Request,
    teams: set[str | None] | None = Depends(viewer),
    status: str | None = None,
    direction: str = Query("outbound", pattern="^(outbound|inbound)$"),
    number: str | None = Query(None, description="E.164 number the message went to or came from"),
    since: datetime | None = None,
    before_id: int | None = Query(None, description="page: the smallest id of the previous page"),
    limit: int = Query(50, ge=1, le=500),
    include_body: bool = False,
) -> dict[str, Any]:
    store = request.app.state.twilio_sms.store()
    if direction == "outbound":
        rows = await run_in_threadpool(store.list_messages, status=status, number=number, since=since,
                                       teams=teams, before_id=before_id, limit=limit)
        items = [_outbound(r, include_body) for r in rows]
    else:
        rows = await run_in_threadpool(store.list_inbound, number=number, since=since, teams=teams,
                                       before_id=before_id, limit=limit)
        items = [_inbound(r, include_body) for r in rows]
    return {"messages": items, "next_before_id": items[-1]["id"] if len(items) == limit else None}


@router.get("/messages/{sid}")
async def get_message(request: Request, sid: str, teams: set[str | None] | None = Depends(viewer),
                      include_body: bool = False) -> dict[str, Any]:
    store = request.app.state.twilio_sms.store()
    row = await run_in_threadpool(store.get_message, sid=sid)
    if row is None or (teams is not None and row["team"] not in teams):
        raise HTTPException(404, "no such message")
    history = await run_in_threadpool(store.status_history, sid)
    message = _outbound(row, include_body)
    message["history"] = [{"status": h["status"], "error_code": h["error_code"],
                           "received_at": h["received_at"].isoformat()} for h in history]
    return message

"""The two routes Twilio calls: status callbacks and inbound messages."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from airflow_provider_twilio_sms.privacy import mask_number, mask_sid, safe_for_log
from airflow_provider_twilio_sms.webhook.verification import Refused, read_body, verify

log = logging.getLogger(__name__)
router = APIRouter()
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def _verified(request: Request, conn_id: str, kind: str):
    state = request.app.state.twilio_sms
    body = await read_body(request, state.max_body_bytes)
    hit, settings = state.settings.fresh(conn_id)
    if not hit:
        settings = await run_in_threadpool(state.settings.get, conn_id)
    return verify(settings, request, body, conn_id, kind)


def _refusal(err: Refused, conn_id: str, kind: str) -> Response:
    log.warning("Refused a %s webhook for connection %s: %s (HTTP %d)", kind, safe_for_log(conn_id, 60),
                err.reason, err.status)
    return Response(status_code=err.status)


def _store_down(err: Exception, conn_id: str, kind: str) -> Response:
    # Twilio retries a 5xx (see the connection overrides in README); 200 would lose the event.
    log.error("Could not store a %s webhook for connection %s: %s", kind, safe_for_log(conn_id, 60),
              type(err).__name__)
    return Response(status_code=503)


@router.post("/webhooks/{conn_id}/status")
async def status_callback(conn_id: str, request: Request) -> Response:
    try:
        verified = await _verified(request, conn_id, "status")
    except Refused as err:
        return _refusal(err, conn_id, "status")
    p, s = verified.params, verified.settings
    status = (p.get("MessageStatus") or p.get("SmsStatus") or "").lower()
    code = p.get("ErrorCode")
    store = request.app.state.twilio_sms.store
    try:
        processed = await run_in_threadpool(
            store().record_status_event, account_sid=s.account_sid, conn_id=conn_id, message_sid=p["MessageSid"],
            status=status, payload=p, error_code=int(code) if code and code.isdigit() else None,
            idempotency_token=request.headers.get("i-twilio-idempotency-token"),
            idempotency_key=verified.query.get("ik"), team=verified.query.get("team"))
    except Exception as err:  # noqa: BLE001 - any store failure must become a retryable answer
        return _store_down(err, conn_id, "status")
    log.debug("Status %s for message %s (%s)", safe_for_log(status, 20), mask_sid(p["MessageSid"]),
             "stored" if processed else "duplicate")
    return JSONResponse({"success": True, "processed": 1 if processed else 0})


@router.post("/webhooks/{conn_id}/inbound")
async def inbound_message(conn_id: str, request: Request) -> Response:
    try:
        verified = await _verified(request, conn_id, "inbound")
    except Refused as err:
        return _refusal(err, conn_id, "inbound")
    p, s = verified.params, verified.settings
    store = request.app.state.twilio_sms.store
    try:
        processed = await run_in_threadpool(
            store().record_inbound, account_sid=s.account_sid, conn_id=conn_id, message_sid=p["MessageSid"],
            from_number=p["From"], to_number=p["To"], body=p.get("Body"), payload=p,
            num_media=int(p.get("NumMedia") or 0) if (p.get("NumMedia") or "0").isdigit() else 0,
            opt_out_type=p.get("OptOutType"), team=verified.query.get("team"))
    except Exception as err:  # noqa: BLE001
        return _store_down(err, conn_id, "inbound")
    log.debug("Inbound message %s from %s (%s)", mask_sid(p["MessageSid"]), mask_number(p["From"]),
             "stored" if processed else "duplicate")
    return Response(EMPTY_TWIML, media_type="text/xml")

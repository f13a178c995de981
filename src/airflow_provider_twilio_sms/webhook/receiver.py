"""The two routes Twilio calls: status callbacks and inbound messages.

Each request is verified (see ``verification.py``) and then stored in one short transaction. Answers:
status -> ``{"success": true, "processed": 1}`` (0 for a delivery already stored); inbound -> empty TwiML.
A refused request gets only its status code. What a verified event may touch is decided from stored facts
and the verifying connection (its account, id, signer and team), never from the request's query: see
``SmsStore.record_status_event`` and ``record_inbound``. When the store cannot be written in time the answer
is 503, never 200 (the event would be lost) and never 429 (Twilio must retry): the retry is deduplicated.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response

from airflow_provider_twilio_sms.privacy import mask_number, mask_sid, safe_for_log
from airflow_provider_twilio_sms.webhook.connections import CONN_ID_PATTERN, ConnectionUnavailable
from airflow_provider_twilio_sms.webhook.verification import (
    Refused,
    VerifiedCallback,
    content_kind,
    form_schema,
    read_body,
    verify,
)

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.webhook.app import AppState
    from airflow_provider_twilio_sms.webhook.connections import WebhookConnection

log = logging.getLogger(__name__)
router = APIRouter()
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
STORED, DUPLICATE = b'{"success":true,"processed":1}', b'{"success":true,"processed":0}'
# Twilio gives up on a webhook after 15 s: answer 503 well before. The store's deadline is
# [twilio_sms] webhook_store_deadline_seconds; this one is the connection lookup's (the secrets backend).
LOOKUP_DEADLINE_SECONDS = 10.0


class Unavailable(Exception):
    """The request cannot be handled now: the store or the secrets backend failed or was too slow."""


async def _connection(state: AppState, conn_id: str) -> WebhookConnection:
    if not CONN_ID_PATTERN.fullmatch(conn_id):
        raise Refused(404, "conn_id is not a connection id")
    hit, found = state.connections.cached(conn_id)
    if not hit:
        try:
            with anyio.fail_after(LOOKUP_DEADLINE_SECONDS):
                found = await anyio.to_thread.run_sync(state.connections.get, conn_id, abandon_on_cancel=True)
        except TimeoutError:
            raise Unavailable("the connection lookup took too long") from None
        except ConnectionUnavailable as err:
            raise Unavailable(f"connection lookup failed: {err}") from err
        except Exception as err:  # the secrets backend failed, a secret does not decrypt: retryable
            raise Unavailable(f"connection lookup failed ({type(err).__name__})") from err
    if found is None:
        raise Refused(404, "no usable twilio_sms connection with this id")
    return found


async def _verified(request: Request, conn_id: str, kind: str) -> tuple[WebhookConnection, VerifiedCallback]:
    state: AppState = request.app.state.twilio_sms
    found = await _connection(state, conn_id)
    content_type = content_kind(request)
    body = await read_body(request, state.max_body_bytes)
    return found, verify(found.settings, request, content_type, body, conn_id, kind)


async def _write(state: AppState, method: str, **kwargs) -> bool:
    """Run one store write within the store's deadline (:meth:`AppState.run_store_call`; a status callback
    through :meth:`AppState.record_status`); any failure is Unavailable.
    """
    try:
        if method == "record_status_event":
            return await state.record_status(**kwargs)
        return await state.run_store_call(lambda store: getattr(store, method)(**kwargs))
    except TimeoutError:
        raise Unavailable(f"no answer from the store within {state.store_deadline_seconds:g} s") from None
    except Exception as err:  # whatever failed, the event is not stored: make Twilio retry
        raise Unavailable(_describe(err)) from err


def _describe(err: Exception) -> str:
    """A store error in one masked line: its class, and for a config error what to fix (never a URL)."""
    from airflow_provider_twilio_sms.errors import ConnectionConfigError

    if isinstance(err, ConnectionConfigError):
        return safe_for_log(err, 300)
    return type(err).__name__


def _refused(err: Refused, conn_id: str, kind: str) -> Response:
    log.warning("Refused a Twilio %s webhook for connection %s: %s (HTTP %d)", kind,
                safe_for_log(conn_id, 60), err.reason, err.status)
    return Response(status_code=err.status)


def _unavailable(err: Unavailable, conn_id: str, kind: str) -> Response:
    log.error("Could not store a Twilio %s webhook for connection %s, answered 503 so that Twilio "
              "retries: %s", kind, safe_for_log(conn_id, 60), err)
    return Response(status_code=503)


# The routes take only the Request and read conn_id from the path themselves (it is checked against
# CONN_ID_PATTERN first thing): a declared ``conn_id: str`` parameter costs a pydantic validation per
# request. The OpenAPI description still documents it, with the signed form Twilio posts.
_CONN_ID = {"name": "conn_id", "in": "path", "required": True,
            "schema": {"type": "string", "title": "Conn Id"},
            "description": "the twilio_sms connection whose account signed the request"}


def _documented(kind: str) -> dict:
    form = form_schema(kind)
    return {**form, "parameters": [_CONN_ID, *form["parameters"]]}


@router.post("/webhooks/{conn_id}/status", summary="Twilio status callback (signed)",
             openapi_extra=_documented("status"))
async def status_callback(request: Request) -> Response:
    conn_id: str = request.path_params["conn_id"]
    state: AppState = request.app.state.twilio_sms
    try:
        found, cb = await _verified(request, conn_id, "status")
        processed = await _write(
            state, "record_status_event", account_sid=found.settings.account_sid, conn_id=conn_id,
            message_sid=cb.message_sid, status=cb.status, payload=cb.params, error_code=cb.error_code,
            idempotency_token=cb.idempotency_token, idempotency_key=cb.query.get("ik") or None,
            idempotency_key_sha256=cb.query.get("ik_sha256") or None,
            signer=found.settings.signer, team=found.team)
    except Refused as err:
        return _refused(err, conn_id, "status")
    except Unavailable as err:
        return _unavailable(err, conn_id, "status")
    if log.isEnabledFor(logging.DEBUG):
        log.debug("Twilio status %s for message %s on connection %s: %s", cb.status, mask_sid(cb.message_sid),
                  safe_for_log(conn_id, 60), "stored" if processed else "duplicate")
    return Response(STORED if processed else DUPLICATE, media_type="application/json")


@router.post("/webhooks/{conn_id}/inbound", summary="Twilio inbound message (signed)",
             openapi_extra=_documented("inbound"))
async def inbound_message(request: Request) -> Response:
    conn_id: str = request.path_params["conn_id"]
    state: AppState = request.app.state.twilio_sms
    started = time.monotonic()
    try:
        found, cb = await _verified(request, conn_id, "inbound")
        p = cb.params
        processed = await _write(
            state, "record_inbound", account_sid=found.settings.account_sid, conn_id=conn_id,
            message_sid=cb.message_sid, from_number=p["From"], to_number=p["To"], body=p.get("Body"),
            payload=p, num_media=cb.num_media, opt_out_type=p.get("OptOutType") or None,
            signer=found.settings.signer, team=found.team)
    except Refused as err:
        return _refused(err, conn_id, "inbound")
    except Unavailable as err:
        return _unavailable(err, conn_id, "inbound")
    log.info("Twilio inbound message %s from %s on connection %s: %s", mask_sid(cb.message_sid),
              mask_number(p["From"]), safe_for_log(conn_id, 60), "stored" if processed else "duplicate")
    return Response(await _hitl_answer(state, found, conn_id, cb.message_sid, p, started),
                    media_type="text/xml")


async def _hitl_answer(state: AppState, found: WebhookConnection, conn_id: str, message_sid: str,
                       params: dict, started: float) -> str:
    """TwiML for a stored inbound message: a message to the sender when it answers a human-in-the-loop
    request (``webhook/hitl_replies.py``), else empty. The message is stored whatever happens here.
    """
    from airflow_provider_twilio_sms.webhook.hitl_replies import TRY_AGAIN, answer_hitl_reply, twiml_message

    try:
        text = await answer_hitl_reply(state, found, conn_id, message_sid=message_sid, sender=params["From"],
                                       body=params.get("Body"), started=started)
    except Exception as err:  # noqa: BLE001 - the store failed or was too slow: stored, not answered
        log.error("Could not answer inbound message %s as a human-in-the-loop reply (%s)",
                  mask_sid(message_sid), type(err).__name__)
        text = TRY_AGAIN
    return twiml_message(text) if text else EMPTY_TWIML

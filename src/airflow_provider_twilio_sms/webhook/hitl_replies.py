"""The inbound route's human-in-the-loop step: a verified, stored reply that starts with a reply code is
answered through Airflow's HITL API (see ``hitl/``), and the sender gets a TwiML message saying what came
of it.

Runs after the inbound message is stored, within Twilio's 15 s: store calls under the store's deadline,
Airflow's API under :data:`AIRFLOW_DEADLINE_SECONDS`, cut to what is left of :data:`REQUEST_BUDGET_SECONDS`
since the request arrived. When Airflow cannot be asked (unreachable, failing,
or slower than that) the sender is asked to send the reply again; should a slow Airflow record the answer
after all, the reply sent again is told it was already answered.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import anyio

from airflow_provider_twilio_sms.privacy import mask_number, mask_sid, safe_for_log

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.webhook.app import AppState
    from airflow_provider_twilio_sms.webhook.connections import WebhookConnection

log = logging.getLogger(__name__)
AIRFLOW_DEADLINE_SECONDS = 9.0
# Twilio waits 15 s for the answer to the whole request: Airflow is asked only within this much of its start.
REQUEST_BUDGET_SECONDS = 13.0
TRY_AGAIN = "Sorry, your answer could not be recorded right now. Please send it again in a minute."


async def _settle(state: AppState, request_id: int, kind: str, message_sid: str) -> None:
    """Free the request's code; Airflow already holds the outcome, so a failure here is only logged (the
    row stays pending and a later reply is told what Airflow says).
    """
    try:
        await state.run_store_call(lambda store: store.settle_hitl_request(
            request_id, outcome=kind, message_sid=message_sid if kind == "answered" else None))
    except Exception as err:  # noqa: BLE001 - whatever failed, the answer stands: log it and go on
        log.warning("Could not mark human-in-the-loop request %d settled (%s)", request_id,
                    type(err).__name__)


def _airflow_seconds(started: float | None) -> float:
    """How long Airflow may take: :data:`AIRFLOW_DEADLINE_SECONDS`, less when the request (its store calls)
    already used part of Twilio's 15 s; never below a tenth of a second (then it gives up at once).
    """
    if started is None:
        return AIRFLOW_DEADLINE_SECONDS
    left = REQUEST_BUDGET_SECONDS - (time.monotonic() - started)
    return max(0.1, min(AIRFLOW_DEADLINE_SECONDS, left))


def twiml_message(text: str) -> str:
    """A TwiML answer that texts ``text`` back to the sender."""
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(text)}</Message></Response>'


async def answer_hitl_reply(state: AppState, found: WebhookConnection, conn_id: str, *, message_sid: str,
                            sender: str, body: str | None, started: float | None = None) -> str | None:
    """The text to send back when ``body`` answers a HITL request texted through this connection's account
    and signer, else None (not a HITL reply: the inbound route answers as usual).
    """
    from airflow_provider_twilio_sms.hitl.codes import split_reply
    from airflow_provider_twilio_sms.hitl.replies import plan_reply
    from airflow_provider_twilio_sms.hitl.resolve import resolver_for
    from airflow_provider_twilio_sms.hitl.users import admin_users
    from airflow_provider_twilio_sms.phone import normalize_number

    parts = split_reply(body)
    if parts is None:
        return None
    code, text = parts
    settings = found.settings
    rows = await state.run_store_call(lambda store: store.hitl_requests_by_code(
        account_sid=settings.account_sid, conn_id=conn_id, signer=settings.signer, code=code))
    if not rows:
        return None
    try:
        sender_number = normalize_number(sender, settings.default_region)
    except ValueError:  # a short code or a channel address: no phone we texted
        return None
    try:
        admin = admin_users(settings.default_region)
    except ValueError as err:  # a bad [twilio_sms] hitl_users: say so in the log, use the notifiers' mappings
        log.error("[twilio_sms] hitl_users is ignored for human-in-the-loop reply %s: %s",
                  mask_sid(message_sid), safe_for_log(err, 300))
        admin = {}
    plan = plan_reply(rows, sender=sender_number, text=text, message_sid=message_sid, admin_users=admin)
    if plan is None:
        return None
    outcome = plan.outcome
    if outcome is None and plan.ref is not None and plan.user is not None:
        ref, user = plan.ref, plan.user
        try:
            resolver = resolver_for(state.mode)
            with anyio.fail_after(_airflow_seconds(started)):
                outcome = await anyio.to_thread.run_sync(lambda: resolver.answer(ref, user, text),
                                                         abandon_on_cancel=True)
        except Exception as err:  # noqa: BLE001 - Airflow unreachable, too slow or misconfigured: nothing recorded
            log.error("Could not answer human-in-the-loop request of task %s in DAG %s by SMS %s: %s",
                      safe_for_log(ref.task_id, 100), safe_for_log(ref.dag_id, 100), mask_sid(message_sid),
                      "Airflow took too long" if isinstance(err, TimeoutError) else safe_for_log(err, 300))
            return TRY_AGAIN
        if outcome.settles and plan.request_id is not None:
            await _settle(state, plan.request_id, outcome.kind, message_sid)
    if outcome is None:
        return None
    log.info("Human-in-the-loop reply %s from %s: %s", mask_sid(message_sid), mask_number(sender_number),
             outcome.kind)
    return outcome.text

"""Scheduled messages: Twilio's Message Scheduling (``ScheduleType=fixed`` + ``SendAt``), checked before
anything is sent, and canceled (``Status=canceled``) when the pipeline no longer wants them.

Twilio's rules (its Message Scheduling page and errors 35111, 35114/35115, 35118, 30409):

- only a message sent through a Messaging Service is scheduled. Twilio sends a message without one at
  once, ``SendAt`` ignored: a pipeline that meant "tomorrow" would text today. So a missing Messaging
  Service is refused here, before anything is claimed or sent;
- ``SendAt`` is an ISO 8601 moment in UTC, from 15 minutes (Twilio's documentation names 5 or 15 minutes
  depending on the page; 15 is what both allow) to 35 days after Twilio receives the request;
- the message is ``scheduled`` until then, and may be canceled only while it is: afterwards Twilio answers
  30409 ("This message cannot be canceled").

Which clock: the window is checked on this machine's clock (UTC, ``datetime.now``), because Twilio checks
on its own (real) clock, not the store's database's. A margin of :data:`CLOCK_MARGIN` on each side keeps a
request that is inside the window here from falling outside it at Twilio (clock skew, the request's
travel, a retry after a backoff); Twilio's own refusal is reported in the same words, and gives the
send's claim back too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.errors import (
    InvalidMessageError,
    MessageNotCancelableError,
    PermanentTwilioError,
)
from airflow_provider_twilio_sms.privacy import mask_sid

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.store.api import SmsStore

log = logging.getLogger(__name__)

SCHEDULE_MIN = timedelta(minutes=15)
SCHEDULE_MAX = timedelta(days=35)
CLOCK_MARGIN = timedelta(minutes=1)
# Twilio's refusals of a schedule (nothing was created): the request can be corrected and sent again.
SCHEDULE_REFUSALS = frozenset({35111, 35114, 35115, 35117, 35118, 35126})
CANCEL_SOURCE = "cancel"


def parse_send_at(value: Any) -> datetime | None:
    """``send_at`` as given to the operator or the hook: an aware ``datetime`` (pendulum's too) or an ISO
    8601 string with its offset (``2026-12-24T09:00:00Z``, ``...+01:00``); None or ``""``: send at once.
    A moment without an offset is refused: nobody can tell which time zone it meant.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
        except ValueError:
            raise InvalidMessageError(
                f"send_at={value!r} is not an ISO 8601 moment: give one with its offset, like "
                "2026-12-24T09:00:00Z or 2026-12-24T10:00:00+01:00, or an aware datetime") from None
    else:
        raise InvalidMessageError(f"send_at must be an aware datetime or an ISO 8601 string (like "
                                  f"2026-12-24T09:00:00Z), not {type(value).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidMessageError(
            f"send_at={value!s} has no time zone: give it with its offset (2026-12-24T09:00:00Z, "
            "+01:00...) or as an aware datetime (pendulum, or datetime with tzinfo)")
    return moment.astimezone(timezone.utc)


def twilio_send_at(moment: datetime) -> datetime:
    """The moment as Twilio receives it: UTC, whole seconds (twilio-python sends ``%Y-%m-%dT%H:%M:%SZ``)."""
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def check_window(send_at: datetime, now: datetime | None = None) -> datetime:
    """``send_at`` (UTC, whole seconds) if Twilio will schedule it, else :class:`InvalidMessageError` that
    says by how much it misses and what to do. ``now`` defaults to this machine's clock (see the module
    docstring).
    """
    now = now or datetime.now(timezone.utc)
    moment = twilio_send_at(send_at)
    clock = now.replace(microsecond=0).isoformat()
    ahead = moment - now
    earliest, latest = SCHEDULE_MIN + CLOCK_MARGIN, SCHEDULE_MAX - CLOCK_MARGIN
    if ahead < earliest:
        raise InvalidMessageError(
            f"send_at={moment.isoformat()} is {_span(ahead)} from now ({clock} on this machine's "
            f"clock); Twilio schedules only from 15 minutes to 35 days ahead "
            f"(here {_span(earliest)} and more, to allow for clock skew). Nothing was sent: send it at least "
            f"{_span(earliest)} ahead, or leave send_at out to send at once")
    if ahead > latest:
        raise InvalidMessageError(
            f"send_at={moment.isoformat()} is {_span(ahead)} from now ({clock} on this machine's "
            f"clock); Twilio schedules at most 35 days ahead (here {_span(latest)}, to "
            "allow for clock skew). Nothing was sent: choose an earlier moment, or schedule it from a later "
            "DAG run")
    return moment


def scheduled_sender(settings: TwilioConnectionSettings, from_: str | None,
                     messaging_service_sid: str | None) -> tuple[str | None, str]:
    """``(From, MessagingServiceSid)`` for a scheduled message: the Messaging Service given, else the
    connection's, with ``from_`` only when given (a number of the service's sender pool). No Messaging
    Service anywhere: :class:`InvalidMessageError` (Twilio would send the message at once).
    """
    service = (messaging_service_sid or "").strip() or settings.messaging_service_sid
    if not service:
        raise InvalidMessageError(
            "send_at needs a Messaging Service: Twilio schedules only messages sent through one, and would "
            "send this one at once. Nothing was sent: give messaging_service_sid='MG...' or set the "
            f"Messaging Service SID of connection {settings.conn_id!r} (Twilio console: Messaging > "
            "Services)")
    resolved_from, resolved_service = settings.resolve_sender(from_, service)
    if resolved_service is None:  # resolve_sender keeps a given service; this is a safety net
        raise InvalidMessageError("send_at needs a Messaging Service; none was resolved for this message")
    return resolved_from, resolved_service


def schedule_refusal(err: PermanentTwilioError) -> InvalidMessageError:
    """Twilio's refusal of a schedule (:data:`SCHEDULE_REFUSALS`), in words that say what to change."""
    from airflow_provider_twilio_sms.errors import describe_error_code

    return InvalidMessageError(
        f"Twilio refused to schedule the message: {describe_error_code(err.code)}. Nothing was sent and the "
        "idempotency key is free again: correct send_at (15 minutes to 35 days ahead, on Twilio's clock) or "
        "the Messaging Service, and run the task again")


def already_scheduled(row: dict[str, Any], requested: datetime | None,
                      result: dict[str, Any]) -> dict[str, Any]:
    """What a retried (or cleared and rerun) task gets when an earlier attempt scheduled its message:
    that message (``result``), never a second one. A message canceled since fails the task: its key is
    spent, and only a new key schedules again.
    """
    sid, send_at, status = row.get("sid"), row["send_at"], row.get("status") or "scheduled"
    if status == "canceled":
        raise PermanentTwilioError(
            f"the message scheduled under this idempotency key for {send_at.isoformat()} "
            f"(SID {mask_sid(sid)}) was canceled: nothing will be sent. To schedule it again, give the task "
            "a new idempotency_key")
    if requested is not None and twilio_send_at(requested) != send_at:
        log.warning("This idempotency key's message (SID %s) was scheduled by an earlier attempt for %s; "
                    "this attempt asks for %s but does not schedule a second one. To move it: cancel it "
                    "(airflow twilio-sms cancel --sid ...) and send with a new idempotency_key",
                    mask_sid(sid),
                    send_at.isoformat(), twilio_send_at(requested).isoformat())
    else:
        log.info("Message already scheduled (SID %s, for %s, now %s) for this idempotency key; not "
                 "scheduling again", mask_sid(sid), send_at.isoformat(), status)
    return result


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else "",
             f"{seconds} s" if seconds and not days else ""]
    return sign + (" ".join(p for p in parts if p) or "0 s")


# -- canceling ----------------------------------------------------------------------------------------

def cancel_scheduled_message(hook: TwilioSmsHook, store: SmsStore, *, sid: str | None = None,
                             idempotency_key: str | None = None, team: str | None = None) -> dict[str, Any]:
    """Cancel one scheduled message, found by ``sid`` or by its send's ``idempotency_key`` (scoped to the
    hook's account and ``team``), and record ``canceled`` in the store (terminal: it never moves back).

    Returns ``{"sid", "status": "canceled", "send_at", "already_canceled"}``. Canceling twice is harmless
    (the second time says it already was). A message Twilio already sent (or is sending) cannot be:
    :class:`MessageNotCancelableError`, after storing the status Twilio gave, so the store says what
    happened. A key whose send has no SID yet (its outcome is being reconciled) is refused with what to do.
    """
    from airflow_provider_twilio_sms.status_fallback import store_twilio_statuses
    from airflow_provider_twilio_sms.store.claims import make_scope

    if bool(sid) == bool(idempotency_key):
        raise ValueError("give exactly one of sid or idempotency_key")
    if idempotency_key:
        row = store.get_message(scope=make_scope(hook.settings.account_sid, team),
                                idempotency_key=idempotency_key)
        if row is None:
            raise InvalidMessageError(
                "no message was sent with this idempotency key by this account"
                + (f" and team {team!r}" if team else "") + ": check the key, the connection and --team")
        if not row.get("sid"):
            raise InvalidMessageError(
                f"the send under this idempotency key has no SID yet (its state is {row['send_state']}): its "
                "outcome is not known. Run the task again (it looks the message up at Twilio), then cancel")
        sid = row["sid"]
    else:
        row = store.get_message(sid=sid)
    if sid is None:  # for the type checker: one of the two was given
        raise ValueError("no SID")
    send_at = (row or {}).get("send_at")
    if row is not None and (row.get("status") or "") == "canceled":
        log.info("Message %s was already canceled", mask_sid(sid))
        return _canceled(sid, send_at, already=True)
    try:
        answer = hook.cancel_scheduled(sid)
    except MessageNotCancelableError:
        try:
            now = hook.fetch_message(sid)
        except Exception:  # noqa: BLE001 - the refusal is what the caller must hear
            log.warning("Could not read message %s after Twilio refused to cancel it", mask_sid(sid))
        else:
            store_twilio_statuses(hook, store, hook.twilio_conn_id, {sid: now})
            if now.get("status") == "canceled":  # canceled meanwhile (by another task or a person)
                return _canceled(sid, send_at, already=True)
        raise
    store_twilio_statuses(hook, store, hook.twilio_conn_id, {sid: answer}, source=CANCEL_SOURCE)
    log.info("Canceled scheduled message %s%s", mask_sid(sid),
             f" (it was to be sent at {send_at.isoformat()})" if send_at else "")
    return _canceled(sid, send_at, already=False)


def _canceled(sid: str, send_at: datetime | None, *, already: bool) -> dict[str, Any]:
    return {"sid": sid, "status": "canceled", "send_at": send_at.isoformat() if send_at else None,
            "already_canceled": already}


def cancel_scheduled_of_run(hook: TwilioSmsHook, store: SmsStore, *, dag_id: str, run_id: str,
                            task_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Cancel every message of this DAG run (of ``task_ids``, else of every task) that is still
    ``scheduled`` in the store and was sent with this hook's connection. A message Twilio already sent is
    reported (``"status"``: what Twilio said) and left alone; nothing here raises for one message.
    """
    results: list[dict[str, Any]] = []
    for row in store.scheduled_messages(dag_id=dag_id, run_id=run_id, task_ids=task_ids,
                                        conn_id=hook.twilio_conn_id):
        try:
            results.append(cancel_scheduled_message(hook, store, sid=row["sid"]))
        except MessageNotCancelableError as err:
            log.warning("Scheduled message %s could not be canceled: %s", mask_sid(row["sid"]), err)
            now = store.get_message(sid=row["sid"]) or {}
            results.append({"sid": row["sid"], "status": now.get("status"), "send_at": None,
                            "already_canceled": False, "error": str(err)})
    return results


# -- from a DAG: the operator, the notifier ---------------------------------------------------------------

def cancel_for_context(context: Any, *, twilio_conn_id: str, store_conn_id: str | None,
                       message_sid: str | None = None, idempotency_key: str | None = None,
                       task_ids: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
    """What ``CancelScheduledSmsOperator`` and ``CancelScheduledSmsNotifier`` do with a task's ``context``:
    cancel one message (``message_sid``, or ``idempotency_key`` in this DAG's team), else every message
    of this DAG run (of ``task_ids`` when given) still scheduled with ``twilio_conn_id``.
    """
    from airflow_provider_twilio_sms.config import team_of
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.store.locate import get_store

    if message_sid and idempotency_key:
        raise ValueError("give message_sid or idempotency_key, not both")
    hook, store = TwilioSmsHook(twilio_conn_id=twilio_conn_id), get_store(store_conn_id)
    if message_sid or idempotency_key:
        return [cancel_scheduled_message(hook, store, sid=message_sid or None,
                                         idempotency_key=idempotency_key or None, team=team_of(context))]
    dag_run = context["dag_run"]
    names = [task_ids] if isinstance(task_ids, str) else list(task_ids or [])
    return cancel_scheduled_of_run(hook, store, dag_id=dag_run.dag_id, run_id=dag_run.run_id,
                                   task_ids=names or None)

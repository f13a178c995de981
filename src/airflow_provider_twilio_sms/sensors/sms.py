"""Sensors that wait on what comes back: delivery statuses and inbound replies, read from the store.

The webhook app writes Twilio's callbacks and inbound messages to the store; these sensors only read
it (poke, reschedule, or deferred to a trigger that polls in batches). DAG files import this module
on every parse, so nothing heavy is imported at module level.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf

from airflow_provider_twilio_sms.privacy import MasksRenderedNumbers

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.replies import ReplyCriteria
    from airflow_provider_twilio_sms.status_fallback import FallbackSchedule
    from airflow_provider_twilio_sms.store.api import SmsStore

DEFAULT_FAILURE_STATUSES = ("failed", "undelivered", "canceled")


def _default_deferrable() -> bool:
    return conf.getboolean("operators", "default_deferrable", fallback=False)


class _StoreSensor(BaseSensorOperator):
    """What both sensors share: the store, the Twilio hook, the referenced send's stored row."""

    def __init__(self, *, twilio_conn_id: str = "twilio_sms_default", store_conn_id: str | None = None,
                 deferrable: bool | None = None, poll_interval: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.twilio_conn_id = twilio_conn_id
        self.store_conn_id = store_conn_id
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval

    @cached_property
    def store(self) -> SmsStore:
        from airflow_provider_twilio_sms.store.locate import get_store

        return get_store(self.store_conn_id)

    @cached_property
    def hook(self) -> TwilioSmsHook:
        from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook

        return TwilioSmsHook(twilio_conn_id=self.twilio_conn_id)

    def _sent_row(self, context: Context, task_id: str) -> dict[str, Any]:
        """The stored outbound row of the SendSmsOperator task ``task_id`` in this DAG run."""
        from airflow_provider_twilio_sms.store.claims import make_scope

        result = context["ti"].xcom_pull(task_ids=task_id)
        if isinstance(result, list):  # a mapped upstream: take the instance with our map index
            index = context["ti"].map_index  # None or -1 when this sensor is not mapped itself
            result = result[index] if index is not None and 0 <= index < len(result) else None
        if not isinstance(result, dict) or not result.get("idempotency_key"):
            raise ValueError(f"task {task_id!r} returned no SendSmsOperator result in this DAG run; "
                             "point the sensor at a SendSmsOperator task upstream of it")
        row = None
        if result.get("sid"):
            row = self.store.get_message(sid=result["sid"])
        if row is None:
            from airflow_provider_twilio_sms.config import team_of

            scope = make_scope(result.get("account_sid") or self.hook.settings.account_sid, team_of(context))
            row = self.store.get_message(scope=scope, idempotency_key=result["idempotency_key"])
        if row is None:
            raise ValueError(f"the message sent by task {task_id!r} is not in the store: is the sensor "
                             "reading the same store connection as the operator?")
        return row

    def _timeout_delta(self) -> timedelta | None:
        return timedelta(seconds=self.timeout) if self.timeout else None


def _asked_from(row: dict[str, Any], sent_at: datetime | None) -> datetime | None:
    """From when Twilio may have news of the message: its send, or for a scheduled message its ``send_at``
    (until then it is ``scheduled``, and no callback is missing).
    """
    send_at = row.get("send_at")
    return max(send_at, sent_at) if send_at and sent_at else (send_at or sent_at)


class SmsStatusSensor(_StoreSensor):
    """
    Wait until a message reaches a delivery status (default ``delivered``).

    Give exactly one of ``message_sid``, ``from_task`` (a SendSmsOperator task id in this DAG run) or
    ``idempotency_key``. On a failure status the task fails at once with Twilio's error code and what
    it means. A scheduled message (``send_at``) is ``scheduled`` until its moment, then moves on as any
    other; ``canceled`` fails the task (nothing was sent). Callbacks can be lost (and Twilio's test
    credentials never send any): from ``fallback_after`` seconds after the send (for a scheduled message,
    after its ``send_at``) on, while the stored status ends nothing, Twilio is asked
    every ``fallback_interval`` seconds, doubling up to ``fallback_max_interval``, and what it says is
    stored as a status event from a poll (see :mod:`.status_fallback`). Deferred, the triggerer asks
    Twilio for every waiting sensor together, in a few requests a round. In reschedule mode each poke is
    a new run of the task, which forgets the backoff: Twilio is then asked at most once a poke.

    :param success_statuses: statuses that end the wait successfully.
    :param failure_statuses: statuses that fail the task (default failed, undelivered, canceled).
    :param fallback_after: seconds after the send before Twilio is first asked; None never to ask.
    :param fallback_interval: seconds between the first two asks; each next interval doubles.
    :param fallback_max_interval: the longest interval between two asks.
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param poll_interval: seconds between store polls while deferred.
    """

    template_fields: Sequence[str] = ("message_sid", "from_task", "idempotency_key", "twilio_conn_id",
                                      "store_conn_id")

    def __init__(self, *, message_sid: str | None = None, from_task: str | None = None,
                 idempotency_key: str | None = None, success_statuses: Collection[str] = ("delivered",),
                 failure_statuses: Collection[str] = DEFAULT_FAILURE_STATUSES,
                 fallback_after: float | None = 300, fallback_interval: float = 60,
                 fallback_max_interval: float = 900, **kwargs):
        super().__init__(**kwargs)
        self.message_sid = message_sid
        self.from_task = from_task
        self.idempotency_key = idempotency_key
        self.success_statuses = tuple(success_statuses)
        self.failure_statuses = tuple(failure_statuses)
        self.fallback_after = fallback_after
        self.fallback_interval = fallback_interval
        self.fallback_max_interval = fallback_max_interval

    def _message(self, context: Context) -> tuple[str | None, datetime | None, dict[str, Any] | None]:
        """(sid, sent_at, stored row) of the awaited message."""
        from airflow_provider_twilio_sms.store.claims import make_scope

        given = [x for x in (self.message_sid, self.from_task, self.idempotency_key) if x]
        if len(given) != 1:
            raise ValueError("SmsStatusSensor needs exactly one of message_sid, from_task or idempotency_key")
        if self.message_sid:
            row = self.store.get_message(sid=self.message_sid)
            return self.message_sid, _asked_from(row, row.get("sent_at")) if row else None, row
        if self.from_task:
            row = self._sent_row(context, self.from_task)
        else:
            from airflow_provider_twilio_sms.config import team_of

            scope = make_scope(self.hook.settings.account_sid, team_of(context))
            row = self.store.get_message(scope=scope, idempotency_key=self.idempotency_key)
            if row is None:
                raise ValueError("no message was sent with this idempotency key (scoped to the connection's "
                                 "account and this DAG's team)")
        return row.get("sid"), _asked_from(row, row.get("sent_at") or row.get("created_at")), row

    def _verdict(self, sid: str, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """The XCom result when the wait is over; raises on a failure status; None to keep waiting."""
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_provider_twilio_sms.errors import describe_error_code
        from airflow_provider_twilio_sms.privacy import mask_sid
        from airflow_provider_twilio_sms.store.status import reached

        status = ((state or {}).get("status") or "").lower()
        if status == "canceled" and status in self.failure_statuses:
            raise AirflowFailException(f"message {mask_sid(sid)} was canceled before its scheduled time: "
                                       "nothing was sent to the recipient, and nothing will be")
        if status in self.failure_statuses:
            raise AirflowFailException(f"message {mask_sid(sid)} ended {status}: "
                                       f"{describe_error_code((state or {}).get('error_code'))}")
        if reached(status, self.success_statuses):  # WhatsApp's read counts as delivered
            return {"sid": sid, "status": status, "error_code": (state or {}).get("error_code")}
        return None

    def _fallback_at(self, sent_at: datetime | None) -> datetime | None:
        if self.fallback_after is None or sent_at is None:
            return None
        return sent_at + timedelta(seconds=self.fallback_after)

    def _schedule(self, sid: str, sent_at: datetime | None) -> FallbackSchedule | None:
        """This sensor's schedule of asks about ``sid`` (kept across pokes of one run of the task)."""
        from airflow_provider_twilio_sms.status_fallback import FallbackSchedule, finishing_statuses

        due_at = self._fallback_at(sent_at)
        if due_at is None:
            return None
        schedules: dict[str, FallbackSchedule] | None = getattr(self, "_fallback_schedules", None)
        if schedules is None:
            schedules = {}
            self._fallback_schedules = schedules
        if sid not in schedules:
            schedules[sid] = FallbackSchedule(due_at, finishing_statuses(self.success_statuses,
                                                                         self.failure_statuses),
                                              self.fallback_interval, self.fallback_max_interval)
        return schedules[sid]

    def _ask_twilio(self, sid: str, sent_at: datetime | None) -> dict[str, Any] | None:
        """Ask Twilio about the message, store what it says as a status event; the stored state after."""
        from airflow_provider_twilio_sms.status_fallback import ask_twilio

        ask_twilio(self.hook, self.store, self.twilio_conn_id, [sid], created_after=sent_at)
        return self.store.message_states([sid]).get(sid)

    def poke(self, context: Context) -> PokeReturnValue:
        """Look up the message's stored status once; done on a success status, fail on a failure status.

        From ``fallback_after`` on, while the stored status ends nothing, also ask Twilio (at a doubling
        interval) and store its answer as a status event.
        """
        from airflow_provider_twilio_sms.store.base import utcnow

        sid, sent_at, _ = self._message(context)
        if not sid:
            self.log.info("The send has no SID yet (its outcome is being reconciled); waiting")
            return PokeReturnValue(is_done=False)
        state = self.store.message_states([sid]).get(sid)
        result = self._verdict(sid, state)
        schedule = self._schedule(sid, sent_at)
        now = utcnow()
        if result is None and schedule is not None and schedule.due((state or {}).get("status"), now):
            from airflow_provider_twilio_sms.errors import TwilioSmsError

            schedule.asked(now)
            self.log.info("No status callback ended the wait %.0f s after the send; asking Twilio",
                          (now - sent_at).total_seconds() if sent_at else 0)
            try:
                result = self._verdict(sid, self._ask_twilio(sid, sent_at))
            except TwilioSmsError as err:  # keep waiting on the store; ask again after the next interval
                self.log.warning("Could not ask Twilio about the message (%s); asking again at %s", err,
                                 schedule.due_at.isoformat())
        return PokeReturnValue(is_done=result is not None, xcom_value=result)

    def execute(self, context: Context) -> Any:
        """Poke once, then (when deferrable) wait in the triggerer instead of holding a worker slot."""
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        self._defer(context)

    def resume_after_wait(self, context: Context, event: Any = None) -> Any:
        """Resumed after waiting for the send's SID (Airflow passes the timer's ``event``): look again."""
        return self.execute(context)

    def _defer(self, context: Context) -> None:
        from airflow_provider_twilio_sms.triggers.sms import SmsStatusTrigger

        sid, sent_at, _ = self._message(context)
        if not sid:  # nothing to poll by yet: check again after one interval, without a worker slot
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

            self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=self.poll_interval)),
                       method_name="resume_after_wait")
        fallback_at = self._fallback_at(sent_at)
        self.defer(
            trigger=SmsStatusTrigger(message_sid=sid, success_statuses=list(self.success_statuses),
                                     failure_statuses=list(self.failure_statuses),
                                     store_conn_id=self.store_conn_id, poll_interval=self.poll_interval,
                                     fallback_at=fallback_at.isoformat() if fallback_at else None,
                                     twilio_conn_id=self.twilio_conn_id,
                                     sent_at=sent_at.isoformat() if sent_at else None,
                                     fallback_interval=self.fallback_interval,
                                     fallback_max_interval=self.fallback_max_interval),
            method_name="execute_complete", timeout=self._timeout_delta())

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger: the final status for XCom, or fail on a failure status.

        An older version's trigger may end with ``no_callback``: then ask Twilio once and wait again.
        """
        if event["outcome"] == "no_callback":  # a trigger deferred by an earlier version: ask once, wait on
            result = self._verdict(event["sid"], self._ask_twilio(event["sid"], None))
            if result is not None:
                return result
            self._defer(context)
        return self._verdict(event["sid"], {"status": event["status"], "error_code": event.get("error_code")})


class SmsReplySensor(MasksRenderedNumbers, _StoreSensor):
    """
    Wait for an inbound SMS that matches, and tell the next task which message it is.

    Which messages count: ``in_reply_to`` (a SendSmsOperator task id: replies from that recipient to
    that sender after that send), or explicit ``from_number`` and/or ``to_number``. What counts:
    ``body_pattern`` (a regular expression, searched case-insensitively unless ``case_sensitive``) or
    ``keywords`` (the first word). Messages received before ``since`` (default: the referenced send,
    else the DAG run's start) never match. A STOP from the awaited number fails the task at once.

    XCom: ``message_sid``, ``received_at``, ``from`` (masked), ``keyword`` (the entry of ``keywords``
    that matched, else None) and how the reply was matched; never the body or a captured code, which
    would sit in clear in Airflow's database. The next task reads those from the store::

        @task
        def use_code(found):
            from airflow_provider_twilio_sms.replies import read_reply

            code = read_reply(found).groups[0]  # registered with the log masker

    """

    template_fields: Sequence[str] = ("in_reply_to", "from_number", "to_number", "body_pattern", "keywords",
                                      "since", "twilio_conn_id", "store_conn_id")
    number_fields: Sequence[str] = ("from_number", "to_number")  # masked before Airflow stores them

    def __init__(self, *, in_reply_to: str | None = None, from_number: str | None = None,
                 to_number: str | None = None, body_pattern: str | None = None,
                 keywords: Collection[str] | None = None, case_sensitive: bool = False,
                 since: datetime | str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.in_reply_to = in_reply_to
        self.from_number = from_number
        self.to_number = to_number
        self.body_pattern = body_pattern
        self.keywords = keywords
        self.case_sensitive = case_sensitive
        self.since = since

    def criteria(self, context: Context) -> ReplyCriteria:
        """The reply to wait for, with ``in_reply_to`` and ``since`` resolved for this run.

        Numbers are normalized with the connection's default region; without ``since`` the wait starts at the
        DAG run's start.
        """
        from airflow_provider_twilio_sms.channels import normalize_address
        from airflow_provider_twilio_sms.replies import ReplyCriteria

        settings = self.hook.settings
        region = settings.default_region
        from_number = normalize_address(self.from_number, region) if self.from_number else None
        to_number = normalize_address(self.to_number, region) if self.to_number else None
        since = self.since
        # Whose replies count: those verified for the account by the connection that sent the message (or
        # another connection with its signer); without in_reply_to, the sensor's own connection's.
        account_sid, conn_id = settings.account_sid, self.twilio_conn_id
        signer: str | None = settings.signer
        service = None
        if self.in_reply_to:
            row = self._sent_row(context, self.in_reply_to)
            account_sid, conn_id, signer = str(row["account_sid"]), str(row["conn_id"]), row.get("signer")
            from_number = from_number or row["to_number"]
            if not to_number:  # the number it was sent from, or the Messaging Service that chose it
                to_number, service = row.get("from_number"), row.get("messaging_service_sid")
            since = since or row.get("sent_at") or row["created_at"]
        if isinstance(since, str):
            since = datetime.fromisoformat(since)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)  # a naive time is read as UTC, as Airflow does
        if since is None:
            dag_run = context.get("dag_run")
            since = getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None)
        return ReplyCriteria(account_sid=account_sid, conn_id=conn_id, signer=signer, from_number=from_number,
                             to_number=to_number, messaging_service_sid=service,
                             body_pattern=self.body_pattern, keywords=tuple(self.keywords or ()),
                             case_sensitive=self.case_sensitive, since=since)

    def _scan(self, criteria: ReplyCriteria) -> tuple[dict[str, Any] | None, int]:
        """(result, last event id seen): the first match among stored messages, or None.

        The scan starts after the messages received well before ``since`` (one index probe), not at the
        start of the table; the id it ends on is where a deferred wait goes on from.
        """
        from airflow.sdk.exceptions import AirflowFailException

        last_id = self.store.inbound_cursor(criteria.since)
        while True:
            rows = self.store.find_inbound(
                account_sid=criteria.account_sid, conn_id=criteria.conn_id, signer=criteria.signer,
                to_number=criteria.to_number, messaging_service_sid=criteria.messaging_service_sid,
                from_number=criteria.from_number, since=criteria.since, after_id=last_id, limit=200)
            for row in rows:
                last_id = row["id"]
                if criteria.is_opt_out(row):
                    raise AirflowFailException(criteria.opt_out_message(row))
                result = criteria.match(row)
                if result is not None:
                    return self._found(result), last_id
            if len(rows) < 200:
                return None, last_id

    def _found(self, result: dict[str, Any]) -> dict[str, Any]:
        """The XCom: the match, and the store ``read_reply`` finds it in."""
        return {**result, "store_conn_id": self.store_conn_id}

    def poke(self, context: Context) -> PokeReturnValue:
        """Scan the stored inbound messages once; done on the first match, fail on an opt-out (STOP)."""
        result, _ = self._scan(self.criteria(context))
        return PokeReturnValue(is_done=result is not None, xcom_value=result)

    def execute(self, context: Context) -> Any:
        """Scan once, then (when deferrable) wait for a match in the triggerer from the last message seen."""
        if not self.deferrable:
            return super().execute(context)
        from airflow_provider_twilio_sms.triggers.sms import SmsReplyTrigger

        criteria = self.criteria(context)
        result, last_id = self._scan(criteria)
        if result is not None:
            return result
        # The numbers stay in the store: the trigger's kwargs (Airflow's trigger table) name the wait.
        wait_id = self.store.add_reply_wait(**criteria.parties())
        trigger = SmsReplyTrigger(wait_id=wait_id, shape=criteria.shape(), after_id=last_id,
                                  store_conn_id=self.store_conn_id, poll_interval=self.poll_interval)
        self.defer(trigger=trigger, method_name="execute_complete", timeout=self._timeout_delta())

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger: the matching reply for XCom, or fail on an opt-out."""
        from airflow.sdk.exceptions import AirflowFailException

        if event.get("wait_id") is not None:
            self.store.drop_reply_wait(event["wait_id"])
        if event["outcome"] in ("opt_out", "error"):
            raise AirflowFailException(event["message"])
        return self._found(event["result"])

"""``SendSmsOperator``: one SMS per task instance, ever, under the team pool's rate limit.

DAG files import this module on every parse: nothing heavy is imported at module level and
``__init__`` only assigns.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_twilio_sms.privacy import MasksRenderedNumbers

if TYPE_CHECKING:
    from datetime import datetime

    from airflow.sdk import Context

    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.sending import SendRequest, SmsSender

ON_RATE_LIMIT = ("defer", "fail", "wait")
def attempt_id_of(ti) -> str:
    """Who owns the send's claim: this try of this task instance. The same in every run of one try (a
    resumed deferral takes its own claim back), another in the next try. The ids, up to 250 characters
    each, go in as a SHA-256: the attempt id has a fixed length (75 characters up to try 9999).
    """
    import hashlib

    instance = "\x1f".join([ti.dag_id, ti.task_id, ti.run_id, str(ti.map_index)])
    return f"ti-{hashlib.sha256(instance.encode('utf-8')).hexdigest()}/try-{ti.try_number}"


class SendSmsOperator(MasksRenderedNumbers, BaseOperator):
    """
    Send one SMS through Twilio, at most once per idempotency key.

    Retries, worker crashes and restarts do not send twice: the key is claimed in the store before
    Twilio is called, a send whose outcome is unknown is looked up at Twilio before anything is sent
    again, and a key already sent returns its recorded result.

    :param to: recipient, E.164 (``+14155550123``) or national with the connection's ``default_region``; or
        a WhatsApp address (``whatsapp:+14155550123``), sent from a WhatsApp sender (``from_`` or the
        connection's ``from_number`` written ``whatsapp:+...``) or through a Messaging Service that has one.
    :param body: message text (up to 1600 characters); optional when ``media_url`` or ``content_sid`` is
        given.
    :param content_sid: a Content template (``HX`` + 32 hex) to send instead of ``body``, on SMS or WhatsApp
        (WhatsApp needs an approved template outside the 24-hour session window, else Twilio error 63016).
    :param content_variables: the template's placeholder values, ``{"1": "12/1"}`` or ``{"name": "Ada"}``
        (strings; sent as a JSON string).
    :param twilio_conn_id: the ``twilio_sms`` connection.
    :param from_: sender number, short code or alphanumeric ID; default: the connection's.
    :param messaging_service_sid: send through a Messaging Service instead of a fixed sender.
    :param media_url: up to 10 media URLs (MMS).
    :param idempotency_key: explicit key, used verbatim (scoped to the account and team). Default: derived
        from dag_id, task_id, run_id, map_index and the recipient.
    :param rate_limit: e.g. ``"100/1h"``; default: the connection's, else ``[twilio_sms] rate_limits``.
    :param rate_limit_unit: ``"messages"`` or ``"segments"`` (what the limit counts: SMS segments; a
        WhatsApp message or a Content template on SMS counts one).
    :param on_rate_limit: ``"defer"`` (free the worker until the next slot), ``"fail"`` or ``"wait"``.
    :param validity_period: seconds Twilio may keep trying to deliver (1-36000).
    :param status_callback: URL for delivery statuses; default: the connection's ``webhook_base_url`` +
        ``/twilio_sms/webhooks/<conn_id>/status``. Either way the idempotency key's SHA-256 (and the team)
        is added to its query, so the webhook can link a callback whose send answer was lost.
    :param store_conn_id: connection of the message store; default ``[twilio_sms] store_conn_id``.
    :param deferrable: allow ``on_rate_limit="defer"`` to defer; when False it waits in the worker.
    :param max_send_attempts: tries for transient Twilio refusals (429, queue full) within one task try.
    :param send_at: schedule the message with Twilio instead of sending it now: an aware datetime or an ISO
        8601 string with its offset (templated, e.g. ``"{{ data_interval_end.add(hours=20) }}"``), 15 minutes
        to 35 days ahead, through a Messaging Service (``messaging_service_sid`` or the connection's). Both
        are checked before anything is claimed or sent. The result's ``status`` is ``scheduled`` and its
        ``send_at`` the moment; a retried task returns that message and never schedules a second one. See
        :mod:`~airflow_provider_twilio_sms.scheduling` and ``CancelScheduledSmsOperator`` to cancel it.
    """

    template_fields: Sequence[str] = (
        "to", "body", "twilio_conn_id", "from_", "messaging_service_sid", "media_url", "idempotency_key",
        "rate_limit", "on_rate_limit", "validity_period", "status_callback", "store_conn_id", "content_sid",
        "content_variables", "send_at",
    )
    template_fields_renderers = {"body": "txt"}
    ui_color = "#f22f46"
    number_fields: Sequence[str] = ("to",)  # masked before Airflow stores the rendered fields

    def __init__(
        self,
        *,
        to: str,
        body: str | None = None,
        twilio_conn_id: str = "twilio_sms_default",
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        media_url: str | list[str] | None = None,
        idempotency_key: str | None = None,
        rate_limit: str | None = None,
        rate_limit_unit: str = "messages",
        on_rate_limit: str = "defer",
        validity_period: int | str | None = None,
        status_callback: str | None = None,
        store_conn_id: str | None = None,
        deferrable: bool = True,
        max_send_attempts: int = 5,
        content_sid: str | None = None,
        content_variables: dict[str, str] | str | None = None,
        send_at: datetime | str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.to = to
        self.body = body
        self.twilio_conn_id = twilio_conn_id
        self.from_ = from_
        self.messaging_service_sid = messaging_service_sid
        self.media_url = media_url
        self.idempotency_key = idempotency_key
        self.rate_limit = rate_limit
        self.rate_limit_unit = rate_limit_unit
        self.on_rate_limit = on_rate_limit
        self.validity_period = validity_period
        self.status_callback = status_callback
        self.store_conn_id = store_conn_id
        self.deferrable = deferrable
        self.max_send_attempts = max_send_attempts
        self.content_sid = content_sid
        self.content_variables = content_variables
        self.send_at = send_at

    @cached_property
    def hook(self) -> TwilioSmsHook:
        """The Twilio hook for ``twilio_conn_id``, built on first use (not in ``__init__``)."""
        from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook

        return TwilioSmsHook(twilio_conn_id=self.twilio_conn_id)

    def _sender(self, context: Context) -> SmsSender:
        from airflow_provider_twilio_sms import config
        from airflow_provider_twilio_sms.sending import RetryPolicy, SmsSender
        from airflow_provider_twilio_sms.store.locate import get_store

        return SmsSender(self.hook, get_store(self.store_conn_id),
                         lease_seconds=config.get_int("send_lease_seconds"),
                         store_bodies=config.get_bool("store_outbound_bodies"),
                         retry=RetryPolicy(max_attempts=self.max_send_attempts),
                         attempt_id=attempt_id_of(context["ti"]))

    def build_request(self, context: Context) -> SendRequest:
        """Turn the rendered arguments and the task instance into a :class:`SendRequest`."""
        from airflow_provider_twilio_sms import config
        from airflow_provider_twilio_sms.channels import normalize_address
        from airflow_provider_twilio_sms.rate_limit import resolve_rate_limit
        from airflow_provider_twilio_sms.scheduling import parse_send_at
        from airflow_provider_twilio_sms.sending import SendRequest, default_idempotency_key
        from airflow_provider_twilio_sms.webhook.urls import status_callback_url

        if self.on_rate_limit not in ON_RATE_LIMIT:
            raise ValueError(f"on_rate_limit={self.on_rate_limit!r}: use one of {', '.join(ON_RATE_LIMIT)}")
        if self.rate_limit_unit not in ("messages", "segments"):
            raise ValueError(f"rate_limit_unit={self.rate_limit_unit!r}: use 'messages' or 'segments'")
        settings = self.hook.settings
        ti = context["ti"]
        team = config.team_of(context)
        to = normalize_address(self.to, settings.default_region)
        key = self.idempotency_key or default_idempotency_key(
            ti.dag_id, ti.task_id, ti.run_id, ti.map_index, to
        )
        media = [self.media_url] if isinstance(self.media_url, str) else list(self.media_url or [])
        return SendRequest(
            to=to, body=self.body, idempotency_key=str(key), from_=self.from_,
            messaging_service_sid=self.messaging_service_sid, media_urls=tuple(media),
            status_callback=status_callback_url(settings, self.twilio_conn_id, str(key),
                                                self.status_callback),
            validity_period=int(self.validity_period) if self.validity_period not in (None, "") else None,
            team=team,
            pool=self.pool,
            rate_limit=resolve_rate_limit(self.rate_limit, settings.rate_limit, team, self.pool),
            rate_limit_unit=self.rate_limit_unit,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=ti.map_index,
            content_sid=self.content_sid or None,
            content_variables=self.content_variables,
            send_at=parse_send_at(self.send_at),
        )

    def execute(self, context: Context) -> dict[str, Any]:
        """Send the SMS once per idempotency key; return plain JSON for XCom (recipient masked, no body).

        A permanent Twilio error (invalid or opted-out number) fails the task without Airflow retries. At the
        rate limit, ``on_rate_limit`` decides: fail, wait in the worker, or defer without holding a slot.
        """
        import time

        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        from airflow_provider_twilio_sms.errors import InvalidMessageError, PermanentTwilioError
        from airflow_provider_twilio_sms.sending import RateLimited

        try:
            request = self.build_request(context)  # a bad number or send_at: retrying cannot help either
        except InvalidMessageError as err:
            raise AirflowFailException(str(err)) from err
        sender = self._sender(context)
        while True:
            try:
                outcome = sender.send(request)
            except (PermanentTwilioError, InvalidMessageError) as err:
                # Retrying cannot help: fail now, without Airflow retries.
                raise AirflowFailException(str(err)) from err
            if not isinstance(outcome, RateLimited):
                self._scheduled = outcome if outcome.get("send_at") else None
                return outcome
            if self.on_rate_limit == "fail":
                raise AirflowException(
                    f"rate limit {outcome.limit.count} per {outcome.limit.window_seconds} s of "
                    f"{outcome.pool} reached; the next send is possible at {outcome.next_free_at.isoformat()}"
                )
            # The store's clock said when; wait that long on ours (worker clocks may be off).
            if self.on_rate_limit == "defer" and self.deferrable:
                self._defer_for(outcome.wait_seconds)
            self.log.info("Rate limit of %s reached; waiting %.1f s", outcome.pool, outcome.wait_seconds)
            time.sleep(max(0.0, outcome.wait_seconds) + 0.01)

    def on_kill(self) -> None:
        """Killed (the task was marked failed or cleared while it ran) after its message was scheduled:
        cancel the message, so that no text goes out for a task that did not finish. A message already sent
        cannot be called back; one scheduled by an earlier, finished try is canceled with
        ``CancelScheduledSmsOperator`` or ``airflow twilio-sms cancel`` (see the README).
        """
        scheduled = getattr(self, "_scheduled", None)
        if not scheduled:
            return
        from airflow_provider_twilio_sms.privacy import mask_sid
        from airflow_provider_twilio_sms.scheduling import cancel_scheduled_message
        from airflow_provider_twilio_sms.store.locate import get_store

        try:
            cancel_scheduled_message(self.hook, get_store(self.store_conn_id), sid=scheduled["sid"])
        except Exception:
            self.log.exception("The task was killed after scheduling message %s, which could not be "
                               "canceled: cancel it with `airflow twilio-sms cancel --sid ...`",
                               mask_sid(scheduled["sid"]))

    def _defer_for(self, seconds: float) -> None:
        from datetime import timedelta

        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        from airflow_provider_twilio_sms.store.base import utcnow

        moment = utcnow() + timedelta(seconds=max(0.0, seconds) + 0.01)
        self.log.info(
            "Rate limit reached; deferring until %s without holding a worker slot", moment.isoformat()
        )
        self.defer(trigger=DateTimeTrigger(moment=moment), method_name="execute_after_rate_limit")

    def execute_after_rate_limit(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resumed by the trigger once a slot should be free: run the same idempotent path again."""
        return self.execute(context)

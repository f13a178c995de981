"""``SmsNotifier``: the operator's idempotent send path as a notifier (``on_failure_callback`` etc.)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from datetime import datetime

    from airflow.sdk import Context

    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook


class SmsNotifier(BaseNotifier):
    """
    Text someone when a task or DAG run succeeds, fails or misses its deadline.

    The same send path as ``SendSmsOperator``: numbers validated, opt-outs honoured, one SMS per
    idempotency key. The default key is derived from the DAG run, the task instance (when the
    callback has one) and the recipient, so a callback that runs twice sends once.

    Every argument below is checked as ``SendSmsOperator`` checks it (the same send path), before anything
    is claimed or sent: a template with a body, variables without a template, a ``send_at`` outside Twilio's
    window or without a Messaging Service raise ``InvalidMessageError`` naming the fix.

    :param to: recipient (E.164, or national with the connection's ``default_region``), or a WhatsApp address
        (``whatsapp:+14155550123``) sent from a WhatsApp sender (``from_`` or the connection's).
    :param body: message text (templated); leave it out with ``content_sid``.
    :param content_sid: a Content template (``HX`` + 32 hex) to send instead of ``body`` (templated). A
        business-initiated WhatsApp message needs one WhatsApp approved (else Twilio error 63016).
    :param content_variables: the template's placeholder values, ``{"1": "12/1"}`` (templated).
    :param send_at: schedule the message (templated; aware datetime or ISO 8601 with offset, 15 minutes to
        35 days ahead, through a Messaging Service), as ``SendSmsOperator(send_at=...)`` does.
    :param messaging_service_sid: send through a Messaging Service; default: the connection's (if any).
    :param twilio_conn_id: the ``twilio_sms`` connection.
    :param from_: sender; default: the connection's.
    :param idempotency_key: explicit key (templated); default: derived as above.
    :param store_conn_id: message store connection; default ``[twilio_sms] store_conn_id``.
    """

    template_fields: Sequence[str] = (
        "to",
        "body",
        "twilio_conn_id",
        "from_",
        "idempotency_key",
        "store_conn_id",
        "content_sid",
        "content_variables",
        "send_at",
        "messaging_service_sid",
    )

    def __init__(
        self,
        *,
        to: str,
        body: str | None = None,
        twilio_conn_id: str = "twilio_sms_default",
        from_: str | None = None,
        idempotency_key: str | None = None,
        store_conn_id: str | None = None,
        content_sid: str | None = None,
        content_variables: dict[str, str] | str | None = None,
        send_at: datetime | str | None = None,
        messaging_service_sid: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.to = to
        self.body = body
        self.twilio_conn_id = twilio_conn_id
        self.from_ = from_
        self.idempotency_key = idempotency_key
        self.store_conn_id = store_conn_id
        self.content_sid = content_sid
        self.content_variables = content_variables
        self.send_at = send_at
        self.messaging_service_sid = messaging_service_sid

    @cached_property
    def hook(self) -> TwilioSmsHook:
        """The Twilio hook for ``twilio_conn_id``, built on first use (not while the DAG file is parsed)."""
        from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook

        return TwilioSmsHook(twilio_conn_id=self.twilio_conn_id)

    def notify(self, context: Context) -> None:
        """Send the SMS (Airflow's entry point for notifiers; :meth:`send` also returns the result)."""
        self.send(context)

    def send(self, context: Context) -> dict[str, Any]:
        """Send the SMS through the operator's idempotent path; return the masked result.

        The idempotency key defaults to one per task instance and recipient, so a callback that Airflow runs
        again does not send the SMS twice.
        """
        from airflow_provider_twilio_sms.channels import normalize_address

        to = normalize_address(self.to, self.hook.settings.default_region)
        return self._send_text(context, to, self.body, key_scope="notifier",
                               idempotency_key=self.idempotency_key)

    def _send_text(self, context: Context, to: str, body: str | None, *, key_scope: str,
                   idempotency_key: str | None = None) -> dict[str, Any]:
        """Send ``body`` (or this notifier's ``content_sid`` template) to ``to`` (E.164 or ``whatsapp:``)
        through the operator's idempotent path, scheduled at ``send_at`` when set; the default key is one per
        task instance, ``key_scope`` and recipient (``key_scope`` keeps it apart from a SendSmsOperator's in
        the same task, and from another notifier kind's).
        """
        from airflow_provider_twilio_sms import config
        from airflow_provider_twilio_sms.config import team_of
        from airflow_provider_twilio_sms.scheduling import parse_send_at
        from airflow_provider_twilio_sms.sending import (
            RateLimited,
            SendRequest,
            SmsSender,
            default_idempotency_key,
        )
        from airflow_provider_twilio_sms.store.locate import get_store
        from airflow_provider_twilio_sms.webhook.urls import status_callback_url

        settings = self.hook.settings
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        dag_id = getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "") or ""
        run_id = getattr(dag_run, "run_id", None) or getattr(ti, "run_id", "") or ""
        task_id = getattr(ti, "task_id", None) or None
        key = idempotency_key or default_idempotency_key(dag_id, f"{key_scope}:{task_id or ''}", run_id,
                                                         getattr(ti, "map_index", None), to)
        team = team_of(context)
        request = SendRequest(
            to=to,
            body=body,
            idempotency_key=str(key),
            from_=self.from_,
            messaging_service_sid=self.messaging_service_sid or None,
            team=team,
            status_callback=status_callback_url(settings, self.twilio_conn_id, str(key)),
            dag_id=dag_id or None,
            task_id=task_id,
            run_id=run_id or None,
            content_sid=self.content_sid or None,
            content_variables=self.content_variables,
            send_at=parse_send_at(self.send_at),
        )
        sender = SmsSender(
            self.hook, get_store(self.store_conn_id), lease_seconds=config.get_int("send_lease_seconds"),
            store_bodies=config.get_bool("store_outbound_bodies"),
        )
        outcome = sender.send(request)
        if isinstance(outcome, RateLimited):  # the request carries no rate limit, so this cannot happen
            raise RuntimeError("a notifier's send has no rate limit, yet it was rate limited")
        return outcome

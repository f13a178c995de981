"""``CancelScheduledSmsOperator``: cancel scheduled messages from a DAG (a task, e.g. with
``trigger_rule="one_failed"``; ``notifications.scheduled.CancelScheduledSmsNotifier`` is the
``on_failure_callback`` twin).

A message ``SendSmsOperator(send_at=...)`` scheduled waits at Twilio until its moment, whatever happens
to the DAG run afterwards. When the run fails (or a person marks a task failed), these cancel what the run
still has scheduled, so that no reminder goes out for work that did not happen. Both call
:func:`~airflow_provider_twilio_sms.scheduling.cancel_scheduled_message`, which records ``canceled`` in the
store. DAG files import this module: nothing heavy at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class CancelScheduledSmsOperator(BaseOperator):
    """
    Cancel scheduled messages: one (``message_sid`` or ``idempotency_key``), or every message this DAG
    run still has scheduled (of ``task_ids`` when given) with ``twilio_conn_id``.

    Put it after the tasks whose failure must call the message off, with ``trigger_rule="one_failed"``.
    A message Twilio already sent cannot be called back: it is reported in the result, and the task fails
    only when ``message_sid``/``idempotency_key`` named it. Returns, for XCom, one
    ``{"sid", "status", "send_at", "already_canceled"}`` per message.

    :param task_ids: the sending tasks whose messages to cancel (default: every task of the run).
    :param message_sid: cancel this message only.
    :param idempotency_key: cancel the message sent with this key only (this DAG's team).
    :param twilio_conn_id: the ``twilio_sms`` connection the messages were sent with.
    :param store_conn_id: connection of the message store; default ``[twilio_sms] store_conn_id``.
    """

    template_fields: Sequence[str] = ("task_ids", "message_sid", "idempotency_key", "twilio_conn_id",
                                      "store_conn_id")
    ui_color = "#f7a8b0"

    def __init__(self, *, task_ids: str | Sequence[str] | None = None, message_sid: str | None = None,
                 idempotency_key: str | None = None, twilio_conn_id: str = "twilio_sms_default",
                 store_conn_id: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.task_ids = task_ids
        self.message_sid = message_sid
        self.idempotency_key = idempotency_key
        self.twilio_conn_id = twilio_conn_id
        self.store_conn_id = store_conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        """Cancel, and return one result per message (see the class docstring)."""
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_provider_twilio_sms.errors import InvalidMessageError, MessageNotCancelableError
        from airflow_provider_twilio_sms.scheduling import cancel_for_context

        try:
            results = cancel_for_context(context, twilio_conn_id=self.twilio_conn_id,
                                         store_conn_id=self.store_conn_id, message_sid=self.message_sid,
                                         idempotency_key=self.idempotency_key, task_ids=self.task_ids)
        except (MessageNotCancelableError, InvalidMessageError) as err:
            raise AirflowFailException(str(err)) from err
        self.log.info("Canceled %d scheduled message(s); %d could not be (already sent)",
                      sum(1 for r in results if r.get("status") == "canceled"),
                      sum(1 for r in results if r.get("status") != "canceled"))
        return results

"""``CancelScheduledSmsNotifier``: an ``on_failure_callback`` that cancels what a failed DAG run still has
scheduled (``SendSmsOperator(send_at=...)``), so no reminder goes out for work that did not happen.

DAG files import this module: nothing heavy at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context


class CancelScheduledSmsNotifier(BaseNotifier):
    """
    ``on_failure_callback`` (of a DAG or a task) that cancels what the DAG run still has scheduled: every
    message of the run (of ``task_ids`` when given) still ``scheduled`` with ``twilio_conn_id``. Never
    raises: a message that could not be canceled is logged with what to do.

    :param task_ids: the sending tasks whose messages to cancel (default: every task of the run).
    :param twilio_conn_id: the ``twilio_sms`` connection the messages were sent with.
    :param store_conn_id: connection of the message store; default ``[twilio_sms] store_conn_id``.
    """

    template_fields: Sequence[str] = ("task_ids", "twilio_conn_id", "store_conn_id")

    def __init__(self, *, task_ids: str | Sequence[str] | None = None,
                 twilio_conn_id: str = "twilio_sms_default", store_conn_id: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.task_ids = task_ids
        self.twilio_conn_id = twilio_conn_id
        self.store_conn_id = store_conn_id

    def notify(self, context: Context) -> None:
        """Cancel what the failed DAG run (or task's run) still has scheduled."""
        from airflow_provider_twilio_sms.scheduling import cancel_for_context

        try:
            results = cancel_for_context(context, twilio_conn_id=self.twilio_conn_id,
                                         store_conn_id=self.store_conn_id, task_ids=self.task_ids)
        except Exception:
            self.log.exception("Could not cancel this DAG run's scheduled messages: cancel them with "
                               "`airflow twilio-sms cancel --dag-id ... --run-id ...`")
            return
        self.log.info("Canceled %d scheduled message(s) of this DAG run",
                      sum(1 for r in results if r.get("status") == "canceled"))

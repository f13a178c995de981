"""``SmsHitlNotifier``: texts a human-in-the-loop request (``ApprovalOperator``, ``HITLBranchOperator``,
``HITLEntryOperator``, ``HITLOperator``) so that it can be answered by SMS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.notifications.sms import SmsNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context

# An SMS is at most 1600 characters; the request's body is cut well before, the instructions never are.
BODY_CHARACTERS = 300


class SmsHitlNotifier(SmsNotifier):
    """
    Text a HITL request to one or more phones, each with a reply code, and let them answer by SMS.

    Use it in the ``notifiers=`` of a HITL operator. Each recipient gets the subject (and the start of the
    body), the options numbered, how to answer (``K7QX 1``), and a link to the task's page when ``[api]
    base_url`` is set. The reply code is unique among the pending requests texted to that phone, so two
    requests waiting on one phone cannot be confused. A reply goes through Twilio to this provider's inbound
    webhook, which answers the request through Airflow's own HITL API as the Airflow user the sending
    number is mapped to: ``users=`` here, else ``[twilio_sms] hitl_users``. Only a number mapped to one of
    the request's ``assigned_users`` (any mapped number when none are assigned) can answer.

    Sending is the operator's idempotent path: a notifier that runs again (the task retried before it
    parked) texts each recipient once per task instance try, with the same code.

    :param to: recipient or recipients (E.164, or national with the connection's ``default_region``).
    :param users: ``{number: airflow_user_id}`` or ``{number: {"id": ..., "name": ...}}``: who answers from
        which phone (numbers validated and normalised like ``to``).
    :param message: an extra line after the subject (templated).
    :param include_body: add the request's body (its first 300 characters).
    :param twilio_conn_id: the ``twilio_sms`` connection (its inbound webhook must point at this provider).
    :param from_: sender; default: the connection's.
    :param store_conn_id: message store connection; default ``[twilio_sms] store_conn_id``.
    """

    template_fields: Sequence[str] = ("to", "message", "twilio_conn_id", "from_", "store_conn_id")

    def __init__(
        self,
        *,
        to: str | Sequence[str],
        users: Mapping[str, Any] | None = None,
        message: str | None = None,
        include_body: bool = True,
        twilio_conn_id: str = "twilio_sms_default",
        from_: str | None = None,
        store_conn_id: str | None = None,
        **kwargs,
    ):
        super().__init__(to="", body="", twilio_conn_id=twilio_conn_id, from_=from_,
                         store_conn_id=store_conn_id, **kwargs)
        self.to = to  # type: ignore[assignment]
        self.users = users
        self.message = message
        self.include_body = include_body

    def send(self, context: Context) -> dict[str, Any]:
        """Text the request to every recipient; returns ``{"sent": [masked results]}``."""
        from airflow.providers.standard.operators.hitl import HITLOperator

        from airflow_provider_twilio_sms.hitl.codes import new_code
        from airflow_provider_twilio_sms.hitl.users import encode_users, parse_users
        from airflow_provider_twilio_sms.phone import normalize_number
        from airflow_provider_twilio_sms.store.locate import get_store

        task = context.get("task")
        ti = context.get("task_instance") or context.get("ti")
        if not isinstance(task, HITLOperator) or ti is None:
            raise TypeError("SmsHitlNotifier texts a human-in-the-loop request: use it in the notifiers= of "
                            "a HITL operator (ApprovalOperator, HITLBranchOperator, HITLEntryOperator); "
                            "SmsNotifier texts anything else")
        settings = self.hook.settings
        region = settings.default_region
        recipients = [self.to] if isinstance(self.to, str) else list(self.to)
        if not recipients:
            raise ValueError("SmsHitlNotifier needs at least one recipient in to=")
        numbers = list(dict.fromkeys(normalize_number(n, region) for n in recipients))
        users = encode_users(parse_users(self.users or {}, region, source="SmsHitlNotifier users"))
        store = get_store(self.store_conn_id)
        link = self._link(task, ti)
        sent = []
        for number in numbers:
            code = store.open_hitl_request(
                account_sid=settings.account_sid, conn_id=self.twilio_conn_id, signer=settings.signer,
                ti_id=str(ti.id), dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                map_index=_map_index(ti), to_number=number, users=users, new_code=new_code)
            sent.append(self._send_text(context, number, self.compose(task, code, link),
                                        key_scope=f"hitl:{ti.id}"))
        return {"sent": sent}

    def compose(self, task: Any, code: str, link: str | None) -> str:
        """The SMS for one recipient: subject, extra line, body, options and how to answer, link."""
        from airflow_provider_twilio_sms.hitl.answers import how_to_answer

        lines = [str(task.subject).strip()]
        if self.message:
            lines.append(str(self.message).strip())
        if self.include_body and task.body:
            body = " ".join(str(task.body).split())
            lines.append(body if len(body) <= BODY_CHARACTERS else body[: BODY_CHARACTERS - 1] + "…")
        lines.append(how_to_answer(code, list(task.options), bool(task.multiple),
                                   task.serialized_params or None))
        if link:
            lines.append(link)
        return "\n".join(line for line in lines if line)

    @staticmethod
    def _link(task: Any, ti: Any) -> str | None:
        """The task's "required actions" page, when ``[api] base_url`` is set (Airflow's own link builder)."""
        try:
            return task.generate_link_to_ui(task_instance=ti)
        except ValueError:  # no base_url
            return None


def _map_index(ti: Any) -> int:
    index = getattr(ti, "map_index", None)
    return -1 if index is None else int(index)

"""An inbound SMS that answers a human-in-the-loop request: which request, which user, what to say back.

A reply starts with a reply code (``hitl/codes.py``). Among the requests texted with that code through the
verifying account and signer (the store's rows), the one texted to the sender's own number wins; else the
one request pending under that code (a colleague answering from another phone); several pending requests
under one code and none of them the sender's is ambiguous and refused. The sender must map to an Airflow
user (the notifier's ``users=``, then ``[twilio_sms] hitl_users``), and the request is then answered as that
user through Airflow's own HITL API (:mod:`.resolve`), which checks ``assigned_users``.

A reply that carries no known code is no HITL reply: :func:`plan_reply` returns None and the webhook answers
as for any inbound message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_twilio_sms.hitl.resolve import REFUSED, HitlRequestRef, Outcome
from airflow_provider_twilio_sms.hitl.users import HitlUser, decode_users

AMBIGUOUS = Outcome("refused", "Sorry, this code is not for this phone number. Please answer from the phone "
                               "that received the request. Nothing was changed.")


@dataclass(frozen=True)
class ReplyPlan:
    """A reply to answer: the request (``request_id`` in the store), as whom, with what text; or ``outcome``
    already known without asking Airflow (a refusal, or the same reply delivered again).
    """

    request_id: int | None
    ref: HitlRequestRef | None
    user: HitlUser | None
    text: str
    outcome: Outcome | None = None


def _target(rows: Sequence[Mapping[str, Any]], sender: str) -> Mapping[str, Any] | None:
    pending = [r for r in rows if r["pending_code"]]
    mine = [r for r in rows if r["to_number"] == sender]
    if pending:
        own = [r for r in pending if r["to_number"] == sender]
        if own:
            return own[0]
        return pending[0] if len({r["ti_id"] for r in pending}) == 1 else None
    return mine[0] if mine else rows[0]


def plan_reply(rows: Sequence[Mapping[str, Any]], *, sender: str, text: str, message_sid: str,
               admin_users: Mapping[str, HitlUser]) -> ReplyPlan | None:
    """What to do with a reply whose code the store knows (``rows``: its requests, pending first)."""
    if not rows:
        return None
    target = _target(rows, sender)
    if target is None:
        return ReplyPlan(None, None, None, text, AMBIGUOUS)
    user = decode_users(target["users"]).get(sender) or admin_users.get(sender)
    if user is None:
        return ReplyPlan(None, None, None, text, REFUSED)
    if target["answer_message_sid"] and target["answer_message_sid"] == message_sid:
        # Twilio delivered this very reply again (our answer was lost): it was recorded the first time.
        return ReplyPlan(target["id"], None, user, text,
                         Outcome("answered", "Thank you: your answer is recorded."))
    ref = HitlRequestRef(ti_id=target["ti_id"], dag_id=target["dag_id"], run_id=target["run_id"],
                         task_id=target["task_id"], map_index=int(target["map_index"]))
    return ReplyPlan(target["id"], ref, user, text)

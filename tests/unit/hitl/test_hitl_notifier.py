"""What SmsHitlNotifier texts, and where it refuses to work."""

from __future__ import annotations

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLEntryOperator

from airflow_provider_twilio_sms.notifications.hitl import BODY_CHARACTERS, SmsHitlNotifier


def test_the_sms_has_subject_body_options_code_and_link():
    task = ApprovalOperator(task_id="a", subject="Deploy v2?", body="All **checks**\n  passed.")
    text = SmsHitlNotifier(to="+14155550101", message="On call: you").compose(task, "K7QX", "https://x/y")
    assert text.splitlines() == ["Deploy v2?", "On call: you", "All **checks** passed.",
                                 'Reply "K7QX 1" for Approve, "K7QX 2" for Reject.', "https://x/y"]


def test_a_long_body_is_cut_and_the_instructions_never_are():
    task = HITLEntryOperator(task_id="e", subject="Why?", body="word " * 500,
                             params={"reason": "", "count": 1})
    text = SmsHitlNotifier(to="+14155550101").compose(task, "K7QX", None)
    lines = text.splitlines()
    assert len(lines[1]) == BODY_CHARACTERS
    assert lines[1].endswith("…")
    assert lines[-1] == 'Reply "K7QX reason=...; count=...".'
    assert SmsHitlNotifier(to="x", include_body=False).compose(task, "K7QX", None).count("\n") == 1


def test_it_works_only_for_hitl_operators():
    notifier = SmsHitlNotifier(to="+14155550101")
    with pytest.raises(TypeError, match="notifiers= of a HITL operator"):
        notifier.send({"task": EmptyOperator(task_id="x"), "task_instance": object()})

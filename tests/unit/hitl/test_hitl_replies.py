"""Which request a reply answers, as whom, and what must change nothing (before Airflow is asked)."""

from __future__ import annotations

from airflow_provider_twilio_sms.hitl.answers import Answer
from airflow_provider_twilio_sms.hitl.replies import AMBIGUOUS, plan_reply
from airflow_provider_twilio_sms.hitl.resolve import (
    ALREADY_ANSWERED,
    REFUSED,
    TIMED_OUT,
    HitlSnapshot,
    decide,
)
from airflow_provider_twilio_sms.hitl.users import HitlUser

ALICE, BOB, CAROL = "+14155550101", "+14155550102", "+14155550104"
USERS = {ALICE: {"id": "alice", "name": "Alice"}, BOB: {"id": "bob", "name": "bob"}}


def row(id_, to, ti="ti-1", pending=True, answered_by=None):
    return {"id": id_, "to_number": to, "ti_id": ti, "pending_code": "K7QX" if pending else None,
            "users": USERS, "answer_message_sid": answered_by, "dag_id": "d", "run_id": "r", "task_id": "t",
            "map_index": -1}


def plan(rows, sender, admin=None, sid="SM1"):
    return plan_reply(rows, sender=sender, text="1", message_sid=sid, admin_users=admin or {})


def test_no_known_code_is_no_hitl_reply():
    assert plan([], ALICE) is None


def test_the_request_texted_to_the_sender_wins():
    got = plan([row(1, BOB, ti="ti-b"), row(2, ALICE, ti="ti-a")], ALICE)
    assert (got.request_id, got.ref.ti_id, got.outcome) == (2, "ti-a", None)
    assert got.user == HitlUser("alice", "Alice")


def test_a_colleague_may_answer_the_one_pending_request_under_a_code():
    got = plan([row(1, ALICE), row(2, BOB)], CAROL, admin={CAROL: HitlUser("carol", "carol")})
    assert got.ref.ti_id == "ti-1"
    assert got.user == HitlUser("carol", "carol")


def test_a_code_pending_for_several_requests_is_ambiguous_from_another_phone():
    got = plan([row(1, ALICE, ti="ti-a"), row(2, BOB, ti="ti-b")], CAROL, admin={CAROL: HitlUser("c", "c")})
    assert got.outcome is AMBIGUOUS


def test_an_unmapped_number_is_refused():
    assert plan([row(1, ALICE)], CAROL).outcome is REFUSED


def test_the_notifiers_mapping_comes_before_the_admins():
    got = plan([row(1, ALICE)], ALICE, admin={ALICE: HitlUser("someone-else", "x")})
    assert got.user == HitlUser("alice", "Alice")


def test_a_settled_request_is_still_found_for_a_late_reply():
    got = plan([row(1, ALICE, pending=False)], ALICE)
    assert got.ref is not None
    assert got.outcome is None  # Airflow says what happened to it


def test_the_same_reply_delivered_again_is_confirmed_without_asking_airflow():
    got = plan([row(1, ALICE, pending=False, answered_by="SM1")], ALICE, sid="SM1")
    assert got.outcome.kind == "answered"
    assert got.ref is None


def snapshot(**kw):
    base = {"options": ["Approve", "Reject"], "multiple": False, "params": {}, "assigned_ids": frozenset(),
            "response_received": False, "responded_by": None, "waiting": True}
    return HitlSnapshot(**{**base, **kw})


def test_decide_refuses_unassigned_users_before_saying_anything_else():
    alice = HitlUser("alice", "Alice")
    answered = snapshot(assigned_ids=frozenset({"bob"}), response_received=True, responded_by={"id": "bob"})
    assert decide(answered, alice, "1") is REFUSED
    by_bob = snapshot(response_received=True, responded_by={"id": "bob"})
    assert decide(by_bob, alice, "1") is ALREADY_ANSWERED
    assert decide(snapshot(response_received=True), alice, "1") is TIMED_OUT  # the timeout's defaults
    assert decide(snapshot(waiting=False), alice, "1") is TIMED_OUT
    assert decide(snapshot(), alice, "maybe").kind == "invalid"
    assert decide(snapshot(assigned_ids=frozenset({"alice"})), alice, "2") == Answer(["Reject"])

"""store/reports.py on SQLite and PostgreSQL: the delivery summary over a period, status timelines and
opt-outs, each restricted to the teams asked for."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow_provider_twilio_sms.store import reports
from airflow_provider_twilio_sms.store.claims import make_scope

ACCOUNT = "AC" + "1" * 32
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def sent(store, n: int, *, team: str | None, status: str, error_code: int | None = None,
         created: datetime = NOW, to: str = "+14155550100") -> str:
    sid = f"SM{n:032x}"
    claim = store.claim(scope=make_scope(ACCOUNT, team), idempotency_key=f"k{n}", account_sid=ACCOUNT,
                        conn_id="twilio_sms_default", to_number=to, body=f"body {n}", team=team, now=created)
    store.record_sent(claim, {"sid": sid, "status": "queued", "num_segments": 1})
    for step, value in enumerate(["sent", status] if status != "sent" else ["sent"]):
        store.record_status_event(account_sid=ACCOUNT, conn_id="twilio_sms_default", message_sid=sid,
                                  status=value, payload={"MessageStatus": value, "To": to},
                                  error_code=error_code if value == status else None, team=team,
                                  now=created + timedelta(seconds=step + 1))
    return sid


def inbound(store, n: int, *, team: str | None, body: str, from_: str = "+14155550199",
            when: datetime = NOW) -> str:
    sid = f"SM{n + 1000:032x}"
    store.record_inbound(account_sid=ACCOUNT, conn_id="twilio_sms_default", message_sid=sid,
                         from_number=from_, to_number="+15005550006", body=body, payload={"Body": body},
                         team=team, now=when)
    return sid


def test_summary_counts_rate_and_failures_by_error_code_in_the_period(store):
    sent(store, 1, team="a", status="delivered")
    sent(store, 2, team="a", status="delivered")
    sent(store, 3, team="a", status="undelivered", error_code=30003)
    sent(store, 4, team="b", status="failed", error_code=30007)
    sent(store, 5, team="b", status="sent")
    sent(store, 6, team="a", status="failed", error_code=30003, created=NOW - timedelta(days=10))  # outside
    inbound(store, 1, team="a", body="STOP")
    inbound(store, 2, team="b", body="hello")
    summary = reports.delivery_summary(store.engine, since=NOW - timedelta(days=1),
                                       until=NOW + timedelta(hours=1))
    assert summary["total"] == 5
    assert summary["delivered"] == 2
    assert summary["failed"] == 2
    assert summary["pending"] == 1
    assert summary["delivery_rate"] == 0.5
    assert summary["by_status"] == {"delivered": 2, "failed": 1, "sent": 1, "undelivered": 1}
    assert summary["failures_by_error_code"] == [
        {"error_code": 30003, "count": 1, "meaning": "the destination handset is unreachable"},
        {"error_code": 30007, "count": 1, "meaning": "the message was filtered by the carrier as spam"}]
    assert summary["inbound"] == 2
    assert summary["opt_outs"] == 1
    assert summary["opt_ins"] == 0


def test_summary_of_some_teams_leaves_the_others_out(store):
    sent(store, 1, team="a", status="delivered")
    sent(store, 2, team="b", status="failed", error_code=30007)
    sent(store, 3, team=None, status="delivered")
    inbound(store, 1, team="b", body="STOP")
    window = {"since": NOW - timedelta(days=1), "until": NOW + timedelta(hours=1)}
    only_a = reports.delivery_summary(store.engine, teams={"a", None}, **window)
    assert only_a["total"] == 2
    assert only_a["failures_by_error_code"] == []
    assert only_a["delivery_rate"] == 1.0
    assert only_a["inbound"] == 0
    assert only_a["opt_outs"] == 0
    nobody = reports.delivery_summary(store.engine, teams=set(), **window)
    assert nobody["total"] == 0
    assert nobody["delivery_rate"] is None


def test_timelines_in_arrival_order_for_many_messages_at_once(store):
    a = sent(store, 1, team="a", status="delivered")
    b = sent(store, 2, team="a", status="undelivered", error_code=30005)
    timelines = reports.status_timelines(store.engine, [a, b, "SM" + "f" * 32])
    assert [h["status"] for h in timelines[a]] == ["sent", "delivered"]
    assert [(h["status"], h["error_code"]) for h in timelines[b]] == [("sent", None), ("undelivered", 30005)]
    assert timelines["SM" + "f" * 32] == []
    assert timelines[a][0]["received_at"] < timelines[a][1]["received_at"]
    assert reports.status_timelines(store.engine, []) == {}


def test_opt_outs_carry_the_team_of_the_stop_message(store):
    inbound(store, 1, team="a", body="STOP", from_="+14155550101", when=NOW)
    inbound(store, 2, team="b", body="STOP", from_="+14155550102", when=NOW + timedelta(minutes=1))
    inbound(store, 3, team="b", body="STOP", from_="+14155550103", when=NOW + timedelta(minutes=2))
    inbound(store, 4, team="b", body="START", from_="+14155550103", when=NOW + timedelta(minutes=3))
    store.set_opt_out(ACCOUNT, "+14155550104", True)  # by hand: no inbound message, no team
    everyone = reports.opt_outs(store.engine)
    assert {r["number"]: r["team"] for r in everyone} == {
        "+14155550101": "a", "+14155550102": "b", "+14155550104": None}
    assert [r["number"] for r in reports.opt_outs(store.engine, teams={"a"})] == ["+14155550101"]
    assert {r["number"] for r in reports.opt_outs(store.engine, teams={"b", None})} == {
        "+14155550102", "+14155550104"}
    with_start = reports.opt_outs(store.engine, include_opted_in=True)
    assert {r["number"]: r["opted_out"] for r in with_start}["+14155550103"] is False

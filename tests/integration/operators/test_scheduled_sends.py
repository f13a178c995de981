"""Scheduled sends (``send_at``) on the idempotent send path, against the stand-in and a real store (SQLite
and PostgreSQL): checked before anything is claimed, recorded as scheduled, never scheduled twice, canceled
by the hook's way, and refused by Twilio with the key given back."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_twilio_sms.errors import (
    InvalidMessageError,
    MessageNotCancelableError,
    PermanentTwilioError,
)
from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
from airflow_provider_twilio_sms.operators.sms import SendSmsOperator
from airflow_provider_twilio_sms.scheduling import cancel_scheduled_message, cancel_scheduled_of_run
from airflow_provider_twilio_sms.sending import RetryPolicy, SendRequest, SmsSender
from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

TO = "+14155550123"
SERVICE = "MG" + "5" * 32


def sender(store, *, timeout=5.0, attempt_id=None):
    return SmsSender(TwilioSmsHook(timeout=timeout), store, lease_seconds=60, attempt_id=attempt_id,
                     held_poll_seconds=0.05, retry=RetryPolicy(max_attempts=3, base_seconds=0.01,
                                                                cap_seconds=0.02, sleep=lambda s: None))


def ahead(**delta) -> datetime:
    return datetime.now(timezone.utc) + timedelta(**delta)


def req(key="reminder-1", send_at=None, **kw):
    kw = {"messaging_service_sid": SERVICE, "dag_id": "dag", "task_id": "remind", "run_id": "run-1", **kw}
    return SendRequest(to=TO, body="Reminder: dentist tomorrow at 10:00", idempotency_key=key,
                       send_at=send_at or ahead(hours=20), **kw)


@pytest.fixture
def env(twilio_conn, store_conn, twilio_sim):
    return twilio_sim, store_conn


def test_schedules_through_the_service_and_records_scheduled_with_its_time(env):
    sim, store = env
    send_at = ahead(hours=20).replace(microsecond=123456)
    result = sender(store).send(req(send_at=send_at))
    expected = send_at.replace(microsecond=0)
    assert (result["status"], result["send_at"], result["already_sent"]) == (
        "scheduled", expected.isoformat(), False)
    params = sim.creates()[0]["params"]
    assert (params["ScheduleType"], params["SendAt"], params["MessagingServiceSid"]) == (
        "fixed", expected.strftime("%Y-%m-%dT%H:%M:%SZ"), SERVICE)
    assert "From" not in params  # the connection's from_number is not used: the service picks the sender
    row = store.get_message(sid=result["sid"])
    assert (row["status"], row["send_at"], row["send_state"]) == ("scheduled", expected, "sent")
    assert sim.scheduled()[0]["sid"] == result["sid"]


def test_the_connections_messaging_service_is_used_when_none_is_given(env, twilio_conn):
    sim, store = env
    twilio_conn(messaging_service_sid=SERVICE)  # from_number stays: sent-at-once messages keep using it
    result = sender(store).send(req(messaging_service_sid=None))
    assert result["status"] == "scheduled"
    assert sim.creates()[0]["params"]["MessagingServiceSid"] == SERVICE


@pytest.mark.parametrize(("send_at", "service", "words"), [
    (ahead(hours=20), None, "send_at needs a Messaging Service"),
    (ahead(minutes=10), SERVICE, "Twilio schedules only from 15 minutes to 35 days ahead"),
    (ahead(minutes=15, seconds=30), SERVICE, "Twilio schedules only from 15 minutes"),  # inside the margin
    (ahead(days=36), SERVICE, "Twilio schedules at most 35 days ahead"),
])
def test_a_bad_schedule_is_refused_before_anything_is_claimed_or_sent(env, send_at, service, words):
    sim, store = env
    with pytest.raises(InvalidMessageError, match=words) as err:
        sender(store).send(req(send_at=send_at, messaging_service_sid=service))
    assert "Nothing was sent" in str(err.value)
    assert sim.count("create") == 0
    assert store.list_messages(limit=10) == []
    # corrected, the same key schedules
    assert sender(store).send(req(send_at=ahead(hours=2)))["status"] == "scheduled"


def test_twilios_own_refusal_gives_the_key_back_for_a_corrected_retry(env, twilio_conn):
    """Twilio's clock ten minutes ahead of ours: 16 minutes ahead here is 6 at Twilio (35114)."""
    sim, store = env
    with TwilioSimulator(clock=lambda: datetime.now(timezone.utc) + timedelta(minutes=10)) as skewed:
        twilio_conn(api_base_url=skewed.base_url)
        with pytest.raises(InvalidMessageError, match="Twilio refused to schedule the message: Twilio error "
                                                      "35114") as err:
            sender(store).send(req(send_at=ahead(minutes=17)))
        assert "the idempotency key is free again" in str(err.value)
        assert skewed.count("create") == 1
        assert store.list_messages(limit=10) == []  # no row: the key is free
        result = sender(store).send(req(send_at=ahead(hours=1)))
        assert result["status"] == "scheduled"
        assert skewed.count("create") == 2
        assert len(skewed.messages()) == 1


def test_a_retry_returns_the_scheduled_message_and_never_schedules_twice(env, caplog):
    sim, store = env
    first = sender(store, attempt_id="try-1").send(req())
    again = sender(store, attempt_id="try-2").send(req())
    assert (again["sid"], again["status"], again["already_sent"]) == (first["sid"], "scheduled", True)
    assert again["send_at"] == first["send_at"]
    with caplog.at_level(logging.WARNING, logger="airflow_provider_twilio_sms.scheduling"):
        moved = sender(store, attempt_id="try-3").send(req(send_at=ahead(hours=30)))
    assert moved["sid"] == first["sid"]
    assert moved["send_at"] == first["send_at"]  # the earlier schedule stands
    assert "does not schedule a second one" in caplog.text
    assert sim.count("create") == 1


@pytest.mark.parametrize("fault", ["500_after", "reset_after"])
def test_an_unknown_outcome_finds_the_scheduled_message_instead_of_scheduling_again(env, fault):
    sim, store = env
    sim.add_fault(fault)
    result = sender(store, timeout=2.0).send(req())
    assert sim.count("create") == 1
    assert result["sid"] == sim.messages()[0]["sid"]
    assert result["status"] == "scheduled"
    assert store.get_message(sid=result["sid"])["send_at"] is not None


def test_cancel_by_key_records_canceled_and_a_retry_then_fails_clearly(env):
    sim, store = env
    sent = sender(store).send(req())
    hook = TwilioSmsHook()
    canceled = cancel_scheduled_message(hook, store, idempotency_key="reminder-1")
    assert (canceled["sid"], canceled["status"], canceled["already_canceled"]) == (
        sent["sid"], "canceled", False)
    assert canceled["send_at"] == sent["send_at"]
    assert sim.message(sent["sid"])["status"] == "canceled"
    assert store.get_message(sid=sent["sid"])["status"] == "canceled"
    assert [h["status"] for h in store.status_history(sent["sid"])] == ["canceled"]
    again = cancel_scheduled_message(hook, store, sid=sent["sid"])  # twice: harmless, says so
    assert again["already_canceled"]
    assert sim.count("update") == 1
    with pytest.raises(PermanentTwilioError, match="was canceled: nothing will be sent"):
        sender(store).send(req())
    sim.release_scheduled()
    assert sim.message(sent["sid"])["status"] == "canceled"


def test_a_message_already_sent_cannot_be_canceled_and_the_store_learns_its_status(env):
    sim, store = env
    sent = sender(store).send(req())
    sim.release_scheduled()  # its moment came
    with pytest.raises(MessageNotCancelableError, match="30409"):
        cancel_scheduled_message(TwilioSmsHook(), store, sid=sent["sid"])
    assert store.get_message(sid=sent["sid"])["status"] in ("queued", "sent", "delivered")


def test_a_key_that_was_never_sent_is_refused_with_what_to_check(env):
    _, store = env
    with pytest.raises(InvalidMessageError, match="no message was sent with this idempotency key"):
        cancel_scheduled_message(TwilioSmsHook(), store, idempotency_key="never")


def test_a_canceled_status_never_moves_back(env):
    sim, store = env
    sent = sender(store).send(req())
    cancel_scheduled_message(TwilioSmsHook(), store, sid=sent["sid"])
    store.record_status_event(account_sid=sim.account_sid, conn_id="twilio_sms_default",
                              message_sid=sent["sid"], status="delivered",
                              payload={"MessageStatus": "delivered"})
    assert store.get_message(sid=sent["sid"])["status"] == "canceled"


def test_cancel_every_message_a_run_still_has_scheduled(env):
    sim, store = env
    a = sender(store).send(req(key="a"))
    b = sender(store).send(req(key="b"))
    other_run = sender(store).send(req(key="c", run_id="run-2"))
    now = sender(store).send(SendRequest(to=TO, body="sent at once", idempotency_key="d", dag_id="dag",
                                         task_id="remind", run_id="run-1"))
    sim.release_scheduled(b["sid"])  # already on its way: cannot be canceled
    deadline = time.monotonic() + 5
    while sim.message(b["sid"])["status"] == "scheduled" and time.monotonic() < deadline:
        time.sleep(0.01)
    results = cancel_scheduled_of_run(TwilioSmsHook(), store, dag_id="dag", run_id="run-1")
    by_sid = {r["sid"]: r for r in results}
    # b is still "scheduled" in the store (no webhook here): Twilio refuses, the store learns its status
    assert set(by_sid) == {a["sid"], b["sid"]}
    assert by_sid[a["sid"]]["status"] == "canceled"
    assert "30409" in by_sid[b["sid"]]["error"]
    assert store.get_message(sid=b["sid"])["status"] != "scheduled"
    assert sim.message(other_run["sid"])["status"] == "scheduled"
    assert now["sid"] not in by_sid
    assert cancel_scheduled_of_run(TwilioSmsHook(), store, dag_id="dag", run_id="run-1") == []


def test_the_purge_keeps_a_scheduled_message_until_its_moment_has_aged(env):
    """A retention shorter than the schedule must not drop the row that keeps a retry from scheduling it
    again; once its moment is older than the cutoff it goes like any other."""
    _, store = env
    scheduled = sender(store).send(req(key="far", send_at=ahead(days=20)))
    at_once = sender(store).send(SendRequest(to=TO, body="now", idempotency_key="now"))
    later = datetime.now(timezone.utc) + timedelta(days=31)  # cutoff: a day from now; send_at 20 days away
    assert store.purge(timedelta(days=30), now=later)["twilio_sms_message"] == 1
    assert store.get_message(sid=scheduled["sid"]) is not None
    assert store.get_message(sid=at_once["sid"]) is None
    much_later = datetime.now(timezone.utc) + timedelta(days=51)  # cutoff past its send_at
    assert store.purge(timedelta(days=30), now=much_later)["twilio_sms_message"] == 1
    assert store.get_message(sid=scheduled["sid"]) is None


def _execute(op):
    """Run ``op`` as a task instance would (its first try), returning the XCom result."""
    ti = SimpleNamespace(dag_id="dag", task_id=op.task_id, run_id="run-1", map_index=-1, try_number=1)
    return op.execute({"ti": ti, "dag_run": SimpleNamespace(team_name=None)})


def _remind(**kw):
    return SendSmsOperator(task_id="remind", to=TO, body="Reminder: dentist tomorrow at 10:00",
                           messaging_service_sid=SERVICE, **kw)


def test_on_kill_cancels_the_message_this_task_scheduled(env):
    """Marked failed or cleared while it ran, after it scheduled: the task's on_kill cancels the message at
    Twilio and the store records it canceled, so nothing goes out for a task that did not finish."""
    sim, store = env
    op = _remind(send_at=ahead(hours=20).isoformat())
    scheduled = _execute(op)
    assert (scheduled["status"], sim.message(scheduled["sid"])["status"]) == ("scheduled", "scheduled")
    op.on_kill()
    assert sim.message(scheduled["sid"])["status"] == "canceled"
    assert sim.count("update") == 1
    assert store.get_message(sid=scheduled["sid"])["status"] == "canceled"
    sim.release_scheduled()  # its moment comes: nothing is sent
    assert sim.message(scheduled["sid"])["status"] == "canceled"


def test_on_kill_before_anything_was_scheduled_does_nothing(env):
    sim, store = env
    _remind(send_at=ahead(hours=20).isoformat()).on_kill()  # killed before execute ran
    refused = _remind(send_at=ahead(minutes=5).isoformat())  # refused before anything was claimed or sent
    with pytest.raises(AirflowFailException, match="Twilio schedules only from 15 minutes"):
        _execute(refused)
    refused.on_kill()
    at_once = _remind()  # sent at once: nothing left to cancel
    sent = _execute(at_once)
    at_once.on_kill()
    assert sim.count("update") == 0
    assert [r["sid"] for r in store.list_messages(limit=10)] == [sent["sid"]]
    assert store.get_message(sid=sent["sid"])["status"] != "canceled"


def test_on_kill_after_the_message_went_out_logs_and_does_not_raise(env, capfd):
    """Too late (Twilio sent it already: 30409): on_kill cannot call it back; it says how to check, with the
    SID masked, and never raises (Airflow is killing the task)."""
    sim, store = env
    op = _remind(send_at=ahead(hours=20).isoformat())
    scheduled = _execute(op)
    sim.release_scheduled()
    capfd.readouterr()
    op.on_kill()  # the task's logger writes through structlog, to the output
    logged = "".join(capfd.readouterr())
    assert sim.message(scheduled["sid"])["status"] != "canceled"
    assert store.get_message(sid=scheduled["sid"])["status"] != "scheduled"  # the store learned what it is
    assert "could not be canceled: cancel it with `airflow twilio-sms cancel" in logged
    assert scheduled["sid"] not in logged

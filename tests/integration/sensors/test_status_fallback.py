"""A status the callbacks never brought: the sensors ask Twilio (the local stand-in), shared and backing off.

The scene in every test: the send is stored, the webhook stored ``sent``, and the final callback was lost,
while Twilio (the stand-in) already knows the message was delivered. Real store (SQLite and PostgreSQL),
real HTTP to the stand-in, real triggers, and Airflow's own deferral round trip through ``dag.test()``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
from airflow_provider_twilio_sms.sending import SendRequest, SmsSender
from airflow_provider_twilio_sms.sensors.sms import SmsStatusSensor
from airflow_provider_twilio_sms.status_fallback import POLL_SOURCE
from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.claims import make_scope
from airflow_provider_twilio_sms.triggers.sms import SmsStatusTrigger, StorePoller

from conftest import dag_test

CONN = "twilio_sms_default"


def _wait_until(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _send(store, sim, key, to="+14155550123"):
    """Send through the real send path; the webhook stores ``sent``; the ``delivered`` callback is lost."""
    result = SmsSender(TwilioSmsHook(), store).send(SendRequest(to=to, body="Your order shipped",
                                                               idempotency_key=key))
    sid = result["sid"]
    store.record_status_event(account_sid=sim.account_sid, conn_id=CONN, message_sid=sid, status="sent",
                              payload={"MessageStatus": "sent"})
    return sid


def _delivered_at_twilio(sim, sids):
    _wait_until(lambda: all((sim.message(s) or {}).get("status") == "delivered" for s in sids))


def _poll_events(store, sid):
    e = t.event
    with store.engine.connect() as conn:
        rows = conn.execute(select(e.c.status, e.c.payload)
                            .where(e.c.message_sid == sid, e.c.kind == "status").order_by(e.c.id)).all()
    return [(row.status, json.loads(row.payload).get("source")) for row in rows]


def _context():
    return {"ti": SimpleNamespace(map_index=-1, xcom_pull=lambda task_ids: None),
            "dag_run": SimpleNamespace(team_name=None)}


@pytest.fixture
def env(twilio_conn, store_conn, twilio_sim):
    StorePoller._pollers.clear()
    return twilio_sim, store_conn


# --- poke (and reschedule) mode -----------------------------------------------------------------------

def test_poke_asks_twilio_when_sent_is_stored_and_the_last_callback_was_lost(env):
    sim, store = env
    sid = _send(store, sim, "k1")
    _delivered_at_twilio(sim, [sid])
    sensor = SmsStatusSensor(task_id="wait", message_sid=sid, fallback_after=0, deferrable=False)
    done = sensor.poke(_context())
    assert done.is_done
    assert done.xcom_value == {"sid": sid, "status": "delivered", "error_code": None}
    assert _poll_events(store, sid) == [("sent", None), ("delivered", POLL_SOURCE)]
    assert store.get_message(sid=sid)["status"] == "delivered"  # the store moved on for every reader


def test_a_sensor_on_another_connection_with_the_same_credentials_moves_the_message_on(env, monkeypatch):
    """The sensor asks through its own connection, not the one the message was sent with; holding the same
    Account SID and token (one signer), Twilio's answer is the sender's and ends the wait."""
    sim, store = env
    sid = _send(store, sim, "k1")
    _delivered_at_twilio(sim, [sid])
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_OPS", json.dumps({
        "conn_type": "twilio_sms", "login": sim.account_sid, "password": sim.auth_token,
        "extra": {"from_number": "+15005550006", "api_base_url": sim.base_url}}))
    sensor = SmsStatusSensor(task_id="wait", message_sid=sid, fallback_after=0, deferrable=False,
                             twilio_conn_id="twilio_sms_ops")
    done = sensor.poke(_context())
    assert done.is_done
    assert done.xcom_value["status"] == "delivered"
    assert store.get_message(sid=sid)["status"] == "delivered"


def test_poke_does_not_ask_before_fallback_after(env):
    sim, store = env
    sid = _send(store, sim, "k1")
    _delivered_at_twilio(sim, [sid])
    fetches = sim.count("fetch")
    sensor = SmsStatusSensor(task_id="wait", message_sid=sid, fallback_after=3600, deferrable=False)
    assert not sensor.poke(_context()).is_done
    assert sim.count("fetch") == fetches


def test_poke_asks_at_a_backing_off_interval_while_twilio_has_nothing_new(env):
    sim, store = env
    sim.callback_delay = 3600  # Twilio keeps the message queued: nothing ends the wait
    sid = _send(store, sim, "k1")
    sensor = SmsStatusSensor(task_id="wait", message_sid=sid, fallback_after=0, fallback_interval=0.2,
                             fallback_max_interval=0.4, deferrable=False)
    fetches, pokes = sim.count("fetch"), 0
    assert not sensor.poke(_context()).is_done  # due at once: the first ask
    assert sim.count("fetch") - fetches == 1
    started = time.monotonic()
    # At least 1.5 s and 10 pokes, however slow the machine is today.
    while (elapsed := time.monotonic() - started) < 1.5 or pokes < 10:
        assert not sensor.poke(_context()).is_done
        pokes += 1
        time.sleep(0.02)
    asks = sim.count("fetch") - fetches
    # Then due 0.2 s later, 0.4 (doubled), 0.4 (the cap) ... : never more often than every 0.2 s, and a
    # second ask came.
    assert 2 <= asks <= 1 + elapsed / 0.2 + 1, (asks, elapsed, pokes)
    if elapsed / pokes < 0.1:  # pokes came faster than the interval: most of them did not ask
        assert asks < pokes / 2, (asks, elapsed, pokes)


# --- deferred: one poller asks Twilio for every waiting trigger ------------------------------------------

def _trigger(sid, sent_at, **kw):
    return SmsStatusTrigger(message_sid=sid, success_statuses=["delivered"], failure_statuses=["failed"],
                            poll_interval=0.1, fallback_at=sent_at.isoformat(), twilio_conn_id=CONN,
                            sent_at=sent_at.isoformat(), **kw)


@pytest.mark.asyncio
async def test_waiting_triggers_share_their_twilio_requests(env):
    """40 triggers waiting on 40 messages learn from Twilio in one round of a few requests, not 40."""
    sim, store = env
    sids = await asyncio.to_thread(lambda: [_send(store, sim, f"k{i}", to=f"+1415555{i:04d}")
                                            for i in range(40)])
    await asyncio.to_thread(_delivered_at_twilio, sim, sids)
    sent_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    before = sim.count("list") + sim.count("fetch")
    runs = [_trigger(sid, sent_at).run() for sid in sids]
    events = await asyncio.wait_for(asyncio.gather(*(run.__anext__() for run in runs)), 60)
    for run in runs:
        await run.aclose()
    assert [e.payload["status"] for e in events] == ["delivered"] * 40
    assert [e.payload["sid"] for e in events] == sids
    poller = next(iter(StorePoller._pollers.values()))
    assert len(StorePoller._pollers) == 1
    assert poller.twilio_asks == 1
    assert sim.count("list") + sim.count("fetch") - before <= 2  # one page of the account's messages
    assert all(_poll_events(store, sid)[-1] == ("delivered", POLL_SOURCE) for sid in sids)


@pytest.mark.asyncio
async def test_twilio_requests_per_round_do_not_grow_with_the_waiting_triggers(env):
    """Twilio says nothing new (messages still queued there): every round's asks stay a few requests."""
    sim, store = env
    sim.callback_delay = 3600
    sids = await asyncio.to_thread(lambda: [_send(store, sim, f"k{i}", to=f"+1415555{i:04d}")
                                            for i in range(30)])
    sent_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    before = sim.count("list") + sim.count("fetch")
    tasks = [asyncio.ensure_future(_trigger(sid, sent_at, fallback_interval=0.1,
                                            fallback_max_interval=0.2).run().__anext__()) for sid in sids]
    deadline = asyncio.get_running_loop().time() + 30
    while not StorePoller._pollers or next(iter(StorePoller._pollers.values())).twilio_asks < 3:
        assert asyncio.get_running_loop().time() < deadline, "Twilio was not asked 3 times in 30 s"
        await asyncio.sleep(0.05)
    poller = next(iter(StorePoller._pollers.values()))
    asks, requests = poller.twilio_asks, sim.count("list") + sim.count("fetch") - before
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert not any(task.done() and not task.cancelled() for task in tasks)
    assert requests <= 2 * asks + 2  # a page (and a fetch budget never needed) per ask, not 30


# --- a real deferral round trip: Airflow resumes the sensor, twice ---------------------------------------

DEFERRALS: list[str] = []


class RecordingStatusSensor(SmsStatusSensor):
    """Records the method Airflow is told to resume with; everything else is the real sensor."""

    def defer(self, **kwargs):
        DEFERRALS.append(kwargs["method_name"])
        super().defer(**kwargs)


def _wait_for_deferral(method_name, timeout=60.0):
    deadline = time.monotonic() + timeout
    while method_name not in DEFERRALS and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("final", ["lost, Twilio is asked", "called back"])
def test_deferred_sensor_resumes_when_the_send_had_no_sid_yet(airflow_home, env, final):
    """The send's answer was lost (no SID stored) when the sensor defers; once it has, the ``sent``
    callback (found by the idempotency key in its URL) brings the SID. Then either the ``delivered``
    callback is lost and Twilio is asked (by the sensor, or by the triggerer once ``fallback_after`` has
    passed), or it comes while the sensor waits in the triggerer. dag.test() runs each trigger in line
    and resumes the task as Airflow does (``resume_execution`` with the trigger's event)."""
    from airflow.sdk import DAG, task

    sim, store = env
    key = "lost-answer-key"
    DEFERRALS.clear()
    asks_twilio = final.startswith("lost")

    @task
    def send_whose_answer_was_lost():
        hook = TwilioSmsHook()
        claim = store.claim(scope=make_scope(sim.account_sid), idempotency_key=key,
                            account_sid=sim.account_sid, conn_id=CONN, to_number="+14155550123",
                            from_number="+15005550006", body="hi", attempting=True)
        sid = hook.send_message("+14155550123", "hi")["sid"]
        store.record_unknown(claim)  # the answer never came back

        def webhook():  # what the webhook stores of Twilio's callbacks, in step with the sensor
            _wait_for_deferral("resume_after_wait")
            store.record_status_event(account_sid=sim.account_sid, conn_id=CONN, message_sid=sid,
                                      status="sent", payload={"MessageStatus": "sent"}, idempotency_key=key)
            if not asks_twilio:
                _wait_for_deferral("execute_complete")
                store.record_status_event(account_sid=sim.account_sid, conn_id=CONN, message_sid=sid,
                                          status="delivered", payload={"MessageStatus": "delivered"})

        threading.Thread(target=webhook, daemon=True).start()
        return {"sid": None, "idempotency_key": key, "account_sid": sim.account_sid}

    with DAG("status_fallback_round_trip", schedule=None) as dag:
        wait = RecordingStatusSensor(task_id="wait", from_task="send_whose_answer_was_lost", deferrable=True,
                                     poll_interval=0.3, fallback_after=3 if asks_twilio else None,
                                     fallback_interval=0.5, timeout=120)
        send_whose_answer_was_lost() >> wait
    run = dag_test(dag)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"send_whose_answer_was_lost": "success", "wait": "success"}, states
    assert DEFERRALS[0] == "resume_after_wait"  # deferred with no SID, resumed by Airflow
    row = store.get_message(scope=make_scope(sim.account_sid), idempotency_key=key)
    assert row["status"] == "delivered"
    if asks_twilio:
        assert _poll_events(store, row["sid"])[-1] == ("delivered", POLL_SOURCE)
    else:
        assert DEFERRALS[-1] == "execute_complete"  # and the status trigger's event resumed it


def test_a_trigger_deferred_by_an_earlier_version_still_ends(env):
    """Its ``no_callback`` event (no Twilio connection in its kwargs): the sensor asks Twilio itself."""
    sim, store = env
    sid = _send(store, sim, "k1")
    _delivered_at_twilio(sim, [sid])
    sensor = SmsStatusSensor(task_id="wait", message_sid=sid, deferrable=True)
    done = sensor.execute_complete(_context(), {"outcome": "no_callback", "sid": sid})
    assert done["status"] == "delivered"
    assert _poll_events(store, sid)[-1] == ("delivered", POLL_SOURCE)


@pytest.mark.asyncio
async def test_messages_past_the_batch_bound_are_asked_next_round_and_then_back_off(env):
    """A batch fetches at most 5 messages the pages did not show: the rest are asked in the next round,
    and each message Twilio does not have (deleted) is asked once an interval, not every round."""
    sim, store = env
    real = await asyncio.to_thread(_send, store, sim, "real")
    await asyncio.to_thread(_delivered_at_twilio, sim, [real])
    gone = [f"SM{i:032x}" for i in range(8)]
    for sid in gone:
        await asyncio.to_thread(store.record_status_event, account_sid=sim.account_sid, conn_id=CONN,
                                message_sid=sid, status="sent", payload={"MessageStatus": "sent"})
    sent_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    fetches = sim.count("fetch")
    tasks = {sid: asyncio.ensure_future(_trigger(sid, sent_at, fallback_interval=60).run().__anext__())
             for sid in [real, *gone]}
    event = await asyncio.wait_for(asyncio.shield(tasks[real]), 30)
    assert event.payload["status"] == "delivered"
    poller = next(iter(StorePoller._pollers.values()))
    deadline = asyncio.get_running_loop().time() + 30
    while sim.count("fetch") - fetches < len(gone):
        assert asyncio.get_running_loop().time() < deadline, "the rest were not asked in the next rounds"
        await asyncio.sleep(0.05)
    rounds = poller.rounds
    while poller.rounds < rounds + 5:  # noqa: ASYNC110 - the poller's round counter has no event to await
        await asyncio.sleep(0.05)
    assert sim.count("fetch") - fetches == len(gone)  # each once; the next ask is a minute away
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)

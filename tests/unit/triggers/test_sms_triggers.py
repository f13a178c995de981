"""The sensors' triggers driven to their events against a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import importlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_twilio_sms.replies import ReplyCriteria
from airflow_provider_twilio_sms.store.claims import make_scope
from airflow_provider_twilio_sms.store.inbound import InboundChannel
from airflow_provider_twilio_sms.triggers.sms import (
    REPLY_PAGE,
    SmsReplyTrigger,
    SmsStatusTrigger,
    StorePoller,
)

from reply_testing import add_history, newest_id, one_round, stop, waiting

ACCOUNT = "AC" + "4" * 32
OURS = "+15005550006"
USER = "+15557654321"
CONN = "c"


@pytest.fixture
def store_conn(store, monkeypatch):
    url = store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("AIRFLOW_CONN_TRIGGER_STORE",
                       json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": url}}))
    StorePoller._pollers.clear()
    return "trigger_store"


def _sent(store, sid):
    claim = store.claim(scope=make_scope(ACCOUNT), idempotency_key=sid, account_sid=ACCOUNT, conn_id=CONN,
                        to_number=USER, from_number=OURS, body="hi")
    store.record_sent(claim, {"sid": sid, "status": "queued"})


def _callback(store, sid, status, error_code=None):
    store.record_status_event(account_sid=ACCOUNT, conn_id=CONN, message_sid=sid, status=status,
                              payload={"MessageStatus": status}, error_code=error_code)


def _inbound(store, sid, body, frm=USER, opt=None):
    store.record_inbound(account_sid=ACCOUNT, conn_id=CONN, message_sid=sid, from_number=frm, to_number=OURS,
                         body=body, payload={"Body": body}, opt_out_type=opt)


async def _first_event(trigger, *, then=None, timeout=10):
    """Run the trigger; call ``then()`` in a thread once it is waiting; return its first event."""
    agen = trigger.run()
    task = asyncio.ensure_future(agen.__anext__())
    await asyncio.sleep(0.1)
    if then:
        await asyncio.to_thread(then)
    event = await asyncio.wait_for(task, timeout)
    await agen.aclose()
    return event.payload


@pytest.mark.parametrize("trigger", [
    SmsStatusTrigger(message_sid="SM1", success_statuses=["delivered"], failure_statuses=["failed"],
                     store_conn_id="s", poll_interval=2, fallback_at="2026-01-01T00:00:00+00:00"),
    SmsStatusTrigger(message_sid="SM1", success_statuses=["delivered"], failure_statuses=["failed"],
                     store_conn_id="s", poll_interval=2, fallback_at="2026-01-01T00:05:00+00:00",
                     twilio_conn_id="twilio_sms_qa", sent_at="2026-01-01T00:00:00+00:00",
                     fallback_interval=30, fallback_max_interval=600),
    SmsReplyTrigger(wait_id=3,
                    shape=ReplyCriteria(ACCOUNT, CONN, from_number=USER, body_pattern=r"(\d{6})").shape(),
                    after_id=7, store_conn_id="s", poll_interval=3),
])
def test_serialize_round_trips_through_json(trigger):
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)


class TestStatusTrigger:
    def _trigger(self, store_conn, sid, **kw):
        return SmsStatusTrigger(message_sid=sid, success_statuses=["delivered"],
                                failure_statuses=["failed", "undelivered"], store_conn_id=store_conn,
                                poll_interval=0.05, **kw)

    @pytest.mark.asyncio
    async def test_fires_success_when_the_callback_is_stored(self, store, store_conn):
        _sent(store, "SM" + "1" * 32)
        event = await _first_event(self._trigger(store_conn, "SM" + "1" * 32),
                                   then=lambda: _callback(store, "SM" + "1" * 32, "delivered"))
        assert event == {
            "outcome": "success",
            "sid": "SM" + "1" * 32,
            "status": "delivered",
            "error_code": None,
        }

    @pytest.mark.asyncio
    async def test_fires_failure_with_the_error_code(self, store, store_conn):
        _sent(store, "SM" + "2" * 32)
        event = await _first_event(self._trigger(store_conn, "SM" + "2" * 32),
                                   then=lambda: _callback(store, "SM" + "2" * 32, "undelivered", 30003))
        assert event["outcome"] == "failure"
        assert event["error_code"] == 30003

    @pytest.mark.asyncio
    async def test_late_sent_after_delivered_still_reads_delivered(self, store, store_conn):
        sid = "SM" + "3" * 32
        _sent(store, sid)
        _callback(store, sid, "delivered")
        _callback(store, sid, "sent")
        event = await _first_event(self._trigger(store_conn, sid))
        assert event["status"] == "delivered"

    @pytest.mark.asyncio
    async def test_a_trigger_serialized_without_a_twilio_connection_fires_no_callback(
        self, store, store_conn
    ):
        sid = "SM" + "5" * 32
        _sent(store, sid)
        past = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
        event = await _first_event(self._trigger(store_conn, sid, fallback_at=past))
        assert event == {"outcome": "no_callback", "sid": sid}


class TestReplyTrigger:
    def _trigger(self, store, store_conn, after_id=0, **criteria):
        criteria.setdefault("from_number", USER)
        wanted = ReplyCriteria(ACCOUNT, CONN, **criteria)
        return SmsReplyTrigger(wait_id=store.add_reply_wait(**wanted.parties()), shape=wanted.shape(),
                               after_id=after_id, store_conn_id=store_conn, poll_interval=0.05)

    @pytest.mark.asyncio
    async def test_matching_reply_captures_groups(self, store, store_conn):
        event = await _first_event(self._trigger(store, store_conn, body_pattern=r"code is (\d{6})"),
                                   then=lambda: (_inbound(store, "SMa", "hello"),
                                                 _inbound(store, "SMb", "Your code is 482913")))
        assert event["outcome"] == "match"
        assert event["result"]["message_sid"] == "SMb"
        assert event["result"]["body_pattern"] == r"code is (\d{6})"
        assert event["result"]["from"] == "***4321"
        # the event is stored in Airflow's database: it names the reply, never its text or code
        assert "482913" not in json.dumps(event)
        assert USER not in json.dumps(event)

    @pytest.mark.asyncio
    async def test_stop_from_the_awaited_number_ends_the_wait(self, store, store_conn):
        event = await _first_event(self._trigger(store, store_conn, keywords=("YES", "NO")),
                                   then=lambda: _inbound(store, "SMs", "STOP", opt="STOP"))
        assert event["outcome"] == "opt_out"
        assert "***4321" in event["message"]
        assert "STOP" in event["message"]

    @pytest.mark.asyncio
    async def test_messages_before_the_cursor_never_match(self, store, store_conn):
        _inbound(store, "SMold", "YES")
        cursor = store.find_inbound(account_sid=ACCOUNT, conn_id=CONN, from_number=USER)[-1]["id"]
        event = await _first_event(self._trigger(store, store_conn, after_id=cursor, keywords=("YES", "NO")),
                                   then=lambda: _inbound(store, "SMnew", "no thanks"))
        assert event["result"]["message_sid"] == "SMnew"
        assert event["result"]["keyword"] == "NO"

    @pytest.mark.asyncio
    async def test_a_reply_verified_for_another_signer_or_account_never_fires(self, store, store_conn):
        def forged_then_genuine():
            # the same account claimed by a connection with another token (another signer) ...
            store.record_inbound(account_sid=ACCOUNT, conn_id="copycat", signer="f" * 32, message_sid="SMf1",
                                 from_number=USER, to_number=OURS, body="YES", payload={})
            # ... and our connection id, but verified for another account
            store.record_inbound(account_sid="AC" + "9" * 32, conn_id=CONN, message_sid="SMf2",
                                 from_number=USER, to_number=OURS, body="YES", payload={})
            _inbound(store, "SMok", "yes")

        trigger = self._trigger(store, store_conn, keywords=("YES",))
        event = await _first_event(trigger, then=forged_then_genuine)
        assert event["result"]["message_sid"] == "SMok"

    @pytest.mark.asyncio
    async def test_a_wait_gone_from_the_store_ends_with_an_error_event(self, store, store_conn):
        trigger = self._trigger(store, store_conn, keywords=("YES",))
        store.drop_reply_wait(trigger.wait_id)
        event = await _first_event(trigger)
        assert event["outcome"] == "error"
        assert "clear the task" in event["message"]

    @pytest.mark.asyncio
    async def test_other_numbers_do_not_match(self, store, store_conn):
        trigger = self._trigger(store, store_conn, keywords=("YES",))
        event = await _first_event(trigger, then=lambda: (_inbound(store, "SMx", "YES", frm="+15550000000"),
                                                          _inbound(store, "SMy", "yes")))
        assert event["result"]["message_sid"] == "SMy"


@pytest.mark.asyncio
async def test_one_query_per_round_however_many_sensors_wait(store, store_conn):
    """200 waiting status triggers and 200 reply triggers share one poller: 2 queries per round."""
    sids = [f"SM{i:032d}" for i in range(200)]
    for sid in sids:
        _sent(store, sid)
    triggers = [SmsStatusTrigger(message_sid=sid, success_statuses=["delivered"], failure_statuses=["failed"],
                                 store_conn_id=store_conn, poll_interval=0.2) for sid in sids]
    shape = ReplyCriteria(ACCOUNT, CONN, from_number=USER, keywords=("YES",)).shape()
    triggers += [SmsReplyTrigger(wait_id=store.add_reply_wait(account_sid=ACCOUNT, conn_id=CONN,
                                                              from_number=f"+1555{i:07d}"),
                                 shape=shape, store_conn_id=store_conn, poll_interval=0.2)
                 for i in range(200)]
    tasks = [asyncio.ensure_future(t.run().__anext__()) for t in triggers]
    # Wait for rounds, not for a fixed time: a full garbage collection after a long test session can
    # pause the process for most of a second, and the property is per round anyway.
    deadline = asyncio.get_running_loop().time() + 15
    while not StorePoller._pollers or next(iter(StorePoller._pollers.values())).rounds < 3:
        assert asyncio.get_running_loop().time() < deadline, "the poller did not make 3 rounds in 15 s"
        await asyncio.sleep(0.05)
    poller = next(iter(StorePoller._pollers.values()))
    assert len(StorePoller._pollers) == 1
    assert poller.rounds >= 3
    assert poller.queries <= 2 * poller.rounds
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class TestReplyPollerRounds:
    """Rounds are driven one by one (the poller's own loop sleeps an hour): what a round answers is what it
    read, however slow the machine."""

    SERVICE = "MG" + "3" * 32
    OTHER = "+15557650000"

    def _trigger(self, store, store_conn, *, after_id=0, **criteria):
        wanted = ReplyCriteria(ACCOUNT, CONN, **criteria)
        return SmsReplyTrigger(wait_id=store.add_reply_wait(**wanted.parties()), shape=wanted.shape(),
                               after_id=after_id, store_conn_id=store_conn, poll_interval=3600)

    @pytest.mark.asyncio
    async def test_a_new_wait_sees_a_reply_in_its_first_round_whatever_the_history(self, store, store_conn):
        """20 000 earlier messages from the user to our number (through our service): a trigger starting at
        after_id=0 (as every trigger did) reads after them, not through them."""
        since = datetime.now(timezone.utc) - timedelta(minutes=30)
        add_history(store, 20_000, account_sid=ACCOUNT, conn_id=CONN, received_from=since - timedelta(days=3),
                    to_numbers=(OURS,), senders=(USER,), services=(self.SERVICE,), body="YES")
        # a YES received just before since (within the cursor's margin) never counts; the one after does,
        # though it was stored before the sensor's trigger started (the send -> reply -> late sensor race)
        store.record_inbound(account_sid=ACCOUNT, conn_id=CONN, message_sid="SMearly", from_number=USER,
                             to_number=OURS, body="YES", payload={"MessagingServiceSid": self.SERVICE},
                             now=since - timedelta(minutes=1))
        store.record_inbound(account_sid=ACCOUNT, conn_id=CONN, message_sid="SMreply", from_number=USER,
                             to_number=OURS, body="yes", payload={"MessagingServiceSid": self.SERVICE},
                             now=since + timedelta(minutes=1))
        shapes = [{"from_number": USER, "to_number": OURS}, {"from_number": USER}, {"to_number": OURS},
                  {"messaging_service_sid": self.SERVICE},
                  {"to_number": OURS, "messaging_service_sid": self.SERVICE}]
        triggers = [self._trigger(store, store_conn, keywords=("YES",), since=since, **shape)
                    for shape in shapes]
        poller, tasks = await waiting(triggers)
        try:
            await one_round(poller)
            assert all(task.done() for task in tasks)
            assert {task.result().payload["result"]["message_sid"] for task in tasks} == {"SMreply"}
            assert poller.queries == 1
        finally:
            await stop(poller, tasks)

    @pytest.mark.asyncio
    async def test_a_caught_up_wait_is_answered_in_one_round_beside_a_huge_backlog(self, store, store_conn):
        now = datetime.now(timezone.utc)
        add_history(store, 20_000, account_sid=ACCOUNT, conn_id=CONN, received_from=now - timedelta(days=1),
                    to_numbers=(OURS,))
        # Waits on every message to our number of the last two days: 20 000 to look at, a page a round.
        backlog = self._trigger(store, store_conn, to_number=OURS, keywords=("YES",),
                                since=now - timedelta(days=2))
        # The same channel (every message to our number), looked at up to the latest already.
        caught_up = self._trigger(store, store_conn, after_id=newest_id(store), to_number=OURS,
                                  keywords=("YES",), since=now)
        poller, tasks = await waiting([backlog, caught_up])
        try:
            store.record_inbound(account_sid=ACCOUNT, conn_id=CONN, message_sid="SMcaught",
                                 from_number=self.OTHER, to_number=OURS, body="YES", payload={})
            await one_round(poller)
            assert tasks[1].done()
            assert tasks[1].result().payload["result"]["message_sid"] == "SMcaught"
            assert not tasks[0].done()  # it has read one page of its backlog
            [waiter] = poller._replies
            assert waiter.cursor == store.read_inbound_channels(
                [(InboundChannel(ACCOUNT, "to_number", OURS), 0)], page=REPLY_PAGE)[0][-1]["id"]
        finally:
            await stop(poller, tasks)

    @pytest.mark.asyncio
    async def test_with_two_channels_the_first_match_in_id_order_wins(self, store, store_conn, monkeypatch):
        """To our number or through our service: with pages of two, the to-channel's page ends before the
        service's YES, and the to-channel's own YES (earlier) must win."""
        monkeypatch.setattr("airflow_provider_twilio_sms.triggers.sms.REPLY_PAGE", 2)
        for sid in ("SMt1", "SMt2"):
            _inbound(store, sid, "no")
        _inbound(store, "SMt3", "YES")
        store.record_inbound(account_sid=ACCOUNT, conn_id=CONN, message_sid="SMs1", from_number=USER,
                             to_number=self.OTHER, body="YES", payload={"MessagingServiceSid": self.SERVICE})
        trigger = self._trigger(store, store_conn, to_number=OURS, messaging_service_sid=self.SERVICE,
                                keywords=("YES",))
        poller, tasks = await waiting([trigger])
        try:
            await one_round(poller)
            assert not tasks[0].done()  # SMt3 is not read yet: SMs1 must wait for it
            await one_round(poller)
            assert tasks[0].result().payload["result"]["message_sid"] == "SMt3"
        finally:
            await stop(poller, tasks)

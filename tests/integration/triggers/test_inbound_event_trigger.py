"""``SmsInboundEventTrigger`` against real stores (SQLite and PostgreSQL): what fires, what never does, one
event per message with two triggers racing, and a restart that resumes where the last run stopped."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import BaseEventTrigger
from sqlalchemy import insert

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.triggers.inbound_events import SmsInboundEventTrigger

from inbound_watch_testing import (
    ACCOUNT,
    CONN_ID,
    OURS,
    THEM,
    Running,
    events_of,
    fired,
    inbound,
    no_event,
    opened,
    signer_of,
    until,
    use_twilio_connection,
)

FAST = 0.05


@pytest.fixture
def store(store_conn, monkeypatch):
    use_twilio_connection(monkeypatch)
    return store_conn


def watcher(**kwargs) -> SmsInboundEventTrigger:
    return SmsInboundEventTrigger(**{"to_number": OURS, "poll_interval": FAST, **kwargs})


def test_it_is_an_event_trigger_that_an_asset_watcher_takes_and_round_trips():
    trigger = watcher(keyword="deploy")
    assert isinstance(trigger, BaseEventTrigger)
    Asset("sms_deploys", watchers=[AssetWatcher(name="sms_deploy", trigger=trigger)])
    classpath, kwargs = trigger.serialize()
    again = SmsInboundEventTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert again.watch_key() == trigger.watch_key()
    assert watcher(keyword="deploy", poll_interval=1).watch_key() != trigger.watch_key()
    assert OURS not in repr(trigger)  # Airflow logs triggers by their repr


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"to_number": None}, "needs to_number"),
    ({"keyword": "deploy", "pattern": "x"}, "not both"),
    ({"keyword": "two words"}, "one word"),
    ({"pattern": "("}, "not a valid regular expression"),
    ({"since": "yesterday"}, "ISO 8601"),
    ({"messaging_service_sid": "MG1"}, "MG followed by 32"),
    ({"poll_interval": 0}, "positive"),
])
def test_bad_arguments_are_refused_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        watcher(**kwargs)


def test_matching_messages_fire_with_their_sid_and_groups_and_nothing_personal(store):
    def arrive():
        inbound(store, "hello there")  # no match
        sid = inbound(store, "Deploy billing 42")
        inbound(store, "deploy billing 42", to="+15005550007")  # to another number of ours
        return sid

    events, sid = fired(store, watcher(pattern=r"^deploy (?P<service>\w+) (\d+)$"), arrive, 1)
    [payload] = events
    assert payload["message_sid"] == sid
    assert payload["groups"] == ["billing", "42"]
    assert payload["named_groups"] == {"service": "billing"}
    assert payload["from"] == "***" + THEM[-4:]
    assert THEM not in json.dumps(payload)
    assert "Deploy billing 42" not in json.dumps(payload)
    assert "body" not in payload


def test_keywords_and_the_opt_in_to_body_and_sender(store):
    def arrive():
        inbound(store, "maybe")
        inbound(store, "STOP")  # an opt-out never fires, whatever the keywords
        return inbound(store, "OK, go ahead")

    trigger = watcher(keyword=["yes", "ok"], include_body=True, include_from_number=True)
    events, sid = fired(store, trigger, arrive, 1)
    [payload] = events
    assert (payload["message_sid"], payload["keyword"]) == (sid, "ok")
    assert payload["body"] == "OK, go ahead"
    assert payload["from_number"] == THEM


def test_a_new_watcher_starts_from_now_unless_since_says_otherwise(store):
    old = inbound(store, "deploy")

    async def scenario():
        assert await asyncio.wait_for(no_event(watcher(keyword="deploy")), 30) is None
        since = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
        return await events_of(watcher(keyword="deploy", since=since), 1)

    [payload] = asyncio.run(scenario())
    assert payload["message_sid"] == old


def test_only_messages_verified_for_the_connections_account_and_signer_fire(store):
    """An event verified by another connection with another token (a copied Account SID), or for
    another account, never fires; another connection of the same signer (same token) does."""

    def arrive():
        inbound(store, "deploy", conn_id="twilio_sms_copy", token="a-token-of-their-own")
        inbound(store, "deploy", account="AC" + "9" * 32, conn_id="other_account")
        return {inbound(store, "deploy", conn_id="twilio_sms_second"), inbound(store, "deploy")}

    events, expected = fired(store, watcher(keyword="deploy"), arrive, 2)
    assert {e["message_sid"] for e in events} == expected
    assert len(events) == 2


def test_two_triggers_running_the_same_watcher_emit_each_message_once(store):
    """Two triggerers running one watcher: they read the same messages while messages keep arriving, and
    every message is emitted once, by one of them, in order."""
    count = 60

    async def scenario():
        first, second = watcher(keyword="deploy"), watcher(keyword="deploy")
        assert first.watch_key() == second.watch_key()
        runs = [Running(first), Running(second)]
        await opened(store, first)
        sids: list[str] = []

        def arrive():
            for i in range(count):
                sids.append(inbound(store, "deploy" if i % 3 else "nope"))

        sender = threading.Thread(target=arrive)
        sender.start()
        await asyncio.to_thread(sender.join)
        wanted = [sid for i, sid in enumerate(sids) if i % 3]
        await until(lambda: sum(len(r.events) for r in runs) >= len(wanted), what="every event")
        await asyncio.sleep(FAST * 10)  # and nothing more
        for run in runs:
            await run.stop()
        return runs, wanted

    runs, wanted = asyncio.run(scenario())
    emitted = [e["message_sid"] for run in runs for e in run.events]
    assert sorted(emitted) == sorted(wanted)  # each once: no duplicate, no gap
    for run in runs:
        ids = [e["event_id"] for e in run.events]
        assert ids == sorted(ids)
    assert store.event_watch_cursor(runs[0].trigger.watch_key())[0] >= max(
        e["event_id"] for run in runs for e in run.events)


def test_a_restarted_watcher_resumes_without_duplicates_or_gaps(store):
    async def scenario():
        trigger = watcher(keyword="deploy")
        first = Running(trigger)
        await opened(store, trigger)
        before = [inbound(store, "deploy") for _ in range(3)]
        await until(lambda: len(first.events) == 3, what="three events")
        await first.stop()  # the triggerer stops...
        during = [inbound(store, "deploy") for _ in range(2)]  # ...messages arrive while it is down...
        again = SmsInboundEventTrigger(**trigger.serialize()[1])  # ...and it starts from its kwargs again
        second = Running(again)
        await until(lambda: len(second.events) == 2, what="two events")
        after = inbound(store, "deploy")
        await until(lambda: len(second.events) == 3, what="the third event")
        await asyncio.sleep(FAST * 5)
        await second.stop()
        return first.events, second.events, before, [*during, after]

    first, second, before, later = asyncio.run(scenario())
    assert [e["message_sid"] for e in first] == before
    assert [e["message_sid"] for e in second] == later


# PostgreSQL only: SQLite writers take turns, so rows become visible in id order there.
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_message_is_not_passed_while_an_insert_below_it_is_in_flight(store):
    """PostgreSQL hands out ids as rows are inserted and commits them in any order: while the message
    with the lower id is not committed, the later one waits, then both fire, in id order."""

    async def scenario():
        trigger = watcher(keyword="deploy")
        running = Running(trigger)
        await opened(store, trigger)
        slow = store.engine.connect()
        held = slow.begin()
        slow.execute(insert(t.event).values(
            kind="inbound", account_sid=ACCOUNT, conn_id=CONN_ID, signer=signer_of(),
            dedupe_key="inbound:SMslow", message_sid="SM" + "a" * 32, status="received", from_number=THEM,
            to_number=OURS, body="deploy", received_at=datetime.now(timezone.utc), payload="{}"))
        later = inbound(store, "deploy")
        await asyncio.sleep(FAST * 20)
        waited = list(running.events)
        held.commit()
        slow.close()
        await until(lambda: len(running.events) == 2, what="both events")
        await running.stop()
        return waited, running.events, later

    waited, events, later = asyncio.run(scenario())
    assert waited == []
    assert [e["message_sid"] for e in events] == ["SM" + "a" * 32, later]


def test_a_trigger_cancelled_while_passing_a_message_leaves_it_for_the_next_run(store, monkeypatch):
    """The triggerer stops (or hands the watcher over) while the trigger moves its cursor past a message:
    no event was yielded, so the move is undone and the next run emits the message."""
    from airflow_provider_twilio_sms.store.api import SmsStore

    real = SmsStore.advance_event_watch
    moving = threading.Event()

    def slow(self, *args, **kwargs):
        moved = real(self, *args, **kwargs)
        moving.set()
        time.sleep(0.5)  # the answer is on its way when the trigger is cancelled
        return moved

    async def scenario():
        trigger = watcher(keyword="deploy")
        running = Running(trigger)
        start = await opened(store, trigger)
        monkeypatch.setattr(SmsStore, "advance_event_watch", slow)
        sid = inbound(store, "deploy")
        assert await asyncio.to_thread(moving.wait, 30)
        await running.stop()
        monkeypatch.setattr(SmsStore, "advance_event_watch", real)
        assert running.events == []
        assert store.event_watch_cursor(trigger.watch_key())[0] == start
        return sid, await events_of(SmsInboundEventTrigger(**trigger.serialize()[1]), 1)

    sid, [payload] = asyncio.run(scenario())
    assert payload["message_sid"] == sid


def test_a_move_whose_answer_is_lost_is_looked_up_and_its_event_yielded_once(store, monkeypatch):
    """The store moved the cursor, then the answer was lost (the call's deadline passed): the trigger reads
    who moved it, finds itself, and yields the event, once."""
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.deadline import StoreDeadlineExceeded

    real = SmsStore.advance_event_watch
    lost = []

    def answer_lost(self, *args, **kwargs):
        moved = real(self, *args, **kwargs)
        if not lost:
            lost.append(moved)
            raise StoreDeadlineExceeded("the store did not answer within 10 s")
        return moved

    monkeypatch.setattr(SmsStore, "advance_event_watch", answer_lost)
    events, sids = fired(store, watcher(keyword="deploy"),
                         lambda: [inbound(store, "deploy"), inbound(store, "deploy")], 2)
    assert lost == [True]
    assert [e["message_sid"] for e in events] == sids


def test_a_missing_connection_is_waited_for_not_fatal(store, monkeypatch):
    """The watcher starts before its Twilio connection exists (or while the secrets backend is down): it
    logs, waits and tries again, and fires once the connection is there."""
    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}")

    async def scenario():
        trigger = watcher(keyword="deploy")
        running = Running(trigger)
        await asyncio.sleep(FAST * 10)
        assert store.event_watch_cursor(trigger.watch_key()) is None
        use_twilio_connection(monkeypatch)
        await opened(store, trigger)
        sid = inbound(store, "deploy")
        await until(lambda: running.events, what="the event")
        await running.stop()
        return sid, running.events

    sid, [payload] = asyncio.run(scenario())
    assert payload["message_sid"] == sid


def test_a_busy_numbers_recent_messages_are_passed_a_page_a_round(store):
    """More recent non-matching messages than a page, then a match: each round passes a page (no hole below
    them), so the match fires in the next round instead of after SETTLE_AFTER."""
    from airflow_provider_twilio_sms.triggers.inbound_events import PAGE

    async def scenario():
        trigger = watcher(keyword="deploy")
        store_, criteria, cursor = await trigger._open()
        for _ in range(PAGE + 20):
            inbound(store, "chatter")
        sid = inbound(store, "deploy")
        rounds = []
        for _ in range(2):
            found = [(event, moved) async for event, moved in trigger._round(store_, criteria,
                                                                             trigger.watch_key(), cursor)]
            cursor = found[-1][1] if found else cursor
            rounds.append([event.payload["message_sid"] for event, _ in found if event is not None])
        return rounds, sid

    rounds, sid = asyncio.run(scenario())
    assert rounds == [[], [sid]]

"""SmsStore.purge and SmsStore.forget_number on SQLite and PostgreSQL: exactly the old finished rows go,
in bounded batches through indexes; one person is erased and their STOP still refuses the next send."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.claims import make_scope
from airflow_provider_twilio_sms.store.retention import (
    DEFAULT_BATCH_SIZE,
    PURGED_TABLES,
    RATE_POOL_IDLE_FLOOR,
    purge_statements,
)

from retention_rows import ACCOUNT, CONN_ID, OTHER, OURS, THEM, Rows

DAYS_30 = timedelta(days=30)


@pytest.fixture
def rows(store):
    return Rows(store)


def _purge(store, rows, older_than=DAYS_30, **kw):
    return store.purge(older_than, now=rows.now, **kw)


class TestPurge:
    def test_deletes_exactly_the_old_finished_rows_and_nothing_live_or_recent(self, store, rows):
        old, recent = rows.ago(days=40), rows.ago(days=5)
        gone_messages = {rows.message(created=old), rows.message(created=old, state="failed"),
                         rows.message(created=old, state="unknown", sid=None)}
        kept_messages = {
            rows.message(created=old, state="claimed", lease=old),  # a dead attempt: its retry reconciles
            rows.message(created=old, state="claimed", lease=rows.ago(minutes=-1)),  # live
            rows.message(created=old, state="unknown", lease=rows.ago(minutes=-1)),  # lease not over
            rows.message(created=old, updated=recent),  # changed since the cutoff
            rows.message(created=recent),
        }
        late = rows.message(created=old)  # a callback arrived since the cutoff: kept, with it
        gone_events = {rows.event(received=old, message_id=m) for m in [*gone_messages, late]}
        gone_events |= {rows.inbound(received=old, body="YES 1234"), rows.event(received=old)}  # unlinked
        kept_events = {rows.event(received=recent, message_id=late), rows.inbound(received=recent)}
        kept_messages.add(late)
        rows.reply_wait(created=old)
        kept_waits = {rows.reply_wait(created=recent)}
        rows.opt_out(THEM, updated=rows.ago(days=400))
        rows.opt_out(OTHER, opted_out=False, updated=rows.ago(days=400))

        counts = _purge(store, rows)

        assert counts == {"twilio_sms_event": len(gone_events), "twilio_sms_message": len(gone_messages),
                          "twilio_sms_reply_wait": 1, "twilio_sms_hitl_request": 0, "twilio_sms_rate_slot": 0,
                          "twilio_sms_rate_pool": 0}
        assert list(counts) == list(PURGED_TABLES)
        assert rows.keys(t.message) == kept_messages
        assert rows.keys(t.event) == kept_events
        assert rows.keys(t.reply_wait) == kept_waits
        assert rows.count(t.opt_out) == 2  # opt-outs are never purged
        # The event kept for the message kept still points at it.
        with store.engine.connect() as conn:
            linked = conn.execute(select(t.event.c.message_id).where(t.event.c.id.in_(kept_events))).scalars()
            assert sorted(linked, key=str) == sorted([late, None], key=str)
        assert _purge(store, rows) == dict.fromkeys(PURGED_TABLES, 0)

    def test_an_old_message_and_its_old_events_go_together(self, store, rows):
        """No event is left with its message_id cleared by the foreign key (ON DELETE SET NULL)."""
        old = rows.ago(days=31)
        for _ in range(5):
            message = rows.message(created=old)
            for _ in range(3):
                rows.event(received=old + timedelta(minutes=1), message_id=message)
        rows.event(received=rows.ago(days=1), message_id=rows.message(created=rows.ago(days=1)))
        assert _purge(store, rows, batch_size=2) == {**dict.fromkeys(PURGED_TABLES, 0),
                                                     "twilio_sms_event": 15, "twilio_sms_message": 5}
        with store.engine.connect() as conn:
            assert conn.execute(select(t.event.c.message_id)).scalars().all() == list(rows.keys(t.message))

    @pytest.mark.parametrize("dry_run", [False, True])
    def test_many_rows_in_small_batches_are_counted_right(self, store, rows, dry_run):
        """Batches of 7 through 120 old messages (every third one a claim that stays, so whole pages keep
        nothing), 120 old events, 40 of them at one identical moment (the keyset breaks ties by id), and
        rows since the cutoff. A dry run walks the same pages and counts the same, deleting nothing."""
        old, recent = rows.ago(days=45), rows.ago(days=2)
        for i in range(120):
            rows.message(created=old + timedelta(seconds=i // 3), state="claimed" if i % 3 == 0 else "sent",
                         lease=old)
        for i in range(120):
            rows.event(received=old if i < 40 else old + timedelta(seconds=i))
        rows.messages(10, created=recent)
        for _ in range(10):
            rows.event(received=recent)
        before = rows.counts()
        counts = _purge(store, rows, batch_size=7, dry_run=dry_run)
        assert counts == {**dict.fromkeys(PURGED_TABLES, 0), "twilio_sms_event": 120,
                          "twilio_sms_message": 80}
        if dry_run:
            assert rows.counts() == before
        else:
            assert rows.count(t.message) == 40 + 10
            assert rows.count(t.event) == 10

    def test_a_dry_run_counts_what_the_purge_then_deletes_and_deletes_nothing(self, store, rows):
        old = rows.ago(days=60)
        message = rows.message(created=old)
        rows.event(received=old, message_id=message)
        rows.message(created=old, state="claimed", lease=old)
        rows.reply_wait(created=old)
        rows.pool("pool:idle", updated=old, slots=[old, old])
        before, dump = rows.counts(), rows.dump()
        predicted = _purge(store, rows, dry_run=True)
        assert rows.counts() == before
        assert rows.dump() == dump
        assert predicted == _purge(store, rows)
        assert predicted == {"twilio_sms_event": 1, "twilio_sms_message": 1, "twilio_sms_reply_wait": 1,
                             "twilio_sms_hitl_request": 0, "twilio_sms_rate_slot": 2,
                             "twilio_sms_rate_pool": 1}

    def test_rate_limit_pools_go_only_once_idle_past_the_longest_window(self, store, rows):
        """A purge with a short age still keeps the pools used within RATE_POOL_IDLE_FLOOR; a pool idle
        longer goes with its slots; a pool used since keeps a slot that still counts, and loses only the
        slots that no window can count."""
        floor = RATE_POOL_IDLE_FLOOR
        idle, recently = rows.ago(days=floor.days + 9), rows.ago(days=floor.days - 9)
        rows.pool("pool:idle", updated=idle, slots=[idle] * 4)
        rows.pool("team:used_last_week", updated=recently, slots=[recently] * 3)
        rows.pool("pool:busy", updated=rows.ago(minutes=1), slots=[idle, rows.ago(minutes=1)])
        rows.pool("pool:raced", updated=idle, slots=[idle, rows.ago(minutes=1)])  # a grant since the page
        counts = _purge(store, rows, older_than=timedelta(days=1))
        assert (counts["twilio_sms_rate_pool"], counts["twilio_sms_rate_slot"]) == (1, 5)
        assert rows.keys(t.rate_pool) == {"team:used_last_week", "pool:busy", "pool:raced"}
        assert rows.keys(t.rate_slot) == {("team:used_last_week", 0), ("team:used_last_week", 1),
                                          ("team:used_last_week", 2), ("pool:busy", 0), ("pool:busy", 1),
                                          ("pool:raced", 1)}

    def test_a_purged_pool_is_created_again_on_its_next_use(self, store, rows):
        old = rows.ago(days=90)
        rows.pool("pool:qa", updated=old, slots=[old])
        _purge(store, rows)
        assert rows.keys(t.rate_pool) == set()
        assert store.acquire_rate_slot("pool:qa", 1, 60).granted
        assert not store.acquire_rate_slot("pool:qa", 1, 60).granted

    @pytest.mark.parametrize(("older_than", "batch_size", "error"), [
        (timedelta(0), 10, "positive timedelta"),
        (timedelta(days=-1), 10, "positive timedelta"),
        (30, 10, "positive timedelta"),
        (DAYS_30, 0, "from 1 to 10000"),
        (DAYS_30, 10_001, "from 1 to 10000"),
    ])
    def test_bad_arguments_are_refused_before_anything_is_deleted(self, store, rows, older_than, batch_size,
                                                                 error):
        rows.message(created=rows.ago(days=90))
        with pytest.raises(ValueError, match=error):
            store.purge(older_than, batch_size=batch_size)
        assert rows.count(t.message) == 1


def _plan(store, statement, values) -> str:
    """The database's plan for ``statement`` with ``values``, as text. psycopg2 sends values inlined, so
    the literal form is what PostgreSQL plans; SQLite plans this form as it plans the bound one.
    """
    sql = str(statement.params(**values).compile(
        dialect=store.engine.dialect, compile_kwargs={"literal_binds": True, "render_postcompile": True}))
    explain = "EXPLAIN " if store.dialect == "postgresql" else "EXPLAIN QUERY PLAN "
    with store.engine.connect() as conn:
        plan = conn.exec_driver_sql(explain + sql.replace("%", "%%")).all()
    return "\n".join(" ".join(map(str, row)) for row in plan)


def test_each_batch_is_selected_through_an_index(store, rows):
    """With 20 000 messages and 20 000 events (half of each older than the cutoff), analysed, a batch of
    5 000 is read in index order through the timestamp indexes, never by scanning a table."""
    moments = [rows.ago(days=60) + timedelta(seconds=259 * i) for i in range(20_000)]
    with store.engine.begin() as conn:
        conn.execute(t.message.insert(), [rows.message_values(created=moment) for moment in moments])
        conn.execute(t.event.insert(), [rows.event_values(received=moment) for moment in moments])
    with store.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    sql = purge_statements()
    values = {"p_cutoff": rows.ago(days=30), "p_now": rows.now, "p_limit": DEFAULT_BATCH_SIZE,
              **sql.events.start}
    # A message's last event is looked up through the events' message_id index, for the page's rows only.
    for sweep, indexes in ((sql.events, ["ix_twilio_sms_event_received"]),
                           (sql.messages, ["ix_twilio_sms_message_created_report",
                                           "ix_twilio_sms_event_message_id"])):
        plan = _plan(store, sweep.page, values)
        assert all(index in plan for index in indexes), plan
        assert not re.search(r"Seq Scan|\bSCAN twilio_sms", plan), plan
    old = sum(moment < values["p_cutoff"] for moment in moments)
    assert 9_000 < old < 11_000
    assert _purge(store, rows) == {**dict.fromkeys(PURGED_TABLES, 0), "twilio_sms_event": old,
                                   "twilio_sms_message": old}


class TestForget:
    def _person(self, store, rows):
        """THEM: two messages with status callbacks, one of them unlinked (another connection verified
        it), replies, a STOP, a reply wait; a callback about a message sent elsewhere. OTHER: the same."""
        for number in (THEM, OTHER):
            for n in range(2):
                created = rows.ago(days=3 - n)
                message = rows.message(created=created, to=number)
                sid = store.get_message(message_id=message)["sid"]
                rows.event(received=created, message_id=message, message_sid=sid, to=number)
                rows.event(received=created, message_sid=sid, to=number)  # unlinked, same SID
            rows.event(received=rows.ago(days=1), to=number)  # a message sent elsewhere
            rows.inbound(received=rows.ago(hours=5), from_=number, body=f"Reply from {number}")
            store.record_inbound(account_sid=ACCOUNT, conn_id=CONN_ID, message_sid="SM" + number[-8:] * 4,
                                 from_number=number, to_number=OURS, body="STOP",
                                 payload={"From": number, "To": OURS, "Body": "STOP"})
            rows.reply_wait(created=rows.ago(hours=1), from_=number)

    def test_erases_everything_about_the_number_and_keeps_its_stop(self, store, rows):
        self._person(store, rows)
        others = rows.dump().count(OTHER)
        before = rows.counts()
        erased = store.forget_number(THEM)
        assert erased.deleted == {"twilio_sms_event": 7, "twilio_sms_message": 2, "twilio_sms_reply_wait": 1,
                                  "twilio_sms_hitl_request": 0, "twilio_sms_opt_out": 0}
        assert (erased.opt_outs_kept, erased.live_claims_kept) == (1, 0)
        after = rows.counts()
        assert after["twilio_sms_event"] == before["twilio_sms_event"] - 7
        dump = rows.dump()
        # Of THEM, only the opt-out row is left, with nothing but what refuses a send.
        [line] = [line for line in dump.splitlines() if THEM[-7:] in line]
        assert line.startswith("twilio_sms_opt_out ")
        for kept in ("'keyword': None", "'message_sid': None", "'opted_out': True"):
            assert kept in line
        assert dump.count(OTHER) == others  # nobody else lost anything
        assert store.is_opted_out(ACCOUNT, THEM)
        refused = store.claim(scope=make_scope(ACCOUNT), idempotency_key="after-forget", account_sid=ACCOUNT,
                              conn_id=CONN_ID, to_number=THEM, body="hello again", refuse_opted_out=True)
        assert refused.outcome == "opted_out"

    def test_an_id_a_reader_has_seen_is_never_handed_out_again(self, store, rows):
        """The reply sensors and asset watchers read events after an id they have seen: once the newest
        events and reply waits are erased, the next ones still get larger ids (SQLite too, migration 0013)."""
        rows.inbound(received=rows.ago(hours=2), from_=OTHER)
        newest_event = rows.inbound(received=rows.ago(hours=1), from_=THEM)
        newest_wait = rows.reply_wait(created=rows.ago(hours=1), from_=THEM)
        store.forget_number(THEM)
        assert rows.inbound(received=rows.now, from_=OTHER) > newest_event
        assert rows.reply_wait(created=rows.now, from_=OTHER) > newest_wait

    def test_a_dry_run_counts_what_forget_then_erases_and_erases_nothing(self, store, rows):
        self._person(store, rows)
        dump = rows.dump()
        predicted = store.forget_number(THEM, dry_run=True)
        assert rows.dump() == dump
        assert predicted == store.forget_number(THEM)

    def test_opt_in_history_goes_and_a_send_in_flight_is_left_to_finish(self, store, rows):
        rows.opt_out(THEM, opted_out=False, keyword="START")
        rows.opt_out(THEM, opted_out=True, signer="a" * 32)
        live = rows.message(created=rows.now, state="claimed", lease=rows.ago(minutes=-2))
        rows.message(created=rows.ago(days=1), state="claimed", lease=rows.ago(days=1))  # a dead attempt
        erased = store.forget_number(THEM, batch_size=1)
        assert erased.deleted["twilio_sms_opt_out"] == 1
        assert erased.deleted["twilio_sms_message"] == 1
        assert (erased.opt_outs_kept, erased.live_claims_kept) == (1, 1)
        assert rows.keys(t.message) == {live}
        assert rows.keys(t.opt_out) == {(ACCOUNT, "a" * 32, THEM)}

    def test_many_rows_of_one_number_in_small_batches(self, store, rows):
        rows.messages(23, created=rows.ago(days=2))
        for message in sorted(rows.keys(t.message)):
            rows.event(received=rows.ago(days=1), message_id=message,
                       message_sid=store.get_message(message_id=message)["sid"])
        for _ in range(11):
            rows.inbound(received=rows.ago(hours=2))
        erased = store.forget_number(THEM, batch_size=4)
        assert erased.deleted == {"twilio_sms_event": 34, "twilio_sms_message": 23,
                                  "twilio_sms_reply_wait": 0, "twilio_sms_hitl_request": 0,
                                  "twilio_sms_opt_out": 0}
        assert rows.counts() == dict.fromkeys(rows.counts(), 0)


def _hitl_request(store, ti_id, to, created, users=None):
    store.open_hitl_request(account_sid=ACCOUNT, conn_id=CONN_ID, signer=None, ti_id=ti_id, dag_id="d",
                            run_id="r", task_id="t", map_index=-1, to_number=to,
                            users=users or {to: {"id": "u", "name": "u"}},
                            new_code=lambda: ti_id[-4:].upper(),
                            now=created)


def test_purge_and_forget_cover_human_in_the_loop_reply_codes(store, rows):
    _hitl_request(store, "ti-aaaa", THEM, rows.ago(days=40))
    _hitl_request(store, "ti-bbbb", THEM, rows.ago(days=2))
    both = {THEM: {"id": "them", "name": "them"}, OTHER: {"id": "other", "name": "other"}}
    _hitl_request(store, "ti-cccc", OTHER, rows.ago(days=2), users=both)
    assert _purge(store, rows, dry_run=True)["twilio_sms_hitl_request"] == 1
    assert _purge(store, rows)["twilio_sms_hitl_request"] == 1
    assert store.forget_number(THEM, dry_run=True).deleted["twilio_sms_hitl_request"] == 1
    assert store.forget_number(THEM).deleted["twilio_sms_hitl_request"] == 1
    dump = rows.dump()
    assert THEM not in dump  # nor in the mapping kept with OTHER's request
    (left,) = store.hitl_requests_by_code(account_sid=ACCOUNT, conn_id=CONN_ID, signer=None, code="CCCC")
    assert left["users"] == {OTHER: {"id": "other", "name": "other"}}

"""The reads waiting reply sensors make (store/inbound.py), against a real store (SQLite and PostgreSQL):
each channel from its own cursor, and where a sensor's reading starts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_twilio_sms.store.inbound import CURSOR_MARGIN, InboundChannel

ACCOUNT = "AC" + "6" * 32
OTHER_ACCOUNT = "AC" + "7" * 32
OURS, SECOND = "+15005550006", "+15005550007"
ALICE, BOB = "+15557654321", "+15557650000"
SERVICE = "MG" + "2" * 32


def _inbound(store, sid, frm, to=OURS, *, account=ACCOUNT, service=None, now=None):
    payload = {"MessagingServiceSid": service} if service else {}
    store.record_inbound(account_sid=account, conn_id="c", message_sid=sid, from_number=frm, to_number=to,
                         body="hi", payload=payload, now=now)
    return store.get_inbound(sid)["id"]


def _sids(page):
    return [row["message_sid"] for row in page]


class TestReadInboundChannels:
    def test_each_read_starts_at_its_own_cursor_and_keeps_to_its_channel(self, store):
        a1 = _inbound(store, "SMa1", ALICE)
        _inbound(store, "SMb1", BOB)
        _inbound(store, "SMa2", ALICE, to=SECOND)
        _inbound(store, "SMs1", BOB, service=SERVICE)
        _inbound(store, "SMx1", ALICE, account=OTHER_ACCOUNT)
        store.record_status_event(account_sid=ACCOUNT, conn_id="c", message_sid="SMa1", status="delivered",
                                  payload={"From": ALICE, "To": OURS})
        alice = InboundChannel(ACCOUNT, "from_number", ALICE)
        pages = store.read_inbound_channels([
            (alice, 0),
            (alice, a1),  # the same channel from another cursor: a read of its own
            (InboundChannel(ACCOUNT, "from_number", ALICE, to_number=OURS), 0),
            (InboundChannel(ACCOUNT, "to_number", OURS), 0),
            (InboundChannel(ACCOUNT, "messaging_service_sid", SERVICE), 0),
            (InboundChannel(ACCOUNT, "from_number", BOB, messaging_service_sid=SERVICE), 0),
        ], page=10)
        assert [_sids(page) for page in pages] == [
            ["SMa1", "SMa2"],  # never another account's message, never a status callback
            ["SMa2"],
            ["SMa1"],  # from Alice, arriving at OURS only
            ["SMa1", "SMb1", "SMs1"],
            ["SMs1"],
            ["SMs1"],  # from Bob, through the service only
        ]
        assert set(pages[0][0]) >= {"id", "account_sid", "conn_id", "signer", "body", "received_at"}
        assert "payload" not in pages[0][0]  # the raw payload is never read for matching
        assert pages[0][0]["received_at"].tzinfo is not None

    def test_a_page_is_the_oldest_rows_after_the_cursor(self, store):
        ids = [_inbound(store, f"SM{i}", ALICE) for i in range(7)]
        channel = InboundChannel(ACCOUNT, "from_number", ALICE)
        first, later = store.read_inbound_channels([(channel, 0), (channel, ids[3])], page=3)
        assert [row["id"] for row in first] == ids[:3]
        assert [row["id"] for row in later] == ids[4:7]

    def test_no_reads_no_query(self, store):
        assert store.read_inbound_channels([], page=10) == []

    @pytest.mark.parametrize(("column", "value", "message"), [
        ("body", "x", "reads one of from_number, to_number, messaging_service_sid, not 'body'"),
        ("to_number", "", "on to_number needs a value"),
    ])
    def test_a_channel_names_an_indexed_column_and_a_value(self, column, value, message):
        with pytest.raises(ValueError, match=message):
            InboundChannel(ACCOUNT, column, value)


class TestInboundCursor:
    def test_every_message_received_since_is_above_the_cursor(self, store):
        since = datetime.now(timezone.utc)
        old = [_inbound(store, f"SMold{i}", ALICE, now=since - timedelta(days=2) + timedelta(seconds=i))
               for i in range(3)]
        _inbound(store, "SMmargin", BOB, now=since - CURSOR_MARGIN / 2)  # within the margin: read again
        fresh = _inbound(store, "SMfresh", ALICE, now=since)
        cursor = store.inbound_cursor(since)
        assert cursor == old[-1]
        assert fresh > cursor
        assert store.get_inbound("SMmargin")["id"] > cursor

    def test_nothing_received_before_since_or_no_since_starts_at_zero(self, store):
        since = datetime.now(timezone.utc)
        first = _inbound(store, "SM1", ALICE, now=since)
        assert store.inbound_cursor(since) == 0
        assert store.inbound_cursor(None) == 0
        assert store.inbound_cursor(since + CURSOR_MARGIN + timedelta(seconds=1)) == first

"""The channel in the store (SQLite and PostgreSQL): sends, status callbacks and inbound messages keep their
``whatsapp:`` addresses and say their channel; a WhatsApp reply and an SMS reply from one phone are different
senders for reply sensors, links and opt-outs; erasing a number erases its WhatsApp rows too."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from airflow_provider_twilio_sms.content import content_digest
from airflow_provider_twilio_sms.replies import ReplyCriteria
from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.claims import make_scope

ACCOUNT = "AC" + "5" * 32
PHONE, OURS = "+14155550100", "+15005550006"
WA_PHONE, WA_OURS = f"whatsapp:{PHONE}", f"whatsapp:{OURS}"


def _send(store, key, to, from_, sid, **claim):
    made = store.claim(scope=make_scope(ACCOUNT), idempotency_key=key, account_sid=ACCOUNT, conn_id="c",
                       signer="s", to_number=to, from_number=from_, **claim)
    return store.record_sent(made, {"sid": sid, "status": "queued", "num_segments": 1})


def _reply(store, sid, frm, to, body="CONFIRM"):
    store.record_inbound(account_sid=ACCOUNT, conn_id="c", signer="s", message_sid=sid, from_number=frm,
                         to_number=to, body=body, payload={"From": frm, "To": to})
    return store.get_inbound(sid)


def _rows(store, table):
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c.id))]


def test_sends_callbacks_and_replies_keep_their_channel(store):
    wa = _send(store, "k-wa", WA_PHONE, WA_OURS, "SM" + "1" * 32, body=None, channel="whatsapp",
               body_sha256=content_digest(None, "HX" + "0" * 32, '{"1":"a"}'))
    sms = _send(store, "k-sms", PHONE, OURS, "SM" + "2" * 32, body="hi")
    assert (wa["channel"], sms["channel"]) == ("whatsapp", "sms")
    for status in ("sent", "delivered", "read"):
        store.record_status_event(account_sid=ACCOUNT, conn_id="c", signer="s", message_sid=wa["sid"],
                                  status=status, payload={"To": WA_PHONE, "From": WA_OURS})
    store.record_status_event(account_sid=ACCOUNT, conn_id="c", signer="s", message_sid=sms["sid"],
                              status="delivered", payload={"To": PHONE, "From": OURS})
    wa_reply, sms_reply = _reply(store, "SM" + "3" * 32, WA_PHONE, WA_OURS), \
        _reply(store, "SM" + "4" * 32, PHONE, OURS)
    assert [(e["kind"], e["channel"]) for e in _rows(store, t.event)] == [
        ("status", "whatsapp")] * 3 + [("status", "sms"), ("inbound", "whatsapp"), ("inbound", "sms")]
    messages = {m["sid"]: m for m in _rows(store, t.message)}
    assert messages[wa["sid"]]["status"] == "read"  # read is final, past delivered
    # each reply is linked to the message it answers, on its own channel
    assert (wa_reply["message_id"], sms_reply["message_id"]) == (wa["id"], sms["id"])


def test_a_reply_sensor_on_whatsapp_never_takes_the_sms_reply_and_the_other_way_round(store):
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    _reply(store, "SM" + "5" * 32, PHONE, OURS, "CONFIRM sms")
    _reply(store, "SM" + "6" * 32, WA_PHONE, WA_OURS, "CONFIRM whatsapp")
    for frm, to, expected in ((WA_PHONE, WA_OURS, "CONFIRM whatsapp"), (PHONE, OURS, "CONFIRM sms")):
        criteria = ReplyCriteria(account_sid=ACCOUNT, conn_id="c", signer="s", from_number=frm, to_number=to,
                                 keywords=("CONFIRM",), since=since)
        # the triggerer's read: each channel through its index, from its own cursor
        [page] = store.read_inbound_channels([(channel, 0) for channel in criteria.channels()], page=10)
        assert [row["body"] for row in page if criteria.match(row)] == [expected]
        # the sensor's poke
        found = store.find_inbound(account_sid=ACCOUNT, conn_id="c", signer="s", from_number=frm,
                                   to_number=to, since=since)
        assert [row["body"] for row in found] == [expected]


def test_a_stop_on_whatsapp_opts_out_the_whatsapp_address_only(store):
    _reply(store, "SM" + "7" * 32, WA_PHONE, WA_OURS, "STOP")
    assert store.is_opted_out(ACCOUNT, WA_PHONE, signer="s")
    assert not store.is_opted_out(ACCOUNT, PHONE, signer="s")


def test_forgetting_a_number_erases_its_whatsapp_rows_too(store):
    _send(store, "k1", WA_PHONE, WA_OURS, "SM" + "8" * 32, body="hi", channel="whatsapp")
    _send(store, "k2", PHONE, OURS, "SM" + "9" * 32, body="hi")
    _reply(store, "SM" + "a" * 32, WA_PHONE, WA_OURS, "hello")
    _reply(store, "SM" + "b" * 32, "whatsapp:+14155550999", WA_OURS, "someone else")
    erased = store.forget_number(PHONE)
    assert erased.deleted["twilio_sms_message"] == 2
    assert [m["to_number"] for m in _rows(store, t.message)] == []
    assert [e["from_number"] for e in _rows(store, t.event)] == ["whatsapp:+14155550999"]

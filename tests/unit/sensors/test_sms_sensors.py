"""Sensor pokes against a real store: statuses, replies, opt-outs, since, and deferral to the triggers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_twilio_sms.replies import read_reply
from airflow_provider_twilio_sms.sensors.sms import SmsReplySensor, SmsStatusSensor
from airflow_provider_twilio_sms.store.claims import make_scope
from airflow_provider_twilio_sms.triggers.sms import SmsReplyTrigger, SmsStatusTrigger

from reply_testing import add_history, newest_id

ACCOUNT = "AC" + "5" * 32
OURS = "+15005550006"
USER = "+15557654321"
CONN = "twilio_sms_default"


@pytest.fixture
def env(store, monkeypatch):
    url = store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("AIRFLOW_CONN_SENSOR_STORE",
                       json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": url}}))
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", json.dumps({
        "conn_type": "twilio_sms", "login": ACCOUNT, "password": "token",
        "extra": {"from_number": OURS, "default_region": "US"}}))
    return store


class _TI:
    def __init__(self, xcom=None):
        self.xcom, self.map_index = xcom or {}, -1

    def xcom_pull(self, task_ids):
        return self.xcom.get(task_ids)


def _context(xcom=None, start=None):
    start = start or datetime.now(timezone.utc) - timedelta(minutes=1)
    return {"ti": _TI(xcom), "dag_run": SimpleNamespace(start_date=start, team_name=None)}


def _send(store, key, sid, sent_at=None):
    claim = store.claim(scope=make_scope(ACCOUNT), idempotency_key=key, account_sid=ACCOUNT,
                        conn_id=CONN, to_number=USER, from_number=OURS, body="Reply YES")
    store.record_sent(claim, {"sid": sid, "status": "queued", "from": OURS})
    return {"sid": sid, "idempotency_key": key, "account_sid": ACCOUNT}


def _inbound(store, sid, body, frm=USER, opt=None, now=None):
    store.record_inbound(account_sid=ACCOUNT, conn_id=CONN, message_sid=sid, from_number=frm, to_number=OURS,
                         body=body, payload={}, opt_out_type=opt, now=now)


def _status(store, sid, status, code=None):
    store.record_status_event(account_sid=ACCOUNT, conn_id=CONN, message_sid=sid, status=status,
                              payload={}, error_code=code)


def status_sensor(**kw):
    kw.setdefault("store_conn_id", "sensor_store")
    return SmsStatusSensor(task_id="wait_delivered", deferrable=False, fallback_after=None, **kw)


def reply_sensor(**kw):
    kw.setdefault("store_conn_id", "sensor_store")
    return SmsReplySensor(task_id="wait_reply", deferrable=False, **kw)


class TestStatusSensor:
    SID = "SM" + "e" * 32

    def test_waits_then_succeeds_on_delivered(self, env):
        sent = _send(env, "k1", self.SID)
        sensor = status_sensor(from_task="send")
        ctx = _context({"send": sent})
        assert not sensor.poke(ctx).is_done
        _status(env, self.SID, "sent")
        assert not sensor.poke(ctx).is_done
        _status(env, self.SID, "delivered")
        done = sensor.poke(ctx)
        assert done.is_done
        assert done.xcom_value == {"sid": self.SID, "status": "delivered", "error_code": None}

    def test_undelivered_fails_with_the_error_code_and_its_meaning(self, env):
        _send(env, "k1", self.SID)
        _status(env, self.SID, "undelivered", 30003)
        with pytest.raises(AirflowFailException, match=r"undelivered.*30003.*unreachable"):
            status_sensor(message_sid=self.SID).poke(_context())

    @pytest.mark.parametrize("map_index", [None, -1])
    def test_an_unmapped_sensor_on_a_mapped_send_says_what_to_fix(self, env, map_index):
        # xcom_pull of a mapped task returns a list; a sensor that is not mapped itself has no index
        # into it (None, or -1 as Airflow sets it), which must give the error that names the fix.
        sent = _send(env, "k1", self.SID)
        ctx = _context({"send": [sent, sent]})
        ctx["ti"].map_index = map_index
        with pytest.raises(ValueError, match="returned no SendSmsOperator result"):
            status_sensor(from_task="send").poke(ctx)

    def test_a_mapped_sensor_takes_the_send_with_its_own_map_index(self, env):
        other = _send(env, "k0", "SM" + "0" * 32)
        sent = _send(env, "k1", self.SID)
        _status(env, self.SID, "delivered")
        ctx = _context({"send": [other, sent]})
        ctx["ti"].map_index = 1
        assert status_sensor(from_task="send").poke(ctx).xcom_value["sid"] == self.SID

    def test_finds_the_message_by_idempotency_key(self, env):
        _send(env, "explicit-key", self.SID)
        _status(env, self.SID, "delivered")
        assert status_sensor(idempotency_key="explicit-key").poke(_context()).is_done

    def test_exactly_one_way_to_name_the_message(self, env):
        with pytest.raises(ValueError, match="exactly one"):
            status_sensor(message_sid=self.SID, idempotency_key="k").poke(_context())

    def test_deferrable_defers_to_the_status_trigger(self, env):
        sent = _send(env, "k1", self.SID)
        sensor = SmsStatusSensor(task_id="w", from_task="send", store_conn_id="sensor_store", deferrable=True,
                                 timeout=600)
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute(_context({"send": sent}))
        assert isinstance(deferred.value.trigger, SmsStatusTrigger)
        assert deferred.value.trigger.message_sid == self.SID
        assert deferred.value.method_name == "execute_complete"
        assert (
            sensor.execute_complete(
                _context(), {"outcome": "success", "sid": self.SID, "status": "delivered", "error_code": None}
            )["status"]
            == "delivered"
        )
        with pytest.raises(AirflowFailException, match="30007"):
            sensor.execute_complete(_context(), {"outcome": "failure", "sid": self.SID, "status": "failed",
                                                 "error_code": 30007})


class TestReplySensor:
    def test_in_reply_to_captures_the_code_from_the_recipient_only(self, env):
        sent = _send(env, "k1", "SM" + "f" * 32)
        ctx = _context({"send": sent})
        sensor = reply_sensor(in_reply_to="send", body_pattern=r"^(YES|NO)\b")
        assert not sensor.poke(ctx).is_done
        _inbound(env, "SM1", "YES", frm="+15550001111")  # someone else
        assert not sensor.poke(ctx).is_done
        _inbound(env, "SM2", "yes please")
        done = sensor.poke(ctx)
        assert done.is_done
        assert done.xcom_value["message_sid"] == "SM2"
        assert done.xcom_value["from"] == "***4321"
        assert "yes please" not in json.dumps(done.xcom_value)
        assert USER not in json.dumps(done.xcom_value)
        reply = read_reply(done.xcom_value)  # from the sensor's store, named in the XCom
        assert (reply.body, reply.groups, reply.from_number) == ("yes please", ["yes"], USER)

    def test_a_reply_received_before_since_never_matches(self, env):
        start = datetime.now(timezone.utc)
        _inbound(env, "SMold", "Your code is 111111", now=start - timedelta(minutes=5))
        sensor = reply_sensor(to_number=OURS, body_pattern=r"code is (\d{6})")
        assert not sensor.poke(_context(start=start)).is_done
        _inbound(env, "SMnew", "Your code is 222222")
        found = sensor.poke(_context(start=start)).xcom_value
        assert found["message_sid"] == "SMnew"
        assert read_reply(found).groups == ["222222"]

    def test_stop_fails_the_sensor_instead_of_waiting_out_the_timeout(self, env):
        sent = _send(env, "k1", "SM" + "f" * 32)
        _inbound(env, "SMstop", "STOP", opt="STOP")
        with pytest.raises(AirflowFailException, match="opted out"):
            reply_sensor(in_reply_to="send", keywords=["YES", "NO"]).poke(_context({"send": sent}))

    def test_national_numbers_use_the_connections_default_region(self, env):
        _inbound(env, "SM3", "code is 333333", frm="+14155550123")
        sensor = reply_sensor(from_number="(415) 555-0123", body_pattern=r"(\d{6})")
        assert read_reply(sensor.poke(_context()).xcom_value).groups == ["333333"]

    def test_keywords_hand_on_the_keyword_as_the_dag_wrote_it(self, env):
        _inbound(env, "SM4", "yes. ship it")
        found = reply_sensor(to_number=OURS, keywords=["Yes", "No"]).poke(_context()).xcom_value
        assert found["keyword"] == "Yes"
        assert "ship" not in json.dumps(found)
        assert read_reply(found).groups == ["yes"]

    def test_read_reply_masks_what_it_reveals_and_says_what_is_wrong(self, env):
        from airflow.sdk.log import mask_logs

        _inbound(env, "SM5", "Your code is 918273")
        found = reply_sensor(to_number=OURS, body_pattern=r"code is (\d{6})").poke(_context()).xcom_value
        reply = read_reply(found)
        assert mask_logs(None, "info", {"event": f"got {reply.groups[0]}"})["event"] == "got ***"
        assert "918273" not in repr(reply)
        assert USER not in repr(reply)
        with pytest.raises(ValueError, match="XCom of an SmsReplySensor"):
            read_reply({"groups": ["1"]})
        with pytest.raises(LookupError, match="not in the message store"):
            read_reply({**found, "message_sid": "SM" + "9" * 32})

    def test_needs_some_number_to_wait_on(self, env):
        with pytest.raises(ValueError, match="needs in_reply_to, from_number or to_number"):
            reply_sensor(body_pattern="x").poke(_context())

    @pytest.mark.parametrize("how", ["in_reply_to", "numbers"])
    def test_the_trigger_kwargs_carry_no_phone_number(self, env, how):
        """Trigger kwargs are stored in Airflow's trigger table: they name a reply wait in the store."""
        sent = _send(env, "k1", "SM" + "f" * 32)
        user = USER if how == "in_reply_to" else "+14155550123"  # a number libphonenumber knows
        given = {"in_reply_to": "send"} if how == "in_reply_to" else {"from_number": user, "to_number": OURS}
        sensor = SmsReplySensor(task_id="w", keywords=["YES"], store_conn_id="sensor_store", deferrable=True,
                                **given)
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute(_context({"send": sent}))
        kwargs = json.dumps(deferred.value.trigger.serialize()[1])
        assert user not in kwargs
        assert OURS not in kwargs
        assert user[-4:] not in kwargs
        wait = env.get_reply_wait(deferred.value.trigger.wait_id)
        assert (wait["from_number"], wait["to_number"], wait["account_sid"]) == (user, OURS, ACCOUNT)
        _inbound(env, "SMyes", "YES", frm=user)
        matched = sensor.criteria(_context({"send": sent})).match(env.get_inbound("SMyes"))
        event = {"outcome": "match", "wait_id": wait["id"], "result": matched}
        found = sensor.execute_complete(_context(), event)
        assert found["message_sid"] == "SMyes"
        assert env.get_reply_wait(wait["id"]) is None

    def test_deferrable_hands_its_cursor_to_the_trigger(self, env):
        _inbound(env, "SMa", "hello")
        sensor = SmsReplySensor(task_id="w", to_number=OURS, keywords=["YES"], store_conn_id="sensor_store",
                                deferrable=True)
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute(_context())
        trigger = deferred.value.trigger
        assert isinstance(trigger, SmsReplyTrigger)
        stored = env.find_inbound(account_sid=ACCOUNT, conn_id=CONN, to_number=OURS)
        assert trigger.after_id == stored[-1]["id"]
        with pytest.raises(AirflowFailException, match="opted out"):
            sensor.execute_complete(_context(), {"outcome": "opt_out", "wait_id": trigger.wait_id,
                                                 "message": "***4321 opted out"})
        assert env.get_reply_wait(trigger.wait_id) is None  # forgotten once the wait is over


class TestReplySensorHistory:
    """With 20 000 earlier messages to our number, a sensor starts after them, and still sees a reply that
    came before it started."""

    def test_a_deferred_sensor_hands_its_trigger_a_cursor_after_the_history(self, env):
        start = datetime.now(timezone.utc) - timedelta(minutes=1)
        add_history(env, 20_000, account_sid=ACCOUNT, conn_id=CONN, received_from=start - timedelta(days=3),
                    to_numbers=(OURS,))
        newest = newest_id(env)
        sensor = SmsReplySensor(task_id="w", to_number=OURS, keywords=["YES"], store_conn_id="sensor_store",
                                deferrable=True)
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute(_context(start=start))
        assert deferred.value.trigger.after_id == newest  # not 0: the trigger never reads the history

    @pytest.mark.parametrize("deferrable", [True, False])
    def test_a_reply_stored_before_the_sensor_starts_still_counts(self, env, deferrable):
        add_history(env, 20_000, account_sid=ACCOUNT, conn_id=CONN,
                    received_from=datetime.now(timezone.utc) - timedelta(days=3), to_numbers=(OURS,),
                    senders=(USER,), body="YES")
        sent = _send(env, "k1", "SM" + "f" * 32)
        _inbound(env, "SMlate", "yes")  # the reply comes in before the sensor's first look
        sensor = SmsReplySensor(task_id="w", in_reply_to="send", keywords=["YES"],
                                store_conn_id="sensor_store", deferrable=deferrable)
        found = sensor.execute(_context({"send": sent}))  # no TaskDeferred: found at once
        assert found["message_sid"] == "SMlate"

"""SmsStore semantics a sender, the webhook and the sensors rely on, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_twilio_sms.store.claims import LeaseLostError, make_scope

ACCOUNT = "AC" + "1" * 32
SCOPE = make_scope(ACCOUNT)
CONN = "twilio_sms_default"
TO = "+15551230001"


def _claim(store, key="key-1", **kw):
    args = dict(scope=SCOPE, idempotency_key=key, account_sid=ACCOUNT, conn_id=CONN,
                to_number=TO, from_number="+15005550006", body="Your code is 123456")
    args.update(kw)
    return store.claim(**args)


class TestClaims:
    def test_first_claim_is_new_and_a_second_attempt_sees_it_held(self, store):
        first = _claim(store, attempt_id="a1")
        assert first.outcome == "new"
        assert first.owned
        second = _claim(store, attempt_id="a2")
        assert second.outcome == "held"
        assert not second.owned
        assert second.row["lease_expires_at"] > datetime.now(timezone.utc)

    def test_a_sent_key_returns_the_recorded_result_without_a_new_claim(self, store):
        claim = _claim(store, attempt_id="a1")
        store.mark_attempt(claim)
        store.record_sent(claim, {"sid": "SM" + "a" * 32, "status": "queued", "num_segments": 1})
        again = _claim(store, attempt_id="a2")
        assert again.outcome == "sent"
        assert again.row["sid"] == "SM" + "a" * 32
        assert again.row["send_state"] == "sent"

    def test_a_failed_key_stays_failed(self, store):
        claim = _claim(store, attempt_id="a1")
        store.record_failed(claim, 21211, "invalid To")
        again = _claim(store, attempt_id="a2")
        assert again.outcome == "failed"
        assert again.row["error_code"] == 21211

    def test_expired_lease_without_http_attempt_is_resumed_without_reconcile(self, store):
        old = datetime.now(timezone.utc) - timedelta(minutes=10)
        _claim(store, attempt_id="dead", lease_seconds=60, now=old)
        taken = _claim(store, attempt_id="a2")
        assert taken.outcome == "resume"
        assert taken.owned

    def test_expired_lease_after_http_attempt_must_reconcile(self, store):
        old = datetime.now(timezone.utc) - timedelta(minutes=10)
        dead = _claim(store, attempt_id="dead", lease_seconds=60, now=old)
        store.mark_attempt(dead, lease_seconds=-60)  # the attempt died right after the request left
        taken = _claim(store, attempt_id="a2")
        assert taken.outcome == "reconcile"

    def test_unknown_outcome_is_reconciled_by_the_next_attempt_at_once(self, store):
        claim = _claim(store, attempt_id="a1")
        store.mark_attempt(claim)
        store.record_unknown(claim)
        assert _claim(store, attempt_id="a2").outcome == "reconcile"

    def test_a_429_clears_the_attempt_so_no_reconcile_is_needed(self, store):
        claim = _claim(store, attempt_id="a1")
        store.mark_attempt(claim)
        store.clear_attempt(claim)
        store.release(claim)
        assert _claim(store, attempt_id="a2").outcome == "resume"

    def test_the_attempt_that_lost_its_lease_cannot_record(self, store):
        old = datetime.now(timezone.utc) - timedelta(minutes=10)
        slow = _claim(store, attempt_id="slow", lease_seconds=60, now=old)
        _claim(store, attempt_id="fast")
        with pytest.raises(LeaseLostError):
            store.mark_attempt(slow)

    def test_same_attempt_reclaiming_its_own_live_claim_resumes(self, store):
        _claim(store, attempt_id="a1")
        assert _claim(store, attempt_id="a1").outcome == "resume"

    def test_a_new_claims_row_is_the_stored_row(self, store):
        now = datetime.now(timezone(timedelta(hours=2)))  # any timezone in, UTC back, as stored
        claim = _claim(store, attempt_id="a1", attempting=True, refuse_opted_out=True, team="qa", map_index=3,
                       now=now)
        assert claim.outcome == "new"
        assert claim.row == store.get_message(message_id=claim.message_id)
        assert claim.row["created_at"] == now
        assert claim.row["created_at"].utcoffset() == timedelta(0)

    def test_the_recorded_row_is_the_stored_row(self, store):
        claim = _claim(store, attempt_id="a1")
        store.mark_attempt(claim, lease_seconds=300)  # changes the row after the claim
        sid = "SM" + "8" * 32
        store.record_status_event(
            account_sid=ACCOUNT,
            conn_id=CONN,
            message_sid=sid,
            status="sent",
            payload={},
            idempotency_key="key-1",
        )  # an early callback, linked by the key
        row = store.record_sent(
            claim,
            {"sid": sid, "status": "queued", "num_segments": 2, "encoding": "UCS-2", "from": "+15005550006"},
        )
        assert row == store.get_message(sid=sid)
        assert row["status"] == "sent"
        assert row["send_state"] == "sent"
        assert row["num_segments"] == 2

    def test_an_opted_out_recipient_is_refused_and_nothing_is_claimed(self, store):
        store.set_opt_out(ACCOUNT, TO, True)
        assert _claim(store, attempt_id="a1", refuse_opted_out=True).outcome == "opted_out"
        assert store.get_message(scope=SCOPE, idempotency_key="key-1") is None
        assert _claim(store, key="other", attempt_id="a1", to_number="+15551230009",
                      refuse_opted_out=True).outcome == "new"  # someone else's STOP refuses only them

    def test_an_opt_out_after_the_claim_refuses_the_next_attempt_too(self, store):
        first = _claim(store, attempt_id="a1", refuse_opted_out=True)
        store.record_sent(first, {"sid": "SM" + "e" * 32, "status": "queued"})
        store.set_opt_out(ACCOUNT, TO, True)
        assert _claim(store, attempt_id="a2", refuse_opted_out=True).outcome == "opted_out"
        store.set_opt_out(ACCOUNT, TO, False, keyword="START")
        assert _claim(store, attempt_id="a2", refuse_opted_out=True).outcome == "sent"

    def test_keys_are_scoped_per_account_and_team(self, store):
        assert _claim(store, attempt_id="x").outcome == "new"
        assert _claim(store, attempt_id="y", scope=make_scope(ACCOUNT, "team_b")).outcome == "new"
        other = "AC" + "2" * 32
        assert _claim(store, attempt_id="z", scope=make_scope(other), account_sid=other).outcome == "new"

    def test_early_callback_status_is_not_overwritten_by_the_send_response(self, store):
        claim = _claim(store, attempt_id="a1")
        sid = "SM" + "b" * 32
        store.mark_attempt(claim)
        # the callback overtakes the HTTP response and is linked by the idempotency key
        assert store.record_status_event(
            account_sid=ACCOUNT,
            conn_id=CONN,
            message_sid=sid,
            status="delivered",
            payload={},
            idempotency_key="key-1",
        )
        row = store.record_sent(claim, {"sid": sid, "status": "queued"})
        assert row["status"] == "delivered"
        assert row["sid"] == sid


    def test_a_callback_links_a_send_whose_response_was_lost_and_its_event(self, store):
        claim = _claim(store, attempt_id="a1")
        sid = "SM" + "f" * 32
        assert store.record_status_event(account_sid=ACCOUNT, conn_id=CONN, message_sid=sid, status="sent",
                                         payload={}, idempotency_key="key-1", error_code=None)
        row = store.get_message(message_id=claim.message_id)
        assert row["sid"] == sid
        assert row["status"] == "sent"
        with store.engine.connect() as conn:
            from airflow_provider_twilio_sms.store import tables as t

            linked = conn.execute(t.event.select().where(t.event.c.message_sid == sid)).one()
        assert linked.message_id == claim.message_id
        # the key's message has its SID now: another SID with the same key links nothing
        other = "SM" + "9" * 32
        assert store.record_status_event(account_sid=ACCOUNT, conn_id=CONN, message_sid=other, status="sent",
                                         payload={}, idempotency_key="key-1")
        assert store.get_message(sid=other) is None

    def test_a_late_callback_changes_neither_status_nor_error_code(self, store):
        claim = _claim(store, attempt_id="a1")
        sid = "SM" + "7" * 32
        store.record_sent(claim, {"sid": sid, "status": "queued"})
        store.record_status_event(account_sid=ACCOUNT, conn_id=CONN, message_sid=sid, status="undelivered",
                                  payload={}, error_code=30003)
        before = store.get_message(sid=sid)
        store.record_status_event(
            account_sid=ACCOUNT, conn_id=CONN, message_sid=sid, status="sent", payload={}, error_code=30005
        )
        after = store.get_message(sid=sid)
        assert (after["status"], after["error_code"], after["status_updated_at"]) == \
            ("undelivered", 30003, before["status_updated_at"])

    def test_threads_of_one_process_write_concurrently_without_errors(self, store):
        from concurrent.futures import ThreadPoolExecutor

        sids = [f"SM{i:032x}" for i in range(200)]

        def one(sid):
            return store.record_status_event(account_sid=ACCOUNT, conn_id=CONN, message_sid=sid,
                                             status="sent", payload={"MessageStatus": "sent"})

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, sids + sids[:50]))
        assert results.count(True) == 200
        assert results.count(False) == 50


class TestStatusEvents:
    SID = "SM" + "c" * 32

    def _sent(self, store):
        claim = _claim(store, attempt_id="a1")
        store.record_sent(claim, {"sid": self.SID, "status": "queued"})

    def _event(self, store, status, token=None, **kw):
        return store.record_status_event(
            account_sid=ACCOUNT,
            conn_id=CONN,
            message_sid=self.SID,
            status=status,
            payload={"MessageStatus": status},
            idempotency_token=token,
            **kw,
        )

    def test_status_moves_forward_only_and_history_keeps_everything(self, store):
        self._sent(store)
        assert self._event(store, "delivered")
        assert self._event(store, "sent")  # late: stored, but does not move the status back
        assert store.get_message(sid=self.SID)["status"] == "delivered"
        assert [h["status"] for h in store.status_history(self.SID)] == ["delivered", "sent"]

    def test_terminal_statuses_do_not_replace_each_other(self, store):
        self._sent(store)
        self._event(store, "undelivered", error_code=30003)
        self._event(store, "delivered")
        row = store.get_message(sid=self.SID)
        assert row["status"] == "undelivered"
        assert row["error_code"] == 30003

    def test_duplicates_by_token_and_by_sid_and_status_are_stored_once(self, store):
        self._sent(store)
        assert self._event(store, "sent", token="tok-1")
        assert not self._event(store, "sent", token="tok-1")
        assert not self._event(store, "sent", token="tok-2")
        assert len(store.status_history(self.SID)) == 1

    def test_unknown_status_is_stored_without_moving_the_state(self, store):
        self._sent(store)
        assert self._event(store, "teleported")
        assert store.get_message(sid=self.SID)["status"] == "queued"
        assert store.status_history(self.SID)[0]["status"] == "teleported"

    def test_callback_for_a_message_we_never_sent_is_kept(self, store):
        assert self._event(store, "delivered")
        assert store.get_message(sid=self.SID) is None
        assert len(store.status_history(self.SID)) == 1


class TestInbound:
    def _inbound(self, store, sid, body, frm="+15557654321", opt=None, now=None):
        return store.record_inbound(account_sid=ACCOUNT, conn_id=CONN, message_sid=sid, from_number=frm,
                                    to_number="+15005550006", body=body, payload={"Body": body},
                                    opt_out_type=opt, now=now)

    def test_inbound_is_stored_once_per_message_sid(self, store):
        assert self._inbound(store, "SM1", "YES")
        assert not self._inbound(store, "SM1", "YES")
        assert len(store.find_inbound(account_sid=ACCOUNT, conn_id=CONN, to_number="+15005550006")) == 1

    @pytest.mark.parametrize(("body", "opt"), [("STOP", "STOP"), ("stop", None), ("Unsubscribe", None),
                                          ("  quit ", None), ("CANCEL", None)])
    def test_stop_opts_out_with_or_without_opt_out_type(self, store, body, opt):
        self._inbound(store, "SM1", body, opt=opt)
        assert store.is_opted_out(ACCOUNT, "+15557654321")

    def test_start_opts_back_in(self, store):
        self._inbound(store, "SM1", "STOP", opt="STOP")
        self._inbound(store, "SM2", "START", opt="START")
        assert not store.is_opted_out(ACCOUNT, "+15557654321")

    def test_a_sentence_containing_stop_is_not_an_opt_out(self, store):
        self._inbound(store, "SM1", "please stop the deploy")
        assert not store.is_opted_out(ACCOUNT, "+15557654321")

    def test_find_inbound_honours_since_and_after_id(self, store):
        t0 = datetime.now(timezone.utc)
        self._inbound(store, "SM1", "old", now=t0 - timedelta(minutes=5))
        self._inbound(store, "SM2", "new 123456", now=t0)
        ours = {"account_sid": ACCOUNT, "conn_id": CONN}
        found = store.find_inbound(**ours, to_number="+15005550006", since=t0 - timedelta(seconds=1))
        assert [r["message_sid"] for r in found] == ["SM2"]
        all_rows = store.find_inbound(**ours, from_number="+15557654321")
        after = store.find_inbound(**ours, from_number="+15557654321", after_id=all_rows[0]["id"])
        assert after[0]["message_sid"] == "SM2"

    def test_find_inbound_refuses_a_full_scan(self, store):
        with pytest.raises(ValueError, match="find_inbound needs to_number or from_number"):
            store.find_inbound(account_sid=ACCOUNT, conn_id=CONN)


class TestErrors:
    def test_a_database_error_names_the_statement_but_never_a_number_or_body(self, db_url):
        """An unmigrated store (``airflow db migrate`` not run): every write fails with SQLAlchemy's
        error naming the SQL, and the phone numbers and body it was given are not in the message."""
        from sqlalchemy.exc import DBAPIError

        from airflow_provider_twilio_sms.store.api import SmsStore

        store = SmsStore(db_url)
        with pytest.raises(DBAPIError) as claim_error:
            _claim(store)
        with pytest.raises(DBAPIError) as rate_error:
            store.acquire_rate_slot("qa", 1, 60)
        with pytest.raises(DBAPIError) as inbound_error:
            store.record_inbound(account_sid=ACCOUNT, conn_id=CONN, message_sid="SM" + "b" * 32,
                                 from_number=TO, to_number="+15005550006", body="Your code is 123456",
                                 payload={"From": TO, "Body": "Your code is 123456"})
        for err in (claim_error.value, rate_error.value, inbound_error.value):
            text = str(err)
            assert "twilio_sms_" in text  # which table: the statement is there
            for secret in (TO, "5551230001", "+15005550006", "123456"):
                assert secret not in text, text

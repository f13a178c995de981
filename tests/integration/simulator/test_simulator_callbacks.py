"""Status callbacks: signed as Twilio signs them, in Twilio's shape, retried, duplicated, out of order."""

from __future__ import annotations

import re
import time

import pytest
from twilio.request_validator import RequestValidator

from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

from simulator_testing import (  # noqa: F401 - receiver_fixture provides the "receiver" fixture
    OURS,
    TO,
    Receiver,
    receiver_fixture,
    twilio_client,
    wait_until,
)


def _statuses(got):
    return [params["MessageStatus"] for _, params, _ in got]


def test_sent_then_delivered_signed_like_twilio_and_queued_never_called_back(twilio_sim, receiver):
    client = twilio_client(twilio_sim)
    sid = client.messages.create(to=TO, from_=OURS, body="x", status_callback=receiver.url).sid
    got = receiver.wait(2)
    assert _statuses(got) == ["sent", "delivered"]
    validator = RequestValidator(twilio_sim.auth_token)
    for path, params, headers in got:
        assert path == "/hook?x=1"
        signature = headers["X-Twilio-Signature"]
        assert validator.validate(receiver.url, params, signature)
        assert not RequestValidator("another-token").validate(receiver.url, params, signature)
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert headers["User-Agent"] == "TwilioProxy/1.1"
        assert params["MessageSid"] == params["SmsSid"] == sid
        assert params["SmsStatus"] == params["MessageStatus"]
        assert (params["AccountSid"], params["From"], params["To"], params["ApiVersion"]) == (
            twilio_sim.account_sid, OURS, TO, "2010-04-01")
        assert "ErrorCode" not in params
        assert "MessagingServiceSid" not in params
    assert "RawDlrDoneDate" not in got[0][1]
    assert re.fullmatch(r"\d{10}", got[1][1]["RawDlrDoneDate"])
    tokens = [headers["I-Twilio-Idempotency-Token"] for _, _, headers in got]
    assert all(tokens)
    assert len(set(tokens)) == 2
    time.sleep(0.2)  # nothing else comes: no queued, no third call
    assert len(receiver.got) == 2
    assert [c["answer"] for c in twilio_sim.wait_for_callbacks(2)] == [200, 200]


@pytest.mark.parametrize(("status", "code", "expected"), [
    ("undelivered", 30003, ["sent", "undelivered"]), ("undelivered", 30005, ["sent", "undelivered"]),
    ("undelivered", 30006, ["sent", "undelivered"]), ("undelivered", 30007, ["sent", "undelivered"]),
    ("failed", 30008, ["failed"]),
])
def test_chosen_numbers_fail_with_their_error_code(twilio_sim, receiver, status, code, expected):
    twilio_sim.set_outcome(TO, status, code)
    client = twilio_client(twilio_sim)
    sid = client.messages.create(to=TO, from_=OURS, body="x", status_callback=receiver.url).sid
    got = receiver.wait(len(expected))
    assert _statuses(got) == expected
    assert got[-1][1]["ErrorCode"] == str(code)
    assert all("ErrorCode" not in p for _, p, _ in got[:-1])
    fetched = client.messages(sid).fetch()
    assert (fetched.status, fetched.error_code) == (status, code)
    assert fetched.error_message
    other = client.messages.create(to="+14155550100", from_=OURS, body="x").sid  # others still delivered
    wait_until(lambda: client.messages(other).fetch().status == "delivered")


def test_duplicates_come_with_their_own_idempotency_token(twilio_sim, receiver):
    twilio_sim.configure_callbacks(duplicate=True)
    twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x", status_callback=receiver.url)
    got = receiver.wait(4)
    assert sorted(_statuses(got)) == ["delivered", "delivered", "sent", "sent"]
    assert len({h["I-Twilio-Idempotency-Token"] for _, _, h in got}) == 4
    assert [c["duplicate"] for c in twilio_sim.wait_for_callbacks(4)].count(True) == 2


def test_duplicates_with_the_same_token_look_like_a_redelivery(twilio_sim, receiver):
    twilio_sim.configure_callbacks(duplicate=True, duplicate_same_token=True)
    twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x", status_callback=receiver.url)
    got = receiver.wait(4)
    by_status: dict[str, set[str]] = {}
    for _, params, headers in got:
        by_status.setdefault(params["MessageStatus"], set()).add(headers["I-Twilio-Idempotency-Token"])
    assert {status: len(tokens) for status, tokens in by_status.items()} == {"sent": 1, "delivered": 1}


def test_out_of_order_final_status_first_and_the_message_stays_delivered(twilio_sim, receiver):
    twilio_sim.out_of_order = True
    client = twilio_client(twilio_sim)
    sid = client.messages.create(to=TO, from_=OURS, body="x", status_callback=receiver.url).sid
    assert _statuses(receiver.wait(2)) == ["delivered", "sent"]
    assert client.messages(sid).fetch().status == "delivered"  # a late "sent" never moves it back


def test_a_5xx_is_retried_with_the_same_idempotency_token_and_a_4xx_is_not(twilio_sim):
    twilio_sim.configure_callbacks(status_delay=0.3, retry_delay=0.02)
    hook = Receiver(answers=[503, 200, 400])
    try:
        twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x",
                                                  status_callback=hook.url + "#rp=5xx")
        got = hook.wait(3)
        time.sleep(0.3)
        assert len(hook.got) == 3  # the 400 on "delivered" was final
        assert _statuses(got) == ["sent", "sent", "delivered"]
        tokens = [h["I-Twilio-Idempotency-Token"] for _, _, h in got]
        assert tokens[0] == tokens[1] != tokens[2]
        assert got[0][2]["X-Twilio-Signature"] == got[1][2]["X-Twilio-Signature"]
        assert [(c["status"], c["answer"], c["attempt"]) for c in twilio_sim.wait_for_callbacks(3)] == [
            ("sent", 503, 1), ("sent", 200, 2), ("delivered", 400, 1)]
    finally:
        hook.close()


def test_no_answer_in_time_is_retried_with_the_same_token(twilio_sim):
    twilio_sim.configure_callbacks(status_delay=0.5, retry_delay=0.02)
    hook = Receiver(answers=[("sleep", 0.5, 200)])
    try:
        twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x",
                                                  status_callback=hook.url + "#rt=200&rp=rt")
        got = hook.wait(3)
        assert _statuses(got) == ["sent", "sent", "delivered"]
        assert got[0][2]["I-Twilio-Idempotency-Token"] == got[1][2]["I-Twilio-Idempotency-Token"]
        first = twilio_sim.wait_for_callbacks(1)[0]
        assert first["answer"] is None
        assert "Timeout" in first["error"]
    finally:
        hook.close()


@pytest.mark.parametrize(("fragment", "answers", "attempts"), [
    ("", [503], [503]),  # Twilio's default policy retries a failed connect only: a 503 is final
    ("#rc=3&rp=ct", [503], [503]),
    ("#rc=2&rp=5xx", [503, 502, 500, 200], [503, 502, 500]),  # rc=2: three attempts in all, then given up
    ("#rp=5xx", [503, 503], [503, 503]),  # Twilio's default rc is 1
    ("#rc=3&rp=ct,rt,5xx", [503, 200], [503, 200]),  # what the operator's default StatusCallback carries
    ("#rc=9&rp=all", [404] * 7, [404] * 6),  # rc above Twilio's maximum of 5 counts as 5
    ("#rc=2&rp=4xx", [503, 200], [503]),
], ids=["none", "ct-only", "5xx-rc2", "5xx-default-rc", "operator-default", "all-capped", "4xx-only"])
def test_a_failed_callback_is_retried_as_the_urls_connection_overrides_say(twilio_sim, fragment, answers,
                                                                           attempts):
    twilio_sim.configure_callbacks(retry_delay=0.01)
    twilio_sim.set_outcome(TO, "failed", 30008)  # one status: one delivery to follow
    hook = Receiver(answers=answers)
    try:
        twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x",
                                                  status_callback=hook.url + fragment)
        twilio_sim.wait_for_callbacks(len(attempts))
        time.sleep(0.3)  # and no further attempt
        records = twilio_sim.callbacks()
        assert [r["answer"] for r in records] == attempts
        assert [r["attempt"] for r in records] == list(range(1, len(attempts) + 1))
        # The fragment is Twilio's to read: never sent, never signed.
        validator = RequestValidator(twilio_sim.auth_token)
        assert all(path == "/hook?x=1" and validator.validate(hook.url, params, headers["X-Twilio-Signature"])
                   for path, params, headers in hook.got)
    finally:
        hook.close()


def test_an_unreachable_webhook_is_retried_a_few_times_then_given_up(twilio_sim):
    twilio_sim.configure_callbacks(retries=2, retry_delay=0.01)
    twilio_sim.set_outcome(TO, "failed", 30008)  # one status: one delivery to follow
    twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x",
                                              status_callback="http://127.0.0.1:9/cb")  # nothing listens
    twilio_sim.wait_for_callbacks(3)
    time.sleep(0.1)  # and no fourth attempt
    records = twilio_sim.callbacks()
    assert [(r["attempt"], r["answer"]) for r in records] == [(1, None), (2, None), (3, None)]
    assert len({r["idempotency_token"] for r in records}) == 1


def test_callbacks_are_signed_with_the_primary_token_during_a_rotation(receiver):
    account = "AC" + "5" * 32
    tokens = ("primary-token", "secondary-token")
    with TwilioSimulator(accounts={account: tokens}, callback_delay=0.01) as sim:
        twilio_client(sim, auth_token="secondary-token").messages.create(to=TO, from_=OURS, body="x",
                                                                         status_callback=receiver.url)
        for _, params, headers in receiver.wait(2):
            signature = headers["X-Twilio-Signature"]
            assert RequestValidator("primary-token").validate(receiver.url, params, signature)


def test_a_messaging_service_message_reports_its_service_and_sender(twilio_sim, receiver):
    service = "MG" + "c" * 32
    twilio_client(twilio_sim).messages.create(to=TO, messaging_service_sid=service, body="x",
                                              status_callback=receiver.url)
    for _, params, _ in receiver.wait(2):
        assert params["MessagingServiceSid"] == service
        assert params["From"] == OURS


def test_callbacks_for_many_messages_all_arrive_in_order_per_message(twilio_sim, receiver):
    client = twilio_client(twilio_sim)
    sids = [client.messages.create(to=TO, from_=OURS, body=f"m{i}", status_callback=receiver.url).sid
            for i in range(20)]
    got = receiver.wait(40)
    for sid in sids:
        assert [p["MessageStatus"] for _, p, _ in got if p["MessageSid"] == sid] == ["sent", "delivered"]

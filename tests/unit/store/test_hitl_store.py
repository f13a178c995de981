"""Reply codes in the store (SQLite and PostgreSQL): one per task instance try and number, unique among a
number's pending requests, free again once settled, and found only by the connection's account and signer."""

from __future__ import annotations

import itertools
import threading

import pytest

from airflow_provider_twilio_sms.store.hitl import CODE_ATTEMPTS, CodesExhausted

ALICE, BOB = "+14155550101", "+14155550102"
ACCOUNT = "AC" + "1" * 32


def open_request(store, ti_id, to=ALICE, codes=None, **kw):
    codes = codes or iter(["AAAA", "BBBB", "CCCC", "DDDD"])
    values = {"account_sid": ACCOUNT, "conn_id": "twilio_sms_default", "signer": "s1", "ti_id": ti_id,
              "dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1, "to_number": to,
              "users": {ALICE: {"id": "alice", "name": "alice"}}, "new_code": lambda: next(codes), **kw}
    return store.open_hitl_request(**values)


def by_code(store, code, **kw):
    return store.hitl_requests_by_code(**{"account_sid": ACCOUNT, "conn_id": "twilio_sms_default",
                                          "signer": "s1", "code": code, **kw})


def test_a_notifier_run_again_gets_the_same_code(store):
    assert open_request(store, "ti-1") == "AAAA"
    assert open_request(store, "ti-1", codes=iter(["ZZZZ"])) == "AAAA"
    (row,) = by_code(store, "AAAA")
    assert row["users"] == {ALICE: {"id": "alice", "name": "alice"}}
    assert (row["state"], row["pending_code"]) == ("pending", "AAAA")


def test_codes_are_unique_among_one_numbers_pending_requests_only(store):
    assert open_request(store, "ti-1", codes=iter(["AAAA"])) == "AAAA"
    assert open_request(store, "ti-2", codes=iter(["AAAA", "BBBB"])) == "BBBB"  # AAAA is pending for Alice
    assert open_request(store, "ti-2", to=BOB, codes=iter(["AAAA"])) == "AAAA"  # another number may hold it
    with pytest.raises(CodesExhausted, match="too many pending"):
        open_request(store, "ti-3", codes=itertools.repeat("AAAA"))


def test_a_settled_code_is_free_again_and_still_found(store):
    open_request(store, "ti-1", codes=iter(["AAAA"]))
    (row,) = by_code(store, "AAAA")
    assert store.settle_hitl_request(row["id"], outcome="answered", message_sid="SM1") is True
    assert store.settle_hitl_request(row["id"], outcome="timed_out", message_sid=None) is False  # once
    assert open_request(store, "ti-2", codes=iter(["AAAA"])) == "AAAA"
    rows = by_code(store, "AAAA")
    assert [(r["ti_id"], r["state"], r["outcome"]) for r in rows] == [
        ("ti-2", "pending", None), ("ti-1", "answered", "answered")]  # pending first
    assert rows[1]["answer_message_sid"] == "SM1"
    with pytest.raises(ValueError, match="outcome"):
        store.settle_hitl_request(rows[0]["id"], outcome="maybe", message_sid=None)


def test_only_the_verifying_account_and_signer_find_a_code(store):
    open_request(store, "ti-1", codes=iter(["AAAA"]))
    assert by_code(store, "AAAA", account_sid="AC" + "2" * 32) == []
    assert by_code(store, "AAAA", conn_id="other", signer="s2") == []
    assert len(by_code(store, "AAAA", conn_id="other", signer="s1")) == 1  # same signer, other connection
    assert len(by_code(store, "AAAA", signer=None)) == 1  # same connection


def test_concurrent_notifiers_never_share_a_pending_code(store):
    codes = iter(["AAAA", "BBBB", "CCCC", "DDDD", "EEEE", "FFFF"] * CODE_ATTEMPTS)
    lock = threading.Lock()

    def next_code():
        with lock:
            return next(codes)

    got: list[str] = []
    errors: list[BaseException] = []

    def notify(n):
        try:
            got.append(open_request(store, f"ti-{n}", codes=iter(next_code, None)))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=notify, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(got) == ["AAAA", "BBBB", "CCCC", "DDDD", "EEEE", "FFFF"]

"""The idempotent send path against the local Twilio stand-in and a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from datetime import datetime

import pytest

from airflow_provider_twilio_sms.errors import (
    InvalidMessageError,
    OptedOutError,
    PermanentTwilioError,
    RetryableTwilioError,
    TwilioSmsError,
    UnknownOutcomeError,
)
from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
from airflow_provider_twilio_sms.rate_limit import parse_rate_limit
from airflow_provider_twilio_sms.sending import RateLimited, RetryPolicy, SendRequest, SmsSender
from airflow_provider_twilio_sms.store.api import SmsStore
from airflow_provider_twilio_sms.store.claims import body_digest

TO = "+14155550123"
SERVICE = "MG" + "5" * 32
CTX = mp.get_context("fork")


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def sender(store, *, timeout=5.0, lease=60, sleeps=None, attempt_id=None, page_size=1000, store_bodies=False):
    hook = TwilioSmsHook(timeout=timeout)
    return SmsSender(hook, store, lease_seconds=lease, attempt_id=attempt_id, held_poll_seconds=0.05,
                     retry=RetryPolicy(max_attempts=4, base_seconds=0.01, cap_seconds=0.05,
                                       sleep=sleeps if sleeps is not None else Sleeps()),
                     reconcile_page_size=page_size, store_bodies=store_bodies)


def req(key="key-1", to=TO, body="Your code is 123456", **kw):
    return SendRequest(to=to, body=body, idempotency_key=key, **kw)


@pytest.fixture
def env(twilio_conn, store_conn, twilio_sim):
    return twilio_sim, store_conn


def test_sends_once_and_a_second_call_returns_the_recorded_result(env):
    sim, store = env
    first = sender(store).send(req())
    assert first["sid"].startswith("SM")
    assert first["status"] == "queued"
    assert not first["already_sent"]
    assert first["to"] == "***0123"
    assert first["segments"] == 1
    again = sender(store).send(req())
    assert again["sid"] == first["sid"]
    assert again["already_sent"]
    assert sim.count("create") == 1


@pytest.mark.parametrize("store_bodies", [False, True])
def test_the_text_is_stored_only_when_asked_its_digest_always(env, store_bodies):
    sim, store = env
    result = sender(store, store_bodies=store_bodies).send(req(key="k1", body="Your code is 777001"))
    row = store.get_message(sid=result["sid"])
    assert row["body"] == ("Your code is 777001" if store_bodies else None)
    assert row["body_sha256"] == body_digest("Your code is 777001")
    assert SmsSender(TwilioSmsHook(), store).store_bodies is False  # the default


@pytest.mark.parametrize(("request_", "error"), [
    (req(to="+1415"), "not a valid phone number"),
    (req(body="x" * 1601), "1600"),
    (req(body=None), "no body"),
])
def test_invalid_input_fails_before_any_request_or_row(env, request_, error):
    sim, store = env
    with pytest.raises(InvalidMessageError, match=error):
        sender(store).send(request_)
    assert sim.count("create") == 0
    assert store.list_messages() == []


def test_opted_out_recipient_is_refused_before_any_request(env):
    sim, store = env
    store.set_opt_out(sim.account_sid, TO, True, "STOP")
    with pytest.raises(OptedOutError, match="replied STOP"):
        sender(store).send(req())
    assert sim.count("create") == 0


def test_21610_from_twilio_records_the_opt_out(env):
    sim, store = env
    with pytest.raises(OptedOutError, match="21610"):
        sender(store).send(req(to="+15005550004"))
    # for the connection's signer (that connection's sends are refused), not for every connection
    assert store.is_opted_out(sim.account_sid, "+15005550004", signer=TwilioSmsHook().settings.signer)
    assert not store.is_opted_out(sim.account_sid, "+15005550004")
    with pytest.raises(OptedOutError):
        sender(store).send(req(key="key-2", to="+15005550004"))
    assert sim.count("create") == 1


def test_permanent_error_fails_at_once_and_stays_failed(env):
    sim, store = env
    with pytest.raises(PermanentTwilioError, match="21614"):
        sender(store).send(req(to="+15005550009"))
    with pytest.raises(PermanentTwilioError, match="failed for good"):
        sender(store).send(req(to="+15005550009"))
    assert sim.count("create") == 1


def test_429_is_retried_honouring_retry_after(env):
    sim, store = env
    sim.add_fault("429", count=2, retry_after=2)
    sleeps = Sleeps()
    result = sender(store, sleeps=sleeps).send(req())
    assert result["sid"]
    assert sim.count("create") == 3
    assert len(sim.messages()) == 1
    assert sleeps == [2, 2]


def test_queue_full_21611_is_retried_within_the_bound(env):
    sim, store = env
    sleeps = Sleeps()
    with pytest.raises(RetryableTwilioError, match="21611"):
        sender(store, sleeps=sleeps).send(req(from_="+15005550008"))
    assert sim.count("create") == 4
    assert len(sleeps) == 3


def test_503_is_an_unknown_outcome_reconciled_before_sending_again(env):
    sim, store = env
    sim.add_fault("503_before", count=1)
    result = sender(store).send(req())
    assert result["sid"]
    assert len(sim.messages()) == 1
    assert sim.count("list") >= 1


def test_retries_are_bounded(env):
    sim, store = env
    sim.add_fault("429", count=None, retry_after=0)
    with pytest.raises(Exception, match="20429"):
        sender(store).send(req())
    assert sim.count("create") == 4
    assert sim.messages() == []
    assert store.get_message(scope=f"{sim.account_sid}|", idempotency_key="key-1")["send_state"] == "claimed"


@pytest.mark.parametrize("fault", ["500_after", "reset_after", "slow"])
def test_unknown_outcome_is_reconciled_never_re_posted_blindly(env, fault):
    sim, store = env
    sim.add_fault(fault, delay=1.0)
    result = sender(store, timeout=0.4).send(req())
    assert sim.count("create") == 1
    assert len(sim.messages()) == 1
    assert result["sid"] == sim.messages()[0]["sid"]
    assert result["already_sent"]
    assert sim.count("list") >= 1


def test_reset_before_the_request_left_is_sent_again(env):
    sim, store = env
    sim.add_fault("reset_before")
    result = sender(store).send(req())
    assert len(sim.messages()) == 1
    assert result["sid"] == sim.messages()[0]["sid"]


def test_reconcile_does_not_claim_the_same_text_sent_under_another_key(env):
    sim, store = env
    other = sender(store).send(req(key="earlier-send"))
    sim.add_fault("500_before")  # unknown outcome: reconcile sees only the earlier, other-keyed message
    result = sender(store).send(req(key="later-send"))
    assert result["sid"] != other["sid"]
    assert len(sim.messages()) == 2


def test_rate_limit_returns_the_next_free_moment_and_sends_nothing(env):
    sim, store = env
    limit = parse_rate_limit("2/1m")
    for i in range(2):
        assert "sid" in sender(store).send(req(key=f"k{i}", rate_limit=limit, pool="qa"))
    limited = sender(store).send(req(key="k3", rate_limit=limit, pool="qa"))
    assert isinstance(limited, RateLimited)
    assert limited.pool == "pool:qa"
    assert 55 < (limited.next_free_at.timestamp() - time.time()) <= 60
    assert sim.count("create") == 2
    # Nothing reached Twilio: no claim is left behind to be counted as pending.
    assert store.get_message(scope=f"{sim.account_sid}|", idempotency_key="k3") is None


def test_segment_rate_limit_counts_segments(env):
    sim, store = env
    limit = parse_rate_limit("3/1m")
    assert "sid" in sender(store).send(
        req(key="a", body="x" * 200, rate_limit=limit, rate_limit_unit="segments")
    )
    assert isinstance(sender(store).send(req(key="b", body="x" * 200, rate_limit=limit,
                                             rate_limit_unit="segments")), RateLimited)


def test_every_post_takes_a_slot_of_its_own_a_429_retry_too(env):
    """Twilio refused the first POST (429, Retry-After 0); the retry is a second request reaching Twilio
    and needs a second slot: under 1 per minute there is none, so nothing more is sent and no claim stays."""
    sim, store = env
    sim.add_fault("429", count=1, retry_after=0)
    limited = sender(store).send(req(key="k1", rate_limit=parse_rate_limit("1/1m"), pool="qa"))
    assert isinstance(limited, RateLimited)
    assert 59 < limited.wait_seconds <= 60
    assert sim.count("create") == 1
    assert store.get_message(scope=f"{sim.account_sid}|", idempotency_key="k1") is None


def test_a_request_that_never_left_gives_its_slot_back(env, twilio_conn):
    """Connection refused on every attempt: no request reached Twilio, so under 1 per minute each of the 4
    attempts got the one slot, and a send right after gets it too."""
    from conftest import free_port

    sim, store = env
    limit = parse_rate_limit("1/1m")
    twilio_conn(api_base_url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    sleeps = Sleeps()
    with pytest.raises(RetryableTwilioError, match="never left"):
        sender(store, sleeps=sleeps).send(req(key="k1", rate_limit=limit, pool="qa"))
    assert len(sleeps) == 3  # four attempts, each with the slot
    twilio_conn()
    assert "sid" in sender(store).send(req(key="k2", rate_limit=limit, pool="qa"))


def test_a_request_that_could_not_leave_in_time_takes_a_new_slot(env, monkeypatch):
    """The attempt's mark took longer than ``rate_send_bound`` after its grant: the grant is given back and
    a new one taken right before the request leaves (under 1 per minute: only possible if the first went
    back), and one message is sent."""
    sim, store = env
    slow = {"left": 1}
    real_mark = store.mark_attempt

    def slow_mark(*args, **kwargs):
        if slow["left"]:
            slow["left"] -= 1
            time.sleep(0.3)
        return real_mark(*args, **kwargs)

    monkeypatch.setattr(store, "mark_attempt", slow_mark)
    sent_by = sender(store)
    sent_by.rate_send_bound = 0.2
    result = sent_by.send(req(key="k1", rate_limit=parse_rate_limit("1/1m"), pool="qa"))
    assert result["sid"].startswith("SM")
    assert not slow["left"]
    assert sim.count("create") == 1


# --- several processes -------------------------------------------------------------------------

class _Warnings(logging.Handler):
    """The package's warnings in a child, kept to report with its outcome."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen = []

    def emit(self, record):
        self.seen.append(f"{record.name}: {record.getMessage()}")


def _send_in_child(url, start, out, key, limit):
    warnings = _Warnings()
    logging.getLogger("airflow_provider_twilio_sms").addHandler(warnings)
    store = SmsStore(url)
    start.wait()
    began = time.time()
    try:
        result = sender(store, lease=30).send(
            req(key=key, rate_limit=parse_rate_limit(limit) if limit else None, pool="team_qa")
        )
        outcome = "limited" if isinstance(result, RateLimited) else (
            "again" if result["already_sent"] else "sent")
    except Exception as err:  # noqa: BLE001
        outcome = f"error: {type(err).__name__}: {err}"
    out.put((key, outcome, round(began, 3), round(time.time() - began, 3), warnings.seen))


def _run_children(store, keys, limit=None, details=None):
    """Each key sent from its own forked process, all let go at once; their outcomes (``details``, when
    given, gets each child's key, outcome, start time, duration and warnings)."""
    url = store.engine.url.render_as_string(hide_password=False)
    start, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_send_in_child, args=(url, start, out, key, limit)) for key in keys]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"children {hung} did not finish within 120 s"
    reports = [out.get(timeout=5) for _ in procs]
    if details is not None:
        details += reports
    return [outcome for _, outcome, *_ in reports]


def test_16_processes_with_one_key_make_exactly_one_create_request(env):
    sim, store = env
    outcomes = _run_children(store, ["same-key"] * 16)
    assert sim.count("create") == 1, outcomes
    assert outcomes.count("sent") == 1
    assert outcomes.count("again") == 15


def test_20_sends_from_4_processes_under_5_per_minute(env):
    """Five batches of four processes let go at once, one pool of 5 per minute. The limit holds where it
    matters, at the stand-in by each create's arrival: never more than 5 within 60 s; and no slot is lost
    (the first 5 go out). On a machine slow enough that the batches span more than a window, a sixth send is
    right, so the count of sends is not fixed at 5 beyond that."""
    sim, store = env
    outcomes, details = [], []
    began = time.monotonic()
    for batch in range(5):
        keys = [f"send-{batch}-{i}" for i in range(4)]
        outcomes += _run_children(store, keys, limit="5/1m", details=details)
    took = time.monotonic() - began
    arrived = sorted(datetime.fromisoformat(c["at"]) for c in sim.creates())
    report = (f"{took:.1f} s; children (key, outcome, start, duration, warnings): {details}; creates: "
              f"{[(c['at'], c['status_code'], c['error_code']) for c in sim.creates()]}; pool and slots: "
              f"{_rate_rows(store)}")
    assert set(outcomes) <= {"sent", "limited"}, report
    assert len(arrived) == outcomes.count("sent"), report  # one create per message sent
    crowded = [i for i in range(len(arrived) - 5) if (arrived[i + 5] - arrived[i]).total_seconds() < 60]
    assert not crowded, report
    assert outcomes.count("sent") >= 5, report
    if took < 55:  # every batch within one window of the first sends: exactly the limit went out
        assert outcomes.count("sent") == 5, report


def _rate_rows(store):
    from sqlalchemy import select

    from airflow_provider_twilio_sms.store import tables as t

    with store.engine.connect() as conn:
        return ([tuple(r) for r in conn.execute(select(t.rate_pool))],
                [tuple(r) for r in conn.execute(select(t.rate_slot).order_by(t.rate_slot.c.slot))])


def _die_after_twilio_accepted(url, key="crash-key", body="Your code is 123456", rewrite=None,
                               store_bodies=False):
    """A worker that dies (SIGKILL) between Twilio's accept and the SID record. ``rewrite``: the message
    goes through a Messaging Service that rewrites it (``"smart"`` encoding or ``"links"`` shortened)."""
    store = SmsStore(url)
    doomed = sender(store, lease=1, attempt_id="try-1", store_bodies=store_bodies)
    if rewrite:
        def send_rewritten(to, text, **_):
            options = {"smart_encoded": True} if rewrite == "smart" else {"shorten_urls": True}
            doomed.hook.client.messages.create(to=to, body=text, messaging_service_sid=SERVICE, **options)
            os.kill(os.getpid(), signal.SIGKILL)
        doomed.hook.send_message = send_rewritten
    store.record_sent = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # the worker dies right here
    doomed.send(req(key=key, body=body, messaging_service_sid=SERVICE if rewrite else None))


def _kill_a_worker_after_twilio_accepted(store, sim, **kwargs):
    url = store.engine.url.render_as_string(hide_password=False)
    child = CTX.Process(target=_die_after_twilio_accepted, args=(url,), kwargs=kwargs)
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    assert sim.count("create") == 1


def _creates_of(sim, body):
    return [c for c in sim.creates() if c["body"] == body]


@pytest.mark.parametrize("store_bodies", [False, True])
def test_worker_killed_after_twilio_accepted_the_retry_returns_the_same_sid(env, store_bodies):
    """Reconciliation matches by the retried request's own text against Twilio's: it works alike whether
    the store kept the text or only its SHA-256 ([twilio_sms] store_outbound_bodies)."""
    sim, store = env
    _kill_a_worker_after_twilio_accepted(store, sim, store_bodies=store_bodies)
    crashed = store.get_message(scope=f"{sim.account_sid}|", idempotency_key="crash-key")
    assert (crashed["sid"], crashed["body"]) == (None, "Your code is 123456" if store_bodies else None)
    assert crashed["body_sha256"] == body_digest("Your code is 123456")
    retried = sender(store, lease=1, attempt_id="try-2", store_bodies=store_bodies).send(req(key="crash-key"))
    assert retried["sid"] == sim.messages()[0]["sid"]
    assert retried["already_sent"]
    assert sim.count("create") == 1


@pytest.mark.parametrize("others", [55, 260])
@pytest.mark.parametrize("delivery", ["sent", "still_queued"])
def test_crash_recovery_sends_once_however_busy_the_number_is(env, others, delivery):
    """After the crash, ``others`` messages go to the same number (every fifth the same text under its
    own key, through the store; the rest other texts, straight to Twilio) before the retry, and Twilio
    pages its list 50 at a time: the retry finds the crashed attempt's message, it does not POST."""
    sim, store = env
    body = "Your code is 123456"
    if delivery == "still_queued":  # not sent yet: Twilio's DateSent filter leaves these out
        sim.callback_delay = 3600
    _kill_a_worker_after_twilio_accepted(store, sim, body=body)
    crashed_sid = sim.messages()[0]["sid"]
    hook = TwilioSmsHook()
    for i in range(others):
        if i % 5 == 0:
            assert not sender(store).send(req(key=f"other-{i}", body=body))["already_sent"]
        else:
            hook.send_message(TO, f"Reminder {i}: your appointment is tomorrow")
    lists_before = sim.count("list")
    retried = sender(store, lease=1, attempt_id="try-2", page_size=50).send(req(key="crash-key", body=body))
    assert retried["sid"] == crashed_sid
    assert retried["already_sent"]
    assert len(_creates_of(sim, body)) == 1 + len(range(0, others, 5))  # one per key
    assert sim.count("create") == 1 + others
    assert sim.count("list") - lists_before > (others + 1) // 50  # it read every page, not the newest 50
    row = store.get_message(scope=f"{sim.account_sid}|", idempotency_key="crash-key")
    assert row["sid"] == crashed_sid
    assert row["send_state"] == "sent"


@pytest.mark.parametrize(("rewrite", "body"), [
    ("smart", "Your code is \u201c123456\u201d \u2014 it expires in 10 minutes\u2026"),
    ("links", "Your order shipped: track it at https://shop.example.com/orders/8812?ref=sms"),
])
def test_a_message_twilio_rewrote_is_an_unknown_outcome_naming_it_never_a_second_post(env, rewrite, body):
    sim, store = env
    _kill_a_worker_after_twilio_accepted(store, sim, body=body, rewrite=rewrite)
    candidate = sim.messages()[0]
    assert candidate["body"] != body  # Twilio changed the text it stored
    hook = TwilioSmsHook()
    for i in range(3):  # other messages to the number are not mistaken for it
        hook.send_message(TO, f"Reminder {i}: your appointment is tomorrow")
    for attempt in ("try-2", "try-3"):  # and it stays undecided until a person decides
        with pytest.raises(UnknownOutcomeError) as caught:
            sender(store, lease=1, attempt_id=attempt).send(req(key="crash-key", body=body,
                                                                messaging_service_sid=SERVICE))
        assert caught.value.candidate_sids == (candidate["sid"],)
        assert candidate["sid"] in str(caught.value)
        assert "***0123" in str(caught.value)
        assert TO not in str(caught.value)
        assert "123456" not in str(caught.value)
        assert "shop.example" not in str(caught.value)
    assert len(_creates_of(sim, body)) == 1
    assert sim.count("create") == 4
    assert store.get_message(scope=f"{sim.account_sid}|", idempotency_key="crash-key")["sid"] is None


@pytest.mark.parametrize("fault", ["500_before", "503_before", "429", "slow", "reset_before"])
def test_a_failing_list_during_reconciliation_is_this_packages_retryable_error(env, fault):
    sim, store = env
    _kill_a_worker_after_twilio_accepted(store, sim)
    sim.add_fault(fault, endpoint="list", delay=1.0, retry_after=0)
    with pytest.raises(RetryableTwilioError) as caught:
        sender(store, timeout=0.4, lease=1, attempt_id="try-2").send(req(key="crash-key"))
    assert isinstance(caught.value, TwilioSmsError)
    assert sim.count("create") == 1
    retried = sender(store, lease=1, attempt_id="try-3").send(req(key="crash-key"))  # at once: no lease wait
    assert retried["sid"] == sim.messages()[0]["sid"]
    assert sim.count("create") == 1

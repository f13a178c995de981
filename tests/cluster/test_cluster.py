"""The provider on Airflow's distributed engine (scripts/cluster.py): separate scheduler, dag-processor,
triggerer and api-server, two Celery workers, PostgreSQL and Redis, the local Twilio stand-in.

DAG runs are triggered through the REST API with a token, as a user does. After each run, and after each
fault, the same checks hold at the stand-in and in the store (:func:`check_bulk_run`): never more creates
than the limit in any window (by arrival time), exactly one create per idempotency key, every task
success, every status callback the stand-in delivered stored exactly once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from cluster_testing import SENDS, cluster_fixture  # noqa: F401 - the module's `cluster` fixture

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

BULK = "twilio_sms_cluster_bulk"
LIMIT, WINDOW = 20, 10.0  # the team pool: 20 sends per 10 s
# Under faults a tighter limit, so that it binds at the rate this small cluster sends (about one a second
# on a loaded 2-core machine): the limit must hold while tasks are retried, not merely be out of reach.
FAULT_LIMIT = 6
PERSON = "+14155550100"


# --- what every run must show ----------------------------------------------------------------------------

def _creates(cluster, tag: str) -> list[dict]:
    """The stand-in's create requests of one run (its body carries the run's tag), by arrival."""
    records = cluster.sim("GET", "requests")["creates"]
    return [r for r in records if tag in (r.get("body") or "")]


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open window of ``window`` seconds (a window starting at each event)."""
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


def _key_digest(record: dict) -> str | None:
    callback = record.get("status_callback") or ""
    return (parse_qs(urlsplit(callback).query).get("ik_sha256") or [None])[0]


def wait_callbacks_settled(cluster, sids: set[str], timeout: float = 120.0) -> list[dict]:
    """The stand-in's callback records for ``sids`` once every message has had its final status
    callback answered or given up (no retry pending), or at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        records = [c for c in cluster.sim("GET", "callbacks")["callbacks"] if c["sid"] in sids]
        final = {c["sid"] for c in records if c["status"] in ("delivered", "undelivered", "failed")}
        messages = {m["sid"]: m for m in cluster.sim("GET", "messages")["messages"] if m["sid"] in sids}
        settled = final >= sids and all(m["status"] in ("delivered", "undelivered", "failed")
                                        for m in messages.values())
        if settled or time.monotonic() > deadline:
            time.sleep(3)  # a retry of the last attempt may still be on its way
            return [c for c in cluster.sim("GET", "callbacks")["callbacks"] if c["sid"] in sids]
        time.sleep(2)


def check_callbacks_stored_once(cluster, sids: set[str]) -> dict[str, int]:
    """Every (message, status) the webhook accepted (200) is in the store exactly once, and the store holds
    nothing twice; returns counts for the report."""
    from airflow_provider_twilio_sms.store import engine as store_engine
    from airflow_provider_twilio_sms.store.api import SmsStore

    records = wait_callbacks_settled(cluster, sids)
    accepted = {(c["sid"], c["status"]) for c in records if c["answer"] == 200}
    attempted = {(c["sid"], c["status"]) for c in records}
    # This process's pooled connections may have been cut by a store outage: read on fresh ones.
    for url in [u for u in store_engine._engines if u == cluster.store_url]:
        store_engine._engines.pop(url).dispose()
    store = SmsStore(cluster.store_url)
    stored: Counter = Counter()
    for sid in sids:
        for event in store.status_history(sid):
            stored[(sid, event["status"])] += 1
    twice = {pair: n for pair, n in stored.items() if n > 1}
    assert not twice, f"status callbacks stored more than once: {list(twice.items())[:5]}"
    missing = accepted - set(stored)
    assert not missing, (f"{len(missing)} callbacks the webhook accepted are not in the store: "
                         f"{sorted(missing)[:5]}")
    lost = attempted - accepted
    assert not lost, (f"{len(lost)} status callbacks were never accepted by the webhook after the stand-in's "
                      f"retries: {sorted(lost)[:5]}")
    return {"callbacks_accepted": len(accepted), "attempts": len(records),
            "retried": sum(1 for c in records if c["attempt"] > 1)}


def check_bulk_run(cluster, run_id: str, tag: str, sends: int, limit: int = LIMIT) -> dict:
    """The checks every bulk run must pass; returns what was measured."""
    tis = cluster.task_instances(BULK, run_id)
    states = Counter(ti["state"] for ti in tis)
    assert len(tis) == sends, f"{len(tis)} task instances, expected {sends}"
    assert states == {"success": sends}, f"task states {dict(states)} of {sends}"
    creates = _creates(cluster, tag)
    times = [datetime.fromisoformat(c["at"]).timestamp() for c in creates]
    busiest = max_in_window(times, WINDOW)
    assert busiest <= limit, f"{busiest} creates arrived within {WINDOW:.0f} s (limit {limit})"
    keys = Counter(_key_digest(c) for c in creates)
    assert None not in keys, "a create without the idempotency key's digest in its StatusCallback"
    twice = [k for k, n in keys.items() if n > 1]
    assert not twice, f"{len(twice)} idempotency keys were sent more than once"
    assert len(keys) == sends, f"{len(keys)} idempotency keys reached the stand-in, expected {sends}"
    sids = {c["sid"] for c in creates if c["sid"]}
    assert len(sids) == sends, f"{len(sids)} messages created for {sends} sends"
    report = {"sends": sends, "limit": f"{limit}/{WINDOW:.0f}s", "busiest_window": busiest,
              "seconds": round(max(times) - min(times), 1) if times else 0.0}
    report.update(check_callbacks_stored_once(cluster, sids))
    return report


def trigger_bulk(cluster, label: str, limit: int = LIMIT) -> tuple[str, str]:
    tag = f"{label}-{uuid.uuid4().hex[:6]}"
    cluster.wait_dag(BULK)
    conf = {"message": f"Cluster test {tag}.", "rate_limit": f"{limit}/{WINDOW:.0f}s"}
    run_id = cluster.trigger(BULK, conf, run_id=f"{label}_{tag}")
    return run_id, tag


def worker_runs(cluster, run_id: str) -> Counter:
    """How many task executions of ``run_id`` each Celery worker's log shows."""
    found: Counter = Counter()
    for name, comp in cluster.components.items():
        if name.startswith("worker-"):
            found[name] = comp.log.read_text(errors="replace").count(run_id)
    return found


def _descends_from(pid: int | None, ancestor: int | None) -> bool:
    """Whether process ``pid`` is ``ancestor`` or one of its descendants (read from /proc)."""
    while pid and ancestor and pid > 1:
        if pid == ancestor:
            return True
        try:
            with open(f"/proc/{pid}/stat") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])  # the parent's pid
        except (OSError, ValueError, IndexError):
            return False
    return False


def running_on(cluster, worker: str, run_id: str) -> list[dict]:
    """The run's task instances that Airflow has as running in a process of ``worker`` now."""
    pid = cluster.components[worker].pid
    return [ti for ti in cluster.task_instances(BULK, run_id)
            if ti["state"] == "running" and _descends_from(ti.get("pid"), pid)]


def report(name: str, figures: dict) -> None:
    print(f"\n[cluster] {name}: {json.dumps(figures)}")


def test_the_window_check_counts_any_window_not_only_aligned_ones():
    assert max_in_window([0.0, 5.0, 9.9, 10.0, 19.9], 10.0) == 3  # 0, 5, 9.9 (10.0 is outside [0, 10))
    assert max_in_window([0.0, 10.0, 20.0], 10.0) == 1
    assert max_in_window([1.0, 9.5, 10.5, 11.0, 18.0], 10.0) == 4  # [9.5, 19.5) spans two aligned windows
    assert max_in_window([], 10.0) == 0


def test_a_component_that_dies_is_named_with_its_log(tmp_path):
    import sys

    from cluster import Cluster, ClusterError, Component

    cluster = Cluster(root=tmp_path)
    cluster.logs.mkdir(parents=True)
    comp = Component("triggerer", [sys.executable, "-c", "print('no database'); raise SystemExit(3)"],
                     {}, cluster.logs / "triggerer.log")
    cluster.components["triggerer"] = comp
    comp.start()
    try:
        with pytest.raises(ClusterError, match=r"(?s)triggerer exited with 3.*triggerer\.log.*no database"):
            cluster.wait_healthy("triggerer", timeout=30)
    finally:
        comp.stop()


# --- the bulk run -------------------------------------------------------------------------------------

def test_bulk_run_holds_the_rate_limit_across_both_workers(cluster):
    run_id, tag = trigger_bulk(cluster, "bulk")
    started = time.monotonic()
    assert cluster.wait_run(BULK, run_id, timeout=400) == "success"
    figures = check_bulk_run(cluster, run_id, tag, SENDS)
    spread = worker_runs(cluster, run_id)
    assert all(spread[name] > 0 for name in ("worker-1", "worker-2")), f"tasks per worker log: {dict(spread)}"
    figures.update(run_seconds=round(time.monotonic() - started, 1), per_worker=dict(spread))
    report("bulk run", figures)


def test_worker_sigkill_mid_run_is_retried_on_the_other_worker(cluster):
    run_id, tag = trigger_bulk(cluster, "sigkill", FAULT_LIMIT)
    deadline = time.monotonic() + 240
    # Kill once some sends have gone out and a task of this run runs in a process of worker-1 (by the pid
    # Airflow holds for it; most of the time its slots are free: tasks waiting for a rate-limit slot wait
    # deferred, not on a worker). A kill that lands just after that task deferred or finished hit nothing:
    # worker-1 is started again and the next running task is killed instead.
    killed: list[dict] = []
    try:
        while not killed:
            assert time.monotonic() < deadline, "no task of the run was killed running on worker-1 in 240 s"
            assert cluster.run_state(BULK, run_id) not in ("success", "failed"), "the run ended first"
            going = len(_creates(cluster, tag)) >= SENDS // 4
            victims = running_on(cluster, "worker-1", run_id) if going else []
            if not victims:
                time.sleep(0.2)
                continue
            sent_before = len(_creates(cluster, tag))
            cluster.kill("worker-1")
            now = {(ti["task_id"], ti["map_index"]): ti for ti in cluster.task_instances(BULK, run_id)}
            killed = [now[v["task_id"], v["map_index"]] for v in victims
                      if now[v["task_id"], v["map_index"]]["state"] == "running"
                      and now[v["task_id"], v["map_index"]]["try_number"] == v["try_number"]]
            if not killed:
                cluster.restart("worker-1")
        assert cluster.wait_run(BULK, run_id, timeout=480) == "success"
        figures = check_bulk_run(cluster, run_id, tag, SENDS, FAULT_LIMIT)
        after = {(ti["task_id"], ti["map_index"]): ti for ti in cluster.task_instances(BULK, run_id)}
        tries = Counter(ti["try_number"] for ti in after.values())
        figures.update(sent_before_kill=sent_before, try_numbers=dict(tries), killed=len(killed))
        for ti in killed:
            again = after[ti["task_id"], ti["map_index"]]
            assert again["try_number"] > ti["try_number"], (
                f"task {ti['task_id']}[{ti['map_index']}] was killed running try {ti['try_number']} and "
                f"ended {again['state']} at try {again['try_number']}: Airflow did not retry it")
        report("worker SIGKILL", figures)
    finally:
        if not cluster.components["worker-1"].alive():
            cluster.restart("worker-1")


def test_store_unreachable_for_10s_mid_run(cluster):
    from cluster import store_outage

    run_id, tag = trigger_bulk(cluster, "storeoutage", FAULT_LIMIT)
    deadline = time.monotonic() + 240
    while len(_creates(cluster, tag)) < SENDS // 4:
        assert time.monotonic() < deadline, "the run did not get going within 240 s"
        time.sleep(0.5)
    with store_outage(cluster):
        time.sleep(10)
    assert cluster.wait_run(BULK, run_id, timeout=400) == "success"
    figures = check_bulk_run(cluster, run_id, tag, SENDS, FAULT_LIMIT)
    figures["try_numbers"] = dict(Counter(ti["try_number"] for ti in cluster.task_instances(BULK, run_id)))
    report("store unreachable 10 s", figures)


def test_api_server_restart_with_callbacks_in_flight(cluster):
    """Callbacks come 6 s after each step while an api-server replica is stopped and started again behind
    the ingress (one replica: each restart takes a minute here; a rolling restart repeats it per replica):
    the webhook keeps answering through the other replica, and what failed on its way is retried by the
    stand-in as the URL's connection overrides say (``#rc=5&rp=ct,rt,5xx``, within Twilio's 15 s)."""
    cluster.sim("POST", "callbacks", {"status_delay": 6})
    try:
        run_id, tag = trigger_bulk(cluster, "apirestart")
        deadline = time.monotonic() + 240
        while len(_creates(cluster, tag)) < SENDS // 4:
            assert time.monotonic() < deadline, "the run did not get going within 240 s"
            time.sleep(0.5)
        windows, seconds = [], {}
        for name in ("api-server-1",):
            began = time.time()
            seconds[name] = round(cluster.restart(name), 1)
            windows.append((began, time.time()))
        assert cluster.wait_run(BULK, run_id, timeout=400) == "success"
        figures = check_bulk_run(cluster, run_id, tag, SENDS)
        sids = {c["sid"] for c in _creates(cluster, tag)}
        during = [c for c in cluster.sim("GET", "callbacks")["callbacks"] if c["sid"] in sids
                  and any(a <= datetime.fromisoformat(c["at"]).timestamp() <= b for a, b in windows)]
        assert any(c["answer"] == 200 for c in during), "no callback was answered while a replica restarted"
        figures.update(restart_seconds=seconds, callbacks_during_restarts=len(during))
        report("api-server restart", figures)
    finally:
        cluster.sim("POST", "callbacks", {"status_delay": cluster.callback_delay})


# --- deferred sensors on the triggerer ------------------------------------------------------------------

class SignupHandler(BaseHTTPRequestHandler):
    """The product the OTP DAG tests: POST /signup {"phone": ...} asks it to text a code to that number.
    It only records the request (answering 202); the test then has the code arrive through the stand-in,
    as an inbound message to our number, when the sensor is deferred."""

    requests: list[str] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append(json.loads(body)["phone"])
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):  # no access log on the test's output
        pass


def signup_app() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SignupHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/signup"


def _ti(cluster, dag_id: str, run_id: str, task_id: str) -> dict:
    return next(ti for ti in cluster.task_instances(dag_id, run_id) if ti["task_id"] == task_id)


def _triggerer_job(cluster, dag_id: str, run_id: str, task_id: str) -> int | None:
    """The id of the triggerer job running the task instance's trigger (None: no triggerer has it)."""
    return (_ti(cluster, dag_id, run_id, task_id).get("trigger") or {}).get("triggerer_id")


def test_deferred_sensors_resume_on_the_triggerer_across_its_restart(cluster):
    from cluster import OUR_NUMBER

    SignupHandler.requests.clear()
    app, signup_url = signup_app()
    sensors = {"twilio_sms_send_and_wait": "wait_delivered", "twilio_sms_approval": "wait_answer",
               "twilio_sms_otp_capture": "wait_for_code"}
    # Delivery statuses come 25 s after each step: the status sensor waits deferred meanwhile.
    cluster.sim("POST", "callbacks", {"status_delay": 25})
    try:
        runs = {}
        for dag_id in sensors:
            cluster.wait_dag(dag_id)
        runs["twilio_sms_send_and_wait"] = cluster.trigger("twilio_sms_send_and_wait", {"phone": PERSON})
        runs["twilio_sms_approval"] = cluster.trigger("twilio_sms_approval", {"approver": PERSON})
        runs["twilio_sms_otp_capture"] = cluster.trigger("twilio_sms_otp_capture",
                                                         {"signup_url": signup_url, "our_number": OUR_NUMBER})
        deadline = time.monotonic() + 240
        waiting = dict(sensors)
        while waiting:
            for dag_id, task_id in list(waiting.items()):
                state = _ti(cluster, dag_id, runs[dag_id], task_id)["state"]
                assert state not in ("success", "failed", "upstream_failed"), f"{dag_id}.{task_id} {state}"
                if state == "deferred":
                    del waiting[dag_id]
            assert time.monotonic() < deadline, f"sensors not deferred within 240 s: {waiting}"
            time.sleep(1)
        # While deferred they hold no worker slot: no task of these runs is running on a worker.
        for dag_id, run_id in runs.items():
            tis = cluster.task_instances(dag_id, run_id)
            running = [ti["task_id"] for ti in tis if ti["state"] == "running"]
            assert not running, f"{dag_id} has running tasks while its sensor waits: {running}"
        before = {dag_id: _triggerer_job(cluster, dag_id, runs[dag_id], task_id)
                  for dag_id, task_id in sensors.items()}
        seconds = cluster.restart("triggerer")
        # The new triggerer takes the triggers over: each deferred sensor names another triggerer job.
        deadline = time.monotonic() + 120
        for dag_id, task_id in sensors.items():
            while _triggerer_job(cluster, dag_id, runs[dag_id], task_id) in (None, before[dag_id]):
                assert time.monotonic() < deadline, f"{dag_id}.{task_id} not taken over by the new triggerer"
                time.sleep(1)
            assert _ti(cluster, dag_id, runs[dag_id], task_id)["state"] == "deferred"
        # Now the person answers and the app texts its code; the new triggerer must see both.
        ask = next(m for m in cluster.sim("GET", "messages")["messages"]
                   if m["to"] == PERSON and "Reply YES" in (m.get("body") or ""))
        cluster.sim("POST", "inbound", {"from": PERSON, "to": ask["from"], "body": "YES"})
        assert SignupHandler.requests == [OUR_NUMBER]
        code = f"{uuid.uuid4().int % 10**6:06d}"
        cluster.sim("POST", "inbound", {"from": "+14155550199", "to": OUR_NUMBER,
                                        "body": f"Your code is {code}"})
        for dag_id, run_id in runs.items():
            assert cluster.wait_run(dag_id, run_id, timeout=240) == "success", dag_id
        approval = {ti["task_id"]: ti["state"] for ti in cluster.task_instances("twilio_sms_approval",
                                                                                 runs["twilio_sms_approval"])}
        assert approval["deploy"] == "success", approval
        assert approval["stop"] == "skipped", approval
        sent = {c["sid"] for c in cluster.sim("GET", "requests")["creates"] if c["to"] == PERSON and c["sid"]}
        assert len(sent) == 2, f"{len(sent)} messages sent to the person, expected 2 (notice and question)"
        figures = check_callbacks_stored_once(cluster, sent)
        figures.update(triggerer_restart_seconds=round(seconds, 1), triggerer_jobs_before=before)
        report("deferred sensors", figures)
    finally:
        app.shutdown()
        cluster.sim("POST", "callbacks", {"status_delay": cluster.callback_delay})

"""Human-in-the-loop answered by SMS, end to end, on one real Airflow shared by every case.

``airflow api-server`` (with this provider's plugin: the inbound webhook answers through the same code path
as ``PATCH .../hitlDetails``), ``airflow scheduler`` (LocalExecutor) and ``airflow dag-processor`` run as
subprocesses on a migrated SQLite metadata DB; the local Twilio stand-in receives the notifiers' SMS and
delivers signed inbound replies to the webhook. Every DAG run is triggered at once, so that several requests
wait on Alice's phone together (their codes must differ), then each case answers its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from html import unescape
from pathlib import Path

import httpx
import pytest

from conftest import MIGRATED_METADATA_DB, REPO, airflow_bin, free_port

sys.path.insert(0, str(REPO / "tests" / "browser"))
from airflow_server import AirflowApiServer

HERE = Path(__file__).resolve().parent
OURS = "+15005550006"
ALICE, BOB, MALLORY = "+14155550101", "+14155550102", "+14155550103"
APPROVAL_RUNS = ("approve-run", "reject-run", "ui-run", "standalone-run")
RUNS = {**dict.fromkeys(APPROVAL_RUNS, "hitl_sms_approval"), "entry-run": "hitl_sms_entry",
        "multi-run": "hitl_sms_multiple", "timeout-run": "hitl_sms_timeout", "example-run": "twilio_sms_hitl"}
WAIT_SECONDS = 150
CODE = re.compile(r'Reply "([A-Z2-9]{4})[ "]')

pytestmark = pytest.mark.timeout(400)


class Stack:
    """The running Airflow, the stand-in and a REST client as admin."""

    def __init__(self, server: AirflowApiServer, sim, procs: list[subprocess.Popen], standalone_url: str):
        self.server, self.sim, self.procs, self.standalone_url = server, sim, procs, standalone_url
        self.admin = httpx.Client(base_url=server.base_url, timeout=20,
                                  headers={"Authorization": f"Bearer {server.token('admin')}"})

    def ti(self, dag_id: str, run_id: str, task_id: str) -> dict:
        got = self.admin.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        got.raise_for_status()
        return got.json()

    def hitl(self, dag_id: str, run_id: str, task_id: str) -> dict:
        got = self.admin.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails")
        got.raise_for_status()
        return got.json()

    def wait_state(self, dag_id: str, run_id: str, task_id: str, *states: str) -> dict:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            ti = self.ti(dag_id, run_id, task_id)
            if ti["state"] in states:
                return ti
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id}/{run_id}/{task_id} is {ti['state']}, not {states}:\n"
                                     f"{self.logs()}")
            time.sleep(0.5)

    def code(self, run_id: str, to: str = ALICE, subject_prefix: str = "") -> str:
        """The reply code of the SMS texted to ``to`` for ``run_id`` (its subject names the run)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            for message in self.sim.messages():
                body = message.get("body") or ""
                if message.get("to") == to and run_id in body and body.startswith(subject_prefix):
                    match = CODE.search(body)
                    assert match, "the SMS says how to answer with a reply code"
                    return match.group(1)
            if time.monotonic() > deadline:
                raise AssertionError(f"no SMS for {run_id} within {WAIT_SECONDS} s:\n{self.logs()}")
            time.sleep(0.5)

    def parked(self, run_id: str, task_id: str) -> None:
        """Wait until the task waits for input AND the scheduler has seen its worker exit.

        Airflow 3.3.2 fails a HITL task that is answered (by its UI as well) before the scheduler processed
        the executor's "success" event of the worker that parked it: the resumed task is QUEUED by then,
        and the scheduler's guard for a resume-after-defer covers only SCHEDULED ("finished with state
        success, but the task instance's state attribute is queued"). A person answers seconds later; a
        test must wait for that event.
        """
        dag_id = RUNS[run_id]
        self.wait_state(dag_id, run_id, task_id, "awaiting_input")
        seen = ("Received executor event with state success for task instance "
                f"TaskInstanceKey(dag_id='{dag_id}', "
                f"task_id='{task_id}', run_id='{run_id}'")
        deadline = time.monotonic() + WAIT_SECONDS
        while seen not in (self.server.home / "scheduler.log").read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise AssertionError(f"the scheduler did not see {run_id}/{task_id} park:\n{self.logs()}")
            time.sleep(0.5)

    def reply(self, sender: str, body: str) -> str:
        """Text ``body`` from ``sender``; the text of the TwiML the webhook answered."""
        answer = self.sim.send_inbound(sender, OURS, body)
        assert answer["status_code"] == 200, answer
        assert "xml" in answer["content_type"]
        found = re.search(r"<Message>(.*)</Message>", answer["body"], re.DOTALL)
        return unescape(found.group(1)) if found else ""

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.server.home.glob("*.log")))


def _start(name: str, env: dict, home: Path, *args: str) -> subprocess.Popen:
    log = (home / f"{name}.log").open("w")
    return subprocess.Popen([airflow_bin(), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(airflow_home, tmp_path_factory):
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    home = tmp_path_factory.mktemp("hitl-airflow")
    (home / "dags").mkdir()
    shutil.copy(REPO / "dags_examples" / "twilio_sms_hitl.py", home / "dags")
    shutil.copy(HERE / "hitl_e2e_dags.py", home / "dags")
    store_url = f"sqlite:///{home / 'store.db'}"
    upgrade_url(store_url)
    sim = TwilioSimulator(callback_delay=0.05).start()
    server = AirflowApiServer(home, MIGRATED_METADATA_DB, extra_env={})
    server.env.update({
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__MULTI_TEAM": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,alice:user,bob:user",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{server.base_url}/execution/",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__TWILIO_SMS__HITL_USERS": json.dumps({BOB: "bob"}),
        "AIRFLOW_CONN_TWILIO_SMS_DEFAULT": json.dumps({
            "conn_type": "twilio_sms", "login": sim.account_sid, "password": sim.auth_token,
            "extra": {"from_number": OURS, "api_base_url": sim.base_url,
                      "webhook_base_url": server.base_url}}),
        "AIRFLOW_CONN_TWILIO_SMS_STORE_DEFAULT": json.dumps(
            {"conn_type": "generic", "extra": {"sqlalchemy_url": store_url}}),
    })
    sim.set_inbound_url(OURS, f"{server.base_url}/twilio_sms/webhooks/twilio_sms_default/inbound")
    procs: list[subprocess.Popen] = []
    try:
        # The DAG processor and the scheduler start while the api-server does (each start takes seconds of
        # CPU); the tasks they queue reach the api-server's execution API once it answers.
        procs += [_start("dag-processor", server.env, home, "dag-processor"),
                  _start("scheduler", server.env, home, "scheduler")]
        server.start(timeout=180)
        # The standalone webhook (for Airflows Twilio cannot reach): answers through the REST API, with
        # a token per mapped user so that responded_by names that user.
        port = free_port()
        standalone_url = f"http://127.0.0.1:{port}"
        standalone_env = {**server.env, "AIRFLOW__TWILIO_SMS__HITL_API_URL": server.base_url,
                          "AIRFLOW__TWILIO_SMS__HITL_API_TOKEN": json.dumps({"alice": server.token("alice")}),
                          "AIRFLOW_CONN_TWILIO_SMS_DEFAULT": json.dumps({
                              "conn_type": "twilio_sms", "login": sim.account_sid, "password": sim.auth_token,
                              "extra": {"from_number": OURS, "api_base_url": sim.base_url,
                                        "webhook_base_url": standalone_url}})}
        procs.append(_start("standalone-webhook", standalone_env, home, "twilio-sms", "webhook", "serve",
                            "--host", "127.0.0.1", "--port", str(port), "--store-url", store_url))
        running = Stack(server, sim, procs, standalone_url)
        _trigger_all(running)
        yield running
    finally:
        for proc in procs:
            _stop(proc)
        server.stop()
        sim.stop()


def _trigger_all(stack: Stack) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    for dag_id in sorted(set(RUNS.values())):
        while stack.admin.get(f"/api/v2/dags/{dag_id}").status_code != 200:
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} was not parsed in time:\n{stack.logs()}")
            time.sleep(1)
    for run_id, dag_id in RUNS.items():
        made = stack.admin.post(f"/api/v2/dags/{dag_id}/dagRuns",
                                json={"dag_run_id": run_id, "logical_date": None})
        assert made.status_code == 200, made.text


# -- the cases ---------------------------------------------------------------------------------------

def test_requests_pending_on_one_phone_have_distinct_codes(stack):
    pending = ("approve-run", "reject-run", "ui-run", "entry-run", "multi-run")
    codes = [stack.code(run_id) for run_id in pending]
    assert len(set(codes)) == len(codes)
    texts = [m["body"] for m in stack.sim.messages() if m.get("to") == ALICE and "approve-run" in m["body"]]
    assert len(texts) == 1, "the notifier texted once"
    assert texts[0].startswith("Deploy approve-run?\n")
    assert '"1" for Approve' not in texts[0]
    assert f'"{codes[0]} 1" for Approve, "{codes[0]} 2" for Reject' in texts[0]
    link = "/dags/hitl_sms_approval/runs/approve-run/tasks/approval/required_actions?map_index=-1"
    assert texts[0].endswith(stack.server.base_url + link)


def test_approve_by_sms_after_refusing_the_unauthorised(stack):
    code = stack.code("approve-run")
    bob_code = stack.code("approve-run", to=BOB)
    # Bob is mapped (by the admin) but not among the assigned users; Mallory is mapped by nobody.
    assert "may not answer" in stack.reply(BOB, f"{bob_code} 1")
    assert "may not answer" in stack.reply(MALLORY, f"{code} 1")
    assert "not one of the choices" in stack.reply(ALICE, f"{code} maybe")
    stack.parked("approve-run", "approval")
    assert stack.hitl("hitl_sms_approval", "approve-run", "approval")["response_received"] is False
    assert stack.ti("hitl_sms_approval", "approve-run", "approval")["state"] == "awaiting_input"

    assert stack.reply(ALICE, f"{code.lower()} approve") == "Thank you: recorded Approve."
    stack.wait_state("hitl_sms_approval", "approve-run", "approval", "success")
    stack.wait_state("hitl_sms_approval", "approve-run", "deploy", "success")
    detail = stack.hitl("hitl_sms_approval", "approve-run", "approval")
    assert detail["chosen_options"] == ["Approve"]
    assert detail["responded_by_user"] == {"id": "alice", "name": "alice"}
    # a late reply changes nothing and says so
    assert "already answered" in stack.reply(ALICE, f"{code} 2")
    assert stack.hitl("hitl_sms_approval", "approve-run", "approval")["chosen_options"] == ["Approve"]


def test_reject_by_option_number(stack):
    code = stack.code("reject-run")
    stack.parked("reject-run", "approval")
    assert stack.reply(ALICE, f"{code} 2") == "Thank you: recorded Reject."
    stack.wait_state("hitl_sms_approval", "reject-run", "approval", "success")
    stack.wait_state("hitl_sms_approval", "reject-run", "deploy", "skipped")
    assert stack.hitl("hitl_sms_approval", "reject-run", "approval")["chosen_options"] == ["Reject"]


def test_an_answer_in_the_ui_first_wins(stack):
    code = stack.code("ui-run")
    stack.parked("ui-run", "approval")
    alice = {"Authorization": f"Bearer {stack.server.token('alice')}"}
    answered = stack.admin.patch("/api/v2/dags/hitl_sms_approval/dagRuns/ui-run/taskInstances/approval/-1/"
                                 "hitlDetails", json={"chosen_options": ["Reject"]}, headers=alice)
    assert answered.status_code == 200, answered.text
    assert "already answered" in stack.reply(ALICE, f"{code} 1")
    stack.wait_state("hitl_sms_approval", "ui-run", "approval", "success")
    assert stack.hitl("hitl_sms_approval", "ui-run", "approval")["chosen_options"] == ["Reject"]


def test_free_text_entry(stack):
    code = stack.code("entry-run")
    stack.parked("entry-run", "entry")
    assert stack.reply(ALICE, f"{code} reason=late shipment; count=3").startswith("Thank you: recorded OK")
    stack.wait_state("hitl_sms_entry", "entry-run", "entry", "success")
    detail = stack.hitl("hitl_sms_entry", "entry-run", "entry")
    assert detail["params_input"] == {"reason": "late shipment", "count": 3}
    assert detail["responded_by_user"]["id"] == "alice"


def test_several_branches_by_number_and_name(stack):
    code = stack.code("multi-run")
    stack.parked("multi-run", "choose")
    assert stack.reply(ALICE, f"{code} 1, ASIA") == "Thank you: recorded eu, asia."
    for task_id, state in (("eu", "success"), ("asia", "success"), ("us", "skipped")):
        stack.wait_state("hitl_sms_multiple", "multi-run", task_id, state)


def test_a_reply_after_the_timeout_changes_nothing(stack):
    code = stack.code("timeout-run")
    stack.wait_state("hitl_sms_timeout", "timeout-run", "approval", "success", "failed")
    assert "timed out" in stack.reply(ALICE, f"{code} 1")
    detail = stack.hitl("hitl_sms_timeout", "timeout-run", "approval")
    assert detail["chosen_options"] == ["Reject"]
    assert detail["responded_by_user"] is None


def test_the_example_dag_approves_then_branches(stack):
    code = stack.code("example-run", subject_prefix="Release")
    stack.parked("example-run", "approve_release")
    assert stack.reply(ALICE, f"{code} 1") == "Thank you: recorded Approve."
    branch_code = stack.code("example-run", subject_prefix="How should")
    stack.parked("example-run", "choose_rollout")
    assert stack.reply(ALICE, f"{branch_code} canary") == "Thank you: recorded Canary."
    stack.wait_state("twilio_sms_hitl", "example-run", "canary", "success")
    stack.wait_state("twilio_sms_hitl", "example-run", "everyone", "skipped")


def test_the_standalone_webhook_answers_through_the_rest_api(stack):
    code = stack.code("standalone-run")
    stack.parked("standalone-run", "approval")
    webhook = "/twilio_sms/webhooks/twilio_sms_default/inbound"
    stack.sim.set_inbound_url(OURS, stack.standalone_url + webhook)
    try:
        _wait_listening(stack)
        assert "may not answer" in stack.reply(BOB, f"{stack.code('standalone-run', to=BOB)} 1")
        assert stack.reply(ALICE, f"{code} 1") == "Thank you: recorded Approve."
        assert "already answered" in stack.reply(ALICE, f"{code} 2")
    finally:
        stack.sim.set_inbound_url(OURS, stack.server.base_url + webhook)
    stack.wait_state("hitl_sms_approval", "standalone-run", "deploy", "success")
    detail = stack.hitl("hitl_sms_approval", "standalone-run", "approval")
    assert detail["chosen_options"] == ["Approve"]
    assert detail["responded_by_user"] == {"id": "alice", "name": "alice"}


def _wait_listening(stack: Stack) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            httpx.get(f"{stack.standalone_url}/twilio_sms/docs", timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise AssertionError(f"the standalone webhook did not start:\n{stack.logs()}") from None
            time.sleep(0.5)


def test_no_phone_number_in_any_log(stack):
    texts = [p.read_text(errors="replace") for p in stack.server.home.rglob("*.log")]
    texts += [p.read_text(errors="replace") for p in (stack.server.home / "logs").rglob("*") if p.is_file()]
    for number in (ALICE, BOB, MALLORY):
        assert not any(number[2:] in text for text in texts), f"{number[-4:]} appears in clear in a log"

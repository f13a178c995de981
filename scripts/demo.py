"""The main job end to end, offline: example DAGs send through the local Twilio stand-in, the stand-in
calls Airflow's api-server (the plugin's webhook) back with signed statuses and replies, and sensors see
them in the store. Prints a report; exits 0 only if everything happened.

Run it with ``bash scripts/demo.sh`` (which sets up .venv first).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUR_NUMBER = "+15005550006"  # our Twilio number (the stand-in's valid From)
OUR_SERVICE = "MG" + "0" * 31 + "1"  # our Messaging Service (scheduled messages need one)
PERSON = "+14155550100"  # the customer / approver / on-call person
APP_NUMBER = "+14155550199"  # the app under test's sender

HOME = Path(tempfile.mkdtemp(prefix="twilio-sms-demo-"))
os.environ.update({
    "AIRFLOW_HOME": str(HOME),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags_examples"),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME / 'airflow.db'}",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    "AIRFLOW__CORE__FERNET_KEY": "8tSk1lKfN3L7Vt7hOqkqYTGYyuvzx1sM0Y8P0b2nFhw=",
})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppUnderTest:
    """A stand-in for the product being tested: on POST /signup it texts a fresh code to the phone."""

    def __init__(self, sim):
        self.codes: list[str] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                phone = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["phone"]
                code = f"{random.randrange(10**6):06d}"
                app.codes.append(code)
                threading.Timer(
                    1.0, sim.send_inbound, args=(APP_NUMBER, phone, f"Your code is {code}")
                ).start()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/signup"


class Approver(threading.Thread):
    """The person's phone: answers YES to any message asking for one."""

    def __init__(self, sim):
        super().__init__(daemon=True)
        self.sim, self.answered = sim, set()

    def run(self):
        while True:
            for message in self.sim.messages():
                if (
                    message["to"] == PERSON
                    and "Reply YES" in message["body"]
                    and message["sid"] not in self.answered
                ):
                    self.answered.add(message["sid"])
                    time.sleep(1.0)
                    self.sim.send_inbound(PERSON, message["from"], "YES")
            time.sleep(0.2)


class TwilioClock(threading.Thread):
    """Twilio's clock, sped up: a scheduled message is sent 2 s after it was scheduled, not hours later."""

    def __init__(self, sim):
        super().__init__(daemon=True)
        self.sim, self.first_seen = sim, {}

    def run(self):
        while True:
            for held in self.sim.scheduled():
                seen = self.first_seen.setdefault(held["sid"], time.monotonic())
                if time.monotonic() - seen > 2.0:
                    self.sim.release_scheduled(held["sid"])
            time.sleep(0.2)


def start_api_server(port: int):
    import uvicorn
    from airflow.api_fastapi.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the api-server did not start within 60 s")
        time.sleep(0.1)
    return server


def xcom(dag_id: str, run_id: str, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalars(select(XComModel.value).where(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id,
            XComModel.key == "return_value")).first()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def xcom_text(dag_id: str, run_id: str) -> str:
    """Every XCom value of one run, as the text Airflow's database holds."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        values = session.scalars(select(XComModel.value).where(XComModel.dag_id == dag_id,
                                                               XComModel.run_id == run_id)).all()
    return json.dumps([v if isinstance(v, str) else json.dumps(v, default=str) for v in values])


def _settled(store, dag_id: str, timeout: float = 20.0) -> list[dict]:
    """The DAG's messages, once their callbacks have arrived (a DAG without a sensor ends before)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = sorted(
            (r for r in store.list_messages(limit=100) if r["dag_id"] == dag_id), key=lambda r: r["id"]
        )
        if all(r["status"] == "delivered" for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def main() -> int:
    print(f"Airflow home: {HOME}")
    migrate = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        capture_output=True,
        text=True,
        check=False,
    )
    if migrate.returncode != 0:
        print(migrate.stderr[-3000:])
        return 1

    from airflow_provider_twilio_sms.privacy import mask_number
    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator
    from airflow_provider_twilio_sms.store.locate import get_store

    sim = TwilioSimulator(callback_delay=0.5).start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    os.environ["AIRFLOW_CONN_TWILIO_SMS_DEFAULT"] = json.dumps({
        "conn_type": "twilio_sms", "login": sim.account_sid, "password": sim.auth_token,
        "extra": {"from_number": OUR_NUMBER, "messaging_service_sid": OUR_SERVICE,
                  "api_base_url": sim.base_url, "webhook_base_url": base}})
    os.environ["AIRFLOW_CONN_TWILIO_SMS_STORE_DEFAULT"] = json.dumps(
        {
            "conn_type": "generic",
            "extra": {"sqlalchemy_url": os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]},
        }
    )
    start_api_server(port)
    sim.set_inbound_url(OUR_NUMBER, f"{base}/twilio_sms/webhooks/twilio_sms_default/inbound")
    app = AppUnderTest(sim)
    Approver(sim).start()
    TwilioClock(sim).start()
    print(f"Twilio stand-in: {sim.base_url}   api-server with the webhook: {base}/twilio_sms\n")

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags_examples"))
    if bag.import_errors:
        print(f"DAG import errors: {bag.import_errors}")
        return 1
    runs = [
        ("twilio_sms_send_and_wait", {"phone": PERSON}),
        ("twilio_sms_approval", {"approver": PERSON}),
        ("twilio_sms_otp_capture", {"signup_url": app.url, "our_number": OUR_NUMBER}),
        ("twilio_sms_bulk_mapped", {"rate_limit": "5/3s"}),
        ("twilio_sms_scheduled_reminder", {"phone": PERSON, "hours_ahead": 20}),
    ]
    store = get_store()
    failures = []
    for dag_id, conf in runs:
        started = time.monotonic()
        run = bag.dags[dag_id].test(run_conf=conf)
        print(f"== {dag_id}: {run.state} in {time.monotonic() - started:.1f} s")
        if run.state != "success":
            failures.append(f"{dag_id} ended {run.state}")
        for row in _settled(store, dag_id):
            timeline = " -> ".join(h["status"] for h in store.status_history(row["sid"]))
            task = (
                row["task_id"] if row["map_index"] in (None, -1) else f"{row['task_id']}[{row['map_index']}]"
            )
            print(f"   sent {row['sid']} to {mask_number(row['to_number'])} ({task}): "
                  f"status {row['status']}; callbacks: {timeline or 'none'}")
            if row["status"] != "delivered":
                failures.append(f"{dag_id}: message {row['sid']} is {row['status']}, not delivered")
            if dag_id == "twilio_sms_scheduled_reminder":
                print(f"   scheduled for {row['send_at']} through {row['messaging_service_sid']}; the "
                      "stand-in's clock released it early")
                if row["send_at"] is None or timeline != "queued -> sent -> delivered":
                    failures.append(f"{dag_id}: the reminder was not scheduled, then sent")
        if dag_id == "twilio_sms_approval":
            reply = xcom(dag_id, run.run_id, "wait_answer") or {}
            branch = xcom(dag_id, run.run_id, "deploy")
            print(f"   reply {reply.get('message_sid')} from {reply.get('from')}: "
                  f"{reply.get('keyword')} -> {branch}")
            if branch != "deployed":
                failures.append("the approval did not branch to deploy")
        if dag_id == "twilio_sms_otp_capture":
            from airflow_provider_twilio_sms.replies import read_reply

            reply = xcom(dag_id, run.run_id, "wait_for_code") or {}
            code = read_reply(reply).groups[0] if reply else None
            same = bool(app.codes) and code == app.codes[-1]
            print(f"   OTP message {reply.get('message_sid')} from {reply.get('from')}: "
                  f"{xcom(dag_id, run.run_id, 'use_code')}; "
                  f"{'the code the app sent' if same else 'NOT the code the app sent'}")
            if not same:
                failures.append("the captured code is not the one the app sent")
            if code and code in xcom_text(dag_id, run.run_id):
                failures.append("the code is in Airflow's XCom table in clear")
    accepted = len([c for c in sim.callbacks() if c["answer"] == 200])
    print(
        f"\nStand-in: {sim.count('create')} messages created, "
        f"{accepted} signed callbacks accepted by the webhook, "
        f"{sim.count('inbound_sent')} inbound messages delivered"
    )
    sim.stop()
    if failures:
        print("\nDEMO FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nDEMO OK: every message delivered, the reply and the code were seen by the sensors.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

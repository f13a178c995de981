"""The README demo, end to end: DAGs -> stand-in -> signed callbacks -> api-server webhook -> store -> sensor.

Covers the three ways a sensor waits: reschedule (send and wait), poke (approval) and deferrable
(OTP capture, whose trigger dag.test() runs in line against the real store).
"""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_demo_runs_every_example_end_to_end():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True, text=True,
                          timeout=600, check=False)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    for dag_id in ("twilio_sms_send_and_wait", "twilio_sms_approval", "twilio_sms_otp_capture",
                   "twilio_sms_bulk_mapped", "twilio_sms_scheduled_reminder"):
        assert f"== {dag_id}: success" in out
    assert ": YES -> deployed" in out
    assert "the code the app sent" in out
    assert "NOT the code" not in out
    assert "callbacks: sent -> delivered" in out
    assert "callbacks: queued -> sent -> delivered" in out  # the scheduled reminder, released early
    assert "the stand-in's clock released it early" in out
    assert "DEMO OK" in out
    assert "4155550100" not in out, "a full phone number reached the report"

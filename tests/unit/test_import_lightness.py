"""DAG files import these modules on every parse: they must not pull in twilio, FastAPI, phonenumbers
or the webhook app, and must create no database engine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("twilio", "fastapi", "phonenumbers", "uvicorn", "airflow_provider_twilio_sms.webhook.app",
         "airflow_provider_twilio_sms.simulator.server")

PROBE = """
import json, sys
import airflow.sdk  # what every DAG file already pays for
before = set(sys.modules)
import {module}
from airflow_provider_twilio_sms.store import engine
print(json.dumps({{"new": sorted(set(sys.modules) - before), "engines": len(engine._engines)}}))
"""


@pytest.mark.parametrize("module", [
    "airflow_provider_twilio_sms.hooks.twilio_sms",
    "airflow_provider_twilio_sms.operators.sms",
    "airflow_provider_twilio_sms.sensors.sms",
    "airflow_provider_twilio_sms.notifications.sms",
    "airflow_provider_twilio_sms.triggers.sms",
])
def test_module_import_is_light(module):
    done = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    heavy = [m for m in report["new"] if m.split(".")[0] in HEAVY or m in HEAVY]
    assert heavy == [], f"importing {module} imported {heavy}"
    assert report["engines"] == 0

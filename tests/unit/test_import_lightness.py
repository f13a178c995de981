"""DAG files import these modules on every parse: they must pull in nothing heavy and open no database.

Each module is imported in a fresh interpreter, after ``airflow.sdk`` (which every DAG file already
pays for, and which itself imports ``cryptography``): whatever the module adds on top is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Top-level packages (or exact modules) that must not be imported by a DAG-facing module.
HEAVY = ("twilio", "fastapi", "starlette", "uvicorn", "phonenumbers", "cryptography",
         "airflow_provider_twilio_sms.webhook.app", "airflow_provider_twilio_sms.simulator.server")

PROBE = """
import gc, json, sys
import airflow.sdk

def engines():
    if "sqlalchemy" not in sys.modules:
        return 0
    from sqlalchemy.engine import Engine
    return sum(1 for o in gc.get_objects() if isinstance(o, Engine))

before, engines_before = set(sys.modules), engines()
import {module}
new = sorted(set(sys.modules) - before)
engines_after = engines()
ours = 0
store_engine = sys.modules.get("airflow_provider_twilio_sms.store.engine")
if store_engine is not None:
    ours = len(store_engine._engines)
print(json.dumps({{"new": new, "engines": engines_after - engines_before, "our_engines": ours}}))
"""

DAG_FACING_MODULES = [
    "airflow_provider_twilio_sms",
    "airflow_provider_twilio_sms.hooks.twilio_sms",
    "airflow_provider_twilio_sms.connection",
    "airflow_provider_twilio_sms.phone",
    "airflow_provider_twilio_sms.segments",
    "airflow_provider_twilio_sms.operators.sms",
    "airflow_provider_twilio_sms.sensors.sms",
    "airflow_provider_twilio_sms.notifications.sms",
    "airflow_provider_twilio_sms.triggers.sms",
    "airflow_provider_twilio_sms.triggers.inbound_events",
    "airflow_provider_twilio_sms.operators.scheduled",
    "airflow_provider_twilio_sms.notifications.scheduled",
    "airflow_provider_twilio_sms.scheduling",
]


def _probe(module: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", DAG_FACING_MODULES)
def test_module_import_is_light(module):
    report = _probe(module)
    heavy = [m for m in report["new"] if m in HEAVY or m.split(".")[0] in HEAVY]
    assert heavy == [], f"importing {module} imported {heavy}"
    assert report["engines"] == 0, f"importing {module} created {report['engines']} SQLAlchemy engine(s)"
    assert report["our_engines"] == 0


def test_the_probe_does_see_a_heavy_import():
    """Guard against a probe that can never fail: importing phonenumbers is reported."""
    report = _probe("phonenumbers")
    assert "phonenumbers" in report["new"]

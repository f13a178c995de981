"""Importing the stand-in's package costs nothing; its server pulls in no HTTP client or Twilio SDK."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
before = set(sys.modules)
import {module}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _new_modules(module: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_package_imports_nothing_else():
    new = _new_modules("airflow_provider_twilio_sms.simulator")
    assert [m for m in new if not m.startswith("airflow_provider_twilio_sms") and m != "__future__"] == []


def test_the_server_module_leaves_heavy_packages_for_when_they_are_needed():
    new = _new_modules("airflow_provider_twilio_sms.simulator.server")
    heavy = [m for m in new if m.split(".")[0] in (
        "twilio", "requests", "phonenumbers", "airflow", "sqlalchemy", "fastapi", "starlette")]
    assert heavy == []

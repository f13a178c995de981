#!/usr/bin/env bash
# The main job end to end on a fresh machine: sets up .venv, then runs the example DAGs against the
# local Twilio stand-in, with Airflow's api-server receiving the stand-in's signed webhooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"

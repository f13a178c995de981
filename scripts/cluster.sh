#!/usr/bin/env bash
# The local Airflow cluster (CeleryExecutor, Redis, PostgreSQL, separate services): start|stop|status.
# See scripts/cluster.py for what runs and where its logs go; e.g. scripts/cluster.sh start --workers 2
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/cluster.py "$@"

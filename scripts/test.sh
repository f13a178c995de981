#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: sets up .venv and tools, lints (scripts/lint.sh), then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k store -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ "${CI:-}" = "true" ]; then
  # Under CI nothing that this machine kind provides may be skipped (cluster: Redis, or redis-server to
  # start one, beside PostgreSQL; tests/cluster/).
  export TWILIO_SMS_TEST_REQUIRE="${TWILIO_SMS_TEST_REQUIRE:-postgres,mysql,prism,browser,cluster}"
  if command -v pg_lsclusters >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
# Lint and type findings (ruff, mypy) fail the run before any test starts (see scripts/lint.sh).
bash scripts/lint.sh
if [ "${CI:-}" = "true" ] && [ "${TWILIO_SMS_PACKAGE_CHECK:-1}" = "1" ]; then
  # The package as users get it: sdist and wheel built and checked, the wheel installed (not editable)
  # into a clean virtualenv with Airflow and run there, then the dependency floors with a test subset.
  .venv/bin/python scripts/package_check.py
fi
exec .venv/bin/python -m pytest -p no:cacheprovider -ra "$@"

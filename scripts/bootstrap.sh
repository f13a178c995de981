#!/usr/bin/env bash
# Create .venv (Python 3.10+) and install the provider with its test tools; idempotent.
# Also installs Prism (Twilio's OpenAPI contract mock) and playwright-core (drives Chromium in the browser
# tests) under .tools/ when npm is present, and Debian's chromium when it is missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: no python3 found; install Python 3.10+ first" >&2; exit 1; }

# Reinstall when the dependencies or the version (read from __init__.py into the metadata) change.
stamp=".venv/.installed-$(cat pyproject.toml src/airflow_provider_twilio_sms/__init__.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip uv
  .venv/bin/uv pip install --quiet --python .venv/bin/python -e ".[test,webhook,postgres,celery]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# setuptools' editable build leaves src/<name>.egg-info behind; src is on sys.path in an editable
# install, so Python then sees the distribution twice (there and in .venv) and Airflow loads its
# airflow.plugins entry point twice ("Plugin 'twilio_sms' already registered"). .venv has the metadata.
rm -rf src/*.egg-info

if command -v npm >/dev/null 2>&1 && [ ! -x .tools/node_modules/.bin/prism ]; then
  mkdir -p .tools
  (cd .tools && npm install --silent --no-audit --no-fund --prefix . @stoplight/prism-cli@5 >/dev/null 2>&1) \
    || echo "bootstrap: could not install Prism with npm; contract tests will say why they skip" >&2
fi

if command -v npm >/dev/null 2>&1 && [ ! -f .tools/node_modules/playwright-core/package.json ]; then
  mkdir -p .tools
  (cd .tools && npm install --silent --no-audit --no-fund --prefix . playwright-core@1 >/dev/null 2>&1) \
    || echo "bootstrap: could not install playwright-core with npm; browser tests will say why they skip" >&2
fi

# The browser tests drive Debian's chromium (never a browser downloaded by a tool).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian's chromium for the browser tests (apt-get)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "bootstrap: apt-get could not install chromium; browser tests will say why they skip" >&2
  else
    echo "bootstrap: /usr/bin/chromium is missing (apt-get install chromium as root); browser tests will skip" >&2
  fi
fi

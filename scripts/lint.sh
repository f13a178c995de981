#!/usr/bin/env bash
# Lint with the tools pinned in pyproject.toml's test extra: ruff over the whole tree (rules in
# [tool.ruff.lint]). Prints the finding count; exits non-zero on any finding. Run from anywhere.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh  # idempotent: installs the pinned tools when pyproject.toml changed

ruff_out="$(.venv/bin/ruff check --output-format concise . 2>&1)"
ruff_rc=$?
ruff_count="$(printf '%s\n' "$ruff_out" | grep -cE '^[^ ]+:[0-9]+:[0-9]+: ')"
[ "$ruff_rc" -eq 0 ] || printf '%s\n' "$ruff_out"

echo "lint: ruff ${ruff_count} finding(s)"
if [ "$ruff_rc" -ne 0 ]; then
  echo "lint: FAILED (ruff exit ${ruff_rc})" >&2
  exit 1
fi

#!/usr/bin/env bash
# Lint and type-check with the tools pinned in pyproject.toml's test extra: ruff over the whole tree
# (rules in [tool.ruff.lint]) and mypy over src/ ([tool.mypy]). Prints each tool's finding count and
# exits non-zero on any finding. Run from anywhere.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh  # idempotent: installs the pinned tools when pyproject.toml changed

ruff_out="$(.venv/bin/ruff check --output-format concise . 2>&1)"
ruff_rc=$?
ruff_count="$(printf '%s\n' "$ruff_out" | grep -cE '^[^ ]+:[0-9]+:[0-9]+: ')"
[ "$ruff_rc" -eq 0 ] || printf '%s\n' "$ruff_out"

mypy_out="$(.venv/bin/mypy 2>&1)"
mypy_rc=$?
mypy_count="$(printf '%s\n' "$mypy_out" | grep -cE '^[^ ]+:[0-9]+: error:')"
[ "$mypy_rc" -eq 0 ] || printf '%s\n' "$mypy_out"

echo "lint: ruff ${ruff_count} finding(s), mypy ${mypy_count} error(s)"
if [ "$ruff_rc" -ne 0 ] || [ "$mypy_rc" -ne 0 ]; then
  echo "lint: FAILED (ruff exit ${ruff_rc}, mypy exit ${mypy_rc})" >&2
  exit 1
fi

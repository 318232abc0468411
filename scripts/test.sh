#!/usr/bin/env bash
# Runs every check of the project: linters, type checks, the whole pytest suite (unit, real
# uvicorn processes, chart, monitoring, container and workflow checks, slow tests included).
# Every check runs even when an earlier one fails (a ruff finding does not hide mypy's); the
# script then exits 1, naming the checks that failed.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"` for a quick loop.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"

failed=()
# check NAME CMD...: run CMD; when it fails, remember NAME and go on.
check() {
  local name=$1
  shift
  echo "==> $name"
  "$@" || failed+=("$name")
}

check "ruff check" ruff check .
check "ruff format" ruff format --check .
check mypy mypy
check pytest pytest "$@"

if [ "${#failed[@]}" -gt 0 ]; then
  printf '==> FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "==> all checks passed"

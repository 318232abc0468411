#!/usr/bin/env bash
# Runs every check of the project: linters, type checks, the whole pytest suite (unit, real
# uvicorn processes, chart, monitoring, container and workflow checks, slow tests included).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"` for a quick loop.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"

echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy"
mypy
echo "==> pytest"
pytest "$@"

#!/usr/bin/env bash
# The static gates: ruff (lint, configured in pyproject.toml) over the whole tree and mypy (with
# the pydantic plugin) over pipeline/. Both must be clean; scripts/test.sh runs this first.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1
VENV="${PIPELINE_VENV:-.venv}"

status=0
echo "==> ruff check"
"$VENV/bin/ruff" check --output-format concise . || status=1
echo "==> mypy (pipeline/)"
"$VENV/bin/mypy" || status=1
exit "$status"

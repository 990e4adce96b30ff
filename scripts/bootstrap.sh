#!/usr/bin/env bash
# Create .venv and install exactly the locked tree (requirements/dev.txt: every package pinned,
# every file's sha256 checked), then llm-pipeline itself, editable, without resolving anything.
# Idempotent and quick when nothing changed (keyed on the lock file and pyproject.toml).
#
#   PIPELINE_VENV=dir      another venv (default .venv)
#   PIPELINE_LOCK=file     another lock file (scripts/drift.sh passes the newest versions this way)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${PIPELINE_VENV:-.venv}"
LOCK="${PIPELINE_LOCK:-requirements/dev.txt}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "llm-pipeline needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
source scripts/uv.sh
stamp="$VENV/.llm-pipeline-installed"
want="$(cat "$LOCK" pyproject.toml requirements/build.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing $LOCK into $VENV"
  sync_venv "$VENV" "$LOCK"  # sync, not install: the venv is the lock
  "$UV" pip install --quiet --python "$VENV/bin/python" --no-deps \
    --build-constraints requirements/build.txt -e .
  echo "$want" > "$stamp"
fi

#!/usr/bin/env bash
# From a fresh clone: install, then run `pipeline demo` on embedded parts (no JVM, no Docker).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${PIPELINE_VENV:-.venv}/bin/pipeline" demo "$@"

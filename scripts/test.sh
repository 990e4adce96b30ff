#!/usr/bin/env bash
# The whole test suite, as CI runs it: install the locked tree (scripts/bootstrap.sh), fetch the
# Apache Kafka jars from Maven Central, install redis-server if missing (Debian's package),
# install the Node.js client example's packages (npm ci), run the static gates (scripts/check.sh:
# ruff, mypy), then pytest with coverage of pipeline/ (the suite starts one Kafka broker, one
# redis-server and one provider simulator itself). Any failing gate fails the run.
#
# Extra arguments go to pytest, e.g.  scripts/test.sh -m "not kafka"  or  scripts/test.sh tests/unit;
# with them the static gates are skipped (PIPELINE_CHECKS=1 runs them anyway) and coverage is
# printed without its floor (the 90% floor is for the whole suite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
PY="${PIPELINE_VENV:-.venv}/bin/python"

for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "$tool is required for the Apache Kafka test broker" >&2; exit 1; }
done
if ! command -v redis-server >/dev/null; then
  echo "==> installing redis-server (shared worker state tests)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi
echo "==> Apache Kafka jars: $("$PY" -m pipeline.local.apache_kafka fetch)"
# The other-language client example (kafkajs from the npm registry) runs against the same broker.
command -v npm >/dev/null || { echo "Node.js and npm are required for the examples/node client test" >&2; exit 1; }
if [ ! -d examples/node/node_modules/kafkajs ]; then
  echo "==> npm ci (examples/node)"
  (cd examples/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True
checks=0
if [ "$#" -eq 0 ] || [ "${PIPELINE_CHECKS:-0}" = 1 ]; then
  bash scripts/check.sh || checks=$?
  floor=()
else
  floor=(--cov-fail-under=0)
fi
rm -f .coverage .coverage.*
set +e
# Two test processes by default (PIPELINE_TEST_WORKERS=0: one): each starts its own broker, redis-server and
# simulator; a test file stays in one process, so its module fixtures are made once.
workers="${PIPELINE_TEST_WORKERS:-2}"
"$PY" -m pytest -p no:cacheprovider -n "$workers" --dist loadfile --durations=25 --cov=pipeline \
  --cov-report=term-missing:skip-covered "${floor[@]}" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
fi
if [ "$checks" -ne 0 ]; then
  echo "static gates failed (ruff or mypy: see the top of this output)" >&2
  [ "$status" -ne 0 ] || status=$checks
fi
exit "$status"

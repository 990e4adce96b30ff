#!/usr/bin/env bash
# The whole suite against the newest versions pyproject.toml allows, in .venv-latest, to see
# what the next lock move would break before users see it. The lock files are not touched.
#
#   bash scripts/drift.sh                 resolve the newest versions, print what moved, run the suite
#   bash scripts/drift.sh -m "not slow"   extra arguments go to pytest (through scripts/test.sh)
#
# Prints the packages whose newest version differs from the lock, then the suite's outcome. If it
# passes, `bash scripts/lock.sh --upgrade` and a commit move the lock forward.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/uv.sh

latest="$(mktemp -d)/latest.txt"
"$UV" pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes \
  --no-header --quiet --upgrade -o "$latest"
pins() { grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*==' "$1" | cut -d' ' -f1 | sort; }
echo "==> newest allowed versions that differ from requirements/dev.txt (locked -> newest):"
join -t= -a1 -a2 -e '(none)' -o 0,1.3,2.3 <(pins requirements/dev.txt | sed 's/==/=/') <(pins "$latest" | sed 's/==/=/') \
  | awk -F= '$2 != $3 { printf "    %-36s %-16s -> %s\n", $1, $2, $3; moved++ } END { if (!moved) print "    (none: the lock is current)" }'

set +e
PIPELINE_VENV="${PIPELINE_DRIFT_VENV:-.venv-latest}" PIPELINE_LOCK="$latest" bash scripts/test.sh "$@"
status=$?
set -e
if [ "$status" -eq 0 ]; then
  echo "==> drift: the suite passes on the newest versions; 'bash scripts/lock.sh --upgrade' can move the lock"
else
  echo "==> drift: the suite FAILS on the newest versions (exit $status): see the failures above" >&2
fi
exit "$status"

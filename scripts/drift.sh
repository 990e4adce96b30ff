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
"$UV" pip compile pyproject.toml --extra dev "${LOCK_COMPILE_ARGS[@]}" --upgrade -o "$latest"
echo "==> newest allowed versions that differ from requirements/dev.txt (locked -> newest):"
"${PYTHON:-python3}" - requirements/dev.txt "$latest" <<'PY'
import re, sys
def pins(path):
    return dict(m.groups() for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", open(path).read(), re.M))
locked, newest = pins(sys.argv[1]), pins(sys.argv[2])
moved = [(n, locked.get(n, "(none)"), newest.get(n, "(none)")) for n in sorted(set(locked) | set(newest), key=str.lower)
         if locked.get(n) != newest.get(n)]
for name, old, new in moved:
    print(f"    {name:36} {old:16} -> {new}")
print(f"    {len(moved)} of {len(newest)} packages moved" if moved else "    (none: the lock is current)")
PY

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

# Sourced by the scripts: sets UV to the pinned uv (requirements/uv.txt), installed on first
# use with pip --require-hashes into .tools/uv, and keeps uv off the network for Python itself.
UV_TOOL_DIR="${PIPELINE_UV_TOOL_DIR:-.tools/uv}"
UV="$UV_TOOL_DIR/bin/uv"
export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
want_uv="$(grep -E '^uv==' requirements/uv.txt | cut -d' ' -f1)"
if [ ! -x "$UV" ] || [ "uv==$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "$want_uv" ]; then
  echo "==> installing $want_uv into $UV_TOOL_DIR"
  rm -rf "$UV_TOOL_DIR"
  "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --require-hashes --target "$UV_TOOL_DIR" -r requirements/uv.txt
fi

# How every lock file is compiled (scripts/lock.sh, scripts/drift.sh): for every platform and
# Python >= 3.11, with the sha256 of each file.
LOCK_COMPILE_ARGS=(--universal --python-version 3.11 --generate-hashes --no-header --quiet)

# sync_venv VENV LOCK: make VENV (created if missing) hold exactly LOCK, hash-checked; a package
# the lock does not name is removed.
sync_venv() {
  [ -x "$1/bin/python" ] || { echo "==> creating $1"; "$UV" venv --quiet --python "${PYTHON:-python3}" "$1"; }
  "$UV" pip sync --quiet --python "$1/bin/python" --require-hashes --build-constraints requirements/build.txt "$2"
}

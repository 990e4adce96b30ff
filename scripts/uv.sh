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

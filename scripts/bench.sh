#!/usr/bin/env bash
# Run the side-by-side benchmark (bench/compare.py): floor, LiteLLM alone, this pipeline (1 and 2
# workers) and LiteLLM Proxy against the provider simulator. Arguments go to bench/compare.py.
#
# LiteLLM Proxy lives in its own venv (.venv-proxy) at the same LiteLLM version as ours, so its
# many server dependencies never touch the pipeline's environment.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
VENV="${PIPELINE_VENV:-.venv}"
if ! "$VENV/bin/python" -c 'import psutil, matplotlib' 2>/dev/null || [ ! -x "$VENV/bin/py-spy" ]; then
  echo "==> installing the bench extra into $VENV"
  log="$(mktemp)"
  "$VENV/bin/python" -m pip install --quiet -e '.[dev,bench]' >"$log" 2>&1 || { cat "$log"; exit 1; }
fi
"$VENV/bin/python" -m pipeline.local.apache_kafka fetch >/dev/null
command -v redis-server >/dev/null || { echo "==> installing redis-server"; apt-get install -y -qq redis-server >/dev/null; }

PROXY_VENV="${PIPELINE_BENCH_PROXY_VENV:-.venv-proxy}"
litellm_version="$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("litellm"))')"
if [ ! -x "$PROXY_VENV/bin/litellm" ] || [ "$(cat "$PROXY_VENV/.litellm-version" 2>/dev/null)" != "$litellm_version" ]; then
  echo "==> installing litellm[proxy]==$litellm_version into $PROXY_VENV"
  "${PYTHON:-python3}" -m venv "$PROXY_VENV"
  "$PROXY_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$PROXY_VENV/bin/python" -m pip install --quiet "litellm[proxy]==$litellm_version"
  echo "$litellm_version" > "$PROXY_VENV/.litellm-version"
fi

export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True
exec "$VENV/bin/python" bench/compare.py "$@"

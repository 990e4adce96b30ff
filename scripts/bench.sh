#!/usr/bin/env bash
# Run the side-by-side benchmark (bench/compare.py): floor, LiteLLM alone, this pipeline (1 and 2
# workers) and LiteLLM Proxy against the provider simulator. Arguments go to bench/compare.py.
#
# LiteLLM Proxy lives in its own venv (.venv-proxy) at the same LiteLLM version as ours, installed
# from its own lock file, so its many server dependencies never touch the pipeline's environment.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh  # the bench extra (psutil, matplotlib, py-spy) is part of the dev lock
source scripts/uv.sh
VENV="${PIPELINE_VENV:-.venv}"
"$VENV/bin/python" -m pipeline.local.apache_kafka fetch >/dev/null
command -v redis-server >/dev/null || { echo "==> installing redis-server"; apt-get install -y -qq redis-server >/dev/null; }

# LiteLLM Proxy from its own lock (requirements/bench-proxy.txt, compiled by scripts/lock.sh for
# litellm[proxy] at the LiteLLM version of requirements/dev.txt), installed hash-checked.
PROXY_VENV="${PIPELINE_BENCH_PROXY_VENV:-.venv-proxy}"
PROXY_LOCK=requirements/bench-proxy.txt
ours="$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("litellm"))')"
locked="$(grep -E '^litellm==' "$PROXY_LOCK" | cut -d' ' -f1)"
if [ "$locked" != "litellm==$ours" ]; then
  echo "$PROXY_LOCK pins $locked but the pipeline runs litellm==$ours: run 'bash scripts/lock.sh'" >&2
  exit 1
fi
want="$(sha256sum "$PROXY_LOCK" | cut -d' ' -f1)"
if [ ! -x "$PROXY_VENV/bin/litellm" ] || [ "$(cat "$PROXY_VENV/.installed" 2>/dev/null)" != "$want" ]; then
  echo "==> installing LiteLLM Proxy ($locked) into $PROXY_VENV"
  sync_venv "$PROXY_VENV" "$PROXY_LOCK"
  echo "$want" > "$PROXY_VENV/.installed"
fi

export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS=True
exec "$VENV/bin/python" bench/compare.py "$@"

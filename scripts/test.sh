#!/usr/bin/env bash
# Run the test suite (sets up ./.venv first if needed). Extra arguments go to pytest.
# The optional `ray` extra is added to the venv here (not by setup.sh) so that the Ray executor's
# tests run against a real local Ray, and the `serve` extra so that the graph is tested on a real
# `langgraph dev` server (tests/test_langgraph_serve.py). The `train` extra likewise, with
# scripts/setup-train.sh, so that the simulator trainer's tests run: it installs torch (the CPU
# build on a machine without a GPU; this machine kind keeps it in pip's local wheel folder), the
# extra, and llama.cpp's LoRA converter. Where no torch can be had (setup-train.sh exits 10), the
# trainer's tests are skipped (they import torch with importorskip); any other failure of
# setup-train.sh stops here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-demo
.venv/bin/python -c "import ray" 2>/dev/null || .venv/bin/pip install --quiet -e ".[ray]"
.venv/bin/python -c "import langgraph_api, langgraph_sdk" 2>/dev/null \
  || .venv/bin/pip install --quiet -e ".[serve]"
status=0
bash scripts/setup-train.sh || status=$?
if [ "$status" = 10 ]; then
  echo "test.sh: no torch could be installed here; the simulator trainer's tests will be skipped" >&2
elif [ "$status" != 0 ]; then
  exit "$status"
fi
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Run the test suite (sets up ./.venv first if needed). Extra arguments go to pytest.
# The optional `ray` extra is added to the venv here (not by setup.sh) so that the Ray executor's
# tests run against a real local Ray. The `train` extra likewise, so that the simulator trainer's
# tests run; torch comes first as the CPU build (this machine kind keeps it in pip's local wheel
# folder), pinned with `+cpu` so that pip can never fall back to PyPI's CUDA build. Where no CPU
# wheel can be had, the trainer's tests are skipped (they import torch with importorskip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-demo
.venv/bin/python -c "import ray" 2>/dev/null || .venv/bin/pip install --quiet -e ".[ray]"
if ! .venv/bin/python -c "import torch, transformers, peft, gguf" 2>/dev/null; then
  if .venv/bin/pip install --quiet "torch==2.13.0+cpu"; then
    .venv/bin/pip install --quiet -e ".[train]"
  else
    echo "test.sh: no CPU torch wheel here; the simulator trainer's tests will be skipped" >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Add the optional `train` extra (`run.py train-simulator`) to ./.venv (idempotent; sets up .venv
# first if needed): torch first as the CPU build, pinned with `+cpu` so that pip can never fall
# back to PyPI's ~3 GB CUDA build, then the extra, then llama.cpp's LoRA converter
# (convert_lora_to_gguf.py, from the installed llama-cpp-python version's sdist) into the user
# cache, so that nothing is downloaded when a simulator is trained.
# Exits 10 when no CPU torch wheel can be had (scripts/test.sh then skips the trainer's tests).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
NO_TORCH_WHEEL=10
bash scripts/setup.sh --no-demo
if ! "$VENV/bin/python" -c "import torch, transformers, peft, gguf" 2>/dev/null; then
  if ! "$VENV/bin/python" -m pip install --quiet "torch==2.13.0+cpu"; then
    echo "setup-train: no CPU torch wheel (torch==2.13.0+cpu) here; the train extra is not installed" >&2
    exit "$NO_TORCH_WHEEL"
  fi
  "$VENV/bin/python" -m pip install --quiet -e ".[train]"
fi
"$VENV/bin/python" -m training.convert

#!/usr/bin/env bash
# Add the optional `train` extra (`run.py train-simulator`) to ./.venv (idempotent; sets up .venv
# first if needed): torch first, then the extra, then llama.cpp's LoRA and model converters
# (convert_lora_to_gguf.py, convert_hf_to_gguf.py, from the installed llama-cpp-python version's
# sdist) into the user cache, so that nothing is downloaded when a simulator is trained.
#
# Which torch, first match wins (one line says which it took):
#   1. $IDEAS_TORCH_INDEX set: $IDEAS_TORCH_SPEC from that index (e.g. a CUDA build's index);
#   2. a GPU (a working `nvidia-smi`): the default build (PyPI's, with CUDA);
#   3. no GPU, and pip's configured local wheel folder (find-links) holds $IDEAS_TORCH_LOCAL
#      (default torch==2.13.0+cpu; empty: skip this): that wheel, the fast path here;
#   4. no GPU: the CPU build from PyTorch's CPU wheel index, so that a CPU machine never pulls
#      PyPI's ~3 GB of CUDA wheels.
# $IDEAS_TORCH_SPEC is the requirement (default: the extra's bound). IDEAS_TRAIN_DRY_RUN=1
# prints the choice and the pip command, and installs nothing.
# Exits 10 when no torch can be installed (scripts/test.sh then skips the trainer's tests).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
NO_TORCH_WHEEL=10
CPU_INDEX=https://download.pytorch.org/whl/cpu
LOCAL=${IDEAS_TORCH_LOCAL-torch==2.13.0+cpu}
SPEC=${IDEAS_TORCH_SPEC:-torch>=2.6,<2.15}
DRY=${IDEAS_TRAIN_DRY_RUN:-}
PIP=("$VENV/bin/python" -m pip install --quiet)

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# Print "<what> | <pip install arguments...>": the torch to install here.
torch_plan() {
  if [ -n "${IDEAS_TORCH_INDEX:-}" ]; then
    echo "$SPEC from IDEAS_TORCH_INDEX=$IDEAS_TORCH_INDEX | --index-url $IDEAS_TORCH_INDEX $SPEC"
  elif has_gpu; then
    echo "the default build ($SPEC; nvidia-smi sees a GPU) from PyPI | $SPEC"
  elif [ -n "$LOCAL" ] && "${PIP[@]}" --dry-run --no-index --no-deps "$LOCAL" >/dev/null 2>&1; then
    echo "$LOCAL (no GPU) from the local wheel folder | $LOCAL"
  else
    echo "the CPU build ($SPEC; no GPU: no working nvidia-smi) from $CPU_INDEX | --index-url $CPU_INDEX $SPEC"
  fi
}

install_torch() {
  local plan what args
  plan=$(torch_plan)
  what=${plan%% | *}
  read -r -a args <<<"${plan#* | }"
  if [ -n "$DRY" ]; then
    echo "setup-train (dry run): would install $what: pip install ${args[*]}"
    return 0
  fi
  "${PIP[@]}" "${args[@]}" || return 1
  echo "setup-train: installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'): $what"
}

if [ -n "$DRY" ]; then
  install_torch
  exit 0
fi
bash scripts/setup.sh --no-demo
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup-train: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') is already installed"
elif ! install_torch; then
  plan=$(torch_plan)
  echo "setup-train: torch could not be installed (${plan%% | *}); the train extra is not installed" >&2
  exit "$NO_TORCH_WHEEL"
fi
"$VENV/bin/python" -c "import transformers, peft, gguf, sentencepiece" 2>/dev/null || "${PIP[@]}" -e ".[train]"
"$VENV/bin/python" -m training.convert

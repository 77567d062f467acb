#!/usr/bin/env bash
# Rebuild the shipped default library (stores/libraries/default) from the team-written
# extractions and the real dialogues in ../shared/data. Model-free: centroid abstraction; the
# learned candidate ranker is trained on the same pairs and saved in the library's metadata.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
store=$(mktemp -d)
# the next version of the shipped library (its copies in users' stores are then refreshed)
version=$(.venv/bin/python -c "import json; print(int(json.load(open('stores/libraries/default/metadata.json'))['version']) + 1)")
trap 'rm -rf "$store"' EXIT
IDEAS_STORE="$store" .venv/bin/python run.py induce \
  --dialogues "$DATA/oasst1-en100/en_100_tree.jsonl" "$DATA/hh-rlhf-helpful-74/realistic_seed_data.json" \
    "$DATA/realhumaneval-chat/chats.jsonl" \
  --extractions induction/data/team_extractions.jsonl \
  --library default --abstraction centroid --library-version "$version" \
  --export stores/libraries/default "$@"

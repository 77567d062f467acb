#!/usr/bin/env bash
# Rebuild the shipped default library (stores/libraries/default) from the team-written
# extractions and the real dialogues in ../shared/data (listed in induction/real_dialogues.py).
# Model-free: centroid abstraction; the learned candidate ranker is trained on the same pairs and
# saved in the library's metadata.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
listed=$(.venv/bin/python -m induction.real_dialogues "$DATA")  # one a line, under $DATA
mapfile -t DIALOGUES <<<"$listed"
store=$(mktemp -d)
# the next version of the shipped library (its copies in users' stores are then refreshed)
version=$(.venv/bin/python -c "import json; print(int(json.load(open('stores/libraries/default/metadata.json'))['version']) + 1)")
trap 'rm -rf "$store"' EXIT
IDEAS_STORE="$store" .venv/bin/python run.py induce \
  --dialogues "${DIALOGUES[@]}" \
  --extractions induction/data/team_extractions.jsonl \
  --library default --abstraction centroid --library-version "$version" \
  --export stores/libraries/default "$@"

#!/usr/bin/env bash
# Rebuild the two shipped trained user simulators, training/simulators/{ideas,plain}, from the
# real dialogues in ../shared/data (listed in induction/real_dialogues.py) and the team-written
# strategies in induction/data/team_extractions.jsonl (needs the `train` extra:
# bash scripts/setup-train.sh).
#   ideas: the strategy simulator's prompt with each pair's high-level strategy
#   plain: the plain simulator's prompt on the same pairs (the PlatoLM/Parrot-style baseline)
# ideas also trains a fifth of its pairs on the guided drafts' contrast request instead of their
# strategy (--strategy-dropout 0.2), so guidance contrasts two distributions it learned.
# Both learn the end marker after the last reply of each dialogue whose user ended it (--endings),
# each ending pair three times an epoch (--ending-weight 3: 2% of the pairs; see
# docs/results/ending/README.md).
# Then each gets its ending rule, calibrated on the real dialogues it trained on
# (python -m training.endings; on the embedded server, one simulator after the other), and the
# real users' follow-up lengths its turns are held to at run time (python -m training.lengths).
# Both train at once, one torch thread each (2 cores; 2 threads per run measured 2-4x slower).
# Extra arguments go to both runs (e.g. --epochs 2: a finished folder is kept and skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
WORK=${WORK:-build/simulators}
listed=$(.venv/bin/python -m induction.real_dialogues "$DATA")  # one a line, under $DATA
mapfile -t DIALOGUES <<<"$listed"
mkdir -p "$WORK"
train() {  # name, extra flags...
  local name=$1; shift
  .venv/bin/python run.py train-simulator \
    --dialogues "${DIALOGUES[@]}" \
    --extractions induction/data/team_extractions.jsonl \
    --out "$WORK/$name" --threads 1 --endings --ending-weight 3 "$@" >"$WORK/$name.log" 2>&1
}
pids=()
for name in ideas plain; do
  flags=(--strategy-dropout 0.2); [[ $name == plain ]] && flags=(--no-strategy)
  if [[ -f $WORK/$name/card.json ]]; then echo "$name: already trained in $WORK/$name"; continue; fi
  train "$name" "${flags[@]}" "$@" & pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for name in ideas plain; do tail -n 1 "$WORK/$name.log"; done
[[ $status == 0 ]] || { echo "training failed; logs in $WORK" >&2; exit 1; }
for name in ideas plain; do  # positions scored before are read from $WORK/$name/ending-scores.jsonl
  flags=(); [[ $name == plain ]] && flags=(--plain)
  .venv/bin/python -m training.endings "$WORK/$name" --dialogues "${DIALOGUES[@]}" "${flags[@]}" \
    || { echo "calibrating $name's ending threshold failed" >&2; exit 1; }
  .venv/bin/python -m training.lengths "$WORK/$name" --dialogues "${DIALOGUES[@]}" \
    || { echo "counting $name's real follow-up lengths failed" >&2; exit 1; }
done
for name in ideas plain; do
  mkdir -p "training/simulators/$name"
  cp "$WORK/$name/adapter.gguf" "$WORK/$name/card.json" "$WORK/$name/CARD.md" "training/simulators/$name/"
  .venv/bin/python -c 'import sys; from pathlib import Path; from training.card import stamp
stamp(Path(sys.argv[1]), sys.argv[2])' "training/simulators/$name" "scripts/build_simulators.sh $*"
done
echo "shipped: training/simulators/ideas, training/simulators/plain"

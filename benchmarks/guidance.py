"""How much guidance at decoding makes the simulator follow its strategy, replayed on real turns.

    python benchmarks/guidance.py (--batch RUN_DIR/dialogues.jsonl | --held-out)
        [--gammas 1,3,5] [--turns 150] [--boost-words] [--texts FILE] [--temperature T]
        [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] [--end sampled|model]
        [--adapter ADAPTER.gguf] [--length-floor]

For a sample of the turns of a finished batch (`--turns`, shuffled with seed 0), the shipped
`ideas` simulator (or `--adapter`, e.g. a new build) drafts the turn again from the same history
and strategy, once per guidance weight gamma, with the same sampling seed for every gamma
(`runtime/llama_server.py`'s `guide`, the embedded server's guided endpoint, run in this process
on the bundled model). Each draft is built as the `strategy` simulator builds it
(`StrategySimulator.messages`, `.unconditioned`, the history fitted to 2400 tokens), and the
strategy's words are left unboosted unless `--boost-words`. The sampling flags override the
guided endpoint's defaults (`GuideRequest`). A simulator whose card holds the real users' length
shares (`length_floor`, `python -m training.lengths`) holds each draft to the fewest words of a
length drawn as at run time (`StrategySimulator.fewest_words`) with `--length-floor`.

Per gamma it prints, over the drafts that are not the end marker:
- adherence top-1: the eval's metric (`evaluation/metrics.py`): the turn's strategy is the
  candidate whose MiniLM vector is nearest the draft (the recorded instruction's, for reference);
- restatement: the share of the strategy's content words the draft repeats (the eval's
  `strategy_overlap`), against real users' own level (`--library`'s extracted strategies' real
  follow-ups against their top-tier strategy);
- words per draft and the share in question form, as the eval counts them (`evaluation/text.py`);
- loops: the share of drafts that loop (`evaluation.text.loops`: a word run three times running,
  or a special tag), as the eval's "looping user turns" counts them.
A draft that comes out empty once its special tags are cut (the run would draw it again) is not
counted either.

`--held-out` replays real contexts instead of a batch's: the follow-ups of the dialogues the
simulator's card lists as held out of its training (`counts.held_out_names`), each with its
top-tier strategy in the default library, the real history (real assistants' answers) before it.
The drafts are then compared with what the real users wrote after the same answers (words,
question form, restatement); these turns have no strategist's candidates, so no top-1.

MiniLM only measures here: the guidance itself uses the simulator's own likelihoods. Run
nothing else on 2 cores (it keeps one model busy); 150 turns and 3 gammas take about 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "runtime"))

from agents.chat import fit_history  # noqa: E402
from agents.simulator import StrategySimulator, clean_instruction  # noqa: E402
from dialogues.ending import END_MARKER, is_end_marker  # noqa: E402
from dialogues.messages import to_langchain, to_openai  # noqa: E402
from evaluation.metrics import adherence_rank  # noqa: E402
from evaluation.text import is_question, loops, strategy_overlap, words  # noqa: E402

SAMPLING = {
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repeat_penalty": float,
    "end": str,
}
"""The guided endpoint's sampling fields the benchmark may set (unset: the server's defaults)."""
HISTORY_TOKENS = 2400
"""The simulator's history budget (`Settings.history_tokens`' default)."""


def turns_of(batch: Path, n: int) -> list[tuple[list[dict], dict]]:
    """`n` shuffled (messages before the turn, turn record) whose strategy is a candidate."""
    found = []
    with batch.open(encoding="utf-8") as lines:
        for line in lines:
            dialogue = json.loads(line)
            opening = len(dialogue["messages"]) - 2 * len(dialogue["turns"])
            for i, turn in enumerate(dialogue["turns"]):
                texts = [c["text"] for c in turn.get("candidates") or []]
                strategy = (turn.get("strategy") or {}).get("text")
                if strategy in texts and len(texts) >= 2 and turn.get("instruction"):
                    found.append((dialogue["messages"][: opening + 2 * i], turn))
    random.Random(0).shuffle(found)
    return found[:n]


def held_out_turns(card: Path, data: Path, library: Path, n: int) -> list[tuple[list[dict], dict]]:
    """`n` shuffled real follow-ups of the dialogues `card` holds out, shaped as `turns_of`'s.

    Each turn record holds the pair's top-tier strategy (as the build trained it), the real
    follow-up as its `instruction`, and no candidates.

    Raises:
        ValueError: The card is no simulator card, or lists no held-out dialogues (an older build).
    """
    from induction.annotations import load_extractions
    from induction.loaders import load
    from induction.real_dialogues import REAL_DIALOGUES
    from stores.packaged import read_records
    from training.pairs import dialogue_of, strategy_texts

    try:
        counts = json.loads(card.read_text(encoding="utf-8"))["counts"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{card}: not a simulator card ({exc})") from None
    held = set(counts.get("held_out_names") or ())
    if not held:
        raise ValueError(f"{card} lists no held-out dialogues; rebuild the simulator")
    extractions = load_extractions(ROOT / "induction" / "data" / "team_extractions.jsonl")
    strategies = strategy_texts(extractions, read_records(library), "high")
    found = [
        (
            [{"role": t.role, "content": t.text} for t in pair.history],
            {"strategy": {"text": strategies[pair.key]}, "instruction": pair.followup},
        )
        for name in REAL_DIALOGUES
        for pair in load(data / name).pairs
        if pair.key in strategies and dialogue_of(pair) in held
    ]
    random.Random(0).shuffle(found)
    return found[:n]


def top1(embed, text: str, turn: dict) -> bool:
    """Whether the turn's strategy is the candidate nearest `text` (the eval's adherence)."""
    texts = [c["text"] for c in turn["candidates"]]
    vectors = embed(texts + [text])
    return adherence_rank(vectors[-1], vectors[:-1], texts.index(turn["strategy"]["text"])) == 0


def real_restatement(library: Path, data: Path) -> float:
    """Real users' restatement: follow-ups against the top-tier strategy of their extraction."""
    from induction.loaders import load
    from induction.real_dialogues import REAL_DIALOGUES

    records = {}
    with (library / "records.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            records[record["id"]] = record

    def top(record: dict) -> dict:
        while record.get("parent_id") in records:
            record = records[record["parent_id"]]
        return record

    pairs = {p.key: p for name in REAL_DIALOGUES for p in load(data / name).pairs}
    overlaps = []
    for record in records.values():
        if record.get("level") != "extracted":
            continue
        for source in record["provenance"]:
            pair = pairs.get((source["source"], source["record_id"], source["turn"]))
            overlap = pair and strategy_overlap(pair.followup, top(record)["text"])
            if overlap is not None and pair is not None:
                overlaps.append(overlap)
    return float(np.mean(overlaps))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 2 on bad input (one line on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--batch", type=Path, help="a batch's dialogues.jsonl")
    source.add_argument(
        "--held-out", action="store_true", help="the real follow-ups the simulator never saw"
    )
    parser.add_argument("--gammas", default="1,3,5", help="guidance weights, comma-separated")
    parser.add_argument("--turns", type=int, default=150)
    parser.add_argument("--boost-words", action="store_true", help="boost the strategy's words")
    parser.add_argument("--library", type=Path, default=ROOT / "stores/libraries/default")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--texts", type=Path, help="also write every draft here (JSON)")
    parser.add_argument("--adapter", type=Path, help="simulator adapter (default: shipped ideas)")
    parser.add_argument(
        "--length-floor",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="hold drafts to the card's real length shares, as run.py --length-floor does",
    )
    for name, kind in SAMPLING.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help="(server default)")
    args = parser.parse_args(argv)
    sampling = {k: getattr(args, k) for k in SAMPLING if getattr(args, k) is not None}
    from runtime.adapters import length_cues, length_floor, shipped

    adapter = args.adapter or shipped("strategy")
    if adapter is None or not adapter.is_file():
        print(f"error: {adapter}: file not found", file=sys.stderr)
        return 2
    try:
        gammas = [float(g) for g in args.gammas.split(",")]
        lengths = length_cues(adapter)
        floor = length_floor(adapter) if args.length_floor else None
        if args.held_out:
            card = adapter.parent / "card.json"
            sample = held_out_turns(card, args.data, args.library, args.turns)
        else:
            sample = turns_of(args.batch, args.turns)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not sample:
        why = (
            "no held-out real follow-up has a strategy in the library"
            if args.held_out
            else f"{args.batch} has no turn with a strategy among its candidates"
        )
        print(f"error: {why}", file=sys.stderr)
        return 2

    import llama_server
    from llama_cpp import Llama

    try:
        llama_server.GuideRequest(messages=[], against=[], **sampling)
    except ValidationError as exc:
        wrong = exc.errors()[0]
        print(f"error: --{str(wrong['loc'][0]).replace('_', '-')}: {wrong['msg']}", file=sys.stderr)
        return 2

    from runtime.server import default_gguf
    from stores.embeddings import MiniLMEmbedding

    llama = Llama(str(default_gguf()), n_ctx=4096, n_threads=2, logits_all=False, verbose=False)
    adapters = llama_server.Adapters({"ideas": str(adapter)})
    adapters.load(llama, "ideas")
    adapters.select(llama, "ideas")
    # builds prompts only; a simulator trained with length cues gets them, drawn as at run time
    simulator = StrategySimulator(None, trained=True, lengths=lengths, floor=floor)
    embed = MiniLMEmbedding().embed
    drafts: dict[float, list[str]] = {g: [] for g in gammas}
    for n, (messages, turn) in enumerate(sample):
        history, strategy = to_langchain(messages), turn["strategy"]["text"]
        prompt = fit_history(simulator.messages(history, strategy, None), HISTORY_TOKENS)
        against = prompt[:-1] + simulator.unconditioned(history, None)[-1:]
        for gamma in gammas:
            request = llama_server.GuideRequest(
                messages=to_openai(prompt), against=to_openai(against), guidance=gamma,
                seed=1000 + n, unboosted="" if args.boost_words else strategy, **sampling,
                min_words=simulator.fewest_words(history), whole=[END_MARKER],
            )  # fmt: skip
            text = llama_server.guide(llama, request, adapters).text
            drafts[gamma].append(clean_instruction(text, whole=True))
        print(f"\r{n + 1}/{len(sample)} turns", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    where = "held-out real follow-ups" if args.held_out else f"turns of {args.batch}"
    held = f"; length floor {dict(floor.shares)}" if floor else ""
    print(f"{len(sample)} {where}; {adapter}{held}")
    print(f"real users' restatement: {real_restatement(args.library, args.data):.3f}")
    print(
        f"{'gamma':>8} {'drafts':>6} {'top-1':>6} {'restate':>8} {'words':>6} {'question':>8} "
        f"{'loops':>6}"
    )
    recorded = [turn["instruction"] for _, turn in sample]
    rows = {"recorded": recorded} | {f"{g:g}": texts for g, texts in drafts.items()}
    for name, texts in rows.items():
        kept = [
            (t, turn)
            for t, (_, turn) in zip(texts, sample, strict=True)
            if t and not is_end_marker(t)
        ]
        hits = "n/a" if args.held_out else f"{np.mean([top1(embed, *k) for k in kept]):.3f}"
        restated = [strategy_overlap(t, turn["strategy"]["text"]) or 0.0 for t, turn in kept]
        lengths = [len(words(t)) for t, _ in kept]
        questions = [is_question(t) for t, _ in kept]
        looping = [loops(t) for t, _ in kept]
        print(
            f"{name:>8} {len(kept):6d} {hits:>6} {np.mean(restated):8.3f} "
            f"{np.mean(lengths):6.1f} {np.mean(questions):8.2f} {np.mean(looping):6.3f}"
        )
    if args.texts:
        args.texts.write_text(json.dumps({str(g): t for g, t in drafts.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

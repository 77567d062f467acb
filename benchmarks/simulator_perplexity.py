"""Go/no-go of the trained simulators: does the strategy in the prompt help predict real users?

On the held-out dialogues of the shipped simulators (the split their training used: the same
pairs, seed and share, so no held-out follow-up was trained on), this scores the real user's
follow-up under what is served, with llama.cpp (the bundled Q4_1 GGUF plus an adapter GGUF):

- base + strategy prompt: the prompted simulator, today's default before training;
- base + plain prompt: the prompted plain simulator;
- plain-trained + plain prompt;
- ideas-trained + the pair's true strategy;
- ideas-trained + a shuffled strategy (another held-out pair's, never the same text).

It prints per condition the perplexity of the follow-up tokens (end-of-turn token included, as
trained), and for true vs shuffled strategy the paired difference in mean log-loss per token
with a 95% bootstrap interval over dialogues, and the share of pairs the true strategy predicts
better. If the true strategy is no better than a shuffled one, the strategy is not being used.

    python benchmarks/simulator_perplexity.py [--ideas DIR] [--plain DIR] [--data DIR]

Needs the `train` extra (the tokenizer of the pairs is the training one) and llama-cpp-python;
it runs the model in-process, so run it alone (2 cores).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli.induce import load_sources  # noqa: E402
from induction.annotations import load_extractions  # noqa: E402
from induction.real_dialogues import REAL_DIALOGUES  # noqa: E402
from runtime.adapters import ADAPTER_FILE, SHIPPED  # noqa: E402
from runtime.server import default_gguf  # noqa: E402
from stores.packaged import read_records  # noqa: E402
from training.encode import IGNORE, Example, encode  # noqa: E402
from training.pairs import build_pairs, split_by_dialogue, strategy_texts  # noqa: E402


def held_out_examples(card: dict, data: Path, tokenizer) -> dict[str, list[tuple[str, Example]]]:
    """Tokenise the held-out pairs under each prompt: strategy, shuffled strategy, plain."""
    settings = card["settings"]
    real = [p for r in load_sources([data / d for d in REAL_DIALOGUES], None) for p in r.pairs]
    extractions = load_extractions(ROOT / "induction/data/team_extractions.jsonl")
    library = ROOT / "stores/libraries/default"
    texts = strategy_texts(extractions, read_records(library), settings["strategy_level"])
    budget = settings["history_tokens"]
    seed, share = settings["loop"]["seed"], settings["held_out_share"]
    with_strategy = build_pairs(real, texts, with_strategy=True, history_tokens=budget).pairs
    _, held = split_by_dialogue(with_strategy, share, seed)
    keys = {p.key for p in held}
    shuffled = derange({p.key: p.strategy for p in held}, seed)
    prompts = {
        "strategy": held,
        "shuffled": build_pairs(
            [p for p in real if p.key in keys], shuffled, with_strategy=True, history_tokens=budget
        ).pairs,
        "plain": [
            p
            for p in build_pairs(real, texts, with_strategy=False, history_tokens=budget).pairs
            if p.key in keys
        ],
    }
    fits = {
        name: {
            p.key: (p.dialogue, e)
            for p in pairs
            if len((e := encode(tokenizer, p.messages, p.target)).input_ids)
            <= settings["max_length"]
        }
        for name, pairs in prompts.items()
    }
    scored = sorted(set.intersection(*(set(f) for f in fits.values())))  # fit under every prompt
    return {name: [f[key] for key in scored] for name, f in fits.items()}


def derange(strategies: dict, seed: int) -> dict:
    """Give each pair another pair's strategy, never one with the same text."""
    keys = sorted(strategies)
    rng = random.Random(seed)
    while True:
        order = keys[:]
        rng.shuffle(order)
        if all(strategies[a] != strategies[b] for a, b in zip(keys, order, strict=True)):
            return {a: strategies[b] for a, b in zip(keys, order, strict=True)}


def losses(
    gguf: Path, adapter: Path | None, examples: list[tuple[str, Example]]
) -> list[tuple[str, float, int]]:
    """Return (dialogue, summed log-loss of the target tokens, target tokens) per example."""
    from llama_cpp import Llama

    n_ctx = max(len(e.input_ids) for _, e in examples) + 8
    llm = Llama(
        model_path=str(gguf),
        lora_path=str(adapter) if adapter else None,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_threads=2,
        logits_all=True,
        verbose=False,
    )
    out = []
    try:
        for dialogue, example in examples:
            llm.reset()
            llm.eval(example.input_ids)
            start = example.prompt_length
            logits = np.asarray(
                llm.scores[start - 1 : len(example.input_ids) - 1], dtype=np.float64
            )
            top = logits.max(axis=1, keepdims=True)
            log_z = (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))).ravel()
            targets = np.asarray(example.input_ids[start:])
            nll = float((log_z - logits[np.arange(len(targets)), targets]).sum())
            assert all(label != IGNORE for label in example.labels[start:])
            out.append((dialogue, nll, len(targets)))
    finally:
        llm.close()
    return out


def bootstrap_difference(a, b, rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean log-loss per token of `a` minus `b`, paired, with a 95% interval over dialogues."""
    dialogues = sorted({d for d, _, _ in a})
    per = {d: [0.0, 0.0, 0] for d in dialogues}
    for (d, la, n), (_, lb, _) in zip(a, b, strict=True):
        per[d][0] += la
        per[d][1] += lb
        per[d][2] += n
    rows = np.array([per[d] for d in dialogues])
    point = (rows[:, 0].sum() - rows[:, 1].sum()) / rows[:, 2].sum()
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(rounds):
        s = rows[rng.integers(0, len(rows), len(rows))]
        draws.append((s[:, 0].sum() - s[:, 1].sum()) / s[:, 2].sum())
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(point), float(low), float(high)


def main() -> int:
    """Score every condition and print the go/no-go line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ideas", type=Path, default=SHIPPED / "ideas")
    parser.add_argument("--plain", type=Path, default=SHIPPED / "plain")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    gguf = default_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    card = json.loads((args.ideas / "card.json").read_text())
    examples = held_out_examples(card, args.data, tokenizer)
    n = len(examples["strategy"])
    split = card["settings"]
    print(
        f"held-out: {n} pairs from {len({d for d, _ in examples['strategy']})} dialogues "
        f"(split seed {split['loop']['seed']}, share {split['held_out_share']})"
    )
    conditions = {
        "base + strategy prompt (prompted)": (None, "strategy"),
        "base + plain prompt": (None, "plain"),
        "plain-trained + plain prompt": (args.plain / ADAPTER_FILE, "plain"),
        "ideas-trained + true strategy": (args.ideas / ADAPTER_FILE, "strategy"),
        "ideas-trained + shuffled strategy": (args.ideas / ADAPTER_FILE, "shuffled"),
    }
    scores, results = {}, {}
    for name, (adapter, prompt) in conditions.items():
        started = time.perf_counter()
        scores[name] = losses(gguf, adapter, examples[prompt])
        nll = sum(s for _, s, _ in scores[name])
        tokens = sum(t for _, _, t in scores[name])
        results[name] = {"perplexity": float(np.exp(nll / tokens)), "tokens": tokens}
        print(
            f"{name:36s} perplexity {results[name]['perplexity']:8.2f}  "
            f"({tokens} tokens, {time.perf_counter() - started:.0f} s)"
        )
    true, shuffled = (scores[f"ideas-trained + {k} strategy"] for k in ("true", "shuffled"))
    point, low, high = bootstrap_difference(true, shuffled)
    better = np.mean([a[1] / a[2] < b[1] / b[2] for a, b in zip(true, shuffled, strict=True)])
    results["true_minus_shuffled"] = {
        "per_token": point,
        "ci95": [low, high],
        "pairs_better": better,
    }
    print(
        f"true - shuffled strategy: {point:+.4f} nats/token (95% CI {low:+.4f} .. {high:+.4f}); "
        f"the true strategy predicts {better:.0%} of the pairs better"
    )
    verdict = "GO: the strategy helps" if high < 0 else "NO-GO: the true strategy is not better"
    print(f"go/no-go: {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"pairs": n, **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

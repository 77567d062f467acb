"""The end marker's round trip (issue 21): ending pair -> adapter -> GGUF -> server -> ending.

Dialogues their users ended (SimulatorArena's format, `why_stop`) train the tiny Llama with
`train-simulator --endings` until it overfits; its `adapter.gguf`, served on the tiny GGUF base
by the embedded server, answers the ending pair's own simulator prompt with `END_MARKER`, which
`is_end_marker` reads back as an ending. The base alone does not. (That a drafted marker ends the
dialogue in the graph is tested with scripted models in tests/test_loop.py and tests/test_cli.py.)
"""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from cli.main import main  # noqa: E402
from dialogues.ending import END_MARKER, is_end_marker  # noqa: E402
from tests.tiny_models import training_inputs  # noqa: E402
from training.endings import calibrate  # noqa: E402

QUERIES = ["the user asks a question", "and the assistant answers it?"]
ANSWERS = ["the assistant answers it in detail", "the user asks and the assistant answers"]


def ended_dialogues(tmp_path, n=4):
    """`n` SimulatorArena conversations their users ended, extractions and a library for them."""
    dialogues = tmp_path / "arena.json"
    rows = [
        {"workerId": f"w{i}", "user_queries": QUERIES, "ai_responses": ANSWERS,
         "why_stop": "I had what I needed"}
        for i in range(n)
    ]  # fmt: skip
    dialogues.write_text(json.dumps(rows))
    return training_inputs(tmp_path, dialogues, "Ask for more detail")


def train_argv(tmp_path, base):
    return [
        str(a)
        for a in [
            "train-simulator", *ended_dialogues(tmp_path), "--endings", "--base", base,
            "--out", tmp_path / "sim", "--held-out", "0.25", "--epochs", "50",
            "--max-steps", "120", "--accumulation", "1", "--learning-rate", "0.01",
            "--max-length", "8192", "--device", "cpu",
        ]
    ]  # fmt: skip


def the_pairs(argv):
    """The trainer's own pairs for `argv`: (the ending pair, the follow-up pair) of one dialogue."""
    from cli.induce import load_sources
    from cli.train import build_parser, make_job, make_pairs

    args = build_parser().parse_args(argv[1:])
    job = make_job(args)
    loaded = load_sources(args.dialogues, None)
    real = [p for r in loaded for p in r.pairs]
    built = make_pairs(args, job, real, [(r.path.name, d) for r in loaded for d in r.dialogues])
    ending = next(p for p in built.pairs if p.ending)
    follow = next(p for p in built.pairs if not p.ending and p.dialogue == ending.dialogue)
    return ending, follow


@pytest.mark.embedded
def test_a_trained_ending_comes_back_from_the_server_as_the_end_marker(
    tmp_path, tiny_base, tiny_gguf
):
    import httpx

    from runtime.server import EmbeddedServer
    from training import TrainingError
    from training.convert import converter_tree

    try:
        converter_tree()
    except TrainingError as exc:
        pytest.skip(str(exc))
    argv = train_argv(tmp_path, tiny_base)
    ending, follow = the_pairs(argv)
    assert (ending.target, follow.target) == (END_MARKER, QUERIES[1])
    assert main(argv) == 0
    out = tmp_path / "sim"
    card = json.loads((out / "card.json").read_text())
    assert card["counts"]["ending_pairs"] == 4 and card["adapter"]["file"] == "adapter.gguf"
    held = card["counts"]["held_out_names"]
    assert len(held) == card["counts"]["held_out_dialogues"] >= 1 and ending.dialogue not in held

    def ask(model: str, messages: list[dict[str, str]]) -> str:
        body = {"model": model, "messages": messages, "temperature": 0, "seed": 0,
                "max_tokens": 24}  # fmt: skip
        reply = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
        return reply.raise_for_status().json()["choices"][0]["message"]["content"]

    def p_end(model: str, messages: list[dict[str, str]]) -> float:
        """The run-time ending rule's input: the marker's probability as the reply (the score
        endpoint of the embedded server, `StrategySimulator.end_probability`)."""
        body = {"model": model, "messages": messages, "continuation": END_MARKER}
        reply = httpx.post(f"{server.base_url}/ideas/score", json=body, timeout=60)
        return math.exp(reply.raise_for_status().json()["logprob"])

    served = {"tiny+sim": out / "adapter.gguf"}
    with EmbeddedServer(
        gguf=tiny_gguf, alias="tiny", adapters=served, n_ctx=2048, prompt_cache_bytes=None
    ) as server:
        tuned = ask("tiny+sim", ending.messages)
        plain = ask("tiny", ending.messages)
        tuned_before = ask("tiny+sim", follow.messages)
        scored = [p_end("tiny+sim", ending.messages), p_end("tiny+sim", follow.messages)]
        base_scored = p_end("tiny", ending.messages)
    assert is_end_marker(tuned), tuned  # the marker survived training, conversion and serving
    assert tuned.strip() == END_MARKER  # as text: no piece lost to either tokenizer
    assert not is_end_marker(plain), plain  # the base alone does not end
    assert not is_end_marker(tuned_before), tuned_before  # it ends after the last answer only
    # The tiny model's greedy path is a flat one (p_end ~1e-7 where it writes the marker), so
    # the check is relative: p_end at the ending far above the one before it and the base's,
    # and a threshold calibrated on the two positions ends at the ending and not before it.
    assert scored[0] > 1e6 * scored[1] and scored[0] > 1e6 * base_scored, (scored, base_scored)
    threshold = calibrate(scored, [True, False]).threshold
    assert scored[0] >= threshold > scored[1]

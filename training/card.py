"""The model card of a trained simulator: `card.json` (data) and `CARD.md` (for people)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dialogues.output import StagedWrites, utf8

STRATEGY_LEVEL_WHY = {
    "high": "the pair's high-level strategy (the top-tier ancestor of its extracted strategy in "
    "the library): the strategist retrieves high-level strategies at run time, so training on "
    "them teaches the simulator the strategies it will actually be given",
    "extracted": "the strategy extracted from this very follow-up (closest to what the user did, "
    "but never what the strategist hands the simulator at run time)",
}


def write_card(out: Path, card: dict[str, Any]) -> None:
    """Write `card.json` and `CARD.md` into `out`, together (`StagedWrites`)."""
    text, page = json.dumps(card, indent=2) + "\n", markdown(card)
    with StagedWrites() as staged:
        staged.write(out / "card.json", lambda handle: handle.write(utf8(text)))
        staged.write(out / "CARD.md", lambda handle: handle.write(utf8(page)))


def stamp(out: Path, built_by: str) -> None:
    """Record in the card of `out` the command that built it (e.g. the repository's script)."""
    card = json.loads((out / "card.json").read_text(encoding="utf-8"))
    write_card(out, card | {"built_by": built_by})


def _ending_lines(ending: dict[str, Any] | None) -> list[str]:
    """The card's paragraph on when the simulator ends the conversation (`training.endings`)."""
    if not ending:
        return []
    threshold, per_turn = ending["threshold"], ending.get("per_turn", 0.0)  # .get: older cards
    examples = ", ".join(f"{threshold * math.exp(-per_turn * k):.3g} after {k}" for k in (2, 4, 6))
    return [
        "## Ending",
        "",
        "At run time (`--ending learned`) the user ends the conversation when the probability "
        f"of the end marker as its reply is at least **{threshold:.4g} x exp(-{per_turn:.3g} k)**, "
        f"k the user turns so far ({examples} user turns). The slope is a logistic hazard of "
        "ending on log p_end and k; the threshold then maximised End F1 "
        f"({ending['f1']:.3f}, {ending['predicted']} endings predicted for {ending['endings']} "
        f"real ones) over {ending['positions']} positions: {ending['calibrated_on']} "
        f"({', '.join(ending['sources'])}; strategy in the prompt: "
        f'"{ending["strategy"]}"). Built by `python -m training.endings`.',
        "",
    ]


def _floor_lines(floor: dict[str, Any] | None) -> list[str]:
    """The card's paragraph on the length floor (`training.lengths`; none without one)."""
    if not floor:
        return []
    listed = ", ".join(
        f"{cue} {share:.2f} (at least {floor['fewest_words'][cue]})"
        for cue, share in floor["shares"].items()
    )
    return [
        "## Length floor",
        "",
        "At run time each turn draws a length at the real users' shares and its drafts do not "
        f"end before that length's fewest words: {listed}; counted over {floor['turns']} "
        f"follow-ups, {floor['counted_on']} ({', '.join(floor['sources'])}). "
        "Built by `python -m training.lengths`.",
        "",
    ]


def _length_line(shares: dict[str, float] | None) -> str:
    """The card's sentence on length cues (empty without them)."""
    if not shares:
        return ""
    listed = ", ".join(f"{cue} {share:.2f}" for cue, share in shares.items())
    return (
        " Length cues: each request names its real follow-up's length; at run time the cue is "
        f"drawn at the real users' shares ({listed})."
    )


def markdown(card: dict[str, Any]) -> str:
    """Render the card for people."""
    settings, counts = card["settings"], card["counts"]
    level = settings["strategy_level"]
    prompt = (
        f"the strategy simulator's prompt with {STRATEGY_LEVEL_WHY[level]}"
        if level
        else "the plain simulator's prompt (no strategy), on the same pairs as the `ideas` variant"
    )
    adapter = card["adapter"]
    base = card.get("base_model")
    where = f"on {card.get('device', 'cpu')} ({card.get('dtype', 'float32')})"
    lines = [
        f"# Trained user simulator `{card['name']}` ({settings['variant']})",
        "",
        f"LoRA adapter for `{card['base']}`, trained {where} to write the real user's follow-up "
        f"given exactly what the simulator is sent at run time: {prompt}. The loss covers the "
        "follow-up's tokens only. " + _loading(adapter),
        "",
        *(
            [
                f"Base: `{base['name']}` ({base['format']}, {base['architecture']}, "
                f"{base['num_hidden_layers']} layers of {base['hidden_size']}); sha256 of "
                f"`{base['weights']}`: `{base['sha256']}`.",
                "",
            ]
            if base
            else []
        ),
        *([f"Built by `{card['built_by']}`.", ""] if "built_by" in card else []),
        "## Data",
        "",
        "| source | sha256 |",
        "|---|---|",
        *(f"| {name} | `{digest}` |" for name, digest in card["sources"].items()),
        "",
        f"{counts['real_pairs']} real pairs; left out: "
        + ", ".join(f"{n} {why}" for why, n in counts["dropped"].items())
        + f". Split by dialogue: {counts['train']} train pairs ({counts['train_dialogues']} "
        f"dialogues), {counts['held_out']} held out ({counts['held_out_dialogues']} dialogues; "
        f"{counts['held_out_evaluated']} evaluated). "
        f"{counts['train_tokens']} training tokens, {counts['train_target_tokens']} of them "
        "targets."
        + (
            f" {counts['history_trimmed']} pairs had their oldest history dropped to fit "
            "max_length (as the run time fits its history budget)."
            if counts.get("history_trimmed")
            else ""
        )
        + (
            f" {counts['ending_pairs']} of the pairs end the conversation (target: the end "
            "marker, after a real dialogue its user ended)"
            + (
                f"; {counts['ending_pairs_trained']} of them are in the training split"
                if "ending_pairs_trained" in counts
                else ""
            )
            + (
                f", each trained {weight} times an epoch (`ending_weight`)"
                if (weight := card["settings"].get("ending_weight", 1)) != 1  # .get: absent at 1
                else ""
            )
            + "."
            if "ending_pairs" in counts
            else ""
        )
        + (
            f" Strategy dropout: {counts['strategy_dropped']} of the training pairs "
            f"(share {card['settings']['strategy_dropout']}) were trained on the guided drafts' "
            "contrast request instead of their strategy."
            if "strategy_dropped" in counts
            else ""
        )
        + _length_line(card.get("length_cues")),
        "",
        *_ending_lines(card.get("ending")),
        *_floor_lines(card.get("length_floor")),
        "## Training",
        "",
        "| epoch | steps | train loss | held-out loss | held-out perplexity | seconds | tokens/s |",
        "|---|---|---|---|---|---|---|",
        *(_epoch_row(e) for e in card["epochs"]),
        "",
        "Epoch 0 is the base model before training.",
        "",
        f"Peak RSS {card['peak_rss_mib']} MiB; "
        + (
            f"adapter `{adapter['file']}` {adapter['bytes'] / 2**20:.1f} MiB; "
            if adapter.get("file")
            else ""
        )
        + (f"PEFT adapter {adapter['peft_bytes'] / 2**20:.1f} MiB; " if adapter.get("peft") else "")
        + f"whole run {card['seconds']} s.",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(settings, indent=2),
        "```",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def _loading(adapter: dict[str, Any]) -> str:
    gguf = (
        f"Load `{adapter['file']}` with llama.cpp (`--lora`, `lora_path`, or `--simulator-adapter` "
        "on the embedded server)"
        if adapter.get("file")
        else f"No GGUF adapter: {adapter['no_gguf']}"
        if adapter.get("no_gguf")
        else ""
    )
    peft = (
        "the PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`) with vLLM "
        "(`--lora-modules`), SGLang (`--lora-paths`) or transformers"
        if adapter.get("peft")
        else ""
    )
    if gguf and peft:
        return f"{gguf}; {peft}."
    return f"{gguf or peft.capitalize()}."


def _epoch_row(epoch: dict[str, Any]) -> str:
    train = "" if epoch["train_loss"] is None else f"{epoch['train_loss']:.3f}"
    cut = "" if epoch["complete"] else " (cut by --max-steps)"
    return (
        f"| {epoch['epoch']}{cut} | {epoch['steps']} | {train} | {epoch['held_out_loss']:.3f} "
        f"| {epoch['held_out_perplexity']:.2f} | {epoch['seconds']} | {epoch['tokens_per_s']} |"
    )

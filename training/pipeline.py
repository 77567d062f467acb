"""One `train-simulator` run: pairs -> tokens -> LoRA training -> PEFT and GGUF adapters -> card.

The output folder holds the PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`: what
vLLM, SGLang and transformers load) and, converted by llama.cpp's converter, `adapter.gguf` (what
llama.cpp and the embedded server load). A base from a Hugging Face directory whose architecture
the converter does not know still gets its PEFT adapter; the card says why there is no GGUF one.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from induction.records import Pair
from training import TrainingError
from training.card import write_card
from training.convert import CONVERTER, convert_adapter, converter_tree, llama_cpp_version
from training.encode import Example, encode_fitting
from training.job import TrainingInputError, TrainJob, base_format
from training.loop import LoopSettings, Reporter, latest_checkpoint, train
from training.model import (
    LoraSettings,
    describe_base,
    load_base,
    place,
    save_base_config,
    with_lora,
)
from training.pairs import PairSet, TrainingPair, drop_strategies, split_by_dialogue

ADAPTER = "adapter.gguf"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def run(
    job: TrainJob,
    pair_set: PairSet,
    real_pairs: list[Pair],
    report: Reporter,
    notify: Callable[[str], None],
) -> dict[str, Any]:
    """Train, convert and describe one simulator; return the card's data.

    Raises:
        TrainingInputError: No example fits, or `job.out` holds checkpoints of another run.
        TrainingError: llama.cpp's converter is not installed, or the conversion to GGUF failed.
    """
    started = time.perf_counter()
    tree = converter_tree()  # before training: a missing converter stops the run at once
    sources = job.sources()
    run_id = job.run_id(sources)
    checkpoints = job.out / "checkpoints"
    latest = latest_checkpoint(checkpoints)
    if latest is not None and latest[1]["run_id"] != run_id:
        raise TrainingInputError(
            f"{job.out} holds checkpoints of a run with other data or settings; "
            "use another --out or remove it"
        )
    placement = place(job.device)
    torch.set_num_threads(job.threads)
    torch.manual_seed(job.loop["seed"])
    fmt = base_format(job.base)
    how = "dequantised, " if fmt == "gguf" else ""
    notify(
        f"loading {job.base.name} with transformers ({how}{placement.dtype_name} "
        f"on {placement.device})"
    )
    base, tokenizer = load_base(job.base, placement)
    base_record = {
        "name": job.base.name,
        "format": fmt,
        "weights": job.base_weights.name,
        "sha256": sources[job.base_key],
        **describe_base(base),
    }
    train_pairs, held_pairs = split_by_dialogue(pair_set.pairs, job.held_out, job.loop["seed"])
    train_pairs = drop_strategies(train_pairs, job.strategy_dropout, job.loop["seed"])

    def fit(pairs: list[TrainingPair]) -> list[tuple[Example, bool]]:
        return [
            encode_fitting(tokenizer, p.messages, p.target, job.max_length, job.history_tokens)
            for p in pairs
        ]

    train_fitted, held_fitted = fit(train_pairs), fit(held_pairs)
    train_encoded = [example for example, _ in train_fitted]
    held_examples = [example for example, _ in held_fitted]
    trimmed = sum(was_trimmed for _, was_trimmed in (*train_fitted, *held_fitted))
    too_long = sum(len(e.input_ids) > job.max_length for e in train_encoded + held_examples)
    train_examples = [e for e in train_encoded if len(e.input_ids) <= job.max_length]
    held_examples = [e for e in held_examples if len(e.input_ids) <= job.max_length]
    held_fitting = len(held_examples)
    held_examples = held_examples[: job.eval_limit]
    if not train_examples or not held_examples:
        raise TrainingInputError(
            f"too few pairs to train and hold out: {len(train_examples)} train, "
            f"{len(held_examples)} held out (need dialogues on both sides)"
        )
    weighted = train_examples + repeated_endings(
        list(zip(train_pairs, train_encoded, strict=True)), job.ending_weight, job.max_length
    )
    model = with_lora(base, LoraSettings(**job.lora))
    history = train(
        model, weighted, held_examples, LoopSettings(**job.loop), checkpoints, run_id, report
    )
    save_peft(model, job.out)
    notify(f"converting the adapter with llama.cpp's {CONVERTER}")
    try:
        adapter: Path | None = export(model, job.out, tree)
        no_gguf = None
    except TrainingError as exc:
        if fmt == "gguf":
            raise
        adapter, no_gguf = None, str(exc)
        notify(f"no GGUF adapter (the PEFT adapter is written): {no_gguf}")
    counts = {
        "real_pairs": len(real_pairs),
        "dropped": {**pair_set.dropped, "longer than max_length": too_long},
        "history_trimmed": trimmed,
        "train": len(train_examples),
        **(
            {"strategy_dropped": sum(p.strategy is None for p in train_pairs)}
            if job.strategy_dropout
            else {}
        ),
        **(
            {
                "ending_pairs": sum(p.ending for p in pair_set.pairs),
                "ending_pairs_trained": sum(
                    p.ending and len(e.input_ids) <= job.max_length
                    for p, e in zip(train_pairs, train_encoded, strict=True)
                ),
            }
            if job.endings
            else {}
        ),
        "held_out": held_fitting,
        "held_out_evaluated": len(held_examples),
        "train_dialogues": len({p.dialogue for p in train_pairs}),
        "held_out_dialogues": len({p.dialogue for p in held_pairs}),
        "held_out_names": sorted({p.dialogue for p in held_pairs}),
        "train_tokens": sum(len(e.input_ids) for e in train_examples),
        "train_target_tokens": sum(e.target_length for e in train_examples),
        "held_out_target_tokens": sum(e.target_length for e in held_examples),
    }
    card = {
        "name": job.out.name,
        "base": job.base.name,
        "base_model": base_record,
        "device": placement.device,
        "dtype": placement.dtype_name,
        "run_id": run_id,
        "sources": sources,
        "counts": counts,
        "settings": job.settings(),
        **({"length_cues": dict(pair_set.length_cues.shares)} if pair_set.length_cues else {}),
        "epochs": [vars(h) for h in history],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "adapter": {
            "file": adapter.name if adapter else None,
            "bytes": adapter.stat().st_size if adapter else 0,
            "no_gguf": no_gguf,
            "peft": list(PEFT_FILES),
            "peft_bytes": sum((job.out / f).stat().st_size for f in PEFT_FILES),
        },
        "seconds": round(time.perf_counter() - started, 1),
        "versions": {
            name: metadata.version(name) for name in ("torch", "transformers", "peft", "gguf")
        }
        | {"llama_cpp_python (converter)": llama_cpp_version()},
    }
    write_card(job.out, card)
    if history[-1].complete and history[-1].epoch >= job.loop["epochs"]:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return card


def repeated_endings(
    pairs: list[tuple[TrainingPair, Example]], weight: int, max_length: int
) -> list[Example]:
    """The extra copies that make each fitting ending pair count `weight` times an epoch."""
    return [
        example
        for pair, example in pairs
        if pair.ending and len(example.input_ids) <= max_length
        for _ in range(weight - 1)
    ]


def save_peft(model, out: Path) -> None:
    """Write the PEFT adapter's two files into `out` (what vLLM, SGLang and transformers load)."""
    with tempfile.TemporaryDirectory() as scratch:
        model.save_pretrained(scratch, save_embedding_layers=False)
        for name in PEFT_FILES:  # peft also writes a template README; only the adapter is kept
            shutil.move(Path(scratch) / name, out / name)


def export(model, out: Path, tree: Path | None = None) -> Path:
    """Save the PEFT adapter into `out`, convert it to `out/adapter.gguf` with `tree`'s converter.

    Raises:
        TrainingError: `tree` is None and the converter is not installed, or the conversion failed.
    """
    tree = tree or converter_tree()
    if not all((out / name).is_file() for name in PEFT_FILES):
        save_peft(model, out)
    with tempfile.TemporaryDirectory() as scratch:
        base_config = save_base_config(model.get_base_model(), Path(scratch) / "base")
        return convert_adapter(out, base_config, out / ADAPTER, tree)

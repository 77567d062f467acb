"""One `train-simulator` run: pairs -> tokens -> LoRA training -> GGUF adapter -> model card."""

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
from training.card import write_card
from training.convert import CONVERTER, convert_adapter, converter_tree, llama_cpp_version
from training.encode import encode
from training.job import TrainingInputError, TrainJob
from training.loop import LoopSettings, Reporter, latest_checkpoint, train
from training.model import LoraSettings, load_base, save_base_config, with_lora
from training.pairs import PairSet, split_by_dialogue

ADAPTER = "adapter.gguf"


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
    torch.set_num_threads(job.threads)
    torch.manual_seed(job.loop["seed"])
    notify(f"loading {job.base.name} with transformers (dequantised to float32)")
    base, tokenizer = load_base(job.base)
    train_pairs, held_pairs = split_by_dialogue(pair_set.pairs, job.held_out, job.loop["seed"])
    train_examples = [encode(tokenizer, p.messages, p.target) for p in train_pairs]
    held_examples = [encode(tokenizer, p.messages, p.target) for p in held_pairs]
    too_long = sum(len(e.input_ids) > job.max_length for e in train_examples + held_examples)
    train_examples = [e for e in train_examples if len(e.input_ids) <= job.max_length]
    held_examples = [e for e in held_examples if len(e.input_ids) <= job.max_length]
    held_fitting = len(held_examples)
    held_examples = held_examples[: job.eval_limit]
    if not train_examples or not held_examples:
        raise TrainingInputError(
            f"too few pairs to train and hold out: {len(train_examples)} train, "
            f"{len(held_examples)} held out (need dialogues on both sides)"
        )
    model = with_lora(base, LoraSettings(**job.lora))
    history = train(
        model, train_examples, held_examples, LoopSettings(**job.loop), checkpoints, run_id, report
    )
    notify(f"converting the adapter with llama.cpp's {CONVERTER}")
    adapter = export(model, job.out, tree)
    counts = {
        "real_pairs": len(real_pairs),
        "dropped": {**pair_set.dropped, "longer than max_length": too_long},
        "train": len(train_examples),
        "held_out": held_fitting,
        "held_out_evaluated": len(held_examples),
        "train_dialogues": len({p.dialogue for p in train_pairs}),
        "held_out_dialogues": len({p.dialogue for p in held_pairs}),
        "train_tokens": sum(len(e.input_ids) for e in train_examples),
        "train_target_tokens": sum(e.target_length for e in train_examples),
        "held_out_target_tokens": sum(e.target_length for e in held_examples),
    }
    card = {
        "name": job.out.name,
        "base": job.base.name,
        "run_id": run_id,
        "sources": sources,
        "counts": counts,
        "settings": job.settings(),
        "epochs": [vars(h) for h in history],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "adapter": {"file": adapter.name, "bytes": adapter.stat().st_size},
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


def export(model, out: Path, tree: Path | None = None) -> Path:
    """Save the PEFT adapter and convert it to `out/adapter.gguf` with the converter in `tree`.

    Raises:
        TrainingError: `tree` is None and the converter is not installed, or the conversion failed.
    """
    tree = tree or converter_tree()
    with tempfile.TemporaryDirectory() as scratch:
        peft_dir = Path(scratch) / "peft"
        model.save_pretrained(peft_dir, save_embedding_layers=False)
        base_config = save_base_config(model.get_base_model(), Path(scratch) / "base")
        return convert_adapter(peft_dir, base_config, out / ADAPTER, tree)

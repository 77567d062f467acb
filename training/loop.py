"""The training loop: gradient accumulation, held-out loss per epoch, checkpoints.

A checkpoint is written after each epoch and every `checkpoint_steps` optimiser steps within
one (an epoch on 2 CPU cores can take hours). A killed run resumes from its last checkpoint: the
adapter weights, optimiser, schedule and random state are restored, and each epoch's example
order comes from the seed and the epoch number alone, so the resumed run does what an unbroken
run would have done.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from training.encode import Example
from training.model import target_loss


@dataclass(frozen=True)
class LoopSettings:
    """How long and how fast to train."""

    epochs: int = 2
    learning_rate: float = 2e-4
    accumulation: int = 8
    """Examples per optimiser step (one example per forward pass: no padding on CPU)."""
    warmup_steps: int = 10
    max_steps: int | None = None
    """Stop after this many optimiser steps in all (a short measuring run); None: all epochs."""
    seed: int = 0
    checkpoint_steps: int | None = 20
    """Also checkpoint every this many optimiser steps within an epoch (None: epochs only)."""


@dataclass
class EpochReport:
    """What one epoch did; epoch 0 is the base model before training."""

    epoch: int
    steps: int
    held_out_loss: float
    held_out_perplexity: float
    train_loss: float | None = None
    seconds: float = 0.0
    tokens: int = 0
    tokens_per_s: float = 0.0
    complete: bool = True
    """False when `max_steps` cut the epoch short."""


@dataclass
class Progress:
    """The state of the run, passed to the reporter after every optimiser step."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    tokens_per_s: float
    history: list[EpochReport] = field(default_factory=list)


Reporter = Callable[[str, Progress | None], None]
"""Called with ("step", progress), or with ("eval", None) / ("resume", progress) notices."""


def evaluate(model: torch.nn.Module, examples: Sequence[Example]) -> tuple[float, float]:
    """Return the mean target-token loss of `examples` and its perplexity."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for example in examples:
            loss, n = target_loss(model, example)
            total, tokens = total + loss.item(), tokens + n
    model.train(was_training)
    mean = total / max(tokens, 1)
    return mean, math.exp(mean)


def train(
    model: PeftModel,
    examples: Sequence[Example],
    held_out: Sequence[Example],
    settings: LoopSettings,
    checkpoints: Path,
    run_id: str,
    report: Reporter,
) -> list[EpochReport]:
    """Train the adapter of `model` on `examples`; return the report of every epoch.

    Args:
        model: The base model with a LoRA adapter (only the adapter is trainable).
        examples: Training examples.
        held_out: Examples evaluated before training and after each epoch.
        settings: Epochs, learning rate, accumulation, seed.
        checkpoints: Directory of per-epoch checkpoints; the latest one of `run_id` is resumed.
        run_id: Identifies the data and settings; checkpoints of another run are never resumed.
        report: Progress callback (the CLI draws its progress bar from it).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=settings.learning_rate)
    per_epoch = math.ceil(len(examples) / settings.accumulation)
    total = per_epoch * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)
    warmup = max(1, min(settings.warmup_steps, total // 10 or 1))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * max(0.1, 1 - s / max(total, 1))
    )
    history, step, within = resume(model, optimiser, schedule, checkpoints, run_id)
    if history:
        report("resume", Progress(step, total, history[-1].epoch, math.nan, 0.0, history))
    else:
        report("eval", None)
        history.append(EpochReport(0, 0, *evaluate(model, held_out)))
    model.train()
    for epoch in range(history[-1].epoch + 1, settings.epochs + 1):
        if step >= total:
            break
        started, tokens, loss_sum, target_tokens = time.perf_counter(), 0, 0.0, 0
        order = list(range(len(examples)))
        random.Random(f"{settings.seed}/{epoch}").shuffle(order)
        torch.manual_seed(settings.seed * 1000 + epoch)
        start = 0
        if within is not None:  # resume inside this epoch, where its checkpoint left it
            start, tokens = within.next, within.tokens
            loss_sum, target_tokens = within.loss_sum, within.target_tokens
            started -= within.seconds
            torch.set_rng_state(within.rng)
            within = None
        for first in range(start, len(order), settings.accumulation):
            group = [examples[i] for i in order[first : first + settings.accumulation]]
            group_tokens = sum(e.target_length for e in group)
            optimiser.zero_grad()
            group_loss = 0.0
            for example in group:
                loss, _ = target_loss(model, example)
                (loss / group_tokens).backward()
                group_loss += loss.item()
                tokens += len(example.input_ids)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            step += 1
            loss_sum, target_tokens = loss_sum + group_loss, target_tokens + group_tokens
            rate = tokens / (time.perf_counter() - started)
            report("step", Progress(step, total, epoch, group_loss / group_tokens, rate, history))
            if step >= total:
                break
            last = first + settings.accumulation >= len(order)
            if settings.checkpoint_steps and step % settings.checkpoint_steps == 0 and not last:
                seconds = time.perf_counter() - started
                done = Within(
                    epoch, first + settings.accumulation, tokens, loss_sum, target_tokens,
                    seconds, torch.get_rng_state(),
                )  # fmt: skip
                save_checkpoint(
                    model, optimiser, schedule, checkpoints, run_id, step, history, done
                )
        train_seconds = time.perf_counter() - started
        complete = first + settings.accumulation >= len(order)
        report("eval", None)
        loss, perplexity = evaluate(model, held_out)
        history.append(
            EpochReport(
                epoch,
                step,
                loss,
                perplexity,
                train_loss=loss_sum / max(target_tokens, 1),
                seconds=round(train_seconds, 2),
                tokens=tokens,
                tokens_per_s=round(tokens / train_seconds, 1),
                complete=complete,
            )
        )
        if complete:
            save_checkpoint(model, optimiser, schedule, checkpoints, run_id, step, history)
    return history


@dataclass
class Within:
    """Where a checkpoint inside an epoch left it: what the rest of the epoch continues from."""

    epoch: int
    next: int
    """Index in the epoch's order of the first example not trained yet."""
    tokens: int
    loss_sum: float
    target_tokens: int
    seconds: float
    rng: torch.Tensor
    """Torch's random state (dropout draws) at that point."""


def save_checkpoint(
    model: PeftModel,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    checkpoints: Path,
    run_id: str,
    step: int,
    history: list[EpochReport],
    within: Within | None = None,
) -> Path:
    """Write a checkpoint atomically and drop older ones; return its directory.

    Without `within` it closes the epoch `history` ends with (`epoch-N`); with it, it is a
    checkpoint inside epoch `within.epoch` (`epoch-N.step-S`).
    """
    name = f"epoch-{history[-1].epoch}" if within is None else f"epoch-{within.epoch}.step-{step}"
    final = checkpoints / name
    partial = checkpoints / f"{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    weights = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()}
    save_file(weights, partial / "adapter.safetensors")
    trainer = {"optimiser": optimiser.state_dict(), "schedule": schedule.state_dict()}
    torch.save(trainer | ({"rng": within.rng} if within else {}), partial / "trainer.pt")
    state = {"run_id": run_id, "step": step, "history": [asdict(h) for h in history]}
    if within is not None:
        state["within"] = {k: v for k, v in asdict(within).items() if k != "rng"}
    (partial / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for older in checkpoints.glob("epoch-*"):
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def latest_checkpoint(checkpoints: Path) -> tuple[Path, dict] | None:
    """Return the newest finished checkpoint (the most optimiser steps) and its state, if any."""
    found = []
    for directory in checkpoints.glob("epoch-*"):
        state_file = directory / "state.json"
        if directory.suffix != ".partial" and state_file.is_file():
            state = json.loads(state_file.read_text(encoding="utf-8"))
            found.append((state["step"], directory, state))
    if not found:
        return None
    _, directory, state = max(found, key=lambda item: item[0])
    return directory, state


def resume(
    model: PeftModel,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    checkpoints: Path,
    run_id: str,
) -> tuple[list[EpochReport], int, Within | None]:
    """Restore the latest checkpoint of `run_id`: its history, step and place inside an epoch.

    Returns ([], 0, None) when there is none.
    """
    latest = latest_checkpoint(checkpoints)
    if latest is None or latest[1]["run_id"] != run_id:
        return [], 0, None
    directory, state = latest
    device = next(model.parameters()).device
    weights = load_file(directory / "adapter.safetensors", device=str(device))
    set_peft_model_state_dict(model, weights)
    saved = torch.load(directory / "trainer.pt", weights_only=True, map_location=device)
    optimiser.load_state_dict(saved["optimiser"])
    schedule.load_state_dict(saved["schedule"])
    within = None
    if "within" in state:  # a checkpoint inside an epoch
        within = Within(**state["within"], rng=saved["rng"])
    return [EpochReport(**h) for h in state["history"]], state["step"], within

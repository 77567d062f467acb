"""LoRA adapters on the embedded model: the shipped trained simulators, `train-simulator` results.

A role's `adapter` setting names what its requests run with on the embedded server:
- `none`: the bundled model itself (the prompted simulators);
- `trained`: the shipped simulator trained for the chosen simulator agent
  (`strategy` -> `training/simulators/ideas`, `plain` -> `training/simulators/plain`; `human`
  proposes its drafts with the `strategy` simulator), the base model for any other agent or role;
- a path: a folder written by `run.py train-simulator`, or its `adapter.gguf`.

The server loads every adapter once and switches per request by the model name it is sent
(`runtime/llama_server.py`), so each adapter gets a name of its own: the base model's alias, the
folder's name and the start of the adapter's sha256 (a retrained adapter is another model).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from dialogues.ending import EndingRule
from dialogues.errors import InputError, ServiceError
from dialogues.lengths import LengthCues
from runtime.gguf_header import GGUFError, read_header

ADAPTER_FILE = "adapter.gguf"
SHIPPED = Path(__file__).resolve().parents[1] / "training" / "simulators"
"""Where the trained simulators built by `scripts/build_simulators.sh` are shipped."""
TRAINED_FOR_AGENT = {"strategy": "ideas", "plain": "plain", "human": "ideas"}
"""Simulator agent -> the shipped simulator trained on exactly its prompt."""
KEYWORDS = ("none", "trained")


class Adapter(NamedTuple):
    """An adapter file and the model name requests use to ask for it."""

    alias: str
    path: Path


def adapter_file(value: str) -> Path:
    """Return the adapter file a path setting names (a `train-simulator` folder or the file).

    Raises:
        ValueError: Neither the file nor a folder holding `adapter.gguf` exists, or the file
            is not a LoRA adapter GGUF (see `check_lora`).
    """
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / ADAPTER_FILE
    if not path.is_file():
        raise ValueError(
            f"{value}: no LoRA adapter there (a `run.py train-simulator` folder or its "
            f"{ADAPTER_FILE}); or use `trained` or `none`"
        )
    check_lora(path)
    return path


def check_lora(path: Path) -> None:
    """Check that `path` is a LoRA adapter GGUF by its header (`adapter.type` is `lora`).

    Only the header is read; the server loads the tensors.

    Raises:
        ValueError: One line naming the file and what it is instead.
    """
    try:
        metadata = read_header(path).metadata
    except GGUFError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise ValueError(f"{path}: not a LoRA adapter GGUF ({reason})") from None
    kind, general = metadata.get("adapter.type"), metadata.get("general.type")
    if kind == "lora" and general in (None, "adapter"):
        return
    if general not in (None, "adapter"):
        what = f"a GGUF {general}, not an adapter"
    else:
        what = f"a {kind} adapter" if kind else "a GGUF without adapter.type"
    raise ValueError(f"{path}: not a LoRA adapter GGUF ({what})")


def shipped(agent: str) -> Path | None:
    """Return the shipped trained simulator for a simulator agent, if there is one."""
    name = TRAINED_FOR_AGENT.get(agent)
    path = SHIPPED / name / ADAPTER_FILE if name else None
    return path if path is not None and path.is_file() else None


def resolve(value: str | None, agent: str | None, base_alias: str) -> Adapter | None:
    """Resolve a role's adapter setting for the agent that plays it (None: the base model)."""
    if value in (None, "none"):
        return None
    path = (shipped(agent) if agent else None) if value == "trained" else adapter_file(value)
    return None if path is None else Adapter(alias_of(path, base_alias), path)


def alias_of(path: Path, base_alias: str) -> str:
    """Name an adapter `<base>+<folder>-<sha256[:8]>` (`smollm2-135m-instruct+ideas-1a2b3c4d`)."""
    path = path.resolve()
    stat = path.stat()
    return f"{base_alias}+{path.parent.name}-{_digest(path, stat.st_size, stat.st_mtime_ns)}"


@cache
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def ending_rule(adapter: Path) -> EndingRule | None:
    """The calibrated ending rule in the card beside an adapter file (`training.endings`).

    None where there is no card, or it has no usable rule (a simulator trained before
    calibration, or one trained without endings): its sampled drafts decide the ending.
    """
    card = _card(adapter)
    ending = card.get("ending") if isinstance(card, dict) else None
    if not isinstance(ending, dict):
        return None
    values = [ending.get("threshold"), ending.get("per_turn", 0.0)]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    try:
        return EndingRule(float(values[0]), float(values[1]))
    except ValueError:
        return None


class CardError(InputError, ValueError):
    """A trained simulator's card holds a setting its simulator cannot run without, broken."""


def length_cues(adapter: Path) -> LengthCues | None:
    """The length cue shares in the card beside an adapter file (`train-simulator --length-cues`).

    None where there is no card or it has none (a simulator trained without length cues).

    Raises:
        CardError: The card's `length_cues` are not valid shares (one line, naming the card).
    """
    return _shares(adapter, "length_cues")


def length_floor(adapter: Path) -> LengthCues | None:
    """The real users' length shares in the card beside an adapter file (`training.lengths`).

    What the simulator draws each turn's fewest words at (`StrategySimulator`'s `floor`). None
    where there is no card or it has none (a simulator built before them).

    Raises:
        CardError: The card's `length_floor` holds no valid shares (one line, naming the card).
    """
    entry = _card(adapter)
    entry = entry.get("length_floor") if isinstance(entry, dict) else None
    if entry is None:
        return None
    if not isinstance(entry, dict) or "shares" not in entry:
        raise CardError(f"{adapter.parent / 'card.json'}: length_floor: has no shares")
    return _valid(adapter, "length_floor", entry["shares"])


def _shares(adapter: Path, field: str) -> LengthCues | None:
    """The length shares under `field` of the card beside an adapter file (None: none there)."""
    card = _card(adapter)
    shares = card.get(field) if isinstance(card, dict) else None
    return None if shares is None else _valid(adapter, field, shares)


def _valid(adapter: Path, field: str, shares: Any) -> LengthCues:
    """`shares` as `LengthCues`, or a `CardError` naming the card and `field`."""
    try:
        return LengthCues(dict(shares))
    except (TypeError, ValueError) as exc:
        raise CardError(f"{adapter.parent / 'card.json'}: {field}: {exc}") from None


def _card(adapter: Path) -> Any:
    """The card beside an adapter file, parsed (None where there is none or it is not JSON)."""
    try:
        return json.loads((adapter.parent / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def all_shipped(base_alias: str) -> dict[str, Path]:
    """Every shipped trained simulator by alias (the embedded server serves them all)."""
    paths = (shipped(agent) for agent in TRAINED_FOR_AGENT)
    return {alias_of(p, base_alias): p for p in paths if p is not None}


def check_fits(adapter: Path, model: Path) -> None:
    """Refuse, in one line, an adapter that llama.cpp would refuse to load on `model`.

    The adapter must be a GGUF LoRA adapter for the model's architecture, and each of its
    tensors must adapt a tensor of the model of the same shape (llama.cpp's own test, made
    here before a server starts). The model's file is read for its header only.

    Raises:
        ValueError: Either file is not a GGUF, or the adapter does not fit the model.
    """
    try:
        lora, base = read_header(adapter), read_header(model)
    except GGUFError as exc:
        raise ValueError(str(exc)) from None
    check_lora(adapter)
    trained_on = _trained_on(adapter)
    wanted, have = (
        lora.metadata.get("general.architecture"),
        base.metadata.get("general.architecture"),
    )
    if wanted != have:
        raise ValueError(
            f"{adapter} is a LoRA adapter for a {wanted} model{trained_on}; "
            f"{model.name} is a {have} model"
        )
    for name, shape in lora.tensors.items():
        target, _, part = name.rpartition(".")
        base_shape = base.tensors.get(target)
        if part not in ("lora_a", "lora_b"):
            continue
        fits = base_shape is not None and (
            shape[0] == base_shape[0] if part == "lora_a" else shape[-1] == base_shape[-1]
        )
        if not fits:
            found = f"is {list(base_shape)}" if base_shape else "does not exist"
            raise ValueError(
                f"{adapter} does not fit {model.name}{trained_on}: it adapts {target} "
                f"with {part} {list(shape)}, and in {model.name} that tensor {found}"
            )


def _trained_on(adapter: Path) -> str:
    """` (trained on NAME)` from the card next to the adapter, if it has one."""
    try:
        card = json.loads((adapter.parent / "card.json").read_text(encoding="utf-8"))
        return f" (trained on {card['base']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


class ServedModelsError(ServiceError, RuntimeError):
    """A server at a URL did not list its models; the message is one line."""


def served_models(base_url: str, api_key: str, timeout: float) -> list[str]:
    """Return the model names an OpenAI-compatible server lists (`GET /v1/models`).

    vLLM and SGLang list each LoRA adapter they serve under its own name, next to the base.

    Raises:
        ServedModelsError: The server did not answer with a model list.
    """
    import openai

    from runtime.urls import redact_url

    client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=1)
    try:
        return [model.id for model in client.models.list()]
    except openai.OpenAIError as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ServedModelsError(
            f"{redact_url(base_url)} did not list its models (GET /v1/models): {reason}"
        ) from None
    finally:
        client.close()

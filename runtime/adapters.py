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
from functools import cache
from pathlib import Path
from typing import NamedTuple

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
        ValueError: Neither the file nor a folder holding `adapter.gguf` exists.
    """
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / ADAPTER_FILE
    if not path.is_file():
        raise ValueError(
            f"{value}: no LoRA adapter there (a `run.py train-simulator` folder or its "
            f"{ADAPTER_FILE}); or use `trained` or `none`"
        )
    return path


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


def all_shipped(base_alias: str) -> dict[str, Path]:
    """Every shipped trained simulator by alias (the embedded server serves them all)."""
    paths = (shipped(agent) for agent in TRAINED_FOR_AGENT)
    return {alias_of(p, base_alias): p for p in paths if p is not None}

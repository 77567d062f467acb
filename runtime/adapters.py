"""LoRA adapters on the embedded model: the shipped trained simulators, `train-simulator` results.

A role's `adapter` setting names what its requests run with on the embedded server:
- `none`: the bundled model itself (the prompted simulators);
- `trained`: the shipped simulator trained for the chosen simulator agent
  (`strategy` -> `training/simulators/ideas`, `plain` -> `training/simulators/plain`), the base
  model for any other agent or role;
- a path: a folder written by `run.py train-simulator`, or its `adapter.gguf`.

The server loads every adapter once and switches per request by the model name it is sent
(`runtime/llama_server.py`), so each adapter gets a name of its own: the base model's alias, the
folder's name and the start of the adapter's sha256 (a retrained adapter is another model).
"""

from __future__ import annotations

import hashlib
import os
import struct
from functools import cache
from pathlib import Path
from typing import BinaryIO, NamedTuple

ADAPTER_FILE = "adapter.gguf"
SHIPPED = Path(__file__).resolve().parents[1] / "training" / "simulators"
"""Where the trained simulators built by `scripts/build_simulators.sh` are shipped."""
TRAINED_FOR_AGENT = {"strategy": "ideas", "plain": "plain"}
"""Simulator agent -> the shipped simulator trained on exactly its prompt."""
KEYWORDS = ("none", "trained")


class Adapter(NamedTuple):
    """An adapter file and the model name requests use to ask for it."""

    alias: str
    path: Path


GGUF_MAGIC = b"GGUF"
GGUF_STRING, GGUF_ARRAY = 8, 9
GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
"""Bytes of each GGUF scalar value type (uint8 ... float64) by its type number."""
GGUF_MAX_STRING = 1 << 20


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

    Only the metadata before `adapter.type` is read (the first few hundred bytes of a
    converted adapter); the server loads the tensors.

    Raises:
        ValueError: One line naming the file and what it is instead.
    """
    try:
        with path.open("rb") as file:
            kind = _adapter_type(file)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the LoRA adapter: {exc.strerror}") from None
    if kind != "lora":
        raise ValueError(f"{path}: not a LoRA adapter GGUF ({kind})")


def _adapter_type(file: BinaryIO) -> str:
    """Return `lora` for a LoRA adapter GGUF, else what the file is, in a few words."""
    if file.read(4) != GGUF_MAGIC:
        return "no GGUF header"
    try:
        version, _, n_kv = struct.unpack("<IQQ", _read(file, 20))
        if version < 2:
            return f"GGUF version {version}"
        for _ in range(n_kv):
            key, kind = _string(file), struct.unpack("<I", _read(file, 4))[0]
            if key in ("general.type", "adapter.type") and kind == GGUF_STRING:
                value = _string(file)
                if key == "adapter.type":
                    return value if value == "lora" else f"a {value} adapter"
                if value != "adapter":
                    return f"a GGUF {value}, not an adapter"
            else:
                _skip(file, kind)
    except (EOFError, ValueError, struct.error) as exc:
        return f"a damaged GGUF header: {exc}"
    return "a GGUF without adapter.type"


def _read(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) < size:
        raise EOFError("it ends early")
    return data


def _string(file: BinaryIO) -> str:
    (size,) = struct.unpack("<Q", _read(file, 8))
    if size > GGUF_MAX_STRING:
        raise ValueError(f"a string of {size} bytes")
    return _read(file, size).decode("utf-8", errors="replace")


def _skip(file: BinaryIO, kind: int) -> None:
    """Read past one metadata value of GGUF type `kind`."""
    if kind in GGUF_SCALARS:
        _read(file, GGUF_SCALARS[kind])
    elif kind == GGUF_STRING:
        _string(file)
    elif kind == GGUF_ARRAY:
        item, count = struct.unpack("<IQ", _read(file, 12))
        if item in GGUF_SCALARS:
            file.seek(GGUF_SCALARS[item] * count, os.SEEK_CUR)  # past the end: the next read fails
        else:
            for _ in range(count):
                _skip(file, item)
    else:
        raise ValueError(f"value type {kind}")


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

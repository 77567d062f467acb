"""Read a GGUF file's header: its metadata and the name and shape of each tensor, not the weights.

Enough to tell whether a LoRA adapter fits a model before llama.cpp loads either (the check
llama.cpp makes when it loads the adapter, but made before a server starts). The format is
llama.cpp's `gguf.md`: magic `GGUF`, version, tensor and key-value counts, the key-values, then
the tensor infos. The default install has no `gguf` package (it comes with the `train` extra),
and the header is all that is needed, so it is read here with `struct`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

from dialogues.errors import InputError

MAGIC = b"GGUF"
_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9
_MAX_COUNT = 1 << 24
"""More key-values, tensors, array items or dimensions than a real file has: a damaged header."""


class GGUFError(InputError, ValueError):
    """The file is not a readable GGUF; the message is one line."""


@dataclass(frozen=True)
class GGUFHeader:
    """A GGUF file's metadata and its tensors' shapes (llama.cpp's order: `ne0` first)."""

    metadata: dict[str, Any]
    tensors: dict[str, tuple[int, ...]]


def read_header(path: Path) -> GGUFHeader:
    """Return the header of the GGUF file at `path` (cached by path, size and mtime).

    Raises:
        GGUFError: The file cannot be read, is not a GGUF, or its header is cut short.
    """
    try:
        stat = path.stat()
    except OSError as exc:
        raise GGUFError(f"{path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    return _read(path, stat.st_size, stat.st_mtime_ns)


@cache
def _read(path: Path, size: int, mtime_ns: int) -> GGUFHeader:
    try:
        with path.open("rb") as handle:
            if handle.read(4) != MAGIC:
                raise GGUFError(f"{path}: not a GGUF file")
            return _parse(handle)
    except OSError as exc:
        raise GGUFError(f"{path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    except struct.error as exc:
        raise GGUFError(f"{path}: damaged GGUF header ({exc})") from None
    except UnicodeDecodeError:
        raise GGUFError(f"{path}: damaged GGUF header (a string that is not UTF-8)") from None
    except KeyError as exc:
        raise GGUFError(f"{path}: damaged GGUF header (value type {exc.args[0]})") from None


def _parse(handle: BinaryIO) -> GGUFHeader:
    version, n_tensors, n_kv = struct.unpack("<IQQ", _exact(handle, 20))
    if version < 2 or n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise GGUFError(f"unsupported GGUF version {version} or damaged counts")
    metadata = {}
    for _ in range(n_kv):
        key = _string(handle)
        (kind,) = struct.unpack("<I", _exact(handle, 4))
        metadata[key] = _value(handle, kind)
    tensors = {}
    for _ in range(n_tensors):
        name = _string(handle)
        (n_dims,) = struct.unpack("<I", _exact(handle, 4))
        if n_dims > 8:
            raise struct.error("too many dimensions")
        shape = struct.unpack(f"<{n_dims}Q", _exact(handle, 8 * n_dims))
        _exact(handle, 12)  # the tensor's type and data offset
        tensors[name] = tuple(shape)
    return GGUFHeader(metadata, tensors)


def _value(handle: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return _string(handle)
    if kind == _ARRAY:
        item, count = struct.unpack("<IQ", _exact(handle, 12))
        if count > _MAX_COUNT:
            raise struct.error("array too long")
        if item in _SCALARS:  # read at once; large arrays (token scores) are not needed here
            fmt = _SCALARS[item]
            return list(
                struct.unpack(f"<{count}{fmt[1]}", _exact(handle, count * struct.calcsize(fmt)))
            )
        return [_value(handle, item) for _ in range(count)]
    fmt = _SCALARS[kind]
    return struct.unpack(fmt, _exact(handle, struct.calcsize(fmt)))[0]


def _string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", _exact(handle, 8))
    if length > _MAX_COUNT:
        raise struct.error("string too long")
    return _exact(handle, length).decode("utf-8")


def _exact(handle: BinaryIO, n: int) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise struct.error("cut short")
    return data

"""Turn a PEFT LoRA adapter into a GGUF adapter with llama.cpp's own converter.

`convert_lora_to_gguf.py` and the `conversion/` package it imports live in the llama.cpp source
tree, which ships inside the `llama-cpp-python` sdist (`vendor/llama.cpp`). Nothing of it is
copied into this repository, and nothing is downloaded at run time: the install step
(`scripts/setup-train.sh` runs `python -m training.convert`) fetches the sdist of the installed
llama-cpp-python version with pip (from pip's cache when it is there) and extracts just the
converter, its `conversion/` package, the `gguf-py` it is written against (newer than PyPI's
`gguf` 0.19.0) and llama.cpp's LICENSE to our cache (~2 MB). At run time the tree is taken from
`$LLAMA_CPP_DIR` (a llama.cpp checkout), else from that cache, else training stops with a hint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from platformdirs import user_cache_dir

from training import TrainingError

CONVERTER = "convert_lora_to_gguf.py"
LLAMA_CPP_PYTHON = "0.3.36"
"""The llama-cpp-python version to take the converter from when none is installed."""
_MEMBERS = (CONVERTER, "conversion/", "gguf-py/gguf/", "LICENSE")


def llama_cpp_version() -> str:
    """Return the installed llama-cpp-python version (the pinned one when it is absent)."""
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return LLAMA_CPP_PYTHON


def cache_dir() -> Path:
    """Return where the extracted converter is kept."""
    root = os.environ.get("IDEAS_CACHE") or user_cache_dir("ideas-dialogues")
    return Path(root) / f"llama.cpp-{llama_cpp_version()}"


def converter_tree() -> Path:
    """Return the installed directory holding `convert_lora_to_gguf.py` and its `conversion/`.

    It is `$LLAMA_CPP_DIR` when set, else the cache `fetch_converter` fills; nothing is fetched.

    Raises:
        TrainingError: `$LLAMA_CPP_DIR` lacks the converter, or it is not installed.
    """
    given = os.environ.get("LLAMA_CPP_DIR")
    if given:
        if not (Path(given) / CONVERTER).is_file():
            raise TrainingError(f"LLAMA_CPP_DIR={given} has no {CONVERTER}")
        return Path(given)
    cached = cache_dir()
    if _complete(cached):
        return cached
    raise TrainingError(
        f"llama.cpp's {CONVERTER} is not installed: run `bash scripts/setup-train.sh` "
        "(or set LLAMA_CPP_DIR to a llama.cpp checkout)"
    )


def fetch_converter() -> Path:
    """Install the converter into the cache (the install step); return its directory.

    Nothing is fetched when `$LLAMA_CPP_DIR` is set or the cache is complete; otherwise the sdist
    of the installed llama-cpp-python version is downloaded with pip (from pip's cache when it is
    there) and the converter's files are extracted from it.

    Raises:
        TrainingError: `$LLAMA_CPP_DIR` lacks the converter, or the sdist cannot be fetched.
    """
    cached = cache_dir()
    if os.environ.get("LLAMA_CPP_DIR") or _complete(cached):
        return converter_tree()
    with tempfile.TemporaryDirectory() as scratch:
        sdist = _download_sdist(Path(scratch))
        _extract(sdist, Path(scratch) / "tree")
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(cached, ignore_errors=True)
        shutil.move(Path(scratch) / "tree", cached)
    return cached


def _complete(tree: Path) -> bool:
    return all((tree / member).exists() for member in _MEMBERS)


def _download_sdist(directory: Path) -> Path:
    version = llama_cpp_version()
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", str(directory),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(directory.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
        raise TrainingError(
            f"cannot fetch the llama-cpp-python {version} sdist for {CONVERTER}: {last} "
            "(or set LLAMA_CPP_DIR to a llama.cpp checkout)"
        )
    return found[0]


def _extract(sdist: Path, target: Path) -> None:
    """Extract the converter, its package and the license from the sdist's llama.cpp tree."""
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parts = member.name.split("/", 3)
            if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"]:
                continue
            inner = parts[3]
            if member.isfile() and any(
                inner == m or (m.endswith("/") and inner.startswith(m)) for m in _MEMBERS
            ):
                member.name = inner
                archive.extract(member, target, filter="data")
    if not (target / CONVERTER).is_file():
        raise TrainingError(f"{sdist.name} holds no vendor/llama.cpp/{CONVERTER}")


def convert_adapter(adapter: Path, base_config: Path, outfile: Path, tree: Path) -> Path:
    """Convert the PEFT adapter in `adapter` to a float16 GGUF adapter at `outfile`.

    The script puts the `gguf-py` next to it ahead of the installed `gguf` on its path.

    Raises:
        TrainingError: The converter failed; the message ends with its last output line.
    """
    command = [
        sys.executable, str(tree / CONVERTER), "--base", str(base_config),
        "--outfile", str(outfile), "--outtype", "f16", str(adapter),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or not outfile.is_file():
        lines = (done.stderr + done.stdout).strip().splitlines() or ["no output"]
        raise TrainingError(f"{CONVERTER} failed: {lines[-1]}")
    return outfile


def main() -> int:
    """`python -m training.convert`: install the converter and say where it is."""
    try:
        tree = fetch_converter()
    except TrainingError as exc:
        print(f"training.convert: {exc}", file=sys.stderr)  # noqa: T201 - the install step's output
        return 1
    print(f"llama.cpp's {CONVERTER} is installed in {tree}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())

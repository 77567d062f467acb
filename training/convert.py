"""llama.cpp's own converters: a PEFT LoRA adapter to a GGUF adapter, a HF model to a GGUF.

`convert_lora_to_gguf.py`, `convert_hf_to_gguf.py` and the `conversion/` package both import
live in the llama.cpp source tree, which ships inside the `llama-cpp-python` sdist
(`vendor/llama.cpp`). Nothing of it is copied into this repository, and nothing is downloaded at
run time: the install step (`scripts/setup-train.sh` runs `python -m training.convert`) fetches
the sdist of the installed llama-cpp-python version with pip (from pip's cache when it is there)
and extracts just the two converters, their `conversion/` package, the `gguf-py` they are written
against (newer than PyPI's `gguf` 0.19.0) and llama.cpp's LICENSE to our cache (~2 MB). At run
time the tree is taken from `$LLAMA_CPP_DIR` (a llama.cpp checkout), else from that cache, else
the step stops with a hint.

`python -m training.convert --base HF_DIR --outfile MODEL.gguf` converts a Hugging Face model
directory (the base a simulator was trained on) to the GGUF the embedded server runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from platformdirs import user_cache_dir

from training import TrainingError

CONVERTER = "convert_lora_to_gguf.py"
HF_CONVERTER = "convert_hf_to_gguf.py"
"""llama.cpp's model converter: a Hugging Face directory to a GGUF model."""
LLAMA_CPP_PYTHON = "0.3.36"
"""The llama-cpp-python version to take the converter from when none is installed."""
_SHARED = ("conversion/", "gguf-py/gguf/", "LICENSE")
_MEMBERS = (CONVERTER, HF_CONVERTER, *_SHARED)
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
"""The weight types `convert_base_to_gguf` writes (llama.cpp's converter's `--outtype`)."""


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


def converter_tree(script: str = CONVERTER) -> Path:
    """Return the installed directory holding the converter `script` and its `conversion/`.

    It is `$LLAMA_CPP_DIR` when set, else the cache `fetch_converter` fills; nothing is fetched.

    Raises:
        TrainingError: `$LLAMA_CPP_DIR` lacks the converter, or it is not installed.
    """
    given = os.environ.get("LLAMA_CPP_DIR")
    if given:
        if not (Path(given) / script).is_file():
            raise TrainingError(f"LLAMA_CPP_DIR={given} has no {script}")
        return Path(given)
    cached = cache_dir()
    if _complete(cached, (script, *_SHARED)):
        return cached
    raise TrainingError(
        f"llama.cpp's {script} is not installed: run `bash scripts/setup-train.sh` "
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


def _complete(tree: Path, members: Sequence[str] = _MEMBERS) -> bool:
    return all((tree / member).exists() for member in members)


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
    """Extract the converters, their package and the license from the sdist's llama.cpp tree."""
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
    return _run(tree / CONVERTER, ["--base", str(base_config), str(adapter)], outfile, "f16")


def convert_base_to_gguf(hf_dir: Path, outfile: Path, outtype: str = "f16") -> Path:
    """Convert the Hugging Face model directory `hf_dir` to a GGUF model at `outfile`.

    The GGUF the embedded server runs (`--gguf`) for a simulator trained with `--base hf_dir`:
    its adapter's `adapter.gguf` fits it. Nothing is fetched (see `converter_tree`).

    Raises:
        TrainingError: One line: the converter is not installed, `hf_dir` is no model
            directory, or the converter failed (its last output line).
    """
    if outtype not in OUTTYPES:
        raise TrainingError(f"--outtype {outtype}: one of {', '.join(OUTTYPES)}")
    if not (hf_dir / "config.json").is_file():
        raise TrainingError(f"{hf_dir}: not a Hugging Face model directory (no config.json)")
    tree = converter_tree(HF_CONVERTER)
    return _run(tree / HF_CONVERTER, [str(hf_dir)], outfile, outtype)


def _run(script: Path, arguments: list[str], outfile: Path, outtype: str) -> Path:
    """Run a converter `script` that writes `outfile`; the script's `gguf-py` comes first."""
    command = [
        sys.executable, str(script), *arguments, "--outfile", str(outfile), "--outtype", outtype,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or not outfile.is_file():
        last = ((done.stderr + done.stdout).strip().splitlines() or ["no output"])[-1]
        if last.startswith("ModuleNotFoundError"):
            last += " (the train extra installs it: bash scripts/setup-train.sh)"
        raise TrainingError(f"{script.name} failed: {last}")
    return outfile


def main(argv: Sequence[str] = ()) -> int:
    """`python -m training.convert`: install the converters and say where they are.

    With `--base HF_DIR --outfile MODEL.gguf`: convert that model directory to a GGUF instead.
    """
    parser = argparse.ArgumentParser(prog="python -m training.convert", description=main.__doc__)
    parser.add_argument("--base", type=Path, help="a Hugging Face model directory to convert")
    parser.add_argument("--outfile", type=Path, help="where to write its GGUF (with --base)")
    parser.add_argument("--outtype", choices=OUTTYPES, default="f16", help="default: f16")
    args = parser.parse_args(list(argv))
    if (args.base is None) != (args.outfile is None):
        parser.error("--base and --outfile go together")
    try:
        if args.base is not None:
            convert_base_to_gguf(args.base, args.outfile, args.outtype)
        else:
            tree = fetch_converter()
    except TrainingError as exc:
        print(f"training.convert: {exc}", file=sys.stderr)  # noqa: T201 - the install step's output
        return 1
    if args.base is not None:
        print(f"wrote {args.outfile}: {args.base} as a GGUF model ({args.outtype})")  # noqa: T201
    else:
        print(f"llama.cpp's {CONVERTER} and {HF_CONVERTER} are installed in {tree}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

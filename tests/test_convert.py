"""llama.cpp's LoRA converter: fetched at install time only, never while training (no torch)."""

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from training import TrainingError, convert
from training.convert import CONVERTER, HF_CONVERTER, converter_tree, fetch_converter

INSIDE = {
    CONVERTER: "# the converter\n",
    HF_CONVERTER: "# the model converter\n",
    "conversion/__init__.py": "# its package\n",
    "gguf-py/gguf/__init__.py": "# the gguf-py it is written against\n",
    "LICENSE": "MIT\n",
}


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("IDEAS_CACHE", str(tmp_path / "cache"))
    return convert.cache_dir()


def sdist(path: Path, version: str) -> Path:
    """Write a tar.gz laid out like the llama-cpp-python sdist: llama.cpp under vendor/."""
    top = f"llama_cpp_python-{version}"
    files = {f"{top}/vendor/llama.cpp/{name}": text for name, text in INSIDE.items()}
    files[f"{top}/vendor/llama.cpp/src/llama.cpp"] = "// not the converter's\n"
    files[f"{top}/README.md"] = "# not llama.cpp's\n"
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_training_never_fetches_a_missing_converter(empty_cache, monkeypatch):
    def no_fetch(*args, **kwargs):
        pytest.fail("the converter was fetched at run time")

    monkeypatch.setattr(subprocess, "run", no_fetch)
    monkeypatch.setattr(convert, "_download_sdist", no_fetch)
    with pytest.raises(TrainingError) as caught:
        converter_tree()
    message = str(caught.value)
    assert "bash scripts/setup-train.sh" in message and "LLAMA_CPP_DIR" in message
    assert "\n" not in message
    assert not empty_cache.exists()


def test_llama_cpp_dir_is_used_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    with pytest.raises(TrainingError, match=f"has no {CONVERTER}"):
        converter_tree()
    (tmp_path / CONVERTER).write_text("")
    assert converter_tree() == tmp_path == fetch_converter()


def test_the_install_step_extracts_just_the_converter_from_the_sdist(empty_cache, monkeypatch):
    version = convert.llama_cpp_version()
    calls = []

    def pip_download(command, **kwargs):
        calls.append(command)
        folder = Path(command[command.index("-d") + 1])
        sdist(folder / f"llama_cpp_python-{version}.tar.gz", version)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", pip_download)
    tree = fetch_converter()

    assert tree == empty_cache
    assert calls and calls[0][1:4] == ["-m", "pip", "download"]
    assert f"llama-cpp-python=={version}" in calls[0] and ":all:" in calls[0]
    extracted = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    assert extracted == sorted(INSIDE)
    assert all((tree / name).read_text() == text for name, text in INSIDE.items())
    assert converter_tree() == tree
    assert fetch_converter() == tree and len(calls) == 1  # installed: nothing fetched again


def test_a_cache_from_before_the_model_converter_serves_adapters_and_is_refilled(
    empty_cache, monkeypatch
):
    for name, text in INSIDE.items():
        if name != HF_CONVERTER:
            (empty_cache / name).parent.mkdir(parents=True, exist_ok=True)
            (empty_cache / name).write_text(text)
    assert converter_tree() == empty_cache  # training goes on as before
    with pytest.raises(TrainingError, match=f"{HF_CONVERTER} is not installed: run `bash scr"):
        converter_tree(HF_CONVERTER)
    version = convert.llama_cpp_version()

    def pip_download(command, **kwargs):
        sdist(
            Path(command[command.index("-d") + 1]) / f"llama_cpp_python-{version}.tar.gz", version
        )
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", pip_download)
    assert fetch_converter() == empty_cache  # the install step fills it in
    assert converter_tree(HF_CONVERTER) == empty_cache


def test_a_base_that_is_no_model_directory_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / HF_CONVERTER).write_text("")
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    code = convert.main(["--base", str(tmp_path / "nowhere"), "--outfile", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 1 and "not a Hugging Face model directory (no config.json)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_a_failed_download_says_why_in_one_line(empty_cache, monkeypatch):
    def pip_fails(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(subprocess, "run", pip_fails)
    with pytest.raises(TrainingError, match="No matching distribution") as caught:
        fetch_converter()
    assert "\n" not in str(caught.value) and not empty_cache.exists()


def test_the_module_entry_point_says_where_the_converter_is(tmp_path, monkeypatch, capsys):
    (tmp_path / CONVERTER).write_text("")
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    assert convert.main() == 0
    assert str(tmp_path) in capsys.readouterr().out
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path / "nowhere"))
    assert convert.main() == 1
    assert "has no" in capsys.readouterr().err

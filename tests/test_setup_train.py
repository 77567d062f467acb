"""scripts/setup-train.sh picks the torch a machine can use (dry run: nothing is installed)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(
    not (ROOT / ".venv" / "bin" / "python").exists(), reason="needs the project's .venv"
)


def plan(tmp_path: Path, gpu: bool, **env: str) -> str:
    """Run the script's dry run with a stand-in `nvidia-smi` that sees a GPU or fails."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Stand-in'\n" if gpu else "#!/bin/sh\nexit 9\n")
    smi.chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IDEAS_TORCH_")}
    environ |= {"PATH": f"{bin_dir}:{environ['PATH']}", "IDEAS_TRAIN_DRY_RUN": "1", **env}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-train.sh")],
        capture_output=True, text=True, env=environ, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("setup-train (dry run): would install")
    return lines[0]


def test_no_gpu_gets_the_cpu_build_from_pytorchs_cpu_index(tmp_path):
    line = plan(tmp_path, gpu=False, IDEAS_TORCH_LOCAL="")
    assert line.endswith(f"pip install {CPU_INDEX} torch>=2.6,<2.15") and "CPU build" in line


def test_no_gpu_and_no_local_wheel_falls_back_to_the_cpu_index(tmp_path):
    line = plan(tmp_path, gpu=False, IDEAS_TORCH_LOCAL="torch==0.0.1+nowhere")
    assert CPU_INDEX in line


def test_a_gpu_gets_the_default_build(tmp_path):
    line = plan(tmp_path, gpu=True)
    assert line.endswith("pip install torch>=2.6,<2.15") and "GPU" in line
    assert "--index-url" not in line and "+cpu" not in line


def test_the_index_and_spec_can_be_chosen(tmp_path):
    url = "https://download.pytorch.org/whl/cu126"
    line = plan(tmp_path, gpu=False, IDEAS_TORCH_INDEX=url, IDEAS_TORCH_SPEC="torch==2.9.1")
    assert line.endswith(f"pip install --index-url {url} torch==2.9.1")


def test_the_local_cpu_wheel_is_the_fast_path_where_pip_has_it(tmp_path):
    local = "torch==2.13.0+cpu"
    found = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-m", "pip", "install", "--dry-run", "--quiet",
         "--no-index", "--no-deps", local],
        capture_output=True, check=False,
    )  # fmt: skip
    if found.returncode != 0:
        pytest.skip(f"pip's local wheel folder has no {local} here")
    assert plan(tmp_path, gpu=False).endswith(f"pip install {local}")
    assert "+cpu" not in plan(tmp_path, gpu=True)  # a CPU wheel never wins over a GPU

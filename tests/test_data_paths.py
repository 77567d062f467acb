"""Test modules find the shared data through `tests.data_paths`, never by an absolute path."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.data_paths import DATA, REPO

TESTS = Path(__file__).resolve().parent


def data_paths_named(source: str) -> list[str]:
    """Return the string constants of a module that locate the shared data by themselves.

    That is an absolute path into it (`/work/shared/data/...`, `~/shared/...`, any `/work/`
    path), or a `shared` path segment (`parents[2] / "shared" / "data"`), which is the helper's
    alone.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            absolute = text.startswith(("/", "~")) and "shared" in text
            if absolute or "/work/" in text or text.strip("/") in ("shared", "shared/data"):
                found.append(text)
    return found


def test_the_helper_points_beside_the_repository():
    assert REPO == TESTS.parent
    assert DATA == REPO.parent / "shared" / "data"


def test_no_test_module_names_the_shared_data_by_itself():
    named = {
        path.name: found
        for path in sorted(TESTS.glob("*.py"))
        if path.name not in ("data_paths.py", Path(__file__).name)
        if (found := data_paths_named(path.read_text(encoding="utf-8")))
    }
    assert named == {}, "use tests.data_paths.DATA"


def test_the_check_sees_the_ways_a_path_was_spelled():
    source = (
        'A = Path("/work/shared/data")\n'
        'B = Path("/work/shared/data/mtbench101/mtbench101.jsonl")\n'
        'C = Path(__file__).resolve().parents[2] / "shared" / "data"\n'
        'D = Path("~/shared/data/x.json")\n'
        '"""A docstring about ../shared/data is fine."""\n'
        'E = DATA / "mtbench101" / "mtbench101.jsonl"\n'
    )
    assert sorted(data_paths_named(source)) == [
        "/work/shared/data",
        "/work/shared/data/mtbench101/mtbench101.jsonl",
        "shared",
        "~/shared/data/x.json",
    ]

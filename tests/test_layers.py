"""Imports point down: no package cycle, no package importing one above it (`LAYERS`)."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


@pytest.fixture(scope="module")
def graph():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def imports(graph):
    return graph.all_imports()


def test_the_graph_sees_local_and_relative_imports(graph, tmp_path):
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "__init__.py").write_text("from .chat import x\n")
    (tmp_path / "agents" / "chat.py").write_text(
        "import runtime.settings\n\ndef f():\n    from graphs import state\n"
    )
    found = graph.file_imports(tmp_path / "agents" / "chat.py", "agents", tmp_path)
    assert [(f.target, f.line, f.local) for f in found] == [
        ("runtime", 1, False),
        ("graphs", 4, True),
    ]
    assert graph.file_imports(tmp_path / "agents" / "__init__.py", "agents", tmp_path) == []
    assert graph.upward_imports(found) == [found[1]]
    assert graph.cycles(found) == []


def test_every_package_has_a_layer(graph):
    root = SCRIPT.parents[1]
    on_disk = {p.parent.name for p in root.glob("*/__init__.py")} - {"tests"}
    assert on_disk <= set(graph.PACKAGES)


def test_no_package_cycles(graph, imports):
    assert graph.cycles(imports) == []


def test_no_package_imports_a_higher_layer(graph, imports):
    assert [f"{f.module}:{f.line} -> {f.target}" for f in graph.upward_imports(imports)] == []


def test_settings_name_every_registered_agent():
    import dataclasses

    from agents.registry import REGISTRIES, Agents
    from dialogues.models import GENERATION_ROLES
    from runtime.settings import AGENT_NAMES, AgentChoice

    assert {role: tuple(registry) for role, registry in REGISTRIES.items()} == AGENT_NAMES
    assert tuple(REGISTRIES) == GENERATION_ROLES == tuple(AgentChoice.model_fields)
    assert tuple(f.name for f in dataclasses.fields(Agents)) == GENERATION_ROLES


def test_the_generation_roles_are_listed_once(graph):
    """`dialogues.models.GENERATION_ROLES` is the list; code that needs it imports it."""
    from dialogues.models import GENERATION_ROLES

    root = SCRIPT.parents[1]
    pattern = re.compile(r",\s*".join(f"[\"']{role}[\"']" for role in GENERATION_ROLES))
    files = [path for paths in graph.package_files(root).values() for path in paths]
    files += [*root.glob("benchmarks/*.py"), *root.glob("scripts/*.py"), *root.glob("tests/*.py")]
    spelled = [
        str(path.relative_to(root))
        for path in sorted(files)
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert spelled == ["dialogues/models.py"]

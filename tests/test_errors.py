"""Every error class of the project is an `InputError` (exit 2) or a `ServiceError` (exit 1).

The classes are found in the sources (`ast`), not by importing them: modules whose optional
dependency is missing here (torch, Ray, llama.cpp) are checked too, and so are classes defined
inside functions. A base is resolved through the file's imports: a project class by its name, a
builtin or an installed package's class by the class itself; the base of a package that is not
installed counts as an exception when its name ends like one (`Error`, `Exception`, `Warning`,
PEP 8's naming), which no non-exception base in the project does.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.errors import UsageError, classify
from dialogues.errors import InputError, ServiceError

ROOT = Path(__file__).resolve().parents[1]
BASES = ("InputError", "ServiceError")
"""The two bases (`dialogues.errors`); every other exception class derives from one of them."""
ALLOWED: dict[str, str] = {
    "Terminated": "a KeyboardInterrupt (SIGTERM/SIGHUP handled as Ctrl-C), not an error",
    "ScoreError": "raised inside the embedded server (runtime/llama_server.py imports nothing of "
    "the project) and answered there as HTTP 400; the client reports it as a ModelError",
    "_Prompt": "carries the rendered prompt out of the server's chat path, caught where raised",
}
"""Exception classes allowed to derive from neither base, with the reason."""


@dataclass(frozen=True)
class ClassDef:
    """One class statement: where it is, its name, and its bases as fully qualified names."""

    where: str
    name: str
    bases: tuple[str, ...]


def project_files(root: Path = ROOT) -> list[Path]:
    """Return every Python file of the project's packages, `run.py`, benchmarks and scripts."""
    spec = importlib.util.spec_from_file_location("import_graph", root / "scripts/import_graph.py")
    graph = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = graph
    spec.loader.exec_module(graph)
    files = [path for paths in graph.package_files(root).values() for path in paths]
    return sorted({*files, *root.glob("benchmarks/*.py"), *root.glob("scripts/*.py")})


def class_defs(path: Path, root: Path = ROOT) -> list[ClassDef]:
    """Return the classes a file defines (at any depth), their bases qualified by its imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                names[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            package = module.split(".")[: -node.level] if node.level else []
            source = ".".join([*package, *([node.module] if node.module else [])])
            for alias in node.names:
                names[alias.asname or alias.name] = f"{source}.{alias.name}"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = []
            for base in node.bases:
                text = ast.unparse(base)
                head, _, rest = text.partition(".")
                bases.append(".".join(filter(None, [names.get(head, head), rest])))
            where = f"{path.relative_to(root)}:{node.lineno}"
            found.append(ClassDef(where, node.name, tuple(bases)))
    return found


def _external(name: str) -> type | None:
    """Return the builtin or installed class a qualified name names, or None."""
    if "." not in name:
        found = getattr(builtins, name, None)
        return found if isinstance(found, type) else None
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            found = getattr(found, part, None)
        return found if isinstance(found, type) else None
    return None


def unclassified(files: list[Path], root: Path = ROOT) -> list[str]:
    """Return the exception classes in `files` that derive from neither base (`where name`)."""
    classes = {c.name: c for path in files for c in class_defs(path, root)}

    def project(base: str) -> ClassDef | None:
        return classes.get(base.rsplit(".", 1)[-1])

    def is_exception(c: ClassDef, seen: frozenset[str] = frozenset()) -> bool:
        seen = seen | {c.name}
        for base in c.bases:
            own = project(base)
            if own is not None and own.name not in seen:
                if own.name in BASES or is_exception(own, seen):
                    return True
                continue
            found = _external(base)
            if found is not None and issubclass(found, BaseException):
                return True
            if found is None and base.endswith(("Error", "Exception", "Warning")):
                return True
        return False

    def classified(c: ClassDef, seen: frozenset[str] = frozenset()) -> bool:
        seen = seen | {c.name}
        for base in c.bases:
            if base.rsplit(".", 1)[-1] in BASES:
                return True
            own = project(base)
            if own is not None and own.name not in seen and classified(own, seen):
                return True
        return False

    return [
        f"{c.where} {c.name}"
        for c in classes.values()
        if c.name not in BASES and c.name not in ALLOWED
        if is_exception(c) and not classified(c)
    ]


def test_every_error_class_of_the_project_is_an_input_or_a_service_error():
    assert unclassified(project_files()) == []


def test_the_scan_sees_the_project_s_error_classes():
    names = {c.name for path in project_files() for c in class_defs(path)}
    assert {"SeedError", "ServerError", "UsageError", "RunDirBusy", "TrainingError"} <= names


def test_the_scan_finds_an_unclassified_error_however_it_is_defined(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "errors.py").write_text(
        "from dialogues.errors import InputError\n"
        "import json\n"
        "class Good(InputError, ValueError): ...\n"
        "class AlsoGood(Good): ...\n"
        "class Plain(ValueError): ...\n"
        "class Derived(Plain): ...\n"
        "class FromPackage(json.JSONDecodeError): ...\n"
        "class NotAnError(dict): ...\n"
        "def f():\n"
        "    class Inner(RuntimeError): ...\n"
    )
    (tmp_path / "pkg" / "other.py").write_text(
        "from pkg.errors import Plain as P\nfrom torchish import FancyError\n"
        "class ViaAlias(P): ...\nclass Missing(FancyError): ...\n"
    )
    files = sorted((tmp_path / "pkg").glob("*.py"))
    found = {entry.split()[1] for entry in unclassified(files, tmp_path)}
    assert found == {"Plain", "Derived", "FromPackage", "Inner", "ViaAlias", "Missing"}


def test_classify_is_by_kind_alone():
    class NewInputError(InputError, ValueError):
        pass

    class NewServiceError(ServiceError, RuntimeError):
        pass

    assert classify(NewInputError("bad")) == 2
    assert classify(UsageError("bad")) == 2
    assert classify(NewServiceError("down")) == 1
    assert classify(FileNotFoundError(2, "No such file or directory", "x.json")) == 2
    assert classify(ValueError("a bug")) is None
    assert classify(RuntimeError("a bug")) is None


@pytest.mark.parametrize("kind", [InputError, ServiceError])
def test_the_error_classes_keep_their_builtin_base(kind):
    from agents.chat import ModelError
    from batch.store import BatchStoreError
    from dialogues.seeds import SeedError
    from stores.starter import LibraryNotFound

    errors = [SeedError, BatchStoreError, LibraryNotFound, ModelError]
    assert [issubclass(e, kind) for e in errors] == [
        kind is InputError,
        kind is InputError,
        kind is InputError,
        kind is ServiceError,
    ]
    assert issubclass(SeedError, ValueError) and issubclass(LibraryNotFound, LookupError)
    assert issubclass(ModelError, RuntimeError)

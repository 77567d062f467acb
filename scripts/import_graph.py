"""Print the project's package import graph, its size per package, and its cycles.

Usage: ``python scripts/import_graph.py`` from the repository root (stdlib only, nothing is
imported: the sources are parsed with ``ast``). Exits 1 when the packages import each other in a
cycle, or when a package imports one above it in ``LAYERS``.

Every ``import`` and ``from ... import`` between two of the project's packages is an edge, whether
it runs when the module is imported (top level, including inside ``if``/``try``) or only when a
function is called (local: inside a ``def``); a local import hides a cycle from Python but not from
a reader, so it counts.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("dialogues",),
    ("prompts", "runtime"),
    ("stores",),
    ("agents",),
    ("graphs",),
    ("wiring",),
    ("induction",),
    ("batch",),
    ("evaluation", "training"),
    ("cli",),
    ("run",),
)
"""The packages from the bottom up; a package imports only packages of lower layers.

At the bottom the dialogue data (`dialogues`: the typed documents, the list of generation roles,
the two error bases); on it the prompt texts and `runtime` (settings, URLs, the model server
process). Above them the strategy stores, the roles (`agents`), the graph, and `wiring` (a session
wiring settings to stores, servers and chat clients, and running one dialogue); then the tools
built on them and the command line on top. Packages of one layer do not import each other.
"""

PACKAGES: tuple[str, ...] = tuple(name for layer in LAYERS for name in layer)
"""Every package of the project; ``run`` is the ``run.py`` entry point."""


@dataclass(frozen=True)
class Import:
    """One import statement from one project package into another."""

    source: str
    """The importing package."""
    target: str
    """The imported package."""
    module: str
    """The importing file, relative to the repository root."""
    line: int
    """The statement's line number."""
    local: bool
    """Whether the statement sits inside a function (runs when called, not when imported)."""


def package_files(root: Path = ROOT) -> dict[str, list[Path]]:
    """Find each package's Python files.

    Args:
        root: The repository root.

    Returns:
        The ``.py`` files per package, sorted; ``run`` is ``run.py`` alone.
    """
    files = {name: sorted((root / name).rglob("*.py")) for name in PACKAGES if name != "run"}
    files["run"] = [root / "run.py"]
    return files


def _module_name(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported_modules(node: ast.Import | ast.ImportFrom, module: list[str], is_init: bool):
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        return [node.module or ""]
    package = module if is_init else module[:-1]
    base = package[: len(package) - (node.level - 1)]
    return [".".join([*base, *([node.module] if node.module else [])])]


def _walk(node: ast.AST, local: bool = False):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, local
        inner = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _walk(child, inner)


def file_imports(path: Path, source: str, root: Path = ROOT) -> list[Import]:
    """List one file's imports of other project packages.

    Args:
        path: The file.
        source: The package the file belongs to.
        root: The repository root.

    Returns:
        One entry per imported package per statement.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_name(path, root)
    found = []
    for node, local in _walk(tree):
        for name in _imported_modules(node, module, path.name == "__init__.py"):
            target = name.split(".")[0]
            if target in PACKAGES and target != source:
                relative = str(path.relative_to(root))
                found.append(Import(source, target, relative, node.lineno, local))
    return found


def all_imports(root: Path = ROOT) -> list[Import]:
    """List every import between two project packages.

    Args:
        root: The repository root.

    Returns:
        The imports, in package and file order.
    """
    return [
        found
        for source, paths in package_files(root).items()
        for path in paths
        for found in file_imports(path, source, root)
    ]


def line_counts(root: Path = ROOT) -> dict[str, tuple[int, int, int]]:
    """Count each package's files, lines, and code lines (neither blank nor a comment).

    Args:
        root: The repository root.

    Returns:
        ``(files, lines, code lines)`` per package.
    """
    counts = {}
    for name, paths in package_files(root).items():
        lines = [line.strip() for path in paths for line in path.read_text().splitlines()]
        code = sum(1 for line in lines if line and not line.startswith("#"))
        counts[name] = (len(paths), len(lines), code)
    return counts


def cycles(imports: list[Import]) -> list[list[str]]:
    """Find the groups of packages that import each other, directly or through others.

    Args:
        imports: The imports between packages.

    Returns:
        The strongly connected components with more than one package, each sorted.
    """
    graph: dict[str, set[str]] = defaultdict(set)
    for found in imports:
        graph[found.source].add(found.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in PACKAGES:
        if node not in index:
            visit(node)
    return sorted(groups)


def upward_imports(imports: list[Import]) -> list[Import]:
    """Find the imports from a package into a higher layer (or a sibling of its own layer).

    Args:
        imports: The imports between packages.

    Returns:
        The imports that break ``LAYERS``.
    """
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    return [found for found in imports if layer[found.target] >= layer[found.source]]


def _where(found: Import) -> str:
    return f"{found.module}:{found.line}{' (local)' if found.local else ''}"


def report(root: Path = ROOT) -> tuple[str, bool]:
    """Render the line counts, the edges, the cycles and the layer breaks.

    Args:
        root: The repository root.

    Returns:
        The text, and whether the graph is clean (no cycle, no upward import).
    """
    imports = all_imports(root)
    out = ["Lines per package (files, lines, code = not blank and not a comment):"]
    counts = line_counts(root)
    for name in PACKAGES:
        files, lines, code = counts[name]
        out.append(f"  {name:<11} {files:>3} files {lines:>6} lines {code:>6} code")
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    out.append(f"  {'total':<11} {total[0]:>3} files {total[1]:>6} lines {total[2]:>6} code")

    edges: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for found in imports:
        edges[found.source, found.target].append(found)
    out.append("")
    out.append("Imports between packages (statements; local = inside a function):")
    for (source, target), found in sorted(edges.items()):
        local = [f for f in found if f.local]
        where = ", ".join(f"{m}:{n}" for m, n in sorted({(f.module, f.line) for f in local}))
        note = f"  local: {where}" if local else ""
        out.append(f"  {source} -> {target}: {len(found)} ({len(local)} local){note}")

    groups = cycles(imports)
    out.append("")
    out.append("Cycles:" if groups else "Cycles: none")
    for group in groups:
        members = set(group)
        out.append(f"  {' <-> '.join(group)}")
        for (source, target), found in sorted(edges.items()):
            if source in members and target in members:
                where = ", ".join(_where(f) for f in found)
                out.append(f"    {source} -> {target}: {where}")

    upward = upward_imports(imports)
    order = " < ".join("/".join(names) for names in LAYERS)
    out.append("")
    out.append(f"Layers, bottom up: {order}")
    out.append("Imports into a higher or the same layer:" if upward else "Imports upward: none")
    for found in upward:
        out.append(f"  {found.source} -> {found.target}: {_where(found)}")
    return "\n".join(out), not groups and not upward


def main() -> int:
    """Print the report; return 1 when there is a cycle or an upward import."""
    text, clean = report()
    sys.stdout.write(text + "\n")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())

"""The README's diagram is the graph's own mermaid output, and its commands and links exist.

The README is the front door; the long pages it links live in `docs/`. The command checks cover
both, so a command that moved to a docs page is still checked.
"""

import re
from pathlib import Path

from graphs.deduction import build_graph

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {path: path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}
PAGES = {ROOT / "README.md": README, **DOCS}
"""The README and every docs page: the text whose commands and links are checked."""
ALL = "\n".join(PAGES.values())


def test_readme_diagram_is_generated_from_the_graph():
    mermaid = build_graph().get_graph().draw_mermaid()
    body = mermaid.split("graph TD;", 1)[1].strip()
    assert body in README, "regenerate the README diagram from build_graph().draw_mermaid()"


def test_readme_commands_point_at_existing_scripts():
    for script in ("scripts/setup.sh", "scripts/test.sh", "scripts/setup-train.sh"):
        assert f"bash {script}" in README
        assert (ROOT / script).is_file()
    assert "bash scripts/test.sh" in (ROOT / ".ci/run").read_text()


def test_every_script_and_benchmark_named_in_the_readme_and_docs_exists():
    named = set(re.findall(r"\b((?:scripts|benchmarks)/[\w./-]+\.(?:sh|py))", ALL))
    assert {"scripts/setup.sh", "benchmarks/retrieval.py", "scripts/build_simulators.sh"} <= named
    assert sorted(name for name in named if not (ROOT / name).is_file()) == []


def test_every_run_py_subcommand_shown_exists():
    from cli.main import COMMANDS

    shown = set(re.findall(r"run\.py ([a-z][\w-]*)", ALL))
    assert {"batch", "export", "eval", "ablate", "induce", "strategies", "train-simulator"} <= shown
    assert sorted(shown - set(COMMANDS)) == []


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    return {_anchor(h) for h in re.findall(r"^#+ (.+)$", outside, flags=re.M)}


def test_every_relative_link_of_the_readme_and_docs_resolves():
    broken = []
    for page, text in PAGES.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_readme_is_a_front_door_that_links_every_docs_page():
    assert len(README.splitlines()) <= 300
    unlinked = [path.name for path in DOCS if f"](docs/{path.name})" not in README]
    assert unlinked == []

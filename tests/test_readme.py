"""The README's diagram is the graph's own mermaid output, and its commands exist."""

from pathlib import Path

from graphs.deduction import build_graph

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_diagram_is_generated_from_the_graph():
    mermaid = build_graph().get_graph().draw_mermaid()
    body = mermaid.split("graph TD;", 1)[1].strip()
    assert body in README, "regenerate the README diagram from build_graph().draw_mermaid()"


def test_readme_commands_point_at_existing_scripts():
    root = Path(__file__).resolve().parents[1]
    for script in ("scripts/setup.sh", "scripts/test.sh", "scripts/setup-train.sh"):
        assert f"bash {script}" in README
        assert (root / script).is_file()
    assert "bash scripts/test.sh" in (root / ".ci/run").read_text()

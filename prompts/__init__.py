"""Prompt templates (text only), rendered by one strict helper."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def render(name: str, **variables: object) -> str:
    """Render `prompts/<name>.jinja2`; a missing variable is an error, not an empty string."""
    return _environment().get_template(f"{name}.jinja2").render(**variables).strip()


def template_names() -> list[str]:
    """Return the names of all templates, for tests and docs."""
    return sorted(p.stem for p in TEMPLATES.glob("*.jinja2"))

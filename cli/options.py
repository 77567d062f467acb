"""The flags shared by the commands that talk to models and the store, and reading them back."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.errors import UsageError
from dialogues.models import GENERATION_ROLES
from runtime.settings import AgentChoice, Settings, agent_choices, load_settings


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags shared by every command that talks to models or the strategy store."""
    g = parser.add_argument_group("models and store")
    g.add_argument("--config", type=Path, help="TOML settings file (also IDEAS_CONFIG)")
    g.add_argument("--base-url", help="OpenAI-compatible server for every role (default: embedded)")
    g.add_argument("--model", help="model name sent to the server")
    g.add_argument(
        "--structured-output",
        choices=["function_calling", "json_schema", "json_mode"],
        help="structured-output method (json_schema for OpenAI and llama-server)",
    )
    g.add_argument("--gguf", type=Path, help="GGUF model for the embedded server")
    g.add_argument("--port", type=int, help="port for the embedded server (default: a free one)")
    g.add_argument("--store", type=Path, help="directory of the embedded Chroma store")
    g.add_argument("--chroma-url", help="Chroma server URL (instead of the embedded store)")
    g.add_argument("--library", help="strategy library name (default: default)")


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags that choose and tune the agents (what ablations vary)."""
    a = parser.add_argument_group("agents (ablations)")
    for role in GENERATION_ROLES:  # a flag per role with a choice: `--strategist`, `--critic`...
        if len(agent_choices(role)) > 1:
            help_ = AgentChoice.model_fields[role].description
            a.add_argument(f"--{role}", choices=agent_choices(role), help=help_)
    a.add_argument(
        "--simulator-adapter",
        metavar="trained|none|DIR|NAME",
        help="the simulator's LoRA adapter: trained (default on the bundled model: the shipped "
        "simulator trained for --simulator), none (the prompted simulator), a folder made by "
        "train-simulator (the bundled model or --gguf; it must fit the model), or with "
        "--base-url the name the server serves the adapter under",
    )
    a.add_argument("--top-k", type=int, help="candidate strategies per turn (default 8)")
    a.add_argument(
        "--simulator-drafts",
        type=int,
        metavar="N",
        help="strategy simulator: write N drafts and keep the one its strategy makes likeliest "
        "against the other candidates (default 1; docs/simulators.md)",
    )
    a.add_argument(
        "--simulator-guidance",
        type=float,
        metavar="GAMMA",
        help="strategy simulator: sample each draft with the strategy weighted GAMMA against "
        "the same prompt without it (classifier-free guidance; 1: plain sampling; default 5 "
        "for the trained simulator on the bundled model, else 1; docs/simulators.md)",
    )
    a.add_argument(
        "--length-floor",
        dest="simulator_length_floor",
        action=argparse.BooleanOptionalAction,
        help="trained simulators: hold each turn open to a length drawn at the real users' "
        "shares, from the simulator's card (default on; docs/simulators.md)",
    )
    a.add_argument("--max-rejections", type=int, help="rejections in a row that end (default 6)")
    a.add_argument(
        "--min-turns",
        type=int,
        help="no user ending before this many generated turns (default 2)",
    )
    a.add_argument(
        "--ending",
        choices=["learned", "never"],
        help="learned (default): the simulator may end the dialogue, --turns is the maximum; "
        "never: every dialogue runs to --turns",
    )
    a.add_argument("--min-depth", type=int, help="critic's minimum depth 1-5 (default 3)")
    a.add_argument("--min-insight", type=int, help="critic's minimum insight 1-5 (default 3)")
    a.add_argument("--random-seed", type=int, help="seed for sampling choices (default 0)")
    a.add_argument(
        "--strategy-temperature",
        type=float,
        help="learned strategist: temperature of its draw (0 = most likely; default 1)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Load settings with the command line's values on top."""
    model = {
        "base_url": args.base_url,
        "model": args.model,
        "structured_output": args.structured_output,
    }
    agents = {role: getattr(args, role, None) for role in GENERATION_ROLES}
    overrides: dict[str, Any] = {
        "model": {k: v for k, v in model.items() if v is not None} or None,
        "agents": {k: v for k, v in agents.items() if v is not None} or None,
        "simulator": (
            {"adapter": args.simulator_adapter}
            if getattr(args, "simulator_adapter", None) is not None
            else None
        ),
        "gguf": args.gguf,
        "server_port": args.port,
        "store": args.store,
        "chroma_url": args.chroma_url,
        "library": args.library,
    }
    for name, key in [
        ("turns", "turns"),
        ("top_k", "top_k"),
        ("simulator_drafts", "simulator_drafts"),
        ("simulator_guidance", "simulator_guidance"),
        ("simulator_length_floor", "simulator_length_floor"),
        ("max_rejections", "max_rejections"),
        ("min_turns", "min_turns"),
        ("ending", "ending"),
        ("min_depth", "min_depth"),
        ("min_insight", "min_insight"),
        ("random_seed", "seed"),
        ("strategy_temperature", "strategy_temperature"),
        ("threshold", "cluster_threshold"),
        ("tiers", "tiers"),
    ]:
        overrides[key] = getattr(args, name, None)
    return load_settings(args.config, **overrides)


def preflight(settings: Settings) -> None:
    """Reject bad input that would otherwise surface only after the server starts."""
    from runtime.server import check_port_free

    check_served_adapters(settings)

    if settings.gguf is not None and not settings.gguf.is_file():
        raise UsageError(f"{settings.gguf}: GGUF model not found")
    if settings.server_port is not None and settings.model.base_url is None:
        try:
            check_port_free(settings.server_port, "127.0.0.1")
        except RuntimeError as exc:
            raise UsageError(str(exc)) from None


def check_served_adapters(settings: Settings) -> None:
    """Ask each server at a URL whether it serves the adapter a role names (`GET /v1/models`).

    vLLM lists each LoRA it serves under its name. SGLang takes `BASE:ADAPTER` as the model and
    may list the base alone: such a name passes when its base is listed.

    Raises:
        UsageError: The server does not list the name.
        ModelError: The server did not answer.
    """
    from agents.chat import ModelError
    from runtime.adapters import ServedModelsError, served_models
    from runtime.settings import ROLES
    from runtime.urls import redact_url

    for role in ROLES:
        name = settings.served_adapter(role)
        if name is None:
            continue
        model = settings.model_for(role)
        try:
            listed = served_models(model.base_url, model.api_key.get_secret_value(), model.timeout)
        except ServedModelsError as exc:
            raise ModelError(str(exc)) from None
        base, sep, _ = name.partition(":")
        if name not in listed and not (sep and base in listed):  # SGLang: BASE:ADAPTER
            shown = ", ".join(listed[:8]) + (", ..." if len(listed) > 8 else "")
            raise UsageError(
                f"the {role}'s adapter {name!r} is not served by {redact_url(model.base_url)} "
                f"(its /v1/models lists: {shown or 'nothing'}); register it there under that "
                "name (docs/trained-simulators.md)"
            )


def refuse_human_simulator(settings: Settings) -> None:
    """Refuse the human simulator where no person answers (batch and ablation runs)."""
    if settings.agents.simulator == "human":
        raise UsageError(
            "the human simulator needs a person: grow one seed at a time with "
            "`run.py --seed FILE --simulator human`, or serve the graph (docs/serve.md)"
        )

"""One registry per role: the names the CLI offers, each mapped to a factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agents.assistant import Assistant, LLMAssistant
from agents.chat import ChatClient
from agents.critic import AcceptAllCritic, Critic, LLMCritic, NoveltyCritic
from agents.simulator import HumanSimulator, PlainSimulator, StrategySimulator, UserSimulator
from agents.strategist import (
    LearnedStrategist,
    LLMStrategist,
    NoStrategist,
    RandomStrategist,
    RankingRetriever,
    Retriever,
    Strategist,
)
from dialogues.ending import EndingRule
from dialogues.lengths import LengthCues
from dialogues.models import GenerationRole
from runtime import adapters
from runtime.settings import (
    AssistantName,
    CriticName,
    Role,
    Settings,
    SimulatorName,
    StrategistName,
)
from stores.base import StrategyStore


class Wiring(Protocol):
    """What a factory may ask for: the settings, the strategy store, a chat client per role."""

    settings: Settings
    store: StrategyStore
    retriever: Retriever
    learned_retriever: RankingRetriever

    def chat(self, role: Role) -> ChatClient:
        """Return the chat client for `role`."""
        ...


STRATEGISTS: dict[StrategistName, Callable[[Wiring], Strategist]] = {
    "llm": lambda w: LLMStrategist(w.retriever, w.chat("strategist"), w.settings.top_k),
    "random": lambda w: RandomStrategist(w.retriever, w.settings.top_k, w.settings.seed),
    "learned": lambda w: LearnedStrategist(
        w.learned_retriever, w.settings.top_k, w.settings.strategy_temperature, w.settings.seed
    ),
    "none": lambda w: NoStrategist(),
}


def _trained(wiring: Wiring) -> bool:
    """The simulator runs as a trained adapter (on the embedded server or a server's LoRA)."""
    settings = wiring.settings
    return (
        settings.adapter_for("simulator") is not None
        or settings.served_adapter("simulator") is not None
    )


def _ending_rule(wiring: Wiring) -> EndingRule | None:
    """The embedded trained simulator's calibrated ending rule (`--ending learned` only)."""
    adapter = wiring.settings.adapter_for("simulator")
    if wiring.settings.ending != "learned" or adapter is None:
        return None
    return adapters.ending_rule(adapter.path)


def _length_cues(wiring: Wiring) -> LengthCues | None:
    """The embedded trained simulator's length cue shares, if it was trained with them."""
    adapter = wiring.settings.adapter_for("simulator")
    return None if adapter is None else adapters.length_cues(adapter.path)


SIMULATORS: dict[SimulatorName, Callable[[Wiring], UserSimulator]] = {
    "strategy": lambda w: StrategySimulator(
        w.chat("simulator"),
        trained=_trained(w),
        drafts=w.settings.simulator_drafts,
        ending=_ending_rule(w),
        guidance=w.settings.guidance(),
        lengths=_length_cues(w),
        floor=w.settings.length_floor(),
    ),
    "plain": lambda w: PlainSimulator(
        w.chat("simulator"),
        trained=_trained(w),
        ending=_ending_rule(w),
        lengths=_length_cues(w),
        floor=w.settings.length_floor(),
    ),
    "human": lambda w: HumanSimulator(StrategySimulator(w.chat("simulator"))),
}
CRITICS: dict[CriticName, Callable[[Wiring], Critic]] = {
    "llm": lambda w: LLMCritic(
        w.chat("critic"),
        NoveltyCritic(w.settings.novelty_threshold),
        w.settings.min_depth,
        w.settings.min_insight,
    ),
    "novelty": lambda w: NoveltyCritic(w.settings.novelty_threshold),
    "none": lambda w: AcceptAllCritic(),
}
ASSISTANTS: dict[AssistantName, Callable[[Wiring], Assistant]] = {
    "llm": lambda w: LLMAssistant(w.chat("assistant")),
}
REGISTRIES: dict[GenerationRole, Mapping[str, Callable[[Wiring], Any]]] = {
    "strategist": STRATEGISTS,
    "simulator": SIMULATORS,
    "critic": CRITICS,
    "assistant": ASSISTANTS,
}
"""Each generation role's registry (keys: `runtime.settings.AGENT_NAMES`, held equal by a test)."""

VARIANTS: dict[str, dict[str, Any]] = {
    "ideas": {},
    "plain": {"agents": {"strategist": "none", "simulator": "plain"}},
    "random-strategy": {"agents": {"strategist": "random"}},
    "learned-strategy": {"agents": {"strategist": "learned"}},
    "no-critic": {"agents": {"critic": "none"}},
    "prompted": {"simulator": {"adapter": "none"}},
    "prompted-plain": {
        "agents": {"strategist": "none", "simulator": "plain"},
        "simulator": {"adapter": "none"},
    },
}
"""Ablation variants (`run.py ablate`): name -> the settings patch it applies to the base settings
(the `ideas` variant), with `variant_settings`. `agents` switches parts off by choosing entries of
the registries above; `simulator.adapter` `none` runs the prompted simulator on the bundled model,
where `ideas` and `plain` get the shipped simulators trained on their prompts."""


def variant_settings(settings: Settings, name: str) -> Settings:
    """Return `settings` with the ablation variant `name`'s patch applied (see `VARIANTS`)."""
    return settings.patched(VARIANTS[name])


@dataclass(frozen=True)
class Agents:
    """The four role players of one run."""

    strategist: Strategist
    simulator: UserSimulator
    critic: Critic
    assistant: Assistant


def build_agents(wiring: Wiring) -> Agents:
    """Instantiate the implementations named in `settings.agents` (`auto` resolved)."""
    choice, _ = wiring.settings.resolve_agents()
    for role, registry in REGISTRIES.items():
        name = getattr(choice, role)
        if name not in registry:
            raise ValueError(f"unknown {role} {name!r}; choose from {', '.join(registry)}")
    return Agents(
        strategist=STRATEGISTS[choice.strategist](wiring),
        simulator=SIMULATORS[choice.simulator](wiring),
        critic=CRITICS[choice.critic](wiring),
        assistant=ASSISTANTS[choice.assistant](wiring),
    )

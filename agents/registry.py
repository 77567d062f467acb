"""One registry per role: the names the CLI offers, each mapped to a factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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
from runtime.settings import Role, Settings
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


STRATEGISTS: dict[str, Callable[[Wiring], Strategist]] = {
    "llm": lambda w: LLMStrategist(w.retriever, w.chat("strategist"), w.settings.top_k),
    "random": lambda w: RandomStrategist(w.retriever, w.settings.top_k, w.settings.seed),
    "learned": lambda w: LearnedStrategist(
        w.learned_retriever, w.settings.top_k, w.settings.strategy_temperature, w.settings.seed
    ),
    "none": lambda w: NoStrategist(),
}
SIMULATORS: dict[str, Callable[[Wiring], UserSimulator]] = {
    "strategy": lambda w: StrategySimulator(w.chat("simulator")),
    "plain": lambda w: PlainSimulator(w.chat("simulator")),
    "human": lambda w: HumanSimulator(StrategySimulator(w.chat("simulator"))),
}
CRITICS: dict[str, Callable[[Wiring], Critic]] = {
    "llm": lambda w: LLMCritic(
        w.chat("critic"),
        NoveltyCritic(w.settings.novelty_threshold),
        w.settings.min_depth,
        w.settings.min_insight,
    ),
    "novelty": lambda w: NoveltyCritic(w.settings.novelty_threshold),
    "none": lambda w: AcceptAllCritic(),
}
ASSISTANTS: dict[str, Callable[[Wiring], Assistant]] = {
    "llm": lambda w: LLMAssistant(w.chat("assistant")),
}
VARIANTS: dict[str, dict[str, str]] = {
    "ideas": {},
    "plain": {"strategist": "none", "simulator": "plain"},
    "random-strategy": {"strategist": "random"},
    "learned-strategy": {"strategist": "learned"},
    "no-critic": {"critic": "none"},
    "prompted": {"simulator_adapter": "none"},
    "prompted-plain": {"strategist": "none", "simulator": "plain", "simulator_adapter": "none"},
}
"""Ablation variants (`run.py ablate`): name -> the agents it changes from the base choice (the
`ideas` variant). Every agent value names an entry of the registries above; `simulator_adapter`
changes the simulator's adapter setting (`none`: the prompted simulator on the bundled model,
where `ideas` and `plain` get the shipped simulators trained on their prompts)."""

REGISTRIES = {
    "strategist": STRATEGISTS,
    "simulator": SIMULATORS,
    "critic": CRITICS,
    "assistant": ASSISTANTS,
}


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

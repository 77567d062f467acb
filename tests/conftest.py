"""Shared fixtures: an in-memory strategy library and a wiring of scripted agents."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agents.chat import ChatClient
from runtime.settings import Role, Settings
from stores.base import StrategyRecord
from stores.memory import HashingEmbedding, InMemoryStrategyStore
from tests.fakes import ScriptedChatModel

STRATEGIES = [
    "Ask for a concrete example that applies the idea to a new case",
    "Challenge a claim in the answer and ask for evidence",
    "Ask how the idea compares with a common alternative",
    "Ask for step-by-step instructions to apply the answer",
    "Ask about the limitations or edge cases of the approach",
]


@pytest.fixture
def store() -> InMemoryStrategyStore:
    library = InMemoryStrategyStore("test", HashingEmbedding())
    library.add([StrategyRecord(id=f"s{i}", text=t) for i, t in enumerate(STRATEGIES)])
    return library


@pytest.fixture
def seed_messages() -> list:
    return [
        HumanMessage(content="How do vaccines train the immune system?"),
        AIMessage(content="They show the immune system a harmless antigen so memory cells form."),
    ]


@dataclass
class ScriptedWiring:
    """A Wiring whose chat clients are scripted fakes, one per role."""

    settings: Settings
    store: InMemoryStrategyStore
    scripts: dict[str, list] = field(default_factory=dict)
    models: dict[str, ScriptedChatModel] = field(default_factory=dict)

    @property
    def retriever(self) -> InMemoryStrategyStore:
        return self.store

    def chat(self, role: Role) -> ChatClient:
        model = self.models.setdefault(role, ScriptedChatModel(script=self.scripts.get(role, [])))
        return ChatClient(model)

    def assert_all_used(self) -> None:
        for role, model in self.models.items():
            assert model.unused == 0, f"{role}: {model.unused} scripted replies unused"


@pytest.fixture
def wiring(store):
    def make(scripts: dict[str, list], **settings) -> ScriptedWiring:
        settings["agents"] = {"critic": "llm", "strategist": "llm", **settings.get("agents", {})}
        return ScriptedWiring(Settings(**settings), store, scripts)

    return make


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A random tiny Llama as a Hugging Face directory named `tiny-llama` (`tests.tiny_models`)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.tiny_models import tiny_hf_model

    return tiny_hf_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_base):
    """The tiny base converted to a GGUF model by llama.cpp's converter (float32)."""
    from training import TrainingError
    from training.convert import HF_CONVERTER, convert_base_to_gguf, converter_tree

    pytest.importorskip("sentencepiece")  # the converter imports it for a Llama base
    try:
        converter_tree(HF_CONVERTER)
    except TrainingError as exc:
        pytest.skip(str(exc))
    return convert_base_to_gguf(tiny_base, tiny_base.parent / "tiny-llama.gguf", "f32")


@pytest.fixture(scope="session")
def bundled_gguf():
    """The bundled GGUF model (skips without llama-cpp-python or the model package)."""
    pytest.importorskip("llama_cpp")
    from runtime.server import ServerError, default_gguf

    try:
        return default_gguf()
    except ServerError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def llama_server():
    """The embedded server's module (`runtime/llama_server.py`, a script), imported as such."""
    import sys
    from pathlib import Path

    runtime = str(Path(__file__).resolve().parents[1] / "runtime")
    sys.path.insert(0, runtime)
    try:
        import llama_server

        yield llama_server
    finally:
        sys.path.remove(runtime)

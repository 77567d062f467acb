"""Settings: source precedence, per-role models, secrets kept out of dumps, the `auto` critic."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runtime.settings import (
    ROLES,
    AgentChoice,
    ModelSettings,
    SettingsError,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No IDEAS_* variable of the developer's shell may leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("IDEAS_"):
            monkeypatch.delenv(name)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ideas.toml"
    path.write_text(text, encoding="utf-8")
    return path


CONFIG = """
turns = 3
top_k = 5
max_rejections = 4
library = "from-file"

[model]
model = "file-model"
temperature = 0.9

[critic]
temperature = 0.3
max_tokens = 100
"""


# --- precedence --------------------------------------------------------------------------------


def test_defaults():
    s = load_settings()
    assert (s.turns, s.top_k, s.max_rejections, s.library) == (6, 8, 6, "default")
    assert s.model.base_url is None and s.model.max_retries == 3
    assert s.agents == AgentChoice()
    assert s.model_for("strategist").max_tokens == 48


def test_toml_file_overrides_defaults(tmp_path):
    s = load_settings(write_toml(tmp_path, CONFIG))
    assert (s.turns, s.top_k, s.max_rejections, s.library) == (3, 5, 4, "from-file")
    assert s.model.model == "file-model"
    assert s.critic.temperature == 0.3 and s.critic.max_tokens == 100
    assert s.min_depth == 3  # untouched fields keep their defaults


def test_env_overrides_the_file_field_by_field(tmp_path, monkeypatch):
    monkeypatch.setenv("IDEAS_TURNS", "9")
    monkeypatch.setenv("IDEAS_CRITIC__TEMPERATURE", "0.5")
    monkeypatch.setenv("IDEAS_MODEL__BASE_URL", "http://env:1/v1")
    s = load_settings(write_toml(tmp_path, CONFIG))

    assert s.turns == 9
    assert s.top_k == 5  # still from the file
    assert s.critic.temperature == 0.5
    assert s.critic.max_tokens == 100  # nested env merges into the file's table
    assert s.model.base_url == "http://env:1/v1"
    assert s.model.model == "file-model"


def test_explicit_overrides_beat_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IDEAS_TURNS", "9")
    monkeypatch.setenv("IDEAS_MODEL__BASE_URL", "http://env:1/v1")
    s = load_settings(
        write_toml(tmp_path, CONFIG),
        turns=2,
        model={"base_url": "http://cli:2/v1"},
        top_k=None,  # None means "not given on the command line"
    )
    assert s.turns == 2
    assert s.model.base_url == "http://cli:2/v1"
    assert s.model.model == "file-model"  # a partial override keeps the rest
    assert s.top_k == 5


def test_ideas_config_env_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IDEAS_CONFIG", str(write_toml(tmp_path, "turns = 4\n")))
    assert load_settings().turns == 4


def test_explicit_config_beats_ideas_config(tmp_path, monkeypatch):
    monkeypatch.setenv("IDEAS_CONFIG", str(tmp_path / "missing.toml"))
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("turns = 7\n", encoding="utf-8")
    assert load_settings(explicit).turns == 7


def test_config_file_does_not_leak_into_later_loads(tmp_path):
    load_settings(write_toml(tmp_path, "turns = 4\n"))
    assert load_settings().turns == 6


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, "config file not found"),
        ("turns = = 3", "invalid TOML"),
        ("turns = 0\n", "invalid setting turns"),
        ("no_such_setting = 1\n", "invalid setting no_such_setting"),
        ("[critic]\ntemperature = 5\n", "invalid setting critic.temperature"),
    ],
)
def test_bad_config_file_is_a_one_line_settings_error(tmp_path, text, match):
    path = tmp_path / "ideas.toml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError, match=match) as info:
        load_settings(path)
    assert "\n" not in str(info.value)


def test_bad_env_value_is_a_settings_error(monkeypatch):
    monkeypatch.setenv("IDEAS_TURNS", "abc")
    with pytest.raises(SettingsError, match="^invalid setting turns: ") as info:
        load_settings()
    assert "\n" not in str(info.value)


# --- per-role model settings -------------------------------------------------------------------


def test_model_for_merges_the_role_over_the_shared_model():
    s = load_settings(
        model={"base_url": "http://shared/v1", "model": "big", "temperature": 0.6},
        critic={"base_url": "http://judge/v1", "temperature": 0.1},
    )
    critic = s.model_for("critic")
    assert isinstance(critic, ModelSettings)
    assert critic.base_url == "http://judge/v1"
    assert critic.temperature == 0.1
    assert critic.model == "big"  # inherited
    assert critic.timeout == s.model.timeout
    simulator = s.model_for("simulator")
    assert simulator.base_url == "http://shared/v1"
    assert simulator.temperature == 0.8  # the simulator's own default override
    assert s.model.base_url == "http://shared/v1"  # the shared model is not mutated


def test_role_defaults_apply_to_every_role():
    s = load_settings()
    expected = {
        "strategist": (0.0, 48),
        "simulator": (0.8, 96),
        "critic": (0.0, 128),
        "assistant": (0.7, 320),
        "extractor": (0.0, 160),
        "abstractor": (0.0, 64),
    }
    assert set(expected) == set(ROLES)
    for role, (temperature, max_tokens) in expected.items():
        m = s.model_for(role)
        assert (m.temperature, m.max_tokens) == (temperature, max_tokens), role


def test_uses_bundled_model():
    assert load_settings().uses_bundled_model("critic")
    assert not load_settings(gguf=Path("/models/x.gguf")).uses_bundled_model("critic")
    s = load_settings(critic={"base_url": "http://judge/v1"})
    assert not s.uses_bundled_model("critic") and s.uses_bundled_model("assistant")


def test_setting_one_role_field_keeps_the_role_s_other_defaults(monkeypatch):
    monkeypatch.setenv("IDEAS_STRATEGIST__TEMPERATURE", "0.2")
    m = load_settings().model_for("strategist")
    assert m.temperature == 0.2
    assert m.max_tokens == 48


# --- public dump -------------------------------------------------------------------------------


def test_public_dump_has_no_secrets(monkeypatch):
    monkeypatch.setenv("IDEAS_MODEL__API_KEY", "sk-shared-secret")
    monkeypatch.setenv("IDEAS_CRITIC__API_KEY", "sk-critic-secret")
    s = load_settings()
    assert s.model.api_key.get_secret_value() == "sk-shared-secret"
    assert s.model_for("critic").api_key.get_secret_value() == "sk-critic-secret"

    dump = s.public_dump()
    text = json.dumps(dump)  # plain JSON data
    assert "api_key" not in text
    assert "secret" not in text
    assert dump["model"]["model"] == s.model.model


def test_public_dump_resolves_auto_and_keeps_the_notice():
    dump = load_settings().public_dump()
    assert dump["agents"]["critic"] == "novelty"
    assert "SmolLM2" in dump["agents"]["notice"]
    dump = load_settings(model={"base_url": "http://x/v1"}).public_dump()
    assert dump["agents"]["critic"] == "llm" and dump["agents"]["notice"] is None


# --- resolve_agents ----------------------------------------------------------------------------


def test_auto_critic_on_the_bundled_model_falls_back_to_novelty():
    s = load_settings()
    agents, notice = s.resolve_agents()
    assert agents.critic == "novelty"
    assert notice and "--critic llm" in notice
    assert s.agents.critic == "auto"  # the settings themselves are not changed


def test_auto_critic_with_its_own_server_is_llm(monkeypatch):
    monkeypatch.setenv("IDEAS_CRITIC__BASE_URL", "http://judge:8000/v1")
    agents, notice = load_settings().resolve_agents()
    assert agents.critic == "llm" and notice is None


def test_auto_critic_with_a_gguf_is_llm(tmp_path):
    agents, notice = load_settings(gguf=tmp_path / "m.gguf").resolve_agents()
    assert agents.critic == "llm" and notice is None


def test_auto_critic_when_every_role_has_a_server():
    agents, notice = load_settings(model={"base_url": "http://x/v1"}).resolve_agents()
    assert agents.critic == "llm" and notice is None


def test_auto_strategist_is_learned_on_the_bundled_model_and_llm_with_a_server(monkeypatch):
    s = load_settings()
    assert s.agents.strategist == "auto"
    assert s.resolve_agents()[0].strategist == "learned"
    assert s.public_dump()["agents"]["strategist"] == "learned"
    assert s.fingerprint()["agents"]["strategist"] == "learned"
    assert "strategy_temperature" in s.fingerprint()  # the learned draw's setting decides output
    served = load_settings(model={"base_url": "http://x/v1"})
    assert served.resolve_agents()[0].strategist == "llm"
    assert "strategy_temperature" not in served.fingerprint()
    monkeypatch.setenv("IDEAS_STRATEGIST__BASE_URL", "http://big:8000/v1")
    assert load_settings().resolve_agents()[0].strategist == "llm"  # its own server decides


def test_auto_strategist_with_a_gguf_is_llm(tmp_path):
    assert load_settings(gguf=tmp_path / "m.gguf").resolve_agents()[0].strategist == "llm"


@pytest.mark.parametrize("critic", ["llm", "novelty", "none"])
def test_explicit_critic_choice_is_untouched(critic):
    s = load_settings(agents={"critic": critic, "strategist": "random"})
    agents, notice = s.resolve_agents()
    assert agents.critic == critic and agents.strategist == "random"
    assert notice is None


def test_settings_reject_unknown_fields():
    with pytest.raises(SettingsError, match="invalid setting"):
        load_settings(nonsense=1)


def test_a_patch_updates_sections_field_by_field_and_leaves_the_original_alone(monkeypatch):
    monkeypatch.setenv("IDEAS_SIMULATOR__TEMPERATURE", "0.3")
    s = load_settings(agents={"critic": "novelty"})
    patched = s.patched(
        {"agents": {"strategist": "none"}, "simulator": {"adapter": "none"}, "turns": 2}
    )
    assert (patched.agents.strategist, patched.agents.critic) == ("none", "novelty")
    assert (patched.simulator.adapter, patched.simulator.temperature) == ("none", 0.3)
    assert patched.turns == 2
    assert (s.agents.strategist, s.simulator.adapter, s.turns) == ("auto", None, 6)


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"agents": {"critic": "psychic"}}, "agents.critic: unknown critic 'psychic'; choose from"),
        ({"agents": {"planner": "llm"}}, "agents.planner: Extra inputs are not permitted"),
        ({"simulator": {"temprature": 0.1}}, "simulator.temprature: Extra inputs"),
        ({"turns": 0}, "invalid setting turns: Input should be greater than or equal to 1"),
        ({"nonsense": 1}, "invalid setting nonsense"),
    ],
)
def test_a_bad_patch_is_a_one_line_settings_error(patch, match):
    with pytest.raises(SettingsError, match=match):
        load_settings().patched(patch)


def test_an_agent_name_outside_the_role_s_type_is_refused_in_one_line():
    with pytest.raises(SettingsError) as raised:
        load_settings(agents={"simulator": "auto"})  # `auto` is no simulator
    assert str(raised.value) == (
        "invalid setting agents.simulator: unknown simulator 'auto'; choose from strategy, plain, "
        "human"
    )


def test_extractor_uses_the_papers_frequency_penalty_and_it_reaches_the_client():
    from agents.chat import build_chat_model

    s = load_settings()
    assert s.model_for("extractor").frequency_penalty == 0.6
    assert s.model_for("assistant").frequency_penalty is None
    client = build_chat_model(s.model_for("extractor"), "http://127.0.0.1:9/v1")
    assert client.frequency_penalty == 0.6


def test_the_reply_limit_follows_max_tokens_unless_set(monkeypatch):
    s = load_settings()
    assert s.model_for("assistant").reply_limit() == (64 << 10) + 64 * 320
    assert s.model_for("strategist").reply_limit() == (64 << 10) + 64 * 48
    monkeypatch.setenv("IDEAS_MODEL__MAX_REPLY_BYTES", "1000000")
    monkeypatch.setenv("IDEAS_CRITIC__MAX_REPLY_BYTES", "5000")
    s = load_settings()
    assert s.model_for("assistant").reply_limit() == 1_000_000
    assert s.model_for("critic").reply_limit() == 5000


@pytest.mark.parametrize(
    "name", ["IDEAS_MODEL__MAX_REPLY_BYTES", "IDEAS_ASSISTANT__MAX_REPLY_BYTES"]
)
@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_a_bad_reply_limit_is_a_one_line_settings_error(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match="^invalid setting .*max_reply_bytes: ") as info:
        load_settings()
    assert "\n" not in str(info.value)

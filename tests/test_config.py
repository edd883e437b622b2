"""Configuration: YAML, environment overrides, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion import Agent, Bastion, Settings, tool
from bastion.config import apply_env
from bastion.core.errors import ConfigError
from bastion.testing import ScriptedModel, reply


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.load()
    assert settings.store == "sqlite:///bastion.db"
    assert settings.worker.concurrency == 1


def test_yaml_and_env_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "store: sqlite:///x.db\nworker:\n  concurrency: 2\nagents:\n  ops:\n"
        "    instructions: be careful\n    limits:\n      max_turns: 5\n"
    )
    env = {
        "BASTION_STORE": "postgresql://u@h/db",
        "BASTION_WORKER__LEASE_SECONDS": "12.5",
        "BASTION_MODEL": "openai:gpt-4o-mini",
        "HOME": "/root",
    }
    settings = Settings.load(cfg, env=env)
    assert settings.store == "postgresql://u@h/db"
    assert settings.worker.concurrency == 2
    assert settings.worker.lease_seconds == 12.5
    assert settings.default_model == "openai:gpt-4o-mini"
    assert settings.agents["ops"].limits.max_turns == 5


def test_env_overrides_are_strings_unless_the_setting_converts_them() -> None:
    """A secret or a text that looks like a number or a boolean stays the string it is."""
    env = {
        "BASTION_AGENTS__OPS__INSTRUCTIONS": "no",
        "BASTION_GUARDS__VAULT__KEY": "0123",
        "BASTION_SANDBOX__API_KEY_ENV": "007",
        "BASTION_WORKER__CONCURRENCY": "4",
        "BASTION_WORKER__RECLAIM_LOCAL": "false",
        "BASTION_GUARDS__INJECTION__LANGUAGES": "[en, de]",
    }
    settings = Settings.from_mapping(apply_env({}, env))
    assert settings.agents["ops"].instructions == "no"
    assert settings.guards is not None
    assert settings.guards["vault"]["key"] == "0123"
    assert settings.guards["injection"]["languages"] == ["en", "de"]
    assert settings.sandbox is not None and settings.sandbox.api_key_env == "007"
    assert settings.worker.concurrency == 4
    assert settings.worker.reclaim_local is False
    with pytest.raises(ConfigError, match="BASTION_AGENTS__OPS__TOOLS"):
        apply_env({}, {"BASTION_AGENTS__OPS__TOOLS": "[unclosed"})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("worker:\n  concurency: 2\n", "worker.concurency"),
        ("agents:\n  ops:\n    limits:\n      max_turns: 0\n", "agents.ops.limits.max_turns"),
        ("models:\n  routes:\n    fast: ['nope:x']\n", "models"),
        ("store: [1, 2]\n", "store"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, text: str, named: str) -> None:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        Settings.load(cfg)
    assert named in info.value.message
    assert info.value.code == "config_invalid"


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text("store: [unclosed\n")
    with pytest.raises(ConfigError, match="line"):
        Settings.load(cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope.yaml")


def test_unknown_store_url_is_a_config_error(tmp_path: Path) -> None:
    b = Bastion(Settings(store="mysql://x"))
    with pytest.raises(ConfigError, match="store URL"):
        b.run_sync("ops", "x")
    b.close_sync()


def test_yaml_agent_with_unregistered_tool_is_refused() -> None:
    settings = Settings.from_mapping({"agents": {"ops": {"tools": ["ghost"]}}})
    with pytest.raises(ConfigError, match="ghost"):
        Bastion(settings)


def test_yaml_agent_runs_on_the_default_route(tmp_path: Path) -> None:
    @tool
    def ping() -> str:
        return "pong"

    settings = Settings.from_mapping(
        {
            "store": f"sqlite:///{tmp_path / 'b.db'}",
            "default_model": "scripted:demo",
            "agents": {"ops": {"instructions": "answer", "tools": ["ping"]}},
        }
    )
    model = ScriptedModel([reply("hello")])
    b = Bastion(settings, tools=[ping], providers={"scripted": model})
    try:
        run = b.run_sync("ops", "hi")
        assert run.output == "hello"
        assert model.calls[0].model == "demo"
        assert [t.name for t in model.calls[0].tools] == ["ping"]
    finally:
        b.close_sync()


def test_python_agents_override_yaml_agents() -> None:
    settings = Settings.from_mapping({"agents": {"ops": {"instructions": "yaml"}}})
    b = Bastion(settings, agents=[Agent(name="ops", instructions="python")])
    assert b.agents["ops"].instructions == "python"

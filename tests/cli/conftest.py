"""Fixtures for CLI tests: a bastion.yaml pointing at a SQLite store in tmp_path, populated with
runs in known states by the Python API (the CLI is then run against the same file)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_support import Populated
from typer.testing import CliRunner

from bastion import Bastion, Settings
from bastion.engine import Agent
from bastion.testing import ScriptedModel, call, reply
from bastion.tools import tool


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads the environment; keep the developer's BASTION_* settings out of tests."""
    import os

    for key in list(os.environ):
        if key.startswith("BASTION_"):
            monkeypatch.delenv(key)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(f"store: sqlite:///{tmp_path / 'bastion.db'}\n", encoding="utf-8")
    return path


@tool(effect="write", requires_approval=lambda args: args.amount > 100)
def refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    return f"refunded {amount} on {order_id}"


@tool(effect="read")
def explode(x: int) -> str:
    """Always fails (a read: its failure dead-letters the run; a write's would be an unknown
    outcome for a person)."""
    raise RuntimeError(f"boom {x}")


@pytest.fixture
def populated(config_file: Path) -> Iterator[Populated]:
    """Three runs: one completed, one waiting for approval, one dead-lettered."""
    model = ScriptedModel(
        [
            reply(None, call("refund", {"order_id": "A1", "amount": 50})),
            reply("refunded A1"),
            reply(None, call("refund", {"order_id": "A2", "amount": 500})),
            reply(None, call("explode", {"x": 1})),
        ]
    )
    agent = Agent(name="ops", model="scripted:test", tools=[refund, explode])
    settings = Settings.load(config_file, env={})
    bastion = Bastion(settings, agents=[agent], providers={"scripted": model})
    try:
        completed = bastion.run_sync("ops", "refund A1 [/b] [bold]")
        waiting = bastion.run_sync("ops", "refund A2")
        dead = bastion.run_sync("ops", "explode")
        model.assert_complete()
    finally:
        bastion.close_sync()
    assert completed.status.value == "completed"
    assert waiting.status.value == "waiting_for_human"
    assert dead.status.value == "dead_letter"
    yield Populated(config=config_file, completed=completed.id, waiting=waiting.id, dead=dead.id)

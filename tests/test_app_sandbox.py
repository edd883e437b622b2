"""The ``sandbox:`` setting registers ``run_python`` for YAML agents; code runs isolated."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion import Bastion, RunStatus, Settings
from bastion.core.errors import ConfigError
from bastion.testing import ScriptedModel, call, reply


def test_yaml_agent_runs_code_in_the_sandbox(tmp_path: Path) -> None:
    settings = Settings.from_mapping(
        {
            "store": f"sqlite:///{tmp_path / 'b.db'}",
            "default_model": "scripted:demo",
            "sandbox": {"pool_size": 1, "wall_seconds": 10},
            "agents": {"analyst": {"instructions": "compute", "tools": ["run_python"]}},
        }
    )
    code = "import os\nprint(6 * 7, os.getuid(), os.path.exists('/etc/passwd'))\n"
    model = ScriptedModel(
        [
            reply(None, call("run_python", {"code": code})),
            lambda req: reply(req.messages[-1].content),
        ]
    )
    bastion = Bastion(settings, providers={"scripted": model})
    try:
        run = bastion.run_sync("analyst", "what is six times seven?")
        assert run.status is RunStatus.COMPLETED, run.error
        steps = bastion.call_sync(bastion.steps(run.id))
        result = next(s.output for s in steps if s.name == "run_python")
        assert result["ok"] is True
        # Isolated: the host's files are not there, and the code does not run as root.
        assert result["stdout"].split() == ["42", "1000", "False"]
    finally:
        bastion.close_sync()


def test_remote_sandbox_needs_a_url(tmp_path: Path) -> None:
    settings = Settings.from_mapping({"sandbox": {"backend": "remote"}})
    with pytest.raises(ConfigError, match="remote_url"):
        Bastion(settings)

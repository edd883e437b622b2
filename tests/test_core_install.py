"""The core installs and imports with no extra; an extra's absence is a clear error when its
feature is used, never at ``import bastion``. The extras' packages are hidden from a fresh
interpreter (as in an install without them); ``scripts/test-core`` also runs the core suite in
a virtual environment that really has no extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HIDE = textwrap.dedent(
    """
    import importlib.abc, sys
    HIDDEN = {"numpy", "phonenumbers", "ahocorasick", "py3langid", "cryptography", "asyncpg",
              "xllamacpp", "spacy", "pandas"}
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, Hide())
    """
)


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )


def test_bastion_runs_an_agent_without_any_extra(tmp_path: Path) -> None:
    result = _run(
        """
        from bastion import Agent, Bastion, Settings, tool
        from bastion.testing import ScriptedModel, call, reply

        @tool
        def lookup(order_id: str) -> str:
            return "shipped"

        model = ScriptedModel([reply(None, call("lookup", {"order_id": "A"})), reply("done")])
        b = Bastion(Settings(store="sqlite:///core.db", default_model="scripted:x"),
                    agents=[Agent(name="ops", tools=[lookup])], providers={"scripted": model})
        run = b.run_sync("ops", "where is A?")
        b.close_sync()
        print(run.status.value, run.output)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "completed done"


def test_guards_without_their_extra_are_a_clear_config_error(tmp_path: Path) -> None:
    result = _run(
        """
        from bastion import Bastion, Settings
        from bastion.core.errors import ConfigError
        try:
            Bastion(Settings(store="sqlite:///core.db", guards={}))
        except ConfigError as exc:
            print(exc.code, "|", exc)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    code, _, message = result.stdout.partition("|")
    assert code.strip() == "config_invalid"
    assert "guards extra" in message and "pip install 'bastion[guards]'" in message
    assert "Traceback" not in result.stderr

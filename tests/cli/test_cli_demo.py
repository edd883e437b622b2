"""`bastion demo` end to end, as a user runs it: a subprocess that must exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from bastion.cli import app


def test_demo_runs_and_checks_itself(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    result = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "demo", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "is waiting for a human (approval_required): issue_refund({" in out
    assert "approved by demo-reviewer" in out
    assert "now kills itself with SIGKILL" in out
    assert "the worker died by SIGKILL" in out
    assert "claimed the run after waiting" in out
    assert "✔ the resumed run completed" in out
    # Phase 5: killed inside the refund call, the run waits as outcome unknown and is resolved.
    assert "returned but is not journaled yet" in out
    assert "waiting for a human: outcome_unknown" in out
    assert "resolves the step with its receipt instead of refunding again" in out
    assert "✔ the resumed run waited for a human instead of calling issue_refund again" in out
    assert "✔ exactly one refund of $249.00 on A-1002 and one of $12.50 on B-2001" in out
    assert "✔ exactly one email per refund run" in out
    # run_python: the agent's pandas analysis ran in the sandbox and its figures came back.
    assert "✔ run_python executed the analysis in the sandbox" in out
    assert "2 refunds, $261.50 in total; largest $249.00 on A-1002" in out
    assert "every check held" in out
    assert "✘" not in out
    assert (tmp_path / "shop.db").exists() and (tmp_path / "bastion.db").exists()


def test_demo_stops_with_one_error_when_the_model_cannot_answer(tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(
        "models:\n"
        "  providers: {dead: {kind: openai, base_url: 'http://127.0.0.1:1/v1'}}\n"
        "  retry: {max_attempts: 1}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(
        app,
        ["--config", str(config), "demo", "--dir", str(tmp_path / "demo"), "--model", "dead:x"],
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error[demo_aborted]: the model did not answer: provider_")


def test_demo_refuses_a_directory_holding_other_files(tmp_path: Path) -> None:
    keep = tmp_path / "bastion.db"
    keep.write_text("someone's own database")
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "holds files the demo did not create (notes.txt)" in result.output
    assert keep.read_text() == "someone's own database"
    assert "Traceback" not in result.output


def test_demo_reuses_its_own_directory(tmp_path: Path) -> None:
    from bastion.demo.run import _claim_directory

    fresh = tmp_path / "new"
    _claim_directory(fresh)
    (fresh / "bastion.db").write_text("from an earlier demo")
    _claim_directory(fresh)  # its own files: accepted
    unmarked = tmp_path / "unmarked"
    unmarked.mkdir()
    (unmarked / "bastion.db").write_text("not the demo's")
    import pytest

    from bastion.core.errors import UserError

    with pytest.raises(UserError):
        _claim_directory(unmarked)

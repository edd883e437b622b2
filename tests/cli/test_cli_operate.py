"""`bastion runs`, `review`, `dlq` and `cancel` against a SQLite store with runs in known states."""

from __future__ import annotations

import json

from _cli_support import Populated
from typer.testing import CliRunner

from bastion.cli import app


def cli(runner: CliRunner, populated: Populated, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--config", str(populated.config), *args])
    return result.exit_code, result.stdout, result.stderr


def test_runs_list_filters_and_json(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = cli(runner, populated, "runs", "list")
    assert code == 0
    for run_id in (populated.completed, populated.waiting, populated.dead):
        assert run_id in out
    code, out, _ = cli(runner, populated, "runs", "list", "--status", "completed", "--json")
    assert code == 0
    assert [r["id"] for r in json.loads(out)] == [populated.completed]
    code, out, _ = cli(runner, populated, "runs", "list", "--tenant", "nobody", "--json")
    assert json.loads(out) == []


def test_runs_show_renders_the_timeline(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = cli(runner, populated, "runs", "show", populated.waiting)
    assert code == 0
    assert "waiting for a human: approval_required at step 1" in out
    assert "waiting: approval_required" in out
    assert "refund" in out and "model" in out
    code, out, _ = cli(runner, populated, "runs", "show", populated.completed)
    assert code == 0 and "input:  refund A1 [/b] [bold]" in out  # user text is not markup
    code, out, _ = cli(runner, populated, "runs", "show", populated.completed, "--json")
    data = json.loads(out)
    assert data["run"]["status"] == "completed"
    assert [s["kind"] for s in data["steps"]][:2] == ["model", "tool"]


def test_unknown_run_is_one_line_with_a_hint(runner: CliRunner, populated: Populated) -> None:
    code, out, err = cli(runner, populated, "runs", "show", "run_nope")
    assert code == 2
    assert err.startswith("error[run_not_found]: no run with id 'run_nope'")
    assert "hint: " in err
    assert "Traceback" not in out + err


def test_review_list_and_approve(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = cli(runner, populated, "review", "list")
    assert code == 0
    assert populated.waiting in out and "approval_required" in out
    code, out, _ = cli(
        runner, populated, "review", "approve", populated.waiting, "--by", "alice", "--reason", "ok"
    )
    assert code == 0, out
    assert "pending" in out
    _, out, _ = cli(runner, populated, "runs", "show", populated.waiting, "--json")
    data = json.loads(out)
    assert data["run"]["status"] == "pending"
    approval = next(s for s in data["steps"] if s["kind"] == "approval")
    assert approval["decision"] == {
        "kind": "approve",
        "reason": "ok",
        "arguments": None,
        "output": None,
        "by": "alice",
    }
    _, out, _ = cli(runner, populated, "review", "list", "--json")
    assert json.loads(out) == []


def test_review_reject_needs_a_reason(runner: CliRunner, populated: Populated) -> None:
    code, _, err = cli(runner, populated, "review", "reject", populated.waiting)
    assert code == 2 and "--reason" in err
    code, out, _ = cli(runner, populated, "review", "reject", populated.waiting, "--reason", "no")
    assert code == 0 and "reject" in out


def test_review_edit_takes_json_arguments(runner: CliRunner, populated: Populated) -> None:
    code, _, err = cli(runner, populated, "review", "edit", populated.waiting, "--args", "{oops")
    assert code == 2 and err.startswith("error[user_error]: --args is not valid JSON")
    args = '{"order_id": "A2", "amount": 99}'
    code, _, _ = cli(runner, populated, "review", "edit", populated.waiting, "--args", args)
    assert code == 0
    _, out, _ = cli(runner, populated, "runs", "show", populated.waiting, "--json")
    approval = next(s for s in json.loads(out)["steps"] if s["kind"] == "approval")
    assert approval["decision"]["arguments"] == {"order_id": "A2", "amount": 99}


def test_deciding_a_run_that_is_not_waiting_is_refused(
    runner: CliRunner, populated: Populated
) -> None:
    code, _, err = cli(runner, populated, "review", "approve", populated.completed)
    assert code == 2
    assert err.startswith("error[invalid_state]: ")
    code, _, err = cli(runner, populated, "review", "resolve", populated.waiting, "--output", "1")
    assert code == 2 and "outcome is unknown" in err


def test_dlq_list_show_and_replay(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = cli(runner, populated, "dlq", "list")
    assert code == 0 and populated.dead in out and "tool_failed" in out
    code, out, _ = cli(runner, populated, "dlq", "show", populated.dead)
    assert code == 0 and "boom 1" in out and "dead letter #1 (open)" in out
    code, out, _ = cli(
        runner, populated, "dlq", "replay", populated.dead, "--from-step", "1", "--args", '{"x": 2}'
    )
    assert code == 0, out
    assert "pending again from step 1" in out
    _, out, _ = cli(runner, populated, "dlq", "list", "--json")
    assert json.loads(out) == []
    _, out, _ = cli(runner, populated, "runs", "show", populated.dead, "--json")
    run = json.loads(out)["run"]
    assert run["status"] == "pending" and run["overrides"] == {"1": {"x": 2}}
    _, out, _ = cli(runner, populated, "runs", "show", populated.dead)
    assert "1 steps archived by a replay" in out
    _, out, _ = cli(runner, populated, "runs", "show", populated.dead, "--archived")
    assert "archived steps (before a replay)" in out and "boom 1" in out


def test_dlq_replay_of_a_healthy_run_is_refused(runner: CliRunner, populated: Populated) -> None:
    code, _, err = cli(runner, populated, "dlq", "replay", populated.completed)
    assert code == 2 and err.startswith("error[invalid_state]")


def test_cancel(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = cli(runner, populated, "cancel", populated.waiting, "--reason", "test")
    assert code == 0 and "cancelled" in out
    code, _, err = cli(runner, populated, "cancel", populated.waiting)
    assert code == 2 and "already cancelled" in err

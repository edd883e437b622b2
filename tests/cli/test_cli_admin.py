"""`bastion db upgrade`, `config check`, `worker`, and mounting optional components."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer
from typer.testing import CliRunner

from bastion import Agent, Bastion, RunStatus, Settings, tool
from bastion.cli import app, mount
from bastion.cli._admin import serve_until_signal
from bastion.testing import FunctionModel, call, reply


def test_db_upgrade_applies_then_reports_up_to_date(runner: CliRunner, config_file: Path) -> None:
    result = runner.invoke(app, ["--config", str(config_file), "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "applied migration 1: runs, steps, step archive, dead letters" in result.stdout
    assert "applied migration 2: effects to confirm on replay" in result.stdout
    assert "schema version: 2 (latest known: 2)" in result.stdout
    again = runner.invoke(app, ["--config", str(config_file), "db", "upgrade"])
    assert again.exit_code == 0
    assert "no migrations to apply" in again.stdout


def test_config_check_prints_effective_settings_without_secrets(
    runner: CliRunner, tmp_path: Path
) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(
        "store: postgresql://bastion:hunter2@db:5432/bastion\n"
        "models:\n"
        "  providers:\n"
        "    gateway: {kind: openai, base_url: 'http://gw/v1', api_key: sk-very-secret,\n"
        "              headers: {Authorization: Bearer xyz}}\n",
        encoding="utf-8",
    )
    result = runner.invoke(
        app, ["--config", str(config), "config", "check"], env={"BASTION_WORKER__CONCURRENCY": "4"}
    )
    assert result.exit_code == 0, result.output
    assert "configuration OK" in result.stdout
    assert "concurrency: 4" in result.stdout
    for secret in ("hunter2", "sk-very-secret", "Bearer xyz"):
        assert secret not in result.stdout
    assert "postgresql://bastion:***@db:5432/bastion" in result.stdout
    as_json = runner.invoke(app, ["--config", str(config), "config", "check", "--json"])
    data = json.loads(as_json.stdout)
    assert data["settings"]["models"]["providers"]["gateway"]["api_key"] == "***"


def test_config_check_names_the_bad_key(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text("worker:\n  concurency: 2\n", encoding="utf-8")
    result = runner.invoke(app, ["--config", str(config), "config", "check"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error[config_invalid]: ")
    assert "worker.concurency: unknown setting" in result.stderr
    assert "hint: " in result.stderr
    assert "Traceback" not in result.output


def test_config_check_names_a_bad_environment_override(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["--config", str(tmp_path / "missing.yaml"), "config", "check"],
    )
    assert result.exit_code == 2 and "does not exist" in result.stderr
    config = tmp_path / "bastion.yaml"
    config.write_text("", encoding="utf-8")
    result = runner.invoke(
        app, ["--config", str(config), "config", "check"], env={"BASTION_WORKER__LEASE": "5"}
    )
    assert result.exit_code == 2
    assert "worker.lease: unknown setting" in result.stderr


def test_a_missing_component_says_so(runner: CliRunner) -> None:
    root = typer.Typer()

    @root.command()
    def other() -> None:
        """Keeps typer from collapsing a one-command app."""

    mount(root, "widget", "bastion.no_such_component.cli", "widget")
    result = runner.invoke(root, ["widget", "anything"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error[component_not_installed]: the widget component")


def test_worker_serves_until_sigterm(tmp_path: Path, config_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.cli", "--config", str(config_file), "worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    banner = ""
    while time.monotonic() < deadline and "SIGTERM stops it" not in banner:
        banner += proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, banner + rest
    assert "1 loop(s)" in banner
    assert "stopped after 0 execution(s)" in rest


def test_sigterm_releases_the_run_in_flight(tmp_path: Path) -> None:
    @tool(effect="read")
    async def slow() -> str:
        """Takes long enough to be interrupted."""
        # The worker is mid-run now: deliver the signal an operator would send.
        asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.sleep(30)
        return "done"

    settings = Settings(store=f"sqlite:///{tmp_path / 'bastion.db'}")
    agent = Agent(name="slowpoke", model="scripted:x", tools=[slow])
    model = FunctionModel(lambda request: reply(None, call("slow")))
    setup = Bastion(settings, agents=[agent], providers={"scripted": model})
    run = setup.call_sync(setup.submit("slowpoke", "go"))
    setup.close_sync()

    serving = Bastion(settings, agents=[agent], providers={"scripted": model})
    started = time.monotonic()
    asyncio.run(serve_until_signal(serving, 1))
    assert time.monotonic() - started < 20

    check = Bastion(settings, agents=[agent], providers={"scripted": model})
    try:
        released = check.call_sync(check.get_run(run.id))
        steps = check.call_sync(check.steps(run.id))
    finally:
        check.close_sync()
    assert released.status is RunStatus.PENDING
    assert released.lease_owner is None
    assert [s.name for s in steps][:2] == ["scripted:x", "slow"]


def test_an_unreachable_store_is_one_line_and_exit_1(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(f"store: sqlite:///{tmp_path / 'missing' / 'dir' / 'b.db'}\n")
    result = runner.invoke(app, ["--config", str(config), "runs", "list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error[store_unavailable]: ")
    assert "Traceback" not in result.output


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("runs", "review", "dlq", "cancel", "worker", "db", "config", "demo"):
        assert command in result.stdout
    # Optional components appear either mounted or as "not installed" stubs, never missing.
    assert "sandbox" in result.stdout and "guard" in result.stdout

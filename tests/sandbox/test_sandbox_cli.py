"""``bastion sandbox run`` behaves for its caller like ``python3 FILE.py``; ``check`` reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sandbox_helpers import run_cli_without_user_namespaces
from typer.testing import CliRunner

from bastion.sandbox.cli import EXIT_KILLED, EXIT_REFUSED, EXIT_UNAVAILABLE, app

PROGRAM = "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nsys.exit(7)\n"


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_run_is_like_python3(tmp_path: Path) -> None:
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    plain = _python(str(script))
    boxed = _python("-m", "bastion.sandbox", "run", str(script))
    assert (boxed.stdout, boxed.stderr, boxed.returncode) == (
        plain.stdout,
        plain.stderr,
        plain.returncode,
    )
    assert boxed.returncode == 7


@pytest.mark.parametrize(
    ("code", "args", "status", "says"),
    [
        ("while True: pass\n", ["--timeout", "0.5"], EXIT_KILLED, "killed: wall_time"),
        ("b = bytearray(1 << 31)\n", ["--memory", "64"], 1, "stopped: memory_limit"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n", ["--no-precheck"], 143, ""),
        ("import subprocess\n", [], EXIT_REFUSED, "import-blocked"),
    ],
)
def test_run_reports_kills_and_refusals(
    tmp_path: Path, code: str, args: list[str], status: int, says: str
) -> None:
    script = tmp_path / "prog.py"
    script.write_text(code)
    result = CliRunner().invoke(app, ["run", *args, str(script)])
    assert result.exit_code == status, result.output
    assert says in result.stderr


def test_run_with_files(tmp_path: Path) -> None:
    data = tmp_path / "numbers.txt"
    data.write_text("1\n2\n3\n")
    script = tmp_path / "prog.py"
    script.write_text(
        "n = sum(map(int, open('numbers.txt')))\nopen('total.txt', 'w').write(str(n))\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--input",
            str(data),
            "--output",
            "total.txt",
            "--output-dir",
            str(out),
            str(script),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "total.txt").read_text() == "6"


def test_check_reports_layers() -> None:
    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    for layer in ("user_namespace", "seccomp_applied", "pid_namespace", "network_denied"):
        assert layer in result.stdout
    assert "All required layers are in place." in result.stdout


def test_run_refuses_when_isolation_is_missing(tmp_path: Path) -> None:
    script = tmp_path / "prog.py"
    script.write_text("print('RAN')\n")
    result = run_cli_without_user_namespaces("run", str(script))
    assert result.returncode == EXIT_UNAVAILABLE, result
    assert "RAN" not in result.stdout
    assert "user_namespace" in result.stderr and "hint:" in result.stderr


def test_check_reports_the_missing_layer() -> None:
    result = run_cli_without_user_namespaces("check")
    assert result.returncode == 1, result
    assert "missing" in result.stdout and "user_namespace" in result.stdout
    assert "Bastion refuses to run code here" in result.stderr


async def test_serve_answers_remote_sandboxes() -> None:
    import asyncio
    import os
    import signal
    import socket

    from bastion.sandbox.remote import RemoteSandbox

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "BASTION_SANDBOX_API_KEY": "k3y"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bastion.sandbox",
        "serve",
        "--port",
        str(port),
        "--pool",
        "1",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    remote = RemoteSandbox(f"http://127.0.0.1:{port}", api_key="k3y")
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = await proc.stdout.readline()  # printed once it listens
        assert b"Serving the sandbox API" in line and await remote.health()
        result = await remote.execute("print(sum(range(10)))")
        assert result.ok and result.stdout == "45\n"
    finally:
        await remote.aclose()
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 30)


def test_serve_needs_a_key() -> None:
    result = CliRunner().invoke(app, ["serve", "--api-key-env", "BASTION_TEST_NO_SUCH_VAR"])
    assert result.exit_code == 2 and "BASTION_TEST_NO_SUCH_VAR" in result.stderr

"""The runnable examples under ``examples/`` run as a user would run them, and check themselves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_guarded_support_example_runs_and_every_guard_acts() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "guarded_support.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "every guard did what it should" in out
    assert "unvetted_language:de" in out
    assert "instructions_forbidden_topic_meaning" in out
    assert "audit@example.net" not in out.split("2. an instruction")[1].split("3.")[0]

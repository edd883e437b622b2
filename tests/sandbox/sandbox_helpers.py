"""Helpers for the sandbox tests: the CI rule for prerequisites, and an unisolated control runner.

Every escape case runs twice: once under plain ``python3`` (the control, which must show the
escape, so the test could fail) and once in the sandbox (which must contain it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skips locally when a prerequisite is missing; under CI that is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI=true but a prerequisite is missing: {why}")
        pytest.skip(why)


@dataclass
class Unisolated:
    stdout: str
    stderr: str
    returncode: int | None  # None: still running when the control's timeout passed


# A parent between the test process and the code, so a control that kills its parent kills
# this wrapper and not pytest.
_WRAPPER = (
    "import subprocess, sys\n"
    "r = subprocess.run([sys.executable, 'main.py'])\n"
    "sys.exit(r.returncode)\n"
)


def run_unisolated(
    code: str, cwd: Path, timeout: float = 30.0, env: dict[str, str] | None = None
) -> Unisolated:
    """Runs ``code`` as ``python3 main.py`` in ``cwd`` with no isolation at all."""
    (cwd / "main.py").write_text(code)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _WRAPPER],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env if env is not None else dict(os.environ),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return Unisolated(stdout=out, stderr="", returncode=None)
    return Unisolated(stdout=proc.stdout, stderr=proc.stderr, returncode=proc.returncode)


# Loads the sandbox's own seccomp filter (which refuses unshare) into a fresh interpreter, the
# way a restrictive container runtime would, then runs ``python -m bastion.sandbox ARGS``.
_NO_NAMESPACES = """
import ctypes, runpy, sys
from bastion.sandbox._seccomp import seccomp_program

class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

prog = seccomp_program()
buf = ctypes.create_string_buffer(prog, len(prog))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0
fprog = Fprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0
sys.argv = ["bastion sandbox", *sys.argv[1:]]
runpy.run_module("bastion.sandbox", run_name="__main__")
"""


def run_cli_without_user_namespaces(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _NO_NAMESPACES, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

"""The static pre-check: what it flags, with line numbers, and how GuardedSandbox uses it."""

from __future__ import annotations

import pytest

from bastion.sandbox import NamespaceSandbox
from bastion.sandbox.precheck import GuardedSandbox, PrecheckPolicy, format_findings, precheck


@pytest.mark.parametrize(
    ("code", "rule", "line"),
    [
        ("import ctypes\n", "import-blocked", 1),
        ("x = 1\nimport subprocess as sp\n", "import-blocked", 2),
        ("from socket import socket\n", "import-blocked", 1),
        ("import urllib.request\n", "import-blocked", 1),
        ("import os\n\nos.system('ls')\n", "call-blocked", 3),
        ("import os as o\no.fork()\n", "call-blocked", 2),
        ("from os import system as run\nrun('id')\n", "call-blocked", 2),
        ("eval('1+1')\n", "dynamic-code", 1),
        ("__import__('ctypes')\n", "dynamic-code", 1),
        ("import importlib\nimportlib.import_module('ctypes')\n", "call-blocked", 2),
        ("().__class__.__mro__[1].__subclasses__()\n", "dunder-access", 1),
        ("getattr(f, '__globals__')\n", "dunder-access", 1),
    ],
)
def test_flags_with_line_numbers(code: str, rule: str, line: int) -> None:
    findings = precheck(code)
    assert any(f.rule == rule and f.line == line and f.blocking for f in findings), findings


@pytest.mark.parametrize(
    "code",
    [
        "import json, csv, math, statistics\nprint(json.dumps({'a': 1}))\n",
        "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\nprint(df.sum())\n",
        "import os\nprint(os.listdir('.'))\nos.makedirs('out', exist_ok=True)\n",
        "def system(x):\n    return x\nsystem('fine')\n",
    ],
)
def test_ordinary_analysis_code_passes(code: str) -> None:
    assert precheck(code) == []


def test_modes_and_allow_list() -> None:
    assert precheck("import ctypes\n", PrecheckPolicy(mode="off")) == []
    warned = precheck("import ctypes\n", PrecheckPolicy(mode="warn"))
    assert warned and not any(f.blocking for f in warned)
    allowed = PrecheckPolicy(allowed_imports=frozenset({"socket"}))
    assert precheck("import socket\n", allowed) == []


def test_syntax_error_is_reported_not_blocking() -> None:
    (finding,) = precheck("def f(:\n")
    assert finding.rule == "syntax-error" and finding.line == 1 and not finding.blocking


def test_format_is_linter_like() -> None:
    text = format_findings(precheck("import os\nos.system('x')\n"))
    assert text == "main.py:2:0: call-blocked: call to 'os.system' is not allowed\n"


async def test_guarded_sandbox_refuses_before_running(sandbox: NamespaceSandbox) -> None:
    guarded = GuardedSandbox(sandbox)
    refused = await guarded.execute("import subprocess\nprint('ran')\n")
    assert refused.killed_reason == "precheck" and refused.exit_status is None
    assert "ran" not in refused.stdout and "main.py:1:0: import-blocked" in refused.stderr
    ok = await guarded.execute("print('ran')\n")
    assert ok.ok and ok.stdout == "ran\n"


async def test_warn_mode_runs_and_reports(sandbox: NamespaceSandbox) -> None:
    guarded = GuardedSandbox(sandbox, PrecheckPolicy(mode="warn"))
    result = await guarded.execute("import socket\nprint('ran')\n")
    assert result.ok and result.stdout == "ran\n"
    assert [f.rule for f in result.findings] == ["import-blocked"]


def test_public_surface_is_sorted_and_complete() -> None:
    import bastion.sandbox as pkg

    assert pkg.__all__ == sorted(pkg.__all__)
    assert all(hasattr(pkg, name) for name in pkg.__all__)

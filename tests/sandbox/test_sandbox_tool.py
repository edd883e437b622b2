"""The ``run_python`` tool: its contract, and calls through the tool runner."""

from __future__ import annotations

import importlib.util

from sandbox_helpers import require

from bastion.sandbox import Limits, NamespaceSandbox
from bastion.sandbox.tool import RunPythonResult, run_python_tool
from bastion.tools import ToolContext, ToolRegistry, invoke_tool


def _ctx() -> ToolContext:
    return ToolContext(run_id="run-1", step_no=3)


async def test_contract(sandbox: NamespaceSandbox) -> None:
    t = run_python_tool(sandbox, limits=Limits(wall_seconds=5))
    contract = t.contract()
    assert contract["name"] == "run_python" and contract["effect"] == "none"
    assert contract["idempotent"] is True and contract["timeout"] > 5
    assert set(contract["input_schema"]["properties"]) == {"code", "files", "outputs"}
    assert contract["input_schema"]["required"] == ["code"]
    assert "killed_reason" in contract["output_schema"]["properties"]
    assert "sandbox" in t.description
    assert ToolRegistry([t]).names() == ["run_python"]


async def test_runs_code_with_files(sandbox: NamespaceSandbox) -> None:
    t = run_python_tool(sandbox)
    args = t.input_model(
        code="rows = open('in.csv').read().splitlines()\n"
        "open('n.txt','w').write(str(len(rows)))\nprint('ok')",
        files={"in.csv": "a\nb\nc\n"},
        outputs=["n.txt"],
    )
    out = await invoke_tool(t, args, _ctx())
    result = RunPythonResult.model_validate(out)
    assert result.ok and result.stdout == "ok\n" and result.files == {"n.txt": "3"}


async def test_refusals_and_kills_are_results_for_the_model(sandbox: NamespaceSandbox) -> None:
    t = run_python_tool(sandbox, limits=Limits(wall_seconds=0.5))
    refused = RunPythonResult.model_validate(
        await invoke_tool(t, t.input_model(code="import socket"), _ctx())
    )
    assert not refused.ok and refused.killed_reason == "precheck"
    assert refused.findings[0].rule == "import-blocked"
    looped = RunPythonResult.model_validate(
        await invoke_tool(t, t.input_model(code="while True: pass"), _ctx())
    )
    assert looped.killed_reason == "wall_time" and looped.exit_status is None


async def test_refund_summary_with_pandas(sandbox: NamespaceSandbox) -> None:
    """What the ops agent does in the demo."""
    require(
        importlib.util.find_spec("pandas") is not None, "pandas is not installed (sandbox extra)"
    )
    t = run_python_tool(sandbox, limits=Limits(wall_seconds=30, cpu_seconds=30))
    csv = "order_id,amount,reason\nA-1001,20.00,late\nA-1002,89.90,damaged\nA-1003,15.10,damaged\n"
    code = (
        "import pandas as pd\n"
        "df = pd.read_csv('refunds.csv')\n"
        "by = df.groupby('reason')['amount'].sum().round(2)\n"
        "print(by.to_json())\n"
    )
    out = await invoke_tool(t, t.input_model(code=code, files={"refunds.csv": csv}), _ctx())
    result = RunPythonResult.model_validate(out)
    assert result.ok, result
    assert result.stdout.strip() == '{"damaged":105.0,"late":20.0}'

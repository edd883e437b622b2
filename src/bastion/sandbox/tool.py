"""The ``run_python`` tool: agents run analysis code in a sandbox they are given.

Owns: the tool's contract (input: code, text files, output globs; output: ``RunPythonResult``)
and its declaration (effect ``none``: the sandbox cannot touch the world; idempotent; a timeout
above the sandbox's own wall limit). Does not own a sandbox: the caller builds one (usually a
``NamespaceSandbox`` shared by the worker) and passes it in, so there is no global.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from bastion.sandbox._types import Finding, Limits, Sandbox
from bastion.sandbox.precheck import GuardedSandbox, PrecheckPolicy
from bastion.tools import Tool, ToolContext, tool

# Time to get a sandbox when none is warm, on top of the code's own wall limit.
_SPAWN_GRACE_SECONDS = 20.0


class RunPythonResult(BaseModel):
    """What the model gets back from ``run_python``."""

    ok: bool = Field(description="True when the code exited with status 0 within its limits.")
    exit_status: int | None = Field(description="The code's exit status; null if it was killed.")
    killed_reason: str | None = Field(
        description="Why it did not finish normally: wall_time, cpu_time, memory_limit, "
        "process_limit, output_limit, file_size_limit, disk_limit, signal, precheck."
    )
    stdout: str
    stderr: str
    output_truncated: bool = False
    files: dict[str, str] = Field(
        default_factory=dict, description="Returned output files (UTF-8 text)."
    )
    files_skipped: dict[str, str] = Field(default_factory=dict)
    findings: list[Finding] = Field(default_factory=list)


def run_python_tool(
    sandbox: Sandbox,
    *,
    limits: Limits | None = None,
    precheck: PrecheckPolicy | None = None,
    name: str = "run_python",
) -> Tool:
    """Declare ``run_python`` over ``sandbox``; register the result in the ``ToolRegistry``.

    The pre-check (block mode by default) refuses obvious misuse before it runs and tells the
    model why; isolation does not depend on it.
    """
    policy = precheck or PrecheckPolicy()
    runner: Sandbox = GuardedSandbox(sandbox, policy) if policy.mode != "off" else sandbox
    run_limits = limits or Limits()

    @tool(
        name=name,
        effect="none",
        idempotent=True,
        timeout=run_limits.wall_seconds + _SPAWN_GRACE_SECONDS,
    )
    async def run_python(
        ctx: ToolContext,
        code: str,
        files: dict[str, str] | None = None,
        outputs: list[str] | None = None,
    ) -> RunPythonResult:
        """Run Python 3 code in an isolated sandbox and get its output.

        The code runs as main.py in an empty working directory. `files` maps relative paths to
        text contents placed there first (e.g. a CSV from another tool); `outputs` are glob
        patterns of files the code writes that you want back. Print what you need to see.
        There is no network and no access to other systems. pandas and numpy are available
        when installed. Limits on time, memory, processes, output and disk apply.
        """
        given = {path: text.encode("utf-8") for path, text in (files or {}).items()}
        result = await runner.execute(code, files=given, outputs=outputs or (), limits=run_limits)
        ctx.logger.info(
            "run_python finished",
            extra={
                "run_id": ctx.run_id,
                "step_no": ctx.step_no,
                "exit_status": result.exit_status,
                "killed_reason": result.killed_reason,
            },
        )
        return RunPythonResult(
            ok=result.ok,
            exit_status=result.exit_status,
            killed_reason=result.killed_reason,
            stdout=result.stdout,
            stderr=result.stderr,
            output_truncated=result.stdout_truncated or result.stderr_truncated,
            files={k: v.decode("utf-8", errors="replace") for k, v in result.files.items()},
            files_skipped=result.files_skipped,
            findings=result.findings,
        )

    return run_python

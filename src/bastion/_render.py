"""Rendering runs, steps and dead letters for people (rich tables) and scripts (JSON).

Owns: how a run's timeline reads: one row per journaled step with its kind, name, status,
duration, attempts, short input and result, and any human decision or wait. ``bastion runs
show`` and ``bastion demo`` both print through ``render_run``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bastion.core.records import Run, RunStatus, Step, StepStatus
from bastion.governance.sealing import display
from bastion.store import DeadLetter


def short(value: Any, limit: int = 60) -> str:
    """A one-line preview of a JSON-ish value."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    text = " ".join(display(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _duration(step: Step) -> str:
    if step.finished_at is None:
        return "…"
    seconds = (step.finished_at - step.started_at).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


_STATUS_STYLE = {
    RunStatus.COMPLETED: "green",
    RunStatus.WAITING_FOR_HUMAN: "yellow",
    RunStatus.RUNNING: "cyan",
    RunStatus.PENDING: "cyan",
    RunStatus.FAILED: "red",
    RunStatus.DEAD_LETTER: "red",
    RunStatus.CANCELLED: "dim",
}


def _status(status: RunStatus) -> Text:
    return Text(status.value, style=_STATUS_STYLE.get(status, ""))


def runs_table(runs: list[Run], *, title: str = "runs") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("id", "agent", "tenant", "status", "steps", "tokens", "updated", "note"):
        table.add_column(
            column, overflow="fold", no_wrap=column in ("id", "run", "reason", "status")
        )
    for run in runs:
        note = ""
        if run.wait_reason is not None:
            note = f"{run.wait_reason.value} at step {run.waiting_step}"
        elif run.error:
            note = f"{run.error.get('code', '')}: {short(run.error.get('message'), 40)}"
        table.add_row(
            Text(run.id),
            Text(run.agent),
            Text(run.tenant),
            _status(run.status),
            str(run.next_step),
            str(run.usage.total_tokens),
            when(run.updated_at),
            Text(note),
        )
    return table


def _calls(output: Any) -> str:
    message = output.get("message", {}) if isinstance(output, dict) else {}
    calls = message.get("tool_calls") or []
    if calls:
        return "→ " + ", ".join(f"{c.get('name')}({short(c.get('arguments'), 70)})" for c in calls)
    return "→ " + short(message.get("content"), 90)


def _arguments(step: Step) -> Any:
    return step.input.get("arguments") if isinstance(step.input, dict) else step.input


def _detail(step: Step) -> Text:
    """What the step was about and how it ended, in one cell."""
    failed = step.error is not None and step.status is not StepStatus.COMPLETED
    match step.kind.value:
        case "model":
            text = _calls(step.output) if step.output is not None else ""
        case "tool":
            text = short(_arguments(step), 60)
            if step.output is not None:
                text += " → " + short(step.output, 60)
        case "approval":
            text = f"proposed {short(_arguments(step), 70)}"
        case _:
            text = short(step.output if step.output is not None else step.input, 90)
    if failed and step.error is not None:
        # An unknown outcome is a question for a person, not a failure.
        mark = "?" if step.status is StepStatus.OUTCOME_UNKNOWN else "✘"
        text += f" {mark} {step.error.get('code', 'error')}: {short(step.error.get('message'), 60)}"
    if step.decision is not None:
        d = step.decision
        text += f" ◆ {d.kind} by {d.by}" + (f": {d.reason}" if d.reason else "")
        if d.arguments is not None:
            text += f" args={short(d.arguments, 40)}"
    unknown = step.status is StepStatus.OUTCOME_UNKNOWN
    return Text(text, style="yellow" if unknown else "red" if failed else "")


def steps_table(run: Run, steps: list[Step], *, title: str = "steps", live: bool = True) -> Table:
    """One row per step; ``live`` marks the step the run waits at (not for archived steps)."""
    table = Table(title=title, title_justify="left", expand=True)
    for column in ("#", "kind", "name", "status", "time", "try"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for step in steps:
        status = Text(
            step.status.value,
            style={"completed": "green", "failed": "red", "outcome_unknown": "yellow"}.get(
                step.status.value, "cyan"
            ),
        )
        if live and run.waiting_step == step.step_no and run.wait_reason is not None:
            status = Text(f"waiting: {run.wait_reason.value}", style="yellow")
        table.add_row(
            str(step.step_no),
            step.kind.value,
            Text(step.name),
            status,
            _duration(step),
            str(step.attempts),
            _detail(step),
        )
    return table


def render_run(out: Console, run: Run, steps: list[Step], *, archived: int = 0) -> None:
    """The readable timeline of one run: a header, then one row per journaled step."""
    header = Text.assemble(
        ("run ", "bold"),
        (run.id, "bold"),
        "  agent ",
        run.agent,
        "  tenant ",
        run.tenant,
        "  status ",
        _status(run.status),
        f"  attempt {run.attempt}",
        f"  tokens {run.usage.total_tokens}",
    )
    out.print(header)
    out.print(Text(f"input:  {short(run.input, 100)}"))
    if run.output is not None:
        out.print(Text(f"output: {short(run.output, 100)}"))
    if run.wait_reason is not None:
        out.print(
            Text(
                f"waiting for a human: {run.wait_reason.value} at step {run.waiting_step}"
                f" ({short((run.error or {}).get('message'), 60)})",
                style="yellow",
            )
        )
    elif run.error:
        out.print(
            Text(
                f"error:  {run.error.get('code')}: {short(run.error.get('message'), 90)}",
                style="red",
            )
        )
    if run.lease_owner and run.status is RunStatus.RUNNING:
        out.print(Text(f"leased by {run.lease_owner} until {when(run.lease_expires_at)}"))
    out.print(steps_table(run, steps))
    if archived:
        out.print(
            f"({archived} steps archived by a replay: `bastion runs show {run.id} --archived`)"
        )


def run_json(run: Run, steps: list[Step]) -> dict[str, Any]:
    return {
        "run": run.model_dump(mode="json", exclude={"spec"}),
        "steps": [s.model_dump(mode="json") for s in steps],
    }


def dead_letter_json(dl: DeadLetter) -> dict[str, Any]:
    return {
        "run_id": dl.run_id,
        "seq": dl.seq,
        "tenant": dl.tenant,
        "agent": dl.agent,
        "step_no": dl.step_no,
        "error": dl.error,
        "created_at": dl.created_at,
        "resolved_at": dl.resolved_at,
        "resolution": dl.resolution,
    }

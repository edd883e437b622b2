"""The demo's evidence: its checks, and the closing summary of what ran where.

Owns: ``Checks`` (each invariant printed as it is checked; safety invariants fail the demo even
on a real model, the others only with the script) and ``summary``: which process executed each
model and tool step of the refund runs, the model calls per process, what the shop recorded,
and the final invariants.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bastion.app import Bastion
from bastion.core.records import Run, RunStatus
from bastion.demo.shop import Execution, Shop


class Checks:
    """The demo's invariants: printed as they are checked, remembered when they fail."""

    def __init__(self, out: Console, *, strict: bool) -> None:
        self._out = out
        self._strict = strict
        self.failed: list[str] = []
        #: Expectations a real model did not meet (not failures: it may take another path).
        self.missed: list[str] = []

    def expect(self, ok: bool, what: str, *, safety: bool = False) -> bool:
        if ok:
            self._out.print(Text.assemble(("  ✔ ", "green"), what))
        elif safety or self._strict:
            self._out.print(Text(f"  ✘ {what}", style="red"))
            self.failed.append(what)
        else:
            self.missed.append(what)
            note = f"  ~ not this time: {what} (the model chose otherwise)"
            self._out.print(Text(note, style="yellow"))
        return ok


def _executions_table(runs: list[Run], executions: dict[str, list[Execution]]) -> Table:
    table = Table(title="who executed each model and tool step", title_justify="left")
    for column in ("run", "step", "kind", "name", "executed by", "times"):
        table.add_column(column, no_wrap=column == "run")
    for run in runs:
        by_step: dict[int, list[Execution]] = {}
        for e in executions[run.id]:
            by_step.setdefault(e.step_no, []).append(e)
        for no, done in sorted(by_step.items()):
            who = ", ".join(f"{e.process} (pid {e.pid})" for e in done)
            table.add_row(Text(run.id), str(no), done[0].kind, done[0].name, who, str(len(done)))
    return table


def _shop_table(shop: Shop) -> Table:
    table = Table(title="what the shop recorded (shop.db)", title_justify="left")
    for column in ("table", "row", "idempotency key"):
        table.add_column(column)
    for r in shop.refunds():
        row = f"R-{r['id']}: {r['order_id']} ${r['amount']:.2f} ({r['reason']})"
        table.add_row("refunds", Text(row), Text(r["idempotency_key"]))
    for m in shop.outbox():
        row = f"to {m['recipient']}: {m['subject']}"
        table.add_row("outbox", Text(row), Text(m["idempotency_key"]))
    return table


async def summary(
    bastion: Bastion,
    shop: Shop,
    questions: list[Run],
    refund_runs: list[Run],
    crashed: dict[str, set[int]],
    checks: Checks,
    out: Console,
) -> None:
    out.print()
    out.rule(Text("Summary: what ran where, and what the shop saw", style="bold"), align="left")
    executions = {run.id: shop.executions(run.id) for run in refund_runs}
    out.print(_executions_table(refund_runs, executions))
    out.print("(steps not listed are approvals and validations: no model or tool call)")
    for run in refund_runs:
        calls = {e.process: 0 for e in executions[run.id]}
        for e in executions[run.id]:
            calls[e.process] += e.kind == "model"
        steps = await bastion.steps(run.id)
        model_steps = sum(1 for s in steps if s.kind.value == "model")
        per_process = ", ".join(f"{p}: {n}" for p, n in calls.items())
        out.print(
            f"run {run.id}: {model_steps} model steps in its journal, {sum(calls.values())} "
            f"model calls made ({per_process})"
        )
    out.print(_shop_table(shop))

    again = {
        (run_id, e.step_no)
        for run_id, finished in crashed.items()
        for e in executions.get(run_id, [])
        if e.process == "fresh worker" and e.step_no in finished
    }
    checks.expect(
        not again, "no step a dead worker had journaled as finished was executed again", safety=True
    )
    tool_runs = [
        (run_id, e.step_no) for run_id, done in executions.items() for e in done if e.kind == "tool"
    ]
    checks.expect(
        len(tool_runs) == len(set(tool_runs)),
        "no tool step was executed twice: every side effect happened at most once",
        safety=True,
    )
    refunds, emails = shop.refunds(), shop.outbox()
    keys = [r["idempotency_key"] for r in refunds] + [m["idempotency_key"] for m in emails]
    checks.expect(len(keys) == len(set(keys)), "no idempotency key was used twice", safety=True)
    made = sorted((r["order_id"], r["amount"]) for r in refunds)
    checks.expect(
        made == [("A-1002", 249.0), ("B-2001", 12.5)],
        "exactly one refund of $249.00 on A-1002 and one of $12.50 on B-2001",
    )
    senders = sorted(m["idempotency_key"].split(":")[0] for m in emails)
    checks.expect(senders == sorted(r.id for r in refund_runs), "exactly one email per refund run")
    once = True
    for run in refund_runs:
        steps = await bastion.steps(run.id)
        counts = [e.step_no for e in executions[run.id]]
        journaled = [s.step_no for s in steps if s.kind.value in ("model", "tool")]
        once = once and all(counts.count(no) == 1 for no in journaled)
    checks.expect(once, "every model and tool step was executed exactly once, across processes")
    done = all(r.status is RunStatus.COMPLETED for r in [*questions, *refund_runs])
    checks.expect(done, "every run completed")

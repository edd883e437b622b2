"""The driver of ``bastion demo``: four phases, each followed by the run's step timeline.

1. a question answered with a read tool (a completed run);
2. a refund above the approval threshold: the run waits, and "demo-reviewer" approves it;
3. a worker process resumes the run, issues the refund and is killed with SIGKILL right after;
4. once the dead worker's lease expires a fresh worker resumes the run from its journal.

Owns: the phases and the demo's own invariants (each refund and each email exactly once, no
journaled step executed twice, every run where it should be). With the scripted model every
expectation is checked; with a real model only the safety invariants fail the demo, since a
real model may choose another path. Returns whether everything held.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bastion.app import Bastion
from bastion.cli._render import render_run
from bastion.core.records import Run, RunStatus, StepStatus, WaitReason
from bastion.demo._setup import LEASE_SECONDS, SCRIPTED, Demo, Recorder, build_demo, is_scripted
from bastion.demo.agent import AGENT_NAME, REFUND_REQUEST, STATUS_QUESTION
from bastion.demo.shop import Shop
from bastion.demo.tools import APPROVAL_THRESHOLD

REVIEWER = "demo-reviewer"


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    directory: Path | None = None
    #: "provider:model"; None plays the script.
    model: str | None = None
    #: A bastion.yaml whose ``models`` section (providers, routes, retry) the demo uses.
    config: str | None = None


class Checks:
    """The demo's invariants: printed as they are checked, remembered when they fail."""

    def __init__(self, out: Console, *, strict: bool) -> None:
        self._out = out
        self._strict = strict
        self.failed: list[str] = []

    def expect(self, ok: bool, what: str, *, safety: bool = False) -> bool:
        if ok:
            self._out.print(Text.assemble(("  ✔ ", "green"), what))
        elif safety or self._strict:
            self._out.print(Text(f"  ✘ {what}", style="red"))
            self.failed.append(what)
        else:
            self._out.print(
                Text(f"  ~ not this time: {what} (the model chose otherwise)", style="yellow")
            )
        return ok


def run_demo(options: DemoOptions, *, env: Mapping[str, str], out: Console) -> bool:
    """Run the demo in ``options.directory`` (its shop.db and bastion.db are recreated) or in a
    temporary directory. True when every invariant held."""
    if options.directory is None:
        with tempfile.TemporaryDirectory(prefix="bastion-demo-") as tmp:
            return asyncio.run(_demo(Path(tmp), options, env, out))
    directory = options.directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("bastion.db", "bastion.db-wal", "bastion.db-shm"):
        (directory / name).unlink(missing_ok=True)
    return asyncio.run(_demo(directory, options, env, out))


async def _demo(
    directory: Path, options: DemoOptions, env: Mapping[str, str], out: Console
) -> bool:
    shop = Shop.create(directory / "shop.db")
    checks = Checks(out, strict=is_scripted(options.model))
    recorder = Recorder(shop, process="demo")
    demo = build_demo(
        directory, model=options.model, config=options.config, env=env, observer=recorder
    )
    model = options.model or f"{SCRIPTED} (a scripted conversation; no API key needed)"
    out.print(Text.assemble(("Bastion demo", "bold"), f": agent {AGENT_NAME!r} on {model}"))
    out.print(f"data in {directory} (bastion.db: the journal; shop.db: the shop)")
    async with demo.bastion as bastion:
        question = await _phase_question(bastion, checks, out)
        run = await _phase_approval(bastion, shop, checks, out)
        crashed: set[int] | None = None
        if run.status is RunStatus.PENDING:
            crashed = await _phase_crash(bastion, run, directory, options, env, checks, out)
            recorder.process = "fresh worker"
            run = await _phase_resume(bastion, run, checks, out)
        await _summary(bastion, demo, question, run, crashed, checks, out)
    if checks.failed:
        out.print(f"demo failed: {len(checks.failed)} check(s) did not hold", style="red bold")
        return False
    out.print("demo finished: every check held", style="green bold")
    return True


async def _show(bastion: Bastion, run_id: str, out: Console) -> Run:
    run = await bastion.get_run(run_id)
    render_run(out, run, await bastion.steps(run_id))
    return run


def _phase(out: Console, title: str) -> None:
    out.print()
    out.rule(Text(title, style="bold"), align="left")


async def _phase_question(bastion: Bastion, checks: Checks, out: Console) -> Run:
    _phase(out, "1. A question the agent answers with a read-only tool")
    out.print(f"customer: {STATUS_QUESTION}")
    run = await bastion.run(AGENT_NAME, STATUS_QUESTION)
    run = await _show(bastion, run.id, out)
    checks.expect(run.status is RunStatus.COMPLETED, "the run completed")
    tools = [s.name for s in await bastion.steps(run.id) if s.kind.value == "tool"]
    checks.expect(tools == ["search_orders"], "it called search_orders once")
    return run


async def _phase_approval(bastion: Bastion, shop: Shop, checks: Checks, out: Console) -> Run:
    _phase(out, f"2. A refund above ${APPROVAL_THRESHOLD:.2f} waits for a human")
    out.print(f"customer: {REFUND_REQUEST}")
    run = await bastion.run(AGENT_NAME, REFUND_REQUEST)
    run = await _show(bastion, run.id, out)
    waiting = run.status is RunStatus.WAITING_FOR_HUMAN
    approval = waiting and run.wait_reason is WaitReason.APPROVAL_REQUIRED
    checks.expect(approval, "the run is waiting for a human to approve the refund")
    checks.expect(not shop.refunds(), "no money has moved yet", safety=approval)
    if waiting:
        step = next(s for s in await bastion.steps(run.id) if s.step_no == run.waiting_step)
        out.print(
            f"⏸ run {run.id} is waiting for a human: {step.name} {step.input}", style="yellow"
        )
        run = await bastion.decide(
            run.id, "approve", reason="hopper cracked; photo on file", by=REVIEWER
        )
        out.print(f"✔ approved by {REVIEWER}: the run is {run.status.value} again", style="green")
    return run


async def _phase_crash(
    bastion: Bastion,
    run: Run,
    directory: Path,
    options: DemoOptions,
    env: Mapping[str, str],
    checks: Checks,
    out: Console,
) -> set[int]:
    """Returns the steps the journal held as completed when the worker died."""
    _phase(out, "3. A worker process takes the run over and is killed (SIGKILL) mid-run")
    args = [
        sys.executable,
        "-m",
        "bastion.demo._child",
        "--dir",
        str(directory),
        "--run-id",
        run.id,
    ]
    if options.model:
        args += ["--model", options.model]
    if options.config:
        args += ["--config", options.config]
    child = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
    )
    timeout = 120 if is_scripted(options.model) else 900
    output, _ = await asyncio.wait_for(child.communicate(), timeout=timeout)
    for line in output.decode(errors="replace").splitlines():
        out.print(Text.assemble(("  worker │ ", "dim"), line))
    killed = child.returncode == -signal.SIGKILL
    checks.expect(killed, f"the worker died by SIGKILL (exit status {child.returncode})")
    run = await _show(bastion, run.id, out)
    steps = await bastion.steps(run.id)
    done = {s.step_no for s in steps if s.status is StepStatus.COMPLETED}
    if killed:
        out.print(
            "the journal keeps every step the dead worker finished, including the refund; its "
            f"lease on the run expires {LEASE_SECONDS:.0f}s after its last renewal"
        )
    return done if killed else set()


async def _phase_resume(bastion: Bastion, run: Run, checks: Checks, out: Console) -> Run:
    _phase(out, "4. A fresh worker resumes the run from its journal")
    worker = bastion.worker(worker_id="demo-resumer")
    started = time.monotonic()
    deadline = started + LEASE_SECONDS + 30
    decisions = 0
    current = await bastion.get_run(run.id)
    while time.monotonic() < deadline:
        if current.status in (RunStatus.PENDING, RunStatus.RUNNING):
            resumed = await worker.run_once(run.id)
            if resumed is None:  # still leased by the dead worker
                await asyncio.sleep(0.2)
                continue
            if current.status is RunStatus.RUNNING:
                waited = time.monotonic() - started
                out.print(
                    f"the dead worker's lease expired: {worker.worker_id} claimed the run "
                    f"after waiting {waited:.1f}s"
                )
            current = resumed
        elif current.status is RunStatus.WAITING_FOR_HUMAN and decisions < 3:
            # Only a real model gets here: it may need a human more than once.
            decisions += 1
            current = await bastion.decide(run.id, "approve", reason="demo", by=REVIEWER)
        else:
            break
    current = await _show(bastion, run.id, out)
    checks.expect(current.status is RunStatus.COMPLETED, "the resumed run completed")
    return current


async def _summary(
    bastion: Bastion,
    demo: Demo,
    question: Run,
    run: Run,
    crashed: set[int] | None,
    checks: Checks,
    out: Console,
) -> None:
    _phase(out, "Summary: what ran where, and what the shop saw")
    shop = demo.shop
    executions = shop.executions(run.id)
    by_step: dict[int, list[str]] = {}
    for e in executions:
        by_step.setdefault(e.step_no, []).append(f"{e.process} (pid {e.pid})")
    kinds = {e.step_no: (e.kind, e.name) for e in executions}
    table = Table(title=f"who executed the refund run's steps ({run.id})", title_justify="left")
    for column in ("step", "kind", "name", "executed by", "times"):
        table.add_column(column)
    for no in sorted(by_step):
        kind, name = kinds[no]
        table.add_row(str(no), kind, name, ", ".join(by_step[no]), str(len(by_step[no])))
    out.print(table)
    out.print("(steps not listed are approvals and validations: no model or tool call)")
    calls = {e.process: 0 for e in executions}
    for e in executions:
        if e.kind == "model":
            calls[e.process] = calls.get(e.process, 0) + 1
    steps = await bastion.steps(run.id)
    model_steps = sum(1 for s in steps if s.kind.value == "model")
    per_process = ", ".join(f"{p}: {n}" for p, n in calls.items())
    out.print(
        f"model steps in its journal: {model_steps}; model calls made: "
        f"{sum(calls.values())} ({per_process})"
    )

    refunds = shop.refunds()
    emails = shop.outbox()
    shop_table = Table(title="what the shop saw (shop.db)", title_justify="left")
    for column in ("table", "row", "idempotency key"):
        shop_table.add_column(column)
    for r in refunds:
        row = f"{r['order_id']} ${r['amount']:.2f} ({r['reason']})"
        shop_table.add_row("refunds", row, r["idempotency_key"])
    for m in emails:
        shop_table.add_row("outbox", f"to {m['recipient']}: {m['subject']}", m["idempotency_key"])
    out.print(shop_table)

    if crashed is not None:
        again = {e.step_no for e in executions if e.process == "fresh worker"} & crashed
        what = "no step the dead worker had journaled as finished was executed again"
        checks.expect(not again, what, safety=True)
    keys = [r["idempotency_key"] for r in refunds] + [m["idempotency_key"] for m in emails]
    checks.expect(len(keys) == len(set(keys)), "no idempotency key was used twice", safety=True)
    checks.expect(
        len(refunds) <= 1 and all(r["order_id"] == "A-1002" for r in refunds),
        "at most one refund, for A-1002",
        safety=True,
    )
    mine = [r for r in refunds if r["idempotency_key"].startswith(f"{run.id}:")]
    checks.expect(len(mine) == 1 and mine[0]["amount"] == 249.00, "exactly one refund of $249.00")
    mail = [m for m in emails if m["idempotency_key"].startswith(f"{run.id}:")]
    checks.expect(len(mail) == 1, "exactly one confirmation email")
    journaled = [s.step_no for s in steps if s.kind.value in ("model", "tool")]
    once = all(len(by_step.get(no, [])) == 1 for no in journaled)
    checks.expect(once, "every model and tool step executed exactly once across both processes")
    checks.expect(question.status is RunStatus.COMPLETED, "the question's run completed")

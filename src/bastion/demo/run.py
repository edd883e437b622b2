"""The driver of ``bastion demo``: five phases, each followed by the run's step timeline.

1. a question answered with a read tool (a completed run);
2. a refund above the approval threshold: the run waits, and "demo-reviewer" approves it;
3. a worker process takes the run over, issues the refund, and is killed with SIGKILL right
   after, as the next step starts;
4. once the dead worker's lease expires, a fresh worker resumes the run from its journal: the
   steps the dead worker finished (the refund among them) are not executed again;
5. a worker is killed *inside* a refund call (the payment API took it; the journal has no
   result): the resumed run waits as "outcome unknown" instead of refunding twice, and
   "demo-operator" resolves it with the receipt the payment API holds under the step's key.

Owns: the phases and the demo's own invariants (each refund and email exactly once, no
journaled step executed twice, every run where it should be). With the scripted model every
expectation is checked; with a real model only the safety invariants fail the demo, since a
real model may choose another path. ``run_demo`` returns whether everything held.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.text import Text

from bastion._render import render_run
from bastion.app import Bastion
from bastion.core.errors import BastionError, SandboxError, UserError
from bastion.core.records import Run, RunStatus, StepStatus, WaitReason
from bastion.demo._report import Checks, summary
from bastion.demo._setup import (
    LEASE_SECONDS,
    SCRIPTED,
    KillPoint,
    Recorder,
    build_demo,
    is_scripted,
)
from bastion.demo.agent import (
    AGENT_NAME,
    PARTIAL_REFUND_REQUEST,
    REFUND_REQUEST,
    STATUS_QUESTION,
    SUMMARY_REQUEST,
)
from bastion.demo.shop import Shop
from bastion.demo.tools import APPROVAL_THRESHOLD
from bastion.sandbox import NamespaceSandbox

REVIEWER = "demo-reviewer"
OPERATOR = "demo-operator"


class DemoAborted(BastionError):
    code = "demo_aborted"
    default_hint = "Check the model name, its provider settings and its API key."


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    directory: Path | None = None
    #: "provider:model" or a route name; None plays the script.
    model: str | None = None
    #: A bastion.yaml whose ``models`` section (providers, routes, retry) the demo uses.
    config: str | None = None


def run_demo(options: DemoOptions, *, env: Mapping[str, str], out: Console) -> bool:
    """Run the demo in ``options.directory`` (its shop.db and bastion.db are recreated) or in a
    temporary directory. True when every invariant held."""
    if options.directory is None:
        with tempfile.TemporaryDirectory(prefix="bastion-demo-") as tmp:
            return asyncio.run(_demo(Path(tmp), options, env, out))
    directory = options.directory.resolve()
    _claim_directory(directory)
    for name in ("bastion.db", "bastion.db-wal", "bastion.db-shm"):
        (directory / name).unlink(missing_ok=True)
    return asyncio.run(_demo(directory, options, env, out))


#: The demo marks a directory it uses, and replaces only its own files there.
_MARK = ".bastion-demo"
_OWN = frozenset(
    {_MARK}
    | {f"{db}{suffix}" for db in ("bastion.db", "shop.db") for suffix in ("", "-wal", "-shm")}
    | {"bastion.db.key"}
)


def _claim_directory(directory: Path) -> None:
    """Use ``directory`` for the demo: a new or empty one, or one an earlier demo used. A
    directory holding anything else is refused: the demo recreates its databases there."""
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is not a directory", hint="Pass a new or empty directory.")
    present = {p.name for p in directory.iterdir()} if directory.exists() else set()
    foreign = sorted(present - _OWN)
    if present and (_MARK not in present or foreign):
        shown = ", ".join(foreign[:5] or sorted(present)[:5])
        raise UserError(
            f"{directory} holds files the demo did not create ({shown}); the demo recreates "
            "its databases in its directory, so it will not use this one",
            hint="Pass a new or empty directory, or leave out --dir to use a temporary one.",
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _MARK).write_text("a directory of `bastion demo`; its files are recreated\n")


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
        driver = _Driver(
            bastion=bastion,
            shop=shop,
            recorder=recorder,
            checks=checks,
            out=out,
            directory=directory,
            options=options,
            env=env,
        )
        question = await driver.question()
        approved = await driver.approval()
        crashed: dict[str, set[int]] = {}
        if approved.status is RunStatus.PENDING:
            crashed[approved.id] = await driver.crash(approved, "after", _PHASE_3)
            approved = await driver.resume(approved, _PHASE_4)
        unknown = await driver.outcome_unknown(crashed)
        await summary(bastion, shop, [question], [approved, unknown], crashed, checks, out)
        await driver.analysis(demo.sandbox)
    if checks.failed:
        out.print(f"demo failed: {len(checks.failed)} check(s) did not hold", style="red bold")
        return False
    if checks.missed:
        out.print(
            f"demo finished: every safety check held; the model took another path than the "
            f"script in {len(checks.missed)} place(s)",
            style="green bold",
        )
    else:
        out.print("demo finished: every check held", style="green bold")
    return True


_PHASE_3 = "3. A worker process takes the run over and is killed (SIGKILL) after the refund"
_PHASE_4 = "4. A fresh worker resumes the run from its journal"
_PHASE_5 = "5. A worker is killed inside a refund call: the outcome is unknown"


@dataclass(kw_only=True)
class _Driver:
    bastion: Bastion
    shop: Shop
    recorder: Recorder
    checks: Checks
    out: Console
    directory: Path
    options: DemoOptions
    env: Mapping[str, str]
    #: Every human wait the demo answered, as (run id, reason).
    waits: list[tuple[str, WaitReason]] = field(default_factory=list)

    def phase(self, title: str) -> None:
        self.out.print()
        self.out.rule(Text(title, style="bold"), align="left")

    async def show(self, run_id: str) -> Run:
        run = await self.bastion.get_run(run_id)
        render_run(self.out, run, await self.bastion.steps(run_id))
        return run

    async def question(self) -> Run:
        self.phase("1. A question the agent answers with a read-only tool")
        self.out.print(f"customer: {STATUS_QUESTION}")
        run = await self.bastion.run(AGENT_NAME, STATUS_QUESTION)
        run = await self.show(run.id)
        error = run.error or {}
        if run.status is RunStatus.DEAD_LETTER and str(error.get("code")).startswith(
            ("provider", "circuit")
        ):
            # Nothing after this can work: say why once, instead of five failed phases.
            raise DemoAborted(
                f"the model did not answer: {error.get('code')}: {error.get('message')}",
                hint=error.get("hint") or None,
            )
        self.checks.expect(run.status is RunStatus.COMPLETED, "the run completed")
        tools = [s.name for s in await self.bastion.steps(run.id) if s.kind.value == "tool"]
        self.checks.expect(tools == ["search_orders"], "it called search_orders once")
        return run

    async def approval(self) -> Run:
        self.phase(f"2. A refund above ${APPROVAL_THRESHOLD:.2f} waits for a human")
        self.out.print(f"customer: {REFUND_REQUEST}")
        run = await self.bastion.run(AGENT_NAME, REFUND_REQUEST)
        run = await self.show(run.id)
        approval = run.wait_reason is WaitReason.APPROVAL_REQUIRED
        self.checks.expect(approval, "the run is waiting for a human to approve the refund")
        self.checks.expect(not self.shop.refunds(), "no money has moved yet", safety=approval)
        if run.status is RunStatus.WAITING_FOR_HUMAN:
            run = await self.decide(run)
        return run

    async def decide(self, run: Run) -> Run:
        """The demo's humans: a reviewer approves what waits for approval (or anything a real
        model got stuck on); an operator answers "outcome unknown" from the shop's records."""
        step = next(s for s in await self.bastion.steps(run.id) if s.step_no == run.waiting_step)
        reason = run.wait_reason.value if run.wait_reason else "?"
        if run.wait_reason is not None:
            self.waits.append((run.id, run.wait_reason))
        proposed = step.input.get("arguments") if isinstance(step.input, dict) else step.input
        self.out.print(
            f"⏸ run {run.id} is waiting for a human ({reason}): "
            f"{step.name}({json.dumps(proposed)})",
            style="yellow",
        )
        if run.wait_reason is not WaitReason.OUTCOME_UNKNOWN:
            run = await self.bastion.decide(
                run.id, "approve", reason="hopper cracked; photo on file", by=REVIEWER
            )
            self.out.print(
                f"✔ approved by {REVIEWER}: the run is {run.status.value}", style="green"
            )
            return run
        key = step.idempotency_key
        self.out.print(f"{OPERATOR} asks the payment API about idempotency key {key}")
        row = self.shop.refund_by_key(key)
        if row is None:  # it never happened: running it again is safe
            run = await self.bastion.decide(run.id, "approve", reason="no such refund", by=OPERATOR)
            self.out.print(f"✔ no refund under that key: {OPERATOR} lets the step run again")
            return run
        receipt = {
            "refund_id": f"R-{row['id']}",
            "order_id": row["order_id"],
            "amount": row["amount"],
            "idempotency_key": key,
        }
        run = await self.bastion.decide(
            run.id,
            "resolve",
            output=receipt,
            reason=f"the payment API shows refund R-{row['id']} under this key",
            by=OPERATOR,
        )
        self.out.print(
            f"✔ refund R-{row['id']} exists: {OPERATOR} resolves the step with its receipt "
            f"instead of refunding again; the run is {run.status.value}",
            style="green",
        )
        return run

    async def crash(
        self, run: Run, kill: KillPoint, title: str, *, intro: str | None = None
    ) -> set[int]:
        """Execute ``run`` in a worker process that SIGKILLs itself at ``kill``. Returns the
        steps the journal held as finished when it died."""
        self.phase(title)
        if intro:
            self.out.print(intro)
        args = [sys.executable, "-m", "bastion.demo._child", "--dir", str(self.directory)]
        args += ["--run-id", run.id, "--kill", kill]
        if self.options.model:
            args += ["--model", self.options.model]
        if self.options.config:
            args += ["--config", self.options.config]
        child = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(self.env),
        )
        timeout = 120 if is_scripted(self.options.model) else 900
        output, _ = await asyncio.wait_for(child.communicate(), timeout=timeout)
        for line in output.decode(errors="replace").splitlines():
            self.out.print(Text.assemble(("  worker │ ", "dim"), line))
        killed = child.returncode == -signal.SIGKILL
        self.checks.expect(killed, f"the worker died by SIGKILL (exit status {child.returncode})")
        await self.show(run.id)
        if killed:
            self.out.print(
                "the journal keeps every step the dead worker finished; its lease on the run "
                f"expires {LEASE_SECONDS:.0f}s after its last renewal"
            )
        steps = await self.bastion.steps(run.id)
        return {s.step_no for s in steps if s.status is not StepStatus.STARTED} if killed else set()

    async def resume(self, run: Run, title: str | None) -> Run:
        """Carry ``run`` to its end here: wait out a dead worker's lease, execute, and answer
        every human wait through ``decide``."""
        if title:
            self.phase(title)
        self.recorder.process = "fresh worker"
        worker = self.bastion.worker(worker_id="demo-resumer")
        started = time.monotonic()
        deadline = started + LEASE_SECONDS + 30
        decisions = 0
        current = await self.bastion.get_run(run.id)
        while time.monotonic() < deadline:
            if current.status in (RunStatus.PENDING, RunStatus.RUNNING):
                resumed = await worker.run_once(run.id)
                if resumed is None:  # still leased by the dead worker
                    await asyncio.sleep(0.2)
                    continue
                if current.status is RunStatus.RUNNING:
                    self.out.print(
                        f"the dead worker's lease expired: {worker.worker_id} claimed the run "
                        f"after waiting {time.monotonic() - started:.1f}s"
                    )
                current = resumed
            elif current.status is RunStatus.WAITING_FOR_HUMAN and decisions < 4:
                decisions += 1
                await self.show(run.id)
                current = await self.decide(current)
            else:
                break
        self.recorder.process = "demo"
        current = await self.show(run.id)
        self.checks.expect(current.status is RunStatus.COMPLETED, "the resumed run completed")
        return current

    async def outcome_unknown(self, crashed: dict[str, set[int]]) -> Run:
        run = await self.bastion.submit(AGENT_NAME, PARTIAL_REFUND_REQUEST)
        intro = f"customer: {PARTIAL_REFUND_REQUEST}"
        crashed[run.id] = await self.crash(run, "during", _PHASE_5, intro=intro)
        run = await self.resume(run, None)
        self.checks.expect(
            (run.id, WaitReason.OUTCOME_UNKNOWN) in self.waits,
            "the resumed run waited for a human instead of calling issue_refund again",
        )
        return run

    async def analysis(self, sandbox: NamespaceSandbox) -> None:
        """Phase 6: the agent analyses the refunds with pandas in the sandbox (run_python)."""
        self.phase("6. The agent computes a refund summary with pandas, in the sandbox")
        self.out.print(f"operator: {SUMMARY_REQUEST}")
        try:
            await sandbox.start()
        except SandboxError as exc:
            # The host lacks an isolation layer: the sandbox fails closed, and so does the phase.
            self.checks.expect(False, f"the sandbox starts on this host ({exc})", safety=True)
            return
        try:
            run = await self.bastion.run(AGENT_NAME, SUMMARY_REQUEST)
            run = await self.show(run.id)
        finally:
            await sandbox.aclose()
        steps = await self.bastion.steps(run.id)
        ran = [s for s in steps if s.name == "run_python" and s.status is StepStatus.COMPLETED]
        result = ran[0].output if ran else None
        self.checks.expect(
            isinstance(result, dict) and bool(result.get("ok")),
            "run_python executed the analysis in the sandbox",
        )
        self.checks.expect(
            run.status is RunStatus.COMPLETED and "refunds" in str(run.output),
            f"the agent reported: {run.output}",
        )

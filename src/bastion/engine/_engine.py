"""The engine: submits runs, executes claimed runs to their next stop, and applies human and
operator actions (decide, replay, cancel).

Owns: run status transitions and what each outcome of an execution means for the run row
(completed, waiting for a human, failed, dead letter, released). Does not own the phases of a
step (``_loop``/``_plan``), claiming policy (``_worker``) or persistence (``store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bastion.core.errors import (
    AgentNotFound,
    BastionError,
    BudgetExceeded,
    ConcurrentUpdate,
    InvalidState,
    LeaseLost,
    MaxTurnsExceeded,
    OutputValidationFailed,
    PolicyDenied,
    RunCancelled,
    RunTimeout,
    StoreError,
    ToolArgumentsInvalid,
    UserError,
)
from bastion.core.ids import new_id
from bastion.core.records import (
    Decision,
    Run,
    RunStatus,
    Step,
    StepKind,
    StepStatus,
    WaitReason,
)
from bastion.engine._agent import Agent
from bastion.engine._journal import CANCELLED, SHUTDOWN, Journal, StepObserver, StopSignal
from bastion.engine._loop import Complete, LoopDeps, RunExecution, Sleep
from bastion.engine._plan import run_plan_mode
from bastion.engine._spec import MIGRATION
from bastion.engine._suspend import Suspend
from bastion.governance.guards import GuardPipeline
from bastion.store import Store
from bastion.tools._invoke import validate_arguments

log = logging.getLogger("bastion.engine")

#: Outcomes that are the agent's own failure: final, replayable only by an operator's choice.
_FAILED = (MaxTurnsExceeded, RunTimeout, BudgetExceeded, PolicyDenied, OutputValidationFailed)


@dataclass(kw_only=True, frozen=True)
class EngineOptions:
    lease_seconds: float = 30.0
    #: How often an executing worker checks that it still holds its lease (and renews it
    #: every third of ``lease_seconds``).
    watch_interval: float = 1.0
    #: How often the engine looks for cancellations of the runs it executes (one query for
    #: all of them); a cancel from this process is seen at once.
    cancel_poll_interval: float = 0.05
    #: On shutdown, how long an execution may take to reach its next phase boundary (a tool
    #: that may change the world is let finish) before it is abandoned.
    shutdown_grace: float = 10.0


@dataclass(kw_only=True)
class _Active:
    """An execution in progress in this engine."""

    owner: str
    stop: StopSignal
    body: asyncio.Future[None]


@dataclass(kw_only=True)
class Engine:
    store: Store
    complete: Complete
    agents: Mapping[str, Agent]
    options: EngineOptions = field(default_factory=EngineOptions)
    observer: StepObserver | None = None
    #: Guards at the run's trust boundaries; None runs without them.
    guards: GuardPipeline | None = None
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    #: Earlier versions of agents still deployed, by ``spec_digest``: a run started against
    #: one of them executes on it (a version pin) instead of on the current definition.
    versions: Mapping[str, Agent] = field(default_factory=dict)
    _active: dict[str, _Active] = field(default_factory=dict, init=False, repr=False)
    _poller: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    # ---- submitting and reading ---------------------------------------------------------

    def agent(self, name: str) -> Agent:
        try:
            return self.agents[name]
        except KeyError:
            raise AgentNotFound(f"no agent named {name!r}", known=sorted(self.agents)) from None

    async def submit(
        self, agent: str, input: Any, *, tenant: str = "default", run_id: str | None = None
    ) -> Run:
        definition = self.agent(agent)
        if input is None or input == "":
            raise UserError("a run needs an input", hint="Pass the task as text or a JSON object.")
        now = datetime.now(UTC)
        run = Run(
            id=run_id or new_id("run"),
            tenant=tenant,
            agent=definition.name,
            input=input,
            spec=definition.spec(),
            spec_digest=definition.spec_digest(),
            created_at=now,
            updated_at=now,
        )
        return await self.store.create_run(run)

    async def get_run(self, run_id: str) -> Run:
        return await self.store.get_run(run_id)

    async def get_steps(self, run_id: str) -> list[Step]:
        await self.store.get_run(run_id)
        return await self.store.get_steps(run_id)

    # ---- executing ----------------------------------------------------------------------

    async def execute(self, run: Run, *, owner: str) -> Run:
        """Carry a run claimed by ``owner`` to its next stop and return the run as stored."""
        try:
            agent = self.versions.get(run.spec_digest) or self.agent(run.agent)
        except AgentNotFound as exc:
            # The agent left this deployment: park the run where an operator sees it (and can
            # replay it once the agent is back) rather than failing the worker's claim loop.
            log.error("run %s: %s", run.id, exc)
            error = exc.to_dict()
            with contextlib.suppress(ConcurrentUpdate, LeaseLost):
                await self.store.commit(
                    run.id,
                    expected_version=run.version,
                    owner=owner,
                    changes={
                        "status": RunStatus.DEAD_LETTER,
                        "error": error,
                        "lease_owner": None,
                        "lease_expires_at": None,
                    },
                    dead_letter_error=error,
                )
            return await self.store.get_run(run.id)
        recorded = await self.store.get_steps(run.id)
        stop = StopSignal()
        journal = Journal(
            self.store,
            run,
            recorded,
            owner=owner,
            lease_seconds=self.options.lease_seconds,
            observer=self.observer,
            stop=stop,
        )
        execution = RunExecution(
            agent,
            run,
            journal,
            LoopDeps(complete=self.complete, sleep=self.sleep, rng=self.rng, guards=self.guards),
        )
        body = asyncio.ensure_future(self._drive(agent, execution))
        self._active[run.id] = _Active(owner=owner, stop=stop, body=body)
        self._ensure_poller()
        watcher = asyncio.ensure_future(self._watch(journal, body))
        try:
            await asyncio.shield(body)
        except asyncio.CancelledError:
            if not body.done():
                # Our own caller is shutting down: stop at the next phase boundary (a call that
                # may change the world finishes and is journaled), then hand the run back.
                stop.set(SHUTDOWN)
                done, _ = await asyncio.wait({body}, timeout=self.options.shutdown_grace)
                if not done:
                    log.warning(
                        "run %s: abandoned at shutdown after %ss",
                        run.id,
                        self.options.shutdown_grace,
                    )
                    body.cancel()
                    with contextlib.suppress(BaseException):
                        await body
                    await self._release(journal)
                raise
            # The watcher stopped the run: another worker took it over.
        except (ConcurrentUpdate, LeaseLost) as lost:
            # Writing the run's outcome lost a race: the stored run is the truth; the journal
            # already holds every step that was acted on.
            log.warning("run %s: final write lost a race: %s", run.id, lost)
        finally:
            self._active.pop(run.id, None)
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        return await self.store.get_run(run.id)

    async def _drive(self, agent: Agent, execution: RunExecution) -> None:
        journal = execution.journal
        run_id = execution.run.id
        idle = {"lease_owner": None, "lease_expires_at": None}
        try:
            if agent.mode == "plan":
                output = await run_plan_mode(execution)
            else:
                output = await execution.react()
            await journal.flush(
                status=RunStatus.COMPLETED,
                ended_at=time.time(),
                output=output,
                error=None,
                wait_reason=None,
                waiting_step=None,
                **idle,
            )
        except Suspend as wait:
            log.info("run %s waits for a human: %s", run_id, wait)
            await journal.flush(
                status=RunStatus.WAITING_FOR_HUMAN,
                wait_reason=wait.reason,
                waiting_step=wait.step_no,
                error={"code": wait.reason.value, "message": wait.detail},
                **idle,
            )
        except RunCancelled as stopped:
            if stopped.reason == SHUTDOWN:
                log.info("run %s: handed back at shutdown", run_id)
                await self._release(journal)
            else:
                log.info("run %s: stopped, it was cancelled", run_id)
                # The run is cancelled already; write what the journal still holds.
                await journal.flush(**idle)
        except (ConcurrentUpdate, LeaseLost) as lost:
            log.warning("run %s: stopped, another writer took over: %s", run_id, lost)
        except StoreError as exc:
            log.error("run %s: store failed, its lease will expire and it resumes: %s", run_id, exc)
        except _FAILED as exc:
            await journal.flush(
                status=RunStatus.FAILED, ended_at=time.time(), error=exc.to_dict(), **idle
            )
        except BastionError as exc:
            await journal.flush(status=RunStatus.DEAD_LETTER, error=exc.to_dict(), **idle)
        except Exception as exc:  # an unexpected bug: keep the run, with the evidence
            log.exception("run %s: unexpected error", run_id)
            error = {
                "code": "internal_error",
                "message": f"{type(exc).__name__}: {exc}",
                "hint": "This is a bug in Bastion or a tool; the traceback is kept with the run.",
                "details": {"traceback": traceback.format_exc(limit=20)},
            }
            await journal.flush(status=RunStatus.DEAD_LETTER, error=error, **idle)

    async def _watch(self, journal: Journal, body: asyncio.Future[None]) -> None:
        """Renew the lease well before it expires; stop the run at once if another worker took
        it over (this one's lease ran out: its writes would be refused anyway)."""
        interval = min(self.options.watch_interval, self.options.lease_seconds / 3)
        renew_every = self.options.lease_seconds / 3
        last_renew = time.monotonic()
        while not body.done():
            await asyncio.sleep(interval)
            try:
                current = await self.store.get_run(journal.run_id)
                if current.lease_owner not in (None, journal.owner):
                    body.cancel()
                    return
                if current.status is RunStatus.CANCELLED:
                    journal.stop.set(CANCELLED)
                elif time.monotonic() - last_renew >= renew_every:
                    await journal.renew_lease()
                    last_renew = time.monotonic()
            except LeaseLost:
                body.cancel()
                return
            except ConcurrentUpdate:
                continue  # a cancel landed; the next look sees it
            except StoreError as exc:
                log.warning("run %s: lease check failed: %s", journal.run_id, exc)
            except Exception:  # never let the lease go unrenewed because of one bad look
                log.exception("run %s: lease watcher error; it goes on", journal.run_id)

    async def aclose(self) -> None:
        """Stop the engine's background work (the cancellation poll); the store stays open."""
        poller, self._poller = self._poller, None
        if poller is not None and not poller.done():
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll_cancellations())

    async def _poll_cancellations(self) -> None:
        """While this engine executes runs, look every ``cancel_poll_interval`` for those
        cancelled from elsewhere (another process, the CLI) and stop them."""
        while self._active:
            await asyncio.sleep(self.options.cancel_poll_interval)
            ids = list(self._active)
            try:
                cancelled = await self.store.cancelled_among(ids)
            except StoreError as exc:
                log.warning("cancellation check failed: %s", exc)
                continue
            except Exception:  # the poll must outlive one bad answer
                log.exception("cancellation check failed; it goes on")
                continue
            for run_id in cancelled:
                active = self._active.get(run_id)
                if active is not None:
                    active.stop.set(CANCELLED)

    async def _release(self, journal: Journal) -> None:
        with contextlib.suppress(StoreError):
            await journal.flush(status=RunStatus.PENDING, lease_owner=None, lease_expires_at=None)

    # ---- people and operators -----------------------------------------------------------

    async def decide(self, run_id: str, decision: Decision) -> Run:
        """Apply a human decision to a waiting run; the run goes back to the queue."""
        run = await self.store.get_run(run_id)
        if run.status is not RunStatus.WAITING_FOR_HUMAN or run.waiting_step is None:
            raise InvalidState(
                f"run {run_id} is {run.status.value}, not waiting for a human",
                hint="Only runs listed by `bastion review list` take decisions.",
            )
        steps = {s.step_no: s for s in await self.store.get_steps(run_id)}
        step = steps.get(run.waiting_step)
        if step is None or not step.status.open:
            raise InvalidState(f"run {run_id} has no open step {run.waiting_step} to decide")
        _check_decision(run, step, decision)
        # Output and guard reviews are edited with a text (``output``), not call arguments; a
        # guard review of a tool call's arguments takes the corrected arguments (checked against
        # the tool when the run resumes, where the call is known).
        editing_call = run.wait_reason not in (WaitReason.OUTPUT_REVIEW, WaitReason.GUARD_REVIEW)
        if decision.kind == "edit" and decision.arguments is not None and editing_call:
            self._check_edited_arguments(run, step, decision.arguments)
        await self.store.commit(
            run_id,
            expected_version=run.version,
            changes={
                "status": RunStatus.PENDING,
                "wait_reason": None,
                "waiting_step": None,
                "error": None,
            },
            steps_to_write=[step.model_copy(update={"decision": decision})],
        )
        return await self.store.get_run(run_id)

    def _check_edited_arguments(self, run: Run, step: Step, arguments: dict[str, Any]) -> None:
        """A reviewer's edited arguments are checked now, so a typo is refused to the reviewer
        instead of failing the run when it resumes."""
        agent = self.agents.get(run.agent)
        if agent is None:
            return
        name = step.name.removeprefix("refuse:") if step.kind is StepKind.VALIDATION else step.name
        tool = agent.tool(name)
        if tool is None:
            raise UserError(f"step {step.step_no} calls no tool of agent {agent.name!r} to edit")
        try:
            validate_arguments(tool, arguments)
        except ToolArgumentsInvalid as exc:
            raise UserError(
                f"the edited {exc.message}", hint="Correct the arguments and decide again."
            ) from None

    async def replay(
        self,
        run_id: str,
        *,
        from_step: int | None = None,
        arguments: dict[str, Any] | None = None,
        repeat_effects: bool = False,
    ) -> Run:
        """Send a dead-lettered or failed run back to the queue, re-executing from ``from_step``
        (default: the step that failed). Steps from there on are archived, not deleted.
        ``arguments`` replaces the tool arguments of the tool step at ``from_step``.

        Calls of non-idempotent tools from ``from_step`` on that may already have acted are
        never made again silently: the replay is refused unless ``repeat_effects`` is given, and
        then each such call, when the replayed run makes it again, waits for a person first
        (``outcome_unknown``: resolve, approve to call again, or reject)."""
        run = await self.store.get_run(run_id)
        if run.status not in (RunStatus.DEAD_LETTER, RunStatus.FAILED):
            raise InvalidState(
                f"run {run_id} is {run.status.value}; only dead_letter or failed runs replay"
            )
        recorded = await self.store.get_steps(run_id)
        if from_step is None:
            failed = [s.step_no for s in recorded if s.status is not StepStatus.COMPLETED]
            from_step = failed[0] if failed else len(recorded)
        if from_step < 0 or from_step > len(recorded):
            raise UserError(
                f"run {run_id} has steps 0..{len(recorded) - 1}; cannot replay from {from_step}"
            )
        if arguments is not None:
            target = recorded[from_step] if from_step < len(recorded) else None
            if target is None or target.kind is not StepKind.TOOL:
                raise UserError(
                    f"step {from_step} of run {run_id} is not a tool call; only a tool step "
                    "takes edited arguments"
                )
            self._check_edited_arguments(run, target, arguments)
        effects = _effects_from(run, recorded, from_step)
        if effects and not repeat_effects:
            calls = ", ".join(f"step {no} ({name})" for no, name in effects.items())
            raise UserError(
                f"replaying run {run_id} from step {from_step} could repeat calls that may "
                f"already have acted: {calls}",
                hint="Check the outside systems first. To replay anyway, pass "
                "repeat_effects=True (CLI: --repeat-effects): each of these calls then waits "
                "for a person before it is made again.",
                effects=effects,
            )
        # Edited arguments belong to the steps they were given for; those from ``from_step``
        # on are archived now, and the same numbers may hold other calls after this replay.
        overrides = {k: v for k, v in run.overrides.items() if int(k) < from_step}
        if arguments is not None:
            overrides[str(from_step)] = arguments
        confirm = {k: v for k, v in run.confirm_steps.items() if int(k) < from_step}
        confirm.update(effects)
        await self.store.commit(
            run_id,
            expected_version=run.version,
            changes={
                "status": RunStatus.PENDING,
                "error": None,
                "output": None,
                "next_step": from_step,
                "overrides": overrides,
                "confirm_steps": confirm,
                "ended_at": None,
                "lease_owner": None,
                "lease_expires_at": None,
            },
            archive_from=from_step,
        )
        await self.store.resolve_dead_letters(run_id, "replayed")
        return await self.store.get_run(run_id)

    async def migrate(
        self,
        run_id: str,
        *,
        by: str = "operator",
        reason: str = "",
        repeat_effects: bool = False,
    ) -> Run:
        """Move a run to its agent's current definition: a deliberate, journaled upgrade.

        Writes a ``note`` step (``spec_migrated``) naming the new spec (and keeping the old
        one) at the run's first unfinished step; steps before it replay as recorded, steps from
        it on use the new instructions, tools and limits. Unfinished steps are archived and
        asked again (as a replay would), so calls that may have acted need ``repeat_effects``
        and then wait for a person. The run goes back to the queue."""
        run = await self.store.get_run(run_id)
        agent = self.agent(run.agent)
        new_spec, new_digest = agent.spec(), agent.spec_digest()
        if new_digest == run.spec_digest:
            raise InvalidState(f"run {run_id} already uses the current definition of {agent.name}")
        steps = await self.store.get_steps(run_id)
        at = _migratable(run, steps)
        effects = _effects_from(run, steps, at)
        if effects and not repeat_effects:
            raise UserError(
                f"moving run {run_id} redoes step {at} on, which could repeat calls that may "
                f"already have acted: {', '.join(f'{k} ({v})' for k, v in effects.items())}",
                hint="Check the outside systems, then pass repeat_effects=True "
                "(CLI: --repeat-effects): each such call waits for a person first.",
            )
        now = datetime.now(UTC)
        note = Step(
            run_id=run_id,
            step_no=at,
            kind=StepKind.NOTE,
            name=MIGRATION,
            status=StepStatus.COMPLETED,
            input={"spec": new_spec, "digest": new_digest, "by": by, "reason": reason},
            input_hash=new_digest,
            output={"previous": run.spec, "previous_digest": run.spec_digest},
            started_at=now,
            finished_at=now,
        )
        confirm = {k: v for k, v in run.confirm_steps.items() if int(k) < at}
        # Steps after the note keep their numbers shifted by one: the code's next step is at+1.
        confirm.update({str(int(k) + 1): v for k, v in effects.items()})
        await self.store.commit(
            run_id,
            expected_version=run.version,
            changes={
                "spec": new_spec,
                "spec_digest": new_digest,
                "next_step": at + 1,
                "status": RunStatus.PENDING,
                "error": None,
                "output": None,
                "wait_reason": None,
                "waiting_step": None,
                "ended_at": None,
                "confirm_steps": confirm,
                "overrides": {k: v for k, v in run.overrides.items() if int(k) < at},
            },
            steps_to_write=[note],
            archive_from=at if at < len(steps) else None,
        )
        await self.store.resolve_dead_letters(run_id, "migrated")
        log.info("run %s moved to %s's current definition by %s", run_id, agent.name, by)
        return await self.store.get_run(run_id)

    async def cancel(self, run_id: str, *, reason: str = "cancelled by operator") -> Run:
        """Cancel a run that has not finished. A worker executing it stops at its next phase
        boundary (within ``cancel_poll_interval``; at once in this process): a model call or a
        read-only tool in flight is abandoned, a tool that may change the world finishes and
        its end is journaled. That worker keeps the lease until it has written its journal."""
        for _ in range(10):
            run = await self.store.get_run(run_id)
            if run.status.terminal:  # completed, failed (replay only) or cancelled
                raise InvalidState(f"run {run_id} is already {run.status.value}")
            changes: dict[str, Any] = {
                "status": RunStatus.CANCELLED,
                "error": {"code": "cancelled", "message": reason},
                "wait_reason": None,
                "waiting_step": None,
                "ended_at": time.time(),
            }
            if not _executing(run):
                changes.update(lease_owner=None, lease_expires_at=None)
            try:
                await self.store.commit(run_id, expected_version=run.version, changes=changes)
            except ConcurrentUpdate:
                continue
            active = self._active.get(run_id)
            if active is not None:
                active.stop.set(CANCELLED)
            await self.store.resolve_dead_letters(run_id, "cancelled")
            return await self.store.get_run(run_id)
        raise ConcurrentUpdate(f"run {run_id} kept changing; try cancelling again")


def _migratable(run: Run, steps: list[Step]) -> int:
    """Check that ``run`` may move to another spec now; returns the step where it moves: the
    first step that did not complete. That step and any after it are asked again under the new
    spec (a model call, an approval or review given for the old definition, a failed call), so
    they are archived. An open tool step is an effect whose outcome a person must settle first."""
    if run.status not in (RunStatus.PENDING, RunStatus.DEAD_LETTER, RunStatus.FAILED):
        raise InvalidState(
            f"run {run.id} is {run.status.value}; only pending, dead-lettered or failed runs "
            "move to another definition",
            hint="Cancel or decide a waiting run first; for a running one, wait for its stop.",
        )
    for step in steps:
        if step.status.open and step.kind is StepKind.TOOL:
            raise InvalidState(
                f"run {run.id} has a tool call at step {step.step_no} ({step.name!r}) whose "
                "outcome is not settled; resolve it before moving the run",
            )
    unfinished = [s.step_no for s in steps if s.status is not StepStatus.COMPLETED]
    return unfinished[0] if unfinished else len(steps)


def _executing(run: Run) -> bool:
    """A worker holds the run under a lease that has not run out."""
    expires = run.lease_expires_at
    return (
        run.status is RunStatus.RUNNING
        and run.lease_owner is not None
        and expires is not None
        and expires.timestamp() > time.time()
    )


def _effects_from(run: Run, recorded: list[Step], from_step: int) -> dict[str, str]:
    """``{step_no: tool}`` of the calls from ``from_step`` on that a replay would make again
    and that may have acted: non-idempotent tools (as the run's spec declares them) whose step
    did not fail before its effect (a ``ToolError``, or ``EffectNotStarted`` on every attempt)."""
    idempotent = {
        t.get("name"): bool(t.get("idempotent"))
        for t in run.spec.get("tools", ())
        if isinstance(t, dict)
    }
    out: dict[str, str] = {}
    for step in recorded:
        if step.step_no < from_step or step.kind is not StepKind.TOOL:
            continue
        if idempotent.get(step.name, False):
            continue
        error = step.error or {}
        before_effect = step.status is StepStatus.FAILED and (
            error.get("code") == "tool_error"
            or (error.get("details") or {}).get("may_have_acted") is False
        )
        if not before_effect:
            out[str(step.step_no)] = step.name
    return out


def _check_decision(run: Run, step: Step, decision: Decision) -> None:
    """The decision fits what the run waits for (``step``: the waiting step)."""
    reason = run.wait_reason
    if decision.kind == "resolve" and reason is not WaitReason.OUTCOME_UNKNOWN:
        raise UserError("'resolve' answers only runs whose outcome is unknown")
    if decision.kind == "edit":
        texts = (WaitReason.OUTPUT_REVIEW, WaitReason.GUARD_REVIEW)
        if reason in texts and decision.output is None and decision.arguments is None:
            raise UserError("editing a final answer or a guarded text needs the corrected output")
        if reason not in texts and decision.arguments is None:
            raise UserError("'edit' needs the arguments to use instead")
        guarded_call = step.name == "guard:tool_args"
        if reason is WaitReason.GUARD_REVIEW and guarded_call != (decision.arguments is not None):
            raise UserError(
                "a guard review of tool arguments is edited with the corrected arguments; any "
                "other guard review with the corrected text (output)"
            )

"""What people and operators do to runs: decide a waiting run, replay a dead letter, move a
run to a new definition, cancel, and read a run's sealed values back.

Owns: the rules of each action (which runs take it, what it archives, which calls it must not
repeat silently) and sealing what a person supplies (decided arguments and outputs, replay
arguments) when the run's data is sealed. Does not own executing runs (``_engine``) or the phases
of a step (``_loop``). ``Engine`` inherits these methods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bastion.core.errors import (
    AgentNotFound,
    ConcurrentUpdate,
    InvalidState,
    ToolArgumentsInvalid,
    UserError,
)
from bastion.core.records import Decision, Run, RunStatus, Step, StepKind, StepStatus, WaitReason
from bastion.engine._agent import Agent
from bastion.engine._journal import CANCELLED, unseal_step
from bastion.engine._spec import MIGRATION
from bastion.store import Store
from bastion.tools._invoke import validate_arguments

if TYPE_CHECKING:
    from bastion.governance.sealing import RunSeal, Sealing

log = logging.getLogger("bastion.engine")


class Operations:
    """The operator-facing half of ``Engine`` (see the module docstring)."""

    store: Store
    agents: Mapping[str, Agent]
    sealing: Sealing | None
    _active: dict[str, Any]

    def agent(self, name: str) -> Agent:
        try:
            return self.agents[name]
        except KeyError:
            raise AgentNotFound(f"no agent named {name!r}", known=sorted(self.agents)) from None

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
        changes: dict[str, Any] = {
            "status": RunStatus.PENDING,
            "wait_reason": None,
            "waiting_step": None,
            "error": None,
        }
        if self.sealing is not None:
            # A reviewer's arguments or output may hold personal data: sealed like the rest.
            seal = await self.open_seal(run)
            decision = Decision.model_validate(seal.seal(decision.model_dump(mode="json")))
            changes.update(_vault_of(seal))
        await self.store.commit(
            run_id,
            expected_version=run.version,
            changes=changes,
            steps_to_write=[step.model_copy(update={"decision": decision})],
        )
        return await self.store.get_run(run_id)

    # ---- sealed values ------------------------------------------------------------------

    async def open_seal(self, run: Run) -> RunSeal:
        """The run's seal (its vault, opened with its data key)."""
        assert self.sealing is not None
        vault_key, vault = await self.store.sealed_vault(run.id)
        return self.sealing.open_run(run.tenant, run.id, vault_key, vault)

    async def reveal(self, run: Run, steps: list[Step] | None = None) -> tuple[Run, list[Step]]:
        """``run`` and ``steps`` with their sealed values restored, for whoever may see them
        (the caller that submitted the run; an authorised operator). Without sealing they are
        returned as they are; ``SealedDataDestroyed`` once the run's retention has ended."""
        steps = list(steps or [])
        if self.sealing is None:
            return run, steps
        seal = await self.open_seal(run)
        shown = run.model_copy(
            update={
                "input": seal.unseal(run.input),
                "output": seal.unseal(run.output),
                "error": seal.unseal(run.error),
                "overrides": seal.unseal(run.overrides),
            }
        )
        return shown, [unseal_step(seal, s) for s in steps]

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
        sealed_vault: dict[str, Any] = {}
        if self.sealing is not None:
            seal = await self.open_seal(run)  # refused if its sealed data was destroyed
            if arguments is not None:
                arguments = seal.seal(arguments)
                sealed_vault = _vault_of(seal)
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
                **sealed_vault,
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


def _vault_of(seal: RunSeal) -> dict[str, Any]:
    """The run change that stores ``seal``'s vault, if it grew."""
    return {"vault": seal.export()} if seal.dirty else {}


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

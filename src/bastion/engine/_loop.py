"""One run's execution: the phases of the architecture's loop, one method each.

Owns: turning an agent, a run and its journal into steps: ``check_live`` (limits), ``plan``
(a model step), ``check_action`` (tool lookup, argument validation, preconditions, approval),
``act`` (a tool step with retries), ``check_result`` (output contract, business rules,
confidence) and the final record. ``react`` mode lives here; ``plan`` mode in ``_plan``.
Does not own claiming runs or writing terminal statuses (``_engine``).

Control leaves this module in exactly four ways: a return value (the run's output), a
``Suspend`` (a human must decide), ``RunCancelled`` (the run was cancelled or the worker shuts
down: seen at the next phase boundary, or at once while waiting on a model, a read-only tool or a
retry delay; a tool that may change the world is let finish and its end journaled first), or an
exception (the run failed).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from bastion.core.canonical import chain, digest
from bastion.core.errors import (
    BastionError,
    BudgetExceeded,
    InvalidModelOutput,
    MaxTurnsExceeded,
    OutcomeUnknown,
    OutputValidationFailed,
    PolicyDenied,
    PreconditionFailed,
    ProviderError,
    RunCancelled,
    RunError,
    RunTimeout,
    ToolArgumentsInvalid,
    ToolFailed,
    ToolNotFound,
)
from bastion.core.messages import (
    Message,
    ModelRequest,
    ModelResponse,
    ResponseFormat,
    ToolCall,
    ToolSchema,
)
from bastion.core.records import Decision, Run, Step, StepKind, StepStatus, WaitReason
from bastion.engine._agent import Agent
from bastion.engine._guarding import Guarding
from bastion.engine._journal import Done, Fresh, Interrupted, Journal
from bastion.engine._spec import Effective, effective, initial_spec, is_migration, spec_changed
from bastion.engine._suspend import Defer, Suspend
from bastion.tools import Tool, ToolContext, ToolError, invoke_tool
from bastion.tools._invoke import check_preconditions, validate_arguments

if TYPE_CHECKING:  # the guards extra is loaded only when guards are configured
    from bastion.governance.guards import GuardPipeline

Complete = Callable[[str, ModelRequest], Awaitable[ModelResponse]]
Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
#: Effects a call may be abandoned in the middle of when the run stops: it changes nothing.
_ABANDONABLE = frozenset({"none", "read"})


@dataclass(kw_only=True)
class LoopDeps:
    """What the loop needs from outside, passed in (no globals)."""

    complete: Complete
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    guards: GuardPipeline | None = None
    #: Retry delays at least this long defer the run instead of sleeping in the worker.
    defer_after: float = float("inf")


@dataclass(frozen=True, kw_only=True)
class CallOutcome:
    """What the model hears back about one tool call, and whether it failed."""

    text: str
    ok: bool
    output: Any = None


class RunExecution:
    def __init__(self, agent: Agent, run: Run, journal: Journal, deps: LoopDeps) -> None:
        """``agent``: the live definition (its code); what the run uses is its recorded spec
        served by that code (``_spec``)."""
        self.live = agent
        self.run = run
        self.journal = journal
        self.deps = deps
        self.guarding = Guarding(deps.guards, run, journal) if deps.guards is not None else None
        self.turns = 0
        self.invalid_outputs = 0
        self._started = time.monotonic()
        self.messages: list[Message] = []
        self._history = ""
        self._use(effective(agent, initial_spec(run.spec, journal.recorded_steps)))
        journal.on_note(self._on_note)
        # Active seconds of steps finished in earlier executions, counted as replay passes
        # them: a limit checked at a replayed turn sees what the first execution saw there.
        self._earlier_seconds = {
            step.step_no: (step.finished_at - step.started_at).total_seconds()
            for step in journal.recorded_steps
            if step.kind in (StepKind.MODEL, StepKind.TOOL) and step.finished_at is not None
        }

    # ---- the definition in force ------------------------------------------------------------

    def _use(self, definition: Effective) -> None:
        self.definition = definition
        self.agent = definition.agent
        self.tool_schemas = definition.tool_schemas
        self._tools_digest = digest([s.model_dump() for s in self.tool_schemas])

    def _on_note(self, note: Step) -> None:
        """A spec migration recorded between steps: from here on the run uses the new spec,
        its instructions replacing the old ones at the head of the conversation."""
        if not is_migration(note) or not isinstance(note.input, dict):
            return
        self._use(effective(self.live, dict(note.input.get("spec") or {})))
        if self.messages and self.messages[0].role == "system":
            self.messages[0] = Message.system(self.agent.instructions)
            history = ""
            for message in self.messages:
                history = chain(history, message.model_dump(exclude_defaults=True))
            self._history = history

    def _require_tool(self, name: str) -> None:
        """A tool the live code cannot serve as recorded stops the run, except when replaying
        a call recorded before the run's last migration, if the live tool still exists."""
        problem = self.definition.tool_problem(name)
        if problem is None:
            return
        replaying_old = self.journal.next_no < self.journal.trusted_below
        if replaying_old and self.agent.tool(name) is not None:
            return
        raise spec_changed(self.run.id, f"tool {name!r} is not the one it started with: {problem}")

    # ---- history --------------------------------------------------------------------------

    def add_message(self, message: Message) -> None:
        self.messages.append(message)
        # A running digest of the conversation: the model step's input hash without storing
        # (or re-hashing) the whole history at every step.
        self._history = chain(self._history, message.model_dump(exclude_defaults=True))

    async def start_conversation(self) -> None:
        if self.agent.instructions:
            self.add_message(Message.system(self.agent.instructions))
        text = self.run.input if isinstance(self.run.input, str) else json.dumps(self.run.input)
        if self.guarding is not None:
            screened = await self.guarding.screen("user_input", text)
            if screened.verdict == "blocked":
                raise PolicyDenied(
                    f"a guard refused the run's input ({screened.summary})", run_id=self.run.id
                )
            text = screened.text
        self.add_message(Message.user(text))

    # ---- react mode -----------------------------------------------------------------------

    async def react(self) -> Any:
        await self.start_conversation()
        while True:
            self.check_live()
            response = await self.plan(self.tool_schemas)
            self.add_message(response.message)
            calls = response.message.tool_calls
            if not calls:
                done, output = await self.check_final(response.message.content)
                if done:
                    return output
                continue
            for call in calls:
                outcome = await self.handle_call(call)
                self.add_message(Message.tool(call.id, call.name, outcome.text))

    async def interruptible(self, work: Awaitable[T]) -> T:
        """Await ``work`` unless the run is stopped first; then abandon it and raise
        ``RunCancelled``. Only for work that changes nothing outside the run."""
        stop = self.journal.stop
        stop.check()
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            stopped.cancel()
        if task.done():
            return task.result()
        # Abandoned, not awaited: whatever it ends with is of no use to a stopped run.
        task.add_done_callback(_consume)
        task.cancel()
        raise RunCancelled(stop.reason)

    # ---- check_live -----------------------------------------------------------------------

    def check_live(self) -> None:
        self.journal.stop.check()
        limits = self.agent.limits
        run_id = self.run.id
        if self.turns >= limits.max_turns:
            raise MaxTurnsExceeded(
                f"the agent used all {limits.max_turns} turns without finishing", run_id=run_id
            )
        earlier = sum(s for no, s in self._earlier_seconds.items() if no < self.journal.next_no)
        # This execution's own time (its tool calls included) is measured once, from its start.
        elapsed = earlier + (time.monotonic() - self._started)
        if elapsed > limits.max_wall_seconds:
            raise RunTimeout(
                f"the run was active {elapsed:.1f}s, over its {limits.max_wall_seconds}s limit",
                run_id=run_id,
            )
        usage = self.journal.usage_so_far
        if limits.max_tokens is not None and usage.total_tokens >= limits.max_tokens:
            raise BudgetExceeded(
                f"the run used {usage.total_tokens} tokens, its budget is {limits.max_tokens}",
                run_id=run_id,
                budget="tokens",
            )
        if limits.max_cost_usd is not None and usage.cost_usd >= limits.max_cost_usd:
            raise BudgetExceeded(
                f"the run cost ${usage.cost_usd:.4f}, its budget is ${limits.max_cost_usd}",
                run_id=run_id,
                budget="cost",
            )

    # ---- plan (one model step) ------------------------------------------------------------

    async def plan(
        self,
        tools: tuple[ToolSchema, ...],
        *,
        response_format: ResponseFormat | None = None,
        tool_choice: str = "auto",
    ) -> ModelResponse:
        self.turns += 1
        fmt = response_format.model_dump() if response_format else None
        input_hash = digest([self._history, self._tools_digest if tools else "", fmt, tool_choice])
        slot = await self.journal.begin(
            StepKind.MODEL,
            self.agent.model,
            {"turn": self.turns, "messages": len(self.messages)},
            input_hash,
        )
        if isinstance(slot, Done):
            if slot.step.error is not None:
                raise _rebuild(slot.step.error)
            return ModelResponse.model_validate(slot.step.output)
        # Fresh, or interrupted by a crash: asking the model again is harmless.
        step = slot.step
        request = ModelRequest.model_construct(
            model=self.agent.model,
            messages=tuple(self.messages),
            tools=tools,
            tool_choice=tool_choice,
            response_format=response_format,
            temperature=None,
            max_tokens=None,
            metadata={"run_id": self.run.id, "step_no": str(step.step_no)},
        )
        try:
            response = await self.interruptible(self.deps.complete(self.agent.model, request))
        except ProviderError as exc:
            exc.details.update(run_id=self.run.id, step_no=step.step_no)
            await self.journal.finish(step, error=exc.to_dict(), durable=True)
            raise
        await self.journal.finish(
            step,
            output=response.model_dump(mode="json", exclude_defaults=True),
            usage=response.usage,
            durable=False,
        )
        return response

    # ---- check_action + act for one call --------------------------------------------------

    async def handle_call(self, call: ToolCall) -> CallOutcome:
        # Preconditions look at the world, which the call itself may have changed since it was
        # journaled: on replay, the journal's verdict stands (a recorded refusal is replayed;
        # a call that got past them is not checked again).
        recorded = self.journal.upcoming()
        if (
            recorded is not None
            and recorded.kind is StepKind.VALIDATION
            and recorded.name.startswith("refuse:")
            and isinstance(recorded.input, dict)
        ):
            return await self.refuse(call, _rebuild(recorded.input["error"]))
        # Any other recorded step here (approval, guard verdict, tool) means the call passed
        # its preconditions when it was first made.
        try:
            tool, args = await self.check_action(call, preconditions=recorded is None)
        except (ToolArgumentsInvalid, ToolNotFound, InvalidModelOutput, PreconditionFailed) as exc:
            return await self.refuse(call, exc)
        if tool.needs_approval(args):
            decision = await self.approval(call, tool, args)
            if decision.kind == "reject":
                why = decision.reason or "no reason given"
                return CallOutcome(text=f"A human reviewer rejected this call: {why}", ok=False)
            if decision.kind == "edit" and decision.arguments is not None:
                args = validate_arguments(tool, decision.arguments)
        if self.guarding is None:
            return await self.act(call, tool, args)
        return await self.guarded_act(call, tool, args)

    async def guarded_act(self, call: ToolCall, tool: Tool, args: BaseModel) -> CallOutcome:
        """``act`` with the guards at both ends: the arguments going out (``tool_args``) and
        the result coming back (``tool_result``, quarantined or masked as configured)."""
        assert self.guarding is not None
        arguments = args.model_dump(mode="json")
        screened = await self.guarding.screen("tool_args", json.dumps(arguments))
        if screened.verdict == "blocked":
            refusal = PolicyDenied(
                f"the arguments of {tool.name!r} were not sent: a guard flagged them "
                f"({screened.summary}). Do not put such content in tool arguments."
            )
            return await self.refuse(call, refusal)
        if screened.arguments is not None:
            # A reviewer corrected the arguments: they replace the model's, and are checked
            # against the tool like the model's were (a mistake goes back to the model).
            try:
                args = validate_arguments(tool, screened.arguments)
            except ToolArgumentsInvalid as exc:
                return await self.refuse(call, exc)
            arguments = args.model_dump(mode="json")
        if self.agent.unmask_tool_args:
            # Placeholders the model saw (<PERSON_1>) become the real values for the tool; the
            # journal keeps the arguments as the model wrote them, so it holds no more personal
            # data than the messages it replays (a resumed run rebuilds the vault first).
            args = validate_arguments(tool, self.guarding.unmask(arguments))
        outcome = await self.act(call, tool, args, journaled=arguments)
        if not outcome.ok:
            return outcome
        result = await self.guarding.screen(
            "tool_result", outcome.text, person_text=tool.returns_person_text
        )
        if result.verdict == "blocked":
            withheld = f"[bastion: the result of {tool.name} was withheld ({result.summary})]"
            return CallOutcome(text=withheld, ok=True, output=outcome.output)
        return CallOutcome(text=result.text, ok=True, output=outcome.output)

    async def check_action(
        self, call: ToolCall, *, preconditions: bool = True
    ) -> tuple[Tool, BaseModel]:
        if call.parse_error is not None:
            raise InvalidModelOutput(
                f"the arguments of your call to {call.name!r} are not valid JSON: "
                f"{call.parse_error}. Send the call again with a JSON object."
            )
        self._require_tool(call.name)
        tool = self.agent.tool(call.name)
        if tool is None:
            names = ", ".join(t.name for t in self.agent.tools) or "(none)"
            raise ToolNotFound(f"there is no tool {call.name!r}; the tools you have are: {names}")
        args = validate_arguments(tool, call.arguments)
        if preconditions:
            check_preconditions(tool, args)
        return tool, args

    async def refuse(self, call: ToolCall, exc: BastionError) -> CallOutcome:
        """Tell the model what was wrong, journaled as a validation step. After too many
        unusable outputs in this run, a human decides (approve: go on; edit: use these arguments;
        reject: fail the run)."""
        preconditioned = isinstance(exc, PreconditionFailed)
        if not preconditioned:
            self.invalid_outputs += 1
        over = self.invalid_outputs > self.agent.limits.max_invalid_outputs
        payload = {"call": call.model_dump(exclude_defaults=True), "error": exc.to_dict()}
        slot = await self.journal.begin(
            StepKind.VALIDATION,
            f"refuse:{call.name}"[:128],
            payload,
            digest(payload),
            durable=over,
        )
        if isinstance(slot, Fresh) and not over:
            await self.journal.finish(slot.step, output={"told_model": exc.message}, durable=False)
        elif isinstance(slot, Fresh | Interrupted):
            decision = slot.step.decision if isinstance(slot, Interrupted) else None
            if decision is None:
                raise Suspend(WaitReason.INVALID_MODEL_OUTPUT, slot.step.step_no, exc.message)
            await self.journal.finish(
                slot.step, output={"decision": decision.model_dump(mode="json")}, durable=True
            )
            return await self._apply_refusal_decision(call, exc, decision)
        elif isinstance(slot, Done) and slot.step.output and "decision" in slot.step.output:
            decision = Decision.model_validate(slot.step.output["decision"])
            return await self._apply_refusal_decision(call, exc, decision)
        return CallOutcome(text=f"Error: {exc.message}", ok=False)

    async def _apply_refusal_decision(
        self, call: ToolCall, exc: BastionError, decision: Decision
    ) -> CallOutcome:
        self.invalid_outputs = 0
        if decision.kind == "reject":
            raise OutputValidationFailed(
                f"a reviewer stopped the run after invalid model output: {exc.message}",
                run_id=self.run.id,
                reason=decision.reason,
            )
        if decision.kind == "edit" and decision.arguments is not None:
            fixed = call.model_copy(update={"arguments": decision.arguments, "parse_error": None})
            tool, args = await self.check_action(fixed)
            return await self.act(fixed, tool, args)
        return CallOutcome(text=f"Error: {exc.message}", ok=False)

    async def approval(self, call: ToolCall, tool: Tool, args: BaseModel) -> Decision:
        payload = {"tool": tool.name, "arguments": args.model_dump(mode="json"), "call": call.id}
        slot = await self.journal.begin(StepKind.APPROVAL, tool.name, payload, digest(payload))
        if isinstance(slot, Done):
            return Decision.model_validate(slot.step.output)
        decision = slot.step.decision if isinstance(slot, Interrupted) else None
        if decision is None:
            raise Suspend(WaitReason.APPROVAL_REQUIRED, slot.step.step_no, f"approve {tool.name}")
        await self.journal.finish(slot.step, output=decision.model_dump(mode="json"), durable=True)
        return decision

    # ---- act: one tool step ---------------------------------------------------------------

    async def act(
        self,
        call: ToolCall,
        tool: Tool,
        args: BaseModel,
        *,
        journaled: dict[str, Any] | None = None,
    ) -> CallOutcome:
        """Run the tool once per journal step. ``journaled``: the arguments to record in the
        journal when they differ from what the tool gets (masked ones, with guards on)."""
        arguments = journaled if journaled is not None else args.model_dump(mode="json")
        override = self.run.overrides.get(str(self.journal.next_no))
        if override is not None:
            # A replay with edited inputs: the operator's arguments replace the model's.
            args = validate_arguments(tool, override)
            arguments = args.model_dump(mode="json")
        payload = {"arguments": arguments}
        slot = await self.journal.begin(StepKind.TOOL, tool.name, payload, digest(payload))
        if isinstance(slot, Done):
            return _outcome_from_step(slot.step.output, slot.step.error)
        step = slot.step
        if isinstance(slot, Fresh) and self._repeats_an_effect(tool, step.step_no):
            raise self._unknown(
                step,
                tool,
                f"{tool.name} was called at this step before the run was replayed and may have "
                "acted; check the outside system, then resolve, approve (call again) or reject",
                replayed=True,
            )
        if isinstance(slot, Interrupted):
            decision = slot.decision
            if decision is None and not tool.idempotent:
                detail = f"{tool.name} started but its result was never recorded"
                if step.status is StepStatus.OUTCOME_UNKNOWN and step.error is not None:
                    # Already marked (a wait cut short by a crash): ask again, same cause.
                    recorded = step.error
                    if recorded.get("code") == OutcomeUnknown.code:
                        raise Suspend(
                            WaitReason.OUTCOME_UNKNOWN,
                            step.step_no,
                            detail,
                            error=_rebuild(recorded),
                        )
                    raise self._unknown(step, tool, detail, cause=recorded)
                raise self._unknown(step, tool, detail)
            if decision is not None:
                match decision.kind:
                    case "resolve":
                        await self.journal.finish(step, output=decision.output, durable=True)
                        return _outcome_from_step(decision.output, None)
                    case "reject":
                        error = {"code": "rejected", "message": decision.reason or "rejected"}
                        await self.journal.finish(step, error=error, durable=True)
                        return _outcome_from_step(None, error)
                    case "edit" if decision.arguments is not None:
                        args = validate_arguments(tool, decision.arguments)
                    case _:
                        pass
        return await self._execute(tool, args, step)

    def _unknown(self, step: Step, tool: Tool, detail: str, **details: Any) -> Suspend:
        """Mark ``step`` as ``outcome_unknown`` (written with the wait) and return the wait,
        carrying an ``OutcomeUnknown`` for the run to show."""
        error = OutcomeUnknown(
            detail, run_id=self.run.id, step_no=step.step_no, tool=tool.name, **details
        )
        # The step keeps the failure itself (a timeout, an exception); the run shows both.
        recorded = details.get("cause") or error.to_dict()
        self.journal.mark_unknown(step, attempts=step.attempts, error=recorded)
        return Suspend(WaitReason.OUTCOME_UNKNOWN, step.step_no, detail, error=error)

    def _repeats_an_effect(self, tool: Tool, step_no: int) -> bool:
        """This call of a non-idempotent tool was made at the same step in an attempt of the run
        before a replay (``Run.confirm_steps``)."""
        return not tool.idempotent and self.run.confirm_steps.get(str(step_no)) == tool.name

    async def _execute(self, tool: Tool, args: BaseModel, step: Step) -> CallOutcome:
        """Call the tool, retrying what may be retried. A non-idempotent tool is never called
        again by Bastion once it may have acted: a timeout or a failure that could come after
        its effect makes the step ``outcome_unknown`` and the run waits for a person."""
        attempts = step.attempts if step.error is not None else 0
        durable = not tool.idempotent
        while True:
            attempts += 1
            ctx = ToolContext(
                run_id=self.run.id,
                step_no=step.step_no,
                tenant=self.run.tenant,
                principal=self.run.principal,
                attempt=attempts,
            )
            call = invoke_tool(tool, args, ctx)
            try:
                if tool.effect in _ABANDONABLE:
                    output = await self.interruptible(call)
                else:
                    # It may change the world: let it finish (or time out) and journal its end
                    # even if the run is cancelled meanwhile.
                    output = await call
            except ToolError as exc:
                error = {"code": "tool_error", "message": str(exc)}
                await self.journal.finish(step, error=error, attempts=attempts, durable=durable)
                return _outcome_from_step(None, error)
            except ToolFailed as exc:
                exc.details.update(attempts=attempts)
                if not tool.idempotent and exc.details.get("may_have_acted", True):
                    step = step.model_copy(update={"attempts": attempts})
                    raise self._unknown(
                        step,
                        tool,
                        f"{exc.message}; {tool.name} may have acted before it failed",
                        attempts=attempts,
                        cause=exc.to_dict(),
                    ) from exc
                if exc.retryable and attempts < tool.retry.max_attempts:
                    step = await self.journal.note_attempt(step, attempts, exc.to_dict())
                    delay = tool.retry.delay(attempts, self.deps.rng)
                    if tool.idempotent and delay >= self.deps.defer_after:
                        # Safe to leave: re-running an idempotent call is harmless, and its
                        # attempts are journaled. (A non-idempotent call is retried only after
                        # EffectNotStarted; it stays here, or a crash could not tell a deferred
                        # call from one that was under way.)
                        raise Defer(
                            time.time() + delay, f"retry {tool.name} (attempt {attempts + 1})"
                        ) from exc
                    await self.interruptible(self.deps.sleep(delay))
                    continue
                await self.journal.finish(
                    step, error=exc.to_dict(), attempts=attempts, durable=True
                )
                raise
            await self.journal.finish(step, output=output, attempts=attempts, durable=durable)
            return _outcome_from_step(output, None)

    # ---- check_result: the final answer ---------------------------------------------------

    async def check_final(self, text: str | None) -> tuple[bool, Any]:
        """Validate the final answer. Returns (True, output) when the run may complete, or
        (False, None) after telling the model what to fix."""
        withheld: str | None = None
        if self.guarding is not None and text:
            screened = await self.guarding.screen("model_output", text)
            if screened.verdict == "blocked":
                withheld = f"a guard withheld it ({screened.summary}); answer without that content"
            # What the user gets back: masked where a guard masked it, with the run's own
            # placeholders restored when the agent allows it.
            text = screened.text
            if self.agent.unmask_output:
                text = self.guarding.unmask(text)
        problem, output = self._validate_output(text)
        if withheld is not None:
            problem, output = withheld, None
        payload = {"text": text}
        slot = await self.journal.begin(
            StepKind.VALIDATION, "final_output", payload, digest(payload), durable=False
        )
        if isinstance(slot, Done):
            recorded = slot.step.output or {}
            if recorded.get("accepted"):
                return True, recorded.get("output")
            self.add_message(Message.user(recorded.get("feedback", "")))
            return False, None
        step = slot.step
        if isinstance(slot, Interrupted) and slot.decision is not None:
            decision = slot.decision
            if decision.kind == "reject":
                raise OutputValidationFailed(
                    f"a reviewer rejected the final answer: {decision.reason or 'no reason'}",
                    run_id=self.run.id,
                )
            final = decision.output if decision.kind in ("edit", "resolve") else output
            await self.journal.finish(
                step, output={"accepted": True, "output": final}, durable=False
            )
            return True, final
        low_confidence = problem is None and self._below_threshold(output)
        if problem is None and not low_confidence:
            await self.journal.finish(
                step, output={"accepted": True, "output": output}, durable=False
            )
            return True, output
        if low_confidence:
            await self.journal.flush()
            raise Suspend(WaitReason.OUTPUT_REVIEW, step.step_no, "confidence below threshold")
        self.invalid_outputs += 1
        if self.invalid_outputs > self.agent.limits.max_invalid_outputs:
            await self.journal.flush()
            raise Suspend(WaitReason.OUTPUT_REVIEW, step.step_no, problem or "")
        feedback = f"Your final answer was not accepted: {problem}. Answer again."
        await self.journal.finish(
            step, output={"accepted": False, "feedback": feedback}, durable=False
        )
        self.add_message(Message.user(feedback))
        return False, None

    def _validate_output(self, text: str | None) -> tuple[str | None, Any]:
        if self.definition.unavailable_output is not None:
            raise spec_changed(self.run.id, self.definition.unavailable_output)
        output_type = self.agent.output_type
        if output_type is None:
            value: Any = text or ""
        else:
            try:
                value = output_type.model_validate_json(_strip_fences(text or "")).model_dump(
                    mode="json"
                )
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "(root)"
                return f"it does not match the required JSON schema ({where}: {first['msg']})", None
        for rule in self.agent.rules:
            broken = rule(value)
            if broken:
                return broken, value
        return None, value

    def _below_threshold(self, output: Any) -> bool:
        threshold = self.agent.review_below_confidence
        if threshold is None or not isinstance(output, dict):
            return False
        confidence = output.get("confidence")
        return isinstance(confidence, int | float) and confidence < threshold


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's end so that it is not reported as never retrieved."""
    if not task.cancelled():
        task.exception()


def _strip_fences(text: str) -> str:
    """Models often wrap JSON in markdown fences; accept that."""
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else ""
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()


def _outcome_from_step(output: Any, error: dict[str, Any] | None) -> CallOutcome:
    if error is not None:
        code = error.get("code")
        if code in ("tool_error", "rejected"):
            return CallOutcome(text=f"Error: {error.get('message', '')}", ok=False)
        raise _rebuild(error)
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    return CallOutcome(text=text, ok=True, output=output)


def _rebuild(error: dict[str, Any]) -> BastionError:
    """Re-raise a journaled failure as the typed error it was."""
    from bastion.core.errors import error_class_for

    cls = error_class_for(str(error.get("code", "")))
    details = dict(error.get("details") or {})
    exc = BastionError.__new__(cls)
    BastionError.__init__(exc, str(error.get("message", "")), hint=error.get("hint"), **details)
    exc.retryable = bool(error.get("retryable", False))
    if isinstance(exc, RunError):
        exc.run_id = details.get("run_id")
        exc.step_no = details.get("step_no")
    return exc

"""Plan mode: the model writes a typed plan once; the engine runs it deterministically.

Owns: the plan's shape (``Plan``: tool calls with arguments and dependencies), ordering it,
resolving references to earlier results (``"${s1.order_id}"``), and asking the model to replan
only when a step fails. Each planned call goes through the same ``handle_call`` phases as react
mode (validation, preconditions, approval, act), so governance is identical in both modes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from bastion.core.errors import InvalidModelOutput, MaxTurnsExceeded
from bastion.core.messages import Message, ResponseFormat, ToolCall
from bastion.engine._loop import RunExecution

_REF = re.compile(r"\$\{([A-Za-z0-9_\-]+)((?:\.[A-Za-z0-9_\-]+)*)\}")


class PlannedCall(BaseModel):
    id: str = Field(description="a short unique id for this step, e.g. 's1'")
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)


class Plan(BaseModel):
    """A plan: calls run in dependency order. Arguments may contain ``${id}`` or
    ``${id.field}`` to use the output of an earlier call."""

    steps: list[PlannedCall]
    rationale: str = ""


PLAN_FORMAT = ResponseFormat(name="plan", json_schema=Plan.model_json_schema())

_PLAN_PROMPT = (
    'Reply with a JSON plan only: {"steps": [{"id": "s1", "tool": NAME, "arguments": '
    '{...}, "depends_on": []}, ...]}. Use "${s1}" or "${s1.field}" inside arguments to use '
    "an earlier step's result. Tools: "
)


def order(plan: Plan) -> list[PlannedCall]:
    """Dependency order (stable: plan order among ready steps). Raises on cycles/unknown ids."""
    ids = [s.id for s in plan.steps]
    if len(set(ids)) != len(ids):
        raise InvalidModelOutput(f"plan step ids repeat: {ids}")
    known = set(ids)
    for s in plan.steps:
        missing = [d for d in s.depends_on if d not in known]
        if missing:
            raise InvalidModelOutput(f"plan step {s.id!r} depends on unknown steps {missing}")
    done: set[str] = set()
    out: list[PlannedCall] = []
    pending = list(plan.steps)
    while pending:
        ready = [s for s in pending if set(s.depends_on) <= done]
        if not ready:
            raise InvalidModelOutput(f"plan has a dependency cycle among {[s.id for s in pending]}")
        step = ready[0]
        out.append(step)
        done.add(step.id)
        pending.remove(step)
    return out


def resolve_refs(value: Any, results: dict[str, Any]) -> Any:
    """Replace ``${id.path}`` references with earlier results (whole-string refs keep type)."""
    if isinstance(value, dict):
        return {k: resolve_refs(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_refs(v, results) for v in value]
    if not isinstance(value, str):
        return value
    whole = _REF.fullmatch(value)
    if whole:
        return _lookup(whole.group(1), whole.group(2), results)
    return _REF.sub(lambda m: _as_text(_lookup(m.group(1), m.group(2), results)), value)


def _lookup(step_id: str, path: str, results: dict[str, Any]) -> Any:
    if step_id not in results:
        raise InvalidModelOutput(f"reference to step {step_id!r}, which has not run")
    value = results[step_id]
    for part in filter(None, path.split(".")):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise InvalidModelOutput(f"reference ${{{step_id}{path}}}: no field {part!r}")
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def _ask_for_plan(ex: RunExecution) -> Plan | None:
    response = await ex.plan((), response_format=PLAN_FORMAT, tool_choice="none")
    ex.add_message(response.message)
    try:
        plan = Plan.model_validate_json(response.message.content or "")
        order(plan)
        return plan
    except (ValidationError, InvalidModelOutput) as exc:
        call = ToolCall(id="plan", name="plan", arguments={})
        bad = InvalidModelOutput(f"the plan is not valid: {str(exc)[:500]}")
        outcome = await ex.refuse(call, bad)
        ex.add_message(Message.user(outcome.text + " Reply with a corrected JSON plan."))
        return None


async def run_plan_mode(ex: RunExecution) -> Any:
    await ex.start_conversation()
    tools = ", ".join(
        f"{t.name}({json.dumps(t.parameters.get('properties', {}))})" for t in ex.tool_schemas
    )
    ex.add_message(Message.user(_PLAN_PROMPT + tools))
    replans = 0
    while True:
        ex.check_live()
        plan = await _ask_for_plan(ex)
        if plan is None:
            continue
        results: dict[str, Any] = {}
        failure: str | None = None
        for planned in order(plan):
            try:
                arguments = resolve_refs(planned.arguments, results)
            except InvalidModelOutput as exc:
                failure = f"step {planned.id}: {exc.message}"
                break
            call = ToolCall(id=planned.id, name=planned.tool, arguments=arguments)
            outcome = await ex.handle_call(call)
            ex.add_message(Message.user(f"Result of {planned.id} ({planned.tool}): {outcome.text}"))
            if not outcome.ok:
                failure = f"step {planned.id} ({planned.tool}) failed: {outcome.text}"
                break
            results[planned.id] = outcome.output
        if failure is None:
            break
        replans += 1
        if replans > ex.agent.limits.max_replans:
            raise MaxTurnsExceeded(
                f"the plan failed {replans} times; last failure: {failure}", run_id=ex.run.id
            )
        ex.add_message(
            Message.user(f"The plan stopped: {failure}. Send a new plan for what remains.")
        )
    ex.add_message(Message.user("All planned steps are done. Give the final answer."))
    fmt = None
    if ex.agent.output_type is not None:
        fmt = ResponseFormat(name="output", json_schema=ex.agent.output_type.model_json_schema())
    while True:
        ex.check_live()
        response = await ex.plan((), response_format=fmt, tool_choice="none")
        ex.add_message(response.message)
        done, output = await ex.check_final(response.message.content)
        if done:
            return output

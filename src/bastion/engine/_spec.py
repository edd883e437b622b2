"""Runs execute the spec they were started with.

Owns: turning a run's recorded spec (instructions, model, mode, limits, the tools' contracts,
output schema, rule names; ``Agent.spec``) and the agent's live code into the definition an
execution uses. What is data (instructions, model, limits, the tool schemas the model sees)
comes from the record, so editing an agent's instructions or limits never changes a run in
flight. What is code (a tool's function, the output type, the rules) comes from the live agent,
and only where its declared contract is the one recorded: a tool whose contract changed, or that
is gone, is *unavailable* to the run, and calling it stops the run with ``SpecChanged`` instead
of running code the run was not started against (replaying a call recorded before a migration
may still use the live tool to read the recorded arguments). A deliberate upgrade is a ``note``
step written by ``Engine.migrate`` (``bastion runs migrate``): from that step on the run uses the
spec it names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bastion.core.canonical import digest
from bastion.core.errors import SpecChanged
from bastion.core.messages import ToolSchema
from bastion.core.records import Step, StepKind
from bastion.engine._agent import Agent, Limits

#: The name of the note step that moves a run to another spec.
MIGRATION = "spec_migrated"


@dataclass(frozen=True, kw_only=True)
class Effective:
    """The definition one execution uses: ``agent`` (recorded data, live code), the tool
    schemas the model sees (recorded), and what the live code cannot provide."""

    agent: Agent
    tool_schemas: tuple[ToolSchema, ...]
    #: tool name -> why the live code cannot serve it for this run
    unavailable_tools: dict[str, str]
    #: why the live output type or rules do not fit the recorded ones (None: they do)
    unavailable_output: str | None

    def tool_problem(self, name: str) -> str | None:
        return self.unavailable_tools.get(name)


def effective(live: Agent, spec: dict[str, Any]) -> Effective:
    """The definition for a run recorded with ``spec``, served by ``live``'s code."""
    if not spec or spec == live.spec():
        return Effective(
            agent=live,
            tool_schemas=tuple(t.schema() for t in live.tools),
            unavailable_tools={},
            unavailable_output=None,
        )
    contracts = [c for c in spec.get("tools", ()) if isinstance(c, dict)]
    schemas = tuple(
        ToolSchema(
            name=str(c.get("name")),
            description=str(c.get("description") or ""),
            parameters=dict(c.get("input_schema") or {}),
        )
        for c in contracts
    )
    tools = []
    unavailable: dict[str, str] = {}
    for contract in contracts:
        name = str(contract.get("name"))
        tool = live.tool(name)
        if tool is None:
            unavailable[name] = "the agent no longer has this tool"
            continue
        if changed := _changed(contract, tool.contract()):
            # Kept: replaying calls recorded before a migration may still use it.
            unavailable[name] = f"its contract changed ({', '.join(changed)})"
        tools.append(tool)
    output_problem = _output_problem(live, spec)
    limits = dict(spec.get("limits") or {})
    agent = dataclasses.replace(
        live,
        instructions=str(spec.get("instructions", live.instructions)),
        model=str(spec.get("model", live.model)),
        mode=spec.get("mode", live.mode),
        limits=Limits(**limits) if limits else live.limits,
        tools=tools,
        review_below_confidence=spec.get("review_below_confidence", live.review_below_confidence),
        unmask_tool_args=bool(spec.get("unmask_tool_args", live.unmask_tool_args)),
        unmask_output=bool(spec.get("unmask_output", live.unmask_output)),
    )
    return Effective(
        agent=agent,
        tool_schemas=schemas,
        unavailable_tools=unavailable,
        unavailable_output=output_problem,
    )


def _changed(recorded: dict[str, Any], live: dict[str, Any]) -> list[str]:
    """The contract fields that differ. Only fields the recording has are compared: a field a
    later Bastion added to contracts did not exist when the run started, so it cannot have
    changed under it."""
    return sorted(k for k, v in recorded.items() if digest(live.get(k)) != digest(v))


def _output_problem(live: Agent, spec: dict[str, Any]) -> str | None:
    schema = live.output_type.model_json_schema() if live.output_type else None
    if digest(schema) != digest(spec.get("output_schema")):
        return "the output type changed"
    rules = [getattr(r, "__name__", "rule") for r in live.rules]
    if rules != list(spec.get("rules") or []):
        return "the business rules changed"
    return None


def initial_spec(run_spec: dict[str, Any], recorded: list[Step]) -> dict[str, Any]:
    """The spec the run started with: the one before its first migration, if any."""
    for step in recorded:
        if is_migration(step) and isinstance(step.output, dict):
            previous = step.output.get("previous")
            if isinstance(previous, dict):
                return previous
    return run_spec


def is_migration(step: Step) -> bool:
    return step.kind is StepKind.NOTE and step.name == MIGRATION


def spec_changed(run_id: str, what: str) -> SpecChanged:
    return SpecChanged(
        f"run {run_id} was started against another definition of its agent: {what}",
        run_id=run_id,
    )

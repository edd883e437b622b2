"""The ``Agent`` declaration and its limits. A definition only: it never holds a handle.

Owns: what an agent is allowed and expected to do (instructions, model route, tools, mode,
limits, output contract, business rules, review threshold) and its recorded ``spec`` snapshot.
Does not own executing it (``_loop``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from bastion.core.canonical import digest
from bastion.core.errors import ConfigError
from bastion.tools import Tool

Mode = Literal["react", "plan"]
#: A business rule on the final output: return None when it holds, else a sentence saying why not.
OutputRule = Callable[[Any], str | None]

_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_\-]{0,63}$")


@dataclass(kw_only=True, frozen=True)
class Limits:
    """Per-run limits. ``max_invalid_outputs`` bounds how often the model may produce unusable
    output (bad JSON, unknown tool, wrong arguments) before a human gets the run."""

    max_turns: int = 20
    max_wall_seconds: float = 600.0
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_invalid_outputs: int = 3
    max_replans: int = 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_turns": self.max_turns,
            "max_wall_seconds": self.max_wall_seconds,
            "max_tokens": self.max_tokens,
            "max_cost_usd": self.max_cost_usd,
            "max_invalid_outputs": self.max_invalid_outputs,
            "max_replans": self.max_replans,
        }


@dataclass(kw_only=True, frozen=True)
class Agent:
    name: str
    #: A label for this definition, recorded with each run started on it. Keep an older
    #: version deployed (``Bastion(agents=[v1, v2])``, the last one current) and the runs
    #: started on it finish on it.
    version: str = "1"
    instructions: str = ""
    #: A route name or "provider:model"; "default" is the route to `default_model` in settings.
    model: str = "default"
    tools: Sequence[Tool] = ()
    mode: Mode = "react"
    limits: Limits = field(default_factory=Limits)
    output_type: type[BaseModel] | None = None
    rules: Sequence[OutputRule] = ()
    #: Final outputs whose ``confidence`` field is below this go to a human for review.
    review_below_confidence: float | None = None
    #: With guards on: give tools the real values behind the placeholders the model saw.
    unmask_tool_args: bool = True
    #: With guards on: restore the run's placeholders in the final answer.
    unmask_output: bool = True

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"agent name {self.name!r} is not valid", hint="Use [a-zA-Z0-9_-].")
        if self.mode not in ("react", "plan"):
            raise ConfigError(f"agent {self.name!r}: mode must be 'react' or 'plan'")
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ConfigError(f"agent {self.name!r} lists a tool twice: {names}")
        if self.review_below_confidence is not None and self.output_type is None:
            raise ConfigError(
                f"agent {self.name!r}: review_below_confidence needs an output_type with a "
                "'confidence' field"
            )

    def tool(self, name: str) -> Tool | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None

    def spec(self) -> dict[str, Any]:
        """The snapshot recorded with each run: what the run was started against."""
        return {
            "name": self.name,
            "version": self.version,
            "instructions": self.instructions,
            "model": self.model,
            "mode": self.mode,
            "limits": self.limits.to_dict(),
            "tools": [t.contract() for t in self.tools],
            "output_schema": self.output_type.model_json_schema() if self.output_type else None,
            "rules": [getattr(r, "__name__", "rule") for r in self.rules],
            "review_below_confidence": self.review_below_confidence,
            "unmask_tool_args": self.unmask_tool_args,
            "unmask_output": self.unmask_output,
        }

    def spec_digest(self) -> str:
        return digest(self.spec())

"""The ``Tool`` declaration and the ``@tool`` decorator that builds one from a typed function.

Owns: deriving input/output schemas from type hints and holding a tool's contract (effect,
idempotency, timeout, retry policy, conditions, approval rule). Does not own running a call
(``_invoke``) or choosing which tools an agent may use (the agent and the policy).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model

from bastion.core.errors import ToolDefinitionError
from bastion.core.messages import ToolSchema
from bastion.core.retry import NO_RETRY, RetryPolicy
from bastion.tools._context import ToolContext

Effect = Literal["none", "read", "write", "external"]
_EFFECTS: frozenset[str] = frozenset({"none", "read", "write", "external"})
_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_\-]{0,63}$")

ToolFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]


class ToolError(Exception):
    """Raise from a tool to tell the model something it can act on ("order not found").

    Raising it is the tool's word that its effect did not happen: the step completes as a tool
    error the model sees and the run goes on. Any other exception is a failure of the tool: an
    idempotent tool is retried if the error is retryable, then the run goes to the dead-letter
    queue; a non-idempotent tool's outcome is unknown (it may have acted before failing), so the
    run waits for a person.
    """


class EffectNotStarted(Exception):
    """Raise from a tool when it knows its effect never began, e.g. the connection was refused
    before the request was sent. Bastion may then retry the call (its ``RetryPolicy`` allows how
    often) even when the tool is not idempotent; after the last attempt the run goes to the
    dead-letter queue. Raise it only when you are sure: a request that may have reached the other
    side is an unknown outcome, and the right thing is to let the tool fail with that error.
    """


@dataclass(kw_only=True, frozen=True)
class Condition:
    """A named check on a call. Preconditions get the validated arguments; postconditions get the
    arguments and the validated result. ``check`` returns True when the condition holds."""

    name: str
    check: Callable[..., bool]
    message: str = ""


ApprovalRule = bool | Callable[[BaseModel], bool]


@dataclass(kw_only=True, frozen=True)
class Tool:
    """A tool declaration. Build it with ``@tool``; the engine runs it through ``invoke_tool``."""

    name: str
    description: str
    fn: ToolFunction
    input_model: type[BaseModel]
    output_adapter: TypeAdapter[Any]
    effect: Effect = "read"
    idempotent: bool = False
    timeout: float = 30.0
    retry: RetryPolicy = NO_RETRY
    preconditions: tuple[Condition, ...] = ()
    postconditions: tuple[Condition, ...] = ()
    requires_approval: ApprovalRule = False
    takes_context: bool = False
    is_async: bool = False
    tags: tuple[str, ...] = field(default=())
    #: Its results are text a person wrote (a customer's ticket, a chat message), not a
    #: document: the guards read them as a person's words (direct injection rules, no document
    #: classifier), which keeps a lone customer question from looking like an injected task.
    returns_person_text: bool = False
    #: A label for this implementation, recorded with the runs that use it; bump it when the
    #: tool's behaviour changes in a way runs in flight must not meet silently.
    version: str = "1"

    @property
    def input_schema(self) -> dict[str, Any]:
        return _clean_schema(self.input_model.model_json_schema())

    @property
    def output_schema(self) -> dict[str, Any]:
        return _clean_schema(self.output_adapter.json_schema())

    def schema(self) -> ToolSchema:
        """What the model sees."""
        return ToolSchema(
            name=self.name, description=self.description, parameters=self.input_schema
        )

    def contract(self) -> dict[str, Any]:
        """The full declared contract, as recorded with a run's spec."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "effect": self.effect,
            "idempotent": self.idempotent,
            "timeout": self.timeout,
            "max_attempts": self.retry.max_attempts,
            "preconditions": [c.name for c in self.preconditions],
            "postconditions": [c.name for c in self.postconditions],
            "requires_approval": (
                self.requires_approval if isinstance(self.requires_approval, bool) else "rule"
            ),
            "returns_person_text": self.returns_person_text,
            "version": self.version,
        }

    def needs_approval(self, args: BaseModel) -> bool:
        rule = self.requires_approval
        return rule if isinstance(rule, bool) else bool(rule(args))


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(schema)
    schema.pop("title", None)
    return schema


def _as_conditions(items: Any, kind: str) -> tuple[Condition, ...]:
    out: list[Condition] = []
    for item in items or ():
        if isinstance(item, Condition):
            out.append(item)
        elif callable(item):
            out.append(Condition(name=getattr(item, "__name__", kind), check=item))
        else:
            raise ToolDefinitionError(f"{kind} {item!r} is neither a Condition nor a callable")
    return tuple(out)


def build_tool(
    fn: ToolFunction,
    *,
    name: str | None = None,
    description: str | None = None,
    effect: Effect = "read",
    idempotent: bool | None = None,
    timeout: float = 30.0,
    retry: RetryPolicy | None = None,
    preconditions: Any = (),
    postconditions: Any = (),
    requires_approval: ApprovalRule = False,
    tags: tuple[str, ...] = (),
    returns_person_text: bool = False,
    version: str = "1",
    localns: Mapping[str, Any] | None = None,
) -> Tool:
    """Build a ``Tool`` from ``fn``; see ``tool`` for the meaning of each option.
    ``localns``: names visible where ``fn`` was defined (``@tool`` passes them)."""
    tool_name = name or fn.__name__
    if not _NAME.match(tool_name):
        raise ToolDefinitionError(
            f"tool name {tool_name!r} is not valid",
            hint="Use letters, digits, '_' or '-', starting with a letter, at most 64 characters.",
        )
    if effect not in _EFFECTS:
        raise ToolDefinitionError(
            f"tool {tool_name!r}: effect {effect!r} is not one of {sorted(_EFFECTS)}"
        )
    if timeout <= 0:
        raise ToolDefinitionError(f"tool {tool_name!r}: timeout must be positive")
    try:
        # ``localns``: the scope the tool was defined in, for a tool defined inside a function
        # whose annotations (strings under ``from __future__ import annotations``) name types
        # imported or defined there.
        hints = get_type_hints(fn, localns=dict(localns) if localns else None)
    except Exception as exc:  # NameError from unresolved forward refs, mostly
        raise ToolDefinitionError(
            f"tool {tool_name!r}: cannot read type hints: {exc}",
            hint="Import the types its parameters use where the function is defined.",
        ) from exc
    sig = inspect.signature(fn)
    fields: dict[str, Any] = {}
    takes_context = False
    for index, (pname, param) in enumerate(sig.parameters.items()):
        annotation = hints.get(pname)
        if annotation is ToolContext:
            if index != 0:
                raise ToolDefinitionError(f"tool {tool_name!r}: ToolContext must come first")
            takes_context = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {tool_name!r}: *args/**kwargs are not supported")
        if annotation is None:
            raise ToolDefinitionError(f"tool {tool_name!r}: parameter {pname!r} has no type hint")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, default)
    if "return" not in hints:
        raise ToolDefinitionError(f"tool {tool_name!r}: the return value has no type hint")
    model_name = "".join(part.title() for part in re.split(r"[_\-]", tool_name)) + "Args"
    input_model = create_model(  # type: ignore[call-overload]
        model_name, __config__=ConfigDict(extra="forbid"), **fields
    )
    doc = inspect.getdoc(fn) or ""
    return Tool(
        name=tool_name,
        description=description if description is not None else doc,
        fn=fn,
        input_model=input_model,
        output_adapter=TypeAdapter(hints["return"]),
        effect=effect,
        # Tools that change nothing are idempotent unless said otherwise.
        idempotent=idempotent if idempotent is not None else effect in ("none", "read"),
        timeout=timeout,
        retry=retry or NO_RETRY,
        preconditions=_as_conditions(preconditions, "precondition"),
        postconditions=_as_conditions(postconditions, "postcondition"),
        requires_approval=requires_approval,
        takes_context=takes_context,
        is_async=inspect.iscoroutinefunction(fn),
        tags=tags,
        returns_person_text=returns_person_text,
        version=version,
    )


@overload
def tool(fn: ToolFunction, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    effect: Effect = "read",
    idempotent: bool | None = None,
    timeout: float = 30.0,
    retry: RetryPolicy | None = None,
    preconditions: Any = (),
    postconditions: Any = (),
    requires_approval: ApprovalRule = False,
    tags: tuple[str, ...] = (),
    returns_person_text: bool = False,
    version: str = "1",
) -> Callable[[ToolFunction], Tool]: ...


def tool(
    fn: ToolFunction | None = None, /, **options: Any
) -> Tool | Callable[[ToolFunction], Tool]:
    """Declare a tool. Use bare (``@tool``) or with options (``@tool(effect="write")``).

    Options: ``effect`` (none | read | write | external), ``idempotent`` (default True for
    none/read), ``timeout`` seconds, ``retry`` (RetryPolicy; which exceptions are retryable),
    ``preconditions``/``postconditions`` (Condition or callables), ``requires_approval`` (bool or
    a predicate on the validated arguments), ``returns_person_text`` (its results are a person's
    words, such as a customer's ticket: guards read them as such), ``version`` (a label recorded
    with the runs that use it). The docstring becomes the description.
    """
    if fn is not None:
        return build_tool(fn, localns=_caller_locals(), **options)

    def decorate(f: ToolFunction) -> Tool:
        return build_tool(f, localns=_caller_locals(), **options)

    return decorate


def _caller_locals() -> Mapping[str, Any] | None:
    """The local names of the scope that applied ``@tool`` (two frames up), if it is a
    function's (a module's names are the function's globals already)."""
    frame = inspect.currentframe()
    caller = frame.f_back.f_back if frame is not None and frame.f_back is not None else None
    if caller is None or caller.f_locals is caller.f_globals:
        return None
    return dict(caller.f_locals)


def tools_by_name(tools: Mapping[str, Tool] | list[Tool]) -> dict[str, Tool]:
    items = tools.values() if isinstance(tools, Mapping) else tools
    return {t.name: t for t in items}

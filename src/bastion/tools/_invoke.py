"""Running one tool call under its contract: validate, check, call with a timeout, validate.

Owns: one attempt of one call. Does not own retries, journaling or approval: the engine does
those around this function so that every attempt is recorded.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from pydantic import BaseModel, ValidationError

from bastion.core.errors import (
    BastionError,
    PreconditionFailed,
    RunCancelled,
    ToolArgumentsInvalid,
    ToolContractViolation,
    ToolFailed,
    ToolTimeout,
)
from bastion.tools._context import ToolContext
from bastion.tools._tool import EffectNotStarted, Tool, ToolError


def validate_arguments(tool: Tool, arguments: dict[str, Any]) -> BaseModel:
    """Validate model-supplied arguments; the error text is written for the model to read."""
    try:
        return tool.input_model.model_validate(arguments)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ToolArgumentsInvalid(
            f"arguments for tool {tool.name!r} are invalid: {problems}", tool=tool.name
        ) from None


def check_preconditions(tool: Tool, args: BaseModel) -> None:
    for cond in tool.preconditions:
        if not cond.check(args):
            raise PreconditionFailed(
                cond.message or f"precondition {cond.name!r} of tool {tool.name!r} does not hold",
                tool=tool.name,
                condition=cond.name,
            )


async def _call(tool: Tool, args: BaseModel, ctx: ToolContext) -> Any:
    kwargs = {name: getattr(args, name) for name in type(args).model_fields}
    positional = (ctx,) if tool.takes_context else ()
    if tool.is_async:
        return await tool.fn(*positional, **kwargs)
    return await asyncio.to_thread(functools.partial(tool.fn, *positional, **kwargs))


def is_retryable(tool: Tool, exc: BaseException) -> bool:
    if isinstance(exc, BastionError):
        return exc.retryable
    return isinstance(exc, tool.retry.retry_on)


def _tool_failed(tool: Tool, ctx: ToolContext, exc: Exception) -> ToolFailed:
    not_started = isinstance(exc, EffectNotStarted)
    err = ToolFailed(
        f"tool {tool.name!r} raised {type(exc).__name__}: {exc}",
        run_id=ctx.run_id,
        step_no=ctx.step_no,
        tool=tool.name,
        exception=type(exc).__name__,
        may_have_acted=not not_started,
    )
    # A call that never started is always safe to try again, within the retry policy.
    err.retryable = not_started or is_retryable(tool, exc)
    return err


async def invoke_tool(tool: Tool, args: BaseModel, ctx: ToolContext) -> Any:
    """Run one attempt. Returns the JSON-ready result; raises ``ToolError`` (for the model),
    ``ToolTimeout``, ``ToolFailed`` (``retryable`` set from the tool's retry policy) or
    ``ToolContractViolation``. A ``ToolFailed`` carries ``details["may_have_acted"]``: False
    only when the tool raised ``EffectNotStarted``."""
    deadline = asyncio.timeout(tool.timeout)
    try:
        async with deadline:
            raw = await _call(tool, args, ctx)
    except TimeoutError as exc:
        if not deadline.expired():  # the tool's own TimeoutError, not Bastion's deadline
            raise _tool_failed(tool, ctx, exc) from exc
        # The call was abandoned, not stopped: a sync tool's thread runs on, and the outside
        # system may act after this point.
        raise ToolTimeout(
            f"tool {tool.name!r} did not finish within {tool.timeout}s",
            run_id=ctx.run_id,
            step_no=ctx.step_no,
            tool=tool.name,
            may_have_acted=True,
        ) from None
    except (ToolError, RunCancelled, asyncio.CancelledError):
        raise
    except BastionError:
        raise
    except Exception as exc:  # a tool's own failure: translated, never swallowed
        raise _tool_failed(tool, ctx, exc) from exc
    try:
        result = tool.output_adapter.validate_python(raw)
    except ValidationError as exc:
        raise ToolContractViolation(
            f"tool {tool.name!r} returned data that breaks its output contract: "
            f"{exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}",
            run_id=ctx.run_id,
            step_no=ctx.step_no,
            tool=tool.name,
            may_have_acted=True,
        ) from None
    for cond in tool.postconditions:
        if not cond.check(args, result):
            raise ToolContractViolation(
                cond.message or f"postcondition {cond.name!r} of tool {tool.name!r} failed",
                run_id=ctx.run_id,
                step_no=ctx.step_no,
                tool=tool.name,
                condition=cond.name,
                may_have_acted=True,
            )
    return tool.output_adapter.dump_python(result, mode="json")

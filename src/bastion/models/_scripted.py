"""Scripted and function models: ``ModelProvider``s whose answers a test or a demo decides
(the ``scripted:`` provider kind; ``bastion.testing`` re-exports them for users' tests).

Owns: deterministic model behaviour for tests and demos. Real model calls are never made here.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bastion.core.errors import BastionError
from bastion.core.messages import Message, ModelRequest, ModelResponse, ToolCall, Usage

_ids = itertools.count(1)


class UnexpectedModelCall(BastionError):
    code = "unexpected_model_call"
    default_hint = "Add a response to the script for this call, or check why the run asked again."


class UnconsumedResponses(BastionError):
    code = "unconsumed_model_responses"
    default_hint = "The run stopped before using every scripted response."


def call(name: str, arguments: dict[str, Any] | None = None, *, id: str | None = None) -> ToolCall:
    """A tool call, for use in scripted responses."""
    return ToolCall(id=id or f"call_{next(_ids)}", name=name, arguments=arguments or {})


def reply(
    text: str | None = None,
    *calls: ToolCall,
    input_tokens: int = 10,
    output_tokens: int = 5,
    cost_usd: float = 0.0,
) -> ModelResponse:
    """A scripted assistant response: text, tool calls, or both."""
    return ModelResponse(
        message=Message.assistant(text, tuple(calls)),
        usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd),
        finish_reason="tool_calls" if calls else "stop",
        provider="scripted",
    )


ScriptItem = ModelResponse | BaseException | Callable[[ModelRequest], ModelResponse]


class ScriptedModel:
    """Answers each ``complete`` with the next scripted item (a response, an exception to raise,
    or a function of the request). Records every request in ``calls``.

    Raises ``UnexpectedModelCall`` when the script is exhausted; ``assert_complete()`` raises
    ``UnconsumedResponses`` if items are left.
    """

    def __init__(self, script: Iterable[ScriptItem] = (), *, name: str = "scripted") -> None:
        self.name = name
        self._script: list[ScriptItem] = list(script)
        self.calls: list[ModelRequest] = []

    def add(self, *items: ScriptItem) -> None:
        self._script.extend(items)

    @property
    def remaining(self) -> int:
        return len(self._script)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls.append(request)
        if not self._script:
            last = request.messages[-1].content if request.messages else None
            raise UnexpectedModelCall(
                f"scripted model got call #{len(self.calls)} but its script is empty",
                last_message=(last or "")[:200],
            )
        item = self._script.pop(0)
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, ModelResponse):
            return item.model_copy(update={"model": request.model})
        return item(request)

    def assert_complete(self) -> None:
        if self._script:
            raise UnconsumedResponses(f"{len(self._script)} scripted responses were not used")

    async def aclose(self) -> None:
        return None


ModelFunction = Callable[[ModelRequest], ModelResponse | Awaitable[ModelResponse]]


class FunctionModel:
    """Calls ``fn(request)`` (sync or async) for every completion. Records requests in ``calls``."""

    def __init__(self, fn: ModelFunction, *, name: str = "function") -> None:
        self.name = name
        self._fn = fn
        self.calls: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls.append(request)
        out = self._fn(request)
        if inspect.isawaitable(out):
            out = await out
        assert isinstance(out, ModelResponse)
        await asyncio.sleep(0)
        return out

    async def aclose(self) -> None:
        return None

"""Anthropic Messages API (``POST /v1/messages``) over httpx.

Owns: mapping ``ModelRequest`` to Anthropic's wire format (separate system prompt, ``tool_use`` /
``tool_result`` content blocks, ``tool_choice``) and back; structured JSON output through a
forced "output tool" whose input is the answer. Does not own: retries or fallback (the router),
nor HTTP failure translation (``_http``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from bastion.core.messages import (
    FinishReason,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    Usage,
)
from bastion.models._http import JsonDict, cost_usd, invalid, metadata_headers, post_json

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}


def _blocks(message: Message) -> tuple[str, list[JsonDict]]:
    """The Anthropic role and content blocks for one non-system message."""
    if message.role == "tool":
        return "user", [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content or "",
            }
        ]
    blocks: list[JsonDict] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        # Anthropic only accepts an object as tool input; a call whose arguments failed to parse
        # is replayed with empty input (its tool_result carries the parse error for the model).
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": call.arguments if call.parse_error is None else {},
            }
        )
    role = "assistant" if message.role == "assistant" else "user"
    return role, blocks


def encode_messages(messages: tuple[Message, ...]) -> tuple[str | None, list[JsonDict]]:
    """The separate system prompt and the alternating user/assistant turns.

    Consecutive messages with the same Anthropic role are merged into one turn: the API rejects
    two user turns in a row, and several tool results for one assistant turn must travel together.
    """
    system = [m.content for m in messages if m.role == "system" and m.content]
    turns: list[JsonDict] = []
    for message in messages:
        if message.role == "system":
            continue
        role, blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return ("\n\n".join(system) if system else None), turns


def encode_request(request: ModelRequest, *, default_max_tokens: int) -> JsonDict:
    """The JSON body for ``POST /v1/messages``."""
    system, turns = encode_messages(request.messages)
    body: JsonDict = {
        "model": request.model,
        "max_tokens": request.max_tokens or default_max_tokens,
        "messages": turns,
    }
    if system:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    tools: list[JsonDict] = [
        {"name": t.name, "description": t.description, "input_schema": t.parameters}
        for t in request.tools
    ]
    choice: JsonDict | None = _tool_choice(request.tool_choice) if tools else None
    fmt = request.response_format
    if fmt is not None:
        tools.append(
            {
                "name": fmt.name,
                "description": "Give the final answer by calling this tool with it as input.",
                "input_schema": fmt.json_schema,
            }
        )
        if choice is None or choice["type"] == "none":
            choice = {"type": "tool", "name": fmt.name}
        elif choice["type"] == "auto":
            # With real tools and an output format, finishing means calling the output tool;
            # plain text would be an answer in the wrong shape.
            choice = {"type": "any"}
    if tools:
        body["tools"] = tools
    if choice is not None:
        body["tool_choice"] = choice
    return body


def _tool_choice(choice: str) -> JsonDict:
    match choice:
        case "auto":
            return {"type": "auto"}
        case "required":
            return {"type": "any"}
        case "none":
            return {"type": "none"}
        case name:
            return {"type": "tool", "name": name}


def decode_response(
    provider: str,
    data: JsonDict,
    *,
    model: str,
    output_tool: str | None,
    prices: Mapping[str, tuple[float, float]],
) -> ModelResponse:
    """The Messages API response as a ``ModelResponse``. A call of ``output_tool`` (structured
    output) becomes the message's JSON text, not a tool call."""
    content = data.get("content")
    if not isinstance(content, list):
        raise invalid(provider, "content is not a list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    structured: str | None = None
    for index, block in enumerate(content):
        if not isinstance(block, dict):
            raise invalid(provider, f"content[{index}] is not an object")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise invalid(provider, f"content[{index}] text is not a string")
            texts.append(text)
        elif kind == "tool_use":
            call = _decode_tool_use(provider, block, index)
            if output_tool is not None and call.name == output_tool and call.parse_error is None:
                structured = json.dumps(call.arguments, ensure_ascii=False)
            else:
                calls.append(call)
        # Other block kinds (thinking, server tools) carry nothing the engine acts on.
    finish = _STOP.get(str(data.get("stop_reason")), "stop")
    if calls:
        finish = "tool_calls"
    elif structured is not None:
        finish = "stop"
    text = structured if structured is not None else ("".join(texts) if texts else None)
    answered_model = data.get("model")
    return ModelResponse(
        message=Message.assistant(text, tuple(calls)),
        usage=_decode_usage(provider, data.get("usage"), model=model, prices=prices),
        model=answered_model if isinstance(answered_model, str) and answered_model else model,
        provider=provider,
        finish_reason=finish,
    )


def _decode_tool_use(provider: str, block: JsonDict, index: int) -> ToolCall:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str) or not name:
        raise invalid(provider, f"content[{index}] tool_use lacks id or name")
    arguments = block.get("input")
    if isinstance(arguments, dict):
        return ToolCall(id=call_id, name=name, arguments=arguments)
    # Models behind compatible proxies occasionally send the input as a (possibly broken) string.
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    try:
        parsed: Any = json.loads(raw)
    except ValueError as exc:
        return ToolCall(id=call_id, name=name, raw_arguments=raw, parse_error=str(exc))
    if not isinstance(parsed, dict):
        return ToolCall(
            id=call_id, name=name, raw_arguments=raw, parse_error="input must be a JSON object"
        )
    return ToolCall(id=call_id, name=name, arguments=parsed, raw_arguments=raw)


def _decode_usage(
    provider: str, raw: Any, *, model: str, prices: Mapping[str, tuple[float, float]]
) -> Usage:
    if raw is None:
        return Usage()
    if not isinstance(raw, dict):
        raise invalid(provider, "usage is not an object")
    counts: list[int] = []
    for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                "cache_read_input_tokens"):  # fmt: skip
        value = raw.get(key) or 0
        if not isinstance(value, int):
            raise invalid(provider, f"usage.{key} is not an integer")
        counts.append(value)
    tokens_in = counts[0] + counts[2] + counts[3]
    tokens_out = counts[1]
    return Usage(
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=cost_usd(dict(prices), model, tokens_in, tokens_out),
    )


class AnthropicProvider:
    """A ``ModelProvider`` for the Anthropic Messages API.

    ``prices`` maps a model name to ``(usd_per_1M_input, usd_per_1M_output)``; ``transport``
    replaces the network (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        *,
        name: str = "anthropic",
        base_url: str = "https://api.anthropic.com",
        api_key: str | None = None,
        timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._prices = dict(prices or {})
        self._default_max_tokens = default_max_tokens
        default_headers = {"anthropic-version": API_VERSION, **dict(headers or {})}
        if api_key:
            default_headers["x-api-key"] = api_key
        self._client = httpx.AsyncClient(
            timeout=timeout, headers=default_headers, transport=transport
        )

    async def complete(self, request: ModelRequest) -> ModelResponse:
        data = await post_json(
            self._client,
            provider=self.name,
            url=f"{self.base_url}/v1/messages",
            body=encode_request(request, default_max_tokens=self._default_max_tokens),
            headers=metadata_headers(request.metadata),
        )
        fmt = request.response_format
        return decode_response(
            self.name,
            data,
            model=request.model,
            output_tool=fmt.name if fmt is not None else None,
            prices=self._prices,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

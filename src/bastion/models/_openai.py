"""OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp server) over httpx.

Owns: mapping ``ModelRequest`` to the ``/chat/completions`` wire format and the response back,
including tool calls whose argument JSON is malformed (kept, not raised). Does not own: retries,
fallback or breakers (the router), nor HTTP failure translation (``_http``).
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

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}


def encode_message(message: Message) -> JsonDict:
    """One ``Message`` in the chat-completions shape."""
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content or "",
        }
    out: JsonDict = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": call.name,
                    # Echo malformed arguments verbatim: the model must see what it wrote to
                    # understand the error it is being told about.
                    "arguments": call.raw_arguments
                    if call.parse_error is not None and call.raw_arguments is not None
                    else json.dumps(call.arguments, ensure_ascii=False),
                },
            }
            for call in message.tool_calls
        ]
    elif out["content"] is None:
        out["content"] = ""
    return out


def encode_request(request: ModelRequest) -> JsonDict:
    """The JSON body for ``POST /chat/completions``."""
    body: JsonDict = {
        "model": request.model,
        "messages": [encode_message(m) for m in request.messages],
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
        choice = request.tool_choice
        body["tool_choice"] = (
            choice
            if choice in ("auto", "required", "none")
            else {"type": "function", "function": {"name": choice}}
        )
    if request.response_format is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": request.response_format.name,
                "schema": request.response_format.json_schema,
            },
        }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        # ``max_tokens`` rather than ``max_completion_tokens``: every compatible server knows it.
        body["max_tokens"] = request.max_tokens
    return body


def decode_tool_call(provider: str, raw: Any, index: int) -> ToolCall:
    """One wire tool call. Bad argument JSON becomes ``parse_error``; a missing function name is
    a malformed response (nothing could be fed back to the model)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise invalid(provider, f"tool_calls[{index}] has no function object")
    function = raw["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(provider, f"tool_calls[{index}] has no function name")
    # Some compatible servers omit ids; the engine needs one to pair the result with the call.
    call_id = raw.get("id") if isinstance(raw.get("id"), str) and raw.get("id") else None
    call_id = call_id or f"call_{index}"
    arguments = function.get("arguments")
    if isinstance(arguments, dict):  # a few servers send an object instead of a string
        return ToolCall(id=call_id, name=name, arguments=arguments)
    if arguments is None or arguments == "":
        return ToolCall(id=call_id, name=name, arguments={}, raw_arguments=arguments)
    if not isinstance(arguments, str):
        return ToolCall(
            id=call_id,
            name=name,
            raw_arguments=json.dumps(arguments),
            parse_error="arguments must be a JSON object",
        )
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        return ToolCall(id=call_id, name=name, raw_arguments=arguments, parse_error=str(exc))
    if not isinstance(parsed, dict):
        return ToolCall(
            id=call_id,
            name=name,
            raw_arguments=arguments,
            parse_error=f"arguments must be a JSON object, got {type(parsed).__name__}",
        )
    return ToolCall(id=call_id, name=name, arguments=parsed, raw_arguments=arguments)


def decode_response(
    provider: str, data: JsonDict, *, model: str, prices: Mapping[str, tuple[float, float]]
) -> ModelResponse:
    """The chat-completions response body as a ``ModelResponse``."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise invalid(provider, "no choices")
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise invalid(provider, "choices[0] has no message")
    raw_message = choice["message"]
    content = raw_message.get("content")
    if content is not None and not isinstance(content, str):
        raise invalid(provider, "message content is not a string")
    raw_calls = raw_message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise invalid(provider, "tool_calls is not a list")
    calls = tuple(decode_tool_call(provider, c, i) for i, c in enumerate(raw_calls))
    finish = _FINISH.get(str(choice.get("finish_reason")), "stop")
    if calls:
        finish = "tool_calls"
    usage = _decode_usage(provider, data.get("usage"), model=model, prices=prices)
    answered_model = data.get("model")
    return ModelResponse(
        message=Message.assistant(content, calls),
        usage=usage,
        model=answered_model if isinstance(answered_model, str) and answered_model else model,
        provider=provider,
        finish_reason=finish,
    )


def _decode_usage(
    provider: str, raw: Any, *, model: str, prices: Mapping[str, tuple[float, float]]
) -> Usage:
    if raw is None:
        return Usage()
    if not isinstance(raw, dict):
        raise invalid(provider, "usage is not an object")
    tokens_in = raw.get("prompt_tokens", 0) or 0
    tokens_out = raw.get("completion_tokens", 0) or 0
    if not isinstance(tokens_in, int) or not isinstance(tokens_out, int):
        raise invalid(provider, "usage token counts are not integers")
    return Usage(
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=cost_usd(dict(prices), model, tokens_in, tokens_out),
    )


class OpenAIProvider:
    """A ``ModelProvider`` for any OpenAI-compatible ``/chat/completions`` endpoint.

    ``prices`` maps a model name to ``(usd_per_1M_input, usd_per_1M_output)`` for cost
    accounting. ``transport`` replaces the network (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        *,
        name: str = "openai",
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._prices = dict(prices or {})
        default_headers = dict(headers or {})
        if api_key:
            default_headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            timeout=timeout, headers=default_headers, transport=transport
        )

    async def complete(self, request: ModelRequest) -> ModelResponse:
        data = await post_json(
            self._client,
            provider=self.name,
            url=f"{self.base_url}/chat/completions",
            body=encode_request(request),
            headers=metadata_headers(request.metadata),
        )
        return decode_response(self.name, data, model=request.model, prices=self._prices)

    async def aclose(self) -> None:
        await self._client.aclose()

"""AnthropicProvider against a real HTTP server on 127.0.0.1 speaking the Messages API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.core.errors import (
    ProviderAuthError,
    ProviderRateLimited,
    ProviderRequestRejected,
    ProviderResponseInvalid,
    ProviderUnavailable,
)
from bastion.core.messages import Message, ModelRequest, ResponseFormat, ToolSchema
from bastion.models import AnthropicProvider
from bastion.testing import HttpStubServer, StubResponse

WEATHER = ToolSchema(
    name="get_weather",
    description="Weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def message(*blocks: dict[str, Any], stop: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": list(blocks),
        "stop_reason": stop,
        "usage": {"input_tokens": 20, "output_tokens": 4, **usage},
    }


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


@pytest.fixture
def server() -> Iterator[HttpStubServer]:
    with HttpStubServer() as stub:
        yield stub


def provider_for(server: HttpStubServer, **kw: Any) -> AnthropicProvider:
    return AnthropicProvider(base_url=server.url, api_key="ak-test", **kw)


async def test_tool_call_round_trip(server: HttpStubServer) -> None:
    server.add(
        StubResponse(
            json=message(
                text("Let me check."),
                tool_use("toolu_1", "get_weather", {"city": "Oslo"}),
                tool_use("toolu_2", "get_weather", {"city": "Bergen"}),
                stop="tool_use",
            )
        ),
        StubResponse(json=message(text("Cold in both."))),
    )
    provider = provider_for(server)
    request = ModelRequest(
        model="claude-3-5-haiku",
        messages=(Message.system("Be brief."), Message.user("Oslo and Bergen?")),
        tools=(WEATHER,),
        tool_choice="required",
        metadata={"run_id": "r", "step_no": "1", "tenant": "acme"},
    )
    first = await provider.complete(request)
    assert first.finish_reason == "tool_calls"
    assert first.message.content == "Let me check."
    assert [c.arguments for c in first.message.tool_calls] == [{"city": "Oslo"}, {"city": "Bergen"}]

    history = (
        *request.messages,
        first.message,
        Message.tool("toolu_1", "get_weather", "-5C"),
        Message.tool("toolu_2", "get_weather", "-7C"),
    )
    second = await provider.complete(request.model_copy(update={"messages": history}))
    await provider.aclose()
    assert second.message.content == "Cold in both." and second.finish_reason == "stop"

    first_sent = server.requests[0]
    assert first_sent.path == "/v1/messages"
    assert first_sent.headers["x-api-key"] == "ak-test"
    assert first_sent.headers["anthropic-version"] == "2023-06-01"
    assert first_sent.headers["idempotency-key"] == "r:1"
    assert "acme" not in str(first_sent.headers) and "acme" not in first_sent.body.decode()
    body = first_sent.json()
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 1024
    assert body["tool_choice"] == {"type": "any"}
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city.",
            "input_schema": WEATHER.parameters,
        }
    ]
    turns = server.requests[1].json()["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][1] == tool_use("toolu_1", "get_weather", {"city": "Oslo"})
    # Both tool results travel in one user turn, as the API requires.
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "-5C"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "-7C"},
    ]
    server.assert_complete()


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
    ],
)
async def test_tool_choice_mapping(server: HttpStubServer, choice: str, wire: Any) -> None:
    server.add(StubResponse(json=message(text("ok"))))
    provider = provider_for(server)
    await provider.complete(
        ModelRequest(model="m", messages=(Message.user("x"),), tools=(WEATHER,), tool_choice=choice)
    )
    await provider.aclose()
    assert server.requests[0].json()["tool_choice"] == wire


async def test_structured_output_through_forced_tool_and_usage(server: HttpStubServer) -> None:
    schema = {"type": "object", "properties": {"total": {"type": "number"}}}
    server.add(
        StubResponse(
            json=message(
                tool_use("toolu_9", "invoice", {"total": 42}),
                stop="tool_use",
                input_tokens=2000,
                output_tokens=100,
                cache_read_input_tokens=1000,
            )
        )
    )
    provider = provider_for(server, prices={"claude-3-5-haiku": (0.8, 4.0)})
    out = await provider.complete(
        ModelRequest(
            model="claude-3-5-haiku",
            messages=(Message.user("sum it"),),
            response_format=ResponseFormat(name="invoice", json_schema=schema),
            max_tokens=300,
        )
    )
    await provider.aclose()
    assert out.message.tool_calls == ()
    assert json.loads(out.message.content or "") == {"total": 42}
    assert out.finish_reason == "stop"
    assert (out.usage.input_tokens, out.usage.output_tokens) == (3000, 100)
    assert out.usage.cost_usd == pytest.approx((3000 * 0.8 + 100 * 4.0) / 1e6)
    body = server.requests[0].json()
    assert body["tool_choice"] == {"type": "tool", "name": "invoice"}
    assert body["tools"][0]["input_schema"] == schema
    assert body["max_tokens"] == 300


async def test_output_format_with_tools_requires_some_tool(server: HttpStubServer) -> None:
    server.add(StubResponse(json=message(tool_use("t", "get_weather", {"city": "X"}))))
    provider = provider_for(server)
    out = await provider.complete(
        ModelRequest(
            model="m",
            messages=(Message.user("x"),),
            tools=(WEATHER,),
            response_format=ResponseFormat(name="final", json_schema={"type": "object"}),
        )
    )
    await provider.aclose()
    assert out.message.tool_calls[0].name == "get_weather"
    body = server.requests[0].json()
    assert body["tool_choice"] == {"type": "any"}
    assert [t["name"] for t in body["tools"]] == ["get_weather", "final"]


async def test_unparsable_tool_input_is_kept_and_replayed_as_empty(server: HttpStubServer) -> None:
    server.add(
        StubResponse(json=message(tool_use("t1", "get_weather", '{"city": '), stop="tool_use")),
        StubResponse(json=message(text("sorry"))),
    )
    provider = provider_for(server)
    out = await provider.complete(ModelRequest(model="m", messages=(Message.user("x"),)))
    (call,) = out.message.tool_calls
    assert call.parse_error and call.raw_arguments == '{"city": '
    history = (Message.user("x"), out.message, Message.tool("t1", "get_weather", "bad JSON"))
    await provider.complete(ModelRequest(model="m", messages=history))
    await provider.aclose()
    assert server.requests[1].json()["messages"][1]["content"][0]["input"] == {}


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, ProviderRateLimited),
        (529, ProviderUnavailable),
        (500, ProviderUnavailable),
        (401, ProviderAuthError),
        (400, ProviderRequestRejected),
    ],
)
async def test_http_status_translation(
    server: HttpStubServer, status: int, error: type[Exception]
) -> None:
    server.add(
        StubResponse(
            status=status,
            headers={"retry-after": "3"} if status == 429 else {},
            json={"type": "error", "error": {"type": "some_error", "message": "busy or bad"}},
        )
    )
    provider = provider_for(server)
    with pytest.raises(error, match="busy or bad") as info:
        await provider.complete(ModelRequest(model="m", messages=(Message.user("x"),)))
    await provider.aclose()
    if isinstance(info.value, ProviderRateLimited):
        assert info.value.retry_after == 3.0


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"type": "message"}),
        json.dumps({"content": [{"type": "text", "text": 3}]}),
        json.dumps({"content": [{"type": "tool_use", "input": {}}]}),
        json.dumps({"content": [], "usage": {"input_tokens": "many"}}),
    ],
)
async def test_malformed_body_is_response_invalid(server: HttpStubServer, body: str) -> None:
    server.add(StubResponse(body=body))
    provider = provider_for(server)
    with pytest.raises(ProviderResponseInvalid):
        await provider.complete(ModelRequest(model="m", messages=(Message.user("x"),)))
    await provider.aclose()


async def test_timeout_is_unavailable(server: HttpStubServer) -> None:
    server.add(StubResponse(json=message(text("late")), delay=1.0))
    provider = provider_for(server, timeout=0.1)
    with pytest.raises(ProviderUnavailable):
        await provider.complete(ModelRequest(model="m", messages=(Message.user("x"),)))
    await provider.aclose()

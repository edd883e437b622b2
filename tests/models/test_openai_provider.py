"""OpenAIProvider against a real HTTP server on 127.0.0.1 speaking chat completions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bastion.core.errors import (
    ProviderAuthError,
    ProviderRateLimited,
    ProviderRequestRejected,
    ProviderResponseInvalid,
    ProviderUnavailable,
)
from bastion.core.messages import (
    Message,
    ModelRequest,
    ResponseFormat,
    ToolCall,
    ToolSchema,
)
from bastion.models import OpenAIProvider
from bastion.testing import HttpStubServer, StubResponse

WEATHER = ToolSchema(
    name="get_weather",
    description="Weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def completion(
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    *,
    finish: str = "stop",
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def wire_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.fixture
def server() -> Iterator[HttpStubServer]:
    with HttpStubServer() as stub:
        yield stub


def provider_for(server: HttpStubServer, **kw: Any) -> OpenAIProvider:
    return OpenAIProvider(base_url=f"{server.url}/v1", api_key="sk-test", **kw)


def ask(text: str = "hi", **kw: Any) -> ModelRequest:
    return ModelRequest(model="gpt-4o-mini", messages=(Message.user(text),), **kw)


async def test_tool_call_round_trip(server: HttpStubServer) -> None:
    server.add(
        StubResponse(
            json=completion(
                None,
                [wire_call("call_a", "get_weather", '{"city": "Paris"}')],
                finish="tool_calls",
            )
        ),
        StubResponse(json=completion("It is sunny in Paris.")),
    )
    provider = provider_for(server)
    first = await provider.complete(ask("Weather in Paris?", tools=(WEATHER,)))
    assert first.finish_reason == "tool_calls"
    (call,) = first.message.tool_calls
    assert (call.id, call.name, call.arguments, call.parse_error) == (
        "call_a",
        "get_weather",
        {"city": "Paris"},
        None,
    )

    history = (
        Message.system("Be brief."),
        Message.user("Weather in Paris?"),
        first.message,
        Message.tool("call_a", "get_weather", '{"sky": "sunny"}'),
    )
    second = await provider.complete(
        ModelRequest(
            model="gpt-4o-mini",
            messages=history,
            tools=(WEATHER,),
            tool_choice="get_weather",
            metadata={"idempotency_key": "run1:3"},
        )
    )
    assert second.message.content == "It is sunny in Paris."
    assert second.provider == "openai"
    await provider.aclose()

    sent = server.requests[1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["idempotency-key"] == "run1:3"
    body = sent.json()
    assert body["model"] == "gpt-4o-mini"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    assistant = body["messages"][2]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert body["messages"][3] == {
        "role": "tool",
        "tool_call_id": "call_a",
        "content": '{"sky": "sunny"}',
    }
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tools"][0]["function"]["parameters"] == WEATHER.parameters
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    server.assert_complete()


async def test_structured_output_and_usage_cost(server: HttpStubServer) -> None:
    schema = {"type": "object", "properties": {"total": {"type": "number"}}}
    server.add(
        StubResponse(
            json=completion(
                '{"total": 42}', usage={"prompt_tokens": 1000, "completion_tokens": 500}
            )
        )
    )
    provider = provider_for(server, prices={"gpt-4o-mini": (0.15, 0.60)})
    out = await provider.complete(
        ask("sum", response_format=ResponseFormat(name="invoice", json_schema=schema))
    )
    await provider.aclose()
    assert json.loads(out.message.content or "") == {"total": 42}
    assert out.usage.input_tokens == 1000 and out.usage.output_tokens == 500
    assert out.usage.cost_usd == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)
    assert out.model == "gpt-4o-mini-2024-07-18"
    body = server.requests[0].json()
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "invoice", "schema": schema},
    }
    assert "tools" not in body and "tool_choice" not in body


async def test_malformed_tool_arguments_are_kept_not_raised(server: HttpStubServer) -> None:
    server.add(
        StubResponse(
            json=completion(
                None,
                [
                    wire_call("c1", "get_weather", '{"city": "Par'),
                    wire_call("c2", "get_weather", '["Paris"]'),
                ],
                finish="tool_calls",
            )
        ),
        StubResponse(json=completion("ok")),
    )
    provider = provider_for(server)
    out = await provider.complete(ask(tools=(WEATHER,)))
    broken, wrong_type = out.message.tool_calls
    assert broken.parse_error and broken.raw_arguments == '{"city": "Par'
    assert broken.arguments == {}
    assert wrong_type.parse_error and "object" in wrong_type.parse_error

    # Fed back, the model sees exactly what it wrote.
    history = (Message.user("hi"), out.message, Message.tool("c1", "get_weather", "bad JSON"))
    await provider.complete(ModelRequest(model="m", messages=history))
    await provider.aclose()
    echoed = server.requests[1].json()["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert echoed == '{"city": "Par'


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (429, {"retry-after": "7"}, ProviderRateLimited),
        (500, {}, ProviderUnavailable),
        (503, {}, ProviderUnavailable),
        (401, {}, ProviderAuthError),
        (403, {}, ProviderAuthError),
        (400, {}, ProviderRequestRejected),
        (404, {}, ProviderRequestRejected),
    ],
)
async def test_http_status_translation(
    server: HttpStubServer, status: int, headers: dict[str, str], error: type[Exception]
) -> None:
    server.add(
        StubResponse(
            status=status, headers=headers, json={"error": {"message": "nope", "type": "x"}}
        )
    )
    provider = provider_for(server)
    with pytest.raises(error) as info:
        await provider.complete(ask())
    await provider.aclose()
    exc = info.value
    assert "nope" in str(exc)
    assert getattr(exc, "status", None) == status
    if isinstance(exc, ProviderRateLimited):
        assert exc.retry_after == 7.0


@pytest.mark.parametrize(
    "body",
    [
        "<html>bad gateway</html>",
        json.dumps({"id": "x"}),
        json.dumps({"choices": []}),
        json.dumps({"choices": [{"message": "text"}]}),
        json.dumps({"choices": [{"message": {"content": 5}}]}),
        json.dumps({"choices": [{"message": {"tool_calls": [{"function": {}}]}}]}),
        json.dumps([1, 2]),
    ],
)
async def test_malformed_body_is_response_invalid(server: HttpStubServer, body: str) -> None:
    server.add(StubResponse(body=body))
    provider = provider_for(server)
    with pytest.raises(ProviderResponseInvalid) as info:
        await provider.complete(ask())
    await provider.aclose()
    assert info.value.retryable


async def test_server_too_slow_is_unavailable(server: HttpStubServer) -> None:
    server.add(StubResponse(json=completion("late"), delay=1.0))
    provider = provider_for(server, timeout=0.1)
    with pytest.raises(ProviderUnavailable) as info:
        await provider.complete(ask())
    await provider.aclose()
    assert info.value.details["reason"] == "timeout"


async def test_connection_refused_is_unavailable() -> None:
    with HttpStubServer() as stub:
        url = stub.url  # a port that was just ours and is now closed
    provider = OpenAIProvider(base_url=url, api_key="k", timeout=2.0)
    with pytest.raises(ProviderUnavailable):
        await provider.complete(ask())
    await provider.aclose()


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("slow"), httpx.ConnectError("down"), httpx.RemoteProtocolError("x")]
)
async def test_transport_faults_are_unavailable(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    provider = OpenAIProvider(api_key="k", transport=httpx.MockTransport(handler))
    with pytest.raises(ProviderUnavailable):
        await provider.complete(ask())
    await provider.aclose()


async def test_ids_are_synthesised_and_object_arguments_accepted() -> None:
    # Some compatible servers (older Ollama) omit call ids and send arguments as an object.
    body = completion(
        None, [{"type": "function", "function": {"name": "get_weather", "arguments": {"a": 1}}}]
    )
    provider = OpenAIProvider(
        api_key="k", transport=httpx.MockTransport(lambda r: httpx.Response(200, json=body))
    )
    out = await provider.complete(ask(tools=(WEATHER,)))
    await provider.aclose()
    assert out.message.tool_calls == (
        ToolCall(id="call_0", name="get_weather", arguments={"a": 1}),
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}, None),  # far future: just positive
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "later"}, "absent"),
    ],
)
async def test_rate_limit_retry_after_forms(
    server: HttpStubServer, headers: dict[str, str], expected: float | str | None
) -> None:
    server.add(StubResponse(status=429, headers=headers, json={"error": {"message": "slow"}}))
    provider = provider_for(server)
    with pytest.raises(ProviderRateLimited) as info:
        await provider.complete(ask())
    await provider.aclose()
    if expected is None:
        assert info.value.retry_after is not None and info.value.retry_after > 3600
    elif expected == "absent":
        assert info.value.retry_after is None
    else:
        assert info.value.retry_after == expected


async def test_redirect_loop_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"location": str(request.url)})

    provider = OpenAIProvider(api_key="k", transport=httpx.MockTransport(handler))
    provider._client.follow_redirects = True
    with pytest.raises(ProviderUnavailable):
        await provider.complete(ask())
    await provider.aclose()

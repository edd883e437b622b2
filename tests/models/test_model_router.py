"""ModelRouter: retries with backoff honouring Retry-After, fallbacks, breakers, rate limits.

Time is a FakeClock: waits are asserted from the sleeps the router asked for, never wall time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.core.errors import (
    CircuitOpen,
    ConfigError,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderRequestRejected,
    ProviderUnavailable,
)
from bastion.core.messages import Message, ModelRequest
from bastion.core.retry import RetryPolicy
from bastion.models import Attempt, BreakerPolicy, ModelRouter, OpenAIProvider, RateLimit
from bastion.models._base import ModelProvider
from bastion.testing import (
    FakeClock,
    HttpStubServer,
    ScriptedModel,
    StubResponse,
    UnexpectedModelCall,
    reply,
)

REQUEST = ModelRequest(model="unset", messages=(Message.user("hi"),))


def ok_body(text: str = "ok") -> dict[str, Any]:
    return {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server() -> Iterator[HttpStubServer]:
    with HttpStubServer() as stub:
        yield stub


def make_router(clock: FakeClock, providers: dict[str, ModelProvider], **kw: Any) -> ModelRouter:
    kw.setdefault("rng", random.Random(7))
    return ModelRouter(providers, sleep=clock.sleep, clock=lambda: clock.now().timestamp(), **kw)


async def test_rate_limited_429_waits_at_least_retry_after(
    clock: FakeClock, server: HttpStubServer
) -> None:
    server.add(
        StubResponse(status=429, headers={"Retry-After": "7"}, json={"error": {"message": "slow"}}),
        StubResponse(json=ok_body("after the wait")),
    )
    openai = OpenAIProvider(base_url=server.url, api_key="k")
    router = make_router(clock, {"openai": openai})
    out = await router.complete("openai:gpt-4o-mini", REQUEST)
    await router.aclose()
    assert out.message.content == "after the wait"
    assert len(clock.sleeps) == 1 and clock.sleeps[0] >= 7.0
    assert [r.json()["model"] for r in server.requests] == ["gpt-4o-mini", "gpt-4o-mini"]


async def test_5xx_then_success_is_retried_with_backoff(
    clock: FakeClock, server: HttpStubServer
) -> None:
    server.add(
        StubResponse(status=503, json={"error": {"message": "down"}}),
        StubResponse(status=502, body="<html>bad gateway</html>"),
        StubResponse(json=ok_body()),
    )
    retry = RetryPolicy(max_attempts=3, initial_delay=1.0, multiplier=2.0, jitter=0.25)
    router = make_router(
        clock, {"openai": OpenAIProvider(base_url=server.url)}, retry=retry, rng=random.Random(1)
    )
    out = await router.complete("openai:m", REQUEST)
    await router.aclose()
    assert out.message.content == "ok"
    expected_rng = random.Random(1)
    assert clock.sleeps == [retry.delay(1, expected_rng), retry.delay(2, expected_rng)]
    assert 0.75 <= clock.sleeps[0] <= 1.25 and 1.5 <= clock.sleeps[1] <= 2.5


async def test_auth_error_is_not_retried_but_falls_back(
    clock: FakeClock, server: HttpStubServer
) -> None:
    server.add(StubResponse(status=401, json={"error": {"message": "bad key"}}))
    backup = ScriptedModel([reply("from backup")])
    router = make_router(
        clock,
        {"openai": OpenAIProvider(base_url=server.url), "scripted": backup},
        routes={"main": ["openai:gpt-4o", "scripted:demo"]},
    )
    out = await router.complete("main", REQUEST)
    await router.aclose()
    assert out.message.content == "from backup"
    assert len(server.requests) == 1 and clock.sleeps == []
    assert backup.calls[0].model == "demo"
    # A rejected/auth call says nothing about the provider's health.
    assert router.breaker("openai").consecutive_failures == 0


async def test_fallback_after_retries_exhausted(clock: FakeClock) -> None:
    primary = ScriptedModel([ProviderUnavailable("down")] * 3, name="primary")
    secondary = ScriptedModel([reply("second")], name="secondary")
    router = make_router(
        clock,
        {"primary": primary, "secondary": secondary},
        routes={"smart": ["primary:big", "secondary:small"]},
    )
    out = await router.complete("smart", REQUEST)
    assert out.message.content == "second"
    assert len(primary.calls) == 3 and len(clock.sleeps) == 2
    primary.assert_complete()
    secondary.assert_complete()


async def test_all_candidates_fail_raises_the_last_error(clock: FakeClock) -> None:
    a = ScriptedModel([ProviderAuthError("bad key a")])
    b = ScriptedModel([ProviderRequestRejected("bad model b")])
    router = make_router(clock, {"a": a, "b": b}, routes={"r": ["a:x", "b:y"]})
    with pytest.raises(ProviderRequestRejected, match="bad model b"):
        await router.complete("r", REQUEST)


async def test_long_retry_after_falls_back_without_waiting(clock: FakeClock) -> None:
    a = ScriptedModel([ProviderRateLimited("quota", retry_after=3600)])
    b = ScriptedModel([reply("b")])
    router = make_router(clock, {"a": a, "b": b}, routes={"r": ["a:x", "b:y"]}, max_retry_wait=60)
    assert (await router.complete("r", REQUEST)).message.content == "b"
    assert clock.sleeps == []


async def test_breaker_opens_after_n_failures_and_half_opens_after_cooldown(
    clock: FakeClock,
) -> None:
    flaky = ScriptedModel([ProviderUnavailable("down")] * 3, name="flaky")
    steady = ScriptedModel([reply("steady")] * 3, name="steady")
    router = make_router(
        clock,
        {"flaky": flaky, "steady": steady},
        routes={"r": ["flaky:m", "steady:m"]},
        retry=RetryPolicy(max_attempts=1),
        breaker=BreakerPolicy(failure_threshold=3, cooldown=30.0),
    )
    # Three calls: flaky fails each time (threshold reached on the third), steady answers.
    for _ in range(2):
        await router.complete("r", REQUEST)
    assert router.breaker("flaky").state == "closed"
    await router.complete("r", REQUEST)
    assert router.breaker("flaky").state == "open"
    assert len(flaky.calls) == 3 and len(steady.calls) == 3

    # While open, flaky is skipped entirely; direct calls see CircuitOpen.
    steady.add(reply("steady again"))
    assert (await router.complete("r", REQUEST)).message.content == "steady again"
    assert len(flaky.calls) == 3
    with pytest.raises(CircuitOpen):
        await router.complete("flaky:m", REQUEST)

    # After the cool-down one probe goes through; its success closes the circuit.
    clock.advance(30.0)
    assert router.breaker("flaky").state == "half_open"
    flaky.add(reply("flaky is back"))
    assert (await router.complete("r", REQUEST)).message.content == "flaky is back"
    assert router.breaker("flaky").state == "closed"
    flaky.assert_complete()
    steady.assert_complete()


async def test_failed_probe_reopens_the_breaker(clock: FakeClock) -> None:
    flaky = ScriptedModel([ProviderUnavailable("down")] * 3)
    router = make_router(
        clock,
        {"flaky": flaky},
        retry=RetryPolicy(max_attempts=1),
        breaker=BreakerPolicy(failure_threshold=2, cooldown=10.0),
    )
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await router.complete("flaky:m", REQUEST)
    clock.advance(10.0)
    with pytest.raises(ProviderUnavailable):
        await router.complete("flaky:m", REQUEST)  # the probe
    assert router.breaker("flaky").state == "open"
    clock.advance(9.0)
    with pytest.raises(CircuitOpen):
        await router.complete("flaky:m", REQUEST)
    assert len(flaky.calls) == 3


async def test_rate_limit_makes_the_third_call_wait(clock: FakeClock) -> None:
    model = ScriptedModel([reply("1"), reply("2"), reply("3")])
    router = make_router(
        clock,
        {"scripted": model},
        rate_limits={"scripted": RateLimit(requests_per_minute=2)},
    )
    for _ in range(2):
        await router.complete("scripted:demo", REQUEST)
    assert clock.sleeps == []
    await router.complete("scripted:demo", REQUEST)
    assert sum(clock.sleeps) >= 30.0 - 1e-6  # one request slot refills every 30 s at 2 rpm


async def test_non_provider_errors_propagate_untouched(clock: FakeClock) -> None:
    empty = ScriptedModel([])
    backup = ScriptedModel([reply("never")])
    router = make_router(clock, {"a": empty, "b": backup}, routes={"r": ["a:x", "b:y"]})
    with pytest.raises(UnexpectedModelCall):
        await router.complete("r", REQUEST)
    assert backup.calls == [] and router.breaker("a").state == "closed"


async def test_unknown_provider_is_a_config_error(clock: FakeClock) -> None:
    router = make_router(clock, {"scripted": ScriptedModel()})
    with pytest.raises(ConfigError):
        await router.complete("openai:gpt-4o", REQUEST)
    with pytest.raises(ConfigError):
        make_router(
            clock,
            {"scripted": ScriptedModel()},
            rate_limits={"nope": RateLimit(requests_per_minute=1)},
        )


def test_original_constructor_still_works() -> None:
    router = ModelRouter({"scripted": ScriptedModel()}, routes={"demo": ["scripted:demo"]})
    assert [str(r) for r in router.candidates("demo")] == ["scripted:demo"]


async def test_breaker_opening_mid_retries_raises_the_real_error(clock: FakeClock) -> None:
    flaky = ScriptedModel([ProviderUnavailable("really down")] * 2)
    router = make_router(
        clock,
        {"flaky": flaky},
        retry=RetryPolicy(max_attempts=5),
        breaker=BreakerPolicy(failure_threshold=2, cooldown=10.0),
    )
    with pytest.raises(ProviderUnavailable, match="really down"):
        await router.complete("flaky:m", REQUEST)
    assert len(flaky.calls) == 2 and len(clock.sleeps) == 1
    flaky.assert_complete()


async def test_every_attempt_is_reported(clock: FakeClock) -> None:
    a = ScriptedModel([ProviderUnavailable("down"), ProviderAuthError("bad key")])
    b = ScriptedModel([reply("b")])
    seen: list[Attempt] = []
    router = make_router(
        clock, {"a": a, "b": b}, routes={"r": ["a:x", "b:y"]}, on_attempt=seen.append
    )
    await router.complete("r", REQUEST)
    assert [(s.model, s.attempt, s.outcome, s.error_code) for s in seen] == [
        ("a:x", 1, "retry", "provider_unavailable"),
        ("a:x", 2, "failed", "provider_auth"),
        ("b:y", 1, "ok", None),
    ]
    assert seen[0].wait == clock.sleeps[0]


async def test_when_every_candidate_fails_the_real_error_is_raised_not_a_paused_circuit(
    clock: FakeClock,
) -> None:
    first = ScriptedModel([ProviderUnavailable("first is down")], name="first")
    paused = ScriptedModel([ProviderUnavailable("second is down")], name="paused")
    router = make_router(
        clock,
        {"first": first, "paused": paused},
        routes={"r": ["first:m", "paused:m"]},
        retry=RetryPolicy(max_attempts=1),
        breaker=BreakerPolicy(failure_threshold=1, cooldown=60.0),
    )
    with pytest.raises(ProviderUnavailable):
        await router.complete("paused:m", REQUEST)  # opens paused's circuit
    assert router.breaker("paused").state == "open"
    with pytest.raises(ProviderUnavailable) as info:
        await router.complete("r", REQUEST)
    assert info.value.message == "first is down"
    assert [c["code"] for c in info.value.details["candidates"]] == [
        "provider_unavailable",
        "circuit_open",
    ]

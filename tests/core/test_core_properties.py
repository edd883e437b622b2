"""Property tests for the pure core: canonical JSON, digests, backoff, usage, error round trips."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bastion.core.canonical import canonical_json, chain, digest
from bastion.core.errors import (
    BastionError,
    ProviderRateLimited,
    ToolFailed,
    error_class_for,
)
from bastion.core.messages import Usage
from bastion.core.retry import RetryPolicy

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


@given(json_values)
def test_canonical_json_round_trips(value: Any) -> None:
    assert json.loads(canonical_json(value)) == value


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_canonical_json_ignores_key_order(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert canonical_json(reordered) == canonical_json(value)
    assert digest(reordered) == digest(value)


@given(json_values, json_values)
def test_digest_separates_different_values(a: Any, b: Any) -> None:
    if canonical_json(a) != canonical_json(b):
        assert digest(a) != digest(b)


@given(st.lists(json_values, min_size=1, max_size=6))
def test_chain_depends_on_order(items: list[Any]) -> None:
    forward = ""
    for item in items:
        forward = chain(forward, item)
    backward = ""
    for item in reversed(items):
        backward = chain(backward, item)
    if [canonical_json(i) for i in items] != [canonical_json(i) for i in reversed(items)]:
        assert forward != backward


@given(
    st.integers(min_value=1, max_value=30),
    st.floats(min_value=0, max_value=5),
    st.floats(min_value=0, max_value=120),
    st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_bounded_and_honours_the_floor(
    attempt: int, initial: float, floor: float, seed: int
) -> None:
    policy = RetryPolicy(max_attempts=50, initial_delay=initial, max_delay=10.0, jitter=0.25)
    wait = policy.delay(attempt, random.Random(seed), floor=floor)
    assert wait >= floor
    assert wait <= max(floor, 10.0 * 1.25 + 1e-9)


def test_backoff_grows_exponentially_without_jitter() -> None:
    policy = RetryPolicy(initial_delay=0.1, multiplier=2, max_delay=100, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]


@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.floats(0, 10)), max_size=20)
)
def test_usage_adds_up(parts: list[tuple[int, int, float]]) -> None:
    total = Usage()
    for i, o, c in parts:
        total = total + Usage(input_tokens=i, output_tokens=o, cost_usd=c)
    assert total.input_tokens == sum(p[0] for p in parts)
    assert total.output_tokens == sum(p[1] for p in parts)
    assert abs(total.cost_usd - sum(p[2] for p in parts)) < 1e-6


def test_errors_serialise_with_code_hint_and_problem_json() -> None:
    err = ToolFailed("tool x broke", run_id="run_1", step_no=4, tool="x")
    data = err.to_dict()
    assert data["code"] == "tool_failed" and data["details"]["step_no"] == 4
    assert data["hint"]
    problem = err.to_problem("/runs/run_1")
    assert problem["status"] == 422 and problem["code"] == "tool_failed"
    assert error_class_for("tool_failed") is ToolFailed
    assert error_class_for("no-such-code") is BastionError
    limited = ProviderRateLimited("slow down", retry_after=3.0, provider="openai", status=429)
    assert limited.retryable and limited.retry_after == 3.0
    assert limited.to_dict()["details"]["retry_after"] == 3.0

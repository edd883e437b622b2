"""TokenBucket, CircuitBreaker and Retry-After parsing, driven by a fake clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.errors import CircuitOpen
from bastion.models import BreakerPolicy, CircuitBreaker, RateLimit, TokenBucket, parse_retry_after
from bastion.testing import FakeClock


def seconds(clock: FakeClock) -> float:
    return clock.now().timestamp()


async def test_bucket_allows_a_burst_then_refills_steadily() -> None:
    clock = FakeClock()
    bucket = TokenBucket(
        RateLimit(requests_per_minute=60), clock=lambda: seconds(clock), sleep=clock.sleep
    )
    for _ in range(60):
        assert await bucket.acquire() == 0.0
    waited = await bucket.acquire()
    assert waited == pytest.approx(1.0)  # 60 rpm refills one slot per second
    clock.advance(5.0)
    for _ in range(5):
        assert await bucket.acquire() == 0.0
    assert await bucket.acquire() == pytest.approx(1.0)


async def test_bucket_limits_tokens_per_minute() -> None:
    clock = FakeClock()
    bucket = TokenBucket(
        RateLimit(requests_per_minute=1000, tokens_per_minute=600),
        clock=lambda: seconds(clock),
        sleep=clock.sleep,
    )
    assert await bucket.acquire(500) == 0.0
    # 100 tokens left; 300 more need 200 refilled at 10 tokens/s.
    assert await bucket.acquire(300) == pytest.approx(20.0)
    # A request bigger than the whole bucket waits for a full bucket, not forever.
    assert await bucket.acquire(10_000) == pytest.approx(60.0)


async def test_concurrent_waiters_are_served_in_turn() -> None:
    clock = FakeClock()
    bucket = TokenBucket(
        RateLimit(requests_per_minute=1), clock=lambda: seconds(clock), sleep=clock.sleep
    )
    start = seconds(clock)
    await asyncio.gather(*(bucket.acquire() for _ in range(3)))
    # One slot per minute: the second waiter starts a minute in, the third two minutes in.
    assert clock.sleeps == pytest.approx([60.0, 60.0])
    assert seconds(clock) - start == pytest.approx(120.0)


def test_rate_limit_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RateLimit(requests_per_minute=0)
    with pytest.raises(ValueError):
        RateLimit(requests_per_minute=1, tokens_per_minute=-5)


def test_breaker_state_machine() -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        "p", BreakerPolicy(failure_threshold=2, cooldown=10.0), clock=lambda: now[0]
    )
    breaker.before_call()
    breaker.record_failure()
    breaker.record_success()  # success resets the streak: failures must be consecutive
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.retryable and info.value.details["retry_in"] == 10.0

    now[0] = 10.0
    assert breaker.state == "half_open"
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # only one probe at a time
    breaker.record_neutral()  # the probe was rejected for its own reasons
    breaker.before_call()  # so another probe may go
    breaker.record_success()
    assert breaker.state == "closed" and breaker.consecutive_failures == 0


def test_breaker_policy_validation() -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(failure_threshold=0)


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(90.0)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


@given(st.text(max_size=40))
def test_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value)
    assert result is None or result >= 0.0
